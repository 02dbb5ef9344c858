"""Critic axis: how values are learned.

  ensemble_q        E Q-networks, clipped double-Q target y = r + γ(1 − d)(min_e Q'_e(s', a') + b),
                    b = the regularizer's bonus (−α log π(a'|s') for SAC); loss Σ_e mean (Q_e − y)²
                    (Fujimoto et al. 2018; Haarnoja et al. 2018).
  distributional_q  Gaussian return distributions with DSAC-T's three refinements (Duan et al. 2023,
                    "DSAC-T"), as DACER uses: expected-value substitution, twin distributions with
                    the per-sample min-mean member, and a variance-based gradient scale.

  no_critic         none: behaviour cloning learns no values.

Both bootstrap on time-limit truncation: `discount` = γ(1 − terminated), never γ(1 − done).
"""
from typing import NamedTuple, Optional, Sequence

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import rlax

from flowrl.primitives import initializers, networks
from flowrl.primitives.initializers import Initializer
from flowrl.primitives.base import Critic, EnvSpec, builder, primitive


class Batch(NamedTuple):
  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  terminated: jax.Array      # 1.0 where the episode ended in a terminal state (no bootstrap)


def min_target(q_next: jax.Array) -> jax.Array:
  """Per-sample minimum over the ensemble axis 0: [E, B] -> [B] (never one member per batch)."""
  return jnp.min(q_next, axis=0)


@primitive('critic')
@builder
def ensemble_q(spec: EnvSpec, num: int = 2, hidden: Sequence[int] = (256, 256),
               activation: str = 'relu', hidden_init: Optional[Initializer] = None,
               output_init: Optional[Initializer] = None, target: str = 'min',
               layer_norm: bool = False) -> Critic:
  """E independent Q networks with the clipped double-Q TD target (rlax.td_learning), or with
  `target` 'mean' the members' mean (FQL's q_agg); `layer_norm` after each hidden layer (FQL).
  Initializers: None means the library's (`initializers`)."""
  if target not in ('min', 'mean'):
    from flowrl.errors import ConfigError
    raise ConfigError(f"ensemble_q.target is {target!r}; choices: 'min', 'mean'.")
  init, apply = networks.q_ensemble(spec.obs_dim, spec.act_dim, num, hidden, activation,
                                    initializer=initializers.resolve(hidden_init, output_init),
                                    layer_norm=layer_norm)
  values = lambda params, obs, act: apply(params, obs, act)[..., 0]
  aggregate = min_target if target == 'min' else (lambda q: jnp.mean(q, axis=0))

  def loss(params, target_params, extra, batch, next_action, bonus, discount, key):
    v_next = aggregate(values(target_params, batch.next_obs, next_action)) + bonus
    q = values(params, batch.obs, batch.action)                              # [E, B]
    chex.assert_shape(q, (num, batch.reward.shape[0]))
    chex.assert_equal_shape([v_next, batch.reward, discount])
    td = jax.vmap(jax.vmap(rlax.td_learning, (0, 0, 0, 0)), (0, None, None, None))(
        q, batch.reward, discount, v_next)
    total = jnp.sum(jnp.mean(jnp.square(td), axis=1))
    return total, (extra, {'critic_loss': total, 'q_mean': jnp.mean(q)})

  return Critic('ensemble_q', init, lambda: (), values, loss)


