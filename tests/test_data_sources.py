"""The rollout and dataset sources on their own (flowrl.data): GAE against a hand computation with
a termination and a truncation bootstrapped from its final observation; epochs × minibatches that
cover every env step once per epoch with a fresh permutation; a dataset that steps no env."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl.data import dataset as ds
from flowrl.data import rollout as ro

GAMMA, LAMBDA = 0.9, 0.8


def hand_gae(r, term, trunc, v, v_final, v_next):
  """Backwards over t for one env: δ_t = r_t + γ·trunc_t·V(final_t) + γ(1 − done_t)V(s_{t+1})
  − V(s_t); A_t = δ_t + γλ(1 − done_t) A_{t+1}."""
  T = len(r)
  adv, nxt = np.zeros(T), 0.0
  for t in reversed(range(T)):
    done = max(term[t], trunc[t])
    v_tp1 = v[t + 1] if t + 1 < T else v_next
    delta = r[t] + GAMMA * trunc[t] * v_final[t] + GAMMA * (1 - done) * v_tp1 - v[t]
    nxt = delta + GAMMA * LAMBDA * (1 - done) * nxt
    adv[t] = nxt
  return adv


def test_gae_bootstraps_truncation_from_final_obs_and_stops_at_termination():
  T, N = 6, 2
  rng = np.random.default_rng(0)
  r, v = rng.normal(size=(T, N)), rng.normal(size=(T, N))
  v_final, v_next = rng.normal(size=(T, N)), rng.normal(size=N)
  term, trunc = np.zeros((T, N)), np.zeros((T, N))
  term[2, 0] = 1.0            # env 0 terminates at t = 2: no bootstrap
  trunc[4, 1] = 1.0           # env 1 hits its time limit at t = 4: bootstrap V(final_obs)
  got = np.asarray(ro.gae(*(jnp.asarray(x, jnp.float32) for x in (r, term, trunc, v, v_final,
                                                                   v_next)), GAMMA, LAMBDA))
  want = np.stack([hand_gae(r[:, n], term[:, n], trunc[:, n], v[:, n], v_final[:, n], v_next[n])
                   for n in range(N)], axis=1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # the truncated step's advantage reads V(final_obs), and not the next episode's first value
  bumped = v_final.copy()
  bumped[4, 1] += 1.0
  got2 = np.asarray(ro.gae(*(jnp.asarray(x, jnp.float32) for x in (r, term, trunc, v, bumped,
                                                                    v_next)), GAMMA, LAMBDA))
  assert got2[4, 1] - got[4, 1] == pytest.approx(GAMMA, rel=1e-5)
  bumped_v = v.copy()
  bumped_v[5, 1] += 1.0                                     # V(s_5) of env 1: after the reset
  got3 = np.asarray(ro.gae(*(jnp.asarray(x, jnp.float32) for x in (r, term, trunc, bumped_v,
                                                                    v_final, v_next)), GAMMA, LAMBDA))
  assert got3[4, 1] == pytest.approx(got[4, 1], abs=1e-6)


def test_rollout_fills_prepares_yields_epochs_of_minibatches_and_clears():
  T, N, E, M = 4, 3, 2, 3
  cols = {'obs': (2,), 'next_obs': (2,), 'reward': (), 'terminated': (), 'truncated': (),
          'value': ()}
  src = ro.rollout(T, N, cols, GAMMA, LAMBDA, epochs=E, minibatches=M)
  state = src.init()
  for t in range(T):
    assert not bool(src.due(state))
    step = {k: jnp.full((N,) + s, float(t), jnp.float32) for k, s in cols.items()}
    step['obs'] = jnp.stack([jnp.array([t, n], jnp.float32) for n in range(N)])
    state = src.add(state, step)
  assert bool(src.due(state))
  state = src.prepare(state, lambda obs: obs[:, 0] * 0.5)     # V(next_obs), any function
  idx = src.batches(state, jax.random.split(jax.random.PRNGKey(0), src.n))
  batches = jax.vmap(lambda i: src.gather(state, i))(idx)
  assert src.n == E * M and idx.shape == (E * M, T * N // M) and batches['obs'].shape == (E * M, T * N // M, 2)
  for e in range(E):                    # each epoch covers every env step exactly once
    assert sorted(np.asarray(idx[e * M:(e + 1) * M]).ravel().tolist()) == list(range(T * N))
  assert not np.array_equal(np.asarray(idx[:M]), np.asarray(idx[M:]))   # a fresh permutation
  # rows are env steps with their own advantage
  flat_adv = np.asarray(state.advantages).reshape(-1)
  np.testing.assert_allclose(np.asarray(batches['advantage']), flat_adv[np.asarray(idx)])
  obs = np.asarray(batches['obs']).reshape(-1, 2)
  rows = np.asarray(idx).reshape(-1)
  np.testing.assert_array_equal(obs, np.stack([rows // N, rows % N], 1).astype(np.float32))
  assert int(src.finish(state).t) == 0


def test_dataset_source_draws_uniform_rows_and_steps_no_env():
  arrays = {'obs': np.arange(20, dtype=np.float32).reshape(10, 2),
            'action': np.linspace(-1, 1, 10, dtype=np.float32)[:, None]}
  src = ds.dataset(arrays, batch_size=5, n=3)
  state = src.init()
  assert bool(src.due(state, 0)) and bool(src.due(state, 10 ** 6))
  assert src.add(state, {'obs': None}) is state                 # no env, nothing added
  idx = jax.jit(src.batches)(state, jax.random.split(jax.random.PRNGKey(1), src.n))
  batches = src.gather(state, idx)
  assert idx.shape == (3, 5) and batches['obs'].shape == (3, 5, 2)
  np.testing.assert_array_equal(np.asarray(batches['obs'])[..., 0], 2 * np.asarray(idx))
  big = ds.dataset(arrays, batch_size=5000, n=2)
  many = big.batches(big.init(), jax.random.split(jax.random.PRNGKey(2), big.n))
  counts = np.bincount(np.asarray(many).ravel(), minlength=10)
  assert counts.min() > 850 and counts.max() < 1150    # uniform over the 10 rows (1000 each)
