"""The mixing guarantee: every combination of registered primitives (parameterization × sampler ×
signal × regularizer × critic) and data source (replay, rollout) either builds, or is rejected by
the validator with its one-sentence error. No combination may fail any other way.

Then updates run: a combination that builds traces its update as jit would (every branch of
every cond) and runs one, with finite losses and parameters. Running all of them (about 5,400 of
94,640, 0.6 s each) would take most of CI's budget, so CI runs a covering subset: every pair of
choices on two axes, and every policy × sampler × signal chain, that any accepted combination
has is run at least once (`cross_product.covering`). FLOWRL_CROSS_PRODUCT=all runs every
accepted combination's update.

Both phases are split over one worker process per core."""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from tests import cross_product


def _split(combos, workers):
  return [combos[i::workers] for i in range(workers)]


def test_every_combination_runs_or_is_rejected_in_one_sentence():
  combos = cross_product.combinations()
  workers = max(1, min(os.cpu_count() or 1, 4))
  with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
    built = list(pool.map(partial(cross_product.check, run=False), _split(combos, workers)))
    accepted = sorted(c for r in built for c in r['accepted'])
    rejected = sum(len(r['rejected']) for r in built)
    failures = [f for r in built for f in r['failures']]
    assert not failures, '\n'.join(f'{" × ".join(c)}: {m}' for c, m in failures[:20])
    assert len(accepted) + rejected == len(combos)
    ran = (accepted if os.environ.get('FLOWRL_CROSS_PRODUCT') == 'all'
           else cross_product.covering(accepted))
    results = list(pool.map(cross_product.check, _split(ran, workers)))
  print(f'\ncross product: {len(accepted)} accepted / {rejected} rejected / {len(combos)} total; '
        f'{len(ran)} updates run')
  failures = [f for r in results for f in r['failures']]
  assert not failures, '\n'.join(f'{" × ".join(c)}: {m}' for c, m in failures[:20])
  assert sum(len(r['accepted']) for r in results) == len(ran)
  # every feature of every accepted combination ran, and every primitive takes part in one
  assert set().union(*map(cross_product.features, ran)) == set().union(
      *map(cross_product.features, accepted))
  for axis_index, axis in enumerate(cross_product.AXES):
    used = {c[axis_index] for c in ran}
    every = {c[axis_index] for c in combos}
    assert used == every, f'{axis} primitives never accepted: {sorted(every - used)}'
