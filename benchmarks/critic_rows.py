"""The Q ensemble over many rows (reverse samples, particles, best-of-N candidates) in one pass
against row chunks (`networks.q_ensemble`'s `row_chunk`), printed as JSON.

Times a 2-member, 256×256 relu ensemble on HalfCheetah's sizes (obs 17, action 6) at 16,384 rows
(256 states × 64 particles) and 128,000 rows (256 × SDAC's 500 reverse samples), the values alone
and with their gradient to the actions (IDEM), as GFLOP/s and as a share of a large jnp.dot timed
in the same run. One pass and chunks alternate in rounds; the ratio is the median of per-round
ratios.
Usage: python benchmarks/critic_rows.py [--rounds 3] [--seconds 1.5]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--seconds', type=float, default=1.5)
  p.add_argument('--row-chunk', type=int, default=4096)
  args = p.parse_args()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flowrl.primitives import networks

  from flops import matmul_flops
  from throughput import _timed, matmul_rate
  per_call = lambda f, *a: 1.0 / _timed(lambda: jax.block_until_ready(f(*a)), args.seconds, 2)
  peak = matmul_rate()
  obs_dim, act_dim, hidden = 17, 6, (256, 256)
  init, chunked = networks.q_ensemble(obs_dim, act_dim, 2, hidden, 'relu', row_chunk=args.row_chunk)
  _, one_pass = networks.q_ensemble(obs_dim, act_dim, 2, hidden, 'relu', row_chunk=1 << 30)
  params = init(jax.random.PRNGKey(0))
  result = {'matmul_gflop_per_s': round(peak / 1e9, 1), 'row_chunk': args.row_chunk, 'cases': {}}
  for rows in (16_384, 128_000):
    obs = jax.random.normal(jax.random.PRNGKey(1), (rows, obs_dim))
    act = jax.random.uniform(jax.random.PRNGKey(2), (rows, act_dim), minval=-1, maxval=1)
    for kind in ('values', 'values_and_action_grad'):
      def build(apply):
        values = lambda a: jnp.min(apply(params, obs, a)[..., 0], axis=0)
        if kind == 'values':
          return jax.jit(values)
        return jax.jit(jax.value_and_grad(lambda a: jnp.sum(values(a))))
      fns = {'one_pass': build(one_pass), 'chunked': build(chunked)}
      flops = matmul_flops(fns['one_pass'], act)
      times = {k: [] for k in fns}
      for _ in range(args.rounds):
        for name, f in fns.items():
          times[name].append(per_call(f, act))
      med = {k: float(np.median(v)) for k, v in times.items()}
      result['cases'][f'{rows}_rows_{kind}'] = {
          **{f'{k}_gflop_per_s': round(flops / v / 1e9, 1) for k, v in med.items()},
          **{f'{k}_share': round(flops / v / peak, 3) for k, v in med.items()},
          'speedup': round(float(np.median(np.array(times['one_pass']) / np.array(times['chunked']))), 2)}
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
