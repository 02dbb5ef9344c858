"""Count the matmul FLOPs of a JAX function from its jaxpr: 2·(output size)·(contracted size) per
dot_general, scan bodies times their length, while bodies are not allowed. A `lax.cond` at the
top level of the function counts as min + (max − min)·`outer_cond_weight` (the actor step that
runs every k-th update: weight 1/k); conds nested deeper count their cheapest branch (e.g. the
closed-form entropy step of SDAC/DPMD every 250 updates; DACER's entropy estimate every 10k updates
is a program of its own and adds < 1% amortized). XLA's cost_analysis() counts a scan
body once, which undercounts a 20-step denoising chain 20-fold."""
import numpy as np
import jax
from jax.extend import core as jcore


def _dot_flops(eqn) -> float:
  (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
  lhs = eqn.invars[0].aval.shape
  contracted = float(np.prod([lhs[d] for d in lc])) if lc else 1.0
  out = float(np.prod(eqn.outvars[0].aval.shape))
  return 2.0 * out * contracted


def _jaxpr_flops(jaxpr, depth: int, outer_weight: float) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      total += _dot_flops(eqn)
    elif name == 'scan':
      total += eqn.params['length'] * _jaxpr_flops(eqn.params['jaxpr'].jaxpr, depth + 1, outer_weight)
    elif name == 'cond':
      branches = [_jaxpr_flops(b.jaxpr, depth + 1, outer_weight) for b in eqn.params['branches']]
      lo, hi = min(branches), max(branches)
      total += lo + (hi - lo) * outer_weight if depth == 0 else lo
    elif name == 'while':
      raise ValueError('while loops have no static trip count; use scan or fori_loop with '
                       'static bounds')
    else:
      for p in eqn.params.values():
        for sub in (p if isinstance(p, (list, tuple)) else [p]):
          if isinstance(sub, jcore.ClosedJaxpr):
            total += _jaxpr_flops(sub.jaxpr, depth, outer_weight)
          elif isinstance(sub, jcore.Jaxpr):
            total += _jaxpr_flops(sub, depth, outer_weight)
  return total


def matmul_flops(fn, *args, outer_cond_weight: float = 1.0) -> float:
  closed = jax.make_jaxpr(fn)(*args)
  return _jaxpr_flops(closed.jaxpr, 0, outer_cond_weight)
