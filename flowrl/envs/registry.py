"""The environment registry and its one error for an unknown name."""
import os
import warnings

import gin
import gymnasium as gym
import numpy as np

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
  """The task: a gymnasium id (e.g. "HalfCheetah-v5") or "dmc:domain-task" (e.g. "dmc:cheetah-run")."""
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


def make_env(name: str, seed: int = 0) -> gym.Env:
  """Build `name` with actions rescaled to [−1, 1] and observations as flat float32 vectors."""
  if name.startswith('isaac:'):
    from flowrl.envs.isaaclab import require_isaaclab
    require_isaaclab()
    raise ConfigError(f'{name!r}: flowrl.run does not drive Isaac Lab envs yet; wrap the env your '
                      f'own code made with flowrl.envs.isaaclab.IsaacLabAdapter (docs/isaaclab.md).')
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
                        f"or a dm_control task as 'dmc:domain-task' (e.g. dmc:cheetah-run).")
    e = gym.make(name)
  e = gym.wrappers.RescaleAction(e, -1.0, 1.0)
  dim = int(np.prod(e.observation_space.shape))
  e = gym.wrappers.TransformObservation(e, lambda o: np.asarray(o, np.float32).ravel(),
                                        gym.spaces.Box(np.full(dim, -np.inf, np.float32),
                                                       np.full(dim, np.inf, np.float32)))
  e.reset(seed=seed)
  e.action_space.seed(seed)
  return e
