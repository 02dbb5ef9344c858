"""The on-policy rollout source: T steps × N envs, then epochs × minibatches of the env steps with
advantages from GAE, then cleared.

Truncation is bootstrapped, never treated as termination (Pardo et al. 2018): with
done = terminated ∨ truncated, the discount is γ(1 − done) and the reward of a truncated step
becomes r + γ·V(final_obs), the value of the true last observation the env returned before its
reset. GAE is rlax.truncated_generalized_advantage_estimation over time, vmapped over envs
(Schulman et al. 2016); returns = advantages + values.

Reward normalization (`normalize_reward`, CleanRL's MuJoCo PPO through gymnasium's
NormalizeReward): each env keeps a discounted return G ← γ·G·(1 − terminated) + r, the running
variance of every G is updated (Chan et al.'s parallel update, `normalization`), and rewards are
divided by its std and clipped to ±10. The wrapper does this per step; here the statistics take a
whole rollout's returns before it is normalized, once per rollout.
"""
from typing import Any, Callable, Dict, NamedTuple, Optional

import gin
import jax
import jax.numpy as jnp
import rlax

from flowrl.data.base import DataSource, SourceChoice, identity
from flowrl.primitives import normalization
from flowrl.primitives.transition_kernel import scored_steps


class Rollout(NamedTuple):
  data: Dict[str, jax.Array]     # column -> [T, N, ...]
  t: jax.Array                   # steps stored
  advantages: jax.Array          # [T, N], after prepare
  returns: jax.Array             # [T, N], after prepare
  discounted: jax.Array = ()     # [N] running discounted return per env (reward normalization)
  return_stats: Any = ()         # its running mean and variance (normalization.ObsNorm over [1])


