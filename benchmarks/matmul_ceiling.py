"""What share of this machine's matmul rate a diffusion-sized update can reach, printed as JSON.

Times, as GFLOP/s and as a share of a large 2048² jnp.dot with XLA's default threads:
  chain_<w>       a 20-layer MLP chain (relu, forward + backward, batch 256) at widths 256, 512;
  denoiser_*      the library's own denoising chain: the default DenoiserNet (three 256-wide
                  layers, observation and time embeddings) drawn by 20 DDPM steps, forward at 256
                  rows (an action or a TD target's next action), forward at 16,384 rows (DPMD's
                  and GeMPO's 64 particles per state) and forward + backward at 256 rows (DACER's
                  actor loss), with its mish and with relu in its place; FLOPs counted from the
                  jaxpr (flops.py). No update can beat the chain it is built on;
in three layouts:
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
import json, sys, time, gin, jax, jax.numpy as jnp
sys.path.insert(0, sys.argv[2])
from flops import matmul_flops
from flowrl.primitives.base import EnvSpec
from flowrl.primitives.parameterization import vp_diffusion
from flowrl.primitives.sampler import ddpm, draw, sampler
secs = float(sys.argv[1])
def rate(f, *a, flops):
    jax.block_until_ready(f(*a))
    t = time.perf_counter(); n = 0
    while time.perf_counter() - t < secs:
        jax.block_until_ready(f(*a)); n += 1
    return flops * n / (time.perf_counter() - t) / 1e9
out = {}
big = jnp.ones((2048, 2048))
out['matmul_2048'] = rate(jax.jit(lambda x: x @ big), big, flops=2 * 2048 ** 3)
for w in (256, 512):
    x = jnp.ones((256, w)); ws = jax.random.normal(jax.random.PRNGKey(0), (20, w, w)) * 0.05
    g = jax.jit(jax.grad(lambda ws, x: jnp.sum(jax.lax.scan(lambda h, w: (jax.nn.relu(h @ w), None), x, ws)[0])))
    out[f'chain_{w}'] = rate(g, ws, x, flops=3 * 20 * 2 * 256 * w * w)
key = jax.random.PRNGKey(0)
for act in ('mish', 'relu'):
    gin.clear_config()
    gin.bind_parameter('DenoiserNet.activation', act)
    policy, rule = vp_diffusion()(EnvSpec(17, 6)), sampler(ddpm(), steps=20)
    params = policy.init(key)
    fwd = lambda p, o, k: draw(rule, policy, p, o, k).action
    fwd_bwd = jax.grad(lambda p, o, k: jnp.sum(fwd(p, o, k)))
    for name, fn, rows in (('fwd', fwd, 256), ('fwd', fwd, 16384), ('fwd_bwd', fwd_bwd, 256)):
        obs = jnp.ones((rows, 17))
        out[f'denoiser_{name}_{rows}_{act}'] = rate(jax.jit(fn), params, obs, key,
                                                    flops=matmul_flops(fn, params, obs, key))
print(json.dumps(out))
'''


def run(cores, single_thread, seconds):
  env = dict(os.environ)
  if single_thread:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false').strip()
  procs = []
  for core in cores:
    cmd = [sys.executable, '-c', CHILD, str(seconds), os.path.dirname(os.path.abspath(__file__))]
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
      name: {**v, **{f'{k}_share': round(v[k] / peak, 3) for k in v if k != 'matmul_2048'}}
      for name, v in layouts.items()}}
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
