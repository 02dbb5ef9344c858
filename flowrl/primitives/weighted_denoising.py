"""Improvement signals that fit the policy's denoiser to Q-weighted actions (signal axis).

  reverse_sampling      SDAC (Ma et al. 2025): on a noised replay action a_t = α_t a + σ_t ε, draw
                        reverse samples â₀ᵢ = (a_t + σ_t ε̃ᵢ)/α_t with ε̃ᵢ ~ N(0, I) truncated so
                        â₀ᵢ ∈ [−1, 1]; wᵢ = softmax_i(Q̄(s, â₀ᵢ)/τ);
                        L = mean_b Σᵢ wᵢ ‖ε̂_θ(s, a_t, t) + ε̃ᵢ‖² (norms averaged over action dims).
  reverse_sampling_grad IDEM: the same reverse samples; s = mean |∇ₐQ̄(â₀)|,
                        ε* = −(σ_t/α_t) Σᵢ softmax_i(Q̄(â₀ᵢ)/(τs)) ∇ₐQ̄(s, â₀ᵢ)/(τs), each
                        scaled to an RMS of at most c (iDEM clips its score estimate);
                        L = mean ‖ε̂_θ(s, a_t, t) − ε*‖².
  q_weighted_particles  DPMD (Ma et al. 2025) and GeMPO's weight maps (Ma, Gao et al. 2026):
                        N particles from a frozen copy of the policy (refreshed every K actor steps,
                        kept in the train state) plus Gaussian noise, clipped to the box; weights
                        w = map(Q̄ over the particles, λ); L = mean w·min(ℓ_fit(particle), c).
  best_sample_advantage QVPO (Ding et al. 2024): a★ = best of N policy samples by Q̄ (the spine's
                        best-of-N), w = max(Q̄(a★) − mean_N Q̄, 0); L = mean w·ℓ_fit(a★).

ℓ_fit is the policy's own regression loss at a random noise level (ε-, x0-, v- or velocity
matching), so every chain parameterization works with the particle and best-sample signals.
Reverse samples need an ε estimate and a Gaussian path, which every chain policy also has.
"""
import chex
import jax
import jax.numpy as jnp

from flowrl.errors import ConfigError
from flowrl.primitives import networks
from flowrl.primitives.base import ActorInputs, Signal, primitive
from flowrl.primitives.q_values import min_q
from flowrl.primitives.sampler import best_of_n, draw

WEIGHT_MAPS = ('exp', 'linear', 'square')


def reverse_samples(x_t, alpha, sigma, key, n: int):
  """n reverse samples per noised action: ε̃ ~ N(0, I) truncated so â₀ = (x_t + σ ε̃)/α ∈ [−1, 1].
  x_t [B, A], alpha and sigma broadcastable to it. Returns (â₀ [n, B, A], ε̃ [n, B, A]); one draw
  of shape [n, ...], so every sample has its own noise."""
  lower = (-alpha - x_t) / sigma
  upper = (alpha - x_t) / sigma
  eps = jax.random.truncated_normal(key, lower, upper, (n,) + x_t.shape)
  return jnp.clip((x_t + sigma * eps) / alpha, -1.0, 1.0), eps


def _min_q(inp: ActorInputs, actions):
  """Q̄(s, a) for actions [n, B, A] -> [n, B]."""
  obs = jnp.broadcast_to(inp.obs, actions.shape[:-1] + inp.obs.shape[-1:])
  return min_q(inp.q, obs, actions)


def _min_q_and_action_grad(inp: ActorInputs, actions, row_chunk: int = networks.ROW_CHUNK):
  """Q̄(s, a) [n, B] and ∇ₐQ̄ [n, B, A] for actions [n, B, A]. Rows are independent, so each chunk
  of at most `row_chunk` rows runs its forward and backward pass together, while its activations
  are in cache: 1.3× faster than the gradient through the chunked values on IDEM's 128,000 rows."""
  obs = jnp.broadcast_to(inp.obs, actions.shape[:-1] + inp.obs.shape[-1:])

  def chunk(o, a):
    values, pull = jax.vjp(lambda x: min_q(inp.q, o, x), a)
    return values, pull(jnp.ones_like(values))[0]

  return networks.map_row_chunks(chunk, (obs, actions), row_chunk)


