"""Isaac Lab tasks (`isaac:<task id>`), import-guarded: Isaac Lab needs a CUDA GPU machine and
cannot share flowrl's default environment (docs/isaaclab.md gives the one that runs it).

`IsaacLabAdapter` wraps an Isaac Lab env that the user's code has already made, so both launch
styles stay there: 2.x (`AppLauncher` before `import isaaclab_tasks`, task ids ending in -v0) and
3.0 (kitless, ids without -v0). An Isaac Lab env is already a batch of N envs on one device with
same-step autoreset; the adapter passes its tensors to JAX and back through DLPack, so
observations and actions never leave the device and are never copied:

  * observations ('policy', [N, O]) are JAX views of Isaac Lab's tensors (zero-copy);
  * reward, terminated and time_outs live in buffers that Isaac Lab rewrites in place at the next
    step (`reset_terminated[:] = ...`), so they are cast to fresh float32 tensors before the view;
  * the final observation of an episode: Isaac Lab 3.0 gives it in `extras['final_obs']` when the
    task's `compute_final_obs` is set. Isaac Lab 2.x returns none (the observation after a done is
    already the new episode's), so its time-outs are reported as terminations, which never
    bootstrap from a wrong observation, and the adapter says so once on stderr.
"""
import sys
from typing import NamedTuple, Optional

import gin
import jax

from flowrl.errors import ConfigError

PREFIX = 'isaac:'
NEEDS = ('Isaac Lab tasks need a CUDA GPU machine with Isaac Lab installed (isaaclab 3.0 on '
         'Python 3.12, or isaaclab 2.3 with Isaac Sim 5.1 on Python 3.11; docs/isaaclab.md); this '
         'environment has no Isaac Lab, so choose a gymnasium or dm_control task.')
# The tasks flow-rl's Isaac Lab configs train on (2.x ids; 3.0 drops the -v0).
TASKS = ('Isaac-Ant-v0', 'Isaac-Humanoid-v0', 'Isaac-Cartpole-v0',
         'Isaac-Velocity-Flat-Anymal-D-v0', 'Isaac-Velocity-Flat-G1-v0',
         'Isaac-Velocity-Rough-G1-v0', 'Isaac-Lift-Cube-Franka-v0', 'Isaac-Open-Drawer-Franka-v0')


def require_isaaclab():
  """torch and isaaclab, or the one sentence of what is missing (ImportError only: a broken
  install's own error is not hidden)."""
  try:
    import isaaclab  # noqa: F401
    import torch
  except ImportError as e:
    raise ConfigError(NEEDS) from e
  return torch


class IsaacStep(NamedTuple):
  obs: jax.Array          # [N, O]: to act on next (a new episode's first after a done)
  final_obs: jax.Array    # [N, O]: what this step led to (store as next_obs)
  reward: jax.Array       # [N] float32
  terminated: jax.Array   # [N] float32
  truncated: jax.Array    # [N] float32


class IsaacLabAdapter:
  """An already-made Isaac Lab env (or anything with its API) as JAX arrays on its device.

  final_obs: 'auto' (use extras['final_obs'] when the env gives it, else time-outs terminate),
  'extras' (require it) or 'none' (time-outs terminate)."""

  def __init__(self, env, final_obs: str = 'auto', torch=None):
    if final_obs not in ('auto', 'extras', 'none'):
      raise ConfigError(f"IsaacLabAdapter: final_obs is {final_obs!r}; choices: 'auto', "
                        f"'extras', 'none'.")
    self.torch = torch or require_isaaclab()
    self.env, self.final_obs_mode = env, final_obs
    self.device = str(getattr(env.unwrapped, 'device', 'cpu'))
    if self.device.startswith('cuda') and jax.default_backend() == 'cpu':
      raise ConfigError(f'the Isaac Lab env is on {self.device} but JAX has only the CPU here: '
                        f'install jax with CUDA support (jax[cuda13]) so data stays on the GPU.')
    self.num_envs = env.unwrapped.num_envs
    self.obs_dim = int(env.unwrapped.single_observation_space['policy'].shape[-1])
    self.act_dim = int(env.unwrapped.single_action_space.shape[-1])
    self._warned = False

  def _jax(self, tensor):
    return jax.dlpack.from_dlpack(tensor.contiguous())

  def _fresh(self, tensor):
    """A float32 copy of a buffer the env rewrites in place."""
    return self._jax(tensor.to(self.torch.float32, copy=True))

  def reset(self, seed: Optional[int] = None) -> jax.Array:
    obs, _ = self.env.reset(seed=seed)
    return self._jax(obs['policy'])

  def step(self, action: jax.Array) -> IsaacStep:
    act = self.torch.from_dlpack(action).to(self.device)
    obs, reward, terminated, time_outs, extras = self.env.step(act)
    now = self._jax(obs['policy'])
    final = (extras or {}).get('final_obs')
    if final is None and self.final_obs_mode == 'extras':
      raise ConfigError("IsaacLabAdapter(final_obs='extras'): the env gives no "
                        "extras['final_obs']; set the task's compute_final_obs = True (Isaac Lab "
                        "3.0) or use final_obs='auto'.")
    if final is not None and self.final_obs_mode != 'none':
      return IsaacStep(now, self._jax(final['policy']), self._fresh(reward),
                       self._fresh(terminated), self._fresh(time_outs))
    if not self._warned:
      print('flowrl: this Isaac Lab env gives no final observation (Isaac Lab 2.x, or '
            'compute_final_obs off): its time-outs are treated as terminations and do not '
            'bootstrap.', file=sys.stderr)
      self._warned = True
    done = self._fresh(self.torch.logical_or(terminated, time_outs))
    return IsaacStep(now, now, self._fresh(reward), done, jax.numpy.zeros_like(done))


_MADE = {}


@gin.configurable('isaaclab', module='flowrl')
def isaaclab_env(name: str, num_envs: int, device: str = 'cuda:0') -> 'IsaacLabAdapter':
  """The Isaac Lab env of `flowrl.run` for `isaac:<task>`, made once per process (one Isaac Sim
  app per process) with num_envs = train.envs_per_seed, on `device`."""
  require_isaaclab()
  key = (name, num_envs)
  if key not in _MADE:
    if _MADE:
      raise ConfigError(f'{name!r} with {num_envs} envs: this process already made '
                        f'{list(_MADE)[0]}, and Isaac Sim runs one app per process.')
    _MADE[key] = make_isaaclab(name[len(PREFIX):], num_envs, device=device)
  return _MADE[key]


def make_isaaclab(task: str, num_envs: int = 4096, seed: int = 0, device: str = 'cuda:0'):
  """The Isaac Lab 2.x launch (as flow-rl's): a headless app, then the task's config and env.
  Isaac Lab 3.0 (kitless) users make the env their own way and pass it to `IsaacLabAdapter`."""
  require_isaaclab()
  from isaaclab.app import AppLauncher
  AppLauncher(headless=True, device=device)
  import gymnasium as gym
  import isaaclab_tasks  # noqa: F401  (registers the tasks; after the app, as 2.x requires)
  from isaaclab_tasks.utils import parse_env_cfg
  cfg = parse_env_cfg(task, device=device, num_envs=num_envs)
  cfg.seed = seed
  if hasattr(cfg, 'compute_final_obs'):
    cfg.compute_final_obs = True
  return IsaacLabAdapter(gym.make(task, cfg=cfg))
