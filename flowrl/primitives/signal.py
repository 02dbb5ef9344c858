"""Policy-improvement signal axis: which gradient makes the actor better.

  reparam_q          L = −mean Q̄(s, a_θ(s, ξ)), backpropagated through the sampler (SAC;
                     DACER and Diffusion-QL through the whole denoising chain). Q̄ = min over E;
                     Diffusion-QL's −η·Q_i/sg(|Q_j|) and FQL's −Q̄/sg(|Q̄|) with `normalize`.
  no_improvement     nothing: the regularizer alone trains the actor (behaviour cloning).
  deterministic_pg   L = −mean Q_1(s, π_θ(s)) (Silver et al. 2014; TD3 uses the first critic).
  action_gradient    DIPO (Yang et al. 2023): replay actions ascend Q with Adam for N steps
                     (gradient of −Σ_b Q̄ clipped to global norm ratio·|A|, actions clipped to
                     the box),
                     are written back to the buffer, and the policy fits them with its own loss.
  q_score_matching   QSM (Psenka et al. 2024): on noised replay actions a_k = α_k a + σ_k ε,
                     L = mean_b mean_A (ε̂_θ(s, a_k, k) − ε*)², with ε* = −M_q·mean_e ∇ₐQ_e(s, a_k)
                     (official), or with `normalize`, ε* = −σ_k ∇ₐQ̄/(τ·mean|∇ₐQ̄|) (flow-rl).
"""
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import optax

from flowrl.primitives.base import ActorInputs, Signal, primitive
from flowrl.primitives.q_values import min_q_action_grad
from flowrl.primitives.sampler import draw


def _q_through_sample(q_member: Optional[int], weight: float = 1.0, normalize: str = 'none',
                      aggregate: str = 'min'):
  def loss(params, inp: ActorInputs, key):
    sample_key, noise_key = jax.random.split(key)
    out = draw(inp.sampler, inp.policy, params, inp.obs, sample_key, q=inp.q)
    action = inp.perturb(out.action, noise_key)
    chex.assert_equal_shape([action, inp.action])                 # [B, A]
    qs = inp.q(inp.obs, action)
    if normalize == 'pair':   # Diffusion-QL: −Q_i / sg(mean |Q_j|), (i, j) a random pair of two
      i = jax.random.bernoulli(jax.random.fold_in(key, 1)).astype(jnp.int32)
      q, other = qs[i], qs[1 - i]
      value = jnp.mean(q) / jax.lax.stop_gradient(jnp.mean(jnp.abs(other)))
    else:
      if q_member is not None:
        q = qs[q_member]
      else:
        q = jnp.min(qs, axis=0) if aggregate == 'min' else jnp.mean(qs, axis=0)
      value = jnp.mean(q)
      if normalize == 'batch':   # FQL's normalize_q_loss: λ = 1/sg(mean |Q|)
        value = value / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)))
    chex.assert_shape(q, inp.action.shape[:1])
    return -weight * value, {'log_prob': out.log_prob, 'q_policy': jnp.mean(q)}
  return loss


@primitive('signal')
def reparam_q(weight: float = 1.0, normalize: str = 'none', aggregate: str = 'min') -> Signal:
  """−w·Q̄(s, a) with a drawn by the (differentiable) sampler; gradients flow through every step;
  Q̄ the ensemble's min, or with `aggregate` 'mean' its mean (FQL's q_agg). `normalize`:
  'pair' is Diffusion-QL's (Wang et al. 2023, its η = `weight`) −w·mean Q_i(s, a) /
  sg(mean |Q_j(s, a)|), the pair (i, j) of a twin critic's two members chosen at random; 'batch'
  is FQL's (Park et al. 2025) −w·mean Q̄/sg(mean |Q̄|)."""
  from flowrl.errors import ConfigError
  if normalize not in ('none', 'pair', 'batch') or aggregate not in ('min', 'mean'):
    raise ConfigError(f"reparam_q: normalize is {normalize!r} (choices: 'none', 'pair', 'batch') "
                      f"and aggregate {aggregate!r} (choices: 'min', 'mean').")
  return Signal('reparam_q', frozenset({'differentiable', 'q'}),
                _q_through_sample(None, weight, normalize, aggregate),
                provides=frozenset({'sample_log_prob'}))