@primitive('critic')
@builder
def distributional_q(spec: EnvSpec, num: int = 2, hidden: Sequence[int] = (256, 256),
                     activation: str = 'gelu', std_ema: float = 0.005, clip_sigmas: float = 3.0,
                     epsilon: float = 0.1, hidden_init: Optional[Initializer] = None,
                     output_init: Optional[Initializer] = None) -> Critic:
  """DSAC-T critic (Duan et al. 2023) as in DACER: each member outputs N(μ, σ²) of the return.
  Target member: per sample the one with the smaller μ'; y = r + γ(1−d)(μ' + b) and a sampled
  y_z = r + γ(1−d)(μ' + σ' clip(z, ±3) + b). With ω = running mean of σ (EMA `std_ema`),
  y_b = μ + clip(y_z − μ, ±3ω) and a bias ε:
  L = −(ω² + ε) · mean[ μ·sg(y − μ)/(sg(σ)² + ε) + σ·((sg(μ) − y_b)² − sg(σ)²)/(sg(σ)³ + ε) ]."""
  init, apply = networks.q_ensemble(spec.obs_dim, spec.act_dim, num, hidden, activation, outputs=2,
                                    initializer=initializers.resolve(hidden_init, output_init))
  sg = jax.lax.stop_gradient

  def mean_std(params, obs, act):
    out = apply(params, obs, act)
    return out[..., 0], jax.nn.softplus(out[..., 1]) + 1e-6

  values = lambda params, obs, act: mean_std(params, obs, act)[0]

  def loss(params, target_params, extra, batch, next_action, bonus, discount, key):
    mu_n, std_n = mean_std(target_params, batch.next_obs, next_action)        # [E, B]
    pick = jnp.argmin(mu_n, axis=0)[None]                                      # [1, B]
    mu_t = jnp.take_along_axis(mu_n, pick, 0)[0]
    z = jnp.clip(jax.random.normal(key, mu_t.shape), -clip_sigmas, clip_sigmas)
    std_t = jnp.take_along_axis(std_n, pick, 0)[0]
    y = batch.reward + discount * (mu_t + bonus)
    y_z = batch.reward + discount * (mu_t + std_t * z + bonus)
    mu, std = mean_std(params, batch.obs, batch.action)                       # [E, B]
    batch_std = jnp.mean(std, axis=1)                                          # [E]
    omega = sg(jnp.where(extra < 0, batch_std, (1 - std_ema) * extra + std_ema * batch_std))
    bound = clip_sigmas * omega[:, None]
    y_b = sg(mu + jnp.clip(y_z - mu, -bound, bound))
    s = sg(std)
    per = (mu * sg(y - mu) / (s ** 2 + epsilon)
           + std * ((sg(mu) - y_b) ** 2 - s ** 2) / (s ** 3 + epsilon))
    member = -(omega ** 2 + epsilon) * jnp.mean(per, axis=1)                   # [E]
    total = jnp.sum(member)
    return total, (omega, {'critic_loss': total, 'q_mean': jnp.mean(mu), 'q_std': jnp.mean(std)})

  return Critic('distributional_q', init, lambda: -jnp.ones(num), values, loss)


@primitive('critic')
@builder
def state_value(spec: EnvSpec, hidden: Sequence[int] = (64, 64), activation: str = 'tanh',
                clip: float = 0.2, coefficient: float = 0.5,
                hidden_init: Optional[Initializer] = None,
                output_init: Optional[Initializer] = None) -> Critic:
  """A state-value network V(s) for on-policy methods, fitted to the rollout's GAE returns R with
  the clipped value loss of PPO's reference code (CleanRL, rsl_rl):
  L = c · mean max((V − R)², (V_old + clip(V − V_old, ±clip) − R)²), with V_old the values at
  collection; `clip` = 0 gives the plain c · mean (V − R)². `values(params, obs, act)` ignores the
  action and returns [1, B], so samplers and signals read it as a one-member ensemble."""
  init_ = initializers.resolve(hidden_init, output_init)
  net = hk.without_apply_rng(hk.transform(
      lambda obs: networks.mlp(hidden, 1, activation, 'value', init_)(obs)[..., 0]))

  def values(params, obs, act=None):
    return net.apply(params, obs)[None]

  def loss(params, batch):
    v = net.apply(params, batch['obs'])
    ret, old = batch['return'], batch['value']
    chex.assert_equal_shape([v, ret, old])
    err = jnp.square(v - ret)
    if clip:
      err = jnp.maximum(err, jnp.square(old + jnp.clip(v - old, -clip, clip) - ret))
    total = coefficient * jnp.mean(err)
    return total, {'value_loss': total, 'v_mean': jnp.mean(v)}

  return Critic('state_value', lambda key: net.init(key, jnp.zeros((1, spec.obs_dim))),
                lambda: (), values, loss, frozenset({'v'}), frozenset({'rollout'}))


@primitive('critic')
@builder
def no_critic(spec: EnvSpec) -> Critic:
  """No critic: behaviour cloning learns no values (its Q reads 0, with no parameters)."""

  def values(params, obs, act):
    return jnp.zeros((1,) + obs.shape[:-1], jnp.float32)

  def loss(params, target_params, extra, batch, next_action, bonus, discount, key):
    return jnp.float32(0.0), (extra, {})

  return Critic('no_critic', lambda key: {}, lambda: (), values, loss, frozenset(),
                next_action=False)
