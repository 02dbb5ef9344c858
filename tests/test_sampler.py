"""Samplers reproduce a known 1-D target from its exact denoiser; best-of-N; clipping; keys."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl.primitives import parameterization, regularizer, sampler
from flowrl.primitives.base import EnvSpec
from tests import analytic

N = 20000
SPEC = EnvSpec(1, 1)


def _samples(policy_fn, rule, steps, output):
  policy = analytic.analytic_policy(policy_fn(SPEC), steps, output)
  s = sampler.sampler(rule, steps=steps)
  obs = jnp.zeros((N, 1))
  out = jax.jit(lambda k: sampler.draw(s, policy, None, obs, k))(jax.random.PRNGKey(1))
  return np.asarray(out.action[:, 0])


@pytest.mark.parametrize('name,policy_fn,rule,steps,output', [
    ('ddpm-cosine', parameterization.vp_diffusion(), sampler.ddpm(), 50, 'eps'),
    ('ddpm-linear', parameterization.vp_diffusion(schedule=parameterization.schedules.linear_schedule),
     sampler.ddpm(), 50, 'eps'),
    ('ddim', parameterization.vp_diffusion(), sampler.ddim(), 50, 'eps'),
    ('euler-flow', parameterization.rectified_flow(), sampler.euler(), 50, 'velocity'),
    ('dpm-solver-2m', parameterization.vp_diffusion(), sampler.dpm_solver_2m(), 20, 'eps'),
    ('dpm-solver-2m-flow', parameterization.rectified_flow(), sampler.dpm_solver_2m(), 20,
     'velocity'),
    ('euler-maruyama', parameterization.vp_diffusion(), sampler.euler_maruyama(), 100, 'eps'),
    ('euler-maruyama-flow', parameterization.rectified_flow(), sampler.euler_maruyama(), 100,
     'velocity'),
    ('langevin-q-flat-critic', parameterization.vp_diffusion(), sampler.langevin_q(), 20, 'eps'),
    ('langevin-q-flow', parameterization.rectified_flow(), sampler.langevin_q(), 20, 'velocity'),
])
def test_chain_sampler_reproduces_gaussian_mixture(name, policy_fn, rule, steps, output):
  a = _samples(policy_fn, rule, steps, output)
  mean, var, right = analytic.target_moments()
  assert abs(a.mean() - mean) < 0.03, name
  assert abs(a.var() - var) < 0.03, name
  assert abs((a > 0).mean() - right) < 0.03, name
  # both modes are populated, each near its own mean
  assert abs(a[a < 0].mean() - float(analytic.M[0])) < 0.05
  assert abs(a[a > 0].mean() - float(analytic.M[1])) < 0.05


def test_dpm_solver_2m_is_more_accurate_than_first_order_ddim_at_few_steps():
  """Second order: at 10 steps DPM-Solver++(2M) matches the target's variance and left mode
  better than DDIM (η = 0, the first-order solver of the same ODE)."""
  mean, var, _ = analytic.target_moments()
  err = {}
  for name, rule in (('ddim', sampler.ddim()), ('dpm', sampler.dpm_solver_2m())):
    a = _samples(parameterization.vp_diffusion(), rule, 10, 'eps')
    err[name] = (abs(a.var() - var), abs(a[a < 0].mean() - float(analytic.M[0])))
  assert err['dpm'][0] < 0.7 * err['ddim'][0] and err['dpm'][1] < 0.7 * err['ddim'][1], err


def test_langevin_q_samples_the_policy_under_a_flat_critic_and_its_tilt_under_a_linear_one():
  """With Q ≡ 0 the predictor–corrector reproduces the mixture; with Q = c·a it samples the
  tilted target p(a)·exp(c·a/τ), itself a Gaussian mixture with component weights
  w_i·exp(k m_i + k² s_i²/2), k = c/τ: the right mode's mass must match (0.70 → 0.85)."""
  mean, var, right = analytic.target_moments()
  policy = analytic.analytic_policy(parameterization.vp_diffusion()(SPEC), 20, 'eps')
  s = sampler.sampler(sampler.langevin_q(temperature=0.5), steps=20)
  obs = jnp.zeros((N, 1))
  draw = jax.jit(lambda k, c: sampler.draw(
      s, policy, None, obs, k, q=lambda o, a: jnp.zeros((2,) + a.shape[:-1]) + c * a[..., 0]
  ).action[:, 0])
  a = np.asarray(draw(jax.random.PRNGKey(1), 0.0))
  assert abs(a.mean() - mean) < 0.03 and abs(a.var() - var) < 0.03
  assert abs((a > 0).mean() - right) < 0.03
  w, m, sd = map(np.asarray, (analytic.W, analytic.M, analytic.S))
  k = 0.5 / 0.5
  tilted_w = w * np.exp(k * m + 0.5 * k ** 2 * sd ** 2)
  exact_right = tilted_w[1] / tilted_w.sum()
  tilted = np.asarray(draw(jax.random.PRNGKey(1), 0.5))
  assert exact_right > right + 0.1
  assert abs((tilted > 0).mean() - exact_right) < 0.03


