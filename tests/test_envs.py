"""The env registry: actions in [−1, 1] rescaled to the task's bounds; dm_control observations
flattened; a dm_control time limit is truncation, not termination."""
import numpy as np
import pytest

from flowrl.envs import known_envs, make_env
from flowrl.errors import ConfigError


def test_gym_actions_are_rescaled_to_the_task_bounds():
  env = make_env('Pendulum-v1', seed=0)
  assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
  inner = env.unwrapped
  env.reset(seed=0)
  env.step(np.array([1.0], np.float32))
  assert inner.last_u == pytest.approx(2.0)         # Pendulum's torque bound is 2
  env.step(np.array([-0.5], np.float32))
  assert inner.last_u == pytest.approx(-1.0)
  obs, _ = env.reset(seed=1)
  assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape


def test_dmc_task_is_flat_rescaled_and_truncates_at_its_time_limit():
  env = make_env('dmc:cheetah-run', seed=0)
  obs, _ = env.reset(seed=0)
  assert obs.dtype == np.float32 and obs.shape == (17,) == env.observation_space.shape
  assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
  steps, rewards = 0, []
  while True:
    obs, r, terminated, truncated, _ = env.step(env.action_space.sample())
    rewards.append(r)
    steps += 1
    if terminated or truncated:
      break
  assert steps == 1000 and truncated and not terminated
  assert all(0.0 <= r <= 1.0 for r in rewards)


def test_unknown_env_lists_the_known_ones():
  with pytest.raises(ConfigError, match="unknown environment 'Cheetah-v9'.*HalfCheetah-v5"):
    make_env('Cheetah-v9')
  assert 'dmc:cheetah-run' in known_envs() and 'Hopper-v5' in known_envs()
