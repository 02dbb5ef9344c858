"""Redraw curves and the table from results on disk:

  python -m flowrl.plot ablations/<sweep>                 # a sweep folder: its report, rewritten
  python -m flowrl.plot runs/a runs/b --out compare/      # flowrl.run folders compared side by side

A sweep folder (with sweep.json) gets summary.json, table.md and the PNGs rewritten in place,
from the runs that finished (--partial: also the unfinished ones, up to their last evaluation).
Plain run folders become one variant each, named after the folder, in --out.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m flowrl.plot', description=__doc__.splitlines()[0])
  p.add_argument('dirs', nargs='+', metavar='RUN_DIR')
  p.add_argument('--out', default='plot', help='output folder for plain run folders')
  p.add_argument('--partial', action='store_true', help='include unfinished runs of a sweep')
  p.add_argument('--reps', type=int, default=20000, help='bootstrap resamples')
  args = p.parse_args(argv)
  from flowrl.sweep import report
  missing = [d for d in args.dirs if not os.path.isdir(d)]
  if missing:
    print(f'flowrl: {missing[0]!r} is not a folder.', file=sys.stderr)
    return 2
  sweeps = [d for d in args.dirs if os.path.exists(os.path.join(d, report.SWEEP))]
  plain = [d for d in args.dirs if d not in sweeps]
  for d in sweeps:
    import json
    title = json.load(open(os.path.join(d, report.SWEEP))).get('title', os.path.basename(d))
    report.write(report.collect_sweep(d, finished_only=not args.partial), d, title, args.reps)
    print(f'{d}: summary.json, table.md and plots rewritten', file=sys.stderr)
  if plain:
    res = report.collect_runs(plain)
    if not res.curves:
      print(f'flowrl: no eval.csv in {", ".join(plain)}; these are not run folders.',
            file=sys.stderr)
      return 2
    report.write(res, args.out, 'Runs compared', args.reps)
    print(open(os.path.join(args.out, 'table.md')).read())
    print(f'{args.out}: summary.json, table.md and plots written', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
