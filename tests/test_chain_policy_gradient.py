"""Diffusion and flow on-policy signals against their formulas: the first epoch's ratio is 1 for
every method (what a rollout stores is re-scored by the same function), DPPO's per-step ratio
clamps per action dimension, ReinFlow's joint log-likelihood equals a step-by-step hand
computation, and FPO's ratio and FPO++'s ASPO objective equal theirs on tiny cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from flowrl.compose import compile_method, method
from flowrl.data import rollout_source
from flowrl.errors import ConfigError
from flowrl.primitives import coupled_flow as CF, critic, parameterization as P, regularizer as R
from flowrl.primitives import policy_gradient as PG, sampler as S
from flowrl.primitives.base import ActorInputs, EnvSpec, Policy
from flowrl.primitives.transition_kernel import ChainParams, chain_log_probs, sample_chain

SPEC = EnvSpec(obs_dim=3, act_dim=6)
ROLLOUT = rollout_source(steps=8, epochs=2, minibatches=2)
TINY = dict(hidden=(16,), obs_hidden=(), time_dim=4)


@pytest.fixture(autouse=True)
def tiny_denoiser():
  import gin
  with gin.unlock_config():
    for k, v in TINY.items():
      gin.bind_parameter(f'DenoiserNet.{k}', v)
  yield
  gin.clear_config()


def _method(policy, rule, signal, steps=4, **sampler_kw):
  reg = R.entropy_bonus(coefficient=0.01) if 'entropy' in signal.provides else R.no_regularizer()
  return method(policy, S.sampler(rule, steps=steps, **sampler_kw), signal, reg,
                critic.state_value(hidden=(8,)), name='chain')


METHODS = {
    'dppo': lambda: _method(P.vp_diffusion(train_steps=4), S.ddpm(), PG.ppo_clip_chain(),
                            min_sampling_std=0.1, min_logprob_std=0.1, noise_clip=3.0),
    'dppo-ddim': lambda: _method(P.vp_diffusion(train_steps=4), S.ddim(eta=0.5),
                                 PG.ppo_clip_chain(), min_logprob_std=0.1),
    'dppo-euler-maruyama': lambda: _method(P.rectified_flow(), S.euler_maruyama(),
                                           PG.ppo_clip_chain()),
    'reinflow': lambda: _method(P.rectified_flow(noise_head=(0.1, 0.24)),
                                S.noisy_euler(learned_std=True),
                                PG.ppo_clip_chain(mode='joint', clip=0.01, log_prob_min=-1.0,
                                                  log_prob_max=1.0), noise_clip=3.0),
    'fpo': lambda: _method(P.rectified_flow(train_grid=4), S.euler(), PG.fpo_ratio()),
    'fpo-vp-diffusion': lambda: _method(P.vp_diffusion(train_steps=4), S.ddim(),
                                        PG.fpo_ratio(space='native')),
    'genpo': lambda: _method(CF.coupled_flow(steps=2, hidden=(16,)), S.direct(), PG.ppo_clip()),
    'fpo++': lambda: _method(P.rectified_flow(), S.euler(),
                             PG.fpo_ratio(samples=4, per_sample=True, objective='aspo',
                                          action_noise=0.02, reduction='sqrt',
                                          t_range=(0.005, 0.995))),
}


@pytest.mark.parametrize('name', sorted(METHODS))
def test_the_first_epochs_ratio_is_exactly_one(name):
  agent = compile_method(METHODS[name](), SPEC, ROLLOUT)
  state = agent.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (24, SPEC.obs_dim))
  action, extras = jax.jit(agent.collect)(state, obs, jax.random.PRNGKey(2))
  # A minibatch of other rows than collected, in another order: re-scoring is row-independent.
  idx = jnp.array([5, 17, 0, 9, 23, 11, 2, 14])
  columns = {k: v[idx] for k, v in extras.items()}
  columns.update(obs=obs[idx], action=action[idx],
                 advantage=jax.random.normal(jax.random.PRNGKey(3), (8,)))
  inputs = ActorInputs(obs[idx], action[idx], columns, agent.policy, agent.sampler, None, None)
  _, aux = jax.jit(lambda p: agent.signal.loss(p, inputs, jax.random.PRNGKey(4)))(
      state.actor.params)
  assert float(jnp.max(jnp.abs(aux['ratio'] - 1.0))) < 1e-5, name
  assert abs(float(aux['approx_kl'])) < 1e-6 and float(aux['clip_fraction']) == 0.0


def _kernel_case(sigma=0.3, steps=3, batch=5):
  """A tiny flow, a noisy-Euler kernel with fixed σ, and a chain sampled from it."""
  policy = P.rectified_flow()(SPEC)
  rule = S.sampler(S.noisy_euler(sigma=sigma, clip_mean=False), steps=steps)
  params = policy.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (batch, SPEC.obs_dim))
  _, chain = sample_chain(rule.kernel, policy, params, obs, jax.random.PRNGKey(2), steps, True)
  return policy, rule, params, obs, np.asarray(chain, np.float64)


def _hand_log_probs(policy, params, obs, chain, sigma, steps):
  """log N(x_{k−1}; x_k − Δ·v(s, x_k, k/K), σ²) per step and dimension, one step at a time."""
  out = np.zeros((chain.shape[0], steps, chain.shape[2]))
  for i in range(steps):
    k = steps - i
    v = np.asarray(policy.predict(params, obs, jnp.asarray(chain[:, i], jnp.float32),
                                  jnp.full((chain.shape[0],), k / steps)), np.float64)
    mean = chain[:, i] - v / steps
    out[:, i] = stats.norm.logpdf(chain[:, i + 1], mean, sigma)
  return out


def test_chain_log_probs_equal_a_step_by_step_hand_computation():
  policy, rule, params, obs, chain = _kernel_case()
  lp, ent = chain_log_probs(rule.kernel, policy, params, obs, jnp.asarray(chain, jnp.float32), 3)
  np.testing.assert_allclose(lp, _hand_log_probs(policy, params, obs, chain, 0.3, 3), atol=2e-4)
  np.testing.assert_allclose(ent, np.full(lp.shape, stats.norm.entropy(scale=0.3)), rtol=1e-5)


def test_reinflow_joint_ratio_is_the_normalized_clamped_chain_likelihood():
  policy, rule, params, obs, chain = _kernel_case()
  steps, dims = 3, SPEC.act_dim
  hand = _hand_log_probs(policy, params, obs, chain, 0.3, steps)
  joint = (stats.norm.logpdf(chain[:, 0]).sum(-1) + hand.sum((1, 2))) / ((steps + 1) * dims)
  old_joint = joint + np.array([0.3, -0.2, 0.0, 0.5, -2.0])          # a shifted "old" chain
  old = hand + ((old_joint - joint) * (steps + 1) * dims / (steps * dims))[:, None, None]
  adv = np.array([1.0, -1.0, 2.0, -0.5, 1.5])
  sig = PG.ppo_clip_chain(mode='joint', clip=0.1, log_prob_min=-1.0, log_prob_max=1.0,
                          normalize_advantage=False)
  columns = {'chain': jnp.asarray(chain, jnp.float32), 'chain_log_prob': jnp.asarray(old, jnp.float32),
             'advantage': jnp.asarray(adv, jnp.float32)}
  loss, aux = sig.loss(params, ActorInputs(obs, None, columns, policy, rule, None, None), None)
  r = np.exp(np.clip(joint, -1, 1) - np.clip(old_joint, -1, 1))
  want = -np.mean(np.minimum(r * adv, np.clip(r, 0.9, 1.1) * adv))
  np.testing.assert_allclose(aux['ratio'], r, rtol=1e-4)
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)


def test_dppo_per_step_ratio_clamps_each_dimension_before_the_mean():
  """A 6-D step whose dimensions sit partly outside [−5, 2]: per-dimension clamping keeps a ratio
  (and a gradient); clamping the sum would pin both sums at the bound (ratio 1)."""
  policy, rule, params, obs, chain = _kernel_case(sigma=0.05, steps=2, batch=2)
  new = _hand_log_probs(policy, params, obs, chain, 0.05, 2)
  shift = np.array([0.5, -1.0, 0.3, 0.0, -0.4, 1.5])                 # per dimension
  old = new - shift
  adv = np.array([1.0, -2.0])
  sig = PG.ppo_clip_chain(mode='per_step', clip=0.2, clip_base=0.05, denoising_discount=0.9,
                          normalize_advantage=False)
  columns = {'chain': jnp.asarray(chain, jnp.float32), 'chain_log_prob': jnp.asarray(old, jnp.float32),
             'advantage': jnp.asarray(adv, jnp.float32)}
  loss, aux = sig.loss(params, ActorInputs(obs, None, columns, policy, rule, None, None), None)
  clamp = lambda lp: np.clip(lp, -5.0, 2.0).mean(-1)
  r = np.exp(clamp(new) - clamp(old))                                # [B, K]
  a = adv[:, None] * 0.9 ** np.array([1, 0])                         # the last step weighs 1
  eps = 0.05 + 0.15 * (np.exp(3.0 * np.array([0, 1])) - 1) / (np.exp(3.0) - 1)
  want = np.mean(np.maximum(-a * r, -a * np.clip(r, 1 - eps, 1 + eps)))
  np.testing.assert_allclose(aux['ratio'], r, rtol=1e-4)
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  sum_then_clamp = np.exp(np.clip(new.sum(-1), -5, 2) - np.clip(old.sum(-1), -5, 2))
  assert np.allclose(sum_then_clamp, 1.0) and not np.allclose(r, 1.0)


def _fpo_policy(losses):
  """A stand-in policy whose regression loss at the stored pairs is its parameters [B, N]."""
  return Policy('stub', frozenset({'chain'}), 1, None,
                cfm_loss_at=lambda params, obs, a, t, eps, space: params)


def test_fpo_ratio_averages_the_losses_before_the_exp():
  old = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 2.0]])
  new = old - np.array([[0.1, 0.2, 0.3], [-0.6, 0.0, 0.0]])
  adv = np.array([1.5, 1.0])
  columns = {'fpo_t': jnp.zeros((2, 3)), 'fpo_eps': jnp.zeros((2, 3, 1)),
             'fpo_loss': jnp.asarray(old, jnp.float32), 'advantage': jnp.asarray(adv, jnp.float32)}
  sig = PG.fpo_ratio(samples=3, clip=0.05, normalize_advantage=False)
  inputs = ActorInputs(jnp.zeros((2, 1)), jnp.zeros((2, 1)), columns, _fpo_policy(new), None, None, None)
  loss, aux = sig.loss(jnp.asarray(new, jnp.float32), inputs, None)
  r = np.exp(old.mean(1) - new.mean(1))                              # e^0.2, e^-0.2
  np.testing.assert_allclose(aux['ratio'], r, rtol=1e-5)
  np.testing.assert_allclose(float(loss), -np.mean(np.minimum(r * adv, np.clip(r, .95, 1.05) * adv)),
                             rtol=1e-5)


def test_fpo_plus_plus_aspo_objective_per_pair():
  old = np.array([[1.0, 2.0], [2.0, 25.0], [0.5, 14.0], [1.0, 0.5]])
  new = np.array([[0.9, 1.0], [2.3, 1.0], [0.4, 1.0], [1.2, 12.5]])
  adv = np.array([2.0, -3.0, -150.0, 1.0])
  columns = {'fpo_t': jnp.zeros((4, 2)), 'fpo_eps': jnp.zeros((4, 2, 1)),
             'fpo_loss': jnp.asarray(old, jnp.float32), 'advantage': jnp.asarray(adv, jnp.float32)}
  sig = PG.fpo_ratio(samples=2, clip=0.05, per_sample=True, objective='aspo',
                     normalize_advantage=False)
  inputs = ActorInputs(jnp.zeros((4, 1)), jnp.zeros((4, 1)), columns, _fpo_policy(new), None,
                       None, None)
  params = jnp.asarray(new, jnp.float32)
  loss, aux = sig.loss(params, inputs, None)
  # 25 → 20: δ 19 → 10, and δ = −12 stays −12 (clamped from above only, as fpopp.py's
  # clamp_ste(min_val=-inf)); a two-sided clamp would make it −10.
  delta = np.minimum(np.minimum(old, 20) - np.minimum(new, 20), 10.0)
  assert delta[3, 1] == -12.0
  r = np.exp(delta)
  a = np.clip(adv, -100, 100)[:, None]
  ppo = np.minimum(r * a, np.clip(r, 0.95, 1.05) * a)
  spo = r * a - np.abs(a) / 0.1 * (r - 1) ** 2
  np.testing.assert_allclose(float(loss), -np.mean(np.where(a >= 0, ppo, spo)), rtol=1e-5)
  np.testing.assert_allclose(aux['ratio'], r, rtol=1e-5)
  # The clamp at 10 is straight-through: the clamped pair (Â < 0, SPO's side) keeps its gradient.
  grad = jax.grad(lambda p: sig.loss(p, inputs, None)[0])(params)
  assert float(jnp.abs(grad[1, 1])) > 0


def test_fpo_plus_plus_pairs_take_t_from_its_range_and_sum_over_root_a():
  """flow-rl fpopp.py's pairs: t = 0.005 + 0.99·u, and ℓ = Σ_A (ε̂ − ε)² / √|A| with
  ε̂ = x_t + (1 − t)·v̂ on the flow x_t = (1 − t)·a + t·ε, computed here by hand."""
  policy = P.rectified_flow()(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (5, SPEC.obs_dim))
  rule = S.sampler(S.euler(), steps=4)
  pairs = lambda **kw: PG.fpo_ratio(samples=64, per_sample=True, objective='aspo', **kw).collect(
      policy, rule, params, obs, jax.random.PRNGKey(2))
  action, flow_rl = pairs(reduction='sqrt', t_range=(0.4, 0.6))
  t, eps = np.asarray(flow_rl['fpo_t'], np.float64), np.asarray(flow_rl['fpo_eps'], np.float64)
  assert t.min() >= 0.4 and t.max() <= 0.6 and len(np.unique(t)) == t.size   # not on a grid
  a = np.broadcast_to(np.asarray(action, np.float64)[:, None], eps.shape)
  x_t = (1 - t[..., None]) * a + t[..., None] * eps
  rows = lambda v: jnp.asarray(v.reshape((-1,) + v.shape[2:]), jnp.float32)
  v_hat = np.asarray(policy.predict(params, rows(np.repeat(np.asarray(obs)[:, None], 64, 1)),
                                    rows(x_t), rows(t)), np.float64).reshape(eps.shape)
  eps_hat = x_t + (1 - t[..., None]) * v_hat
  want = np.sum((eps_hat - eps) ** 2, axis=-1) / np.sqrt(SPEC.act_dim)
  np.testing.assert_allclose(flow_rl['fpo_loss'], want, rtol=2e-4, atol=1e-5)
  _, mean = pairs(t_range=(0.4, 0.6))                       # the same pairs, the mean over |A|
  np.testing.assert_allclose(flow_rl['fpo_loss'], np.sqrt(SPEC.act_dim) * mean['fpo_loss'],
                             rtol=1e-5)
  _, grid = pairs()                                         # no range: the flow's own t ~ U(0, 1)
  assert np.asarray(grid['fpo_t']).min() < 0.4 or np.asarray(grid['fpo_t']).max() > 0.6


@pytest.mark.parametrize('build, words', [
    (lambda: _method(P.rectified_flow(), S.euler(), PG.ppo_clip_chain()),
     ["signal 'ppo_clip_chain'", "'kernel'", "sampler 'euler'", 'noisy_euler']),
    (lambda: _method(P.rectified_flow(), S.noisy_euler(learned_std=True), PG.ppo_clip_chain()),
     ["sampler 'noisy_euler'", "'noise_head'", "policy 'rectified_flow'"]),
    (lambda: _method(P.gaussian(hidden=(8,)), S.direct(), PG.fpo_ratio()),
     ["signal 'fpo_ratio'", "'chain'", "policy 'gaussian'"]),
])
def test_illegal_chain_mixes_are_one_sentence(build, words):
  with pytest.raises(ConfigError) as e:
    compile_method(build(), SPEC, ROLLOUT)
  msg = str(e.value)
  assert '\n' not in msg
  for w in words:
    assert w in msg, (w, msg)


def test_kernel_floors_on_a_rule_without_a_kernel_are_refused():
  with pytest.raises(ConfigError, match="'euler' has none"):
    S.sampler(S.euler(), min_logprob_std=0.1)


def test_learned_noise_std_stays_in_its_range():
  policy = P.rectified_flow(noise_head=(0.1, 0.24))(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  obs = 10.0 * jax.random.normal(jax.random.PRNGKey(1), (64, SPEC.obs_dim))
  x = 10.0 * jax.random.normal(jax.random.PRNGKey(2), (64, SPEC.act_dim))
  std = policy.noise_std(params, obs, x, jnp.linspace(0, 1, 64))
  assert std.shape == (64, SPEC.act_dim)
  assert float(std.min()) >= 0.1 - 1e-6 and float(std.max()) <= 0.24 + 1e-6
  assert float(std.max() - std.min()) > 0.01                         # it depends on its inputs


@pytest.mark.parametrize('scale', [1.0, 4.0])
def test_genpo_log_prob_is_the_change_of_variables_through_its_inverse(scale):
  """x_K = f(x_0) by the coupled steps: the inverse recovers x_0, and log π(x_K) equals
  log N(x_0) − log|det J_f(x_0)| with J_f by central finite differences in float64, whose
  log-determinant is the constant 2·A·K·log p, also with large weights (×4); and no LAPACK
  kernel is called."""
  spec = EnvSpec(obs_dim=2, act_dim=2)
  policy = CF.coupled_flow(steps=3, mix=0.9, hidden=(16,))(spec)
  params = jax.tree_util.tree_map(lambda p: p * scale, policy.init(jax.random.PRNGKey(0)))
  obs = jax.random.normal(jax.random.PRNGKey(1), (3, 2))
  dist, _ = policy.distribution(params, obs)
  x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (3, 4)), np.float64)
  forward = dist.bijector.forward
  x_k = np.asarray(forward(jnp.asarray(x0, jnp.float32)), np.float64)
  np.testing.assert_allclose(dist.bijector.inverse(jnp.asarray(x_k, jnp.float32)), x0,
                             atol=1e-4 * scale ** 2)               # float32 round trip
  with jax.enable_x64(True):
    obs64 = jnp.asarray(obs, jnp.float64)
    params64 = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params)
    f64 = policy.distribution(params64, obs64)[0].bijector.forward
    h = 1e-5
    jac = np.stack([(np.asarray(f64(jnp.asarray(x0 + h * e))) - np.asarray(f64(jnp.asarray(x0 - h * e))))
                    / (2 * h) for e in np.eye(4)], axis=-1)                    # [B, 4, 4]
  want = stats.multivariate_normal(np.zeros(4)).logpdf(x0) - np.linalg.slogdet(jac)[1]
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(x_k, jnp.float32)), want, atol=2e-3)
  np.testing.assert_allclose(np.linalg.slogdet(jac)[1], 2 * 2 * 3 * np.log(0.9),
                             atol=1e-5 * scale ** 2)         # finite differences
  hlo = jax.jit(dist.log_prob).lower(jnp.asarray(x_k, jnp.float32)).as_text()
  assert 'lapack' not in hlo.lower() and 'getrf' not in hlo.lower()
  action, extras = jax.jit(lambda k: PG.ppo_clip().collect(policy, S.sampler(S.direct()), params,
                                                           obs, k))(jax.random.PRNGKey(3))
  z, y = np.split(np.asarray(extras['sample']), 2, axis=-1)
  np.testing.assert_allclose(action, (z + y) / 2, rtol=1e-6)              # the env's action


def test_compression_needs_a_coupled_flow():
  with pytest.raises(ConfigError, match="regularizer 'compression'.*'coupled'.*policy 'gaussian'"):
    compile_method(_method(P.gaussian(hidden=(8,)), S.direct(), PG.ppo_clip())._replace(
        regularizer=CF.compression()), SPEC, ROLLOUT)


def test_dppo_pair_minibatches_score_one_step_each_and_average_to_the_env_step_loss():
  """DPPO's (env step, denoising step) unit: a row scores only its own step, and the loss over
  all T·K pairs equals the loss over the T env steps with whole chains (advantages unnormalized,
  params moved away from the rollout's so ratios differ from 1)."""
  policy, rule, params, obs, chain = _kernel_case(sigma=0.3, steps=3, batch=4)
  chain32 = jnp.asarray(chain, jnp.float32)
  old = _hand_log_probs(policy, params, obs, chain, 0.3, 3)
  moved = jax.tree_util.tree_map(lambda p: p * 1.2, params)
  full, _ = chain_log_probs(rule.kernel, policy, moved, obs, chain32, 3)
  index = jnp.array([2, 0, 1, 2])
  one, _ = chain_log_probs(rule.kernel, policy, moved, obs, chain32, 3, index)
  np.testing.assert_allclose(one[:, 0], full[jnp.arange(4), index], atol=1e-5)

  sig = PG.ppo_clip_chain(clip=0.2, clip_base=0.05, denoising_discount=0.9,
                          normalize_advantage=False)
  adv = jnp.array([1.0, -2.0, 0.5, 3.0])
  cols = {'chain': chain32, 'chain_log_prob': jnp.asarray(old, jnp.float32), 'advantage': adv}
  env_loss, _ = sig.loss(moved, ActorInputs(obs, None, cols, policy, rule, None, None), None)
  n, i = np.divmod(np.arange(12), 3)                                  # every pair once
  pair_cols = {k: v[n] for k, v in cols.items()}
  pair_cols['denoising_index'] = jnp.asarray(i)
  pair_loss, aux = sig.loss(moved, ActorInputs(obs[n], None, pair_cols, policy, rule, None, None),
                            None)
  np.testing.assert_allclose(float(pair_loss), float(env_loss), rtol=1e-5)
  assert aux['ratio'].shape == (12, 1) and not np.allclose(aux['ratio'], 1.0)


def test_rollout_pair_unit_draws_every_pair_once_per_epoch():
  from flowrl.data.rollout import rollout
  src = rollout(steps=2, envs=3, columns={'obs': (1,), 'chain': (4, 1)}, epochs=2,
                minibatches=3, pairs=3)
  state = src.init()
  state = state._replace(data={'obs': jnp.arange(6.0).reshape(2, 3, 1),
                               'chain': jnp.zeros((2, 3, 4, 1))})
  idx = src.batches(state, jax.random.split(jax.random.PRNGKey(0), 6))
  assert idx.shape == (6, 6)                     # 2 epochs × 3 minibatches of 6 of the 18 pairs
  for epoch in (idx[:3], idx[3:]):
    rows = [src.gather(state, b) for b in epoch]
    pairs = {(float(r['obs'][j, 0]), int(r['denoising_index'][j])) for r in rows
             for j in range(len(r['obs']))}
    assert pairs == {(float(s), d) for s in range(6) for d in range(3)}


def test_pair_unit_needs_a_per_step_signal():
  joint = _method(P.rectified_flow(noise_head=(0.1, 0.24)), S.noisy_euler(learned_std=True),
                  PG.ppo_clip_chain(mode='joint'))
  agent = compile_method(joint, SPEC, ROLLOUT)
  with pytest.raises(ConfigError, match="mode='per_step'"):
    rollout_source(steps=8, minibatches=2, unit='denoising_step').make(agent, None, 2)
  with pytest.raises(ConfigError, match='is not one of'):
    rollout_source(unit='pairs')


@pytest.mark.parametrize('name', ['reinflow', 'genpo'])
def test_reference_bc_is_the_squared_gap_of_noise_free_actions(name):
  """ReinFlow's W2 term: zero at the reference itself; after the actor moves, c·mean (a_ref − a)²
  of the chains' means from x_K = 0 (the gaussian-like direct policy: its mode); the reference
  side has no gradient."""
  built = METHODS[name]()
  built = built._replace(regularizer=R.reference_bc(coefficient=2.0))
  agent = compile_method(built, SPEC, ROLLOUT)
  state = agent.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (5, SPEC.obs_dim))
  reg = agent.regularizer
  inputs = lambda ref: ActorInputs(obs, None, {}, agent.policy, agent.sampler, None, None,
                                   reference=ref)
  params = state.actor.params
  assert float(reg.actor_loss((), {}, params, inputs(state.reference), jax.random.PRNGKey(2))) == 0
  moved = jax.tree_util.tree_map(lambda p: p + 0.05, params)
  key = jax.random.PRNGKey(2)
  loss = reg.actor_loss((), {}, moved, inputs(state.reference), key)
  if agent.sampler.kernel is not None:
    zero = jnp.zeros((5, SPEC.act_dim))
    act = lambda p: sample_chain(agent.sampler.kernel, agent.policy, p, obs, key, 4, False, False,
                                 zero)[0]
  else:
    act = lambda p: agent.policy.distribution(p, obs)[0].mode() if name != 'genpo' else \
        S.draw(agent.sampler, agent.policy, p, obs, key, True).action
  want = 2.0 * np.mean(np.square(np.asarray(act(params)) - np.asarray(act(moved))))
  assert want > 1e-6
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  ref_grad = jax.grad(lambda r: reg.actor_loss((), {}, moved, inputs(r), key))(state.reference)
  assert all(float(jnp.max(jnp.abs(g))) == 0 for g in jax.tree_util.tree_leaves(ref_grad))


