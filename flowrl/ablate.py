"""Ablate one axis, or compare methods across a suite, over seeds: one results folder with every
run's logs, summary.json, table.md and PNG plots (rliable IQM / mean with 95% CIs).

  python -m flowrl.ablate --gin=gin/dacer.gin --axis 'sampler=@ddpm,@ddim' --seeds 5 \\
      --bind 'train.total_frames=100000' --env HalfCheetah-v5
  python -m flowrl.ablate --gin=gin/sac.gin,gin/dacer.gin,gin/qsm.gin --suite gym-locomotion \
      --seeds 3
  python -m flowrl.ablate ... --backend ray --address auto        # trials on a Ray cluster
  python -m flowrl.ablate --resume ablations/<folder>             # skip finished, resume the rest

--gin: the first value names the method (several, comma-separated, are compared as variants);
later --gin values are included by every run (e.g. gin/env/pendulum.gin). --axis name=v1,v2,...
sets a taxonomy axis (policy, sampler, signal, regularizer, critic: primitive names) or any gin
parameter (sampler.steps=5,10); several --axis make a grid. The first variant is the baseline.
Bad input prints one sentence to stderr and exits with status 2; if a run fails, the others go
on, the report covers the finished ones and the exit status is 1.
"""
import argparse
import json
import os
import sys
import time

from flowrl import run as cli  # noqa: F401  (XLA settings before JAX starts)


def _parser():
  p = argparse.ArgumentParser(prog='python -m flowrl.ablate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--gin', action='append', default=[],
                 help='method file(s), comma-separated to compare; later --gin: common includes')
  p.add_argument('--axis', action='append', default=[],
                 help="'name=value1,value2,...' (repeatable: grid)")
  p.add_argument('--bind', action='append', default=[], help="gin binding for every run")
  p.add_argument('--seeds', default='3', help='N seeds (0..N-1) or a list A,B,...')
  env = p.add_mutually_exclusive_group()
  env.add_argument('--env', help='the task of every run (default: the first method\'s env)')
  env.add_argument('--suite', help='a named list of tasks: ' + ', '.join(_suites()))
  p.add_argument('--out', help='results folder (default: ablations/<name>-<time>)')
  p.add_argument('--resume', metavar='OUT', help='continue the sweep in this results folder')
  p.add_argument('--backend', choices=('local', 'ray'), default='local')
  p.add_argument('--address', help="Ray cluster address (e.g. 'auto' or HOST:PORT); "
                                   "without it --backend ray starts a local Ray")
  p.add_argument('--workers', type=int, help='runs at once (default: one per core; 1 on a GPU)')
  p.add_argument('--seeds-per-run', type=int, help='seeds vmapped in one run (default: from the '
                                                   'machine and the number of runs)')
  p.add_argument('--baseline', help='the variant others are compared with (default: the first)')
  p.add_argument('--reps', type=int, default=20000, help='bootstrap resamples')
  return p


def _suites():
  from flowrl.sweep.spec import SUITES
  return SUITES


def _abs_if_local(path: str) -> str:
  return os.path.abspath(path) if os.path.exists(path) else path


def _default_task(method_file: str, common_gin, bindings) -> str:
  """The method file's own task: its env, or offline its dataset ('dataset:<id>')."""
  import gin
  from flowrl.envs import env
  from flowrl.sweep.spec import DATASET_TASK
  cli.parse_config([method_file] + list(common_gin), list(bindings))
  try:
    try:
      offline = 'dataset_source' in str(gin.query_parameter('train.source'))
    except ValueError:
      offline = False
    return DATASET_TASK + gin.query_parameter('dataset_source.name') if offline else env()
  finally:
    gin.clear_config()


def plan(args):
  """(out_dir, sweep dict, runs, layout) from the command line, every variant validated."""
  from flowrl.errors import ConfigError
  from flowrl.sweep import local, spec
  if args.resume:
    path = os.path.join(args.resume, 'sweep.json')
    if not os.path.exists(path):
      raise ConfigError(f'{args.resume!r} is not a sweep folder (it has no sweep.json).')
    sweep = json.load(open(path))
    runs = [spec.Run(r['variant'], r['task'], tuple(r['seeds']), tuple(r['gin_files']),
                     tuple(r['bindings'])) for r in sweep['runs']]
    if any('frames' not in r for r in sweep['runs']):     # a sweep.json of an older flowrl
      frames = spec.validate(runs)
      for r in sweep['runs']:
        r['frames'] = frames[r['key']]
    layout = local.choose_layout(len(sweep['variants']) * len(sweep['tasks']), len(sweep['seeds']),
                                 args.workers, max(len(r.seeds) for r in runs), _accelerator())
    return args.resume, sweep, runs, layout
  if not args.gin:
    raise ConfigError('no method given; pass --gin=gin/<method>.gin (several, comma-separated, '
                      'to compare methods).')
  methods = [_abs_if_local(g) for g in args.gin[0].split(',') if g.strip()]
  common = [_abs_if_local(g) for g in args.gin[1:]]
  for path in methods + common:
    if not os.path.exists(path) and not os.path.exists(os.path.join(cli.REPO_ROOT, path)):
      raise ConfigError(f'gin file {path!r} does not exist.')
  variants = spec.expand_variants(methods, args.axis)
  names = [v.name for v in variants]
  baseline = args.baseline or names[0]
  if baseline not in names:
    raise ConfigError(f"unknown --baseline {baseline!r}; the variants are: {', '.join(names)}.")
  tasks = spec.tasks_of(args.env, args.suite) or (_default_task(methods[0], common, args.bind),)
  seeds = cli.parse_seeds(args.seeds, 0)
  layout = local.choose_layout(len(variants) * len(tasks), len(seeds), args.workers,
                               args.seeds_per_run, accelerator=_accelerator())
  runs = spec.expand_runs(variants, tasks, seeds, layout.seeds_per_run, common, args.bind)
  frames = spec.validate(runs)
  label = ','.join(os.path.splitext(os.path.basename(m))[0] for m in methods)
  axes = '+'.join(spec.parse_axis(a)[0] for a in args.axis) or (args.suite or tasks[0])
  out = args.out or os.path.join('ablations', f'{label}-{axes}-{time.strftime("%Y%m%d-%H%M%S")}')
  sweep = {'command': sys.argv, 'title': f'{label}: {axes}', 'variants': names,
           'baseline': baseline, 'tasks': list(tasks), 'seeds': seeds,
           'runs': [{**r._asdict(), 'key': r.key, 'frames': frames[r.key]} for r in runs]}
  existing = os.path.join(out, 'sweep.json')
  if os.path.exists(existing):
    old = json.load(open(existing))
    if [r['key'] for r in old['runs']] != [r.key for r in runs] or \
        [r['bindings'] for r in old['runs']] != [list(r.bindings) for r in runs]:
      raise ConfigError(f'{out!r} holds a different sweep; pass another --out, or --resume {out} '
                        f'to continue that one.')
  return out, sweep, runs, layout


