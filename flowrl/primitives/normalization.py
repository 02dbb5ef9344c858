"""Running observation normalization (PPO on MuJoCo needs it: Huang et al. 2022, detail 8):
  o' = clip((o − μ) / sqrt(σ² + 1e-8), ±clip),
with μ, σ² the running mean and variance of every observation seen, merged batch by batch with
Chan et al.'s parallel update (gymnasium's RunningMeanStd, count starting at 1e-4). Observations
are accumulated as they are stored and merged only after each update burst, so an on-policy
rollout is collected and trained on with the same statistics (its first epoch's ratio stays 1).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp


class RunningStats(NamedTuple):
  mean: jax.Array          # [O]
  var: jax.Array           # [O]
  count: jax.Array         # scalar


class ObsNorm(NamedTuple):
  stats: RunningStats      # what the networks see through
  pending: RunningStats    # sums of observations stored since the last merge: Σo, Σo², n


def init(obs_dim: int) -> ObsNorm:
  z = jnp.zeros(obs_dim, jnp.float32)
  return ObsNorm(RunningStats(z, jnp.ones(obs_dim, jnp.float32), jnp.float32(1e-4)),
                 RunningStats(z, z, jnp.float32(0.0)))


def observe(norm: ObsNorm, obs: jax.Array) -> ObsNorm:
  """Accumulate a batch of observations [N, O]."""
  p = norm.pending
  return norm._replace(pending=RunningStats(p.mean + jnp.sum(obs, 0),
                                            p.var + jnp.sum(jnp.square(obs), 0),
                                            p.count + obs.shape[0]))


def merge(norm: ObsNorm) -> ObsNorm:
  """Merge what was accumulated into the running statistics (parallel mean/variance update)."""
  s, p = norm.stats, norm.pending
  n = jnp.maximum(p.count, 1.0)
  mean_b = p.mean / n
  var_b = jnp.maximum(p.var / n - jnp.square(mean_b), 0.0)
  total = s.count + p.count
  delta = mean_b - s.mean
  mean = s.mean + delta * p.count / total
  m2 = s.var * s.count + var_b * p.count + jnp.square(delta) * s.count * p.count / total
  merged = RunningStats(mean, m2 / total, total)
  stats = jax.tree_util.tree_map(lambda new, old: jnp.where(p.count > 0, new, old), merged, s)
  return ObsNorm(stats, jax.tree_util.tree_map(jnp.zeros_like, p))


def normalize(norm: ObsNorm, obs: jax.Array, clip: float = 10.0) -> jax.Array:
  s = norm.stats
  return jnp.clip((obs - s.mean) / jnp.sqrt(s.var + 1e-8), -clip, clip)


def normalizing_agent(agent):
  """The agent with every observation it reads normalized by running statistics kept in its
  state (`flowrl.primitives.normalization`): acting, values, updates and the periodic step."""
  norm = lambda state, obs: normalize(state.obs_norm, obs)

  def update(state, columns, key):
    cols = {**columns, **{k: norm(state, columns[k]) for k in ('obs', 'next_obs') if k in columns}}
    return agent.update(state, cols, key)

  return agent._replace(
      init=lambda key: agent.init(key)._replace(obs_norm=init(agent.spec.obs_dim)),
      act=lambda state, obs, key, deterministic=False: agent.act(state, norm(state, obs), key,
                                                                 deterministic),
      collect=lambda state, obs, key: agent.collect(state, norm(state, obs), key),
      value=agent.value and (lambda state, obs: agent.value(state, norm(state, obs))),
      periodic=agent.periodic and (lambda state, obs, key: agent.periodic(state, norm(state, obs),
                                                                          key)),
      update=update,
      observe=lambda state, obs: state._replace(obs_norm=observe(state.obs_norm, obs)),
      settle=lambda state: state._replace(obs_norm=merge(state.obs_norm)))
