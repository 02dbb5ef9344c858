"""SDAC, IDEM, DPMD/GeMPO and QVPO losses and their regularizers on tiny cases, by hand in numpy
from the same network outputs and random draws; reverse samples, weights, particle keys, refresh."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl.primitives import parameterization, regularizer, sampler
from flowrl.primitives import weighted_denoising as wd
from flowrl.primitives.base import ActorInputs, EnvSpec
from tests.test_losses import B, SPEC, _batch, _np

W = jnp.array([[1.0, -2.0], [0.5, 0.3]])                 # Q_e(s, a) = w_e·a + (a·a)/4


def _q(o, a):
  return jnp.einsum('ea,...a->e...', W, a) + 0.25 * jnp.sum(a * a, -1)[None]


def _q_np(a):
  return np.einsum('ea,...a->e...', _np(W), a) + 0.25 * np.sum(a * a, -1)[None]


def _setup(steps=5):
  policy = parameterization.vp_diffusion(train_steps=5)(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  samp = sampler.sampler(sampler.ddpm(), steps=steps)
  return policy, params, samp, _batch(jax.random.PRNGKey(1))


def _inputs(policy, samp, batch, signal_state=None, temperature=None):
  return ActorInputs(batch.obs, batch.action, {}, policy, samp, _q,
                     lambda a, k: a, signal_state, temperature)


def _softmax(x, axis):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


# ---------------------------------------------------------------- reverse samples

def test_reverse_samples_stay_in_the_box_with_their_own_noise():
  x_t = jnp.array([[0.9, -0.95], [0.0, 0.3]])
  alpha, sigma = jnp.float32(0.6), jnp.float32(0.8)
  a0, eps = wd.reverse_samples(x_t, alpha, sigma, jax.random.PRNGKey(0), 2000)
  raw = (_np(x_t) + _np(sigma) * _np(eps)) / _np(alpha)     # before the safety clip
  assert raw.min() >= -1 - 1e-5 and raw.max() <= 1 + 1e-5
  assert raw.min() < -0.97 and raw.max() > 0.97             # the truncation reaches both walls
  assert len(np.unique(_np(eps)[:, 0, 0])) == 2000          # no key reused across samples
  np.testing.assert_allclose(_np(a0), np.clip(raw, -1, 1), atol=1e-5)


def test_sdac_loss_is_the_softmax_weighted_reverse_sample_denoising_loss():
  policy, params, samp, batch = _setup()
  key = jax.random.PRNGKey(3)
  sig = wd.reverse_sampling(num_samples=7, temperature=0.05)
  loss, aux = sig.loss(params, _inputs(policy, samp, batch), key)
  noise_key, rev_key = jax.random.split(key)
  x_t, t, _, alpha, sigma = policy.noised(batch.action, noise_key)
  a0, eps = map(_np, wd.reverse_samples(x_t, alpha, sigma, rev_key, 7))
  eps_hat = _np(policy.predict(params, batch.obs, x_t, t))
  w = _softmax(_q_np(a0).min(0) / 0.05, axis=0)                              # [n, B]
  np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-6)
  expected = np.mean(np.sum(w * np.mean((eps_hat[None] + eps) ** 2, -1), 0))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_idem_target_is_the_weighted_normalized_gradient():
  policy, params, samp, batch = _setup()
  key = jax.random.PRNGKey(4)
  sig = wd.reverse_sampling_grad(num_samples=6, temperature=0.05, max_target_rms=0.0)
  loss, _ = sig.loss(params, _inputs(policy, samp, batch), key)
  noise_key, rev_key = jax.random.split(key)
  x_t, t, _, alpha, sigma = policy.noised(batch.action, noise_key)
  a0 = _np(wd.reverse_samples(x_t, alpha, sigma, rev_key, 6)[0])
  qs = _q_np(a0)                                                             # [E, n, B]
  member = qs.argmin(0)                                                      # per-sample min
  dq = _np(W)[member] + 0.5 * a0                                             # ∇ of that member
  s = np.abs(dq).mean()
  w = _softmax(qs.min(0) / (0.05 * s), axis=0)
  target = -(_np(sigma) / _np(alpha)) * np.sum(w[..., None] * dq, 0) / (0.05 * s)
  eps_hat = _np(policy.predict(params, batch.obs, x_t, t))
  np.testing.assert_allclose(float(loss), np.mean((eps_hat - target) ** 2), rtol=1e-4)
  rms = np.sqrt(np.mean(target ** 2, -1, keepdims=True))
  c = float(np.median(rms))                               # binds on about half of the rows
  clipped, _ = wd.reverse_sampling_grad(num_samples=6, temperature=0.05, max_target_rms=c).loss(
      params, _inputs(policy, samp, batch), key)
  capped = target * np.minimum(1, c / rms)
  assert (capped != target).any() and (capped == target).any()
  np.testing.assert_allclose(float(clipped), np.mean((eps_hat - capped) ** 2), rtol=1e-4)


def test_idem_values_and_gradients_in_row_chunks_are_the_analytic_ones():
  policy, _, samp, batch = _setup()
  a0 = jax.random.uniform(jax.random.PRNGKey(5), (7,) + batch.action.shape, minval=-1, maxval=1)
  rows = a0.shape[0] * a0.shape[1]
  values, dq = wd._min_q_and_action_grad(_inputs(policy, samp, batch), a0, row_chunk=4)
  assert rows > 4 and rows % 4 != 0                          # several chunks, the last one padded
  qs = _q_np(_np(a0))                                                        # [E, n, B]
  np.testing.assert_allclose(values, qs.min(0), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(dq, _np(W)[qs.argmin(0)] + 0.5 * _np(a0), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- particles (DPMD, GeMPO)

@pytest.mark.parametrize('weight_map', wd.WEIGHT_MAPS)
def test_particle_weight_maps(weight_map):
  values = jnp.array([[0.0, 1.0, 2.0, -3.0], [5.0, 5.0, 5.0, 5.1]])
  w = _np(wd.particle_weights(values, 0.5, weight_map))
  np.testing.assert_allclose(w.mean(-1), 1.0, rtol=1e-5)       # each state's weights average 1
  v = _np(values)
  assert (np.diff(w[0][np.argsort(v[0])]) >= 0).all()            # monotone in Q
  if weight_map == 'exp':
    np.testing.assert_allclose(w, 4 * _softmax(v / 0.5, -1), rtol=1e-5)
  elif weight_map == 'linear':
    z = (v - v.mean(-1, keepdims=True)) / (0.5 * v.std(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(w, 1 + z, rtol=1e-4, atol=1e-5)
    assert w.min() < 0                                           # the worst particle is repelled
  else:
    assert w.min() >= 0


def test_dpmd_loss_on_particles_of_the_frozen_policy():
  policy, params, samp, batch = _setup()
  frozen = policy.init(jax.random.PRNGKey(9))                    # differs from params
  n, key = 5, jax.random.PRNGKey(6)
  p_key, n_key, fit_key = jax.random.split(key, 3)
  obs = jnp.repeat(batch.obs, n, axis=0)
  parts = sampler.draw(samp, policy, frozen, obs, p_key).action
  # a key reused across particles would repeat a state's samples; those the sampler clipped to
  # ±1 may tie, so compare the ones inside the box
  inside = [v[np.abs(v) < 1] for v in _np(parts).reshape(B, n, 2)[:, :, 0]]
  assert sum(len(v) >= 2 for v in inside) >= 2
  assert all(len(np.unique(v)) == len(v) for v in inside), 'a key reused across particles'
  parts = np.clip(_np(parts) + 0.2 * _np(jax.random.normal(n_key, parts.shape)), -1, 1)
  values = _q_np(parts).min(0).reshape(B, n)
  w = n * _softmax(values / 0.3, -1)                             # λ from the regularizer
  fit = _np(policy.fit_loss(params, obs, parts.astype(np.float32), fit_key)).reshape(B, n)
  clip = float(np.median(fit))                                   # binds on about half of them
  assert (fit > clip).any() and (fit < clip).any(), 'the clip must bind on some particles'
  sig = wd.q_weighted_particles(num_particles=n, particle_noise=0.2, loss_clip=clip)
  inputs = _inputs(policy, samp, batch, sig.init(frozen), temperature=jnp.float32(0.3))
  loss, aux = sig.loss(params, inputs, key)
  np.testing.assert_allclose(float(loss), np.mean(w * np.minimum(fit, clip)), rtol=1e-4)
  p = w / w.sum(-1, keepdims=True)
  np.testing.assert_allclose(_np(aux['weight_kl']), np.log(n) + np.sum(p * np.log(p), -1),
                             rtol=1e-4, atol=1e-6)
  # the particles come from the frozen copy: the current params would give another loss
  other, _ = sig.loss(params, _inputs(policy, samp, batch, sig.init(params), 0.3), key)
  assert abs(float(other) - float(loss)) > 1e-4


def test_frozen_particle_policy_refreshes_exactly_every_k_actor_steps():
  sig = wd.q_weighted_particles(refresh_every=3)
  state = sig.init(jnp.float32(-1.0))
  seen = []
  for step in range(8):
    state = jax.jit(sig.refresh)(state, jnp.float32(step), step)
    seen.append(float(state['frozen']))
  assert seen == [0, 0, 0, 3, 3, 3, 6, 6]


def test_kl_to_uniform_lambda_sharpens_flat_weights_and_flattens_sharp_ones():
  reg = regularizer.kl_to_uniform(target_kl=1.0, lambda_init=1.0, learning_rate=0.1)(SPEC)
  assert 'weight_temperature' in reg.provides
  for kl, direction in ((0.2, -1), (3.0, +1)):
    state = reg.init()
    for _ in range(5):
      state, metrics = reg.update(state, 0, {'weight_kl': jnp.full(B, kl)}, None, None)
    assert np.sign(float(metrics['lambda']) - 1.0) == direction
    assert float(reg.temperature(state)) == pytest.approx(float(metrics['lambda']))


# ---------------------------------------------------------------- noise entropy (SDAC, DPMD)

def test_noise_entropy_is_closed_form_and_steps_every_k():
  reg = regularizer.noise_entropy(alpha_init=5.0, learning_rate=0.1, target_scale=-0.9,
                                  noise_scale=0.1, every=3)(SPEC)
  state = reg.init()
  alphas = []
  for step in range(7):
    state, m = reg.update(state, step, {}, None, jax.random.PRNGKey(step))
    alphas.append(float(m['alpha']))
  std = 0.1 * 5.0
  first = regularizer.noise_entropy(alpha_init=5.0, every=3)(SPEC)
  s1, m1 = first.update(first.init(), 0, {}, None, None)
  np.testing.assert_allclose(float(m1['entropy_estimate']),
                             0.5 * 2 * np.log(2 * np.pi * np.e * std ** 2), rtol=1e-5)
  # H = 0.46 > H* = -1.8: α falls, and only on steps 0, 3, 6
  changed = [i for i in range(1, 7) if alphas[i] != alphas[i - 1]]
  assert changed == [3, 6] and alphas[0] < 5.0 and alphas[-1] < alphas[0]


# ---------------------------------------------------------------- QVPO

def test_qvpo_loss_weights_the_best_sample_by_its_advantage():
  policy, params, samp, batch = _setup()
  key, n = jax.random.PRNGKey(8), 6
  sig = wd.best_sample_advantage(num_samples=n)
  loss, aux = sig.loss(params, _inputs(policy, samp, batch), key)
  s_key, fit_key = jax.random.split(key)
  keys = jax.random.split(s_key, n)
  cands = np.stack([_np(sampler.draw(samp, policy, params, batch.obs, k).action) for k in keys], 1)
  values = _q_np(cands).min(0)                                               # [B, n]
  best = cands[np.arange(B), values.argmax(1)]
  w = np.maximum(values.max(1) - values.mean(1), 0)
  np.testing.assert_allclose(_np(aux['weights']), w, rtol=1e-5)
  fit = _np(policy.fit_loss(params, batch.obs, best.astype(np.float32), fit_key))
  np.testing.assert_allclose(float(loss), np.mean(w * fit), rtol=1e-4)


def test_uniform_denoising_covers_the_whole_box_and_is_weighted():
  policy, params, samp, batch = _setup()
  reg = regularizer.uniform_denoising(num_actions=4, weight=0.02)(SPEC)
  assert reg.requires == frozenset({'chain'})
  inputs = _inputs(policy, samp, batch)
  key = jax.random.PRNGKey(2)
  w = jnp.linspace(0.0, 2.0, B)
  loss = reg.actor_loss((), {'weights': w}, params, inputs, key)
  u_key, fit_key = jax.random.split(key)
  u = jax.random.uniform(u_key, (B * 4, 2), minval=-1.0, maxval=1.0)
  fit = _np(policy.fit_loss(params, jnp.repeat(batch.obs, 4, axis=0), u, fit_key))
  np.testing.assert_allclose(float(loss), 0.02 * np.mean(_np(w) * fit.reshape(B, 4).mean(1)),
                             rtol=1e-5)
  # the actions it draws span [-1, 1], not [0, 1)
  big = jax.random.uniform(u_key, (20000, 2), minval=-1.0, maxval=1.0)
  assert float(big.min()) < -0.99 and float(big.max()) > 0.99 and abs(float(big.mean())) < 0.02


def test_combined_regularizer_adds_losses_and_provides_the_temperature():
  spec = EnvSpec(3, 2)
  reg = regularizer.combined(parts=[regularizer.kl_to_uniform(lambda_init=0.5),
                                    regularizer.noise_entropy(alpha_init=2.0)])(spec)
  state = reg.init()
  assert 'weight_temperature' in reg.provides
  assert float(reg.temperature(state)) == pytest.approx(0.5)
  a = jnp.zeros((4000, 2))
  noisy = reg.perturb(state, a, jax.random.PRNGKey(0), 'behaviour')
  assert float(jnp.std(noisy)) == pytest.approx(0.1 * 2.0, rel=0.05)     # noise_entropy's part
  state, metrics = reg.update(state, 0, {'weight_kl': jnp.zeros(3)}, None, jax.random.PRNGKey(1))
  assert {'lambda', 'alpha', 'entropy_estimate'} <= set(metrics)
