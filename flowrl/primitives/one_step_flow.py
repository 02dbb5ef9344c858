"""Flow Q-learning's policy (Park, Li & Levine, ICML 2025, "Flow Q-Learning"): a behaviour-cloned
flow v_θ(s, x_t, t) and a one-step generator μ_ω(s, z) that acts. The flow is fitted to the
data by flow matching (`fit_loss`; the `behavior_cloning` regularizer); μ_ω is distilled from
the flow's ODE sample from the same noise (`flow_distillation`) while a Q signal pushes it up,
so no gradient ever runs through the flow's integration.

  one_step_flow       acts with a = clip(μ_ω(s, z), ±1), z ~ N(0, I) (the `direct` sampler; its
                      mode is μ_ω(s, 0): evaluation at the noise's mode, where FQL draws z);
                      chain samplers sample the BC flow itself.
  flow_distillation   α·mean_{b,d} (μ_ω(s_b, z_b) − sg(ODE_θ(s_b, z_b)))², ODE_θ the flow's
                      Euler integration from x_1 = z to t = 0 over `flow_steps` steps, clipped
                      to ±1 (FQL: 10 steps, α per task, 10 by default).
"""
from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from flowrl.primitives import initializers, networks
from flowrl.primitives.base import EnvSpec, Policy, Regularizer, builder, primitive
from flowrl.primitives.parameterization import rectified_flow


class OneStepSample:
  """The distribution-like object of `direct` sampling: draws z and returns clip(μ_ω(s, z)).
  It has no likelihood (log-prob None), so nothing that needs one accepts this policy."""

  def __init__(self, generate, shape):
    self.generate, self.shape = generate, shape

  def sample_and_log_prob(self, seed):
    return jnp.clip(self.generate(jax.random.normal(seed, self.shape)), -1.0, 1.0), None


def flow_ode(policy: Policy, params, obs, z, steps: int):
  """The flow's Euler integration of dx/dt = v_θ(s, x, t) from x_1 = z to t = 0, clipped to ±1."""
  def body(x, k):
    t = jnp.full(obs.shape[:-1], k / steps)
    return x - policy.predict(params, obs, x, t) / steps, None

  x, _ = jax.lax.scan(body, z, jnp.arange(steps, 0, -1, dtype=jnp.float32))
  return jnp.clip(x, -1.0, 1.0)


@primitive('policy')
@builder
def one_step_flow(spec: EnvSpec, hidden: Sequence[int] = (512, 512, 512, 512),
                  activation: str = 'gelu') -> Policy:
  """FQL's policy: a rectified-flow BC policy (its network is `DenoiserNet`) and a one-step
  generator μ_ω(s, z), an MLP on [s, z] (`hidden`, `activation`; FQL: 4×512 GELU) that acts:
  a = clip(μ_ω(s, z)), z ~ N(0, I), mode μ_ω(s, 0). `fit_loss` is the flow's flow-matching loss;
  μ_ω learns from `flow_distillation` and a Q signal."""
  flow = rectified_flow()(spec)
  net = hk.without_apply_rng(hk.transform(lambda obs, z: networks.mlp(
      hidden, spec.act_dim, activation, 'one_step', initializers.resolve())(
          jnp.concatenate([obs, z], -1))))

  def init(key):
    f_key, g_key = jax.random.split(key)
    return {'flow': flow.init(f_key),
            'one_step': net.init(g_key, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)))}

  one_step = lambda params, obs, z: net.apply(params['one_step'], obs, z)

  def distribution(params, obs):
    shape = obs.shape[:-1] + (spec.act_dim,)
    mode = jnp.clip(one_step(params, obs, jnp.zeros(shape)), -1.0, 1.0)
    return OneStepSample(lambda z: one_step(params, obs, z), shape), mode

  on_flow = lambda fn: (lambda params, *args: fn(params['flow'], *args))
  return flow._replace(
      name='one_step_flow', provides=frozenset({'distribution', 'chain', 'velocity', 'one_step',
                                                    'fits_actions'}),
      init=init, distribution=distribution, one_step=one_step,
      predict=on_flow(flow.predict), fit_loss=on_flow(flow.fit_loss),
      condition=on_flow(flow.condition), cfm_loss_at=on_flow(flow.cfm_loss_at),
      predict_cond=lambda params, cond, x, t: flow.predict_cond(params['flow'], cond, x, t),
      noise_std=None)


@primitive('regularizer')
@builder
def flow_distillation(spec: EnvSpec, coefficient: float = 10.0,
                      flow_steps: int = 10) -> Regularizer:
  """FQL's distillation: α·mean (μ_ω(s, z) − sg(ODE_θ(s, z)))² with one z ~ N(0, I) per state, the
  flow's `flow_steps`-step Euler sample from the same z as the target, with no gradient into the
  flow (α = `coefficient`; FQL: 10 steps, α = 10 unless a task sets it)."""

  def actor_loss(state, aux, params, inp, key):
    z = jax.random.normal(key, inp.obs.shape[:-1] + (spec.act_dim,))
    target = jax.lax.stop_gradient(flow_ode(inp.policy, params, inp.obs, z, flow_steps))
    return coefficient * jnp.mean(jnp.square(inp.policy.one_step(params, inp.obs, z) - target))

  return Regularizer('flow_distillation', frozenset({'one_step'}), lambda: (), actor_loss,
                     lambda *_: 0.0, lambda state, a, key, role: a,
                     lambda state, step, aux, sample_many, key: (state, {}))
