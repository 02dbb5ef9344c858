"""The data-source interface: pure functions over the source's own state, so a source lives in the
loop state and its whole cycle runs inside one jitted step:

  add → cond(due, prepare → scan(gather → update → write over batches) → finish) → act

  init()                          -> state
  add(state, transition)          -> state      (columns [N, ...] of N envs; a dataset ignores it)
  due(state, frame)               -> bool       (a replay: warm-up and cadence; a rollout: full)
  prepare(state)                  -> state      (a rollout computes advantages)
  batches(state, keys [n, 2])     -> row indices [n, B], one batch per key
  gather(state, idx [B])          -> {column: [B, ...]}
  write(state, idx, columns)      -> state      (columns written back: DIPO's improved actions)
  finish(state)                   -> state      (a rollout clears)

Rows are gathered inside the update scan, so a batch sees what earlier updates of the same step
wrote back. `n` is the number of batches (updates) per due step, and `seed_axes` the vmap axes of
the state when seeds train together (None for parts shared by every seed, such as a dataset).
"""
from typing import Any, Callable, NamedTuple, Optional


class DataSource(NamedTuple):
  name: str
  init: Callable
  add: Callable
  due: Callable
  prepare: Callable
  batches: Callable
  gather: Callable
  write: Callable
  finish: Callable
  n: int
  seed_axes: Any = 0
  history: Optional[Callable] = None   # (state, column, rows, seed) -> host rows, for a resume
  collects: bool = True    # False: the driver steps no env, and each step is one update burst
  stop_when: Optional[Callable] = None  # (update metrics) -> bool: skip the burst's remaining
                                        #   updates (on-policy early stop on approximate KL)


class SourceChoice(NamedTuple):
  """A method's data source before the agent exists (bound as `train.source`): what it provides,
  checked against what the critic and signal require, and `make(agent, cfg, envs) -> DataSource`
  once the agent is compiled."""
  name: str
  provides: frozenset
  make: Callable
  check: Optional[Callable] = None     # (cfg) -> None, or a ConfigError in one sentence
  env: Optional[str] = None            # offline: the env the data came from (evaluation's)
  ref_scores: Optional[tuple] = None   # offline: (ref_min, ref_max) for normalized scores


def identity(state, *_):
  return state
