"""One run of a sweep as a `python -m flowrl.run` process, the same on every backend: its folder,
its command (fresh or `--resume`), its thread and core placement, and its status marker.

A run folder with `done.json` is finished and skipped when the sweep restarts; one with a saved
config but no marker was interrupted and continues from its newest checkpoint (`--resume`)."""
import json
import os
import subprocess
import sys
from typing import Optional, Sequence

from flowrl import run as cli
from flowrl.sweep.spec import Run

DONE = 'done.json'
# XLA's CPU client with one compute thread, for a process that has one core to itself.
SINGLE_THREAD_XLA = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
EXIT_DIVERGED = 3     # flowrl.run's status for a run stopped by a non-finite loss


def run_dir(out_dir: str, run: Run) -> str:
  return os.path.join(out_dir, 'runs', run.key)


def is_done(out_dir: str, run: Run) -> bool:
  return os.path.exists(os.path.join(run_dir(out_dir, run), DONE))


def command(out_dir: str, run: Run) -> Sequence[str]:
  """Fresh: the run's gin files, bindings and seeds; interrupted before: --resume its folder."""
  folder = run_dir(out_dir, run)
  base = [sys.executable, '-m', 'flowrl.run', '--no-progress']
  if os.path.exists(os.path.join(folder, cli.CONFIG_NAME)):
    return base + ['--resume', folder]
  args = [f'--gin={g}' for g in run.gin_files]
  for b in run.bindings:
    args += ['--bind', b]
  return base + args + ['--seeds', seed_list(run.seeds), '--run-dir', folder]


def seed_list(seeds) -> str:
  """`--seeds` text naming exactly these seeds ('3,' is seed 3; '3' would mean three seeds)."""
  return ','.join(map(str, seeds)) + (',' if len(seeds) == 1 else '')


def environment(single_thread: bool) -> dict:
  env = dict(os.environ)
  if single_thread:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + SINGLE_THREAD_XLA).strip()
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env['PYTHONPATH'] = os.pathsep.join(p for p in (repo, env.get('PYTHONPATH')) if p)
  return env


def start(out_dir: str, run: Run, core: Optional[int] = None,
          single_thread: Optional[bool] = None) -> subprocess.Popen:
  """Launch the run; with `core`, pinned to that core with one XLA thread (`single_thread`
  alone: one thread, unpinned, as on a Ray worker with one CPU). Output: the folder's stdout.log."""
  folder = run_dir(out_dir, run)
  os.makedirs(folder, exist_ok=True)
  log = open(os.path.join(folder, 'stdout.log'), 'a')
  env = environment(core is not None if single_thread is None else single_thread)
  env.pop('FLOWRL_PIN_CORE', None)
  if core is not None:
    env['FLOWRL_PIN_CORE'] = str(core)   # flowrl.run pins itself first thing (no fork here)
  return subprocess.Popen(command(out_dir, run), stdout=log, stderr=subprocess.STDOUT, env=env)


def finish(out_dir: str, run: Run, returncode: int) -> str:
  """Record how the run ended: 'finished' and 'diverged' (its logs up to the divergence stand)
  are final; anything else is 'failed' and is retried when the sweep restarts."""
  folder = run_dir(out_dir, run)
  status = {0: 'finished', EXIT_DIVERGED: 'diverged'}.get(returncode, 'failed')
  if status != 'failed':
    with open(os.path.join(folder, DONE), 'w') as f:
      json.dump({'status': status, 'returncode': returncode}, f)
  return status


def frames_done(out_dir: str, run: Run) -> int:
  """The newest logged frame of the run (its seeds advance together): the first column of the last
  line of a train.csv, read from the end of the file; 0 before its first log."""
  folder = run_dir(out_dir, run)
  for path in (os.path.join(folder, f'seed_{run.seeds[0]}', 'train.csv'),
               os.path.join(folder, 'train.csv')):
    if not os.path.exists(path):
      continue
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 4096))
      lines = [l for l in f.read().decode(errors='replace').splitlines() if l.strip()]
    try:
      return int(float(lines[-1].split(',')[0]))
    except (IndexError, ValueError):
      return 0
  return 0


def last_line(out_dir: str, run: Run) -> str:
  path = os.path.join(run_dir(out_dir, run), 'stdout.log')
  if not os.path.exists(path):
    return ''
  lines = [l.strip() for l in open(path, errors='replace') if l.strip()]
  return lines[-1] if lines else ''
