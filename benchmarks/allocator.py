"""Frames/s with freed memory kept for reuse (`flowrl.runtime.allocator`, on by default) against
glibc's default (FLOWRL_KEEP_FREED_MEMORY=0), per-frame runs at one update per frame on
HalfCheetah-v5 (batch 256), interleaved in rounds, printed as JSON.

Each run is a fresh process running `fused_throughput.py`'s child (the same warm-up, windows and
median); `minor_faults_per_frame` counts the whole process's minor page faults (start-up
included) over its frames. `ratio` is the median over rounds of kept/default.

Usage: python benchmarks/allocator.py [--methods sac,dacer,dipo,qvpo] [--rounds 2]
                                      [--out file.json]
"""
import argparse

from fused_throughput import ENV, interleaved
from results_io import emit  # noqa: E402  (benchmarks/)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--methods', default='sac,dacer,dipo,qvpo')
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument('--skip', type=int, default=2, help='log windows left out after warm-up')
  p.add_argument('--out')
  args = p.parse_args()
  result = {'env': ENV, 'batch_size': 256, 'methods': {}}
  for method in args.methods.split(','):
    result['methods'][method] = interleaved(
        method, ('default', 0, {'FLOWRL_KEEP_FREED_MEMORY': '0'}),
        ('kept', 0, {'FLOWRL_KEEP_FREED_MEMORY': '1'}), args.rounds, args.skip)
  emit(result, args.out)


if __name__ == '__main__':
  main()
