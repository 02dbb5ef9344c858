"""dm_control suite tasks behind the gymnasium API. A time limit is truncation (the suite's
discount stays 1 at the last step); a discount of 0 is termination."""
import os

import gymnasium as gym
import numpy as np

os.environ.setdefault('MUJOCO_GL', 'egl')


class DMCEnv(gym.Env):
  metadata = {'render_modes': []}

  def __init__(self, task: str, seed: int = 0):
    from dm_control import suite
    domain, name = task.split('-', 1)
    self._domain, self._name = domain, name
    self._env = suite.load(domain, name, task_kwargs={'random': seed})
    spec = self._env.action_spec()
    self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32),
                                       spec.maximum.astype(np.float32), dtype=np.float32)
    dim = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
    self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

  @staticmethod
  def _flat(observation):
    return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])

  def reset(self, *, seed=None, options=None):
    if seed is not None:
      from dm_control import suite
      self._env = suite.load(self._domain, self._name, task_kwargs={'random': seed})
    return self._flat(self._env.reset().observation), {}

  def step(self, action):
    ts = self._env.step(action)
    terminated = ts.last() and ts.discount == 0.0
    truncated = ts.last() and not terminated
    return self._flat(ts.observation), float(ts.reward or 0.0), terminated, truncated, {}
