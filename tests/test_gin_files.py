"""Every gin file compiles and runs updates (actor step and skipped actor step) with finite
losses on tiny networks, and names its paper; and every method gives the numbers it gave when
tests/golden_metrics.json was written (same seed, same two updates), so a refactor of the loop or
compiler that changes any method's numbers fails here. After a deliberate change of numbers,
rewrite the file with FLOWRL_WRITE_GOLDEN=1 python -m pytest tests/test_gin_files.py and say why
in the commit."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl import run as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, 'tests', 'golden_metrics.json')
METHOD_FILES = sorted(glob.glob(os.path.join(ROOT, 'gin', '*.gin')))
METHOD_FILES = [f for f in METHOD_FILES if not f.endswith('_defaults.gin')]
METHOD_FILES += sorted(glob.glob(os.path.join(ROOT, 'examples', '*.gin')))
TINY = ['DenoiserNet.hidden=(16, 16)', 'DenoiserNet.obs_hidden=(8,)', 'DenoiserNet.time_dim=8',
        'ensemble_q.hidden=(16,)', 'distributional_q.hidden=(16,)', 'tanh_gaussian.hidden=(16,)',
        'deterministic.hidden=(16,)', 'gaussian.hidden=(16,)', 'state_value.hidden=(16,)',
        'sampler.steps=2', 'estimated_entropy.num_samples=8',
        'estimated_entropy.every=1', 'env.name="Pendulum-v1"', 'reverse_sampling.num_samples=4',
        'reverse_sampling_grad.num_samples=4', 'q_weighted_particles.num_particles=4',
        'best_sample_advantage.num_samples=4', 'uniform_denoising.num_actions=3',
        'coupled_flow.hidden=(16,)', 'fpo_ratio.samples=2', 'expectile_q.hidden=(16,)',
        'one_step_flow.hidden=(16,)']


def _same_numbers_as_golden(name, seen, path=GOLDEN, atol=1e-5):
  """`seen` against the golden numbers of `name` in `path` (rewritten with FLOWRL_WRITE_GOLDEN)."""
  import json
  golden = json.load(open(path)) if os.path.exists(path) else {}
  if os.environ.get('FLOWRL_WRITE_GOLDEN'):
    golden[name] = seen
    with open(path, 'w') as f:
      json.dump(golden, f, indent=1, sort_keys=True)
    return
  assert name in golden, f'{name} has no golden numbers; see this module\'s docstring'
  assert sorted(seen) == sorted(golden[name]), 'the metrics reported changed'
  # equal within float tolerance: XLA may fuse differently on another CPU
  np.testing.assert_allclose([seen[k] for k in sorted(seen)],
                             [golden[name][k] for k in sorted(seen)], rtol=2e-3, atol=atol,
                             err_msg=name)


def test_the_five_spine_methods_are_here():
  names = {os.path.basename(f) for f in METHOD_FILES}
  assert {'sac.gin', 'td3.gin', 'dipo.gin', 'qsm.gin', 'dacer.gin'} <= names


@pytest.fixture(scope='module')
def pendulum_data(tmp_path_factory):
  """Offline method files train on this small random Pendulum-v1 dataset."""
  from tests.offline_data import random_dataset
  return random_dataset(str(tmp_path_factory.mktemp('data') / 'pendulum.npz'))


@pytest.mark.parametrize('path', METHOD_FILES, ids=os.path.basename)
def test_method_file_compiles_and_updates(path, pendulum_data):
  import re
  lines = open(path).read().splitlines()
  header = ' '.join(l for l in lines[:lines.index('')] if l.startswith('#'))
  assert lines[0].startswith('# ') and re.search(r'(19|20)\d\d', header), 'opens with its paper'
  split = ['sampler.fine_tune_steps=1'] if 'sampler.fine_tune_steps' in open(path).read() else []
  cli.parse_config([path], TINY + split + [f'dataset_source.name="{pendulum_data}"',
                                           'dataset_source.updates_per_step=2'])
  agent, cfg, env_name = cli.build()
  state = agent.init(jax.random.PRNGKey(0))
  ks = jax.random.split(jax.random.PRNGKey(1), 4)
  o, a = agent.spec.obs_dim, agent.spec.act_dim
  act = jax.random.uniform(ks[1], (16, a), minval=-1, maxval=1)
  batch = {'obs': jax.random.normal(ks[0], (16, o)), 'action': act,
           'reward': jax.random.normal(ks[2], (16,)), 'next_obs': jax.random.normal(ks[3], (16, o)),
           'terminated': jnp.zeros(16), **{c: act for c in agent.columns},
           # a rollout's columns, read by on-policy methods only
           'advantage': jnp.linspace(-1.0, 1.0, 16), 'return': jnp.ones(16)}
  if agent.value is not None:          # on-policy: what collection stores (log-probs, chains, ...)
    batch['action'], extras = agent.collect(state, batch['obs'], jax.random.PRNGKey(2))
    batch.update(extras)
  update = jax.jit(agent.update)
  seen = {}
  for i in range(2):   # step 0 runs the actor; step 1 skips it when actor_every = 2
    state, improved, metrics = update(state, batch, jax.random.PRNGKey(10 + i))
    for k, v in metrics.items():
      assert np.isfinite(np.asarray(v)).all(), (k, v)
      seen[f'{i}/{k}'] = float(np.mean(np.asarray(v)))
  assert int(state.step) == 2
  _same_numbers_as_golden(os.path.relpath(path, ROOT), seen)
  action = jax.jit(agent.act, static_argnums=3)(state, batch['obs'], jax.random.PRNGKey(3), True)
  assert action.shape == (16, a)
  assert agent.value is not None or float(jnp.max(jnp.abs(action))) <= 1.0   # PPO's: unsquashed

  # the seed-batched frame step traces for every method: each primitive batches under vmap and
  # the counters stay unbatched (vmap's out_axes=None would fail otherwise), no compile needed
  from flowrl.compose.step import TRANSITION, batched_programs, make_source
  n = cfg.envs_per_seed
  init, step, act_eval, periodic = batched_programs(agent, make_source(agent, cfg, n), cfg, (0, 1),
                                                    n)
  loop = jax.eval_shape(init)
  two = lambda *shape: jax.ShapeDtypeStruct((2, n) + shape, jnp.float32)   # [seeds, envs, ...]
  transitions = dict(zip(TRANSITION, (two(o), two(a), two(), two(o), two(), two())))
  loop, actions, metrics = jax.eval_shape(step, loop, transitions, jnp.bool_(True), two(o))
  assert actions.shape == (2, n, a) and loop.agent.step.shape == () and loop.frame.shape == ()
  one = lambda *shape: jax.ShapeDtypeStruct((2, 1) + shape, jnp.float32)
  assert all(m.shape[0] == 2 for m in metrics.values())
  assert jax.eval_shape(act_eval, loop.agent, one(o),
                        jax.ShapeDtypeStruct((2, 2), jnp.uint32)).shape == (2, 1, a)
  if periodic is not None:             # DACER's entropy estimate, a program of its own
    after = jax.eval_shape(periodic, loop)
    assert jax.tree_util.tree_structure(after) == jax.tree_util.tree_structure(loop)
