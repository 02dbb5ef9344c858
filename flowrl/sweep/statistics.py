"""Aggregate statistics of a sweep with rliable (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice"): interquartile mean (IQM) and mean of final returns with stratified
bootstrap 95% confidence intervals, the same per evaluation frame for learning curves, per-task
min–max normalization for aggregates across tasks, and the probability of improvement.

Scores are arrays [runs, tasks] (rliable's layout); bootstrap resampling is stratified by task.
"""
import functools
import warnings
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
from rliable import library as rly
from rliable import metrics

CI = 0.95


def _quiet(fn):
  """Reproducible for a given `seed`: rliable seeds its resampling from the RandomState we pass
  but `arch` also draws from NumPy's global generator, so that is seeded too (and restored after).
  `arch` warns that the argument is deprecated; the warning is silenced."""
  @functools.wraps(fn)
  def wrapped(*args, seed: int = 0, **kwargs):
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
      with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='random_state is deprecated',
                                category=FutureWarning)
        return fn(*args, seed=seed, **kwargs)
    finally:
      np.random.set_state(saved)
  return wrapped


def _iqm_and_mean(scores: np.ndarray) -> np.ndarray:
  return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])


@_quiet
def final_score_intervals(scores: Mapping[str, np.ndarray], reps: int = 20000,
                          seed: int = 0) -> Dict[str, Dict[str, Tuple[float, float, float]]]:
  """{variant: {'iqm': (point, low, high), 'mean': (point, low, high)}} of [runs, tasks] scores."""
  points, intervals = rly.get_interval_estimates(
      dict(scores), _iqm_and_mean, reps=reps, confidence_interval_size=CI,
      random_state=np.random.RandomState(seed))
  return {name: {stat: (float(points[name][i]), float(intervals[name][0, i]),
                        float(intervals[name][1, i])) for i, stat in enumerate(('iqm', 'mean'))}
          for name in scores}


@_quiet
def curve_intervals(curves: Mapping[str, np.ndarray], reps: int = 2000,
                    seed: int = 0) -> Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """{variant: (IQM, low, high) per frame} of [runs, tasks, frames] returns."""
  per_frame = lambda s: np.array([metrics.aggregate_iqm(s[..., f]) for f in range(s.shape[-1])])
  points, intervals = rly.get_interval_estimates(
      dict(curves), per_frame, reps=reps, confidence_interval_size=CI,
      random_state=np.random.RandomState(seed))
  return {name: (points[name], intervals[name][0], intervals[name][1]) for name in curves}


def normalize_per_task(scores: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Min–max per task over every run of every variant: 0 = the lowest final return any run
  reached on that task in this comparison, 1 = the highest. (No reference scores are downloaded,
  so normalized scores compare the variants of this sweep with each other, nothing more.)"""
  stacked = np.concatenate(list(scores.values()), axis=0)
  low, high = stacked.min(axis=0), stacked.max(axis=0)
  span = np.where(high > low, high - low, 1.0)
  return {name: (s - low) / span for name, s in scores.items()}


@_quiet
def probability_of_improvement(scores: Mapping[str, np.ndarray], pairs: Sequence[Tuple[str, str]],
                               reps: int = 2000, seed: int = 0):
  """{(x, y): (P(X > Y), low, high)}: the probability that a run of x beats a run of y on a
  randomly chosen task (Mann–Whitney statistic averaged over tasks), with its bootstrap CI."""
  pair_scores = {f'{x}\u2192{y}': [scores[x], scores[y]] for x, y in pairs}
  points, intervals = rly.get_interval_estimates(
      pair_scores, metrics.probability_of_improvement, reps=reps, confidence_interval_size=CI,
      random_state=np.random.RandomState(seed))
  return {(x, y): (float(np.ravel(points[f'{x}\u2192{y}'])[0]),
                   float(np.ravel(intervals[f'{x}\u2192{y}'][0])[0]),
                   float(np.ravel(intervals[f'{x}\u2192{y}'][1])[0])) for x, y in pairs}


# Below this many runs a bootstrap interval is unreliable (with 2 runs it is the range of the two;
# Agarwal et al. 2021 use ≥ 5 and warn about fewer), so no comparison is declared from it.
MIN_RUNS = 5


def differs(interval, baseline_interval, runs: int = MIN_RUNS,
            baseline_runs: int = MIN_RUNS) -> str:
  """'higher' / 'lower' when the two 95% intervals do not overlap, else 'within CI'; with fewer
  than MIN_RUNS runs on either side, 'too few runs (n < 5)'."""
  if min(runs, baseline_runs) < MIN_RUNS:
    return f'too few runs (n < {MIN_RUNS})'
  _, lo, hi = interval
  _, b_lo, b_hi = baseline_interval
  if lo > b_hi:
    return 'higher'
  if hi < b_lo:
    return 'lower'
  return 'within CI'
