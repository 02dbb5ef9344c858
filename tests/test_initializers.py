"""Initializers: each draws what its formula says, a gin binding reaches the network it names, a
method file's choice reaches its networks, and per-task bindings apply to their task only."""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowrl import run as cli
from flowrl.compose.method import actor_optimizer
from flowrl.errors import ConfigError
from flowrl.primitives import critic, initializers, parameterization
from flowrl.primitives.base import EnvSpec


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def draw(init, shape, seed=0):
  import haiku as hk
  f = hk.transform(lambda: hk.get_parameter('w', shape, init=init))
  return np.asarray(f.init(jax.random.PRNGKey(seed))['~']['w'])


@pytest.mark.parametrize('scale', [1.0, np.sqrt(2.0), 0.01])
def test_orthogonal_square_layer_has_w_transpose_w_equal_scale_squared_identity(scale):
  w = draw(initializers.orthogonal(scale), (64, 64))
  np.testing.assert_allclose(w.T @ w, scale ** 2 * np.eye(64), atol=1e-5 * max(1.0, scale ** 2))


def test_orthogonal_under_vmapped_seeds_is_haikus_draw_with_no_batched_lapack_qr():
  """The seeds' inits are vmapped; jaxlib's batched CPU QR can deadlock XLA's 2-thread pool
  (initializers.host_qr), so the compiled init must not call it, and must draw what
  hk.initializers.Orthogonal draws, bit for bit, for wide, square and tall layers."""
  import haiku as hk
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  for shape in [(17, 64), (64, 64), (64, 6)]:
    ours = hk.transform(lambda: hk.get_parameter('w', shape, init=initializers.orthogonal(1.5)))
    theirs = hk.transform(lambda: hk.get_parameter('w', shape,
                                                   init=hk.initializers.Orthogonal(1.5)))
    init = jax.jit(jax.vmap(ours.init))
    assert 'custom_call_target="lapack' not in init.lower(keys).compile().as_text()
    np.testing.assert_array_equal(init(keys)['~']['w'], jax.vmap(theirs.init)(keys)['~']['w'])


def test_variance_scaling_cases_have_their_variance():
  fan_in, fan_out = 400, 300
  # lecun normal (truncated, rescaled to the asked variance): Var = 1/fan_in
  w = draw(initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'), (fan_in, fan_out))
  assert abs(w.var() * fan_in - 1.0) < 0.03
  assert np.abs(w).max() <= 2 * np.sqrt(1.0 / fan_in) / 0.87962566 + 1e-6   # cut at 2 std before rescaling
  # xavier uniform: U(±sqrt(6/(fan_in+fan_out)))
  w = draw(initializers.variance_scaling(1.0, 'fan_avg', 'uniform'), (fan_in, fan_out))
  bound = np.sqrt(6.0 / (fan_in + fan_out))
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
  # DIPO's N(0, 1/(4 fan_in)), untruncated: some draws beyond 2 std
  w = draw(initializers.variance_scaling(0.25, 'fan_in', 'normal'), (fan_in, fan_out))
  std = np.sqrt(0.25 / fan_in)
  assert abs(w.std() / std - 1.0) < 0.02 and np.abs(w).max() > 3 * std


def test_haiku_default_is_a_truncated_normal_of_std_one_over_sqrt_fan_in():
  fan_in = 256
  w = draw(initializers.haiku_default(), (fan_in, 512))
  sigma = 1.0 / np.sqrt(fan_in)
  assert np.abs(w).max() <= 2 * sigma + 1e-7
  # a standard normal cut at ±2 has variance 0.7737
  assert abs(w.var() / sigma ** 2 - 0.7737) < 0.03


def test_variance_scaling_rejects_an_unknown_mode_in_one_sentence():
  with pytest.raises(ConfigError, match="variance_scaling.mode='fan_max' is not one of"):
    initializers.variance_scaling(1.0, 'fan_max')


def test_torch_linear_draws_weights_and_biases_from_u_of_one_over_sqrt_fan_in_per_layer():
  """PyTorch's nn.Linear: W, b ~ U(±1/√fan_in), with each layer's own fan-in (17 into the first,
  64 into the second); the same MLP under orthogonal keeps zero biases."""
  gin.parse_config("""
      gaussian.hidden_init = @torch_linear()
      gaussian.output_init = @torch_linear()
  """)
  params = parameterization.gaussian(hidden=(64, 64))(EnvSpec(17, 6)).init(jax.random.PRNGKey(0))
  for layer, fan_in, fan_out in [('linear_0', 17, 64), ('linear_1', 64, 64), ('linear_2', 64, 6)]:
    w, b = (np.asarray(params[f'policy/~/{layer}'][k]) for k in ('w', 'b'))
    bound = 1.0 / np.sqrt(fan_in)
    assert w.shape == (fan_in, fan_out) and b.shape == (fan_out,)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound
  w = np.asarray(params['policy/~/linear_1']['w'])
  assert abs(w.var() * 3 * 64 - 1.0) < 0.1                # Var(W) = 1/(3 fan_in)
  gin.clear_config()
  params = parameterization.gaussian(hidden=(64, 64))(EnvSpec(17, 6)).init(jax.random.PRNGKey(0))
  assert not any(np.any(np.asarray(params[f'policy/~/linear_{i}']['b'])) for i in range(3))


def test_the_library_default_is_orthogonal_sqrt2_on_the_critic():
  params = critic.ensemble_q(hidden=(32, 32))(EnvSpec(3, 2)).init(jax.random.PRNGKey(0))
  w = np.asarray(params['q/~/linear_1']['w'][0])          # member 0's square hidden layer
  np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(32), atol=1e-4)
  assert not np.any(np.asarray(params['q/~/linear_1']['b']))


