"""The offline dataset source: every array on the device, `add` does nothing, every step is due,
and a step draws `n` uniform batches of `batch_size` rows. Offline, a run's frames count updates:
one step of the loop is a `lax.scan` of `n` updates, and no env is stepped."""
from typing import Dict, Optional

import gin
import jax
import jax.numpy as jnp

from flowrl.data import offline
from flowrl.data.base import DataSource, SourceChoice, identity


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


@gin.configurable(module='flowrl')
def dataset_source(name=gin.REQUIRED, reward_transform: str = 'none', clip_eps: float = 1e-5,
                   updates_per_step: int = 1000, ref_min_score: Optional[float] = None,
                   ref_max_score: Optional[float] = None) -> SourceChoice:
  """Offline training on a dataset (`flowrl.data.offline`): `name` a local Minari id (made with
  `python -m flowrl.collect`) or folder, a D4RL-style `.npz`, or a dict; only terminations stop
  bootstrapping; actions clipped to ±(1 − `clip_eps`); `reward_transform` one of none,
  iql_mujoco, iql_antmaze, cql_antmaze. A step of the loop is `updates_per_step` updates of
  `train.batch_size` rows, and frames count updates. Evaluation runs on the data's env, with
  normalized scores where reference scores are known (the dataset's, or the ones given here)."""
  data = offline.load(name, clip_eps, reward_transform, ref_min_score, ref_max_score)
  arrays = data.arrays

  def make(agent, cfg, envs: int = 1) -> DataSource:
    o, a = arrays['obs'].shape[-1], arrays['action'].shape[-1]
    if (o, a) != (agent.spec.obs_dim, agent.spec.act_dim):
      from flowrl.errors import ConfigError
      raise ConfigError(f'dataset {name!r} has observations of size {o} and actions of size {a}, '
                        f'but the env has {agent.spec.obs_dim} and {agent.spec.act_dim} (an .npz '
                        f'or dict without env_name evaluates on env.name: bind it to the data\'s '
                        f'env).')
    extra = {c: arrays['action'] for c in agent.columns}     # DIPO-style columns start as actions
    return dataset({**arrays, **extra}, cfg.batch_size, updates_per_step)

  scores = (data.ref_min_score, data.ref_max_score)
  return SourceChoice('dataset_source', frozenset({'transitions'}), make, env=data.env_id,
                      ref_scores=None if None in scores else scores)
