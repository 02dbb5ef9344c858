"""The fused run against the per-frame loop: env frames/s at one update per frame on
HalfCheetah-v5 (batch 256), interleaved in rounds, printed as JSON.

  per-frame  `driver.run` as by default: one jitted frame step per env frame, the env stepped by
             the host between calls
  fused      the same run with `train.fused_frames=K`: K frames (act → env step through an
             ordered io_callback → add → update) per call (`flowrl.runtime.fused`)

Each run is a fresh process (its own compiles). Frames/s is the median of the run's logged
windows after the first `--skip` windows past warm-up (so the fused block's compile, which runs
beside the first updates, is not counted; `start_to_first_update_s` covers start-up). Both runs
do the same math: tests/test_fused.py checks that they log the same numbers. `ratio` is the
median over rounds of fused/per-frame; rounds alternate which runs first.

Usage: python benchmarks/fused_throughput.py [--methods sac,dacer] [--rounds 3] [--frames K]
                                             [--out file.json]
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile

from results_io import emit  # noqa: E402  (benchmarks/)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = 'HalfCheetah-v5'
WARM = 1000
# update frames per run and log window, per method (SAC ≈ 250 frames/s here, DACER ≈ 20)
PLAN = {'sac': (4000, 500), 'dacer': (400, 100), 'td3': (5000, 500), 'qsm': (1500, 250),
        'dipo': (300, 100), 'qvpo': (60, 20)}

CHILD = r'''
import csv, json, os, resource, sys, tempfile, time
sys.path.insert(0, os.environ['ROOT'])
from flowrl import run as cli
from flowrl.runtime.driver import run
t0 = time.time()
cli.parse_config([os.path.join(os.environ['ROOT'], 'gin', sys.argv[1] + '.gin')], sys.argv[2:])
agent, cfg, env = cli.build()
with tempfile.TemporaryDirectory() as d:
  s = run(agent, cfg, env, d, progress=False)
  rows = list(csv.DictReader(open(os.path.join(d, 'train.csv'))))
print(json.dumps({'start_to_first_update_s': s['seconds_to_first_update'],
                  'minor_faults_per_frame': resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                                            / cfg.total_frames,
                  'window_fps': [float(r['frames_per_second']) for r in rows
                                 if int(r['frame']) > cfg.learning_starts]}))
'''


def _run(method: str, fused_frames: int, **environ) -> dict:
  updates, window = PLAN[method]
  binds = [f'env.name="{ENV}"', 'train.batch_size=256', f'train.total_frames={WARM + updates}',
           f'train.learning_starts={WARM}', f'train.random_frames={WARM}',
           f'train.log_every={window}', f'train.eval_every={10 * (WARM + updates)}',
           f'train.checkpoint_every={10 * (WARM + updates)}', 'train.eval_episodes=1',
           f'train.fused_frames={fused_frames}']
  env = dict(os.environ, ROOT=ROOT, MUJOCO_GL='egl', **environ)
  out = subprocess.run([sys.executable, '-c', CHILD, method, *binds], env=env, cwd=ROOT,
                       capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'{method} fused_frames={fused_frames}: {out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(method: str, base: tuple, new: tuple, rounds: int, skip: int) -> dict:
  """`rounds` rounds of two runs of `method`, base = (name, fused_frames, environ) and new
  likewise, alternating which runs first: each round's frames/s (the median of its log windows
  after `skip`), start-up seconds and minor page faults per frame, and the median ratio
  new/base."""
  out = []
  for r in range(rounds):
    order = [base, new][::1 if r % 2 == 0 else -1]
    got = {name: _run(method, k, **environ) for name, k, environ in order}
    fps = {name: statistics.median(g['window_fps'][skip:]) for name, g in got.items()}
    out.append({**{f'{n}_frames_per_s': round(v, 2) for n, v in fps.items()},
                **{f'{n}_start_to_first_update_s': round(g['start_to_first_update_s'], 2)
                   for n, g in got.items()},
                **{f'{n}_minor_faults_per_frame': round(g['minor_faults_per_frame'])
                   for n, g in got.items()},
                'ratio': round(fps[new[0]] / fps[base[0]], 3)})
    print(json.dumps({method: out[-1]}), file=sys.stderr, flush=True)
  return {'ratio': statistics.median(x['ratio'] for x in out), 'rounds': out,
          'updates': PLAN[method][0]}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--methods', default='sac,dacer')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--frames', type=int, default=50, help='frames per fused block')
  p.add_argument('--skip', type=int, default=2, help='log windows left out after warm-up')
  p.add_argument('--out')
  args = p.parse_args()
  result = {'env': ENV, 'batch_size': 256, 'fused_frames': args.frames, 'methods': {}}
  for method in args.methods.split(','):
    result['methods'][method] = interleaved(method, ('per_frame', 0, {}),
                                            ('fused', args.frames, {}), args.rounds, args.skip)
  emit(result, args.out)


if __name__ == '__main__':
  main()
