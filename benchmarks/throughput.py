"""Speed of every method file on HalfCheetah-v5 (batch 256), printed as JSON.

Per method:
  start_to_first_update_s   process start -> first finished update of a run through the library's
                            loop (driver.run, as `python -m flowrl.run` calls it), in a fresh
                            process, with JAX's persistent compilation cache cold and then warm
                            (learning_starts = 1)
  first_update_compute_s    of which the first update's own run time
  start_to_first_periodic_s DACER only: process start -> the end of the periodic step that follows
                            update 0, the policy's entropy estimate and α's first step (as the
                            official code does on update 0: 51,200 chain samples), a program of
                            its own that runs right after the update
  recompiles_after_first    compiled versions of the frame step beyond the first after 40 more
                            frames (crossing actor / no-actor updates); must be 0
  updates_per_s             the bare jitted update (sample from the device buffer, update, write back)
  update_gflop, matmul_share  analytic matmul FLOPs per update (scan bodies × length; the actor
                            step weighted 1/actor_every) and the share of the machine's matmul rate,
                            timed in the same run with a large jnp.dot
  one_per_core_updates_per_s, one_per_core_matmul_share
                            the same bare update in one single-threaded process pinned to each
                            core, all running together (a sweep's layout): aggregate updates/s and
                            share. On small matmuls XLA's intra-op threads leave most of the
                            second core idle (benchmarks/matmul_ceiling.py).
  frames_per_s, baseline_frames_per_s, speedup
                            end-to-end env frames/s at one update per frame: this library's loop
                            (device buffer, one jitted call per frame) against the common design
                            (numpy replay buffer on the host, one jitted call per update and one
                            per action), measured interleaved in rounds; speedup is the median
                            of per-round ratios.
Usage: python benchmarks/throughput.py [--methods sac,dacer] [--seconds 6] [--out file.json]
"""
import time

T_IMPORT = time.time()

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import emit  # noqa: E402  (benchmarks/)
os.environ.setdefault('MUJOCO_GL', 'egl')
ENV = 'HalfCheetah-v5'


def _process_start() -> float:
  """When the parent launched this process (it passes its clock in FLOWRL_SPAWNED_AT). psutil's
  create_time is not used: it adds the boot time, which /proc/stat rounds to whole seconds (here
  it put the start 0.27 s early)."""
  return float(os.environ.get('FLOWRL_SPAWNED_AT', T_IMPORT))


def _configure(method: str, extra=()):
  from flowrl import run as cli
  cli.parse_config([os.path.join(ROOT, 'gin', f'{method}.gin')],
                   [f'env.name="{ENV}"', 'train.batch_size=256', *extra])
  return cli.build()


def startup(method: str, cache: str) -> dict:
  """Child process: time from process start to the first finished update along `flowrl.run`'s own
  path (`driver.run`: its imports, envs, logs and checkpoints, the ahead-of-time compilation),
  then 40 more frames through a plain `jax.jit` of the same frame step to count how many versions
  it compiles (1 means no recompilation)."""
  import numpy as np
  from flowrl import run as cli
  agent, cfg, _ = _configure(method, ['train.learning_starts=1', 'train.random_frames=1',
                                      'train.total_frames=2', 'train.buffer_size=1000'])
  cli.enable_compile_cache(cache)
  from flowrl.runtime.driver import run
  with tempfile.TemporaryDirectory() as run_dir:
    summary = run(agent, cfg, ENV, run_dir, progress=False)
  first = summary['first_update_done_at'] - _process_start()

  import jax
  from flowrl.compose.step import init_loop, make_frame_step, replay_source
  from flowrl.envs import make_env
  f32 = np.float32
  env = make_env(ENV, 0)
  source = replay_source(agent, cfg)
  step = jax.jit(make_frame_step(agent, source, cfg), donate_argnums=0)
  loop = jax.jit(lambda: init_loop(agent, source, cfg.seed))()
  obs, _ = env.reset(seed=0)
  loop, action, _ = step(loop, transition(obs, np.zeros(agent.spec.act_dim, f32), 0, obs, 0),
                         np.bool_(False), obs[None])
  for i in range(41):
    a = np.asarray(action)[0]
    nxt, r, term, trunc, _ = env.step(a)
    loop, action, metrics = step(loop, transition(obs, a, r, nxt, term), np.bool_(True), nxt[None])
    obs = nxt
  jax.block_until_ready(action)
  periodic = {}
  if 'first_periodic_done_at' in summary:
    periodic = {'start_to_first_periodic_s':
                round(summary['first_periodic_done_at'] - _process_start(), 2)}
  return {'start_to_first_update_s': round(first, 2), **periodic,
          'first_update_compute_s': round(summary['first_update_call_seconds'], 2),
          'compiled_versions': step._cache_size()}


