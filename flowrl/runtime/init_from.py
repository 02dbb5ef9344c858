"""`--init-from RUN_DIR`: start a new run from another run's trained networks (a behaviour-cloned
or offline-trained policy fine-tuned online: DPPO, ReinFlow; the offline issue builds on it).

The newest checkpoint of RUN_DIR is read without knowing its method (orbax restores the raw
tree). Its actor parameters replace this run's actor, its EMA target and, where a primitive keeps
one, the frozen reference actor (ReinFlow's W2 term); the optimizer starts fresh. The critic
and the running observation statistics are taken too where their shapes match this method's,
else this run's fresh ones stay (and the run says so). A checkpoint of
several seeds gives seed s to seed s when the counts agree, else its first seed to every seed.
An actor whose parameters do not fit is one sentence naming the first that does not.
"""
import os
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from flowrl.errors import ConfigError


def read_checkpoint(run_dir: str, frame: Optional[int] = None,
                    flag: str = '--init-from') -> Tuple[dict, int]:
  """A checkpoint's loop state as a raw tree (dicts of arrays) and its frame: the newest, or the
  one at `frame`. `flag` names the option that asked, for the error sentence."""
  from flowrl.runtime import checkpoint
  frames = checkpoint.saved_frames(run_dir)
  if not frames:
    raise ConfigError(f'{flag} {run_dir!r}: it has no checkpoint to start from (a run folder '
                      f'keeps them in checkpoints/).')
  frame = frames[-1] if frame is None else frame
  if frame not in frames:
    raise ConfigError(f'{flag} {run_dir!r}: it has no checkpoint at frame {frame}; it has '
                      f'{", ".join(map(str, frames))}.')
  import orbax.checkpoint as ocp
  mngr = checkpoint.manager(run_dir)
  try:
    raw = mngr.restore(frame, args=ocp.args.Composite(loop=ocp.args.StandardRestore())).loop
  finally:
    mngr.close()
  return raw, frame


def _field(tree, *path):
  for name in path:
    if isinstance(tree, dict):
      tree = tree.get(name)
    elif isinstance(tree, (list, tuple)):
      tree = None
    else:
      tree = getattr(tree, name, None)
    if tree is None:
      return None
  return tree


def _fit(saved, like, seeds: int, what: str, source: str):
  """`saved` (a raw tree) cast onto `like`'s structure and shapes, per seed; None where it does
  not fit (with the first mismatch in words)."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  out = []
  for path, leaf in paths:
    keys = [getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', None))) for k in path]
    value = saved
    for k in keys:
      value = value.get(k) if isinstance(value, dict) else (
          value[k] if isinstance(value, (list, tuple)) and isinstance(k, int) and k < len(value)
          else None)
      if value is None:
        return None, f"{what} parameter {jax.tree_util.keystr(path)} is not in {source}"
    value = np.asarray(value)
    want = tuple(leaf.shape)
    if seeds and value.shape != want:             # per-seed state: [S, ...]
      if value.shape[1:] == want[1:]:
        value = np.broadcast_to(value[:1], want)  # another seed count: its first seed for all
      elif value.shape == want[1:]:
        value = np.broadcast_to(value[None], want)
    elif not seeds and value.shape != want and value.shape[1:] == want:
      value = value[0]                            # a run of several seeds: its first seed
    if value.shape != want:
      return None, (f"{what} parameter {jax.tree_util.keystr(path)} has shape {value.shape} in "
                    f"{source} and {want} here")
    out.append(jnp.asarray(value, leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out), None


def transplant(agent_state, raw: dict, run_dir: str, seeds: int) -> Tuple[object, List[str]]:
  """This run's train state with RUN_DIR's actor (required; also its reference and evaluation
  actors, where it keeps them), critic and observation statistics (where they fit). Returns
  (state, notes on what was kept fresh)."""
  saved_agent = _field(raw, 'agent')
  source = 'its checkpoint'
  params, why = _fit(_field(saved_agent, 'actor', 'params'), agent_state.actor.params, seeds,
                     'actor', source)
  if params is None:
    raise ConfigError(f'--init-from {run_dir!r}: its policy does not fit this method\'s ({why}); '
                      f'start from a run of the same parameterization and network sizes.')
  copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)
  actor = agent_state.actor._replace(params=params, target_params=copy(params))
  state, notes = agent_state._replace(actor=actor), []
  if jax.tree_util.tree_leaves(agent_state.reference):   # a BC-to-pretrained term pulls to it
    state = state._replace(reference=copy(params))
  if jax.tree_util.tree_leaves(agent_state.eval_actor):  # evaluated from the loaded actor too
    state = state._replace(eval_actor=agent_state.eval_actor._replace(params=copy(params)))
  critic, why = _fit(_field(saved_agent, 'critic', 'params'), agent_state.critic.params, seeds,
                     'critic', source)
  if critic is None:
    notes.append(f'critic kept fresh: {why}')
  else:
    state = state._replace(critic=state.critic._replace(params=critic,
                                                        target_params=copy(critic)))
  if jax.tree_util.tree_leaves(agent_state.obs_norm):
    stats, why = _fit(_field(saved_agent, 'obs_norm'), agent_state.obs_norm, seeds,
                      'observation statistics', source)
    if stats is None:
      notes.append(f'observation statistics kept fresh: {why}')
    else:
      state = state._replace(obs_norm=stats)
  return state, notes


def check_run_dir(run_dir: str) -> None:
  if not os.path.isdir(run_dir):
    raise ConfigError(f'--init-from {run_dir!r}: no such run folder.')
