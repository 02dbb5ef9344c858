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

  def batches(state, key):
    idx = jax.random.randint(key, (n, batch_size), 0, size)
    return jax.tree_util.tree_map(lambda x: x[idx], state), idx

  return DataSource('dataset', init, add=identity, due=lambda state, frame=None: jnp.bool_(True),
                    prepare=identity, batches=batches, write=identity, finish=identity)
