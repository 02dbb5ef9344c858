"""Make an offline dataset on this machine (nothing is downloaded): python -m flowrl.collect

  python -m flowrl.collect --env Hopper-v5 --policy random --steps 100000 \
      --id flowrl/hopper/random-v0
  python -m flowrl.collect --policy runs/sac-Hopper-v5-s0-...@300000 --steps 1000000 \
      --id flowrl/hopper/medium-v0 --expert runs/sac-Hopper-v5-s0-...
  python -m flowrl.collect --replay runs/sac-Hopper-v5-s0-...@100000 \
      --id flowrl/hopper/medium-replay-v0
  python -m flowrl.collect --combine flowrl/hopper/medium-v0,flowrl/hopper/expert-v0 \
      --id flowrl/hopper/medium-expert-v0

writes a Minari dataset (`minari.DataCollector` -> `create_dataset`, arrow storage) under
MINARI_DATASETS_PATH, else ~/.minari/datasets. Sources:
  --policy random           uniform random actions;
  --policy RUN_DIR[@frame]  a run's policy from its newest checkpoint (or the one at `frame`),
                            deterministic (`--noise none`, its evaluation action) or with its own
                            behaviour noise (`--noise policy`, as it acted in training);
  --replay RUN_DIR[@frame]  the stored transitions of a run's replay buffer (D4RL's "replay"
                            flavour: what the agent saw while it learned);
  --combine ID,ID,...       a mixture of local datasets (`minari.combine_datasets`).
Reference scores for normalized scores: ref_min is the mean return of uniform random actions
over `--ref-episodes` episodes, ref_max the mean return of `--expert RUN_DIR` (deterministic)
or `--ref-max`; without either, none are stored (bind `dataset_source.ref_max_score` later).
"""
import argparse
import os
import sys
from typing import Callable, Optional, Tuple

import numpy as np

from flowrl.errors import ConfigError


def _parser():
  p = argparse.ArgumentParser(prog='python -m flowrl.collect', description=__doc__.splitlines()[0])
  what = p.add_mutually_exclusive_group(required=True)
  what.add_argument('--policy', help="'random' or RUN_DIR[@frame]")
  what.add_argument('--replay', help='RUN_DIR[@frame]: the run\'s replay buffer')
  what.add_argument('--combine', help='comma-separated local dataset ids to mix')
  p.add_argument('--id', required=True, help='dataset id, namespace/name-vN (Minari)')
  p.add_argument('--env', help='gymnasium id (default: the run\'s env; required for random)')
  p.add_argument('--steps', type=int, default=100_000, help='env steps to record')
  p.add_argument('--noise', choices=('none', 'policy'), default='none',
                 help="a run's policy: deterministic ('none') or with its behaviour noise")
  p.add_argument('--expert', help='RUN_DIR whose deterministic return is ref_max_score')
  p.add_argument('--ref-max', type=float, help='ref_max_score, if no --expert')
  p.add_argument('--ref-episodes', type=int, default=10,
                 help='episodes that estimate the reference scores')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--description', default='')
  return p


def split_run(spec: str) -> Tuple[str, Optional[int]]:
  """'RUN_DIR@frame' -> (RUN_DIR, frame); 'RUN_DIR' -> (RUN_DIR, None)."""
  run_dir, _, frame = spec.partition('@')
  if not os.path.isdir(run_dir):
    raise ConfigError(f'{run_dir!r} is not a run folder.')
  if frame and not frame.isdigit():
    raise ConfigError(f'{spec!r}: the part after @ must be a frame number.')
  return run_dir, int(frame) if frame else None


def _restore(run_dir: str, frame: Optional[int]):
  """The raw loop state of a run's checkpoint (newest, or at `frame`)."""
  from flowrl.runtime.init_from import read_checkpoint
  return read_checkpoint(run_dir, frame, flag='--policy/--replay')[0]


