"""Worker for tests/test_cross_product.py: build every combination of registered primitives and
either run one update or check the validator's sentence. Runs in worker processes (one per core),
so it lives in a module they can import.

Compiling each combination's update (about 3 s) would not fit CI, so an update is traced once with
`jax.make_jaxpr` (which checks everything jit would, both sides of every cond) and its jaxpr is
then run by `run_jaxpr`, which inlines calls, conds, scans and while loops and executes every other
primitive eagerly: those per-primitive executables are compiled once per shape and shared by all
combinations."""
import itertools
import os
import re
from typing import Dict, List, Tuple

AXES = ('policy', 'sampler', 'signal', 'regularizer', 'critic', 'source')
TINY = ['DenoiserNet.hidden=(8,)', 'DenoiserNet.obs_hidden=(4,)', 'DenoiserNet.time_dim=4',
        'ensemble_q.hidden=(8,)', 'distributional_q.hidden=(8,)', 'tanh_gaussian.hidden=(8,)',
        'deterministic.hidden=(8,)', 'gaussian.hidden=(8,)', 'state_value.hidden=(8,)',
        'estimated_entropy.num_samples=4',
        'reverse_sampling.num_samples=3', 'reverse_sampling_grad.num_samples=3',
        'q_weighted_particles.num_particles=3', 'best_sample_advantage.num_samples=3',
        'uniform_denoising.num_actions=2', 'action_gradient.steps=2',
        'combined.parts=[@kl_to_uniform(), @noise_entropy()]', 'coupled_flow.hidden=(8,)',
        'coupled_flow.steps=2', 'fpo_ratio.samples=2', 'expectile_q.hidden=(8,)',
        'one_step_flow.hidden=(8,)', 'flow_distillation.flow_steps=2']
OBS, ACT, BATCH = 3, 2, 4


def _closed(j):
  return (j.jaxpr, j.consts) if hasattr(j, 'consts') else (j, ())


def run_jaxpr(jaxpr, consts, args):
  """Evaluate a jaxpr with control flow inlined in Python (see the module docstring)."""
  import jax.numpy as jnp
  from jax.extend import core as jcore
  env = {}
  read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    ins, name, p = [read(v) for v in eqn.invars], eqn.primitive.name, eqn.params
    if name in ('pjit', 'jit', 'closed_call', 'core_call', 'remat', 'checkpoint',
                'custom_jvp_call', 'custom_vjp_call', 'custom_vjp_call_jaxpr'):
      inner = p.get('jaxpr') or p.get('call_jaxpr') or p['fun_jaxpr']
      outs = run_jaxpr(*_closed(inner), ins)
    elif name == 'cond':
      outs = run_jaxpr(*_closed(p['branches'][int(ins[0])]), ins[1:])
    elif name == 'scan':
      nc, nk = p['num_consts'], p['num_carry']
      fixed, carry, xs = ins[:nc], ins[nc:nc + nk], ins[nc + nk:]
      order = range(p['length'])[::-1] if p['reverse'] else range(p['length'])
      ys = {}
      for i in order:
        out = run_jaxpr(*_closed(p['jaxpr']), fixed + carry + [x[i] for x in xs])
        carry, ys[i] = out[:nk], out[nk:]
      n_y = len(eqn.outvars) - nk
      outs = carry + [jnp.stack([ys[i][k] for i in range(p['length'])]) for k in range(n_y)]
    elif name == 'while':
      cc, bc = p['cond_nconsts'], p['body_nconsts']
      cond_consts, body_consts, carry = ins[:cc], ins[cc:cc + bc], ins[cc + bc:]
      while bool(run_jaxpr(*_closed(p['cond_jaxpr']), cond_consts + carry)[0]):
        carry = run_jaxpr(*_closed(p['body_jaxpr']), body_consts + carry)
      outs = carry
    else:
      outs = eqn.primitive.bind(*ins, **p)
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _eager(fn, *args):
  """fn(*args) through `run_jaxpr` (no compilation of its own)."""
  import jax
  closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
  leaves = run_jaxpr(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), leaves)


def combinations() -> List[Tuple[str, ...]]:
  """Every primitive of each axis × every data source (`train.source`)."""
  from flowrl.data import SOURCES
  from flowrl.primitives import REGISTRY
  # the dataset source provides what the replay does (stored transitions), so its combinations
  # are the replay's: the paradigms' sources, one of each kind, are enough
  sources = sorted(name for name in SOURCES if name != 'dataset_source')
  return list(itertools.product(*[sorted(REGISTRY[a]) for a in AXES[:-1]], sources))


def features(combo: Tuple[str, ...]) -> set:
  """What a run of `combo` exercises: every pair of choices on two axes, and the choice of
  policy × sampler × signal together (the chain a signal differentiates or scores through)."""
  pairs = {(i, combo[i], j, combo[j]) for i, j in itertools.combinations(range(len(combo)), 2)}
  return pairs | {('policy×sampler×signal',) + tuple(combo[:3])}


def covering(accepted: List[Tuple[str, ...]]) -> List[Tuple[str, ...]]:
  """A small subset of `accepted` with every feature that any of them has (greedy set cover,
  lazily re-scored; deterministic for a given order)."""
  import heapq
  feats = [features(c) for c in accepted]
  uncovered = set().union(*feats) if feats else set()
  heap = [(-len(f), i) for i, f in enumerate(feats)]
  heapq.heapify(heap)
  chosen = []
  while uncovered:
    neg, i = heapq.heappop(heap)
    gain = len(feats[i] & uncovered)
    if gain == -neg:
      chosen.append(accepted[i])
      uncovered -= feats[i]
    elif gain:
      heapq.heappush(heap, (-gain, i))
  return chosen


