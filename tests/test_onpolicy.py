"""On-policy pieces against their formulas: the first epoch's PPO ratio is exactly 1 (the
log-prob stored at collection and the one the loss recomputes come from the same distribution),
the clipped surrogate and the clipped value loss on tiny cases, and the one-sentence refusals of
mixes across paradigms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl.compose import compile_method, method
from flowrl.data import REPLAY, rollout_source
from flowrl.errors import ConfigError
from flowrl.primitives import critic, parameterization as P, regularizer as R, sampler as S
from flowrl.primitives import policy_gradient as PG, signal as G
from flowrl.primitives.base import ActorInputs, EnvSpec

SPEC = EnvSpec(obs_dim=3, act_dim=6)
ROLLOUT = rollout_source(steps=8, epochs=2, minibatches=2)


def ppo(**kw):
  return method(P.gaussian(hidden=(8,)), S.sampler(S.direct()), PG.ppo_clip(**kw),
                R.entropy_bonus(), critic.state_value(hidden=(8,)), name='ppo')


def test_the_first_epochs_ratio_is_exactly_one():
  agent = compile_method(ppo(), SPEC, ROLLOUT)
  state = agent.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (32, SPEC.obs_dim))
  action, extras = agent.collect(state, obs, jax.random.PRNGKey(2))
  assert float(jnp.max(jnp.abs(action))) > 1.0          # unsquashed: the env clips, not the policy
  np.testing.assert_allclose(extras['value'], agent.value(state, obs))
  columns = {'obs': obs, 'action': action, 'log_prob': extras['log_prob'],
             'advantage': jax.random.normal(jax.random.PRNGKey(3), (32,))}
  inputs = ActorInputs(obs, action, columns, agent.policy, agent.sampler, None, None)
  _, aux = agent.signal.loss(state.actor.params, inputs, jax.random.PRNGKey(4))
  assert float(jnp.max(jnp.abs(aux['ratio'] - 1.0))) < 1e-5
  assert abs(float(aux['approx_kl'])) < 1e-6 and float(aux['clip_fraction']) == 0.0


def test_ppo_clip_equals_the_clipped_surrogate_by_hand():
  policy = P.gaussian(hidden=(4,))(EnvSpec(2, 1))
  params = policy.init(jax.random.PRNGKey(0))
  obs = jnp.array([[0.1, -0.2], [0.3, 0.0], [-0.5, 0.4], [1.0, 1.0]])
  action = jnp.array([[0.5], [-1.5], [0.0], [2.0]])
  dist, _ = policy.distribution(params, obs)
  now = np.asarray(dist.log_prob(action), np.float64)
  old = now - np.array([0.5, -0.5, 0.05, 0.0])           # ratios e^0.5, e^-0.5, e^0.05, 1
  adv = np.array([1.0, -2.0, 3.0, -1.0])
  columns = {'log_prob': jnp.asarray(old, jnp.float32), 'advantage': jnp.asarray(adv, jnp.float32)}
  for normalize in (False, True):
    sig = PG.ppo_clip(clip=0.2, normalize_advantage=normalize)
    loss, aux = sig.loss(params, ActorInputs(obs, action, columns, policy, None, None, None), None)
    a = (adv - adv.mean()) / (adv.std() + 1e-8) if normalize else adv
    r = np.exp(now - old)
    want = -np.mean(np.minimum(r * a, np.clip(r, 0.8, 1.2) * a))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(aux['clip_fraction']), 0.5)      # e^±0.5 are clipped
    np.testing.assert_allclose(float(aux['approx_kl']), np.mean((r - 1) - np.log(r)), rtol=1e-4)


def test_the_clipped_value_loss_by_hand():
  c = critic.state_value(hidden=(4,), clip=0.2, coefficient=0.5)(EnvSpec(2, 1))
  params = c.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
  v = np.asarray(c.values(params, obs, None)[0], np.float64)
  old = v + np.array([0.5, -0.5, 0.1, 0.0, 1.0])
  ret = v + np.array([1.0, 1.0, -1.0, 0.3, 0.0])
  loss, _ = c.loss(params, {'obs': obs, 'return': jnp.asarray(ret, jnp.float32),
                            'value': jnp.asarray(old, jnp.float32)})
  clipped = old + np.clip(v - old, -0.2, 0.2)
  want = 0.5 * np.mean(np.maximum((v - ret) ** 2, (clipped - ret) ** 2))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  plain = critic.state_value(hidden=(4,), clip=0.0, coefficient=0.5)(EnvSpec(2, 1))
  loss, _ = plain.loss(params, {'obs': obs, 'return': jnp.asarray(ret, jnp.float32),
                                'value': jnp.asarray(old, jnp.float32)})
  np.testing.assert_allclose(float(loss), 0.5 * np.mean((v - ret) ** 2), rtol=1e-5)


@pytest.mark.parametrize('mix, source, words', [
    (dict(critic=critic.ensemble_q(hidden=(8,))), ROLLOUT, ["signal 'ppo_clip'", "'v'",
                                                           "critic 'ensemble_q'", 'state_value']),
    (dict(), REPLAY, ["signal 'ppo_clip'", "'rollout'", "source 'replay_source'",
                      'train.source = @rollout_source()']),
    (dict(signal=G.reparam_q(), regularizer=R.no_regularizer()), ROLLOUT,
     ["signal 'reparam_q'", "critic 'state_value'", "'q'"]),
    (dict(signal=G.reparam_q(), regularizer=R.no_regularizer(),
          critic=critic.ensemble_q(hidden=(8,))), ROLLOUT,
     ["critic 'ensemble_q'", "'transitions'", "source 'rollout_source'", '@replay_source()']),
])
def test_mixes_across_paradigms_are_one_sentence(mix, source, words):
  with pytest.raises(ConfigError) as e:
    compile_method(ppo()._replace(**mix), SPEC, source)
  msg = str(e.value)
  assert msg.count('.') >= 1 and '\n' not in msg
  for w in words:
    assert w in msg, (w, msg)


def test_a_rollout_through_the_driver_has_hand_computed_gae_across_resets(tmp_path):
  """One rollout of 64 steps on InvertedPendulum-v5 (a Gaussian policy at σ = 1 drops the pole
  within a few steps: terminations), with a time limit forced at env step 30 (a truncation), both
  followed by the vector env's same-step autoreset. The stored advantages equal GAE computed here
  by hand: a termination stops bootstrapping, the truncation bootstraps from V(its final
  observation) and not from the next episode's first, which is the next row's obs. The learning
  rates are ~0, so the critic that prepared the rollout is the one read here."""
  from flowrl import run as cli
  from flowrl.runtime import checkpoint, driver
  from flowrl.compose.step import init_loop, make_source
  cli.parse_config(['gin/ppo.gin'], [
      'env.name="InvertedPendulum-v5"', 'train.total_frames=64', 'rollout_source.steps=64',
      'rollout_source.minibatches=4', 'rollout_source.epochs=1', 'train.eval_every=1000',
      'train.checkpoint_every=64', 'actor_optimizer.learning_rate=1e-30',
      'critic_optimizer.learning_rate=1e-30', 'gaussian.hidden=(8,)', 'state_value.hidden=(8,)',
      'Method.normalize_obs=False',    # statistics that move after the burst would change V here
      'rollout_source.normalize_reward=False'])   # GAE on the env's own rewards
  agent, cfg, env_name = cli.build()
  real_make_env, seen = driver.make_env, []

  def make(name, seed):
    env = real_make_env(name, seed)
    if seed == cfg.seed:
      step = env.step

      def forced(action):
        obs, r, term, trunc, info = step(action)
        seen.append(obs)
        return (obs, r, term, True, info) if len(seen) == 30 and not term else (obs, r, term, trunc, info)
      env.step = forced
    return env

  driver.make_env = make
  try:
    driver.run(agent, cfg, env_name, str(tmp_path), progress=False)
  finally:
    driver.make_env = real_make_env
  mngr = checkpoint.manager(str(tmp_path))
  try:
    loop, _ = checkpoint.restore(mngr, jax.eval_shape(
        lambda: init_loop(agent, make_source(agent, cfg), cfg.seed)))
  finally:
    mngr.close()
  d = {k: np.asarray(v)[:, 0] for k, v in loop.data.data.items()}           # env 0: [T, ...]
  term, trunc = d['terminated'], d['truncated']
  assert term.sum() >= 2 and trunc[29] == 1 and term[29] == 0
  np.testing.assert_allclose(d['next_obs'][29], seen[29], atol=1e-6)        # the final obs
  assert not np.allclose(d['obs'][30], seen[29])                            # a new episode
  v_next = np.asarray(agent.value(loop.agent, jnp.asarray(d['next_obs'])), np.float64)
  gamma, lam = 0.99, 0.95
  adv, running = np.zeros(64), 0.0
  for t in reversed(range(64)):
    done = max(term[t], trunc[t])
    bootstrap = v_next[t] if (not done or trunc[t]) and not term[t] else 0.0
    delta = d['reward'][t] + gamma * bootstrap - d['value'][t]
    running = delta + gamma * lam * (1 - done) * running
    adv[t] = running
  np.testing.assert_allclose(np.asarray(loop.data.advantages)[:, 0], adv, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('binding, words', [
    ('rollout_source.minibatches=3', '2048 rows do not split into 3 equal minibatches'),
    ('train.random_frames=1000', 'it takes no uniform warm-up')])
def test_rollout_settings_that_cannot_work_are_refused_at_start(binding, words):
  from flowrl import run as cli
  cli.parse_config(['gin/ppo.gin'], [binding])
  with pytest.raises(ConfigError, match=words):
    cli.build()


def test_running_obs_statistics_equal_numpys_over_every_batch_merged():
  from flowrl.primitives import normalization as N
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, size=(n, 4)).astype(np.float32) for n in (5, 17, 1, 40)]
  norm = N.init(4)
  for i, b in enumerate(batches):
    norm = N.observe(norm, jnp.asarray(b))
    if i % 2:                                          # merged every other batch, as bursts do
      norm = N.merge(norm)
  norm = N.merge(N.merge(norm))                        # a merge of nothing changes nothing
  every = np.concatenate(batches)
  np.testing.assert_allclose(norm.stats.mean, every.mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(norm.stats.var, every.var(0), rtol=1e-3)
  np.testing.assert_allclose(float(norm.stats.count), len(every) + 1e-4, rtol=1e-6)
  x = jnp.asarray(every[:3])
  np.testing.assert_allclose(N.normalize(norm, x), np.clip(
      (every[:3] - norm.stats.mean) / np.sqrt(norm.stats.var + 1e-8), -10, 10), rtol=1e-5)


def _frame_step(m, source_choice, frames):
  """(agent, jitted frame step, initial loop) of method `m` on `source_choice`, one env."""
  from flowrl.compose import step as loop_step
  agent = compile_method(m, SPEC, source_choice)
  cfg = loop_step.TrainConfig(total_frames=frames, random_frames=0, learning_starts=0,
                              source=source_choice)
  source = loop_step.make_source(agent, cfg)
  return (agent, jax.jit(loop_step.make_frame_step(agent, source, cfg)),
          loop_step.init_loop(agent, source, 0))


def test_with_obs_normalization_each_rollout_trains_on_the_statistics_it_was_collected_with():
  """PPO with Method.normalize_obs through the step: statistics move only after a burst (to the
  rollout's observations), so every burst's first minibatch has ratio 1 exactly."""
  agent, step, loop = _frame_step(ppo()._replace(normalize_obs=True), ROLLOUT, 32)
  rng = np.random.default_rng(1)
  obs = (5.0 + 3.0 * rng.normal(size=(17, 1, SPEC.obs_dim))).astype(np.float32)
  z = lambda *shape: np.zeros((1,) + shape, np.float32)
  row = lambda t, a: {'obs': obs[t], 'action': np.asarray(a), 'reward': z(), 'next_obs': obs[t + 1],
                      'terminated': z(), 'truncated': z()}
  loop, action, _ = step(loop, row(0, z(SPEC.act_dim)), jnp.bool_(False), obs[0])
  bursts = []
  for t in range(16):
    loop, action, metrics = step(loop, row(t, action), jnp.bool_(True), obs[t + 1])
    if float(metrics['updated'][0]):
      bursts.append((t, metrics))
      seen = obs[:t + 1, 0]
      np.testing.assert_allclose(loop.agent.obs_norm.stats.mean, seen.mean(0), rtol=1e-3)
  assert [t for t, _ in bursts] == [7, 15]
  for _, m in bursts:
    assert abs(float(m['actor/ratio'][0]) - 1.0) < 1e-5
    assert abs(float(m['actor/approx_kl'][0])) < 1e-6


def test_reward_normalization_divides_by_the_running_std_of_discounted_returns():
  """Two rollouts through `normalized_rewards` against a hand computation of gymnasium's
  NormalizeReward statistics: G ← γ·G·(1 − terminated) + r per env, carried across rollouts, the
  variance of every G seen (prior count 1e-4, variance 1), rewards / sqrt(var + 1e-8) clipped."""
  from flowrl.data.rollout import normalized_rewards
  from flowrl.primitives import normalization as N
  rng = np.random.default_rng(0)
  gamma, g, stats, seen = 0.9, jnp.zeros(3), N.init(1), []
  hand_g = np.zeros(3)
  for _ in range(2):
    r = rng.normal(2.0, 3.0, size=(5, 3)).astype(np.float32)
    term = (rng.uniform(size=(5, 3)) < 0.2).astype(np.float32)
    scaled, g, stats = normalized_rewards(jnp.asarray(r), jnp.asarray(term), g, stats, gamma)
    for t in range(5):
      hand_g = hand_g * gamma * (1 - term[t]) + r[t]
      seen.extend(hand_g)
    np.testing.assert_allclose(g, hand_g, rtol=1e-5)
    x = np.asarray(seen, np.float64)
    count = len(x) + 1e-4                                  # gymnasium's RunningMeanStd prior
    var = (1e-4 * 1.0 + np.sum((x - x.mean()) ** 2) + 1e-4 * len(x) / count * x.mean() ** 2) / count
    np.testing.assert_allclose(float(stats.stats.var[0]), var, rtol=1e-4)
    np.testing.assert_allclose(scaled, np.clip(r / np.sqrt(var + 1e-8), -10, 10), rtol=1e-4)


def test_init_from_starts_a_new_run_from_another_runs_networks(tmp_path):
  """A PPO run's checkpoint starts a second run (learning rates ~0, so its parameters stay put):
  after its first rollout the second run's actor, critic, frozen reference actor (for its
  reference_bc term) and evaluation actor (an EMA, 0.9 of it the start) are the first run's and its
  observation statistics continue the first's; a policy of other widths is refused in one
  sentence naming the parameter."""
  from flowrl import run as cli
  from flowrl.compose.step import init_loop, make_source
  from flowrl.runtime import checkpoint, driver
  from flowrl.runtime.init_from import read_checkpoint, transplant
  base = ['env.name="InvertedPendulum-v5"', 'rollout_source.steps=64', 'rollout_source.minibatches=4',
          'rollout_source.epochs=1', 'train.eval_every=1000', 'train.checkpoint_every=64',
          'train.total_frames=64', 'gaussian.hidden=(8,)', 'state_value.hidden=(8,)']

  def restored(run_dir, agent, cfg):
    mngr = checkpoint.manager(run_dir)
    try:
      return checkpoint.restore(mngr, jax.eval_shape(
          lambda: init_loop(agent, make_source(agent, cfg), cfg.seed)))[0].agent
    finally:
      mngr.close()

  cli.parse_config(['gin/ppo.gin'], base)
  agent, cfg, env_name = cli.build()
  driver.run(agent, cfg, env_name, str(tmp_path / 'a'), progress=False)
  first = restored(str(tmp_path / 'a'), agent, cfg)
  cli.parse_config(['gin/ppo.gin'], base + ['train.seed=5', 'actor_optimizer.learning_rate=1e-30',
                                            'critic_optimizer.learning_rate=1e-30',
                                            'Method.regularizer=@reference_bc()',
                                            'reference_bc.coefficient=1.0', 'Method.eval_ema=0.9'])
  agent, cfg, env_name = cli.build()
  driver.run(agent, cfg, env_name, str(tmp_path / 'b'), progress=False,
             init_from=str(tmp_path / 'a'))
  second = restored(str(tmp_path / 'b'), agent, cfg)
  for a, b in ((first.actor.params, second.actor.params),
               (first.critic.params, second.critic.params),
               (first.actor.params, second.reference),       # what a BC-to-pretrained term pulls to
               (first.actor.params, second.eval_actor.params)):   # 0.9 of it the loaded actor
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a, b)
  # the statistics continue the first run's: its 64 observations, then this run's 64
  np.testing.assert_allclose(second.obs_norm.stats.count, float(first.obs_norm.stats.count) + 64)
  cli.parse_config(['gin/ppo.gin'], base + ['gaussian.hidden=(16,)'])
  other, _, _ = cli.build()
  with pytest.raises(ConfigError) as e:
    transplant(other.init(jax.random.PRNGKey(0)), read_checkpoint(str(tmp_path / 'a'))[0],
               str(tmp_path / 'a'), 0)
  assert 'shape' in str(e.value) and 'linear_0' in str(e.value) and '\n' not in str(e.value)


def test_the_evaluation_actor_averages_the_actor_once_per_rollout_and_acts_deterministically():
  """FPO++'s EMA evaluation actor (Method.eval_ema = 0.5 after 1 burst), with observation
  normalization (both settle after a burst): after three rollouts of 8 steps it is θ1, then
  (θ1 + θ2)/2, then (θ̄2 + θ3)/2 of the actors θi after each rollout. Deterministic actions
  are the plain agent's with θ̄, behaviour actions and collection the plain agent's with θ."""
  m = ppo()._replace(normalize_obs=True, eval_ema=0.5, eval_ema_warmup=1)
  agent, step, loop = _frame_step(m, ROLLOUT, 24)
  plain = compile_method(m._replace(eval_ema=0.0), SPEC, ROLLOUT)
  rng = np.random.default_rng(4)
  obs = (2.0 + rng.normal(size=(25, 1, SPEC.obs_dim))).astype(np.float32)
  z = lambda *shape: np.zeros((1,) + shape, np.float32)
  row = lambda t, a: {'obs': obs[t], 'action': np.asarray(a), 'reward': rng.normal(size=(
      1,)).astype(np.float32), 'next_obs': obs[t + 1], 'terminated': z(), 'truncated': z()}
  loop, action, _ = step(loop, row(0, z(SPEC.act_dim)), jnp.bool_(False), obs[0])
  expected, tree = None, jax.tree_util.tree_map
  for t in range(24):
    loop, action, metrics = step(loop, row(t, action), jnp.bool_(True), obs[t + 1])
    if float(metrics['updated'][0]):
      live = loop.agent.actor.params
      expected = live if expected is None else tree(lambda e, x: 0.5 * e + 0.5 * x, expected, live)
      tree(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
           loop.agent.eval_actor.params, expected)
  state = loop.agent
  assert int(state.eval_actor.bursts) == 3 and float(state.obs_norm.stats.count) > 24
  assert not np.allclose(jax.tree_util.tree_leaves(expected)[0],
                         jax.tree_util.tree_leaves(state.actor.params)[0])
  key, x = jax.random.PRNGKey(5), jnp.asarray(obs[:4, 0])
  averaged = state._replace(actor=state.actor._replace(params=state.eval_actor.params))
  np.testing.assert_allclose(agent.act(state, x, key, True), plain.act(averaged, x, key, True),
                             rtol=1e-6)
  assert not np.allclose(agent.act(state, x, key, True), plain.act(state, x, key, True))
  np.testing.assert_allclose(agent.act(state, x, key), plain.act(state, x, key), rtol=1e-6)
  np.testing.assert_allclose(agent.collect(state, x, key)[0], plain.collect(state, x, key)[0],
                             rtol=1e-6)


def test_kl_early_stop_skips_the_rest_of_the_burst_and_keeps_counters_in_lockstep():
  """target_kl = 1e-9: the burst's first minibatch has KL 0 (ratio 1) and runs, the second runs
  and reports KL > 1e-9, the remaining two are skipped. The update counter still counts all four
  slots (it stays unbatched across seeds); Adam counts the two steps taken."""
  source_choice = rollout_source(steps=8, epochs=2, minibatches=2, target_kl=1e-9)
  agent, step, loop = _frame_step(ppo(), source_choice, 8)
  rng = np.random.default_rng(2)
  obs = rng.normal(size=(9, 1, SPEC.obs_dim)).astype(np.float32)
  z = lambda *shape: np.zeros((1,) + shape, np.float32)
  loop, action, _ = step(loop, {'obs': obs[0], 'action': z(SPEC.act_dim), 'reward': z(),
                                'next_obs': obs[1], 'terminated': z(), 'truncated': z()},
                         jnp.bool_(False), obs[0])
  for t in range(8):
    row = {'obs': obs[t], 'action': np.asarray(action), 'reward': rng.normal(size=(1,)).astype(
        np.float32), 'next_obs': obs[t + 1], 'terminated': z(), 'truncated': z()}
    loop, action, metrics = step(loop, row, jnp.bool_(True), obs[t + 1])
  np.testing.assert_array_equal(metrics['updated'], [1.0, 1.0, 0.0, 0.0])
  assert float(metrics['actor/approx_kl'][1]) > 1e-9 and int(loop.agent.step) == 4
  counts = [int(x) for x in jax.tree_util.tree_leaves(loop.agent.actor.opt_state)
            if getattr(x, 'dtype', None) == jnp.int32]
  assert counts and set(counts) == {2}


def test_adaptive_kl_learning_rate_follows_the_rule_and_steers_the_step():
  from flowrl.compose.method import actor_optimizer, adapt_to_kl
  import optax
  params = {'w': jnp.ones(3)}
  opt = actor_optimizer(learning_rate=1e-3, kl_target=0.01)
  state = opt.init(params)
  lr = lambda s: float(s.hyperparams['learning_rate'])
  np.testing.assert_allclose(lr(adapt_to_kl(state, 0.05)), 1e-3 / 1.5, rtol=1e-6)   # > 2·target
  np.testing.assert_allclose(lr(adapt_to_kl(state, 0.001)), 1.5e-3, rtol=1e-6)      # < target/2
  np.testing.assert_allclose(lr(adapt_to_kl(state, 0.01)), 1e-3, rtol=1e-6)         # in between
  low = state._replace(hyperparams={**state.hyperparams, 'learning_rate': jnp.float32(1.2e-5)})
  np.testing.assert_allclose(lr(adapt_to_kl(low, 1.0)), 1e-5, rtol=1e-6)            # floor
  grads = {'w': jnp.array([0.5, -1.0, 2.0])}
  step = lambda s: np.asarray(opt.update(grads, s, params)[0]['w'])
  np.testing.assert_allclose(step(adapt_to_kl(state, 0.05)), step(state) / 1.5, rtol=1e-5)
  plain = actor_optimizer(learning_rate=1e-3)
  assert adapt_to_kl(plain.init(params), 1.0) is not None        # no kl_target: left as is
  np.testing.assert_allclose(np.asarray(optax.apply_updates(params, opt.update(
      grads, state, params)[0])['w']), 1.0 - 1e-3 * np.sign([0.5, -1.0, 2.0]), rtol=1e-4)


def test_per_rollout_advantage_normalization_keeps_raw_returns():
  from flowrl.data.rollout import rollout
  cols = {'obs': (2,), 'action': (1,), 'reward': (), 'next_obs': (2,), 'terminated': (),
          'truncated': (), 'value': ()}
  rng = np.random.default_rng(3)
  rows = [{k: jnp.asarray(rng.normal(size=(3,) + s), jnp.float32) for k, s in cols.items()}
          for _ in range(4)]
  for r in rows:
    r['terminated'] = r['truncated'] = jnp.zeros(3)
  value_fn = lambda o: jnp.sum(o, -1)
  out = {}
  for flag in (False, True):
    src = rollout(4, 3, cols, normalize_advantage=flag, minibatches=2)
    data = src.init()
    for r in rows:
      data = src.add(data, r)
    out[flag] = src.prepare(data, value_fn)
  np.testing.assert_allclose(out[True].returns, out[False].returns)
  raw = np.asarray(out[False].advantages)
  np.testing.assert_allclose(out[True].advantages, (raw - raw.mean()) / (raw.std() + 1e-8),
                             rtol=1e-5, atol=1e-6)


def test_joint_clip_scales_both_networks_steps_by_one_factor_from_their_joint_norm():
  """Adam with ε = 1e6 and lr = 1e6 steps by ≈ −g (its first step is lr·g/(|g| + ε)), so the
  parameter change shows the clipped gradient. With joint_clip both networks' changes are the
  unclipped ones times m/‖(g_actor, g_critic)‖, the torch clip_grad_norm_ over all parameters."""
  import gin
  from jax.flatten_util import ravel_pytree
  obs = jax.random.normal(jax.random.PRNGKey(1), (16, SPEC.obs_dim))

  def steps(max_norm):
    gin.clear_config()
    for opt in ('actor_optimizer', 'critic_optimizer'):
      gin.bind_parameter(f'{opt}.learning_rate', 1e6)
      gin.bind_parameter(f'{opt}.eps', 1e6)
    gin.bind_parameter('joint_clip.max_grad_norm', max_norm)
    agent = compile_method(ppo(), SPEC, ROLLOUT)
    state = agent.init(jax.random.PRNGKey(0))
    action, extras = agent.collect(state, obs, jax.random.PRNGKey(2))
    columns = {'obs': obs, 'action': action, **extras,
               'advantage': jax.random.normal(jax.random.PRNGKey(3), (16,)),
               'return': jax.random.normal(jax.random.PRNGKey(4), (16,)) + 3.0}
    new, _, _ = agent.update(state, columns, jax.random.PRNGKey(5))
    delta = lambda new_p, old_p: np.asarray(ravel_pytree(new_p)[0] - ravel_pytree(old_p)[0])
    return (delta(new.actor.params, state.actor.params),
            delta(new.critic.params, state.critic.params))

  raw_actor, raw_critic = steps(0.0)
  norm = np.sqrt(np.sum(raw_actor ** 2) + np.sum(raw_critic ** 2))
  assert norm > 0.1 and np.sum(raw_critic ** 2) > np.sum(raw_actor ** 2)   # the value sets it
  clipped_actor, clipped_critic = steps(0.1)
  np.testing.assert_allclose(clipped_actor, raw_actor * 0.1 / norm, rtol=1e-3, atol=1e-7)
  np.testing.assert_allclose(clipped_critic, raw_critic * 0.1 / norm, rtol=1e-3, atol=1e-7)
  big_actor, _ = steps(10 * norm)                        # under the threshold: unchanged
  np.testing.assert_allclose(big_actor, raw_actor, rtol=1e-5, atol=1e-7)


def test_joint_clip_is_refused_off_policy():
  import gin
  gin.bind_parameter('joint_clip.max_grad_norm', 0.5)
  sac = method(P.tanh_gaussian(hidden=(8,)), S.sampler(S.direct()), G.reparam_q(),
               R.no_regularizer(), critic.ensemble_q(hidden=(8,)), name='sac')
  with pytest.raises(ConfigError, match='off-policy.*actor_optimizer.max_grad_norm'):
    compile_method(sac, SPEC)
