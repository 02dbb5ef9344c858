"""The data-source interface: pure functions over the source's own state, so a source lives in the
train state and its whole cycle runs inside one jitted step:

  add → cond(due, prepare → scan(update over batches) → finish) → act

  init()                          -> state
  add(state, transition)          -> state      (a dataset ignores it)
  due(state, frame)               -> bool       (a replay: warm-up and cadence; a rollout: full)
  prepare(state, value_fn)        -> state      (a rollout computes values and advantages)
  batches(state, key)             -> (batches with a leading [n] axis, row indices [n, B])
  write(state, idx, columns)      -> state      (columns written back: DIPO's improved actions)
  finish(state)                   -> state      (a rollout clears)
"""
from typing import Callable, NamedTuple


class DataSource(NamedTuple):
  name: str
  init: Callable
  add: Callable
  due: Callable
  prepare: Callable
  batches: Callable
  write: Callable
  finish: Callable


def identity(state, *_):
  return state