def run_policy(run_dir: str, frame: Optional[int], deterministic: bool):
  """(env name, policy(obs [O], key) -> action [A]) from a run's config and checkpoint (its
  first seed where it trained several)."""
  import gin
  import jax
  from flowrl import run as run_cli
  from flowrl.runtime.init_from import transplant
  gin.clear_config()
  run_cli.parse_config([os.path.join(run_dir, run_cli.CONFIG_NAME)], [])
  agent, _, env_name = run_cli.build()
  state, _ = transplant(agent.init(jax.random.PRNGKey(0)), _restore(run_dir, frame), run_dir, 0)
  act = jax.jit(lambda obs, key: agent.act(state, obs[None], key, deterministic)[0])
  return env_name, lambda obs, key: np.clip(np.asarray(act(obs.astype(np.float32), key)), -1, 1)


def mean_return(env, policy: Callable, episodes: int, seed: int) -> float:
  import jax
  key, total = jax.random.PRNGKey(seed), []
  for e in range(episodes):
    obs, _ = env.reset(seed=seed + e)
    done, ret = False, 0.0
    while not done:
      key, k = jax.random.split(key)
      obs, r, term, trunc, _ = env.step(policy(obs, k))
      ret, done = ret + float(r), term or trunc
    total.append(ret)
  return float(np.mean(total))


def _random_policy(env):
  space = env.action_space
  return lambda obs, key: space.sample()


def record(env_name: str, policy: Optional[Callable], steps: int, seed: int):
  """A DataCollector over `steps` env steps of `policy` (None: uniform random actions; the
  trailing partial episode is kept, as Minari's own collection does)."""
  import jax
  import minari
  from flowrl.envs import make_env
  env = minari.DataCollector(make_env(env_name, seed), data_format='arrow')
  env.action_space.seed(seed)
  policy = policy or _random_policy(env)
  obs, _ = env.reset(seed=seed)
  key = jax.random.PRNGKey(seed)
  for _ in range(steps):
    key, k = jax.random.split(key)
    obs, _, term, trunc, _ = env.step(policy(obs, k))
    if term or trunc:
      obs, _ = env.reset()
  return env


def replay_buffers(raw: dict):
  """Minari episode buffers from a run's replay: rows in write order (a full ring is unrolled
  from its oldest row), split where an episode terminated or the next row does not start from
  this row's next observation (a truncation, or a seed's other env)."""
  from minari.data_collector import EpisodeBuffer
  data = raw['data']
  cols, ptr, size = data['data'], int(np.asarray(data['ptr'])), int(np.asarray(data['size']))
  if np.asarray(cols['obs']).ndim != 2:
    raise ConfigError('--replay: the run trained several seeds or envs in one replay; collect '
                      'from a single-seed, single-env run.')
  order = np.arange(size) if size < len(cols['obs']) else (np.arange(size) + ptr) % size
  c = {k: np.asarray(cols[k])[order] for k in ('obs', 'action', 'reward', 'next_obs', 'terminated')}
  ends = (c['terminated'] > 0) | np.append(np.any(c['next_obs'][:-1] != c['obs'][1:], axis=1), True)
  episodes, start = [], 0
  for end in np.flatnonzero(ends):
    sl = slice(start, end + 1)
    episodes.append(EpisodeBuffer(
        observations=np.concatenate([c['obs'][sl], c['next_obs'][end:end + 1]]),
        actions=c['action'][sl], rewards=c['reward'][sl],
        terminations=c['terminated'][sl] > 0,
        truncations=np.append(np.zeros(end - start, bool), c['terminated'][end] == 0)))
    start = end + 1
  return episodes


