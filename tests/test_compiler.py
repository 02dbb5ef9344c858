"""The compiler (`compose/agent.py`) and the step compiler (`compose/step.py`) against a
hand-stepped reference, with stub primitives whose every effect is visible:

  policy   a = obs @ W (a linear map, no squashing), through a stub sampler
  critic   Q_e(s, a) = [s, a] · v_e, e = 1, 2, squared TD loss; its extra counts its steps
  signal   −mean min_e Q_e(s, π(s)); improved_action = replay action + 1; its state counts refreshes
  regul.   shifts target actions by +0.1 (and nothing else); its state counts its updates

Two updates with actor_every = 2, target_actor, τ = 0.1, γ = 0.9, reward_scale = 2: the first
runs critic then actor, regularizer, signal refresh and both target EMAs; the second runs the
critic only. The reference uses optax.adam for the optimizer steps (as the compiler does) and
writes everything else out.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowrl.compose import step as loop_step
from flowrl.compose.agent import compile_method
from flowrl.control_flow import cond_or_pass
from flowrl.compose.method import Method
from flowrl.primitives.base import Critic, EnvSpec, Policy, Regularizer, SampleOut, Sampler, Signal

OBS, ACT, B = 3, 2, 4
TAU, GAMMA, SCALE, SHIFT = 0.1, 0.9, 2.0, 0.1
# Adam with a large ε, bound for both optimizers: its first step -lr·g/(|g| + ε) then depends on
# the gradient's size, not only its sign, so reading a stale critic would show.
LR, EPS = 0.1, 1.0


def stub_policy(spec):
  init = lambda key: {'w': jax.random.normal(key, (spec.obs_dim, spec.act_dim))}
  return Policy('stub', frozenset(), spec.act_dim, init)


def stub_sample(policy, params, obs, key, steps, deterministic, q=None):
  return SampleOut(obs @ params['w'])


STUB_SAMPLER = Sampler('stub', frozenset({'differentiable'}), frozenset(), stub_sample, steps=1)


def q_values(params, obs, act):
  return jnp.einsum('bi,ei->eb', jnp.concatenate([obs, act], -1), params['v'])


def stub_critic(spec):
  def loss(params, target_params, extra, batch, next_action, bonus, discount, key):
    y = batch.reward + discount * (jnp.min(q_values(target_params, batch.next_obs, next_action), 0)
                                   + bonus)
    err = q_values(params, batch.obs, batch.action) - y
    return jnp.mean(err ** 2), (extra + 1, {'td': jnp.mean(err ** 2)})

  init = lambda key: {'v': jax.random.normal(key, (2, spec.obs_dim + spec.act_dim))}
  return Critic('stub', init, lambda: jnp.zeros((), jnp.int32), q_values, loss)


def signal_loss(params, inputs, key):
  action = stub_sample(None, params, inputs.obs, key, 1, False).action
  return -jnp.mean(jnp.min(inputs.q(inputs.obs, action), 0)), {
      'improved_action': inputs.action + 1.0}


STUB_SIGNAL = Signal('stub', frozenset(), signal_loss, columns=('improved_action',),
                     init=lambda params: {'refreshes': jnp.zeros((), jnp.int32),
                                          'last_step': -jnp.ones((), jnp.int32)},
                     refresh=lambda s, params, step: {'refreshes': s['refreshes'] + 1,
                                                      'last_step': jnp.asarray(step, jnp.int32)})


def stub_regularizer(spec):
  return Regularizer(
      'stub', frozenset(), init=lambda: {'updates': jnp.zeros((), jnp.int32)},
      actor_loss=lambda state, aux, params, inputs, key: 0.0,
      target_bonus=lambda state, log_prob: 0.0,
      perturb=lambda state, action, key, role: action + SHIFT if role == 'target' else action,
      update=lambda state, step, aux, sample_many, key: ({'updates': state['updates'] + 1}, {}))


METHOD = Method(stub_policy, STUB_SAMPLER, STUB_SIGNAL, stub_regularizer, stub_critic,
                actor_every=2, target_actor=True, tau=TAU, gamma=GAMMA, reward_scale=SCALE,
                name='stub')


@pytest.fixture(scope='module')
def agent():
  import gin
  for opt in ('actor_optimizer', 'critic_optimizer'):
    gin.bind_parameter(f'{opt}.learning_rate', LR)
    gin.bind_parameter(f'{opt}.eps', EPS)
  try:
    return compile_method(METHOD, EnvSpec(OBS, ACT))
  finally:
    gin.clear_config()


def batch_of(seed):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  return {'obs': jax.random.normal(k[0], (B, OBS)), 'action': jax.random.normal(k[1], (B, ACT)),
          'reward': jax.random.normal(k[2], (B,)), 'next_obs': jax.random.normal(k[3], (B, OBS)),
          'terminated': jnp.array([0.0, 1.0, 0.0, 0.0]),
          'improved_action': jnp.full((B, ACT), -7.0)}


def adam_step(params, grads, opt_state):
  opt = optax.adam(LR, eps=EPS)
  updates, opt_state = opt.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def ema(new, old):
  return jax.tree_util.tree_map(lambda n, o: TAU * n + (1 - TAU) * o, new, old)


def reference_critic(critic, actor_target_w, batch):
  """The critic step written out: a' from the EMA actor + the target shift; y with the scaled
  reward and γ(1 − terminated); one Adam step on the mean squared error."""
  next_action = batch['next_obs'] @ actor_target_w + SHIFT
  y = (SCALE * batch['reward'] + GAMMA * (1 - batch['terminated'])
       * jnp.min(q_values(critic.target_params, batch['next_obs'], next_action), 0))

  def loss(p):
    return jnp.mean((q_values(p, batch['obs'], batch['action']) - y) ** 2)

  params, opt_state = adam_step(critic.params, jax.grad(loss)(critic.params), critic.opt_state)
  return params, opt_state


def test_two_updates_match_the_hand_stepped_reference(agent):
  s0 = agent.init(jax.random.PRNGKey(0))
  chex_close = lambda a, b: jax.tree_util.tree_map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
  # targets start equal to the online networks
  chex_close(s0.actor.target_params, s0.actor.params)
  chex_close(s0.critic.target_params, s0.critic.params)

  b1, b2 = batch_of(1), batch_of(2)
  s1, improved1, m1 = agent.update(s0, b1, jax.random.PRNGKey(10))

  # update 1 (step 0): critic first, on the EMA actor's a'
  c_params, c_opt = reference_critic(s0.critic, s0.actor.target_params['w'], b1)
  chex_close(s1.critic.params, c_params)
  assert int(s1.critic.extra) == 1
  # then the actor, against the *updated* critic
  actor_loss = lambda p: -jnp.mean(jnp.min(q_values(c_params, b1['obs'], b1['obs'] @ p['w']), 0))
  a_params, _ = adam_step(s0.actor.params, jax.grad(actor_loss)(s0.actor.params),
                          s0.actor.opt_state)
  chex_close(s1.actor.params, a_params)
  # target EMAs with τ, the critic's of its updated params
  chex_close(s1.actor.target_params, ema(a_params, s0.actor.target_params))
  chex_close(s1.critic.target_params, ema(c_params, s0.critic.target_params))
  assert int(s1.reg['updates']) == 1
  assert int(s1.signal['refreshes']) == 1 and int(s1.signal['last_step']) == 0
  np.testing.assert_allclose(improved1['improved_action'], b1['action'] + 1.0)
  assert float(m1['actor_updated']) == 1.0 and int(s1.step) == 1

  # update 2 (step 1): an off step: only the critic moves
  s2, improved2, m2 = agent.update(s1, b2, jax.random.PRNGKey(11))
  c_params2, _ = reference_critic(s1.critic._replace(opt_state=c_opt), s1.actor.target_params['w'],
                                  b2)
  chex_close(s2.critic.params, c_params2)
  chex_close(s2.actor, s1.actor)                              # params, target and Adam state
  chex_close(s2.critic.target_params, s1.critic.target_params)
  chex_close(s2.reg, s1.reg)
  chex_close(s2.signal, s1.signal)
  np.testing.assert_allclose(improved2['improved_action'], b2['improved_action'])   # the column is passed through
  assert float(m2['actor_updated']) == 0.0 and float(m2['actor/loss']) == 0.0


def test_the_actor_step_reads_the_critic_after_its_step(agent):
  # the actor step an update would make against the critic *before* its step differs
  s0 = agent.init(jax.random.PRNGKey(3))
  b = batch_of(4)
  s1, _, _ = agent.update(s0, b, jax.random.PRNGKey(5))
  stale = lambda p: -jnp.mean(jnp.min(q_values(s0.critic.params, b['obs'], b['obs'] @ p['w']), 0))
  stale_params, _ = adam_step(s0.actor.params, jax.grad(stale)(s0.actor.params),
                              s0.actor.opt_state)
  assert np.abs(np.asarray(s1.actor.params['w'] - stale_params['w'])).max() > 1e-4


def test_fused_updates_write_the_signals_column_into_the_replay(agent):
  cfg = loop_step.TrainConfig(batch_size=B, buffer_size=8, total_frames=8, update_every=2)
  source = loop_step.replay_source(agent, cfg)
  assert source.n == 2 and set(source.init().data) == {
      'obs', 'action', 'reward', 'next_obs', 'terminated', 'improved_action'}
  buf = source.init()
  for i in range(8):
    row = jax.tree_util.tree_map(lambda x: x[i % B][None], batch_of(i))
    buf = source.add(buf, row)
  state = agent.init(jax.random.PRNGKey(0))
  run = jax.jit(loop_step.fused_updates(agent, source))
  key = jax.random.PRNGKey(7)
  state2, buf2, metrics = run(state, buf, key)
  assert int(state2.step) == 2
  np.testing.assert_allclose(metrics['actor_updated'], [1.0, 0.0])
  # the rows the first update drew now hold action + 1; the second (off) step wrote back the
  # column it read, so those rows are unchanged by it
  first_key = jax.random.split(key, 2)[0]
  idx = np.asarray(jax.random.randint(jax.random.split(first_key)[0], (B,), 0, 8))
  np.testing.assert_allclose(buf2.data['improved_action'][idx], buf.data['action'][idx] + 1.0)
  untouched = np.setdiff1d(np.arange(8), idx)
  np.testing.assert_allclose(buf2.data['improved_action'][untouched],
                             buf.data['improved_action'][untouched])


def test_methods_whose_signal_declares_no_column_store_only_the_transition():
  import gin
  from flowrl import run as cli
  cli.parse_config(['gin/sac.gin'], ['env.name="Pendulum-v1"'])
  agent, cfg, _ = cli.build()
  gin.clear_config()
  assert agent.columns == ()
  assert set(loop_step.replay_source(agent, cfg).init().data) == {
      'obs', 'action', 'reward', 'next_obs', 'terminated'}


def test_cond_or_pass_runs_or_passes_with_zero_metrics():
  fn = lambda x, y: (x + y, x * y, {'m': jnp.ones(3) * x, 'n': y})
  skip = lambda x, y: (x, y)
  taken = cond_or_pass(jnp.bool_(True), fn, skip, 2.0, 5.0)
  np.testing.assert_allclose(taken[:2], (7.0, 10.0))
  np.testing.assert_allclose(taken[2]['m'], [2.0, 2.0, 2.0])
  passed = cond_or_pass(jnp.bool_(False), fn, skip, 2.0, 5.0)
  np.testing.assert_allclose(passed[:2], (2.0, 5.0))
  np.testing.assert_allclose(passed[2]['m'], np.zeros(3))
  assert float(passed[2]['n']) == 0.0
  # under jit with a traced predicate, both branches keep their meaning
  f = jax.jit(lambda p: cond_or_pass(p, fn, skip, 2.0, 5.0))
  np.testing.assert_allclose(f(True)[0], 7.0)
  np.testing.assert_allclose(f(False)[0], 2.0)


def test_the_step_stores_collect_extras_with_the_transition_of_their_action(agent):
  """`collect` may return columns beside the action (a rollout's log-probs); the step keeps them
  in the loop state and stores them with the transition of that very action, at the next add."""
  def collect(state, obs, key):
    action = agent.act(state, obs, key)
    return action, {'tag': jnp.sum(action, -1) * 10.0}

  tagged = agent._replace(collect=collect, extras={'tag': ()})
  cfg = loop_step.TrainConfig(batch_size=2, buffer_size=8, total_frames=8, learning_starts=100,
                              random_frames=0)
  source = loop_step.replay_source(tagged, cfg)
  step = jax.jit(loop_step.make_frame_step(tagged, source, cfg))
  loop = loop_step.init_loop(tagged, source, 0)
  z = lambda *shape: jnp.zeros((1,) + shape)
  blank = {'obs': z(OBS), 'action': z(ACT), 'reward': z(), 'next_obs': z(OBS), 'terminated': z(),
           'truncated': z()}
  obs = jax.random.normal(jax.random.PRNGKey(0), (4, 1, OBS))
  loop, action, _ = step(loop, blank, jnp.bool_(False), obs[0])
  taken = []
  for t in range(3):
    taken.append(action)
    row = {**blank, 'obs': obs[t], 'action': action, 'next_obs': obs[t + 1]}
    loop, action, _ = step(loop, row, jnp.bool_(True), obs[t + 1])
  data = loop.data.data
  assert set(data) == {'obs', 'action', 'reward', 'next_obs', 'terminated', 'tag',
                       'improved_action'}
  for t, a in enumerate(taken):
    np.testing.assert_allclose(data['action'][t], a[0], atol=1e-6)
    np.testing.assert_allclose(data['tag'][t], 10.0 * float(jnp.sum(a)), rtol=1e-5)
