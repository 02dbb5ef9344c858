"""The one training driver of every paradigm: the host side around the jitted step
(`flowrl.compose.step`). Per vector step of the envs there is one jitted call — add the
transition to the data source, run the updates that are due, choose the next actions — for one
seed or for several seeds batched in one program. The driver owns what is not pure: env stepping
(`vector_env`), evaluation, logs, checkpoints, Ctrl-C and SIGTERM (the frame in progress is
saved, then the run stops), resume, and when each program compiles (`compile`).
"""
import math
import os
import sys
import time
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from flowrl.compose.agent import Agent
from flowrl.compose.step import (TRANSITION, TrainConfig, frames_per_step, make_source,
                                runs_periodic)
from flowrl.data.base import DataSource
from flowrl.data.offline import normalized_score
from flowrl.envs import is_isaac, is_pure, make_env, make_jax_env
from flowrl.errors import ConfigError
from flowrl.runtime import allocator, checkpoint, fused, pure_env, vector_env
from flowrl.runtime.compile import compile_loop
from flowrl.runtime.evaluate import evaluate
from flowrl.runtime.init_from import read_checkpoint, transplant
from flowrl.runtime.interrupts import Interrupts
from flowrl.runtime.run_log import RunLog, plot_learning_curve


class TrainingDiverged(RuntimeError):
  """A loss became NaN or infinite; the run stopped and kept its last finite checkpoint."""


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


def _kept(run_dir: str, cfg: TrainConfig) -> str:
  """The end of a divergence message: which checkpoint is left, or that none is."""
  saved = checkpoint.latest_frame(run_dir)
  if saved is None:
    return (f'no checkpoint had been written yet (the first was due at frame '
            f'{cfg.checkpoint_every}), so there is nothing to resume from.')
  return (f"the last finite checkpoint (frame {saved}) is kept in "
          f"{os.path.join(run_dir, 'checkpoints')}.")


def _crossed(before: int, after: int, every: int) -> bool:
  return after // every > before // every


