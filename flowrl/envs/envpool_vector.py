"""envpool's C++ thread pool as the training envs' vector env (the `envpool` extra), for runs
whose time goes to stepping envs: on-policy PPO on HalfCheetah-v5 spends 37–45% of its frames in
gymnasium's `SyncVectorEnv` (benchmarks/onpolicy_throughput.py).

Bind `vector_env.backend = "envpool"`. The training envs of a gymnasium task then step in
envpool, with the same interface the driver uses for `SyncVectorEnv`, including the same-step
autoreset: envpool resets an env on the step *after* its episode ends (ignoring that step's
action, reward 0, no final observation), so this adapter resets the finished envs at once
(`reset(env_id)`) and reports the episode's last observation in `info['final_obs']`, as
gymnasium's `AutoresetMode.SAME_STEP` does. Evaluation still uses gymnasium's env.

What differs from gymnasium's envs, said once here:
  - envpool 1.2.5 bundles its own MuJoCo (3.6.0, not the 3.17.0 flowrl pins), so trajectories
    agree with gymnasium's to the solver's rounding, not bit for bit;
  - envpool seeds env i of a pool with seed + i and draws its resets from that env's own stream,
    so a run is reproducible from its seed, but an episode cannot be replayed from its start:
    a resumed run starts new episodes (its networks and data resume exactly).
"""
import os

import gymnasium as gym
import numpy as np

from flowrl.envs.optional import import_extra
from flowrl.errors import ConfigError

INSTALL = 'pip install -e ".[envpool]"'
VERSION = '1.2.5'


def require_envpool():
  """The envpool module, or a one-sentence ConfigError saying how to install it."""
  return import_extra('envpool', lambda e: (
      f'vector_env.backend = "envpool" needs envpool {VERSION}, which is not installed ({e}); '
      f'install it with `{INSTALL}`, or use the default backend "gymnasium".'))


def envpool_task(name: str) -> str:
  """The envpool id of flowrl's gymnasium task `name` (the ids are the same), or the
  one-sentence ConfigError naming the tasks envpool has."""
  envpool = require_envpool()
  from flowrl.envs.registry import GYM_TASKS
  have = set(envpool.list_all_envs())
  tasks = [t for t in GYM_TASKS if t in have]
  if name not in tasks:
    raise ConfigError(f'vector_env.backend = "envpool" steps gymnasium tasks envpool has, and '
                      f'{name!r} is not one; they are {", ".join(tasks)} (other tasks use the '
                      f'default backend "gymnasium").')
  return name


class EnvpoolVector:
  """S·N envs as one pool per seed (seed-major, like `vector_env.make_vector_env`), with
  actions in [−1, 1] rescaled to the task's box, float32 observations, and the same-step
  autoreset of the module docstring. `replayable` is False: see the module docstring."""
  replayable = False

  def __init__(self, name: str, seeds, envs: int, threads: int = 0):
    envpool = require_envpool()
    task = envpool_task(name)
    limit = gym.spec(task).max_episode_steps
    threads = threads or min(envs, os.cpu_count() or 1)
    self.pools = [envpool.make(task, env_type='gymnasium', num_envs=envs, seed=int(s),
                               num_threads=threads, max_episode_steps=limit) for s in seeds]
    space = self.pools[0].action_space
    self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
    self.n = envs

  def _obs(self, obs):
    return np.asarray(obs, np.float32).reshape(len(obs), -1)

  def reset(self):
    return np.concatenate([self._obs(p.reset()[0]) for p in self.pools]), {}

  def step(self, action):
    """action [S·N, A] in [−1, 1] -> (obs, reward, terminated, truncated, info) over S·N envs,
    each finished env already reset, its last observation in info['final_obs']."""
    action = self.low + (np.asarray(action, np.float64) + 1.0) * 0.5 * (self.high - self.low)
    out = [self._step(p, action[i * self.n:(i + 1) * self.n]) for i, p in enumerate(self.pools)]
    obs, reward, term, trunc, final = (np.concatenate(x) for x in zip(*out))
    return obs, reward, term, trunc, {'final_obs': final}

  def _step(self, pool, action):
    obs, reward, term, trunc, _ = pool.step(action)
    obs, final = self._obs(obs), None
    done = np.flatnonzero(np.logical_or(term, trunc))
    if len(done):
      final = obs.copy()
      fresh, info = pool.reset(done)
      obs[info['env_id']] = self._obs(fresh)
    return obs, reward, term, trunc, final if final is not None else obs

  def close(self):
    for p in self.pools:
      p.close()
