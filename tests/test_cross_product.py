"""The mixing guarantee: every combination of registered primitives (parameterization × sampler ×
signal × regularizer × critic) and data source (replay, rollout) either builds and runs one
update with finite losses, or is rejected by the validator with its one-sentence error. No
combination may fail any other way.

The combinations are split over one worker process per core (about 0.5 s each on tiny networks)."""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from tests import cross_product


def test_every_combination_runs_or_is_rejected_in_one_sentence():
  combos = cross_product.combinations()
  workers = max(1, min(os.cpu_count() or 1, 4))
  chunks = [combos[i::workers] for i in range(workers)]
  with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    results = list(pool.map(cross_product.check, chunks))
  accepted = sum(len(r['accepted']) for r in results)
  rejected = sum(len(r['rejected']) for r in results)
  failures = [f for r in results for f in r['failures']]
  print(f'\ncross product: {accepted} accepted / {rejected} rejected / {len(combos)} total')
  assert not failures, '\n'.join(f'{" × ".join(c)}: {m}' for c, m in failures[:20])
  assert accepted + rejected == len(combos)
  # every primitive takes part in at least one accepted combination
  for axis_index, axis in enumerate(cross_product.AXES):
    used = {c[axis_index] for r in results for c in r['accepted']}
    every = {c[axis_index] for c in combos}
    assert used == every, f'{axis} primitives never accepted: {sorted(every - used)}'