def _noised_replay(params, inp: ActorInputs, key):
  policy = inp.policy
  x_t, t, _, alpha, sigma = policy.noised(inp.action, key)
  eps_hat, _ = policy.to_eps_x0(policy.predict(params, inp.obs, x_t, t), x_t, alpha, sigma)
  return x_t, alpha, sigma, eps_hat


@primitive('signal')
def reverse_sampling(num_samples: int = 500, temperature: float = 0.05) -> Signal:
  """SDAC: Q-softmax-weighted denoising toward reverse samples of noised replay actions."""

  def loss(params, inp: ActorInputs, key):
    noise_key, rev_key = jax.random.split(key)
    x_t, alpha, sigma, eps_hat = _noised_replay(params, inp, noise_key)
    a0, eps = reverse_samples(x_t, alpha, sigma, rev_key, num_samples)
    w = jax.lax.stop_gradient(jax.nn.softmax(_min_q(inp, a0) / temperature, axis=0))   # [n, B]
    per_sample = jnp.mean(jnp.square(eps_hat[None] + eps), axis=-1)                # [n, B]
    chex.assert_shape([w, per_sample], (num_samples, inp.obs.shape[0]))
    return jnp.mean(jnp.sum(w * per_sample, axis=0)), {'weight_max': jnp.max(w, axis=0)}

  return Signal('reverse_sampling', frozenset({'chain', 'q'}), loss)


@primitive('signal')
def reverse_sampling_grad(num_samples: int = 500, temperature: float = 0.05,
                          max_target_rms: float = 3.0) -> Signal:
  """IDEM: match ε̂ to the softmax-weighted, normalized ∇Q of the reverse samples. The factor
  σ/α reaches ~100 at the noisiest step of a cosine schedule, so, as iDEM clips its score
  estimate, each target is scaled down to a root-mean-square of at most `max_target_rms` (a unit
  Gaussian ε has 1); 0 disables the clip."""

  def loss(params, inp: ActorInputs, key):
    noise_key, rev_key = jax.random.split(key)
    x_t, alpha, sigma, eps_hat = _noised_replay(params, inp, noise_key)
    a0, _ = reverse_samples(x_t, alpha, sigma, rev_key, num_samples)
    values, dq = _min_q_and_action_grad(inp, a0)                                  # [n, B, A]
    scale = temperature * jnp.mean(jnp.abs(dq)) + 1e-8
    w = jax.nn.softmax(values / scale, axis=0)
    target = -(sigma / alpha) * jnp.sum(w[..., None] * dq, axis=0) / scale
    if max_target_rms:
      rms = jnp.sqrt(jnp.mean(jnp.square(target), axis=-1, keepdims=True))
      target = target * jnp.minimum(1.0, max_target_rms / (rms + 1e-12))
    target = jax.lax.stop_gradient(target)
    chex.assert_equal_shape([eps_hat, target, inp.action])                         # [B, A]
    return jnp.mean(jnp.square(eps_hat - target)), {'score_norm': jnp.mean(jnp.abs(dq))}

  return Signal('reverse_sampling_grad', frozenset({'chain', 'q'}), loss)


def particle_weights(values, temperature, weight_map: str):
  """Weights over N particles per state from their values [B, N], each row averaging 1:
  exp     N·softmax(Q/λ) (DPMD; mirror descent with a KL proximal term)
  linear  1 + z, z = (Q − mean Q)/(λ·std Q) the per-state standardized advantage (GeMPO's
          χ²-type map: particles more than λ standard deviations below average get negative
          weight, which pushes the policy away from them)
  square  (1 + z/2)₊² normalized to mean 1: a non-negative, monotone map between linear and
          exp (1 + z + z²/4 above z = −2, zero below)."""
  n = values.shape[-1]
  if weight_map == 'exp':
    return n * jax.nn.softmax(values / temperature, axis=-1)
  centered = values - jnp.mean(values, axis=-1, keepdims=True)
  z = centered / (temperature * jnp.std(values, axis=-1, keepdims=True) + 1e-6)
  if weight_map == 'linear':
    return 1.0 + z
  w = jnp.square(jnp.maximum(1.0 + 0.5 * z, 0.0))
  return w / jnp.mean(w, axis=-1, keepdims=True)


