"""The off-policy training loop on the host: env stepping, evaluation, logs, checkpoints.

Per env frame there is one jitted call (`make_frame_step`): store, update(s), next action, for
one seed or for several seeds batched in one program (`train_step.batched_programs`).
Every episode starts from a reset seeded by the frame it starts at, so a checkpoint can fall
anywhere in an episode: a resumed run resets each env with its episode's seed and replays that
episode's actions from the replay buffer (MuJoCo and dm_control step deterministically), and then
continues exactly as an uninterrupted run with the same seed. Ctrl-C or SIGTERM saves the frame
in progress and stops.
"""
import functools
import math
import os
import signal
import threading
import time
import warnings
from typing import Dict, List

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from flowrl.compose import checkpoint
from flowrl.compose.agent import Agent
from flowrl.compose.run_log import RunLog, plot_learning_curve
from flowrl.compose.train_step import TrainConfig, compile_loop, runs_periodic
from flowrl.envs import make_env
from flowrl.primitives.critic import Batch


class TrainingDiverged(RuntimeError):
  """A loss became NaN or infinite; the run stopped and kept its last finite checkpoint."""


class _Interrupts:
  """Ctrl-C (SIGINT) or SIGTERM (cluster schedulers, Ray, `kill`) while training only sets a flag;
  the loop finishes the frame in progress, saves a checkpoint of it and then raises
  KeyboardInterrupt (`check`), so nothing trained is lost and a resume continues from that very
  frame. Python would raise it wherever the main thread happens to be: inside a
  garbage-collection callback it is ignored (seen here: a run trained on to its end), and in a
  checkpoint write it would cut the write. A signal ignored when the run started (Ctrl-C in a
  background job of a script, `nohup`) stays ignored, as Python itself does."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.received, self.previous = [], {}
    if threading.current_thread() is not threading.main_thread():
      return
    for sig in self.SIGNALS:
      if signal.getsignal(sig) is not signal.SIG_IGN:
        self.previous[sig] = signal.signal(sig, lambda signum, frame: self.received.append(signum))

  def check(self):
    if self.received:
      raise KeyboardInterrupt

  def restore(self):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)
    self.previous = {}


def _reset_seed(seed: int, frame: int) -> int:
  return (seed * 1_000_003 + frame) % (2 ** 31)


def summarize(pending: List[Dict]) -> Dict[str, float]:
  """Average per-update metrics of a log window; actor/regularizer metrics only over the updates
  that ran an actor step, everything only over frames that updated."""
  if not pending:
    return {}
  m = {k: np.concatenate([np.asarray(p[k]).reshape(-1) for p in pending]) for k in pending[0]}
  updated = m.pop('updated') > 0
  actor = m.pop('actor_updated') > 0
  out = {}
  for k, v in m.items():
    mask = updated & actor if k.startswith(('actor/', 'reg/')) else updated
    if mask.any():
      out[k] = float(np.mean(v[mask]))
  out['updates'] = float(updated.sum())
  return out


def _replay_episodes(envs, buffer, host, seeds, frame):
  """Bring the envs back to `frame` after a restore: reset each with the seed its episode began
  with and step it through that episode's actions, read from the replay buffer (the transition
  of frame f is row (f − 1) mod capacity; several seeds lead with a seed axis). Returns the
  observations [S, O] and whether every replay ended at the observation stored for `frame`; an
  env whose replay did not (an env that does not step deterministically, or an episode longer
  than the buffer) starts a new episode instead, with a warning."""
  batched = len(seeds) > 1
  capacity = buffer.data.reward.shape[-1]
  obs, exact = [], True
  for j, (env, s) in enumerate(zip(envs.envs, seeds)):
    start = host['episode_start'][j]
    o, _ = env.reset(seed=_reset_seed(s, start))
    if frame > start:
      rows = np.arange(start, frame) % capacity
      column = lambda x: np.asarray(x[j, rows] if batched else x[rows])   # gathers only those rows
      actions, stored = column(buffer.data.action), column(buffer.data.next_obs)[-1]
      if frame - start <= capacity:
        for a in actions:
          o = env.step(a)[0]
      if not np.allclose(o, stored, rtol=1e-5, atol=1e-5):
        warnings.warn(f'replaying the episode in progress did not reproduce its last observation '
                      f'(seed {s}); it starts a new episode at frame {frame} instead.')
        o, _ = env.reset(seed=_reset_seed(s, frame))
        host['episode_start'][j], host['episode_return'][j] = frame, 0.0
        exact = False
    obs.append(o)
  return np.stack(obs), exact


_fold_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))   # compiled once per process


def evaluate(act_eval, state, envs, episodes: int, seeds) -> np.ndarray:
  """Returns [S, episodes] of the jitted deterministic act, seed j's episode i on its own env reset
  with seeds[j] + i; the S envs step together and each stops at its own episode end."""
  returns = np.zeros((len(envs), episodes))
  for i in range(episodes):
    obs = np.stack([env.reset(seed=s + i)[0] for env, s in zip(envs, seeds)])
    keys = jnp.stack([jax.random.PRNGKey(s + i) for s in seeds])
    done, t = np.zeros(len(envs), bool), 0
    while not done.all():
      actions = np.asarray(act_eval(state, obs[:, None], _fold_keys(keys, t)))[:, 0]
      for j in np.flatnonzero(~done):
        obs[j], r, term, trunc, _ = envs[j].step(actions[j])
        returns[j, i] += r
        done[j] = term or trunc
      t += 1
  return returns


def _kept(run_dir: str, cfg: TrainConfig) -> str:
  """The end of a divergence message: which checkpoint is left, or that none is."""
  saved = checkpoint.latest_frame(run_dir)
  if saved is None:
    return (f'no checkpoint had been written yet (the first was due at frame '
            f'{cfg.checkpoint_every}), so there is nothing to resume from.')
  return (f"the last finite checkpoint (frame {saved}) is kept in "
          f"{os.path.join(run_dir, 'checkpoints')}.")


def run(agent: Agent, cfg: TrainConfig, env_name: str, run_dir: str, resume: bool = False,
        progress: bool = True, seeds=None) -> Dict:
  """Train for cfg.total_frames (from the newest checkpoint when `resume`); returns a summary.

  With `seeds` (a list), the seeds train together in one program (`vmap`) on a gymnasium vector
  env, each writing its logs to run_dir/seed_<s>/ as a separate run with that seed would; the
  checkpoint holds them all. Without it, one run with cfg.seed logs to run_dir itself."""
  t_start = time.time()
  seed_list = list(seeds) if seeds is not None else [cfg.seed]
  log_dirs = ([run_dir] if seeds is None else
              [os.path.join(run_dir, f'seed_{s}') for s in seed_list])
  n_seeds = len(seed_list)
  spec, f32 = agent.spec, np.float32
  z = lambda *shape: np.zeros((n_seeds,) + shape, f32)
  blank = Batch(z(spec.obs_dim), z(spec.act_dim), z(), z(spec.obs_dim), z(), z(spec.act_dim))
  programs = compile_loop(agent, cfg, blank, seed_list)   # XLA compiles while the host sets up
  envs = gym.vector.SyncVectorEnv([functools.partial(lambda s: make_env(env_name, s), s)
                                   for s in seed_list],
                                  autoreset_mode=gym.vector.AutoresetMode.DISABLED)
  eval_envs = [make_env(env_name, s + 12345) for s in seed_list]
  mngr = checkpoint.manager(run_dir)
  step = programs.step.result()
  loop = programs.init.result()()
  nan = float('nan')
  host = {'episodes': [0] * n_seeds, 'last_return': [nan] * n_seeds,
          'eval_return': [nan] * n_seeds, 'episode_start': [0] * n_seeds,
          'episode_return': [0.0] * n_seeds}
  if resume:
    restored = checkpoint.restore(mngr, loop)
    if restored is not None:
      loop, host = restored
  frame = int(loop.frame)
  # checkpoints written before episodes were replayed fell on a reset at their own frame
  host.setdefault('episode_start', [frame] * n_seeds)
  host.setdefault('episode_return', [0.0] * n_seeds)
  logs = [RunLog(d, resume_frame=frame) for d in log_dirs]
  if 'action' not in host:             # a new run: reset the envs and choose the first action
    obs, _ = envs.reset(seed=[_reset_seed(s, frame) for s in seed_list])
    loop, action, _ = step(loop, blank, np.bool_(False), obs)
  else:                                # resumed: bring the envs back to `frame`
    obs, exact = _replay_episodes(envs, loop.buffer, host, seed_list, frame)
    action = np.asarray(host.pop('action'), f32)   # the checkpointed run's choice for this obs
    if not exact:                      # an env began a new episode: choose for its new obs
      loop, action, _ = step(loop, blank, np.bool_(False), obs)
  pending, first_update, first_periodic = [], None, None
  episode_return = np.asarray(host.pop('episode_return'), np.float64)
  bar = tqdm(total=cfg.total_frames, initial=frame, unit='frame', disable=not progress,
             dynamic_ncols=True, desc=f'{agent.method.name} {env_name}'
                                      + (f' ×{n_seeds} seeds' if n_seeds > 1 else ''))
  window_start, window_frame = time.time(), frame
  interrupts = _Interrupts()
  try:
    while frame < cfg.total_frames:
      a = np.asarray(action)
      next_obs, reward, terminated, truncated, _ = envs.step(a)
      frame += 1
      episode_return += reward
      save = (frame % cfg.checkpoint_every == 0 or frame == cfg.total_frames
              or bool(interrupts.received))
      transition = Batch(obs, a, reward.astype(f32), next_obs, terminated.astype(f32), a)
      ended = terminated | truncated
      obs = next_obs
      if ended.any():
        for j in np.flatnonzero(ended):
          host['episodes'][j] += 1
          host['last_return'][j] = float(episode_return[j])
          host['episode_start'][j] = frame
          episode_return[j] = 0.0
        obs, _ = envs.reset(seed=[_reset_seed(s, frame) for s in seed_list],
                            options={'reset_mask': ended})
      called = time.time()
      periodic = programs.periodic and runs_periodic(agent, cfg, frame, int(loop.agent.step))
      loop, action, metrics = step(loop, transition, np.bool_(True), obs)
      pending.append(metrics)
      bar.update(1)
      if first_update is None and frame >= cfg.learning_starts:
        jax.block_until_ready(action)
        first_update = (called, time.time())
        if not programs.periodic:
          programs.act_eval.start()   # in the background, now that it no longer slows the update
      if periodic:                    # DACER's entropy estimate and α step, after its update
        loop = programs.periodic.result()(loop)
        if first_periodic is None:
          jax.block_until_ready(loop.agent.reg)
          first_periodic = time.time()
          programs.act_eval.start()   # now that it no longer slows the first periodic step
      if frame % cfg.log_every == 0 or save:
        window = jax.device_get(pending)
        pending = []
        now = time.time()
        fps = (frame - window_frame) / max(now - window_start, 1e-9)
        window_start, window_frame = now, frame
        for j, log in enumerate(logs):
          stats = summarize([jax.tree_util.tree_map(lambda x: x[j], p) for p in window])
          bad = [k for k, v in stats.items() if not math.isfinite(v)]
          if bad:
            raise TrainingDiverged(
                f"training diverged at frame {frame} (seed {seed_list[j]}): {', '.join(bad)} "
                f"became non-finite; {_kept(run_dir, cfg)}")
          stats['frames_per_second'] = fps
          stats['episode_return'] = host['last_return'][j]
          log.write('train', frame, stats)
      if frame % cfg.eval_every == 0 or frame == cfg.total_frames:
        returns = evaluate(programs.act_eval.result(), loop.agent, eval_envs, cfg.eval_episodes,
                           [_reset_seed(s + 777, frame) for s in seed_list])
        host['eval_return'] = [float(r.mean()) for r in returns]
        for log, r in zip(logs, returns):
          log.write('eval', frame, {'return_mean': r.mean(), 'return_std': r.std()})
      bar.set_postfix(ret=f"{np.mean(host['last_return']):.1f}",
                      eval=f"{np.mean(host['eval_return']):.1f}", refresh=False)
      if save:
        if not checkpoint.is_finite(loop.agent):
          raise TrainingDiverged(
              f"training diverged before frame {frame}: parameters became non-finite; "
              f"{_kept(run_dir, cfg)}")
        # with the next action, so a resumed run draws no new key
        checkpoint.save(mngr, frame, loop, {**host, 'episode_return': episode_return.tolist(),
                                            'action': np.asarray(action).tolist()})
        interrupts.check()          # Ctrl-C: stop now that this frame is saved
    interrupts.check()
  finally:
    interrupts.restore()
    bar.close()
    for log in logs:
      log.close()
    mngr.close()
    envs.close()
  for d, s in zip(log_dirs, seed_list):
    if os.path.exists(os.path.join(d, 'eval.csv')):
      plot_learning_curve(d, f'{agent.method.name} on {env_name}'
                          + (f' (seed {s})' if seeds is not None else ''))
  one = (lambda v: v[0]) if seeds is None else (lambda v: v)
  summary = {'frames': frame, 'eval_return': one(host['eval_return']),
             'seconds': time.time() - t_start}
  if first_update is not None:
    summary.update(seconds_to_first_update=first_update[1] - t_start,
                   first_update_done_at=first_update[1],                  # time.time()
                   first_update_call_seconds=first_update[1] - first_update[0])
  if first_periodic is not None:     # the first periodic step (DACER: α's first entropy estimate)
    summary.update(first_periodic_done_at=first_periodic,
                   first_periodic_seconds=first_periodic - first_update[1])
  return summary
