"""The env registry: actions in [−1, 1] rescaled to the task's bounds; dm_control observations
flattened; a dm_control time limit is truncation, not termination; the env settings files."""
import glob
import os

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


@pytest.mark.parametrize('env_file', sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(os.path.dirname(__file__), '..', 'gin',
                                                        'env', '*.gin'))))
def test_every_env_settings_file_parses_after_a_method_and_names_known_tasks(env_file):
  """Each gin/env file binds only names that exist (after an on-policy or an off-policy method
  file, as its header says), and its per-task entries and env.name are tasks of its suite."""
  import gin
  from flowrl import run as cli
  from flowrl.sweep.spec import SUITES
  method = 'gin/ppo.gin' if ('onpolicy' in env_file or 'isaac' in env_file) else 'gin/sac.gin'
  cli.parse_config([method, f'gin/env/{env_file}'], [])
  name = gin.query_parameter('env.name')
  suite = {'mujoco.gin': 'gym-locomotion', 'pendulum.gin': 'classic', 'isaaclab.gin': 'isaaclab',
           'dmc.gin': 'dmc', 'dmc_onpolicy.gin': 'dmc', 'playground.gin': 'playground-dmc',
           'playground_onpolicy.gin': 'playground-dmc'}[env_file]
  assert name in SUITES[suite]
  try:
    per_task = gin.query_parameter('per_task.bindings') or {}
  except ValueError:
    per_task = {}
  from flowrl.envs import playground
  for task in per_task:       # Playground's tuned tasks reach beyond the suite (BallInCup)
    assert (task[len(playground.PREFIX):] in playground.TASKS
            if task.startswith(playground.PREFIX) else task in known_envs()), task