def reference_scores(env_name: str, args) -> Tuple[Optional[float], Optional[float]]:
  from flowrl.envs import make_env
  env = make_env(env_name, args.seed + 999)
  ref_max = args.ref_max
  if args.expert:
    expert_env, expert = run_policy(*split_run(args.expert), deterministic=True)
    if expert_env != env_name:
      raise ConfigError(f'--expert ran on {expert_env!r}, the dataset is of {env_name!r}.')
    ref_max = mean_return(env, expert, args.ref_episodes, args.seed + 999)
  if ref_max is None:
    return None, None
  return mean_return(env, _random_policy(env), args.ref_episodes, args.seed + 999), ref_max


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  import warnings   # Minari asks for an author email and a code link, and cannot serialize the
  warnings.filterwarnings('ignore', category=UserWarning, module='minari')  # wrapped env's spec
  try:
    import minari
    if args.id in minari.list_local_datasets():
      raise ConfigError(f'dataset {args.id!r} exists already; choose another id or delete it '
                        f'(minari delete {args.id}).')
    if args.combine:
      ids = args.combine.split(',')
      missing = [i for i in ids if i not in minari.list_local_datasets()]
      if missing:
        raise ConfigError(f'--combine: no local dataset {", ".join(missing)}.')
      parts = [minari.load_dataset(i) for i in ids]
      ds = minari.combine_datasets(parts, args.id)
      refs = {(p.storage.metadata.get('ref_min_score'), p.storage.metadata.get('ref_max_score'))
              for p in parts}
      envs = {p.storage.metadata.get('eval_env_spec') for p in parts}
      if len(envs) == 1 and None not in envs:               # one task's sets: keep its env
        ds.storage.update_metadata({'eval_env_spec': envs.pop()})
      if len(refs) == 1 and None not in next(iter(refs)):   # ... and its reference scores
        ref_min, ref_max = next(iter(refs))
        ds.storage.update_metadata({'ref_min_score': ref_min, 'ref_max_score': ref_max})
      print(f'{args.id}: {ds.total_episodes} episodes, {ds.total_steps} steps', file=sys.stderr)
      return 0
    if args.replay:
      run_dir, frame = split_run(args.replay)
      import gin
      from flowrl import run as run_cli
      gin.clear_config()
      run_cli.parse_config([os.path.join(run_dir, run_cli.CONFIG_NAME)], [])
      env_name = args.env or run_cli.build()[2]
      episodes, policy = replay_buffers(_restore(run_dir, frame)), None
    elif args.policy == 'random':
      if not args.env:
        raise ConfigError('--policy random needs --env (a gymnasium id such as Hopper-v5).')
      env_name, policy = args.env, None
    else:
      env_name, policy = run_policy(*split_run(args.policy), deterministic=args.noise == 'none')
      if args.env and args.env != env_name:
        raise ConfigError(f'--env {args.env!r}, but the run trained on {env_name!r}.')
    ref_min, ref_max = reference_scores(env_name, args)
    if args.expert and policy is not None:
      # networks read their gin bindings when traced: the expert's config replaced the policy's,
      # so the policy is built again under its own before its first (tracing) call
      env_name, policy = run_policy(*split_run(args.policy), deterministic=args.noise == 'none')
    meta = dict(algorithm_name=f'flowrl.collect {args.policy or "replay " + args.replay}',
                ref_min_score=ref_min, ref_max_score=ref_max, eval_env=env_name,
                description=args.description or None, author='flowrl')
    if args.replay:
      from flowrl.envs import make_env
      ds = minari.create_dataset_from_buffers(args.id, episodes, env=make_env(env_name, 0),
                                              data_format='arrow', **meta)
    else:
      collector = record(env_name, policy, args.steps, args.seed)
      ds = collector.create_dataset(args.id, **meta)
      collector.close()
  except ConfigError as e:
    from flowrl.run import _one_sentence
    print(f'flowrl.collect: {_one_sentence(e)}', file=sys.stderr)
    return 2
  scores = f', ref scores [{ref_min:.1f}, {ref_max:.1f}]' if ref_max is not None else ''
  print(f'{args.id}: {ds.total_episodes} episodes, {ds.total_steps} steps{scores}',
        file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