def _fine_tuned_dppo(fine_tune_steps=2, steps=4, **signal_kw):
  return _method(P.vp_diffusion(train_steps=steps), S.ddpm(), PG.ppo_clip_chain(**signal_kw),
                 steps=steps, min_sampling_std=0.1, min_logprob_std=0.1, noise_clip=3.0,
                 deterministic_eval=True,
                 fine_tune_steps=fine_tune_steps)


def test_fine_tuning_the_last_steps_draws_the_first_with_the_frozen_base():
  """DPPO's K_ft: with K = 4 and K_ft = 2, the frozen reference draws x_4 → x_2 and the trained
  actor x_2 → x_0, in collection and in evaluation; only the trained steps are stored and
  scored, and the first epoch's ratio is 1 once the actor has moved away from the base."""
  agent = compile_method(_fine_tuned_dppo(), SPEC, ROLLOUT)
  state = agent.init(jax.random.PRNGKey(0))
  moved = jax.tree_util.tree_map(lambda p: p * 1.3 + 0.02, state.actor.params)
  state = state._replace(actor=state.actor._replace(params=moved))
  obs = jax.random.normal(jax.random.PRNGKey(1), (6, SPEC.obs_dim))
  key = jax.random.PRNGKey(2)
  action, extras = jax.jit(agent.collect)(state, obs, key)
  kernel = agent.sampler.kernel
  base_only = kernel._replace(fine_tune_steps=0)
  _, base_chain = sample_chain(base_only, agent.policy, state.reference, obs, key, 4, True)
  _, moved_chain = sample_chain(base_only, agent.policy, moved, obs, key, 4, True)
  chain = extras['chain']
  np.testing.assert_allclose(chain[:, :3], base_chain[:, :3], atol=1e-6)   # x_4, x_3, x_2
  assert not np.allclose(chain[:, 3:], base_chain[:, 3:], atol=1e-3)
  assert not np.allclose(chain[:, 1:3], moved_chain[:, 1:3], atol=1e-3)
  # the last two steps are the trained kernel's: x_{k−1} = μ_k + σ_k z from the same noise
  whole = chain_log_probs(base_only, agent.policy, moved, obs, chain, 4)[0]
  assert extras['chain_log_prob'].shape == (6, 2, SPEC.act_dim)
  np.testing.assert_allclose(extras['chain_log_prob'], whole[:, 2:], atol=1e-5)
  # evaluation walks the same split through the means
  evaluate = agent.act(state, obs, key, True)
  want = sample_chain(kernel, agent.policy, ChainParams(moved, state.reference), obs,
                      jax.random.split(key)[0], 4, noise=False)[0]
  np.testing.assert_allclose(evaluate, want, atol=1e-6)
  columns = {**extras, 'obs': obs, 'action': action, 'advantage': jnp.arange(6.0) - 2.5}
  inputs = ActorInputs(obs, action, columns, agent.policy, agent.sampler, None, None)
  _, aux = agent.signal.loss(moved, inputs, key)
  assert aux['ratio'].shape == (6, 2)
  assert float(jnp.max(jnp.abs(aux['ratio'] - 1.0))) < 1e-5


