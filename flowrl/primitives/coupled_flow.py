"""GenPO's invertible flow policy (Ding et al., NeurIPS 2025): a doubled action x = (z, y) ∈ ℝ^{2A}
moved by K coupled Euler steps of one velocity network (EDICT-style mixing), so the map from
noise to action is invertible and its likelihood exact:

  for i = 0..K−1, Δ = 1/K, t_i = i·Δ:   z' = z + Δ·v_θ(s, y, t_i);   y' = y + Δ·v_θ(s, z', t_i)
                                         z ← p·z' + (1 − p)·y';      y ← p·y' + (1 − p)·z
  log π(x_K | s) = log N(x_0; 0, I_{2A}) − log |det ∂x_K/∂x_0|,  x_0 = f_θ⁻¹(x_K)

The env's action is (z_K + y_K)/2 (`env_action`); the rollout stores x_K (2A numbers) and its
log-prob, so PPO's ratio is exact. The log-determinant is a constant: each coupled update adds
to one half a function of the other (a unit-triangular Jacobian, det 1, as NICE's additive
coupling), and each mixing is linear with det p^A, so log |det ∂x_K/∂x_0| = 2·A·K·log p for
every θ, s and x_0. GenPO's code (flow-rl genpo.py) takes it per sample by `jacrev` and
`slogdet` instead, which in float32 is off by up to 0.05 (measured at A = 4, K = 5, weights
×3), noise that enters the ratio; here it is exact and costs nothing (and calls no LAPACK
kernel, whose batched form can deadlock XLA's 2-thread CPU pool, docs/offline.md).
A `compression` regularizer, c·E‖z_K − y_K‖ on fresh samples, keeps the halves together.
"""
import math
from typing import Sequence

import distrax
import haiku as hk
import jax
import jax.numpy as jnp

from flowrl.errors import ConfigError
from flowrl.primitives.base import EnvSpec, Policy, Regularizer, builder, primitive
from flowrl.primitives import networks


def _maps(velocity, steps: int, mix: float):
  """(forward, inverse) of one state: x [2A], obs [O] -> x [2A]."""
  dt = 1.0 / steps

  def forward(x, obs):
    z, y = jnp.split(x, 2)
    for i in range(steps):
      t = jnp.full((1,), i * dt)
      z1 = z + dt * velocity(obs, y, t)
      y1 = y + dt * velocity(obs, z1, t)
      z = mix * z1 + (1 - mix) * y1
      y = mix * y1 + (1 - mix) * z
    return jnp.concatenate([z, y])

  def inverse(x, obs):
    z, y = jnp.split(x, 2)
    for i in reversed(range(steps)):
      t = jnp.full((1,), i * dt)
      y1 = (y - (1 - mix) * z) / mix
      z1 = (z - (1 - mix) * y1) / mix
      y = y1 - dt * velocity(obs, z1, t)
      z = z1 - dt * velocity(obs, y, t)
    return jnp.concatenate([z, y])

  return forward, inverse


class _CoupledFlow(distrax.Bijector):
  """The forward map x_0 -> x_K for a batch of states, with exact log-determinants."""

  def __init__(self, forward, inverse, obs, log_det: float):
    super().__init__(event_ndims_in=1)
    self._f, self._g, self._obs, self._log_det = forward, inverse, obs, log_det

  def forward_and_log_det(self, x):
    return jax.vmap(self._f)(x, self._obs), jnp.full(x.shape[:-1], self._log_det, x.dtype)

  def inverse_and_log_det(self, y):
    return jax.vmap(self._g)(y, self._obs), jnp.full(y.shape[:-1], -self._log_det, y.dtype)


@primitive('policy')
@builder
def coupled_flow(spec: EnvSpec, steps: int = 5, mix: float = 0.95,
                 hidden: Sequence[int] = (256, 256, 256), activation: str = 'elu') -> Policy:
  """GenPO's coupled flow over a doubled action (see the module docstring): K = `steps` steps of
  one velocity MLP v_θ([s, u, t]) (`hidden`, `activation`; GenPO: 3×256 elu, K = 5, p = 0.95),
  an exact log-prob (its Jacobian's log-determinant is the constant 2·A·K·log p), the mode from
  x_0 = 0."""
  if not 0.5 < mix <= 1.0:
    raise ConfigError(f'coupled_flow.mix={mix!r} must be in (0.5, 1]: the mixing is inverted by '
                      f'dividing by it.')
  net = hk.without_apply_rng(hk.transform(lambda obs, u, t: networks.mlp(
      hidden, spec.act_dim, activation, 'velocity')(jnp.concatenate(
          [obs, u, jnp.broadcast_to(t, u.shape[:-1] + (1,))], axis=-1))))
  dim = 2 * spec.act_dim

  def distribution(params, obs):
    forward, inverse = _maps(lambda o, u, t: net.apply(params, o, u, t), steps, mix)
    base = distrax.MultivariateNormalDiag(jnp.zeros(obs.shape[:-1] + (dim,)))
    log_det = 2 * spec.act_dim * steps * math.log(mix)     # of the forward map, for every x
    dist = distrax.Transformed(base, _CoupledFlow(forward, inverse, obs, log_det))
    mode = jax.vmap(forward)(jnp.zeros(obs.shape[:-1] + (dim,)), obs)
    return dist, mode

  def env_action(x):
    z, y = jnp.split(x, 2, axis=-1)
    return 0.5 * (z + y)

  init = lambda key: net.init(key, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)),
                              jnp.zeros((1, 1)))
  return Policy('coupled_flow', frozenset({'distribution', 'exact_logprob', 'coupled'}),
                spec.act_dim, init, distribution=distribution, env_action=env_action)


@primitive('regularizer')
@builder
def compression(spec: EnvSpec, coefficient: float = 0.01) -> Regularizer:
  """GenPO's compression loss c·E‖z − y‖ on fresh samples x = (z, y) of a coupled flow, keeping
  the two halves of the doubled action close (GenPO: c = 0.01)."""

  def actor_loss(state, aux, params, inputs, key):
    dist, _ = inputs.policy.distribution(params, inputs.obs)
    z, y = jnp.split(dist.sample(seed=key), 2, axis=-1)
    return coefficient * jnp.mean(jnp.linalg.norm(z - y, axis=-1))

  return Regularizer('compression', frozenset({'coupled'}), lambda: (), actor_loss,
                     lambda *_: 0.0, lambda state, a, key, role: a,
                     lambda state, step, aux, sample_many, key: (state, {}))