def transition(obs, action, reward, next_obs, terminated) -> dict:
  """One env's transition as the frame step takes it: columns with a leading env axis of 1."""
  import numpy as np
  f32 = np.float32
  return {'obs': np.asarray(obs, f32)[None], 'action': np.asarray(action, f32)[None],
          'reward': np.full(1, reward, f32), 'next_obs': np.asarray(next_obs, f32)[None],
          'terminated': np.full(1, terminated, f32)}


def matmul_rate(n: int = 2048, reps: int = 6) -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  f = jax.jit(lambda x: x @ a)
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / float(sorted(times)[len(times) // 2])


def _timed(fn, seconds: float, min_calls: int = 3) -> float:
  """Calls per second of fn() (which blocks), after one warm call."""
  fn()
  calls, t0 = 0, time.perf_counter()
  while calls < min_calls or time.perf_counter() - t0 < seconds:
    fn()
    calls += 1
  return calls / (time.perf_counter() - t0)


def bare_update(method: str, seconds: float):
  """(updates/s of the bare jitted update on a filled device buffer, its matmul FLOPs, agent, cfg)."""
  import jax
  import jax.numpy as jnp
  from flops import matmul_flops
  from flowrl.compose.step import fused_updates, init_loop, replay_source

  warm = 1000
  agent, cfg, _ = _configure(method, [f'train.learning_starts={warm}', f'train.random_frames={warm}',
                                      'train.buffer_size=100000'])
  spec = agent.spec
  source = replay_source(agent, cfg)
  init = jax.jit(lambda: init_loop(agent, source, cfg.seed))
  loop = init()
  k = jax.random.split(jax.random.PRNGKey(1), 4)
  n = 10_000
  act = jax.random.uniform(k[1], (n, spec.act_dim), minval=-1, maxval=1)
  fill = {'obs': jax.random.normal(k[0], (n, spec.obs_dim)), 'action': act,
          'reward': jax.random.normal(k[2], (n,)), 'next_obs': jax.random.normal(k[3], (n, spec.obs_dim)),
          'terminated': jnp.zeros(n), **{c: act for c in agent.columns}}
  buf = loop.data._replace(data={c: d.at[:n].set(fill[c]) for c, d in loop.data.data.items()},
                           size=jnp.int32(n), ptr=jnp.int32(n))
  run1 = jax.jit(fused_updates(agent, source._replace(n=1)), donate_argnums=(0, 1))
  holder = {'state': loop.agent, 'buf': buf, 'key': jax.random.PRNGKey(2)}

  def one_update():
    holder['key'], sub = jax.random.split(holder['key'])
    holder['state'], holder['buf'], m = run1(holder['state'], holder['buf'], sub)
    jax.block_until_ready(m)

  ups = _timed(one_update, seconds)
  batch = source.gather(holder['buf'], source.batches(holder['buf'], jax.random.PRNGKey(3)[None])[0])
  flops = matmul_flops(agent.update, holder['state'], batch, jax.random.PRNGKey(4),
                       outer_cond_weight=1.0 / agent.method.actor_every)
  return ups, flops, agent, cfg, init, source


def one_per_core(method: str, seconds: float) -> float:
  """Aggregate updates/s of one single-threaded process pinned to each core, run together."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false').strip()
  procs = [subprocess.Popen(['taskset', '-c', str(c), sys.executable, os.path.abspath(__file__),
                             '--bare', method, '--seconds', str(seconds)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT) for c in range(os.cpu_count())]
  return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])['updates_per_s'] for p in procs)


def measure(method: str, seconds: float, rate: float) -> dict:
  import jax
  import numpy as np
  from flowrl.compose.step import make_frame_step
  from flowrl.envs import make_env

  warm = 1000
  ups, flops, agent, cfg, init, source = bare_update(method, seconds)
  spec, f32 = agent.spec, np.float32

  # end-to-end: ours (device buffer, one call per frame) vs the common host-buffer design
  env_ours, env_base = make_env(ENV, 0), make_env(ENV, 1)
  step = jax.jit(make_frame_step(agent, source, cfg), donate_argnums=0)
  ours = {'loop': init(), 'obs': env_ours.reset(seed=0)[0]}
  blank = transition(ours['obs'], np.zeros(spec.act_dim, f32), 0, ours['obs'], 0)
  ours['loop'], ours['action'], _ = step(ours['loop'], blank, np.bool_(False), ours['obs'][None])

  def ours_frame():
    a = np.asarray(ours['action'])[0]
    nxt, r, term, trunc, _ = env_ours.step(a)
    if term or trunc:
      nxt_act, _ = env_ours.reset()
    else:
      nxt_act = nxt
    ours['loop'], ours['action'], _ = step(ours['loop'], transition(ours['obs'], a, r, nxt, term),
                                           np.bool_(True), nxt_act[None])
    ours['obs'] = nxt_act

  update_jit = jax.jit(agent.update, donate_argnums=0)
  act_jit = jax.jit(lambda s, o, key: agent.act(s, o, key, False))
  cap = 100_000
  host = {'obs': np.zeros((cap, spec.obs_dim), f32), 'action': np.zeros((cap, spec.act_dim), f32),
          'reward': np.zeros(cap, f32), 'next_obs': np.zeros((cap, spec.obs_dim), f32),
          'terminated': np.zeros(cap, f32),
          **{c: np.zeros((cap, spec.act_dim), f32) for c in agent.columns}}
  base = {'state': jax.jit(agent.init)(jax.random.PRNGKey(0)), 'obs': env_base.reset(seed=1)[0],
          'size': 0, 'key': jax.random.PRNGKey(5), 'rng': np.random.default_rng(0)}

  def base_frame():
    base['key'], k_act, k_upd = jax.random.split(base['key'], 3)
    if base['size'] < warm:
      a = base['rng'].uniform(-1, 1, spec.act_dim).astype(f32)
    else:
      a = np.asarray(act_jit(base['state'], base['obs'][None], k_act))[0]
    nxt, r, term, trunc, _ = env_base.step(a)
    i = base['size'] % cap
    for name, v in zip(host, (base['obs'], a, r, nxt, float(term)) + (a,) * len(agent.columns)):
      host[name][i] = v
    base['size'] += 1
    if base['size'] >= warm:
      idx = base['rng'].integers(0, min(base['size'], cap), cfg.batch_size)
      batch = {name: host[name][idx] for name in host}
      base['state'], writes, _ = update_jit(base['state'], batch, k_upd)
      for name, v in writes.items():
        host[name][idx] = np.asarray(v)
    base['obs'] = env_base.reset()[0] if (term or trunc) else nxt

  for _ in range(warm + 1):       # fill both buffers past warm-up and compile both paths
    ours_frame()
    base_frame()
  jax.block_until_ready(ours['action'])

  def frames_per_s(frame, secs):
    frames, t0 = 0, time.perf_counter()
    while frames < 3 or time.perf_counter() - t0 < secs:
      frame()
      frames += 1
    if frame is ours_frame:
      jax.block_until_ready(ours['action'])
    return frames / (time.perf_counter() - t0)

  rounds = [(frames_per_s(ours_frame, seconds / 3), frames_per_s(base_frame, seconds / 3))
            for _ in range(3)]
  ratios = sorted(o / b for o, b in rounds)
  pair = one_per_core(method, seconds)
  return {
      'updates_per_s': round(ups, 2),
      'update_gflop': round(flops / 1e9, 4),
      'update_gflop_per_s': round(flops * ups / 1e9, 1),
      'matmul_share': round(flops * ups / rate, 3),
      'one_per_core_updates_per_s': round(pair, 2),
      'one_per_core_matmul_share': round(flops * pair / rate, 3),
      'frames_per_s': round(float(np.median([o for o, _ in rounds])), 1),
      'baseline_frames_per_s': round(float(np.median([b for _, b in rounds])), 1),
      'speedup': round(ratios[1], 3),
  }


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--methods', default=None, help='comma-separated gin names (default: all)')
  p.add_argument('--seconds', type=float, default=6.0, help='timing window per measurement')
  p.add_argument('--startup', default=None, help=argparse.SUPPRESS)
  p.add_argument('--bare', default=None, help=argparse.SUPPRESS)
  p.add_argument('--cache', default='off', help=argparse.SUPPRESS)
  p.add_argument('--out', default=None, help='also write the JSON here')
  args = p.parse_args()
  if args.startup:
    print(json.dumps(startup(args.startup, args.cache)))
    return
  if args.bare:
    print(json.dumps({'updates_per_s': bare_update(args.bare, args.seconds)[0]}))
    return
  methods = args.methods.split(',') if args.methods else sorted(
      os.path.basename(f)[:-4] for f in glob.glob(os.path.join(ROOT, 'gin', '*.gin'))
      if not f.endswith('_defaults.gin'))
  import jax
  rate = matmul_rate()
  result = {'machine': {'cpus': os.cpu_count(), 'jax': jax.__version__,
                        'matmul_gflop_per_s': round(rate / 1e9, 1)},
            'env': ENV, 'batch_size': 256, 'methods': {}}
  for m in methods:
    entry = {}
    with tempfile.TemporaryDirectory() as cache:
      for label in ('cold', 'warm'):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), '--startup', m,
                              '--cache', cache], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, 'FLOWRL_SPAWNED_AT': repr(time.time())})
        if out.returncode != 0:
          raise RuntimeError(out.stderr[-2000:])
        s = json.loads(out.stdout.strip().splitlines()[-1])
        entry[f'start_to_first_update_s_{label}_cache'] = s['start_to_first_update_s']
        if 'start_to_first_periodic_s' in s:
          entry[f'start_to_first_periodic_s_{label}_cache'] = s['start_to_first_periodic_s']
        entry['first_update_compute_s'] = s['first_update_compute_s']
        entry['recompiles_after_first'] = s['compiled_versions'] - 1
    entry.update(measure(m, args.seconds, rate))
    result['methods'][m] = entry
    print(json.dumps({m: entry}), file=sys.stderr, flush=True)
  emit(result, args.out, indent=2)


if __name__ == '__main__':
  main()