def test_fine_tuned_steps_take_the_discount_and_clip_ramp_over_k_ft():
  """K = 3, K_ft = 2: the loss is the per-step formula over steps 1 and 2 only, with Â_i =
  γ^{K_ft−1−i}·Â and ε_i ramping over i = 0..K_ft−1, and the pair unit draws K_ft pairs per env
  step, each scored against its own stored log-prob."""
  policy, rule, params, obs, chain = _kernel_case(sigma=0.3, steps=3, batch=4)
  rule = rule._replace(kernel=rule.kernel._replace(fine_tune_steps=2))
  moved = jax.tree_util.tree_map(lambda p: p * 1.2, params)
  new = _hand_log_probs(policy, moved, obs, chain, 0.3, 3)[:, 1:]
  old = _hand_log_probs(policy, params, obs, chain, 0.3, 3)[:, 1:]
  adv = np.array([1.0, -2.0, 0.5, 3.0])
  sig = PG.ppo_clip_chain(clip=0.2, clip_base=0.05, denoising_discount=0.9,
                          normalize_advantage=False)
  cols = {'chain': jnp.asarray(chain, jnp.float32), 'chain_log_prob': jnp.asarray(old, jnp.float32),
          'advantage': jnp.asarray(adv, jnp.float32)}
  loss, aux = sig.loss(moved, ActorInputs(obs, None, cols, policy, rule, None, None), None)
  clamp = lambda lp: np.clip(lp, -5.0, 2.0).mean(-1)
  r = np.exp(clamp(new) - clamp(old))                                 # [B, 2]
  a = adv[:, None] * 0.9 ** np.array([1, 0])
  eps = 0.05 + 0.15 * (np.exp(3.0 * np.array([0, 1])) - 1) / (np.exp(3.0) - 1)
  np.testing.assert_allclose(aux['ratio'], r, rtol=1e-4)
  np.testing.assert_allclose(float(loss),
                             np.mean(np.maximum(-a * r, -a * np.clip(r, 1 - eps, 1 + eps))),
                             rtol=1e-4)
  n, i = np.divmod(np.arange(8), 2)                                   # every (env, K_ft) pair
  pair_cols = {k: v[n] for k, v in cols.items()}
  pair_cols['denoising_index'] = jnp.asarray(i)
  pair_loss, pair_aux = sig.loss(moved, ActorInputs(obs[n], None, pair_cols, policy, rule, None,
                                                    None), None)
  np.testing.assert_allclose(pair_aux['ratio'][:, 0], r.reshape(-1), rtol=1e-4)
  np.testing.assert_allclose(float(pair_loss), float(loss), rtol=1e-5)
  agent = compile_method(_fine_tuned_dppo(fine_tune_steps=2, steps=4), SPEC, ROLLOUT)
  src = rollout_source(steps=8, epochs=1, minibatches=2, unit='denoising_step').make(agent, None, 2)
  idx = src.batches(src.init(), jax.random.split(jax.random.PRNGKey(0), 2))
  assert idx.shape == (2, 16) and sorted(np.asarray(idx).ravel()) == list(range(32))  # 8·2·K_ft
  assert agent.extras['chain_log_prob'] == (2, SPEC.act_dim)


