"""The local backend: runs spread over worker processes, one per core, each pinned to its core
with one XLA thread, seeds vmapped inside a run; layout chosen from the machine.

Why this layout (issue 4's measurements on an idle 2-core machine, SAC-sized update): one
process with XLA's default threads makes ~210 frames/s; two processes pinned one per core make
~132 each (1.26× in aggregate), two unpinned ones 109 each (1.04×). On an accelerator one
process runs all seeds vmapped. `benchmarks/seeds.py` measures this for a diffusion method.
"""
import math
import os
import signal
import time
from typing import Callable, List, NamedTuple, Optional, Sequence

from flowrl.sweep import job
from flowrl.sweep.spec import Run


class Layout(NamedTuple):
  workers: int            # runs executing at once
  seeds_per_run: int      # seeds vmapped inside one run
  pin: bool               # each worker on its own core with one XLA thread


def cores() -> List[int]:
  return sorted(os.sched_getaffinity(0))


def choose_layout(n_configs: int, n_seeds: int, workers: Optional[int] = None,
                  seeds_per_run: Optional[int] = None, accelerator: bool = False) -> Layout:
  """n_configs = variants × tasks. CPU: one worker per core; seed blocks as large as keeps every
  worker busy in the first round (fewer processes, fewer compiles). Accelerator: one worker,
  all seeds in one vmapped program. `workers` / `seeds_per_run` override."""
  n_cores = len(cores())
  if workers is None:
    workers = 1 if accelerator else n_cores
  workers = max(1, workers)
  if seeds_per_run is None:
    if accelerator:
      seeds_per_run = n_seeds
    else:
      blocks_per_config = max(1, math.ceil(workers / max(1, n_configs)))
      seeds_per_run = math.ceil(n_seeds / min(n_seeds, blocks_per_config))
  seeds_per_run = max(1, min(seeds_per_run, n_seeds))
  return Layout(workers, seeds_per_run, pin=not accelerator and workers > 1)


def run_all(out_dir: str, runs: Sequence[Run], layout: Layout,
            on_finish: Callable[[Run, str], None] = lambda run, status: None,
            poll_seconds: float = 0.2) -> dict:
  """Execute the runs not yet done, at most `layout.workers` at a time, each worker slot pinned
  to its own core. Ctrl-C stops the runs (each keeps its checkpoint) and re-raises.
  Returns {run key: status}."""
  todo = [r for r in runs if not job.is_done(out_dir, r)]
  slots = cores()
  free = list(range(layout.workers))
  active = {}                        # slot -> (run, process)
  status = {}
  try:
    while todo or active:
      while todo and free:
        slot = free.pop(0)
        run = todo.pop(0)
        core = slots[slot % len(slots)] if layout.pin else None
        active[slot] = (run, job.start(out_dir, run, core))
      time.sleep(poll_seconds)
      for slot, (run, proc) in list(active.items()):
        code = proc.poll()
        if code is None:
          continue
        del active[slot]
        free.append(slot)
        status[run.key] = job.finish(out_dir, run, code)
        on_finish(run, status[run.key])
  except KeyboardInterrupt:
    for run, proc in active.values():
      proc.send_signal(signal.SIGINT)      # flowrl.run finishes a checkpoint being written
    for run, proc in active.values():
      try:
        proc.wait(timeout=60)
      except Exception:
        proc.kill()
    raise
  return status
