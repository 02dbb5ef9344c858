"""What share of this machine's matmul rate a diffusion-sized update can reach, printed as JSON.

Times a 20-layer MLP chain (relu, forward + backward, batch 256) at widths 256 and 512, as
GFLOP/s and as a share of a large 2048² jnp.dot with XLA's default threads, in three layouts:
  default          one process, XLA's intra-op threads over all cores
  one_core         one process pinned to core 0, single-threaded XLA
  one_per_core     one single-threaded process pinned to each core, all running together
                   (aggregate over the processes) — the layout of a sweep of independent runs
Usage: python benchmarks/matmul_ceiling.py [--seconds 3]
"""
import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r'''
import json, sys, time, jax, jax.numpy as jnp
secs = float(sys.argv[1])
def rate(f, *a, flops):
    f(*a).block_until_ready()
    t = time.perf_counter(); n = 0
    while time.perf_counter() - t < secs:
        f(*a).block_until_ready(); n += 1
    return flops * n / (time.perf_counter() - t) / 1e9
out = {}
big = jnp.ones((2048, 2048))
out['matmul_2048'] = rate(jax.jit(lambda x: x @ big), big, flops=2 * 2048 ** 3)
for w in (256, 512):
    x = jnp.ones((256, w)); ws = jax.random.normal(jax.random.PRNGKey(0), (20, w, w)) * 0.05
    g = jax.jit(jax.grad(lambda ws, x: jnp.sum(jax.lax.scan(lambda h, w: (jax.nn.relu(h @ w), None), x, ws)[0])))
    out[f'chain_{w}'] = rate(g, ws, x, flops=3 * 20 * 2 * 256 * w * w)
print(json.dumps(out))
'''


def run(cores, single_thread, seconds):
  env = dict(os.environ)
  if single_thread:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false').strip()
  procs = []
  for core in cores:
    cmd = [sys.executable, '-c', CHILD, str(seconds)]
    if core is not None:
      cmd = ['taskset', '-c', str(core)] + cmd
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
  outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
  return {k: round(sum(o[k] for o in outs), 1) for k in outs[0]}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--seconds', type=float, default=3.0)
  args = p.parse_args()
  n = os.cpu_count()
  default = run([None], False, args.seconds)
  peak = default['matmul_2048']
  layouts = {'default': default, 'one_core': run([0], True, args.seconds),
             'one_per_core': run(list(range(n)), True, args.seconds)}
  result = {'cpus': n, 'reference_matmul_gflop_per_s': peak, 'layouts': {
      name: {**v, **{f'{k}_share': round(v[k] / peak, 3) for k in v if k.startswith('chain')}}
      for name, v in layouts.items()}}
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
