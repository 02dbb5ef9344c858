"""Training envs as seeds × envs-per-seed: one gymnasium `SyncVectorEnv` with same-step autoreset,
so a finished episode's true last observation is in `info['final_obs']` (a time-limit truncation
bootstraps from it) while the returned observation is already the next episode's first.

Every episode starts from a reset seeded by its env's base seed and the step it starts at
(`SeededResets`), so a run is reproducible and a checkpoint can fall anywhere in an episode: a
resume resets each env with its episode's seed and replays that episode's actions (MuJoCo and
dm_control step deterministically), then continues exactly as an uninterrupted run would.
"""
import warnings
from typing import Callable, List, Sequence

import gin
import gymnasium as gym
import numpy as np

from flowrl.errors import ConfigError

BACKENDS = ('gymnasium', 'envpool')


def reset_seed(base: int, step: int) -> int:
  return (base * 1_000_003 + step) % (2 ** 31)


def base_seed(seed: int, env_index: int) -> int:
  """Env e of a seed: the seed itself for e = 0 (one env per seed), distinct otherwise."""
  return seed + 100_003 * env_index


class SeededResets(gym.Wrapper):
  """Counts this env's steps; a reset without a seed (the vector env's autoreset) is seeded with
  reset_seed(base, steps so far)."""

  def __init__(self, env, base: int):
    super().__init__(env)
    self.base, self.steps = base, 0

  def step(self, action):
    self.steps += 1
    return self.env.step(action)

  def reset(self, *, seed=None, options=None):
    return self.env.reset(seed=reset_seed(self.base, self.steps) if seed is None else seed,
                          options=options)


@gin.configurable('vector_env', module='flowrl')
def vector_backend(backend: str = 'gymnasium') -> str:
  """What steps a run's training envs on the host: "gymnasium" (a `SyncVectorEnv`) or
  "envpool" (`flowrl.envs.envpool_vector`, the envpool extra: faster stepping, episodes that a
  resume cannot replay)."""
  return backend


def check_backend(backend: str, env_name: str = '') -> str:
  """`backend`, or a one-sentence ConfigError if it is unknown or cannot step `env_name`."""
  if backend not in BACKENDS:
    raise ConfigError(f'unknown vector_env.backend {backend!r}; the backends are '
                      f'{", ".join(map(repr, BACKENDS))}.')
  if backend == 'envpool' and env_name:
    from flowrl.envs.envpool_vector import envpool_task
    envpool_task(env_name)
  return backend


def make_vector_env(make_env: Callable, name: str, seeds: Sequence[int], envs: int):
  """S·N envs, seed-major (env i = seed i // N, env e = i % N), on `vector_backend()`."""
  if check_backend(vector_backend()) == 'envpool':
    from flowrl.envs.envpool_vector import EnvpoolVector
    return EnvpoolVector(name, seeds, envs)
  fns = [lambda s=s, e=e: SeededResets(make_env(name, base_seed(s, e)), base_seed(s, e))
         for s in seeds for e in range(envs)]
  return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def transition_next_obs(next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
  """The observation each env's step led to: its episode's final one where the episode ended."""
  if not done.any():
    return next_obs
  out = next_obs.copy()
  for i in np.flatnonzero(done):
    out[i] = info['final_obs'][i]
  return out


def replay_episodes(vec, starts: List[int], step: int, actions: Callable, stored: Callable,
                    envs: int = 1):
  """Bring every env back to vector step `step` after a restore: reset env i with the seed its
  episode began with (at step starts[i]) and step it through that episode's actions
  (`actions(i, start, step)` -> [step − start, A], or None when they are gone), checking the
  last observation against `stored(i)`. Returns the observations [S·N, O] and the envs that did
  not reproduce their episode (an env that does not step deterministically, or an episode longer
  than the buffer): those start a new episode at `step` instead, with a warning."""
  obs, fresh = [], []
  for i, env in enumerate(vec.envs):
    start = starts[i]
    env.steps = start
    o, _ = env.reset(seed=reset_seed(env.base, start))
    if step > start:
      acts = actions(i, start, step)
      for a in (acts if acts is not None else []):
        o = env.step(a)[0]
      if acts is None or not np.allclose(o, stored(i), rtol=1e-5, atol=1e-5):
        why = ('its actions are no longer stored' if acts is None else
               'replaying it did not reproduce its last observation')
        warnings.warn(f'the episode in progress of env {i} cannot be resumed ({why}); it starts '
                      f'a new episode at frame {step * envs} instead.')
        env.steps = step
        o, _ = env.reset()
        fresh.append(i)
    obs.append(o)
  return np.stack(obs), fresh
