"""The on-policy rollout source: T steps × N envs, then epochs × minibatches of the env steps with
advantages from GAE, then cleared.

Truncation is bootstrapped, never treated as termination (Pardo et al. 2018): with
done = terminated ∨ truncated, the discount is γ(1 − done) and the reward of a truncated step
becomes r + γ·V(final_obs), the value of the true last observation the env returned before its
reset. GAE is rlax.truncated_generalized_advantage_estimation over time, vmapped over envs
(Schulman et al. 2016); returns = advantages + values.
"""
from typing import Callable, Dict, NamedTuple

import gin
import jax
import jax.numpy as jnp
import rlax

from flowrl.data.base import DataSource, SourceChoice, identity


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
  """`columns`: name -> per-env shape, among them obs, next_obs (the final observation where an
  episode ended), reward, terminated, truncated and value (V(obs) at collection). Minibatches are
  drawn from the T·N env steps with a fresh permutation per epoch."""
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

  def prepare(state: Rollout, value_fn: Callable):
    """GAE with V(next_obs) from `value_fn` (the critic now, which collected this rollout): a
    truncated step bootstraps from its final observation's value, the last step from its own."""
    d = state.data
    next_values = value_fn(d['next_obs'].reshape(size, -1)).reshape(steps, envs)
    adv = gae(d['reward'], d['terminated'], d['truncated'], d['value'], next_values,
              next_values[-1], gamma, lambda_)
    return state._replace(advantages=adv, returns=adv + d['value'])

  def batches(state: Rollout, keys):
    """keys [epochs × minibatches, 2]: epoch e permutes the T·N rows with key e·minibatches."""
    perms = jax.vmap(lambda k: jax.random.permutation(k, size))(keys[::minibatches])
    return perms.reshape(epochs * minibatches, size // minibatches)

  def gather(state: Rollout, idx):
    flat = {k: v.reshape((size,) + v.shape[2:]) for k, v in state.data.items()}
    flat['advantage'] = state.advantages.reshape(size)
    flat['return'] = state.returns.reshape(size)
    return {k: v[idx] for k, v in flat.items()}

  def finish(state: Rollout):
    return state._replace(t=jnp.zeros((), jnp.int32))

  return DataSource('rollout', init, add, due, prepare, batches, gather, identity, finish,
                    epochs * minibatches, Rollout(data=0, t=None, advantages=0, returns=0))


@gin.configurable(module='flowrl')
def rollout_source(steps: int = 2048, epochs: int = 10, minibatches: int = 32,
                   gae_lambda: float = 0.95) -> SourceChoice:
  """On-policy rollouts: `steps` vector steps of every env, then `epochs` passes of `minibatches`
  minibatches over the steps × envs rows with GAE(γ, λ) advantages (γ: the method's), then
  cleared. Stores what the agent's `collect` returns beside the action (log-probs, values)."""

  def make(agent, cfg, envs):
    o, a = (agent.spec.obs_dim,), (agent.spec.act_dim,)
    columns = {'obs': o, 'action': a, 'reward': (), 'next_obs': o, 'terminated': (),
               'truncated': (), **(agent.extras or {})}
    return rollout(steps, envs, columns, agent.method.gamma, gae_lambda, epochs, minibatches)

  def check(cfg):
    from flowrl.errors import ConfigError
    if cfg.random_frames:
      raise ConfigError(f'train.random_frames = {cfg.random_frames} with rollout_source: an '
                        f'on-policy method learns from its own actions and their log-probs, so '
                        f'it takes no uniform warm-up; bind train.random_frames = 0.')
    rows = steps * cfg.envs_per_seed
    if rows % minibatches:
      raise ConfigError(f'rollout_source: {steps} steps × {cfg.envs_per_seed} envs = {rows} rows do '
                        f'not split into {minibatches} equal minibatches; choose a divisor of {rows}.')

  return SourceChoice('rollout_source', frozenset({'rollout'}), make, check)
