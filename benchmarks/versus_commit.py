"""This tree against an earlier commit, interleaved, through each tree's own training loop: per
method, end-to-end frames/s once updates run (HalfCheetah-v5, batch 256, one update per frame),
and process start -> first finished update. Prints JSON; `ratio` is the median over rounds of
this tree's frames/s over the base's (rounds alternate which tree runs first, so outside load
falls on both). A refactor of the loop must keep every ratio at 0.97 or more.

Usage: python benchmarks/versus_commit.py --base COMMIT [--methods sac,dacer] [--rounds 3]
           [--frames 2500] [--out file.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = 'HalfCheetah-v5'
METHODS = ('sac', 'td3', 'dipo', 'qsm', 'dacer', 'sdac', 'idem', 'dpmd', 'gempo', 'qvpo')
WARM = 500

CHILD = r'''
import json, os, sys, tempfile, time
t0 = float(os.environ['SPAWNED_AT'])
sys.path.insert(0, os.environ['TREE'])
os.chdir(os.environ['TREE'])
from flowrl import run as cli
try:
  from flowrl.runtime.driver import run
except ImportError:
  from flowrl.compose.offpolicy import run
cli.parse_config([os.path.join(os.environ['TREE'], 'gin', sys.argv[1] + '.gin')], sys.argv[3:])
cli.enable_compile_cache('off')
agent, cfg, env = cli.build()
with tempfile.TemporaryDirectory() as d:
  s = run(agent, cfg, env, d, progress=False)
end = t0 + s['seconds']
frames = cfg.total_frames - cfg.learning_starts
print(json.dumps({'start_to_first_update_s': s['first_update_done_at'] - t0,
                  'frames_per_s': frames / (t0 + s['seconds'] - s['first_update_done_at'])}))
'''


def _child(tree: str, method: str, frames: int) -> dict:
  binds = [f'env.name="{ENV}"', 'train.batch_size=256', f'train.total_frames={frames}',
           f'train.learning_starts={WARM}', f'train.random_frames={WARM}',
           f'train.eval_every={10 * frames}', f'train.checkpoint_every={10 * frames}',
           f'train.log_every={frames}']
  env = dict(os.environ, TREE=tree, SPAWNED_AT=repr(time.time()), MUJOCO_GL='egl')
  env.pop('PYTHONPATH', None)
  out = subprocess.run([sys.executable, '-c', CHILD, method, '--', *binds], env=env, cwd=tree,
                       capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'{method} in {tree}: {out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--base', required=True, help='the commit to compare against')
  p.add_argument('--methods', default=','.join(METHODS))
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--frames', type=int, default=2500)
  p.add_argument('--out')
  args = p.parse_args()
  base = tempfile.mkdtemp(prefix='flowrl-base-')
  subprocess.run(['git', 'worktree', 'add', '--detach', base, args.base], cwd=ROOT, check=True,
                 capture_output=True)
  commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
  results = {'env': ENV, 'base': args.base, 'head': commit, 'frames': args.frames,
             'learning_starts': WARM, 'methods': {}}
  try:
    for method in args.methods.split(','):
      rounds = []
      for r in range(args.rounds):
        order = [('head', ROOT), ('base', base)][::1 if r % 2 == 0 else -1]
        got = {name: _child(tree, method, args.frames) for name, tree in order}
        rounds.append(got)
      ratio = statistics.median(x['head']['frames_per_s'] / x['base']['frames_per_s']
                                for x in rounds)
      med = lambda who, k: round(statistics.median(x[who][k] for x in rounds), 2)
      results['methods'][method] = {
          'ratio': round(ratio, 3),
          'head_frames_per_s': med('head', 'frames_per_s'),
          'base_frames_per_s': med('base', 'frames_per_s'),
          'head_start_to_first_update_s': med('head', 'start_to_first_update_s'),
          'base_start_to_first_update_s': med('base', 'start_to_first_update_s')}
      print(json.dumps({method: results['methods'][method]}), file=sys.stderr, flush=True)
  finally:
    subprocess.run(['git', 'worktree', 'remove', '--force', base], cwd=ROOT, capture_output=True)
  text = json.dumps(results, indent=1)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  main()
