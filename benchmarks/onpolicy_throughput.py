"""On-policy throughput: env frames/s including updates, this library's loop against the common
per-step design, interleaved in rounds, printed as JSON.

  ours      `driver.run` with the rollout source: one jitted call per vector step (collect and
            store on the device; at the end of a rollout, GAE and every epoch × minibatch update
            in one `lax.scan` of that same call)
  per-step  a numpy rollout: one jitted call per action (the same `agent.collect`), the
            transitions stored in host arrays, GAE in one jitted call, then one jitted call per
            minibatch (the same `agent.update`) on rows gathered on the host — the layout of
            most JAX PPO code outside purejaxrl

Both run the same compiled agent (gin/ppo.gin or another on-policy method file, observation and
reward normalization off so both do the same math) on HalfCheetah-v5 with N envs per seed and
rollouts of T steps (N·T = 2048 rows, 10 epochs × 32 minibatches). Frames/s counts the frames
from the end of the first rollout's updates to the end of the last rollout's (compilation, the
final evaluation, checkpoint and plot excluded: one-off costs, which in a window this short
once made the driver look 0.6× as fast). `ratio` is the median over rounds of ours/per-step;
rounds alternate which runs first. `env_step_share` is the share of ours' timed window spent
inside the vector env's `step` (issue 17 asks for envpool only where it is above about 20%).
With --envpool, ours also runs with `vector_env.backend="envpool"` in each round, and
`envpool_ratio` is the median of its frames/s over ours' with gymnasium's `SyncVectorEnv`.

Usage: python benchmarks/onpolicy_throughput.py [--method ppo] [--envs 8,16] [--rounds 3]
                                                [--iterations 6] [--bind B] [--envpool]
                                                [--out file.json]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import emit  # noqa: E402  (benchmarks/)
os.environ.setdefault('MUJOCO_GL', 'egl')
ENV = 'HalfCheetah-v5'
ROWS = 2048
EXTRA = []    # --bind: more gin bindings for both designs


def _build(method: str, envs: int, iterations: int):
  from flowrl import run as cli
  cli.parse_config([os.path.join(ROOT, 'gin', f'{method}.gin')], [
      f'env.name="{ENV}"', f'train.envs_per_seed={envs}', f'rollout_source.steps={ROWS // envs}',
      'rollout_source.epochs=10', 'rollout_source.minibatches=32',
      f'train.total_frames={ROWS * iterations}', f'train.eval_every={10 * ROWS * iterations}',
      f'train.checkpoint_every={10 * ROWS * iterations}', 'train.eval_episodes=1',
      'Method.normalize_obs=False', 'rollout_source.normalize_reward=False', *EXTRA])
  return cli.build()


def _timed_env_steps(calls: list):
  """Wraps the vector envs' step so each call's (start, seconds) is appended to `calls`."""
  import gymnasium as gym
  classes = [gym.vector.SyncVectorEnv]
  try:
    from flowrl.envs.envpool_vector import EnvpoolVector
    classes.append(EnvpoolVector)
  except ImportError:
    pass
  for cls in classes:
    def timed(self, actions, step=cls.step):
      t = time.time()
      out = step(self, actions)
      calls.append((t, time.time() - t))
      return out
    cls.step = timed


def ours(method: str, envs: int, iterations: int):
  """(frames/s, the share of that time spent inside the vector env's step)."""
  from flowrl.runtime import driver
  agent, cfg, env_name = _build(method, envs, iterations)
  calls, trained = [], []
  _timed_env_steps(calls)
  evaluate = driver.Driver.evaluate

  def evaluate_after_training(self, frame, agent_state):
    if frame >= cfg.total_frames:   # the last frame's log has synced its updates
      trained.append(time.time())
    return evaluate(self, frame, agent_state)
  driver.Driver.evaluate = evaluate_after_training
  with tempfile.TemporaryDirectory() as d:
    s = driver.run(agent, cfg, env_name, d, progress=False)
  # from the end of the first rollout's update burst to the end of the last one's: the final
  # evaluation, checkpoint and plot are one-off costs the per-step design does not have
  first = s['first_update_done_at']
  timed = trained[0] - first
  env = sum(dt for t, dt in calls if t >= first)
  return (cfg.total_frames - ROWS) / timed, env / timed


def per_step(method: str, envs: int, iterations: int) -> float:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flowrl.compose.step import make_source
  from flowrl.envs import make_env
  from flowrl.runtime import vector_env
  agent, cfg, env_name = _build(method, envs, iterations)
  source = make_source(agent, cfg, envs)        # for GAE and the minibatch indices only
  vec = vector_env.make_vector_env(make_env, env_name, [cfg.seed], envs)
  collect = jax.jit(agent.collect)
  update = jax.jit(agent.update)
  prepare = jax.jit(lambda data, state: source.prepare(data, lambda o: agent.value(state, o)))
  batches = jax.jit(source.batches)
  state = jax.jit(agent.init)(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(1)
  steps = ROWS // envs
  obs, _ = vec.reset()
  obs = obs.astype(np.float32)
  start = None
  for it in range(iterations):
    if it == 1:
      start = time.time()
    cols = {}
    for t in range(steps):
      key, k = jax.random.split(key)
      action, extras = collect(state, jnp.asarray(obs), k)
      action = np.asarray(action)
      nxt, reward, term, trunc, info = vec.step(np.clip(action, -1.0, 1.0))
      done = term | trunc
      row = {'obs': obs, 'action': action, 'reward': reward.astype(np.float32),
             'next_obs': vector_env.transition_next_obs(nxt, done, info).astype(np.float32),
             'terminated': term.astype(np.float32), 'truncated': trunc.astype(np.float32),
             **{k: np.asarray(v) for k, v in extras.items()}}
      for k, v in row.items():
        cols.setdefault(k, np.zeros((steps,) + v.shape, np.float32))[t] = v
      obs = nxt.astype(np.float32)
    data = source.init()._replace(data={k: jnp.asarray(v) for k, v in cols.items()},
                                  t=jnp.int32(steps))
    data = prepare(data, state)
    key, k = jax.random.split(key)
    keys = jax.random.split(k, source.n)
    idx = np.asarray(batches(data, keys))
    flat = {k: np.asarray(v).reshape((ROWS,) + v.shape[2:]) for k, v in data.data.items()}
    flat['advantage'] = np.asarray(data.advantages).reshape(ROWS)
    flat['return'] = np.asarray(data.returns).reshape(ROWS)
    for i in range(source.n):
      state, _, metrics = update(state, {k: v[idx[i]] for k, v in flat.items()}, keys[i])
  jax.block_until_ready(state)
  seconds = time.time() - start
  vec.close()
  return ROWS * (iterations - 1) / seconds


def _child(kind: str, method: str, envs: int, iterations: int) -> float:
  import subprocess
  out = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', kind, '--method',
                        method, '--envs', str(envs), '--iterations', str(iterations),
                        *[f'--bind={b}' for b in EXTRA]],
                       capture_output=True, text=True, cwd=ROOT)
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--method', default='ppo')
  p.add_argument('--envs', default='8,16')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--iterations', type=int, default=6)
  p.add_argument('--child', default=None)
  p.add_argument('--bind', action='append', default=[], help='a gin binding for both designs')
  p.add_argument('--envpool', action='store_true',
                 help='also run ours with vector_env.backend="envpool" (envpool_ratio: over ours)')
  p.add_argument('--out', default=None)
  args = p.parse_args()
  EXTRA.extend(args.bind)
  if args.child:
    if args.child.startswith('ours'):
      if args.child == 'ours_envpool':
        EXTRA.append('vector_env.backend="envpool"')
      fps, share = ours(args.method, int(args.envs), args.iterations)
      print(json.dumps({'frames_per_s': fps, 'env_step_share': share}))
    else:
      print(json.dumps({'frames_per_s': per_step(args.method, int(args.envs), args.iterations)}))
    return
  result = {'env': ENV, 'method': args.method, 'rows_per_rollout': ROWS, 'bindings': EXTRA,
            'epochs_x_minibatches': '10 x 32', 'iterations_timed': args.iterations - 1,
            'rounds': args.rounds, 'envs': {}}
  for envs in map(int, args.envs.split(',')):
    rounds = []
    for r in range(args.rounds):
      order = ('ours', 'per_step') + (('ours_envpool',) if args.envpool else ())
      out = {k: _child(k, args.method, envs, args.iterations)
             for k in (order if r % 2 == 0 else order[::-1])}
      got = {k: v['frames_per_s'] for k, v in out.items()}
      for k in out:
        if k.startswith('ours'):
          got[k.replace('ours', 'env_step_share')] = round(out[k]['env_step_share'], 3)
      rounds.append(got)
      print(json.dumps({'envs': envs, 'round': r, **got}), file=sys.stderr, flush=True)
    result['envs'][envs] = {
        'frames_per_s': statistics.median(x['ours'] for x in rounds),
        'per_step_frames_per_s': statistics.median(x['per_step'] for x in rounds),
        'ratio': round(statistics.median(x['ours'] / x['per_step'] for x in rounds), 3),
        'env_step_share': statistics.median(x['env_step_share'] for x in rounds),
        'rounds': rounds}
    if args.envpool:
      result['envs'][envs].update(
          envpool_frames_per_s=statistics.median(x['ours_envpool'] for x in rounds),
          envpool_env_step_share=statistics.median(x['env_step_share_envpool'] for x in rounds),
          envpool_ratio=round(statistics.median(x['ours_envpool'] / x['ours'] for x in rounds), 3))
  emit(result, args.out, indent=1)


if __name__ == '__main__':
  main()