def weight_kl(w):
  """KL(normalized weights ‖ uniform) = log N − H(w/Σw) per state, |w| for signed maps."""
  p = jnp.abs(w) / jnp.sum(jnp.abs(w), axis=-1, keepdims=True)
  return jnp.log(w.shape[-1]) + jnp.sum(p * jnp.log(p + 1e-12), axis=-1)


@primitive('signal')
def q_weighted_particles(num_particles: int = 64, particle_noise: float = 0.2,
                         refresh_every: int = 500, weight_map: str = 'exp',
                         temperature: float = 1.0, loss_clip: float = 3.0) -> Signal:
  """DPMD / GeMPO: weighted denoising on particles of a frozen old policy. λ is the
  regularizer's weight temperature where it provides one (DPMD's KL-to-uniform), else
  `temperature`. The frozen copy is refreshed on every `refresh_every`-th actor step."""
  if weight_map not in WEIGHT_MAPS:
    raise ConfigError(f"q_weighted_particles.weight_map={weight_map!r} is not one of "
                      f"{WEIGHT_MAPS}.")

  def init(actor_params):
    return {'frozen': actor_params}

  def refresh(state, actor_params, step):
    return jax.lax.cond(step % refresh_every == 0, lambda: {'frozen': actor_params},
                        lambda: state)

  def loss(params, inp: ActorInputs, key):
    p_key, n_key, fit_key = jax.random.split(key, 3)
    b = inp.obs.shape[0]
    obs = jnp.repeat(inp.obs, num_particles, axis=0)                            # [B·N, O]
    frozen = jax.lax.stop_gradient(inp.signal_state['frozen'])
    particles = draw(inp.sampler, inp.policy, frozen, obs, p_key, q=inp.q).action
    particles = jnp.clip(particles + particle_noise * jax.random.normal(n_key, particles.shape),
                         -1.0, 1.0)
    values = min_q(inp.q, obs, particles).reshape(b, num_particles)
    lam = temperature if inp.temperature is None else inp.temperature
    w = jax.lax.stop_gradient(particle_weights(values, lam, weight_map))          # [B, N]
    fit = inp.policy.fit_loss(params, obs, particles, fit_key)
    fit = jnp.minimum(fit, loss_clip).reshape(b, num_particles)
    chex.assert_equal_shape([w, fit])                                              # [B, N]
    return jnp.mean(w * fit), {'weight_kl': weight_kl(w), 'weight_max': jnp.max(w, axis=-1)}

  return Signal('q_weighted_particles', frozenset({'chain', 'q'}), loss, init, refresh,
                provides=frozenset({'weight_kl'}))


@primitive('signal')
def best_sample_advantage(num_samples: int = 64) -> Signal:
  """QVPO: denoising on the best of N policy samples, weighted by its advantage over their mean."""

  def loss(params, inp: ActorInputs, key):
    s_key, fit_key = jax.random.split(key)
    frozen = jax.lax.stop_gradient(params)
    sample = lambda o, k: draw(inp.sampler, inp.policy, frozen, o, k, q=inp.q).action
    best, values = best_of_n(sample, inp.q, inp.obs, s_key, num_samples, with_values=True)
    w = jnp.maximum(jnp.max(values, axis=-1) - jnp.mean(values, axis=-1), 0.0)       # [B]
    w = jax.lax.stop_gradient(w)
    fit = inp.policy.fit_loss(params, inp.obs, jax.lax.stop_gradient(best), fit_key)
    chex.assert_equal_shape([w, fit])                                              # [B]
    return jnp.mean(w * fit), {'weights': w}

  return Signal('best_sample_advantage', frozenset({'chain', 'q'}), loss)
