"""The off-policy replay source: a ring buffer of columns on the device, a write pointer and a
size. `add` writes the N envs' transitions of one vector step; a step is due once
`learning_starts` frames are stored and then every `update_every` vector steps, and draws `n`
uniform batches (Mnih et al. 2015; Haarnoja et al. 2018)."""
from typing import Dict, NamedTuple

import gin
import jax
import jax.numpy as jnp
import numpy as np

from flowrl.data.base import DataSource, SourceChoice, identity


class Replay(NamedTuple):
  data: Dict[str, jax.Array]   # column -> [capacity, ...]
  ptr: jax.Array               # next write row
  size: jax.Array              # valid rows


def replay(capacity: int, columns: Dict[str, tuple], batch_size: int, n: int,
           learning_starts: int, update_every: int = 1, envs: int = 1) -> DataSource:
  """`columns`: name -> per-row shape (float32). Frames count env steps of all N = `envs` envs."""

  def init():
    data = {k: jnp.zeros((capacity,) + tuple(s), jnp.float32) for k, s in columns.items()}
    return Replay(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def add(state: Replay, transition):
    """Write rows ptr .. ptr + N − 1 (mod capacity), overwriting the oldest when full."""
    if envs == 1:
      data = {k: v.at[state.ptr].set(transition[k][0]) for k, v in state.data.items()}
    else:
      rows = (state.ptr + jnp.arange(envs)) % capacity
      data = {k: v.at[rows].set(transition[k]) for k, v in state.data.items()}
    return Replay(data, (state.ptr + envs) % capacity, jnp.minimum(state.size + envs, capacity))

  def due(state: Replay, frame):
    return (frame >= learning_starts) & ((frame // envs) % update_every == 0)

  def batches(state: Replay, keys):
    draw = lambda k: jax.random.randint(k, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.vmap(draw)(keys)

  def gather(state: Replay, idx):
    return {k: v[idx] for k, v in state.data.items()}

  def write(state: Replay, idx, columns):
    if not columns:
      return state
    data = {k: (v.at[idx].set(columns[k]) if k in columns else v) for k, v in state.data.items()}
    return state._replace(data=data)

  def history(state: Replay, column: str, rows, seed=None):
    """Host copy of `column` at ring rows `rows` (of seed index `seed` where seeds are batched):
    a resume replays the actions of its episode in progress."""
    rows = np.asarray(rows) % capacity
    x = state.data[column]
    return np.asarray(x[rows] if seed is None else x[seed, rows])   # gathers only those rows

  axes = Replay(data=0, ptr=None, size=None)
  return DataSource('replay', init, add, due, identity, batches, gather, write, identity, n,
                    axes, history)


def updates_per_burst(cfg, envs: int = 1) -> int:
  return max(1, int(round(cfg.update_every * cfg.updates_per_frame * envs)))


def _from_config(agent, cfg, envs: int = 1) -> DataSource:
  """The replay of `train.*` settings, storing the standard transition plus the agent's own
  columns (DIPO's improved actions, `collect`'s extras)."""
  o, a = (agent.spec.obs_dim,), (agent.spec.act_dim,)
  shapes = {'obs': o, 'action': a, 'reward': (), 'next_obs': o, 'terminated': ()}
  shapes.update({c: a for c in agent.columns})
  shapes.update(agent.extras or {})
  return replay(min(cfg.buffer_size, cfg.total_frames), shapes, cfg.batch_size,
                updates_per_burst(cfg, envs), cfg.learning_starts, cfg.update_every, envs)


REPLAY = SourceChoice('replay_source', frozenset({'transitions'}), _from_config)


@gin.configurable(module='flowrl')
def replay_source() -> SourceChoice:
  """The off-policy replay (the default): sizes and cadence come from `train.*` (buffer_size,
  batch_size, learning_starts, update_every, updates_per_frame)."""
  return REPLAY
