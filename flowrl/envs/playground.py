"""MuJoCo Playground's dm_control-suite ports (`playground:<Name>`, e.g. playground:CheetahRun) as
pure `JaxEnv`s, import-guarded behind the `playground` extra.

Playground's envs are MJX models stepped in JAX (`impl='jax'`: its default `warp` runs at about 25
steps/s on a CPU), so a whole run, env included, is one XLA program and vmaps over seeds and envs.
On this project's 2-core CPU they step at 5–11k env-steps/s, slower than C MuJoCo; their target is
a GPU (docs/envs.md). Only the dm_control-suite tasks ship their models in the wheel; Playground's
locomotion and manipulation tasks `git clone` mujoco_menagerie at load time, which these machines
cannot, so they are not offered.

The adapter calls `MjxEnv.reset` / `step` directly and leaves resets to flowrl's `autoreset`
(Playground's own wrapper resets to a cached first state and overwrites the final observation a
learner bootstraps from). Like Brax's episode wrapper, it repeats each action `action_repeat` times
(summing the rewards) and ends an episode after `episode_length` physics control steps, the
suite's 1000-step limit, as a truncation. Playground's `done` (a NaN in the physics) terminates.
Actions in [−1, 1] are rescaled to each actuator's control range.
"""
import jax
import jax.numpy as jnp
import numpy as np

from flowrl.envs.jax_env import JaxEnv
from flowrl.envs.optional import import_extra
from flowrl.errors import ConfigError

PREFIX = 'playground:'
INSTALL = 'pip install -e ".[playground]"'
TASKS = ('AcrobotSwingup', 'AcrobotSwingupSparse', 'BallInCup', 'CartpoleBalance',
         'CartpoleBalanceSparse', 'CartpoleSwingup', 'CartpoleSwingupSparse', 'CheetahRun',
         'FingerSpin', 'FingerTurnEasy', 'FingerTurnHard', 'FishSwim', 'HopperHop', 'HopperStand',
         'HumanoidStand', 'HumanoidWalk', 'HumanoidRun', 'PendulumSwingup', 'PointMass',
         'ReacherEasy', 'ReacherHard', 'SwimmerSwimmer6', 'WalkerRun', 'WalkerStand', 'WalkerWalk')


def require_playground():
  """mujoco_playground's dm_control suite, or one sentence saying how to install it."""
  return import_extra('mujoco_playground._src.dm_control_suite', lambda e: (
      f'playground: tasks need MuJoCo Playground, which is an optional extra ({INSTALL}: '
      f'playground 0.2.0, mujoco-mjx 3.17.0); this environment lacks it ({e}).'))


def playground_env(name: str, action_repeat: int = 1, episode_length: int = 0) -> JaxEnv:
  """The Playground task `name` (without the prefix) as a JaxEnv; episode_length 0 keeps the
  task's own (1000 control steps for the suite)."""
  if name not in TASKS:
    raise ConfigError(f"unknown Playground task {name!r}; the dm_control-suite tasks that run "
                      f"without a download are: {', '.join(TASKS)}.")
  suite = require_playground()
  overrides = {'impl': 'jax'}
  if episode_length:
    overrides['episode_length'] = episode_length
  env = suite.load(name, config_overrides=overrides)
  if not isinstance(env.observation_size, int):
    raise ConfigError(f'playground:{name} has dict observations, which flowrl does not flatten.')
  low, high = (np.asarray(x, np.float32) for x in env.mj_model.actuator_ctrlrange.T)
  scale, shift = (high - low) / 2, (high + low) / 2
  length = int(episode_length or suite.get_default_config(name).episode_length)

  def reset(key):
    state = env.reset(key)
    return state, state.obs

  def step(state, action):
    control = jnp.clip(action, -1.0, 1.0) * scale + shift

    def repeat(carry, _):
      state, total = carry
      state = env.step(state, control)
      return (state, total + state.reward), None

    (state, reward), _ = jax.lax.scan(repeat, (state, jnp.float32(0.0)), None,
                                      length=action_repeat)
    return state, state.obs, reward, state.done > 0, jnp.bool_(False)

  return JaxEnv(int(env.observation_size), int(env.action_size), length // action_repeat,
                reset, step)