def normalized_rewards(reward, terminated, discounted, stats, gamma: float, clip: float = 10.0):
  """(rewards / sqrt(Var[G] + 1e-8) clipped to ±clip, G after the rollout, stats) for rewards and
  terminations [T, N], with G ← γ·G·(1 − terminated) + r per env (gymnasium's NormalizeReward)."""
  def accumulate(g, x):
    r, term = x
    g = g * gamma * (1.0 - term) + r
    return g, g

  discounted, returns = jax.lax.scan(accumulate, discounted, (reward, terminated))
  stats = normalization.merge(normalization.observe(stats, returns.reshape(-1, 1)))
  scaled = jnp.clip(reward / jnp.sqrt(stats.stats.var[0] + 1e-8), -clip, clip)
  return scaled, discounted, stats


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
            lambda_: float = 0.95, epochs: int = 10, minibatches: int = 32,
            reward_scale: float = 1.0, target_kl: Optional[float] = None,
            normalize_reward: bool = False, normalize_advantage: bool = False,
            pairs: int = 0) -> DataSource:
  """`columns`: name -> per-env shape, among them obs, next_obs (the final observation where an
  episode ended), reward, terminated, truncated and value (V(obs) at collection). Rewards are
  multiplied by `reward_scale` before GAE (FPO: 10). Minibatches are drawn from the T·N env steps
  with a fresh permutation per epoch. With `target_kl`, the rest of an iteration's minibatches are
  skipped once one reports an approximate KL above it (DPPO, ReinFlow: 1.0). `normalize_reward`:
  see the module docstring. `normalize_advantage` standardizes the advantages over the whole
  rollout (returns keep the raw ones); the signals' own option does it per minibatch. With
  `pairs` = K_ft > 0 (the scored denoising steps) a minibatch row is an (env step, denoising
  step) pair, drawn from the T·N·K_ft pairs, with column 'denoising_index' (DPPO)."""
  size = steps * envs
  rows = size * max(pairs, 1)
  if rows % minibatches:
    raise ValueError(f'rollout: {rows} rows ({steps} steps × {envs} envs'
                     f'{f" × {pairs} denoising steps" if pairs else ""}) do not split into '
                     f'{minibatches} minibatches.')

  def init():
    data = {k: jnp.zeros((steps, envs) + tuple(s), jnp.float32) for k, s in columns.items()}
    z = jnp.zeros((steps, envs), jnp.float32)
    if normalize_reward:
      return Rollout(data, jnp.zeros((), jnp.int32), z, z, jnp.zeros(envs, jnp.float32),
                     normalization.init(1))
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
    reward = reward_scale * d['reward']
    if normalize_reward:
      reward, discounted, stats = normalized_rewards(reward, d['terminated'], state.discounted,
                                                     state.return_stats, gamma)
      state = state._replace(discounted=discounted, return_stats=stats)
    next_values = value_fn(d['next_obs'].reshape(size, -1)).reshape(steps, envs)
    adv = gae(reward, d['terminated'], d['truncated'], d['value'], next_values,
              next_values[-1], gamma, lambda_)
    returns = adv + d['value']
    if normalize_advantage:
      adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8)
    return state._replace(advantages=adv, returns=returns)

  def batches(state: Rollout, keys):
    """keys [epochs × minibatches, 2]: epoch e permutes the rows with key e·minibatches."""
    perms = jax.vmap(lambda k: jax.random.permutation(k, rows))(keys[::minibatches])
    return perms.reshape(epochs * minibatches, rows // minibatches)

  def gather(state: Rollout, idx):
    flat = {k: v.reshape((size,) + v.shape[2:]) for k, v in state.data.items()}
    flat['advantage'] = state.advantages.reshape(size)
    flat['return'] = state.returns.reshape(size)
    if not pairs:
      return {k: v[idx] for k, v in flat.items()}
    step, denoising = jnp.divmod(idx, pairs)
    return {**{k: v[step] for k, v in flat.items()}, 'denoising_index': denoising}

  def finish(state: Rollout):
    return state._replace(t=jnp.zeros((), jnp.int32))

  stop_when = None if target_kl is None else (lambda m: m['actor/approx_kl'] > target_kl)
  return DataSource('rollout', init, add, due, prepare, batches, gather, identity, finish,
                    epochs * minibatches,
                    Rollout(data=0, t=None, advantages=0, returns=0,
                            discounted=0 if normalize_reward else (),
                            return_stats=0 if normalize_reward else ()),
                    stop_when=stop_when)


UNITS = ('env_step', 'denoising_step')


@gin.configurable(module='flowrl')
def rollout_source(steps: int = 2048, epochs: int = 10, minibatches: int = 32,
                   gae_lambda: float = 0.95, target_kl: Optional[float] = None,
                   normalize_reward: bool = False,
                   normalize_advantage: bool = False, unit: str = 'env_step') -> SourceChoice:
  """On-policy rollouts: `steps` vector steps of every env, then `epochs` passes of `minibatches`
  minibatches over the steps × envs rows with GAE(γ, λ) advantages (γ: the method's), then
  cleared. Stores what the agent's `collect` returns beside the action (log-probs, values). With
  `target_kl`, an iteration stops early at the first minibatch whose approximate KL exceeds it.
  `normalize_reward` divides rewards by the running std of discounted returns (CleanRL's PPO);
  `normalize_advantage` standardizes advantages per rollout (else the signal's per-minibatch
  option applies). `unit`: a minibatch row is an 'env_step' (with its whole denoising chain), or
  a 'denoising_step', one (env step, denoising step) pair of the rollout's T·N·K (DPPO v0.7; a
  signal that scores single steps: ppo_clip_chain's 'per_step' mode)."""
  from flowrl.errors import ConfigError
  if unit not in UNITS:
    raise ConfigError(f'rollout_source.unit={unit!r} is not one of {UNITS}.')

  def make(agent, cfg, envs):
    o, a = (agent.spec.obs_dim,), (agent.spec.act_dim,)
    columns = {'obs': o, 'action': a, 'reward': (), 'next_obs': o, 'terminated': (),
               'truncated': (), **(agent.extras or {})}
    pairs = 0
    if unit == 'denoising_step':
      if 'denoising_pairs' not in agent.signal.provides:
        raise ConfigError(f"rollout_source.unit='denoising_step' needs a signal that scores one "
                          f"denoising step per row (ppo_clip_chain.mode='per_step'), not "
                          f"'{agent.signal.name}'; bind rollout_source.unit='env_step'.")
      pairs = scored_steps(agent.sampler.kernel, agent.sampler.steps)
      if (steps * envs * pairs) % minibatches:
        raise ConfigError(f'rollout_source: {steps} steps × {envs} envs × {pairs} denoising steps '
                          f'= {steps * envs * pairs} pairs do not split into {minibatches} equal '
                          f'minibatches; choose a divisor.')
    return rollout(steps, envs, columns, agent.method.gamma, gae_lambda, epochs, minibatches,
                   agent.method.reward_scale, target_kl, normalize_reward, normalize_advantage,
                   pairs)

  def check(cfg):
    from flowrl.errors import ConfigError
    if cfg.random_frames:
      raise ConfigError(f'train.random_frames = {cfg.random_frames} with rollout_source: an '
                        f'on-policy method learns from its own actions and their log-probs, so '
                        f'it takes no uniform warm-up; bind train.random_frames = 0.')
    rows = steps * cfg.envs_per_seed
    if unit == 'env_step' and rows % minibatches:
      raise ConfigError(f'rollout_source: {steps} steps × {cfg.envs_per_seed} envs = {rows} rows '
                        f'do not split into {minibatches} equal minibatches; choose a divisor of '
                        f'{rows}.')

  return SourceChoice('rollout_source', frozenset({'rollout'}), make, check)