def test_fine_tune_steps_outside_the_chain_or_without_a_kernel_are_refused():
  with pytest.raises(ConfigError, match='fine_tune_steps is 4; .* sampler.steps - 1 = 3'):
    S.sampler(S.ddpm(), steps=4, fine_tune_steps=4)
  with pytest.raises(ConfigError, match="fine_tune_steps need a rule .* 'euler' has none"):
    S.sampler(S.euler(), steps=4, fine_tune_steps=2)


@pytest.mark.parametrize('build, words', [
    (lambda: compile_method(_method(P.rectified_flow(noise_head=(0.1, 0.24)),
                                    S.noisy_euler(learned_std=True),
                                    PG.ppo_clip_chain(mode='joint'), fine_tune_steps=2),
                            SPEC, ROLLOUT),
     ["sampler 'noisy_euler'", "'split_chain'", "signal 'ppo_clip_chain'"]),
    (lambda: compile_method(_method(P.rectified_flow(), S.euler_maruyama(), PG.fpo_ratio(),
                                    fine_tune_steps=2), SPEC, ROLLOUT),
     ["'split_chain'", "signal 'fpo_ratio'"]),
])
def test_fine_tune_steps_with_a_signal_that_scores_whole_chains_are_one_sentence(build, words):
  with pytest.raises(ConfigError) as e:
    build()
  assert '\n' not in str(e.value)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_reinflow_noise_bound_follows_its_learn_decay_schedule():
  """σ_max held for 35% of N updates, then cosine down to 0.3·σ_min + 0.7·σ_max (ReinFlow's
  scheduler_simple 'cosine' with its train_ppo_flow_agent settings, N = 100 iterations)."""
  rule = S.noisy_euler(learned_std=True, bound_decay_steps=100)
  lo, hi = 0.10, 0.24
  steps = np.array([0, 20, 35, 50, 67.5, 90, 100, 150])
  top = lo + np.asarray(jax.vmap(rule.kernel.noise_bound)(jnp.asarray(steps))) * (hi - lo)
  low = 0.3 * lo + 0.7 * hi
  want = low + (hi - low) * 0.5 * (1 + np.cos(np.clip((steps - 35) / 65, 0, 1) * np.pi))
  np.testing.assert_allclose(top, want, rtol=1e-6)
  with pytest.raises(ConfigError, match='learned_std=True'):
    S.noisy_euler(bound_decay_steps=100)
  with pytest.raises(ConfigError, match=r'bound_hold is 1.0; it must be in \[0, 1\)'):
    S.noisy_euler(learned_std=True, bound_decay_steps=100, bound_hold=1.0)


