"""This tree against an earlier commit, interleaved, through each tree's own training loop: per
method, end-to-end frames/s once updates run (HalfCheetah-v5, batch 256, one update per frame),
and process start -> first finished update. Prints JSON; `ratio` is the median over rounds of
this tree's frames/s over the base's (rounds alternate which tree runs first, so outside load
falls on both). A refactor of the loop must keep every ratio at 0.97 or more.

Each run trains past 500 warm-up frames for about `--seconds` of updates, the frame count taken
from the method's frames/s in benchmarks/results/throughput.json (at least 40 update frames).

With --step-program, each round times only the jitted frame step (random transitions past
warm-up, no env or logs), which isolates the loop's own code from the env's and the host's noise.

Usage: python benchmarks/versus_commit.py --base COMMIT [--methods sac,dacer] [--rounds 3]
           [--seconds 12] [--step-program] [--out file.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from results_io import emit  # noqa: E402  (benchmarks/)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = 'HalfCheetah-v5'
METHODS = ('sac', 'td3', 'dipo', 'qsm', 'dacer', 'sdac', 'idem', 'dpmd', 'gempo', 'qvpo')
WARM = 500
# The run's final evaluation falls inside the timed window. One episode keeps it a small part of
# the window: five of QVPO's (best-of-32 candidates through a 20-step chain at every step) took
# about a third of a 60-s window (its frames/s rose 1.4x with one).
EVAL_EPISODES = 1

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


STEP_CHILD = r'''
import os, sys, time, json
tree = os.environ['TREE']
sys.path.insert(0, tree); os.chdir(tree)
from flowrl import run as cli
import jax, jax.numpy as jnp, numpy as np
cli.parse_config([os.path.join(tree, 'gin', sys.argv[1] + '.gin')], ['env.name="HalfCheetah-v5"', 'train.learning_starts=300', 'train.random_frames=300', 'train.total_frames=100000'])
agent, cfg, _ = cli.build()
o, a = agent.spec.obs_dim, agent.spec.act_dim
f32 = np.float32
rng = np.random.default_rng(0)
try:
  from flowrl.compose.step import make_frame_step, init_loop, make_source
  source = make_source(agent, cfg)
  step = jax.jit(make_frame_step(agent, source, cfg), donate_argnums=0)
  loop = jax.jit(lambda: init_loop(agent, source, 0))()
  tr = lambda: {'obs': rng.normal(size=(1, o)).astype(f32), 'action': rng.uniform(-1, 1, (1, a)).astype(f32),
                'reward': np.zeros(1, f32), 'next_obs': rng.normal(size=(1, o)).astype(f32),
                'terminated': np.zeros(1, f32), 'truncated': np.zeros(1, f32)}
  nxt = lambda: rng.normal(size=(1, o)).astype(f32)
except ImportError:
  from flowrl.compose.train_step import make_frame_step, init_loop
  from flowrl.primitives.critic import Batch
  step = jax.jit(make_frame_step(agent, cfg), donate_argnums=0)
  loop = jax.jit(lambda: init_loop(agent, cfg))()
  def tr():
    act = rng.uniform(-1, 1, a).astype(f32)
    return Batch(rng.normal(size=o).astype(f32), act, f32(0), rng.normal(size=o).astype(f32), f32(0), act)
  nxt = lambda: rng.normal(size=o).astype(f32)
loop, action, _ = step(loop, tr(), np.bool_(False), nxt())
for i in range(302):
  loop, action, _ = step(loop, tr(), np.bool_(True), nxt())
jax.block_until_ready(action)
t = time.perf_counter(); n = 0
while time.perf_counter() - t < float(os.environ['SECONDS_']):
  loop, action, _ = step(loop, tr(), np.bool_(True), nxt()); jax.block_until_ready(action); n += 1
print(json.dumps({'tree': tree, 'steps_per_s': round(n / (time.perf_counter() - t), 3)}))
'''


def _step_program(tree: str, method: str, seconds: float) -> float:
  """Frame steps/s of the jitted step alone (random transitions, past warm-up; no env, no
  logs): the part of a run that the loop's code decides, without the env's and the host's noise."""
  env = dict(os.environ, TREE=tree, SECONDS_=repr(seconds), MUJOCO_GL='egl')
  env.pop('PYTHONPATH', None)
  out = subprocess.run([sys.executable, '-c', STEP_CHILD, method], env=env, cwd=tree,
                       capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'{method} in {tree}: {out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])['steps_per_s']


def _update_frames(method: str, seconds: float) -> int:
  path = os.path.join(ROOT, 'benchmarks', 'results', 'throughput.json')
  fps = json.load(open(path))['methods'].get(method, {}).get('frames_per_s', 50.0)
  return int(max(40, min(2000, seconds * fps)))


def _child(tree: str, method: str, frames: int) -> dict:
  binds = [f'env.name="{ENV}"', 'train.batch_size=256', f'train.total_frames={frames}',
           f'train.learning_starts={WARM}', f'train.random_frames={WARM}',
           f'train.eval_every={10 * frames}', f'train.checkpoint_every={10 * frames}',
           f'train.log_every={frames}', f'train.eval_episodes={EVAL_EPISODES}']
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
  p.add_argument('--seconds', type=float, default=12.0)
  p.add_argument('--step-program', action='store_true',
                  help='time the jitted frame step alone instead of whole runs')
  p.add_argument('--out')
  args = p.parse_args()
  base = tempfile.mkdtemp(prefix='flowrl-base-')
  subprocess.run(['git', 'worktree', 'add', '--detach', base, args.base], cwd=ROOT, check=True,
                 capture_output=True)
  commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
  results = {'env': ENV, 'base': args.base, 'head': commit, 'learning_starts': WARM,
             'methods': {}}
  try:
    for method in args.methods.split(','):
      if args.step_program:
        pairs = []
        for r in range(args.rounds):
          order = [('head', ROOT), ('base', base)][::1 if r % 2 == 0 else -1]
          pairs.append({name: _step_program(tree, method, args.seconds) for name, tree in order})
        results['methods'][method] = {
            'step_program_ratio': round(statistics.median(x['head'] / x['base'] for x in pairs), 3),
            'head_steps_per_s': [x['head'] for x in pairs],
            'base_steps_per_s': [x['base'] for x in pairs]}
        print(json.dumps({method: results['methods'][method]}), file=sys.stderr, flush=True)
        continue
      rounds, frames = [], WARM + _update_frames(method, args.seconds)
      for r in range(args.rounds):
        order = [('head', ROOT), ('base', base)][::1 if r % 2 == 0 else -1]
        got = {name: _child(tree, method, frames) for name, tree in order}
        rounds.append(got)
      ratio = statistics.median(x['head']['frames_per_s'] / x['base']['frames_per_s']
                                for x in rounds)
      med = lambda who, k: round(statistics.median(x[who][k] for x in rounds), 2)
      results['methods'][method] = {
          'ratio': round(ratio, 3), 'frames': frames,
          'head_frames_per_s': med('head', 'frames_per_s'),
          'base_frames_per_s': med('base', 'frames_per_s'),
          'head_start_to_first_update_s': med('head', 'start_to_first_update_s'),
          'base_start_to_first_update_s': med('base', 'start_to_first_update_s')}
      print(json.dumps({method: results['methods'][method]}), file=sys.stderr, flush=True)
  finally:
    subprocess.run(['git', 'worktree', 'remove', '--force', base], cwd=ROOT, capture_output=True)
  emit(results, args.out, indent=1)


if __name__ == '__main__':
  main()