@primitive('signal')
def no_improvement() -> Signal:
  """No improvement signal: the actor learns from its regularizer alone (behaviour cloning:
  `behavior_cloning`; IDQL, whose critic only selects among the policy's samples)."""
  return Signal('no_improvement', frozenset({'transitions'}),   # stored data, not a rollout
                lambda params, inp, key: (jnp.float32(0.0), {}))


@primitive('signal')
def deterministic_pg(critic_member: int = 0) -> Signal:
  """Deterministic policy gradient on one critic member (TD3: the first)."""
  return Signal('deterministic_pg', frozenset({'deterministic', 'differentiable', 'q'}),
                _q_through_sample(critic_member))


def ascend_actions(q, obs, actions, steps: int, learning_rate: float, max_norm: float):
  """DIPO's action gradient: `steps` Adam steps (eps 1e-5, as the official code) on −Σ_b Q̄(s, a)
  with the gradient clipped to global norm `max_norm`, actions clipped to [−1, 1] after each."""
  opt = optax.chain(optax.clip_by_global_norm(max_norm), optax.adam(learning_rate, eps=1e-5))
  grad_fn = lambda a: -min_q_action_grad(q, obs, a)

  def body(carry, _):
    a, opt_state = carry
    updates, opt_state = opt.update(grad_fn(a), opt_state)
    return (jnp.clip(optax.apply_updates(a, updates), -1.0, 1.0), opt_state), None

  (actions, _), _ = jax.lax.scan(body, (actions, opt.init(actions)), None, length=steps)
  return actions


@primitive('signal')
def action_gradient(steps: int = 20, learning_rate: float = 0.03,
                    norm_ratio: float = 0.1) -> Signal:
  """DIPO: improve the buffer's actions by gradient ascent on Q, write them back, fit them."""

  def loss(params, inp: ActorInputs, key):
    stored = inp.columns['improved_action']
    act_dim = stored.shape[-1]
    improved = jax.lax.stop_gradient(ascend_actions(
        inp.q, inp.obs, stored, steps, learning_rate, norm_ratio * act_dim))
    fit = inp.policy.fit_loss(params, inp.obs, improved, key)
    chex.assert_equal_shape([improved, stored])                     # [B, A]
    chex.assert_shape(fit, stored.shape[:1])
    moved = jnp.mean(jnp.linalg.norm(improved - stored, axis=-1))
    return jnp.mean(fit), {'improved_action': improved, 'action_shift': moved}

  return Signal('action_gradient', frozenset({'chain', 'q'}), loss, columns=('improved_action',))


@primitive('signal')
def q_score_matching(score_scale: float = 50.0, normalize: bool = False,
                     temperature: float = 0.1) -> Signal:
  """QSM: match the policy's noise prediction to the critic's action gradient at noised replay
  actions (gradient taken at the point clipped to the action box)."""

  def loss(params, inp: ActorInputs, key):
    policy = inp.policy
    x_t, t, _, alpha, sigma = policy.noised(inp.action, key)
    at = jnp.clip(x_t, -1.0, 1.0)
    if normalize:
      dq = min_q_action_grad(inp.q, inp.obs, at)
      target = -sigma * dq / (temperature * jnp.mean(jnp.abs(dq)) + 1e-8)
    else:
      dq = jax.grad(lambda a: jnp.sum(jnp.mean(inp.q(inp.obs, a), axis=0)))(at)
      target = -score_scale * dq
    target = jax.lax.stop_gradient(target)
    eps_hat, _ = policy.to_eps_x0(policy.predict(params, inp.obs, x_t, t), x_t, alpha, sigma)
    chex.assert_equal_shape([eps_hat, target, inp.action])         # [B, A]
    return jnp.mean(jnp.square(eps_hat - target)), {'score_norm': jnp.mean(jnp.abs(dq))}

  return Signal('q_score_matching', frozenset({'score', 'q'}), loss)
