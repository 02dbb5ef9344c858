"""Wall time of S seeds of one method on HalfCheetah-v5, printed as JSON, for S = 1, 2, 4, 8:

  sequential   S separate runs one after another (S × the one-seed run, measured in the block)
  vmapped      one `python -m flowrl.run --seeds S` process (XLA's default threads)
  pinned       the sweep's local layout (flowrl.sweep.local): one worker per core, each pinned
               with one XLA thread, seeds vmapped inside a worker (ceil(S / cores) each)

Every time is a whole run: process start, compile, `--frames` env frames with one update per frame
after `--learning-starts`, one evaluation episode at the end. Each S block first times the one-seed
run alone with default settings (the baseline) and reports every layout as a ratio to it, so the
machine's load drifting between blocks cancels. Target (issue 4) on 2 cores: 4 seeds in ≤ 3.0× the
one-seed run (sequential is 4×).

Usage: python benchmarks/seeds.py [--method sac] [--frames 3000] [--seeds 1,2,4,8] [--out f.json]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def bindings(frames: int, learning_starts: int):
  return ['env.name="HalfCheetah-v5"', f'train.total_frames={frames}',
          f'train.random_frames={learning_starts}', f'train.learning_starts={learning_starts}',
          f'train.eval_every={frames}', 'train.eval_episodes=1', f'train.checkpoint_every={frames}',
          f'train.buffer_size={frames}', 'train.log_every=1000']


def one_process(method, seeds, binds, folder, env_extra=None, core=None) -> subprocess.Popen:
  from flowrl.sweep.job import seed_list
  cmd = [sys.executable, '-m', 'flowrl.run', f'--gin=gin/{method}.gin', '--no-progress',
         '--run-dir', folder] + (['--seeds', seed_list(seeds)] if seeds else [])
  for b in binds:
    cmd += ['--bind', b]
  env = {**os.environ, 'PYTHONPATH': ROOT, 'FLOWRL_COMPILE_CACHE': 'off'}
  env.pop('FLOWRL_PIN_CORE', None)
  if env_extra:
    env.update(env_extra)
  if core is not None:
    env['FLOWRL_PIN_CORE'] = str(core)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def timed(procs) -> float:
  start = time.time()
  for p in procs:
    _, err = p.communicate()
    if p.returncode != 0:
      raise RuntimeError(err[-2000:])
  return time.time() - start


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--method', default='sac')
  p.add_argument('--frames', type=int, default=3000)
  p.add_argument('--learning-starts', type=int, default=1000)
  p.add_argument('--seeds', default='1,2,4,8')
  p.add_argument('--out')
  args = p.parse_args()
  from flowrl.sweep.job import SINGLE_THREAD_XLA
  from flowrl.sweep.local import cores
  binds = bindings(args.frames, args.learning_starts)
  cpu = cores()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    n = 0

    def folder():
      nonlocal n
      n += 1
      return os.path.join(tmp, f'r{n}')

    for s in (int(x) for x in args.seeds.split(',')):
      seeds = list(range(s))
      alone = timed([one_process(args.method, None, binds, folder())])   # a plain run, seed 0
      vmapped = timed([one_process(args.method, seeds, binds, folder())])
      workers = min(s, len(cpu))
      per = math.ceil(s / workers)
      blocks = [seeds[i:i + per] for i in range(0, s, per)]
      xla = {'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') + ' ' + SINGLE_THREAD_XLA).strip()}
      pinned = timed([one_process(args.method, b, binds, folder(), xla if workers > 1 else None,
                                  cpu[i] if workers > 1 else None) for i, b in enumerate(blocks)])
      row = {'seeds': s, 'one_seed_alone_s': round(alone, 1),
             'sequential_s': round(s * alone, 1), 'vmapped_s': round(vmapped, 1),
             'pinned_s': round(pinned, 1), 'pinned_layout': f'{len(blocks)} workers × {per} seeds',
             'vmapped_ratio': round(vmapped / alone, 2), 'pinned_ratio': round(pinned / alone, 2),
             'sequential_ratio': float(s)}
      rows.append(row)
      print(json.dumps(row), file=sys.stderr, flush=True)
  four = next((r for r in rows if r['seeds'] == 4), None)
  result = {'method': args.method, 'env': 'HalfCheetah-v5', 'frames': args.frames,
            'learning_starts': args.learning_starts, 'cores': len(cpu), 'rows': rows}
  if four:
    best = min(four['vmapped_ratio'], four['pinned_ratio'])
    result['four_seeds_best_ratio'] = best
    result['target_four_seeds_le_3x'] = best <= 3.0
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  main()
