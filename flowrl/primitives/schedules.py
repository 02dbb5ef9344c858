"""Noise schedules of VP diffusion on a grid of K steps: ᾱ_k for k = 0..K (ᾱ_0 = 1).

α_k = sqrt(ᾱ_k), σ_k = sqrt(1 − ᾱ_k); a noised action is a_k = α_k a + σ_k ε.
"""
import gin
import jax.numpy as jnp


def _alpha_bar_from_betas(betas):
  return jnp.concatenate([jnp.ones(1), jnp.cumprod(1.0 - betas)])


@gin.configurable(module='flowrl.schedule')
def cosine_schedule(steps: int, s: float = 0.008, max_beta: float = 0.999):
  """Nichol & Dhariwal 2021: ᾱ(k) = f(k)/f(0), f(k) = cos²((k/K + s)/(1 + s) · π/2),
  β_k = min(1 − ᾱ_k/ᾱ_{k−1}, max_beta)."""
  k = jnp.arange(steps + 1, dtype=jnp.float32)
  f = jnp.cos((k / steps + s) / (1 + s) * jnp.pi / 2) ** 2
  betas = jnp.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)
  return _alpha_bar_from_betas(betas)


@gin.configurable(module='flowrl.schedule')
def linear_schedule(steps: int, beta_min: float = 0.1, beta_max: float = 20.0):
  """The VP-SDE's linear β(t) = β_min + t(β_max − β_min) (Song et al. 2021) discretised on K steps,
  as Diffusion-QL's 'vp' schedule: β_k = 1 − exp(−β_min/K − (β_max − β_min)(2k − 1)/(2K²)).
  Unlike a linear β in [1e-4, 0.02], it reaches pure noise for any K."""
  k = jnp.arange(1, steps + 1, dtype=jnp.float32)
  betas = 1.0 - jnp.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * k - 1) / steps ** 2)
  return _alpha_bar_from_betas(betas)
