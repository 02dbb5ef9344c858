"""Exact denoisers of a 1-D Gaussian-mixture target, for testing samplers without training.

Target p(a) = Σ_i w_i N(m_i, s_i²). On a Gaussian path x_t = α a + σ ε the marginal is
p_t(x) = Σ_i w_i N(α m_i, α² s_i² + σ²), and for each component the posterior of a given x is
Gaussian, so E[a | x] and E[ε | x] = (x − α E[a | x]) / σ are closed-form.
"""
from typing import NamedTuple

import jax.numpy as jnp
import jax.scipy.stats as jstats
import numpy as np

from flowrl.primitives.base import Policy

W = jnp.array([0.3, 0.7])
M = jnp.array([-0.5, 0.4])
S = jnp.array([0.1, 0.15])


def posterior_mean(x, alpha, sigma):
  """E[a | x_t = x] for x of shape [..., 1]."""
  var = alpha ** 2 * S ** 2 + sigma ** 2
  log_r = jnp.log(W) + jstats.norm.logpdf(x, alpha * M, jnp.sqrt(var))
  r = jnp.exp(log_r - jnp.max(log_r, -1, keepdims=True))
  r = r / jnp.sum(r, -1, keepdims=True)
  cond = M + alpha * S ** 2 / var * (x - alpha * M)
  return jnp.sum(r * cond, -1, keepdims=True)


def target_moments():
  w, m, s = map(np.asarray, (W, M, S))
  mean = np.sum(w * m)
  var = np.sum(w * (s ** 2 + m ** 2)) - mean ** 2
  return mean, var, float(w[1])   # mass right of 0 ≈ weight of the right component


def analytic_policy(base: Policy, steps: int, output: str) -> Policy:
  """`base`'s path with an exact network: output 'eps' (VP) or 'velocity' (rectified flow)."""
  alphas, sigmas = base.path(steps)

  def predict(params, obs, x, t):
    k = jnp.round(t * steps).astype(jnp.int32)[..., None]
    a, s = alphas[k], sigmas[k]
    x0 = posterior_mean(x, a, s)
    eps = (x - a * x0) / s
    return eps if output == 'eps' else eps - x0

  return base._replace(predict=predict, condition=lambda params, obs: obs, predict_cond=predict)