def test_a_bounded_noise_head_keeps_its_position_in_a_narrower_range():
  """ReinFlow's set_noise_range: log σ² = lo + (hi_b − lo)·u keeps u = (tanh h + 1)/2 and moves
  only hi_b = log (σ_min + b(σ_max − σ_min))²."""
  policy = P.rectified_flow(noise_head=(0.1, 0.24))(SPEC)
  params = policy.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (5, SPEC.obs_dim))
  x = jax.random.normal(jax.random.PRNGKey(2), (5, SPEC.act_dim))
  t = jnp.full((5,), 0.5)
  lo = 2 * np.log(0.1)
  u = lambda s, top: (2 * np.log(np.asarray(s, np.float64)) - lo) / (2 * np.log(top) - lo)
  full = policy.noise_std(params, obs, x, t)
  bound = jnp.array([1.0, 0.7, 0.7, 0.3, 0.0])                 # per row
  narrow = policy.noise_std(params, obs, x, t, bound)
  top = 0.1 + np.asarray(bound)[:, None] * 0.14
  np.testing.assert_allclose(narrow[:1], full[:1], rtol=1e-6)
  np.testing.assert_allclose(u(narrow[1:4], top[1:4]), u(full[1:4], 0.24), rtol=1e-5)
  np.testing.assert_allclose(narrow[4], 0.1, rtol=1e-6)
  assert np.all(np.asarray(narrow) <= top + 1e-7)


