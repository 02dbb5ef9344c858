"""Offline update speed of the offline method files at batch 256 on Hopper-v5's sizes (11-d
observations, 3-d actions; a synthetic 100k-row dataset on the device), printed as JSON.

Per method:
  updates_per_s            the library's offline step: the dataset on the device and
                           `dataset_source.updates_per_step` (here 100) updates fused in one
                           `lax.scan` per jitted call
  baseline_updates_per_s   the common design (the reference implementations'): the dataset in host
                           numpy, a batch drawn and copied per update, one jitted call per update
  speedup                  median of the per-round ratios, the two measured interleaved in rounds
  update_gflop, matmul_share  analytic matmul FLOPs per update (benchmarks/flops.py) and the share
                           of the machine's matmul rate (a large jnp.dot, timed in the same run)
Usage: python benchmarks/offline_throughput.py [--methods dql,fql] [--seconds 4] [--rounds 3]
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import emit  # noqa: E402
from throughput import _timed, matmul_rate  # noqa: E402

ROWS, N = 100_000, 100


def synthetic_dataset(path: str):
  import numpy as np
  rng = np.random.default_rng(0)
  np.savez(path, env_name='Hopper-v5', observations=rng.normal(size=(ROWS, 11)).astype(np.float32),
           actions=rng.uniform(-1, 1, (ROWS, 3)).astype(np.float32),
           rewards=rng.normal(size=ROWS).astype(np.float32), terminals=np.zeros(ROWS, np.float32),
           next_observations=rng.normal(size=(ROWS, 11)).astype(np.float32))


def programs(method: str, data: str):
  """(ours(): N fused updates, baseline(): one host-sampled update, agent, a batch, the state)."""
  import gin
  import jax
  import numpy as np
  from flowrl import run as cli
  from flowrl.compose.step import fused_updates, init_loop, make_source
  from flowrl.data import offline
  gin.clear_config()
  cli.parse_config([os.path.join(ROOT, 'gin', f'{method}.gin')],
                   [f'dataset_source.name="{data}"', 'train.batch_size=256',
                    f'dataset_source.updates_per_step={N}'])
  agent, cfg, _ = cli.build()
  source = make_source(agent, cfg)
  loop = init_loop(agent, source, 0)
  fused = jax.jit(fused_updates(agent, source), donate_argnums=(0,))
  one = jax.jit(agent.update, donate_argnums=(0,))
  host = offline.load(data).arrays
  rng = np.random.default_rng(0)
  held = {'ours': loop.agent, 'base': jax.tree_util.tree_map(lambda x: x.copy(), loop.agent),
          'key': jax.random.PRNGKey(1)}

  def ours():
    held['key'], k = jax.random.split(held['key'])
    held['ours'], _, m = fused(held['ours'], loop.data, k)
    jax.block_until_ready(m)

  def baseline():
    idx = rng.integers(0, ROWS, cfg.batch_size)
    batch = {c: jax.device_put(v[idx]) for c, v in host.items()}
    held['key'], k = jax.random.split(held['key'])
    held['base'], _, m = one(held['base'], batch, k)
    jax.block_until_ready(m)

  batch = {c: v[:cfg.batch_size] for c, v in host.items()}
  return ours, baseline, agent, batch, held


def measure(method: str, data: str, seconds: float, rounds: int, rate: float) -> dict:
  import jax
  import numpy as np
  from flops import matmul_flops
  ours, baseline, agent, batch, held = programs(method, data)
  pairs = []
  for _ in range(rounds):                       # interleaved: outside load hits both alike
    pairs.append((N * _timed(ours, seconds), _timed(baseline, seconds)))
  ups, base = (float(np.median([p[i] for p in pairs])) for i in (0, 1))
  flops = matmul_flops(agent.update, held['ours'], batch, jax.random.PRNGKey(4),
                       outer_cond_weight=1.0 / agent.method.actor_every)
  return {'updates_per_s': round(ups, 1), 'baseline_updates_per_s': round(base, 1),
          'speedup': round(float(np.median([a / b for a, b in pairs])), 2),
          'update_gflop': round(flops / 1e9, 4), 'matmul_share': round(flops * ups / rate, 3)}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--methods', default='dql,fql')
  p.add_argument('--seconds', type=float, default=4.0)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--out')
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, 'hopper_sized.npz')
    synthetic_dataset(data)
    rate = matmul_rate()
    result = {'machine': {'cpus': os.cpu_count(), 'matmul_gflop_per_s': round(rate / 1e9, 1)},
              'setting': {'task_sizes': 'Hopper-v5 (11, 3)', 'batch_size': 256,
                          'updates_per_call': N, 'rows': ROWS},
              'methods': {}}
    for m in args.methods.split(','):
      t = time.time()
      result['methods'][m] = measure(m, data, args.seconds, args.rounds, rate)
      result['methods'][m]['seconds'] = round(time.time() - t, 1)
  emit(result, args.out)


if __name__ == '__main__':
  main()