def test_a_wrong_denoiser_fails_the_moment_check():
  """The moment check can fail: a denoiser of the wrong sign does not reproduce the target."""
  policy = analytic.analytic_policy(parameterization.vp_diffusion()(SPEC), 50, 'eps')
  fake = lambda p, o, x, t: jnp.zeros_like(x)                                # 'everything is data'
  policy = policy._replace(predict=fake, predict_cond=fake)
  out = sampler.draw(sampler.sampler(sampler.ddpm(), steps=50), policy, None, jnp.zeros((N, 1)),
                     jax.random.PRNGKey(1))
  assert abs(float(out.action.var()) - analytic.target_moments()[1]) > 0.1


def test_forward_noising_statistics():
  """a_k = α_k a + σ_k ε: mean α_k a and std σ_k, α² + σ² = 1, ᾱ_0 = 1, ᾱ_K ≈ 0."""
  steps = 10
  policy = parameterization.vp_diffusion(train_steps=steps)(SPEC)
  alphas, sigmas = policy.path(steps)
  np.testing.assert_allclose(alphas ** 2 + sigmas ** 2, 1.0, atol=1e-6)
  assert alphas[0] == 1.0 and alphas[-1] < 0.05
  assert np.all(np.diff(np.asarray(alphas)) < 0)
  a0 = jnp.full((N, 1), 0.7)
  x_t, t, eps, alpha, sigma = policy.noised(a0, jax.random.PRNGKey(3))
  k = np.round(np.asarray(t) * steps).astype(int)
  assert set(np.unique(k)) == set(range(1, steps + 1))
  for kk in (1, 5, 10):
    sel = np.asarray(x_t[:, 0])[k == kk]
    assert abs(sel.mean() - 0.7 * float(alphas[kk])) < 4 * float(sigmas[kk]) / np.sqrt(len(sel)) + 1e-3
    assert abs(sel.std() - float(sigmas[kk])) < 0.05 * float(sigmas[kk]) + 1e-3


def test_linear_schedule_reaches_noise_for_few_steps():
  from flowrl.primitives.schedules import linear_schedule, cosine_schedule
  for steps in (2, 5, 20, 100):
    assert linear_schedule(steps)[-1] < 1e-3
    assert cosine_schedule(steps)[-1] < 1e-3


def test_best_of_n_picks_the_argmax_per_state():
  n, B = 7, 5
  obs = jnp.arange(B, dtype=jnp.float32)[:, None]
  sample = lambda o, k: jax.random.uniform(k, (o.shape[0], 2), minval=-1, maxval=1)
  target = jnp.array([0.3, -0.2])
  q = lambda o, a: jnp.stack([-jnp.sum((a - target) ** 2, -1), -jnp.sum((a - target) ** 2, -1) + 1])
  key = jax.random.PRNGKey(4)
  chosen = sampler.best_of_n(sample, q, obs, key, n)
  cands = jnp.stack([sample(obs, k) for k in jax.random.split(key, n)], 1)     # [B, n, A]
  best = jnp.argmax(-jnp.sum((cands - target) ** 2, -1), axis=1)
  chex.assert_trees_all_close(chosen, cands[jnp.arange(B), best])
  # different states may choose different candidates, and the choice is per state
  assert len(set(np.asarray(best).tolist())) > 1


def test_best_of_n_uses_the_per_sample_ensemble_minimum():
  """The pick maximizes min_e Q_e per candidate, not one member for the whole batch."""
  obs = jnp.zeros((1, 1))
  cands = jnp.array([[0.9], [-0.9]])
  sample = lambda o, k: jnp.where(jax.random.bernoulli(k), cands[0], cands[1])[None]
  q = lambda o, a: jnp.stack([a[..., 0] * 10, -a[..., 0] * 0.1])   # member 1 is the min for a>0
  keys_first = [bool(jax.random.bernoulli(k)) for k in jax.random.split(jax.random.PRNGKey(5), 8)]
  assert any(keys_first) and not all(keys_first)
  chosen = sampler.best_of_n(sample, q, obs, jax.random.PRNGKey(5), 8)
  # min over members: a=0.9 -> min(9, -0.09) = -0.09; a=-0.9 -> min(-9, 0.09) = -9; pick 0.9
  np.testing.assert_allclose(chosen, [[0.9]])


def test_particle_keys_differ():
  """Candidates drawn for best-of-N come from distinct keys (no key reused across particles)."""
  seen = []
  sample = lambda o, k: jax.random.normal(k, (o.shape[0], 3))
  q = lambda o, a: jnp.sum(a, -1)[None]
  keys = jax.random.split(jax.random.PRNGKey(0), 16)
  cands = jax.vmap(lambda k: sample(jnp.zeros((2, 1)), k))(keys)
  assert len({tuple(np.asarray(c).ravel().round(6)) for c in cands}) == 16
  chosen = sampler.best_of_n(sample, q, jnp.zeros((2, 1)), jax.random.PRNGKey(0), 16)
  np.testing.assert_allclose(chosen, cands[jnp.argmax(jnp.sum(cands, -1), 0), jnp.arange(2)])