def check(combos: List[Tuple[str, ...]], run: bool = True) -> Dict[str, list]:
  """For each combination: rejected -> the ConfigError is one sentence naming two axes;
  accepted -> with `run`, the update traces as jit would (every branch) and one update runs, with
  finite metrics and parameters."""
  os.environ.setdefault('MUJOCO_GL', 'egl')
  import flowrl.run  # noqa: F401  (the CLI's XLA settings)
  import gin
  import jax
  import jax.numpy as jnp
  import numpy as np

  from flowrl.compose.agent import compile_method
  from flowrl.compose.method import Method
  from flowrl.errors import ConfigError
  from flowrl.primitives import REGISTRY
  from flowrl.primitives import sampler as samplers
  from flowrl.primitives.base import EnvSpec

  gin.clear_config()
  gin.parse_config(TINY)
  # A rejection lists the other primitives that would work, building each one to ask; with this
  # worker's gin config fixed, that list is the same for every combination, so it is built once.
  import importlib
  method_module = importlib.import_module('flowrl.compose.method')
  providers = getattr(check, 'providers', method_module._providers)
  check.providers, listed = providers, {}

  def listed_once(axis, cap, spec):
    if (axis, cap) not in listed:
      listed[axis, cap] = providers(axis, cap, spec)
    return listed[axis, cap]

  method_module._providers = listed_once
  spec = EnvSpec(OBS, ACT)
  ks = jax.random.split(jax.random.PRNGKey(1), 4)
  act = jax.random.uniform(ks[1], (BATCH, ACT), minval=-1, maxval=1)
  batch = {'obs': jax.random.normal(ks[0], (BATCH, OBS)), 'action': act,
           'reward': jax.random.normal(ks[2], (BATCH,)),
           'next_obs': jax.random.normal(ks[3], (BATCH, OBS)), 'terminated': jnp.zeros(BATCH),
           'improved_action': act,   # extra columns are ignored by methods that declare none
           'log_prob': -jnp.ones(BATCH), 'advantage': jnp.linspace(-1.0, 1.0, BATCH),
           'return': jnp.ones(BATCH), 'value': jnp.zeros(BATCH)}   # a rollout's
  key = jax.random.PRNGKey(2)

  # Networks are built and initialised once per primitive, not once per combination.
  built = {axis: {} for axis in ('policy', 'critic')}

  def cached(axis, name):
    if name not in built[axis]:
      prim = REGISTRY[axis][name]()(spec)
      params = jax.jit(prim.init)(jax.random.PRNGKey(0))
      built[axis][name] = prim._replace(init=lambda k, p=params: p)
    return lambda spec: built[axis][name]

  from flowrl import data
  sources = {'replay_source': data.replay_source(), 'rollout_source': data.rollout_source()}
  out = {'accepted': [], 'rejected': [], 'failures': []}
  for combo in combos:
    p, s, g, r, c, source = combo
    method = Method(cached('policy', p), samplers.sampler(REGISTRY['sampler'][s](), steps=2),
                    REGISTRY['signal'][g](), REGISTRY['regularizer'][r](), cached('critic', c))
    try:
      agent = compile_method(method, spec, sources[source])
    except ConfigError as e:
      msg = str(e)
      named = [a for a in AXES if a in msg]
      if '\n' in msg or not msg.endswith('.') or len(named) < 2 or msg.count('. ') > 0:
        out['failures'].append((combo, f'rejection is not one sentence naming two axes: {msg}'))
      out['rejected'].append(combo)
      continue
    except Exception as e:  # noqa: BLE001  (any other exception is the failure we look for)
      out['failures'].append((combo, f'build raised {type(e).__name__}: {e}'))
      continue
    if not run:
      out['accepted'].append(combo)
      continue
    try:
      state = agent.init(jax.random.PRNGKey(0))
      rows = batch
      if agent.value is not None:   # on-policy: the columns collection stores (chains, (t, ε), ...)
        rows = {**batch, **dict(zip(('action', 'extras'), _eager(agent.collect, state,
                                                                 batch['obs'], key)))}
        rows.update(rows.pop('extras'))
      closed, shape = jax.make_jaxpr(agent.update, return_shape=True)(state, rows, key)
      leaves = run_jaxpr(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves((state, rows, key)))
      state, _, metrics = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), leaves)
      bad = [k for k, v in metrics.items() if not np.isfinite(np.asarray(v)).all()]
      bad += ['params' for leaf in jax.tree_util.tree_leaves(state)
              if jnp.issubdtype(leaf.dtype, jnp.floating) and not np.isfinite(np.asarray(leaf)).all()][:1]
      if float(metrics['actor_updated']) != 1.0:
        bad.append('the actor step did not run')
      if bad:
        out['failures'].append((combo, f'non-finite or missing: {bad}'))
      out['accepted'].append(combo)
    except Exception as e:  # noqa: BLE001
      out['failures'].append((combo, f'update raised {type(e).__name__}: {str(e)[:300]}'))
  return out