def test_a_gin_binding_reaches_the_hidden_and_output_layers():
  gin.parse_config("""
      initializers.hidden = @orthogonal()
      orthogonal.scale = 3.0
      tanh_gaussian.output_init = @variance_scaling()
      variance_scaling.scale = 1e-4
      variance_scaling.mode = 'fan_in'
      variance_scaling.distribution = 'normal'
  """)
  policy = parameterization.tanh_gaussian(hidden=(32, 32))(EnvSpec(5, 4))
  params = policy.init(jax.random.PRNGKey(0))
  hidden = np.asarray(params['policy/~/linear_1']['w'])
  np.testing.assert_allclose(hidden.T @ hidden, 9.0 * np.eye(32), atol=1e-3)
  out = np.asarray(params['policy/~/linear_2']['w'])
  assert out.shape == (32, 8) and abs(out.std() / np.sqrt(1e-4 / 32) - 1) < 0.25


def test_a_method_file_choice_reaches_its_diffusion_actor_and_critic():
  # dipo.gin: N(0, 1/(4 fan_in)) on every layer, as the DIPO authors' init_weights
  cli.parse_config(['gin/dipo.gin'], [])
  spec = EnvSpec(17, 6)
  actor = parameterization.vp_diffusion()(spec).init(jax.random.PRNGKey(0))
  w = np.asarray(actor['denoiser']['in_w'])              # [s, a_t, emb(t)] -> 256
  assert w.shape[0] == 17 + 6 + 16
  assert abs(w.std() * np.sqrt(4 * w.shape[0]) - 1) < 0.05
  q = critic.ensemble_q()(spec).init(jax.random.PRNGKey(1))
  w = np.asarray(q['q/~/linear_0']['w'][0])
  assert abs(w.std() * np.sqrt(4 * 23) - 1) < 0.05


@pytest.mark.parametrize('task,bind,expected', [
    ('HalfCheetah-v5', [], 0.15),          # relax/network/dacer.py: 0.15 on HalfCheetah
    ('Hopper-v5', [], 0.1),                # other tasks 0.1
    ('HalfCheetah-v5', ['estimated_entropy.noise_scale = 0.3'], 0.3),   # --bind wins
])
def test_per_task_bindings_apply_to_their_task_and_yield_to_bind(task, bind, expected):
  cli.parse_config(['gin/dacer.gin'], [f'env.name = "{task}"'] + bind)
  assert gin.query_parameter('estimated_entropy.noise_scale') == expected


def test_a_bad_per_task_binding_is_one_sentence():
  with pytest.raises(ConfigError, match='bad per_task binding .* for Hopper-v5'):
    cli.parse_config(['gin/sac.gin'], ['env.name = "Hopper-v5"',
                                       "per_task.bindings = {'Hopper-v5': ['nonsense.x = 1']}"])


def test_adam_epsilon_b2_and_cosine_decay_reach_the_step():
  # Adam's first step is -lr * g / (|g| + eps): with g = eps = 1e-5 it is half the learning rate
  opt = actor_optimizer(learning_rate=1.0, eps=1e-5)
  g = {'w': jnp.array([1e-5])}
  update, _ = opt.update(g, opt.init(g))
  np.testing.assert_allclose(update['w'], [-0.5], rtol=1e-5)
  # cosine decay 1 -> 0 over 10 steps: a constant gradient's 6th step (count 5) has lr 0.5
  opt = actor_optimizer(learning_rate=1.0, final_learning_rate=0.0, decay_steps=10,
                        decay='cosine', eps=1e-12)
  g = {'w': jnp.array([1.0])}
  state = opt.init(g)
  for _ in range(6):
    update, state = opt.update(g, state)
  np.testing.assert_allclose(update['w'], [-0.5], rtol=1e-4)
  with pytest.raises(ConfigError, match="actor_optimizer.decay='step' is not one of"):
    actor_optimizer(decay='step')
  # b2 (FPO++'s 0.95): after gradients 1 then 0, the second step is
  # -m̂/√v̂ = -(0.9·0.1/0.19)/√(b2(1 − b2)/(1 − b2²)) with m̂, v̂ bias-corrected
  for b2 in (0.95, 0.999):
    opt = actor_optimizer(learning_rate=1.0, eps=1e-12, b2=b2)
    state = opt.init({'w': jnp.zeros(1)})
    _, state = opt.update({'w': jnp.ones(1)}, state)
    update, _ = opt.update({'w': jnp.zeros(1)}, state)
    m_hat, v_hat = 0.09 / 0.19, b2 * (1 - b2) / (1 - b2 ** 2)
    np.testing.assert_allclose(update['w'], [-m_hat / np.sqrt(v_hat)], rtol=1e-4)
