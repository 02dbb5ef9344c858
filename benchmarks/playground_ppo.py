"""PPO on N vmapped MuJoCo Playground envs against N gymnasium-API envs in a `SyncVectorEnv`, on
this machine's CPU: env frames/s of whole training (rollouts, GAE and the epochs of updates),
interleaved in rounds, printed as JSON.

  sync        dm_control's cheetah-run (C MuJoCo), N envs stepped by the host in gymnasium's
              SyncVectorEnv, one jitted frame step per vector step (today's loop)
  playground  Playground's CheetahRun (MJX, impl 'jax'), N envs vmapped inside the fused run:
              blocks of `--block` frames (act → env step → add → the updates when a rollout is
              full) as one program, the host called once per block

The math of the two runs is the same PPO (gin/ppo.gin with N envs × `--steps` steps per
rollout); the envs are the same task in two simulators. Frames/s is the median of the logged
windows after the first `--skip` (compiles: Playground's take about a minute each, so runs use
the persistent XLA cache and a first, unreported warm-up round). No GPU is lent to this project:
the GPU figure in docs/envs.md is on paper, from what this run shows on CPU.

Usage: python benchmarks/playground_ppo.py [--envs 16] [--steps 128] [--rounds 2] [--out f.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from results_io import emit  # noqa: E402  (benchmarks/)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = {'sync': 'dmc:cheetah-run', 'playground': 'playground:CheetahRun'}

CHILD = r'''
import csv, json, os, sys, tempfile, time
sys.path.insert(0, os.environ['ROOT'])
from flowrl import run as cli
from flowrl.runtime.driver import run
cli.enable_compile_cache(os.environ['CACHE'])
cli.parse_config([os.path.join(os.environ['ROOT'], 'gin', 'ppo.gin')], sys.argv[1:])
agent, cfg, env = cli.build()
with tempfile.TemporaryDirectory() as d:
  s = run(agent, cfg, env, d, progress=False)
  rows = list(csv.DictReader(open(os.path.join(d, 'train.csv'))))
print(json.dumps({'start_to_first_update_s': s['seconds_to_first_update'],
                  'seconds': s['seconds'],
                  'window_fps': [float(r['frames_per_second']) for r in rows]}))
'''


def _run(backend: str, envs: int, steps: int, rollouts: int, block: int, cache: str) -> dict:
  frames = envs * steps
  binds = [f'env.name="{TASKS[backend]}"', f'train.envs_per_seed={envs}',
           f'rollout_source.steps={steps}', f'train.total_frames={frames * rollouts}',
           f'train.log_every={frames}', f'train.eval_every={10 * frames * rollouts}',
           f'train.checkpoint_every={10 * frames * rollouts}', 'train.eval_episodes=1',
           f'train.fused_frames={block if backend == "playground" else 0}']
  env = dict(os.environ, ROOT=ROOT, MUJOCO_GL='egl', CACHE=cache)
  out = subprocess.run([sys.executable, '-c', CHILD, *binds], env=env, cwd=ROOT,
                       capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'{backend}: {out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--envs', type=int, default=16)
  p.add_argument('--steps', type=int, default=128, help='steps per env per rollout')
  p.add_argument('--rollouts', type=int, default=6)
  p.add_argument('--block', type=int, default=0, help='frames per fused block (0: a rollout)')
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument('--skip', type=int, default=2, help='log windows left out at the start')
  p.add_argument('--cache', default=os.path.join(os.path.expanduser('~'), '.cache', 'flowrl',
                                                 'xla-bench'))
  p.add_argument('--out')
  args = p.parse_args()
  block = args.block or args.envs * args.steps
  plan = (args.envs, args.steps, args.rollouts, block, args.cache)
  for backend in TASKS:                     # warm-up: fills the compile cache, not reported
    _run(backend, *plan)
  rounds = []
  for r in range(args.rounds):
    order = list(TASKS)[::1 if r % 2 == 0 else -1]
    got = {b: _run(b, *plan) for b in order}
    fps = {b: statistics.median(g['window_fps'][args.skip:]) for b, g in got.items()}
    rounds.append({**{f'{b}_frames_per_s': round(v, 1) for b, v in fps.items()},
                   **{f'{b}_start_to_first_update_s': round(g['start_to_first_update_s'], 1)
                      for b, g in got.items()},
                   'ratio': round(fps['playground'] / fps['sync'], 3)})
    print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
  emit({'method': 'ppo', 'tasks': TASKS, 'envs': args.envs, 'steps_per_rollout': args.steps,
        'fused_block_frames': block, 'ratio_playground_over_sync':
        statistics.median(x['ratio'] for x in rounds), 'rounds': rounds}, args.out)


if __name__ == '__main__':
  main()