def _accelerator() -> bool:
  import jax
  return jax.devices()[0].platform != 'cpu'


class _Progress:
  """The sweep's progress bar in env frames across all runs (each run's newest logged frame, read
  from its train.csv once a second by a thread), with tqdm's rate and ETA, and runs finished."""

  def __init__(self, out, runs, budget):
    import threading
    from tqdm import tqdm
    from flowrl.sweep import job
    self.out, self.runs, self.job = out, runs, job
    self.budget = {r.key: budget.get(r.key) or 0 for r in runs}
    self.done = {r.key for r in runs if job.is_done(out, r)}
    self.bar = tqdm(total=sum(self.budget.values()), unit='frame', unit_scale=True,
                    dynamic_ncols=True, desc='sweep')
    self.stop = threading.Event()
    self.tick()
    self.thread = threading.Thread(target=self.loop, daemon=True)
    self.thread.start()

  def frames(self) -> int:
    return sum(self.budget[r.key] if r.key in self.done else
               min(self.job.frames_done(self.out, r), self.budget[r.key]) for r in self.runs)

  def tick(self):
    self.bar.n = self.frames()
    self.bar.set_postfix_str(f'runs {len(self.done)}/{len(self.runs)}', refresh=False)
    self.bar.refresh()

  def loop(self):
    while not self.stop.wait(1.0):
      self.tick()

  def finished(self, run):
    self.done.add(run.key)
    self.tick()

  def close(self):
    self.stop.set()
    self.thread.join()
    self.tick()
    self.bar.close()


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from flowrl.errors import ConfigError
  from flowrl.sweep import job, local, report
  cli.terminate_as_interrupt()     # SIGTERM: the workers are stopped as by Ctrl-C, and keep
                                   # their checkpoints
  try:
    out, sweep, runs, layout = plan(args)
    if args.backend == 'ray':
      from flowrl.sweep import ray_backend
      ray_backend.require_ray()
  except ConfigError as e:
    print(f'flowrl: {cli._one_sentence(e)}', file=sys.stderr)
    return 2
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'sweep.json'), 'w') as f:
    json.dump(sweep, f, indent=1)
  n_seeds = len(sweep['seeds'])
  done = sum(job.is_done(out, r) for r in runs)
  print(f'sweep folder: {out}\n{len(runs)} runs ({len(sweep["variants"])} variants × '
        f'{len(sweep["tasks"])} tasks × {n_seeds} seeds, {layout.seeds_per_run} per run), '
        f'{done} already finished; {layout.workers} at a time'
        + (', one per core' if layout.pin else '') + f', backend {args.backend}', file=sys.stderr)
  budget = {r['key']: r.get('frames') for r in sweep['runs']}
  watch = _Progress(out, runs, budget)
  failed = []

  def on_finish(run, status):
    watch.finished(run)
    if status == 'failed':
      failed.append(run)
      watch.bar.write(f'flowrl: run {run.key} failed: {job.last_line(out, run)}')

  try:
    if args.backend == 'ray':
      ray_backend.run_all(out, runs, layout, args.address, on_finish)
    else:
      local.run_all(out, runs, layout, on_finish)
  except ConfigError as e:
    watch.close()
    print(f'flowrl: {cli._one_sentence(e)}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    watch.close()
    print(f'flowrl: interrupted; continue with python -m flowrl.ablate --resume {out}',
          file=sys.stderr)
    return 130
  watch.close()
  summary = report.write(report.collect_sweep(out), out, sweep['title'], reps=args.reps)
  print(open(os.path.join(out, 'table.md')).read())
  plots = ', '.join(os.path.basename(p) for p in summary['plots'])
  print(f"results in {out}: summary.json, table.md, {plots}",
        file=sys.stderr)
  if failed:
    print(f'flowrl: {len(failed)} run(s) failed (see their stdout.log); rerun with --resume {out} '
          f'to retry them.', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
