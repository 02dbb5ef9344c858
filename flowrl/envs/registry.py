"""The environment registry and its one error for an unknown name."""
import os
import warnings

import gin
import gymnasium as gym
import numpy as np

from flowrl.envs.isaaclab import PREFIX as ISAAC
from flowrl.envs.playground import PREFIX as PLAYGROUND
from flowrl.errors import ConfigError

GYM_TASKS = ('Ant-v5', 'HalfCheetah-v5', 'Hopper-v5', 'Humanoid-v5', 'HumanoidStandup-v5',
             'InvertedDoublePendulum-v5', 'InvertedPendulum-v5', 'Pusher-v5', 'Reacher-v5',
             'Swimmer-v5', 'Walker2d-v5', 'Pendulum-v1', 'MountainCarContinuous-v0')


# gymnasium warns once per space that it stores float64 bounds as float32; nothing to act on.
warnings.filterwarnings('ignore', message='.*precision lowered by casting to float32')


def _dmc_tasks():
  os.environ.setdefault('MUJOCO_GL', 'egl')
  from dm_control import suite
  return tuple(f'dmc:{d}-{t}' for d, t in suite.ALL_TASKS)


def known_envs():
  return GYM_TASKS + _dmc_tasks()


@gin.configurable('env', module='flowrl')
def env(name: str = 'HalfCheetah-v5') -> str:
  """The task: a gymnasium id (e.g. "HalfCheetah-v5"), "dmc:domain-task" (e.g.
  "dmc:cheetah-run"), a pure-JAX env or an Isaac Lab task ("isaac:<task id>")."""
  return name


@gin.configurable('per_task', module='flowrl')
def per_task(bindings=None) -> dict:
  """Bindings that hold on one task only, as a method's official code sets them per task:
  {task name: ['name.param = value', ...]}, e.g. DACER's behaviour noise 0.15 on HalfCheetah-v5.
  `flowrl.run` applies the entry of the run's task after the gin files and before the user's
  --bind values, so a --bind still wins."""
  return dict(bindings or {})


def _did_you_mean(name: str, known) -> str:
  """' did you mean 'X'?' for a near miss (case, version or a typo), else ''."""
  import difflib
  lower = {k.lower(): k for k in known}
  close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.8)
  return f" did you mean {lower[close[0]]!r}?" if close else ''


JAX_TASKS = ('jax:Pendulum-v1',)     # pure-JAX ports of registry tasks (flowrl.envs.jax_env)


def is_pure(name: str) -> bool:
  """Whether `name` is a pure-JAX env, which a run steps inside its XLA program."""
  return name.startswith(('jax:', PLAYGROUND))


def is_isaac(name: str) -> bool:
  """Whether `name` is an Isaac Lab task: a batch of envs on its GPU, made once per process."""
  return name.startswith(ISAAC)


@gin.configurable('jax_env', module='flowrl')
def make_jax_env(name: str, action_repeat: int = 1, episode_length: int = 0):
  """The pure env `name` as a `JaxEnv`: 'jax:Pendulum-v1', or a MuJoCo Playground dm_control-suite
  task 'playground:<Name>' (the `playground` extra; action_repeat and episode_length, in control
  steps with 0 for the task's own, apply to it)."""
  if name.startswith(PLAYGROUND):
    from flowrl.envs.playground import playground_env
    return playground_env(name[len(PLAYGROUND):], action_repeat, episode_length)
  if name not in JAX_TASKS:
    raise ConfigError(f"unknown environment {name!r}; the pure-JAX envs are "
                      f"{', '.join(JAX_TASKS)} and 'playground:<Name>' (MuJoCo Playground).")
  from flowrl.envs.jax_env import pendulum
  return pendulum()


def env_spec(name: str, envs: int = 1):
  """(observation size, action size) of the env `name`, or its one-sentence ConfigError. An
  Isaac Lab task is made here, once per process, with `envs` envs."""
  if is_isaac(name):
    from flowrl.envs.isaaclab import isaaclab_env
    e = isaaclab_env(name, envs)
    return e.obs_dim, e.act_dim
  if is_pure(name):
    e = make_jax_env(name)
    return e.obs_dim, e.act_dim
  probe = make_env(name, 0)
  spec = probe.observation_space.shape[0], probe.action_space.shape[0]
  probe.close()
  return spec


def make_env(name: str, seed: int = 0) -> gym.Env:
  """Build `name` with actions rescaled to [−1, 1] and observations as flat float32 vectors."""
  if is_pure(name):
    raise ConfigError(f'{name!r} is a pure-JAX env: a run steps it inside its program, and '
                      f'there is no gymnasium env of it to make.')
  if is_isaac(name):
    from flowrl.envs.isaaclab import require_isaaclab
    require_isaaclab()
    raise ConfigError(f'{name!r}: an Isaac Lab env is a batch of envs on its GPU, made once per '
                      f'process by the run (flowrl.envs.isaaclab.isaaclab_env), not one '
                      f'gymnasium env.')
  if name.startswith('dmc:'):
    if name not in _dmc_tasks():
      raise ConfigError(f"unknown environment {name!r};{_did_you_mean(name, _dmc_tasks())} "
                        f"dm_control tasks are: "
                        f"{', '.join(_dmc_tasks())}.")
    from flowrl.envs.dmc import DMCEnv
    e = DMCEnv(name[4:], seed)
  else:
    if name not in GYM_TASKS:
      raise ConfigError(f"unknown environment {name!r};{_did_you_mean(name, known_envs())} "
                        f"known: {', '.join(GYM_TASKS)}, "
                        f"a dm_control task as 'dmc:domain-task' (e.g. dmc:cheetah-run), or a "
                        f"pure-JAX env ({', '.join(JAX_TASKS)}, 'playground:<Name>').")
    e = gym.make(name)
  e = gym.wrappers.RescaleAction(e, -1.0, 1.0)
  dim = int(np.prod(e.observation_space.shape))
  e = gym.wrappers.TransformObservation(e, lambda o: np.asarray(o, np.float32).ravel(),
                                        gym.spaces.Box(np.full(dim, -np.inf, np.float32),
                                                       np.full(dim, np.inf, np.float32)))
  e.reset(seed=seed)
  e.action_space.seed(seed)
  return e