def test_reinflow_chains_are_rescored_with_the_bound_they_were_drawn_with():
  """Late in the schedule a rollout stores the bound it was drawn with; the first epoch's ratio
  is 1 with it, and scoring with the full range instead would not be."""
  built = _method(P.rectified_flow(noise_head=(0.1, 0.24)),
                  S.noisy_euler(learned_std=True, bound_decay_steps=100),
                  PG.ppo_clip_chain(mode='joint', clip=0.01, log_prob_min=-1.0,
                                    log_prob_max=1.0), noise_clip=3.0)
  agent = compile_method(built, SPEC, ROLLOUT)
  state = agent.init(jax.random.PRNGKey(0))
  state = state._replace(step=jnp.asarray(90, jnp.int32))
  obs = jax.random.normal(jax.random.PRNGKey(1), (8, SPEC.obs_dim))
  action, extras = jax.jit(agent.collect)(state, obs, jax.random.PRNGKey(2))
  b = float(agent.sampler.kernel.noise_bound(90))
  assert b < 0.8 and agent.extras['noise_bound'] == ()
  np.testing.assert_allclose(extras['noise_bound'], np.full(8, b), rtol=1e-6)
  columns = {**extras, 'obs': obs, 'action': action, 'advantage': jnp.arange(8.0) - 3.5}
  inputs = ActorInputs(obs, action, columns, agent.policy, agent.sampler, None, None)
  _, aux = agent.signal.loss(state.actor.params, inputs, jax.random.PRNGKey(3))
  assert float(jnp.max(jnp.abs(aux['ratio'] - 1.0))) < 1e-5
  full = {k: v for k, v in columns.items() if k != 'noise_bound'}
  _, aux_full = agent.signal.loss(state.actor.params, inputs._replace(columns=full),
                                  jax.random.PRNGKey(3))
  assert float(jnp.max(jnp.abs(aux_full['ratio'] - 1.0))) > 1e-3
