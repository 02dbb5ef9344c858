"""A replay buffer that lives on the device: a pytree of fixed-size arrays, a write pointer and a
size, updated by pure functions inside the jitted train step (no host round trip per sample)."""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flowrl.primitives.critic import Batch


class ReplayBuffer(NamedTuple):
  data: Batch              # arrays with leading axis `capacity`
  ptr: jax.Array           # next write index
  size: jax.Array          # number of valid rows


def init(capacity: int, obs_dim: int, act_dim: int) -> ReplayBuffer:
  z = lambda *shape: jnp.zeros((capacity,) + shape, jnp.float32)
  data = Batch(z(obs_dim), z(act_dim), z(), z(obs_dim), z(), z(act_dim))
  return ReplayBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buf: ReplayBuffer, t: Batch) -> ReplayBuffer:
  """Write one transition at the pointer (overwriting the oldest when full)."""
  capacity = buf.data.reward.shape[0]
  data = jax.tree_util.tree_map(lambda d, x: d.at[buf.ptr].set(x), buf.data, t)
  return ReplayBuffer(data, (buf.ptr + 1) % capacity, jnp.minimum(buf.size + 1, capacity))


def sample(buf: ReplayBuffer, key, batch_size: int):
  """Uniform indices over the valid rows; returns (batch, indices)."""
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
  return jax.tree_util.tree_map(lambda d: d[idx], buf.data), idx


def write_improved(buf: ReplayBuffer, idx, actions) -> ReplayBuffer:
  """Store improved actions (DIPO) in the improvable action column at `idx`."""
  return buf._replace(data=buf.data._replace(
      improved_action=buf.data.improved_action.at[idx].set(actions)))