class Driver:
  """One run: S seeds × N envs each, their data source, logs and checkpoints in run_dir."""

  def __init__(self, agent: Agent, cfg: TrainConfig, env_name: str, run_dir: str, seeds,
               batched: bool, source: Optional[DataSource] = None, envs: int = 1,
               init_from: Optional[str] = None):
    self.agent, self.cfg, self.env_name, self.run_dir = agent, cfg, env_name, run_dir
    self.init_from = init_from
    self.seeds, self.n_envs, self.batched = list(seeds), envs, batched
    self.source = source or make_source(agent, cfg, envs)
    self.ref_scores = cfg.source.ref_scores if cfg.source is not None else None
    S, N, o, a = len(self.seeds), envs, agent.spec.obs_dim, agent.spec.act_dim
    z = lambda *shape: np.zeros((S, N) + shape, np.float32)
    self.blank = {'obs': z(o), 'action': z(a), 'reward': z(), 'next_obs': z(o),
                  'terminated': z(), 'truncated': z()}
    # a pure-JAX env steps on the device, in the programs; other envs on the host
    jax_env = make_jax_env(env_name) if is_pure(env_name) else None
    self.env_state = ()
    # XLA compiles while the host sets up
    # (an Isaac Lab env is not JAX and steps between the programs: no fused blocks)
    isaac = is_isaac(env_name)
    fusing = bool(cfg.fused_frames) and self.source.collects and not isaac
    self.block_frames = max(1, cfg.fused_frames // envs) * envs if fusing else 0
    self.programs = compile_loop(agent, self.source, cfg, self.blank, z(o), self.seeds, envs,
                                 host_step=self._host_step if fusing else None, jax_env=jax_env)
    self.pure = self.programs.pure
    if isaac:                          # a batch of envs on its GPU, stepped between programs
      self.pure = _isaac_env(env_name, self.seeds, envs)
    host_envs = self.source.collects and self.pure is None
    self.vec = (vector_env.make_vector_env(make_env, env_name, self.seeds, envs)
                if host_envs else None)      # offline: evaluation envs only
    self.eval_envs = ([make_env(env_name, s + 12345) for s in self.seeds]
                      if self.pure is None else [])
    self.mngr = checkpoint.manager(run_dir, cfg.keep_checkpoints or None)
    self.log_dirs = ([os.path.join(run_dir, f'seed_{s}') for s in self.seeds] if batched
                     else [run_dir])
    nan = float('nan')
    self.host = {'episodes': [0] * S, 'last_return': [nan] * S, 'eval_return': [nan] * S,
                 'episode_start': [0] * (S * N), 'episode_return': [0.0] * (S * N)}

  @property
  def resumable_envs(self) -> bool:
    """Whether the envs' state is checkpointed (a pure-JAX env's is; Isaac Lab's cannot be)."""
    return self.pure is not None and self.pure.env is not None and self.source.collects

  def _shape(self, x):
    """[S·N, ...] host arrays of the vector env -> [S, N, ...]."""
    return x.reshape((len(self.seeds), self.n_envs) + x.shape[1:])

  def start(self, resume: bool):
    """The loop state, this step's observations [S·N, O] and the actions chosen for them."""
    step = self.programs.step.result()
    loop = self.programs.init.result()()
    restored = None
    if resume:
      # the envs' state and observations, as a new run's
      env_like = self.pure.reset_like if self.resumable_envs else None
      restored = checkpoint.restore(self.mngr, self._saved(loop), env_like)
    if restored is not None:
      (saved, self.host), data = restored, loop.data
      if self.resumable_envs:
        saved, (self.env_state, obs) = saved
      loop = saved if self.source.collects else saved._replace(data=data)
    elif self.init_from:               # a new run from another run's networks
      state, notes = transplant(loop.agent, read_checkpoint(self.init_from)[0], self.init_from,
                                len(self.seeds) if self.batched else 0)
      loop = loop._replace(agent=state)
      for note in notes:
        print(f'flowrl: --init-from: {note}', file=sys.stderr)
    if not self.source.collects:
      self.host.pop('action', None)
      return loop, self.blank['obs'].reshape(-1, self.agent.spec.obs_dim), self.blank['action']
    if self.pure is not None and not self.resumable_envs and 'action' in self.host:
      print('flowrl: an Isaac Lab run resumes its networks and data, and its envs start new '
            'episodes (GPU physics cannot be replayed).', file=sys.stderr)
      self.host.pop('action')
      self.host['episode_return'] = [0.0] * len(self.host['episode_return'])
    if 'action' not in self.host:      # a new run: reset the envs and choose the first actions
      if self.pure is not None:
        self.env_state, obs = self.pure.reset(pure_env.keys(self.seeds, self.n_envs))
        obs = obs.reshape(-1, self.agent.spec.obs_dim)
      else:
        obs, _ = self.vec.reset()
      loop, action, _ = step(loop, self.blank, np.bool_(False), self._shape(obs))
      return loop, obs, action
    if self.pure is not None:          # resumed: the saved envs continue where they were
      return loop, obs.reshape(-1, self.agent.spec.obs_dim), np.asarray(
          self.host.pop('action'), np.float32)
    obs, fresh = self._replay(loop)    # resumed: bring the envs back to this frame
    action = np.asarray(self.host.pop('action'), np.float32)   # the saved run's choice for obs
    for i in fresh:
      self.host['episode_start'][i] = int(loop.frame) // self.n_envs
      self.host['episode_return'][i] = 0.0
    if fresh:                          # an env began a new episode: choose for its new obs
      loop, action, _ = step(loop, self.blank, np.bool_(False), self._shape(obs))
    return loop, obs, action

  def _replay(self, loop):
    if not getattr(self.vec, 'replayable', True):   # envpool: every env starts a new episode
      print('flowrl: the envpool backend cannot replay an episode in progress; this resumed run '
            'continues its networks and data, and its envs start new episodes.', file=sys.stderr)
      return self.vec.reset()[0], list(range(len(self.seeds) * self.n_envs))
    step, N, hist = int(loop.frame) // self.n_envs, self.n_envs, self.source.history
    seed = lambda i: i // N if self.batched else None
    rows = lambda i, a, b: np.arange(a, b) * N + i % N

    def actions(i, start, stop):
      if hist is None or (stop - start) * N > loop.data.data['action'].shape[-2]:
        return None
      return hist(loop.data, 'action', rows(i, start, stop), seed(i))

    stored = lambda i: hist(loop.data, 'next_obs', rows(i, step - 1, step), seed(i))[-1]
    return vector_env.replay_episodes(self.vec, self.host['episode_start'], step, actions,
                                      stored, N)

  def env_step(self, action, frame: int, returns: np.ndarray):
    """Step every env; returns (transition [S·N, ...], next observations [S·N, O])."""
    if self.pure is not None:
      self.env_state, transition, next_obs = self.pure.step(self.env_state, jnp.asarray(action))
      reward, done = pure_env.episode_columns(jax.tree_util.tree_map(lambda x: x[None],
                                                                     transition))
      self._episodes(frame, reward[0], done[0], returns)
      flat = lambda x: x.reshape((-1,) + x.shape[2:])
      return ({k: flat(v) for k, v in transition.items()},
              next_obs.reshape(-1, self.agent.spec.obs_dim))
    f32 = np.float32
    a = action.reshape(len(self.seeds) * self.n_envs, -1)
    # the env gets the action in its box; the source keeps the policy's own (an unsquashed
    # Gaussian's log-prob is of the unclipped sample)
    next_obs, reward, terminated, truncated, info = self.vec.step(np.clip(a, -1.0, 1.0))
    done = terminated | truncated
    transition = {'obs': None, 'action': a, 'reward': reward.astype(f32),
                  'next_obs': vector_env.transition_next_obs(next_obs, done, info),
                  'terminated': terminated.astype(f32), 'truncated': truncated.astype(f32)}
    self._episodes(frame, reward, done, returns)
    return transition, next_obs

  def _episodes(self, frame: int, reward, done, returns):
    """The host's episode bookkeeping after one vector step of the envs ([S·N] each)."""
    returns += reward
    for i in np.flatnonzero(done):
      j = i // self.n_envs
      self.host['episodes'][j] += 1
      self.host['last_return'][j] = float(returns[i])
      self.host['episode_start'][i] = frame // self.n_envs
      returns[i] = 0.0

  def _host_step(self, action):
    """A fused block's env step, called from inside the program in frame order."""
    self.host_frame += self.n_envs
    transition, next_obs = self.env_step(action, self.host_frame, self.host_returns)
    return {k: self._shape(transition[k]) for k in fused.STORED}, self._shape(next_obs)

  def block_fits(self, frame: int, loop) -> bool:
    """Whether the next cfg.fused_frames frames can run as one block: after the first update,
    with no log, evaluation, checkpoint or periodic step due inside it (one at its end is run
    after it), and not past the run's end."""
    cfg, end = self.cfg, frame + self.block_frames
    if not self.block_frames or end > cfg.total_frames or frame < cfg.learning_starts:
      return False
    if any(_crossed(frame, end - 1, every) for every in
           (cfg.log_every, cfg.eval_every, cfg.checkpoint_every)):
      return False
    every = self.agent.periodic_every if self.programs.periodic else 0
    return not every or ((-int(loop.agent.step)) % every
                         >= self.block_frames // self.n_envs * self.source.n)

  def run_block(self, loop, obs, action, frame: int, returns):
    """cfg.fused_frames frames in one call: (loop, obs [S·N, O], action, metrics)."""
    self.host_frame, self.host_returns = frame, returns
    loop, self.env_state, obs, action, metrics, episodes = self.programs.block.result()(
        loop, self.env_state, self._shape(obs), action)
    if self.pure is not None:          # the envs stepped on the device: book their episodes
      for k, (reward, done) in enumerate(zip(*pure_env.episode_columns(episodes))):
        self._episodes(frame + (k + 1) * self.n_envs, reward, done, returns)
      return loop, obs.reshape(-1, self.agent.spec.obs_dim), action, metrics
    return loop, np.asarray(obs).reshape(-1, self.agent.spec.obs_dim), action, metrics

  def log(self, frame: int, pending, fps: float):
    for j, log in enumerate(self.logs):
      stats = summarize([jax.tree_util.tree_map(lambda x: x[j], p) for p in pending])
      bad = [k for k, v in stats.items() if not math.isfinite(v)]
      if bad:
        raise TrainingDiverged(
            f"training diverged at frame {frame} (seed {self.seeds[j]}): {', '.join(bad)} "
            f"became non-finite; {_kept(self.run_dir, self.cfg)}")
      stats['frames_per_second'] = fps
      if self.source.collects:
        stats['episode_return'] = self.host['last_return'][j]
      log.write('train', frame, stats)

  def evaluate(self, frame: int, agent_state):
    if self.pure is not None and self.pure.evaluate is None:
      return                           # Isaac Lab: no second env; the training episodes are the log
    if self.pure is not None:          # one program: every seed's episodes step together
      returns = np.asarray(self.programs.act_eval.result()(
          agent_state, pure_env.eval_keys(self.seeds, frame)))
    else:
      returns = evaluate(self.programs.act_eval.result(), agent_state, self.eval_envs,
                         self.cfg.eval_episodes,
                         [vector_env.reset_seed(s + 777, frame) for s in self.seeds])
    self.host['eval_return'] = [float(r.mean()) for r in returns]
    for log, r in zip(self.logs, returns):
      row = {'return_mean': r.mean(), 'return_std': r.std()}
      score = self.ref_scores and normalized_score(r, *self.ref_scores)
      if score is not None:          # offline: D4RL's 100·(R − R_min)/(R_max − R_min)
        row.update(normalized_score_mean=score.mean(), normalized_score_std=score.std())
      log.write('eval', frame, row)

  def _saved(self, loop):
    """What a checkpoint keeps of the loop state: all of it, except a dataset (read again from
    its source on resume, never copied into every checkpoint)."""
    return loop if self.source.collects else loop._replace(data=())

  def save(self, frame: int, loop, returns, action, obs):
    if not checkpoint.is_finite(loop.agent):
      raise TrainingDiverged(f"training diverged before frame {frame}: parameters became "
                             f"non-finite; {_kept(self.run_dir, self.cfg)}")
    # with the next actions, so a resumed run draws no new key
    checkpoint.save(self.mngr, frame, self._saved(loop),
                    {**self.host, 'episode_return': returns.tolist(),
                     'action': np.asarray(action).tolist()},
                    (self.env_state, self._shape(obs)) if self.resumable_envs else None)

  def close(self):
    for log in getattr(self, 'logs', []):
      log.close()
    self.mngr.close()
    if self.vec is not None:
      self.vec.close()


def _isaac_env(name: str, seeds, envs: int):
  from flowrl.envs.isaaclab import isaaclab_env
  if len(seeds) != 1:
    raise ConfigError(f'an Isaac Lab run trains one seed (Isaac Sim runs one app per process), '
                      f'not {len(seeds)}: run each seed as its own run.')
  print('flowrl: Isaac Lab runs have no evaluation episodes (one app per process leaves no env '
        'to evaluate on); train.csv logs the training episodes.', file=sys.stderr)
  return pure_env.isaac_env(isaaclab_env(name, envs), seeds[0])


class _Timing:
  """When the first update and the first periodic step finished (the start-up benchmark's
  figures), and the frames per second of each log window."""

  def __init__(self, frame: int):
    self.first_update = self.first_periodic = None
    self.window = (time.time(), frame)

  def fps(self, frame: int) -> float:
    now, (then, before) = time.time(), self.window
    self.window = (now, frame)
    return (frame - before) / max(now - then, 1e-9)


def _train(d: Driver, loop, obs, action, interrupts: Interrupts, bar, timing: _Timing):
  cfg, programs, agent = d.cfg, d.programs, d.agent
  step, frame, N = programs.step.result(), int(loop.frame), frames_per_step(d.source, d.n_envs)
  returns = np.asarray(d.host.pop('episode_return'), np.float64)
  pending = []
  while frame < cfg.total_frames:
    before = frame
    if timing.first_update is not None and d.block_fits(frame, loop):
      loop, obs, action, metrics = d.run_block(loop, obs, action, frame, returns)
      frame += d.block_frames
    else:
      frame += N
      if d.source.collects:
        transition, next_obs = d.env_step(
            action if d.pure is not None else np.asarray(action), frame, returns)
        transition['obs'] = obs
        obs = next_obs
      else:                         # offline: a step is an update burst on the dataset
        transition = {k: v.reshape((-1,) + v.shape[2:]) for k, v in d.blank.items()}
      called = time.time()
      periodic = programs.periodic and runs_periodic(
          agent, d.source, frame, int(loop.agent.step), bool(d.source.due(None, frame)))
      loop, action, metrics = step(loop, {k: d._shape(transition[k]) for k in TRANSITION},
                                   np.bool_(True), d._shape(obs))
      if timing.first_update is None and frame >= cfg.learning_starts:
        jax.block_until_ready(action)
        timing.first_update = (called, time.time())
        if not programs.periodic:
          programs.act_eval.start()   # in the background, now that it no longer slows updates
        if programs.block:
          programs.block.start()
      if periodic:                  # DACER's entropy estimate and α step, after its update
        loop = programs.periodic.result()(loop)
        if timing.first_periodic is None:
          jax.block_until_ready(loop.agent.reg)
          timing.first_periodic = time.time()
          programs.act_eval.start()   # now that it no longer slows the first periodic step
    pending.append(metrics)
    bar.update(frame - before)
    due = _crossed(before, frame, cfg.checkpoint_every) or frame >= cfg.total_frames
    if _crossed(before, frame, cfg.log_every) or due or interrupts.received:
      d.log(frame, jax.device_get(pending), timing.fps(frame))
      pending = []
    if _crossed(before, frame, cfg.eval_every) or frame >= cfg.total_frames:
      d.evaluate(frame, loop.agent)
    if d.source.collects:
      bar.set_postfix(ret=f"{np.mean(d.host['last_return']):.1f}",
                      eval=f"{np.mean(d.host['eval_return']):.1f}", refresh=False)
    else:                           # offline: no training episodes
      bar.set_postfix(eval=f"{np.mean(d.host['eval_return']):.1f}", refresh=False)
    # read the flag again: a signal that came while the main thread waited for this frame's
    # results (in its log or evaluation) is only handled once that wait is over
    if due or interrupts.received:
      if pending:
        d.log(frame, jax.device_get(pending), timing.fps(frame))
        pending = []
      d.save(frame, loop, returns, action, obs)
      interrupts.check()            # Ctrl-C: stop now that this frame is saved
  interrupts.check()
  return frame


def run(agent: Agent, cfg: TrainConfig, env_name: str, run_dir: str, resume: bool = False,
        progress: bool = True, seeds=None, source: Optional[DataSource] = None,
        init_from: Optional[str] = None) -> Dict:
  """Train for cfg.total_frames (from the newest checkpoint when `resume`); returns a summary.

  With `seeds` (a list), the seeds train together in one program (`vmap`), each writing its logs
  to run_dir/seed_<s>/ as a separate run with that seed would; the checkpoint holds them all.
  Without it, one run with cfg.seed logs to run_dir itself. `source` defaults to the replay;
  each seed steps cfg.envs_per_seed envs. `init_from`: a run folder whose networks start this
  run where it has no checkpoint of its own (`flowrl.runtime.init_from`)."""
  t_start = time.time()
  allocator.keep_freed_memory()     # updates reuse freed temporaries: no page faults per call
  d = Driver(agent, cfg, env_name, run_dir, seeds if seeds is not None else [cfg.seed],
             seeds is not None, source, cfg.envs_per_seed, init_from)
  try:
    loop, obs, action = d.start(resume)
    frame = int(loop.frame)
    d.logs = [RunLog(p, resume_frame=frame) for p in d.log_dirs]
    timing, interrupts = _Timing(frame), Interrupts()
    bar = tqdm(total=cfg.total_frames, initial=frame, unit='frame', disable=not progress,
               dynamic_ncols=True, desc=f'{agent.method.name} {env_name}'
               + (f' ×{len(d.seeds)} seeds' if d.batched else ''))
    try:
      frame = _train(d, loop, obs, action, interrupts, bar, timing)
    finally:
      interrupts.restore()
      bar.close()
  finally:
    d.close()
  for p, s in zip(d.log_dirs, d.seeds):
    if os.path.exists(os.path.join(p, 'eval.csv')):
      plot_learning_curve(p, f'{agent.method.name} on {env_name}'
                          + (f' (seed {s})' if d.batched else ''))
  return _summary(d, frame, t_start, timing)


def _summary(d: Driver, frame: int, t_start: float, timing: _Timing) -> Dict:
  one = (lambda v: v) if d.batched else (lambda v: v[0])
  summary = {'frames': frame, 'eval_return': one(d.host['eval_return']),
             'seconds': time.time() - t_start}
  if timing.first_update is not None:
    called, done = timing.first_update
    summary.update(seconds_to_first_update=done - t_start, first_update_done_at=done,
                   first_update_call_seconds=done - called)
  if timing.first_periodic is not None:   # DACER: α's first entropy estimate
    summary.update(first_periodic_done_at=timing.first_periodic,
                   first_periodic_seconds=timing.first_periodic - timing.first_update[1])
  return summary
