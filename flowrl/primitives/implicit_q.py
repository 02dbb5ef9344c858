"""Implicit Q-learning (Kostrikov, Nair & Levine, ICLR 2022, "Offline Reinforcement Learning
with Implicit Q-Learning"): values learned from the data's own actions only, never from the
policy's, so no out-of-distribution action is ever evaluated.

  expectile_q           V(s) fitted by expectile regression to min_e Q̄_e(s, a) (the target
                        networks), L_V = mean |τ − 1(Q̄ − V < 0)|·(Q̄ − V)² (rlax.expectile_loss);
                        each Q_e to r + γ(1 − d)·V(s′), L_Q = Σ_e mean (Q_e − y)². τ = 0.7 on the
                        MuJoCo tasks (0.9 on AntMaze).
  advantage_weighted    the actor by advantage-weighted regression (Peng et al. 2019; IQL eq. 7):
                        L = −mean_b w_b·log π(a_b|s_b), w = min(exp(β(min_e Q_e(s, a) − V(s))),
                        max_weight), β = 3 and 100 on MuJoCo; a chain policy, which has no
                        likelihood, minimizes mean_b w_b·ℓ_fit(s_b, a_b), its weighted fit loss.
"""
from typing import Optional, Sequence

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import rlax

from flowrl.primitives import initializers, networks
from flowrl.primitives.base import ActorInputs, Critic, EnvSpec, Signal, builder, primitive
from flowrl.primitives.behavior_cloning import fit_to_actions
from flowrl.primitives.initializers import Initializer


@primitive('critic')
@builder
def expectile_q(spec: EnvSpec, num: int = 2, expectile: float = 0.7,
                hidden: Sequence[int] = (256, 256), activation: str = 'relu',
                hidden_init: Optional[Initializer] = None,
                output_init: Optional[Initializer] = None) -> Critic:
  """IQL's critic: an E-member Q ensemble and a state value V(s) fitted to the target ensemble's
  minimum by expectile regression (τ = `expectile`), Q to r + γ(1 − d)·V(s′); the TD target
  reads no policy action. Provides V(s) to the actor ('expectile_v': AWR's advantage)."""
  init_ = initializers.resolve(hidden_init, output_init)
  q_init, q_apply = networks.q_ensemble(spec.obs_dim, spec.act_dim, num, hidden, activation,
                                        initializer=init_)
  v_net = hk.without_apply_rng(hk.transform(
      lambda obs: networks.mlp(hidden, 1, activation, 'value', init_)(obs)[..., 0]))

  def init(key):
    q_key, v_key = jax.random.split(key)
    return {'q': q_init(q_key), 'v': v_net.init(v_key, jnp.zeros((1, spec.obs_dim)))}

  values = lambda params, obs, act: q_apply(params['q'], obs, act)[..., 0]
  state_values = lambda params, obs: v_net.apply(params['v'], obs)

  def loss(params, target_params, extra, batch, next_action, bonus, discount, key):
    q_target = jnp.min(values(target_params, batch.obs, batch.action), axis=0)   # [B]
    v = state_values(params, batch.obs)
    v_loss = jnp.mean(rlax.expectile_loss(v, jax.lax.stop_gradient(q_target), expectile))
    y = batch.reward + discount * jax.lax.stop_gradient(state_values(params, batch.next_obs))
    q = values(params, batch.obs, batch.action)                                   # [E, B]
    chex.assert_shape(q, (num,) + batch.reward.shape)
    q_loss = jnp.sum(jnp.mean(jnp.square(q - y[None]), axis=1))
    total = q_loss + v_loss
    return total, (extra, {'critic_loss': q_loss, 'value_loss': v_loss, 'q_mean': jnp.mean(q),
                           'v_mean': jnp.mean(v)})

  return Critic('expectile_q', init, lambda: (), values, loss, frozenset({'q', 'expectile_v'}),
                state_values=state_values, next_action=False)


def awr_weights(q, v, temperature: float, max_weight: float):
  """w = min(exp(β·(Q − V)), max_weight), no gradient (IQL's actor weights)."""
  return jax.lax.stop_gradient(jnp.minimum(jnp.exp(temperature * (q - v)), max_weight))


@primitive('signal')
def advantage_weighted(temperature: float = 3.0, max_weight: float = 100.0) -> Signal:
  """Advantage-weighted regression on the data's actions (IQL): L = −mean w·log π(a|s), with
  w = min(exp(β(min_e Q_e(s, a) − V(s))), max_weight), β = `temperature`; chain policies
  minimize the weighted fit loss mean w·ℓ_fit(s, a) instead."""

  def loss(params, inp: ActorInputs, key):
    q, v = jnp.min(inp.q(inp.obs, inp.action), axis=0), inp.v(inp.obs)
    w = awr_weights(q, v, temperature, max_weight)
    fit = fit_to_actions(inp.policy, params, inp.obs, inp.action, key)     # −log π, or ℓ_fit
    chex.assert_equal_shape([w, fit])
    return jnp.mean(w * fit), {'weight_mean': jnp.mean(w), 'advantage': jnp.mean(q - v)}

  return Signal('advantage_weighted', frozenset({'q', 'expectile_v', 'fits_actions'}), loss)
