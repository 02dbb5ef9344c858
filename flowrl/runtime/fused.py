"""The fused run: K frames of act → env step → source add → update (when due) as one `lax.scan`,
so the host calls one program per block of frames instead of one per frame.

  block(loop, env_state, obs [S, N, O], action [S, N, A])
      -> (loop, env_state, obs, action, metrics {name: [S, K·n, ...]},
          episodes {reward, terminated, truncated: [K, S, N]})

(`episodes` is what the host's episode bookkeeping needs where the envs stepped on the device.)

Each frame is the driver's own frame step (`flowrl.compose.step.make_frame_step`, batched over
seeds), so a block computes what K calls of it would. Where the envs step is the backend's:

  host_env_step   an ordered `io_callback` into the driver's gymnasium / dm_control vector env
                  (exact semantics: its same-step autoreset with the final observation, its
                  seeded resets, its episode bookkeeping). Not vmappable: the S·N envs step as one
                  host batch. Measured about 9k env-steps/s inside a scan (docs/envs.md).
  jax_env_step    a pure `JaxEnv` with flowrl's `autoreset`, vmapped over seeds and envs; the
                  whole block then never leaves the device.
"""
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from flowrl.envs.jax_env import JaxEnv, batched_autoreset

STORED = ('action', 'reward', 'next_obs', 'terminated', 'truncated')


def fused_block(step_fn: Callable, env_step: Callable, frames: int) -> Callable:
  """The block over `frames` frames. step_fn: the batched frame step (loop, transition {column:
  [S, N, ...]}, valid, next_obs [S, N, O]) -> (loop, action, metrics [S, n, ...]); env_step:
  (env_state, action [S, N, A]) -> (env_state, transition without 'obs', next_obs [S, N, O])."""

  def block(loop, env_state, obs, action):
    def frame(carry, _):
      loop, env_state, obs, action = carry
      env_state, transition, next_obs = env_step(env_state, action)
      loop, action, metrics = step_fn(loop, {**transition, 'obs': obs}, jnp.bool_(True), next_obs)
      episodes = {k: transition[k] for k in ('reward', 'terminated', 'truncated')}
      return (loop, env_state, next_obs, action), (metrics, episodes)

    (loop, env_state, obs, action), (metrics, episodes) = jax.lax.scan(
        frame, (loop, env_state, obs, action), None, length=frames)
    per_seed = lambda x: jnp.swapaxes(x, 0, 1).reshape((x.shape[1], -1) + x.shape[3:])
    return loop, env_state, obs, action, jax.tree_util.tree_map(per_seed, metrics), episodes

  return block


def host_env_step(host_step: Callable, seeds: int, envs: int, obs_dim: int,
                  act_dim: int) -> Callable:
  """env_step through an ordered io_callback: host_step(action [S, N, A] numpy) -> (transition
  {STORED column: [S, N, ...]}, next_obs [S, N, O]), run on the host in frame order."""
  f32 = lambda *shape: jax.ShapeDtypeStruct((seeds, envs) + shape, jnp.float32)
  shapes = ({'action': f32(act_dim), 'reward': f32(), 'next_obs': f32(obs_dim),
             'terminated': f32(), 'truncated': f32()}, f32(obs_dim))

  def typed(action):
    transition, next_obs = host_step(np.asarray(action))
    return ({k: np.asarray(transition[k], np.float32) for k in STORED},
            np.asarray(next_obs, np.float32))

  def env_step(env_state, action):
    transition, next_obs = io_callback(typed, shapes, action, ordered=True)
    return env_state, transition, next_obs

  return env_step


def jax_env_step(env: JaxEnv) -> Callable:
  """env_step of a pure env with flowrl's autoreset, over an EpisodeState with leading [S, N]
  axes; `reset(keys [S, N])` -> (env_state, obs [S, N, O]) starts it."""
  reset, step = batched_autoreset(env, lambda fn: jax.vmap(jax.vmap(fn)))

  def env_step(env_state, action):
    env_state, out = step(env_state, action)
    transition: Dict = {'action': action, 'reward': out.reward, 'next_obs': out.final_obs,
                        'terminated': out.terminated, 'truncated': out.truncated}
    return env_state, transition, out.obs

  return env_step, reset