def test_samples_are_clipped_to_the_action_box():
  spec = EnvSpec(2, 3)
  policy = parameterization.vp_diffusion()(spec)
  far = lambda p, o, x, t: -50.0 * jnp.ones_like(x)                         # pushes x far out
  policy = policy._replace(predict=far, predict_cond=far, condition=lambda p, o: o)
  for rule in (sampler.ddpm(clip_denoised=False), sampler.ddim(clip_denoised=False)):
    out = sampler.draw(sampler.sampler(rule, steps=4), policy, None, jnp.zeros((64, 2)),
                       jax.random.PRNGKey(0))
    assert float(jnp.max(jnp.abs(out.action))) <= 1.0
  noise = regularizer.action_noise(behaviour_std=5.0, target_std=5.0, target_clip=10.0)(spec)
  a = jnp.full((1000, 3), 0.99)
  for role in ('behaviour', 'target'):
    b = noise.perturb((), a, jax.random.PRNGKey(1), role)
    assert float(jnp.max(jnp.abs(b))) <= 1.0 and float(jnp.std(b)) > 0.1
  dacer = regularizer.estimated_entropy()(spec)
  b = dacer.perturb(dacer.init(), a, jax.random.PRNGKey(2), 'actor')
  assert float(jnp.max(jnp.abs(b))) <= 1.0


def test_target_smoothing_noise_is_clipped_before_adding():
  noise = regularizer.action_noise(behaviour_std=0.0, target_std=1.0, target_clip=0.5)(EnvSpec(1, 1))
  a = jnp.zeros((5000, 1))
  b = noise.perturb((), a, jax.random.PRNGKey(0), 'target')
  assert float(jnp.max(jnp.abs(b))) <= 0.5 + 1e-6
  assert float(jnp.mean(jnp.abs(b) > 0.49)) > 0.5    # heavy clipping of N(0, 1) at ±0.5
  np.testing.assert_array_equal(noise.perturb((), a, jax.random.PRNGKey(0), 'behaviour'), a)


def test_direct_sampler_log_prob_matches_change_of_variables():
  """tanh-Gaussian log-prob = log N(u; μ, σ) − Σ log(1 − tanh²u) (checked with scipy)."""
  from scipy import stats
  spec = EnvSpec(2, 2)
  policy = parameterization.tanh_gaussian(hidden=(8,))(spec)
  params = policy.init(jax.random.PRNGKey(0))
  obs = jnp.array([[0.3, -0.2]])
  dist, mode = policy.distribution(params, obs)
  out = sampler.draw(sampler.sampler(sampler.direct()), policy, params, obs, jax.random.PRNGKey(1))
  base = dist.distribution
  mu, sd = np.asarray(base.loc[0], np.float64), np.asarray(base.scale_diag[0], np.float64)
  u = np.arctanh(np.asarray(out.action[0], np.float64))
  expected = np.sum(stats.norm.logpdf(u, mu, sd)) - np.sum(np.log(1 - np.tanh(u) ** 2))
  np.testing.assert_allclose(float(out.log_prob[0]), expected, rtol=1e-3, atol=1e-3)
  det = sampler.draw(sampler.sampler(sampler.direct()), policy, params, obs, jax.random.PRNGKey(1),
                     deterministic=True)
  np.testing.assert_allclose(det.action, np.tanh(mu)[None], atol=1e-6)


@pytest.mark.parametrize('rule,kw', [(sampler.euler(), {}),
                                     (sampler.noisy_euler(sigma=0.1), {'deterministic_eval': True})])
def test_eval_from_zero_starts_deterministic_chains_at_zero(rule, kw):
  """FPO++'s zero-sampling evaluation: a deterministic draw integrates from x_K = 0 (the same
  action for every key, that of the chain run from zeros); a behaviour draw still starts from
  noise, as without the option."""
  policy = analytic.analytic_policy(parameterization.rectified_flow()(SPEC), 10, 'velocity')
  plain = sampler.sampler(rule, steps=10, **kw)
  zero = sampler.sampler(rule, steps=10, eval_from_zero=True, **kw)
  obs = jnp.zeros((64, 1))
  k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  a1 = sampler.draw(zero, policy, None, obs, k1, True).action
  a2 = sampler.draw(zero, policy, None, obs, k2, True).action
  from_zeros = plain.sample(policy, None, obs, k1, 10, True, None, start=jnp.zeros((64, 1)))
  np.testing.assert_allclose(a1, a2, atol=1e-6)
  np.testing.assert_allclose(a1, from_zeros.action, atol=1e-6)
  assert not np.allclose(sampler.draw(plain, policy, None, obs, k1, True).action, a1, atol=1e-3)
  np.testing.assert_allclose(sampler.draw(zero, policy, None, obs, k1).action,
                             sampler.draw(plain, policy, None, obs, k1).action, atol=1e-6)


def test_eval_from_zero_needs_a_chain():
  from flowrl.errors import ConfigError
  with pytest.raises(ConfigError, match="'direct' runs no chain from x_K"):
    sampler.sampler(sampler.direct(), eval_from_zero=True)
