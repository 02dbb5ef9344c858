"""The offline dataset source: every array on the device, `add` does nothing, every step is due,
and a step draws `n` uniform batches of `batch_size` rows."""
from typing import Dict

import jax
import jax.numpy as jnp

from flowrl.data.base import DataSource, identity


def dataset(arrays: Dict[str, jax.Array], batch_size: int, n: int = 1) -> DataSource:
  rows = {int(v.shape[0]) for v in arrays.values()}
  if len(rows) != 1:
    raise ValueError(f'dataset: columns have different lengths {sorted(rows)}.')
  (size,) = rows

  def init():
    return {k: jnp.asarray(v) for k, v in arrays.items()}

  def batches(state, keys):
    return jax.vmap(lambda k: jax.random.randint(k, (batch_size,), 0, size))(keys)

  def gather(state, idx):
    return {k: v[idx] for k, v in state.items()}

  # the arrays are shared by every seed (seed_axes None): one copy on the device
  return DataSource('dataset', init, add=identity, due=lambda state, frame=None: jnp.bool_(True),
                    prepare=identity, batches=batches, gather=gather, write=identity,
                    finish=identity, n=n, seed_axes=None, collects=False)
