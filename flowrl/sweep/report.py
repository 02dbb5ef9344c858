"""A sweep's results folder → summary.json, table.md and PNG plots.

Read from the per-run logs (runs/<variant>/<task>/s<seeds>/seed_<s>/eval.csv, as `flowrl.run
--seeds` writes them), so `python -m flowrl.plot` can redraw everything from disk. The final
return of a run is its last evaluation's mean return.
"""
import csv
import glob
import json
import os
import re
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from flowrl.sweep import spec
from flowrl.sweep import statistics as st

SWEEP = 'sweep.json'


class Results(NamedTuple):
  variants: List[str]                 # in order; the first is the baseline unless named
  baseline: str
  tasks: List[str]
  # (variant, task) -> seed -> (frames, returns)
  curves: Dict[Tuple[str, str], Dict[int, Tuple[np.ndarray, np.ndarray]]]


def _read_eval(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """(frames, scores): the evaluation return, or offline where the data has reference scores
  the D4RL-normalized score, so methods on the same datasets compare on one scale."""
  with open(path) as f:
    rows = list(csv.DictReader(f))
  column = 'normalized_score_mean' if rows and 'normalized_score_mean' in rows[0] else 'return_mean'
  return (np.array([float(r['frame']) for r in rows]),
          np.array([float(r[column]) for r in rows]))


def _seed_dirs(run_dir: str) -> Dict[int, str]:
  """seed -> folder holding eval.csv: seed_<s>/ folders of a multi-seed run, or the run itself."""
  found = {int(m.group(1)): d for d in glob.glob(os.path.join(run_dir, 'seed_*'))
           if (m := re.fullmatch(r'seed_(-?\d+)', os.path.basename(d)))}
  if found:
    return found
  from flowrl.run import CONFIG_NAME
  config = os.path.join(run_dir, CONFIG_NAME)
  seed = 0
  if os.path.exists(config):
    m = re.search(r'^train\.seed\s*=\s*(-?\d+)', open(config).read(), re.M)
    seed = int(m.group(1)) if m else 0
  return {seed: run_dir}


def collect_sweep(out_dir: str, finished_only: bool = True) -> Results:
  """Results of a sweep folder; by default only runs that finished (done.json) count."""
  with open(os.path.join(out_dir, SWEEP)) as f:
    sweep = json.load(f)
  curves = {}
  for r in sweep['runs']:
    folder = os.path.join(out_dir, 'runs', r['key'])
    if finished_only and not os.path.exists(os.path.join(folder, 'done.json')):
      continue
    for seed, d in _seed_dirs(folder).items():
      path = os.path.join(d, 'eval.csv')
      if os.path.exists(path) and seed in r['seeds']:
        curves.setdefault((r['variant'], r['task']), {})[seed] = _read_eval(path)
  return Results(sweep['variants'], sweep['baseline'], sweep['tasks'], curves)


def collect_runs(run_dirs: Sequence[str]) -> Results:
  """Plain `flowrl.run` folders compared with each other: a variant per folder (named by its path
  below the folders' common parent), one task."""
  curves, names = {}, []
  dirs = [os.path.normpath(os.path.abspath(d)) for d in run_dirs]
  base = os.path.commonpath(dirs) if len(dirs) > 1 else os.path.dirname(dirs[0])
  for d in dirs:
    name = os.path.relpath(d, base) if d != base else os.path.basename(d)  # unique names
    names.append(name)
    for seed, sd in _seed_dirs(d).items():
      path = os.path.join(sd, 'eval.csv')
      if os.path.exists(path):
        curves.setdefault((name, 'task'), {})[seed] = _read_eval(path)
  return Results(names, names[0], ['task'], curves)


def _final_scores(res: Results) -> Dict[str, np.ndarray]:
  """{variant: [runs, tasks]} final returns; runs are the seeds every task of the variant has."""
  out = {}
  for v in res.variants:
    per_task = [res.curves.get((v, t), {}) for t in res.tasks]
    seeds = sorted(set.intersection(*(set(p) for p in per_task))) if per_task else []
    if seeds:
      out[v] = np.array([[p[s][1][-1] for p in per_task] for s in seeds])
  return out


def _curve_array(runs: Dict[int, Tuple[np.ndarray, np.ndarray]]):
  """[runs, 1, frames] on the evaluation frames every run reached."""
  frames = sorted(set.intersection(*(set(f.tolist()) for f, _ in runs.values())))
  arr = np.array([[[dict(zip(f.tolist(), r))[x] for x in frames]] for f, r in runs.values()])
  return np.array(frames), arr


def summarize(res: Results, reps: int = 20000, seed: int = 0) -> dict:
  """Everything the table and plots show, as plain JSON-able numbers."""
  scores = _final_scores(res)
  per_task = {}
  for i, task in enumerate(res.tasks):
    task_scores = {v: s[:, i:i + 1] for v, s in scores.items()}
    est = st.final_score_intervals(task_scores, reps=reps, seed=seed) if task_scores else {}
    base = est.get(res.baseline)
    per_task[task] = {
        v: {'runs': int(task_scores[v].shape[0]), 'iqm': list(e['iqm']), 'mean': list(e['mean']),
            'final_returns': task_scores[v][:, 0].tolist(),
            'vs_baseline': ('baseline' if v == res.baseline else
                            st.differs(e['iqm'], base['iqm'], task_scores[v].shape[0],
                                       task_scores[res.baseline].shape[0])
                            if base else 'no baseline')}
        for v, e in est.items()}
  summary = {'baseline': res.baseline, 'variants': res.variants, 'tasks': res.tasks,
             'per_task': per_task}
  others = [v for v in res.variants if v != res.baseline and v in scores]
  if len(res.tasks) > 1 and scores:
    normalized = st.normalize_per_task(scores)
    agg = st.final_score_intervals(normalized, reps=reps, seed=seed)
    summary['aggregate'] = {v: {'iqm': list(e['iqm']), 'mean': list(e['mean'])}
                            for v, e in agg.items()}
  else:
    normalized = scores
  if res.baseline in scores and others:
    poi = st.probability_of_improvement(normalized, [(v, res.baseline) for v in others],
                                        reps=min(reps, 2000), seed=seed)
    summary['probability_of_improvement'] = {v: list(poi[(v, res.baseline)]) for v in others}
  return summary


def _fmt(interval) -> str:
  p, lo, hi = interval
  return f'{p:.1f} [{lo:.1f}, {hi:.1f}]'


def _fmt_unit(interval) -> str:
  p, lo, hi = interval
  return f'{p:.2f} [{lo:.2f}, {hi:.2f}]'


def markdown_table(summary: dict, title: str = 'Sweep') -> str:
  base = summary['baseline']
  lines = [f'# {title}', '',
           'Final return: the mean return of the last evaluation of each run (offline, on data '
           'with reference scores: its D4RL-normalized score, 100·(R − R_min)/(R_max − R_min)). '
           'IQM and mean over '
           'runs with stratified-bootstrap 95% confidence intervals (rliable). "vs baseline": '
           'higher or lower when the 95% intervals of the IQM do not overlap.', '']
  fewest = min((r['runs'] for rows in summary['per_task'].values() for r in rows.values()),
               default=st.MIN_RUNS)
  if fewest < st.MIN_RUNS:
    lines += [f'**Fewer than {st.MIN_RUNS} runs per variant here ({fewest} at the least): the '
              f'intervals are unreliable, so no variant is called higher or lower.** Run more '
              f'seeds (`--seeds {st.MIN_RUNS}` or more) to compare.', '']
  for task, rows in summary['per_task'].items():
    header = f'| variant | runs | IQM [95% CI] | mean [95% CI] | vs baseline ({base}) |'
    lines += [f'## {task}', '', header, '|---|---|---|---|---|']
    lines += [f"| {v} | {r['runs']} | {_fmt(r['iqm'])} | {_fmt(r['mean'])} | {r['vs_baseline']} |"
              for v, r in rows.items()]
    lines.append('')
  if 'aggregate' in summary:
    tasks = summary['tasks']
    lines += ['## Methods × tasks (IQM of the final return)', '',
              '| variant | ' + ' | '.join(tasks) + ' |', '|---' * (len(tasks) + 1) + '|']
    for v in summary['variants']:
      cells = [_fmt(summary['per_task'][t][v]['iqm']) if v in summary['per_task'][t] else '—'
               for t in tasks]
      lines.append(f'| {v} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Aggregate across tasks', '',
              'Scores normalized per task to [0, 1] by the lowest and highest final return of any '
              'run on that task in this sweep.', '',
              '| variant | normalized IQM [95% CI] | normalized mean [95% CI] |', '|---|---|---|']
    lines += [f"| {v} | {_fmt_unit(a['iqm'])} | {_fmt_unit(a['mean'])} |"
              for v, a in summary['aggregate'].items()]
    lines.append('')
  if summary.get('probability_of_improvement'):
    lines += [f'## Probability of improvement over {base}', '',
              'P(a run of the variant beats a run of the baseline on a random task), with its '
              '95% CI' + (' (on normalized scores)' if 'aggregate' in summary else '') + '.', '',
              '| variant | P(improvement) [95% CI] |', '|---|---|']
    lines += [f'| {v} | {_fmt_unit(p)} |' for v, p in summary['probability_of_improvement'].items()]
    lines.append('')
  return '\n'.join(lines)


def curves_png(task: str, named_runs: Dict[str, Dict[int, Tuple[np.ndarray, np.ndarray]]],
               path: str, reps: int = 2000, seed: int = 0, unit: str = 'runs', marker=None,
               dpi: int = 100) -> None:
  """Learning curves of one task, IQM over runs with a shaded 95% CI per name, on the evaluation
  frames every run of that name reached; named_runs: {name: {seed: (frames, returns)}}."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for name, runs in named_runs.items():
    frames, arr = _curve_array(runs)
    iqm, lo, hi = st.curve_intervals({name: arr}, reps=reps, seed=seed)[name]
    ax.plot(frames, iqm, marker=marker, label=f'{name} ({len(runs)} {unit})')
    ax.fill_between(frames, lo, hi, alpha=0.2)
  ax.set_xlabel('environment frames')
  ax.set_ylabel('evaluation return (IQM, 95% CI)')
  ax.set_title(task)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def plot(res: Results, summary: dict, out_dir: str, reps: int = 2000, seed: int = 0) -> List[str]:
  """Learning curves per task (IQM over runs, shaded 95% CI), final-return intervals per task,
  and for several tasks the normalized aggregate. Returns the PNG paths."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  paths = []
  for task in res.tasks:
    named = {v: res.curves[(v, task)] for v in res.variants if res.curves.get((v, task))}
    paths.append(os.path.join(out_dir, f'curves_{spec.safe_name(task)}.png'))
    curves_png(task, named, paths[-1], reps=reps, seed=seed)
  def intervals(ax, rows, stat, xlabel):
    names = list(rows)
    for i, v in enumerate(names):
      p, lo, hi = rows[v][stat]
      ax.errorbar([p], [i], xerr=[[p - lo], [hi - p]], fmt='o', capsize=4)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)     # first variant on top, half a row of margin
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis='x')

  tasks = [t for t in res.tasks if summary['per_task'].get(t)]
  if tasks:
    fig, axes = plt.subplots(1, len(tasks),
                             figsize=(4.5 * len(tasks), 0.5 * len(res.variants) + 1.8),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
      intervals(ax, summary['per_task'][task], 'iqm', 'final return IQM (95% CI)')
      ax.set_title(task)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, 'final_return.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  if 'aggregate' in summary:
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.5 * len(res.variants) + 1.8))
    intervals(axes[0], summary['aggregate'], 'iqm', 'normalized IQM (95% CI)')
    intervals(axes[1], summary['aggregate'], 'mean', 'normalized mean (95% CI)')
    fig.tight_layout()
    paths.append(os.path.join(out_dir, 'aggregate.png'))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
  return paths


def write(res: Results, out_dir: str, title: str, reps: int = 20000, seed: int = 0) -> dict:
  """summary.json, table.md and the PNGs into out_dir; returns the summary."""
  os.makedirs(out_dir, exist_ok=True)
  summary = summarize(res, reps=reps, seed=seed)
  with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out_dir, 'table.md'), 'w') as f:
    f.write(markdown_table(summary, title))
  summary['plots'] = plot(res, summary, out_dir, reps=min(reps, 2000), seed=seed)
  return summary
