"""Checkpoints of the whole loop state (agent, device buffer, key, frame) with orbax, plus a small
JSON of host-side bookkeeping. Only finite states are saved, so the newest checkpoint is always
a good one to resume from.

orbax is imported on first use, not with this module: the loop creates its checkpoint manager
while XLA compiles the train step, which hides the import's 0.3 s from the start of a run."""
import os
from typing import Any, List, Optional, Tuple

import jax
import jax.numpy as jnp


def _ocp():
  import orbax.checkpoint as ocp
  return ocp


def is_finite(tree) -> bool:
  leaves = [x for x in jax.tree_util.tree_leaves(tree)
            if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating)]
  return bool(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))


def manager(run_dir: str, keep: int = 2):
  """An orbax CheckpointManager for run_dir/checkpoints keeping the newest `keep`."""
  ocp = _ocp()
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(run_dir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_names=('loop', 'host', 'env'))


def layout(tree) -> str:
  """A digest of the tree's structure, shapes and dtypes: a checkpoint restores only into a state
  of the same layout."""
  import hashlib
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  text = repr([(jax.tree_util.keystr(p), tuple(x.shape), str(x.dtype)) for p, x in leaves])
  return hashlib.sha1(text.encode()).hexdigest()[:16]


def save(mngr, frame: int, loop, host: dict, env=None) -> None:
  """`env`: a pure-JAX env's state (with its observations), saved beside the loop."""
  ocp = _ocp()
  host = {**host, 'layout': layout(loop)}
  items = dict(loop=ocp.args.StandardSave(loop), host=ocp.args.JsonSave(host))
  if env is not None:    # orbax cannot write empty arrays (an MJX state has some): leave them out
    items['env'] = ocp.args.StandardSave([x for x in jax.tree_util.tree_leaves(env) if x.size])
  mngr.save(frame, args=ocp.args.Composite(**items))
  mngr.wait_until_finished()


class CheckpointMismatch(RuntimeError):
  """A checkpoint whose arrays do not fit this run's state."""


def restore(mngr, like, env_like=None) -> Optional[Tuple[Any, dict]]:
  """The newest checkpoint restored onto the structure of `like`, or None if there is none;
  CheckpointMismatch (one sentence) if its arrays do not fit `like`'s. With `env_like` (a pure
  env's state), the loop comes back as (loop, env)."""
  ocp = _ocp()
  step = mngr.latest_step()
  if step is None:
    return None
  host = mngr.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore())).host
  if host.get('layout') != layout(like):
    raise CheckpointMismatch(
        f'the checkpoint at frame {step} in {mngr.directory} does not fit this run\'s state '
        f'(written by another flowrl version, or with other sizes: network widths, buffer_size, '
        f'total_frames, seeds or envs_per_seed), so it cannot be resumed; start a new run.')
  abstract = lambda tree: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
  items = dict(loop=ocp.args.StandardRestore(abstract(like)), host=ocp.args.JsonRestore())
  if env_like is not None:
    like, treedef = jax.tree_util.tree_flatten(env_like)
    items['env'] = ocp.args.StandardRestore(abstract([x for x in like if x.size]))
  out = mngr.restore(step, args=ocp.args.Composite(**items))
  host = dict(out.host)
  host.pop('layout', None)
  if env_like is None:
    return out.loop, host
  saved = iter(out.env)
  env = [next(saved) if x.size else jnp.zeros(x.shape, x.dtype) for x in like]
  return (out.loop, jax.tree_util.tree_unflatten(treedef, env)), host


def saved_frames(run_dir: str) -> List[int]:
  """The frames of run_dir's checkpoints, oldest first (read without orbax)."""
  folder = os.path.join(run_dir, 'checkpoints')
  return sorted(int(d) for d in (os.listdir(folder) if os.path.isdir(folder) else [])
                if d.isdigit())


def latest_frame(run_dir: str) -> Optional[int]:
  """The frame of run_dir's newest checkpoint, or None if it has none."""
  return max(saved_frames(run_dir), default=None)
