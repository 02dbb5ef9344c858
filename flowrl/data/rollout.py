"""The on-policy rollout source: T steps × N envs, then epochs × minibatches of the env steps with
advantages from GAE, then cleared.

Truncation is bootstrapped, never treated as termination (Pardo et al. 2018): with
done = terminated ∨ truncated, the discount is γ(1 − done) and the reward of a truncated step
becomes r + γ·V(final_obs), the value of the true last observation the env returned before its
reset. GAE is rlax.truncated_generalized_advantage_estimation over time, vmapped over envs
(Schulman et al. 2016); returns = advantages + values.
"""
from typing import Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import rlax

from flowrl.data.base import DataSource, identity


class Rollout(NamedTuple):
  data: Dict[str, jax.Array]     # column -> [T, N, ...]
  t: jax.Array                   # steps stored
  advantages: jax.Array          # [T, N], after prepare
  returns: jax.Array             # [T, N], after prepare


def gae(reward, terminated, truncated, values, final_values, next_value, gamma: float,
        lambda_: float):
  """Advantages [T, N] from rewards, flags and values [T, N], the values of each step's final
  observation [T, N] (read where truncated) and of the observation after the last step [N]."""
  done = jnp.maximum(terminated, truncated)
  r = reward + gamma * truncated * final_values
  discount = gamma * (1.0 - done)
  v = jnp.concatenate([values, next_value[None]], axis=0)            # [T + 1, N]
  per_env = jax.vmap(rlax.truncated_generalized_advantage_estimation,
                     in_axes=(1, 1, None, 1), out_axes=1)
  return per_env(r, discount, lambda_, v)


def rollout(steps: int, envs: int, columns: Dict[str, tuple], gamma: float = 0.99,
            lambda_: float = 0.95, epochs: int = 10, minibatches: int = 32) -> DataSource:
  """`columns`: name -> per-env shape, among them obs, reward, terminated, truncated, value,
  final_value, next_value (the last is read at the last step only). Minibatches are drawn from
  the T·N env steps with a fresh permutation per epoch."""
  size = steps * envs
  if size % minibatches:
    raise ValueError(f'rollout: {steps} steps × {envs} envs = {size} rows do not split into '
                     f'{minibatches} minibatches.')

  def init():
    data = {k: jnp.zeros((steps, envs) + tuple(s), jnp.float32) for k, s in columns.items()}
    z = jnp.zeros((steps, envs), jnp.float32)
    return Rollout(data, jnp.zeros((), jnp.int32), z, z)

  def add(state: Rollout, transition: Dict[str, jax.Array]):
    data = {k: v.at[state.t].set(transition[k]) for k, v in state.data.items()}
    return state._replace(data=data, t=state.t + 1)

  def due(state: Rollout, frame=None):
    return state.t >= steps

  def prepare(state: Rollout, value_fn: Callable = None):
    d = state.data
    adv = gae(d['reward'], d['terminated'], d['truncated'], d['value'], d['final_value'],
              d['next_value'][-1], gamma, lambda_)
    return state._replace(advantages=adv, returns=adv + d['value'])

  def batches(state: Rollout, key):
    flat = {k: v.reshape((size,) + v.shape[2:]) for k, v in state.data.items()}
    flat['advantage'] = state.advantages.reshape(size)
    flat['return'] = state.returns.reshape(size)
    perms = jax.vmap(lambda k: jax.random.permutation(k, size))(jax.random.split(key, epochs))
    idx = perms.reshape(epochs * minibatches, size // minibatches)
    return jax.tree_util.tree_map(lambda x: x[idx], flat), idx

  def finish(state: Rollout):
    return state._replace(t=jnp.zeros((), jnp.int32))

  return DataSource('rollout', init, add, due, prepare, batches, identity, finish)
