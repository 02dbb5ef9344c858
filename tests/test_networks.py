"""Networks: the fast mish is mish; the split first layer of DenoiserNet is one layer on the
concatenation; the critic ensemble's members are independent."""
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from flowrl.primitives import networks, parameterization
from flowrl.primitives.base import EnvSpec


def test_mish_and_its_derivatives_equal_the_definition():
  x = jnp.linspace(-40.0, 40.0, 20001)
  ref = lambda v: v * jnp.tanh(jax.nn.softplus(v))
  np.testing.assert_allclose(networks.mish(x), ref(x), atol=5e-6)
  d = jax.vmap(jax.grad(networks.mish))(x)
  np.testing.assert_allclose(d, jax.vmap(jax.grad(ref))(x), atol=5e-6)
  d2 = jax.vmap(jax.grad(jax.grad(networks.mish)))(x[::50])
  np.testing.assert_allclose(d2, jax.vmap(jax.grad(jax.grad(ref)))(x[::50]), atol=5e-5)
  assert not np.any(np.isnan(np.asarray(d)))


def test_denoiser_split_first_layer_is_one_layer_on_the_concatenation():
  spec = EnvSpec(5, 3)
  policy = parameterization.vp_diffusion()(spec)
  params = policy.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
  t = jnp.array([0.1, 0.5, 0.5, 0.9])
  out = policy.predict(params, obs, x, t)
  # the same function written as one Linear on [embed(obs), x, fourier(t)]
  p = {k.split('/')[-1]: v for k, v in params.items()}
  act = networks.mish
  h = obs
  for i in range(2):
    h = act(h @ p[f'obs_embed_{i}']['w'] + p[f'obs_embed_{i}']['b'])
  w_f = params['denoiser']['fourier_w']
  proj = 2 * jnp.pi * t[:, None] * w_f[0]
  e_t = jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], -1)
  w, b = params['denoiser']['in_w'], params['denoiser']['in_b']   # one [8+3+64, 256] matrix
  assert w.shape == (128 + 3 + 64, 256)
  h = act(jnp.concatenate([h, x, e_t], -1) @ w + b)
  trunk = hk.without_apply_rng(hk.transform(
      lambda v: networks.mlp((256, 256), 3, 'mish', 'trunk')(v)))
  trunk_params = {k.split('/~step/')[-1]: v for k, v in params.items() if 'trunk' in k}
  np.testing.assert_allclose(out, trunk.apply(trunk_params, h), rtol=1e-4, atol=1e-5)
  # the per-chain condition + shared time row equals the per-sample call
  cond = policy.condition(params, obs)
  same_t = policy.predict_cond(params, cond, x, jnp.full((1,), 0.5))
  np.testing.assert_allclose(same_t, policy.predict(params, obs, x, jnp.full((4,), 0.5)),
                             rtol=1e-5, atol=1e-6)


def test_q_ensemble_members_are_independent():
  init, apply = networks.q_ensemble(3, 2, 4, (8,), 'relu')
  params = init(jax.random.PRNGKey(0))
  leaves = jax.tree_util.tree_leaves(params)
  assert all(l.shape[0] == 4 for l in leaves)
  q = apply(params, jnp.ones((5, 3)), jnp.zeros((5, 2)))
  assert q.shape == (4, 5, 1)
  assert len(np.unique(np.asarray(q[:, 0, 0]).round(6))) == 4
  # perturbing member 2 changes only member 2
  bumped = jax.tree_util.tree_map(lambda l: l.at[2].add(1.0), params)
  q2 = apply(bumped, jnp.ones((5, 3)), jnp.zeros((5, 2)))
  np.testing.assert_allclose(q2[jnp.array([0, 1, 3])], q[jnp.array([0, 1, 3])])
  assert not np.allclose(q2[2], q[2])


def test_q_ensemble_row_chunks_equal_one_pass():
  # 21 rows in chunks of at most 4: 6 chunks of 4 rows, the last 3 rows padding
  init, chunked = networks.q_ensemble(3, 2, 2, (8,), 'relu', outputs=2, row_chunk=4)
  _, one_pass = networks.q_ensemble(3, 2, 2, (8,), 'relu', outputs=2, row_chunk=10_000)
  params = init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (3, 7, 3))
  act = jax.random.uniform(jax.random.PRNGKey(2), (3, 7, 2), minval=-1, maxval=1)
  q = chunked(params, obs, act)
  assert q.shape == (2, 3, 7, 2)
  np.testing.assert_allclose(q, one_pass(params, obs, act), rtol=1e-6, atol=1e-6)
  grad = lambda apply: jax.grad(lambda a: jnp.sum(jnp.min(apply(params, obs, a)[..., 0], 0)))(act)
  np.testing.assert_allclose(grad(chunked), grad(one_pass), rtol=1e-6, atol=1e-6)
