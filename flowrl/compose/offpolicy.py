"""The off-policy training loop on the host: env stepping, evaluation, logs, checkpoints.

Per env frame there is one jitted call (`make_frame_step`): store, update(s), next action.
Checkpoints fall on episode boundaries (the env is reset with a seed derived from the frame, and
the cut episode counts as truncated, so it bootstraps), which makes a resumed run continue exactly
as an uninterrupted one with the same seed.
"""
import contextlib
import math
import os
import signal
import threading
import time
from typing import Dict, List

import jax
import numpy as np
from tqdm import tqdm

from flowrl.compose import checkpoint
from flowrl.compose.agent import Agent
from flowrl.compose.run_log import RunLog, plot_learning_curve
from flowrl.compose.train_step import TrainConfig, compile_loop
from flowrl.envs import make_env
from flowrl.primitives.critic import Batch


class TrainingDiverged(RuntimeError):
  """A loss became NaN or infinite; the run stopped and kept its last finite checkpoint."""


@contextlib.contextmanager
def _sigint_deferred():
  """Hold a Ctrl-C that arrives inside the block until the block is done (a checkpoint being
  written is finished, not cut), then raise it."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    if received:
      raise KeyboardInterrupt


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


def evaluate(act_eval, state, env, episodes: int, seed: int) -> np.ndarray:
  """Returns of `episodes` evaluation episodes with the jitted deterministic act."""
  returns = []
  for i in range(episodes):
    obs, _ = env.reset(seed=seed + i)
    key = jax.random.PRNGKey(seed + i)
    total, done, t = 0.0, False, 0
    while not done:
      action = np.asarray(act_eval(state, obs[None], jax.random.fold_in(key, t)))[0]
      obs, r, term, trunc, _ = env.step(action)
      total, done, t = total + r, term or trunc, t + 1
    returns.append(total)
  return np.asarray(returns)


def run(agent: Agent, cfg: TrainConfig, env_name: str, run_dir: str, resume: bool = False,
        progress: bool = True) -> Dict[str, float]:
  """Train for cfg.total_frames (from the newest checkpoint when `resume`); returns a summary."""
  t_start = time.time()
  env = make_env(env_name, cfg.seed)
  eval_env = make_env(env_name, cfg.seed + 12345)
  spec, f32 = agent.spec, np.float32
  blank = Batch(np.zeros(spec.obs_dim, f32), np.zeros(spec.act_dim, f32), f32(0),
                np.zeros(spec.obs_dim, f32), f32(0), np.zeros(spec.act_dim, f32))
  programs = compile_loop(agent, cfg, blank)
  step = programs.step
  loop = programs.init()
  mngr = checkpoint.manager(run_dir)
  host = {'episodes': 0, 'last_return': float('nan'), 'eval_return': float('nan')}
  if resume:
    restored = checkpoint.restore(mngr, loop)
    if restored is not None:
      loop, host = restored
  frame = int(loop.frame)
  log = RunLog(run_dir, resume_frame=frame)
  obs, _ = env.reset(seed=_reset_seed(cfg.seed, frame))
  loop, action, _ = step(loop, blank, np.bool_(False), obs)
  pending, episode_return, first_update = [], 0.0, None
  bar = tqdm(total=cfg.total_frames, initial=frame, unit='frame', disable=not progress,
             dynamic_ncols=True, desc=f'{agent.method.name} {env_name}')
  window_start, window_frame = time.time(), frame
  try:
    while frame < cfg.total_frames:
      a = np.asarray(action)
      next_obs, reward, terminated, truncated, _ = env.step(a)
      frame += 1
      episode_return += reward
      boundary = frame % cfg.checkpoint_every == 0 or frame == cfg.total_frames
      transition = Batch(obs, a, f32(reward), next_obs, f32(terminated), a)
      if terminated or truncated or boundary:
        host['episodes'] += 1
        host['last_return'] = float(episode_return)
        episode_return = 0.0
        seed = _reset_seed(cfg.seed, frame) if boundary else None
        obs, _ = env.reset(seed=seed)
      else:
        obs = next_obs
      loop, action, metrics = step(loop, transition, np.bool_(True), obs)
      pending.append(metrics)
      bar.update(1)
      if first_update is None and frame >= cfg.learning_starts:
        jax.block_until_ready(action)
        first_update = time.time() - t_start
      if frame % cfg.log_every == 0 or boundary:
        stats = summarize(jax.device_get(pending))
        pending = []
        bad = [k for k, v in stats.items() if not math.isfinite(v)]
        if bad:
          raise TrainingDiverged(
              f"training diverged at frame {frame}: {', '.join(bad)} became non-finite; "
              f"the last finite checkpoint is kept in {os.path.join(run_dir, 'checkpoints')}.")
        now = time.time()
        stats['frames_per_second'] = (frame - window_frame) / max(now - window_start, 1e-9)
        stats['episode_return'] = host['last_return']
        window_start, window_frame = now, frame
        log.write('train', frame, stats)
      if frame % cfg.eval_every == 0 or frame == cfg.total_frames:
        returns = evaluate(programs.act_eval.result(), loop.agent, eval_env, cfg.eval_episodes,
                           _reset_seed(cfg.seed + 777, frame))
        host['eval_return'] = float(returns.mean())
        log.write('eval', frame, {'return_mean': returns.mean(), 'return_std': returns.std()})
      bar.set_postfix(ret=f"{host['last_return']:.1f}", eval=f"{host['eval_return']:.1f}",
                      refresh=False)
      if boundary:
        if not checkpoint.is_finite(loop.agent):
          raise TrainingDiverged(
              f"training diverged before frame {frame}: parameters became non-finite; "
              f"the last finite checkpoint is kept in {os.path.join(run_dir, 'checkpoints')}.")
        with _sigint_deferred():
          checkpoint.save(mngr, frame, loop, host)
  finally:
    bar.close()
    log.close()
    mngr.close()
  if os.path.exists(os.path.join(run_dir, 'eval.csv')):
    plot_learning_curve(run_dir, f'{agent.method.name} on {env_name}')
  return {'frames': frame, 'eval_return': host['eval_return'],
          'seconds_to_first_update': first_update, 'seconds': time.time() - t_start}
