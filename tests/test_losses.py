"""Each method's actor and critic losses on a tiny case equal the formula in docs/methods.md,
computed here by hand in numpy from the same network outputs and the same random draws."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowrl.primitives import critic as critics, parameterization, regularizer, sampler, signal
from flowrl.primitives.base import ActorInputs, EnvSpec
from flowrl.primitives.critic import Batch

SPEC = EnvSpec(3, 2)
B = 6
GAMMA = 0.99


def _batch(key, terminated=None):
  ks = jax.random.split(key, 6)
  a = jax.random.uniform(ks[1], (B, 2), minval=-1, maxval=1)
  term = jnp.array([0., 1., 0., 0., 1., 0.]) if terminated is None else terminated
  return Batch(jax.random.normal(ks[0], (B, 3)), a, jax.random.normal(ks[2], (B,)),
               jax.random.normal(ks[3], (B, 3)), term)


def _np(x):
  return np.asarray(x, np.float64)


# ---------------------------------------------------------------- critics

def _critic_case(make):
  """A critic with distinct online and target parameters, a batch with terminations, next actions."""
  c = make(hidden=(8,))(SPEC)
  batch = _batch(jax.random.PRNGKey(2))
  next_a = jax.random.uniform(jax.random.PRNGKey(3), (B, 2), minval=-1, maxval=1)
  # target key 3: its members order differently on different samples (the per-sample min shows)
  return (c, c.init(jax.random.PRNGKey(0)), c.init(jax.random.PRNGKey(3)), batch, next_a,
          GAMMA * (1 - batch.terminated))


def test_ensemble_td_loss_uses_per_sample_min_and_bootstraps_unless_terminated():
  c, params, target, batch, next_a, discount = _critic_case(critics.ensemble_q)
  bonus = jnp.linspace(-0.1, 0.1, B)
  loss, _ = c.loss(params, target, (), batch, next_a, bonus, discount, None)

  q_next = _np(c.values(target, batch.next_obs, next_a))            # [2, B]
  assert (q_next[0] < q_next[1]).any() and (q_next[0] > q_next[1]).any(), 'need both orders'
  y = _np(batch.reward) + _np(discount) * (q_next.min(0) + _np(bonus))
  q = _np(c.values(params, batch.obs, batch.action))
  expected = sum(np.mean((q[e] - y) ** 2) for e in range(2))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  # the defect "one member for the whole batch" gives a different number
  wrong_y = _np(batch.reward) + _np(discount) * (q_next[np.argmin(q_next.mean(1))] + _np(bonus))
  assert abs(expected - sum(np.mean((q[e] - wrong_y) ** 2) for e in range(2))) > 1e-4


def test_dsac_t_loss_matches_its_formula():
  c, params, target, batch, next_a, discount = _critic_case(critics.distributional_q)
  key = jax.random.PRNGKey(9)
  extra = jnp.array([0.5, 0.8])                       # running mean std (after the first update)
  loss, (new_extra, _) = c.loss(params, target, extra, batch, next_a, 0.0, discount, key)

  from flowrl.primitives import networks
  _, apply = networks.q_ensemble(3, 2, 2, (8,), 'gelu', outputs=2)
  out_t = _np(apply(target, batch.next_obs, next_a))
  mu_n, std_n = out_t[..., 0], np.log1p(np.exp(out_t[..., 1])) + 1e-6
  pick = mu_n.argmin(0)                                 # per-sample min-mean member
  mu_t, std_t = mu_n[pick, np.arange(B)], std_n[pick, np.arange(B)]
  z = np.clip(_np(jax.random.normal(key, (B,))), -3, 3)
  r, d = _np(batch.reward), _np(discount)
  y, y_z = r + d * mu_t, r + d * (mu_t + std_t * z)
  out = _np(apply(params, batch.obs, batch.action))
  mu, std = out[..., 0], np.log1p(np.exp(out[..., 1])) + 1e-6
  omega = 0.995 * np.array([0.5, 0.8]) + 0.005 * std.mean(1)
  eps = 0.1
  total = 0.0
  for e in range(2):
    y_b = mu[e] + np.clip(y_z - mu[e], -3 * omega[e], 3 * omega[e])
    per = (mu[e] * (y - mu[e]) / (std[e] ** 2 + eps)
           + std[e] * ((mu[e] - y_b) ** 2 - std[e] ** 2) / (std[e] ** 3 + eps))
    total += -(omega[e] ** 2 + eps) * per.mean()
  np.testing.assert_allclose(float(loss), total, rtol=1e-4)
  np.testing.assert_allclose(_np(new_extra), omega, rtol=1e-5)
  # the first update initialises the running std with the batch mean std
  _, (first, _) = c.loss(params, target, -jnp.ones(2), batch, next_a, 0.0, discount, key)
  np.testing.assert_allclose(_np(first), std.mean(1), rtol=1e-5)


def test_dsac_t_gradient_moves_the_mean_toward_the_target():
  c = critics.distributional_q(hidden=(8,))(SPEC)
  params = c.init(jax.random.PRNGKey(0))
  batch = _batch(jax.random.PRNGKey(2))._replace(reward=jnp.full((B,), 5.0))
  opt = optax.adam(1e-2)
  state = opt.init(params)
  before = float(jnp.mean(c.values(params, batch.obs, batch.action)))
  extra = -jnp.ones(2)
  for i in range(50):
    g, (extra, _) = jax.grad(c.loss, has_aux=True)(params, params, extra, batch, batch.action, 0.0,
                                                   jnp.zeros(B), jax.random.PRNGKey(i))
    upd, state = opt.update(g, state)
    params = optax.apply_updates(params, upd)
  after = float(jnp.mean(c.values(params, batch.obs, batch.action)))
  assert abs(after - 5.0) < abs(before - 5.0) - 1.0


# ---------------------------------------------------------------- actor signals

def _inputs(policy, samp, q, batch, perturb=lambda a, k: a):
  return ActorInputs(batch.obs, batch.action, {'improved_action': batch.action}, policy, samp, q,
                     perturb)


def test_sac_actor_loss_is_alpha_logp_minus_min_q():
  policy = parameterization.tanh_gaussian(hidden=(8,))(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  samp = sampler.sampler(sampler.direct())
  w = jnp.array([[1.0, -2.0], [0.5, 0.5]])
  q = lambda o, a: jnp.einsum('ea,ba->eb', w, a)
  batch = _batch(jax.random.PRNGKey(1))
  key = jax.random.PRNGKey(7)
  reg = regularizer.exact_entropy(alpha_init=0.3)(SPEC)
  state = reg.init()
  loss, aux = signal.reparam_q().loss(params, _inputs(policy, samp, q, batch), key)
  total = loss + reg.actor_loss(state, aux, None, None, None)
  sample_key, _ = jax.random.split(key)
  out = sampler.draw(samp, policy, params, batch.obs, sample_key)
  qa = _np(w) @ _np(out.action).T                                    # [E, B]
  expected = np.mean(0.3 * _np(out.log_prob) - qa.min(0))
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  # the TD bonus is -alpha log pi(a'|s')
  np.testing.assert_allclose(reg.target_bonus(state, out.log_prob), -0.3 * out.log_prob, rtol=1e-6)


def test_temperature_moves_toward_its_target_entropy():
  reg = regularizer.exact_entropy(alpha_init=1.0, learning_rate=0.1, target_scale=-1.0)(SPEC)
  s = reg.init()
  low_entropy = {'log_prob': jnp.full((B,), 5.0)}    # H = -5 < H* = -2: alpha must grow
  s2, m = reg.update(s, 0, low_entropy, None, None)
  assert float(m['alpha']) > 1.0
  high_entropy = {'log_prob': jnp.full((B,), -5.0)}  # H = 5 > -2: alpha must shrink
  s3, m = reg.update(s, 0, high_entropy, None, None)
  assert float(m['alpha']) < 1.0
  # Adam's first step moves log alpha by lr
  np.testing.assert_allclose(float(s2['log_alpha']), 0.1, rtol=1e-3)


def test_td3_actor_loss_is_minus_first_critic():
  policy = parameterization.deterministic(hidden=(8,))(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  samp = sampler.sampler(sampler.direct())
  w = jnp.array([[1.0, -2.0], [-3.0, 0.5]])
  q = lambda o, a: jnp.einsum('ea,ba->eb', w, a)
  batch = _batch(jax.random.PRNGKey(1))
  loss, _ = signal.deterministic_pg().loss(params, _inputs(policy, samp, q, batch), jax.random.PRNGKey(2))
  _, mode = policy.distribution(params, batch.obs)
  np.testing.assert_allclose(float(loss), -np.mean(_np(mode) @ _np(w[0])), rtol=1e-5)


def test_dacer_actor_loss_backpropagates_through_the_chain_with_alpha_noise():
  """-min Q(s, a + 0.1 α ξ) with a from the full DDPM chain; the gradient reaches the ε-net."""
  policy = parameterization.vp_diffusion(train_steps=5)(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  samp = sampler.sampler(sampler.ddpm(), steps=3)
  reg = regularizer.estimated_entropy(alpha_init=2.0, noise_scale=0.1)(SPEC)
  state = reg.init()
  w = jnp.array([[1.0, -2.0], [0.5, 0.5]])
  q = lambda o, a: jnp.einsum('ea,ba->eb', w, a)
  batch = _batch(jax.random.PRNGKey(1))
  perturb = lambda a, k: reg.perturb(state, a, k, 'actor')
  inputs = _inputs(policy, samp, q, batch, perturb)
  key = jax.random.PRNGKey(3)
  loss, _ = signal.reparam_q().loss(params, inputs, key)
  sample_key, noise_key = jax.random.split(key)
  a = sampler.draw(samp, policy, params, batch.obs, sample_key).action
  a = np.clip(_np(a) + 0.1 * 2.0 * _np(jax.random.normal(noise_key, a.shape)), -1, 1)
  np.testing.assert_allclose(float(loss), -np.mean((_np(w) @ a.T).min(0)), rtol=1e-5)
  grads = jax.grad(lambda p: signal.reparam_q().loss(p, inputs, key)[0])(params)
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
  assert sum(n > 0 for n in norms) == len(norms)     # every layer of the ε-net gets gradient


def test_dipo_action_ascent_and_denoising_loss():
  """Adam steps on −Σ min Q with clipped global norm, actions clipped; loss = denoising MSE."""
  c = jnp.array([0.5, -0.9])
  q = lambda o, a: jnp.stack([-jnp.sum((a - c) ** 2, -1), -jnp.sum((a - c) ** 2, -1) + 1.0])
  batch = _batch(jax.random.PRNGKey(1))
  a0 = batch.action                                 # the improvable column starts as it
  one = signal.ascend_actions(q, batch.obs, a0, steps=1, learning_rate=0.03, max_norm=0.2)
  g = -2 * (_np(a0) - _np(c))                       # ascent direction of Q
  # Adam's first step is lr * g / (|g| + eps) per coordinate whatever the clipping scale
  scale = min(1.0, 0.2 / np.linalg.norm(g))
  gs = g * scale
  expected = np.clip(_np(a0) + 0.03 * gs / (np.abs(gs) + 1e-5), -1, 1)
  np.testing.assert_allclose(_np(one), expected, rtol=1e-4, atol=1e-5)
  many = signal.ascend_actions(q, batch.obs, a0, steps=200, learning_rate=0.03, max_norm=0.2)
  assert np.abs(_np(many) - _np(c)).max() < 0.05    # converges to argmax Q, inside the box
  wall = lambda o, a: jnp.sum(a, -1)[None] * 100    # argmax outside the box
  out = signal.ascend_actions(wall, batch.obs, a0, steps=100, learning_rate=0.1, max_norm=0.2)
  np.testing.assert_allclose(_np(out), 1.0)

  policy = parameterization.vp_diffusion(train_steps=5)(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  samp = sampler.sampler(sampler.ddpm(), steps=5)
  sig = signal.action_gradient(steps=3, learning_rate=0.03, norm_ratio=0.1)
  key = jax.random.PRNGKey(4)
  loss, aux = sig.loss(params, _inputs(policy, samp, q, batch), key)
  improved = signal.ascend_actions(q, batch.obs, a0, 3, 0.03, 0.1 * 2)
  np.testing.assert_allclose(aux['improved_action'], improved, rtol=1e-6)
  # ε-prediction denoising loss on the improved actions, by hand
  alphas, sigmas = map(_np, policy.path(5))
  k_key, e_key = jax.random.split(key)
  k = _np(jax.random.randint(k_key, (B, 1), 1, 6)).astype(int)
  eps = _np(jax.random.normal(e_key, (B, 2)))
  x_t = alphas[k] * _np(improved) + sigmas[k] * eps
  pred = _np(policy.predict(params, batch.obs, x_t.astype(np.float32), (k[:, 0] / 5).astype(np.float32)))
  np.testing.assert_allclose(float(loss), np.mean((pred - eps) ** 2), rtol=1e-4)


@pytest.mark.parametrize('normalize', [False, True])
def test_qsm_loss_matches_the_score_target(normalize):
  policy = parameterization.vp_diffusion(train_steps=5)(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  samp = sampler.sampler(sampler.ddpm(), steps=5)
  w = jnp.array([[1.0, -2.0], [0.5, 0.3]])            # Q_e(s, a) = w_e·a: ∇Q_e = w_e
  q = lambda o, a: jnp.einsum('ea,...a->e...', w, a)
  batch = _batch(jax.random.PRNGKey(1))
  key = jax.random.PRNGKey(5)
  sig = signal.q_score_matching(score_scale=50.0, normalize=normalize, temperature=0.1)
  loss, _ = sig.loss(params, _inputs(policy, samp, q, batch), key)
  x_t, t, _, alpha, sigma = policy.noised(batch.action, key)
  eps_hat = _np(policy.predict(params, batch.obs, x_t, t))
  if normalize:
    # min over members of linear Qs: the gradient is w of the per-sample, per-point min member
    qa = _np(w) @ np.clip(_np(x_t), -1, 1).T              # [E, B]
    dq = _np(w)[qa.argmin(0)]
    target = -_np(sigma) * dq / (0.1 * np.abs(dq).mean())
  else:
    target = -50.0 * np.broadcast_to(_np(w).mean(0), (B, 2))
  np.testing.assert_allclose(float(loss), np.mean((eps_hat - target) ** 2), rtol=1e-4)


def test_gmm_entropy_of_known_distributions():
  from scipy import stats
  key = jax.random.PRNGKey(0)
  sd = np.array([0.5, 0.2])
  x = jax.random.normal(key, (2000, 2)) * sd
  exact = float(stats.multivariate_normal(np.zeros(2), np.diag(sd ** 2)).entropy())
  h1 = float(regularizer.gmm_entropy(x, jax.random.PRNGKey(1), components=1))
  assert abs(h1 - exact) < 0.05                      # one component: the Gaussian's entropy
  # with 3 components the estimate is DACER's upper bound H(w) + Σ w_k H_k of the true entropy
  h = float(regularizer.gmm_entropy(x, jax.random.PRNGKey(1), components=3))
  assert exact - 0.05 < h < exact + np.log(3)
  # three far-apart equal clusters: entropy ≈ log 3 + one cluster's entropy
  centers = jnp.array([[-5., 0.], [0., 5.], [5., 0.]])
  idx = jax.random.randint(jax.random.PRNGKey(2), (3000,), 0, 3)
  y = centers[idx] + 0.1 * jax.random.normal(jax.random.PRNGKey(3), (3000, 2))
  h3 = float(regularizer.gmm_entropy(y, jax.random.PRNGKey(4), components=3))
  one = float(stats.multivariate_normal(np.zeros(2), 0.01 * np.eye(2)).entropy())
  assert abs(h3 - (np.log(3) + one)) < 0.2


def test_dacer_alpha_follows_the_entropy_estimate_in_its_periodic_step():
  """α moves only in the periodic step (the loop runs it every `every` updates), toward the
  target: up for an entropy far below H* = −0.9·|A|, down for one above it."""
  reg = regularizer.estimated_entropy(alpha_init=3.0, learning_rate=0.03, target_scale=-0.9,
                                      num_samples=64, every=4)(SPEC)
  assert reg.periodic.every == 4
  s = reg.init()
  narrow = lambda key, n: 0.01 * jax.random.normal(key, (4, n, 2))   # entropy far below -1.8
  s1 = reg.periodic.run(s, narrow, jax.random.PRNGKey(0))
  assert float(regularizer.alpha(s1)) > 3.0 and float(s1['entropy']) < -1.8
  _, m = reg.update(s1, 4, {}, narrow, jax.random.PRNGKey(1))           # the update never estimates
  assert float(m['alpha']) == float(regularizer.alpha(s1))
  assert float(m['entropy_estimate']) == float(s1['entropy'])
  wide = lambda key, n: jax.random.uniform(key, (4, n, 2), minval=-1, maxval=1)
  s3 = reg.periodic.run(s, wide, jax.random.PRNGKey(2))
  assert float(regularizer.alpha(s3)) < 3.0

def test_combined_passes_on_its_one_periodic_part_and_refuses_two():
  """combined(kl_to_uniform, estimated_entropy): the periodic step runs on the estimated_entropy
  part's state only; two parts with periodic steps of their own are refused at build time."""
  parts = [regularizer.kl_to_uniform(), regularizer.estimated_entropy(num_samples=16, every=7)]
  reg = regularizer.combined(parts=parts)(SPEC)
  assert reg.periodic.every == 7
  states = reg.init()
  narrow = lambda key, n: 0.01 * jax.random.normal(key, (4, n, 2))
  after = reg.periodic.run(states, narrow, jax.random.PRNGKey(0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, after[0], states[0])   # λ untouched
  assert float(regularizer.alpha(after[1])) > float(regularizer.alpha(states[1]))
  assert regularizer.combined(parts=parts[:1])(SPEC).periodic is None
  with pytest.raises(ValueError, match='at most one part'):
    regularizer.combined(parts=[parts[1], regularizer.estimated_entropy()])(SPEC)


@pytest.mark.parametrize('make_signal', [
    lambda: signal.action_gradient(steps=3, learning_rate=0.03, norm_ratio=0.1),
    lambda: signal.q_score_matching(score_scale=50.0),
])
def test_a_denoising_loss_depends_on_the_policy_grid_not_on_sampler_steps(make_signal):
  """The training noise grid belongs to the policy: a sampler ablation (`--axis
  sampler.steps=5,10,20`) leaves the loss alone; the policy's `train_steps` changes it."""
  w = jnp.array([[1.0, -2.0], [0.5, 0.3]])
  q = lambda o, a: jnp.einsum('ea,...a->e...', w, a)
  batch = _batch(jax.random.PRNGKey(1))
  key = jax.random.PRNGKey(5)

  def loss(train_steps, sampler_steps):
    policy = parameterization.vp_diffusion(train_steps=train_steps)(SPEC)
    params = policy.init(jax.random.PRNGKey(0))
    samp = sampler.sampler(sampler.ddpm(), steps=sampler_steps)
    return float(make_signal().loss(params, _inputs(policy, samp, q, batch), key)[0])

  assert loss(20, 5) == loss(20, 10) == loss(20, 50)
  assert loss(5, 5) != loss(20, 5)
