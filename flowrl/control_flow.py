"""A step that runs every k-th call inside a compiled loop, with a fixed output structure."""
import jax
import jax.extend
import jax.numpy as jnp


def cond_or_pass(pred, fn, passthrough, *operands):
  """`lax.cond(pred, fn, skip, *operands)` where fn returns (..., metrics) and skip returns
  (*passthrough(*operands), zeros shaped like fn's metrics): for steps that run every k-th call
  and still report a fixed metrics structure (zeros are masked out when the loop averages).

  fn is traced once: its jaxpr gives the metrics' shapes and is replayed as the taken branch
  (tracing it for its shapes and again for lax.cond cost about 0.3 s of DACER's start)."""
  closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*operands)
  out_tree = jax.tree_util.tree_structure(out_shape)
  replay = jax.extend.core.jaxpr_as_fun(closed)

  def taken(*ops):
    return jax.tree_util.tree_unflatten(out_tree, replay(*jax.tree_util.tree_leaves(ops)))

  def skip(*ops):
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape[-1])
    return (*passthrough(*ops), zeros)

  return jax.lax.cond(pred, taken, skip, *operands)
