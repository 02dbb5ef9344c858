"""`python -m flowrl.ablate` and `python -m flowrl.plot`: variants from --axis, grids, methods ×
suites, one-sentence errors, the machine layout, statistics equal to rliable's, and end-to-end
sweeps (local, interrupted and resumed, and on a Ray head on loopback) whose table and plots hold
the runs' numbers."""
import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

from flowrl import ablate
from flowrl.errors import ConfigError
from flowrl.sweep import local, report, spec
from flowrl.sweep import statistics as st

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 variants × 2 seeds of a tiny SAC on Pendulum: 2 runs of 2 vmapped seeds on 2 cores
SWEEP_ARGS = ['--gin=gin/sac.gin', '--gin=gin/env/pendulum.gin',
              '--axis', 'regularizer=@exact_entropy,@no_regularizer', '--seeds', '2',
              '--bind', 'tanh_gaussian.hidden=(16,)', '--bind', 'ensemble_q.hidden=(16,)',
              '--bind', 'train.total_frames=1200', '--bind', 'train.random_frames=200',
              '--bind', 'train.learning_starts=200', '--bind', 'train.eval_every=400',
              '--bind', 'train.eval_episodes=2', '--bind', 'train.checkpoint_every=600',
              '--bind', 'train.batch_size=32', '--reps', '2000']


def _cli(module, args, **kw):
  env = {**os.environ, 'PYTHONPATH': REPO}
  return subprocess.run([sys.executable, '-m', module] + args, cwd=REPO, env=env,
                        capture_output=True, text=True, **kw)


# ---------------------------------------------------------------- expansion and errors

def test_axis_expands_to_one_binding_per_value():
  (v1, v2, v3) = spec.expand_variants(['gin/dacer.gin'], ['sampler=@ddpm,@ddim,dpm_solver_2m'])
  assert [v.name for v in (v1, v2, v3)] == ['ddpm', 'ddim', 'dpm_solver_2m']
  assert v2.bindings == ('sampler.rule = @ddim()',) and v1.gin_files == ('gin/dacer.gin',)


def test_several_axes_make_a_grid_and_tuples_stay_whole():
  variants = spec.expand_variants(['gin/qsm.gin'], ['sampler.steps=5,10',
                                                    'DenoiserNet.hidden=(64, 64),(128,)'])
  assert [v.bindings for v in variants] == [
      ('sampler.steps = 5', 'DenoiserNet.hidden = (64, 64)'),
      ('sampler.steps = 5', 'DenoiserNet.hidden = (128,)'),
      ('sampler.steps = 10', 'DenoiserNet.hidden = (64, 64)'),
      ('sampler.steps = 10', 'DenoiserNet.hidden = (128,)')]
  assert variants[1].name == 'steps=5,hidden=(128,)'


def test_unknown_axis_value_lists_the_valid_ones():
  with pytest.raises(ConfigError) as e:
    spec.expand_variants(['gin/dacer.gin'], ['sampler=@ddpm,@ddpmm'])
  msg = str(e.value)
  assert "unknown sampler '@ddpmm'" in msg and '@ddim' in msg and '@euler' in msg
  assert msg.count('\n') == 0


def test_unknown_suite_lists_the_suites():
  with pytest.raises(ConfigError, match=r"unknown suite 'mujoco'; the suites are: gym-locomotion, dmc"):
    spec.tasks_of(suite='mujoco')


def test_methods_times_suite_tasks_times_seed_blocks():
  variants = spec.expand_variants(['gin/sac.gin', 'gin/qsm.gin'], [])
  runs = spec.expand_runs(variants, spec.SUITES['gym-locomotion'], [0, 1, 2], 2)
  assert len(runs) == 2 * 5 * 2
  assert {(r.variant, r.task) for r in runs} == {
      (m, t) for m in ('sac', 'qsm') for t in spec.SUITES['gym-locomotion']}
  assert sorted({r.seeds for r in runs}) == [(0, 1), (2,)]
  assert runs[0].bindings[-1] == "env.name = 'Hopper-v5'"


def test_a_one_seed_run_gets_exactly_its_seed(tmp_path):
  from flowrl import run as cli
  from flowrl.sweep import job
  for seeds in ((3,), (4, 7)):
    cmd = job.command(str(tmp_path), spec.Run('v', 'Pendulum-v1', seeds, ('gin/sac.gin',), ()))
    assert cli.parse_seeds(cmd[cmd.index('--seeds') + 1], base_seed=0) == list(seeds)
  assert cli.parse_seeds('3', base_seed=10) == [10, 11, 12]


def test_an_illegal_mix_in_one_variant_fails_before_anything_runs():
  runs = spec.expand_runs(spec.expand_variants(
      ['gin/sac.gin'], ['signal=@reparam_q,@q_score_matching']), ['Pendulum-v1'], [0], 1)
  with pytest.raises(ConfigError, match=r"^variant 'q_score_matching' on Pendulum-v1: .*policy"):
    spec.validate(runs)


@pytest.mark.parametrize('args, message', [
    (['--gin=gin/sac.gin', '--suite', 'atari'], "unknown suite 'atari'"),
    (['--gin=gin/sac.gin', '--axis', 'sampler=@ddpmm'], "unknown sampler '@ddpmm'"),
    (['--gin=gin/sac.gin', '--axis', 'colour=red'], "unknown axis 'colour'"),
    (['--gin=gin/nope.gin'], "gin file 'gin/nope.gin' does not exist"),
    (['--gin=gin/sac.gin', '--env', 'Nope-v0'], "unknown environment 'Nope-v0'"),
])
def test_bad_sweep_input_is_one_sentence_and_exit_2(args, message, capsys):
  assert ablate.main(args + ['--out', '/nonexistent/never-written']) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and err.count('\n') == 0


def test_ray_backend_without_ray_says_how_to_install_it(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 'ray', None)
  assert ablate.main(['--gin=gin/sac.gin', '--env', 'Pendulum-v1', '--backend', 'ray',
                      '--out', '/nonexistent/never-written']) == 2
  assert 'pip install -e ".[ray]"' in capsys.readouterr().err


def test_layout_one_pinned_worker_per_core_and_seed_blocks_that_fill_them(monkeypatch):
  monkeypatch.setattr(local, 'cores', lambda: [0, 1])
  assert local.choose_layout(2, 2) == local.Layout(2, 2, True)        # a run per variant
  assert local.choose_layout(1, 4) == local.Layout(2, 2, True)        # 4 seeds: 2 runs of 2
  assert local.choose_layout(1, 1) == local.Layout(2, 1, True)
  assert local.choose_layout(3, 5, seeds_per_run=1) == local.Layout(2, 1, True)
  assert local.choose_layout(3, 5, accelerator=True) == local.Layout(1, 5, False)
  assert local.choose_layout(1, 4, workers=1) == local.Layout(1, 4, False)


# ---------------------------------------------------------------- statistics

def _synthetic_sweep(folder, finals):
  """A sweep folder whose eval.csv files end at the given final returns {(variant, task): [..]}."""
  variants = list(dict.fromkeys(v for v, _ in finals))
  tasks = list(dict.fromkeys(t for _, t in finals))
  runs = []
  for (v, t), values in finals.items():
    r = spec.Run(v, t, tuple(range(len(values))), ('gin/sac.gin',), ())
    runs.append({**r._asdict(), 'key': r.key})
    for s, final in enumerate(values):
      d = os.path.join(folder, 'runs', r.key, f'seed_{s}')
      os.makedirs(d)
      with open(os.path.join(d, 'eval.csv'), 'w') as f:
        f.write(f'frame,return_mean,return_std\n100,{final / 2},0\n200,{final},0\n')
    open(os.path.join(folder, 'runs', r.key, 'done.json'), 'w').write('{}')
  json.dump({'variants': variants, 'baseline': variants[0], 'tasks': tasks, 'runs': runs,
             'title': 't'}, open(os.path.join(folder, 'sweep.json'), 'w'))


@pytest.mark.filterwarnings('ignore:random_state is deprecated')   # rliable -> arch, direct call
def test_statistics_equal_a_direct_rliable_computation(tmp_path):
  rng = np.random.default_rng(1)
  finals = {(v, t): list(rng.normal(loc, 30.0, 5)) for v, loc in (('a', 100), ('b', 300))
            for t in ('t1', 't2')}
  finals[('b', 't2')] = [x * 10 for x in finals[('b', 't2')]]        # scales differ by task
  _synthetic_sweep(str(tmp_path), finals)
  summary = report.summarize(report.collect_sweep(str(tmp_path)), reps=500, seed=7)

  raw = {v: np.array([finals[(v, 't1')], finals[(v, 't2')]]).T for v in ('a', 'b')}
  fn = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])
  for i, t in enumerate(('t1', 't2')):
    np.random.seed(7)     # arch also draws from NumPy's global generator
    points, cis = rly.get_interval_estimates({v: s[:, i:i + 1] for v, s in raw.items()}, fn,
                                             reps=500, random_state=np.random.RandomState(7))
    for v in ('a', 'b'):
      got = summary['per_task'][t][v]
      np.testing.assert_allclose(got['iqm'], [points[v][0], *cis[v][:, 0]])
      np.testing.assert_allclose(got['mean'], [points[v][1], *cis[v][:, 1]])
  assert summary['per_task']['t1']['b']['vs_baseline'] == 'higher'

  low = np.minimum(raw['a'].min(0), raw['b'].min(0))
  high = np.maximum(raw['a'].max(0), raw['b'].max(0))
  norm = {v: (s - low) / (high - low) for v, s in raw.items()}
  np.random.seed(7)
  points, cis = rly.get_interval_estimates(norm, fn, reps=500,
                                           random_state=np.random.RandomState(7))
  np.testing.assert_allclose(summary['aggregate']['b']['iqm'], [points['b'][0], *cis['b'][:, 0]])
  poi = metrics.probability_of_improvement(norm['b'], norm['a'])
  assert summary['probability_of_improvement']['b'][0] == pytest.approx(poi) == 1.0


@pytest.mark.filterwarnings('ignore:random_state is deprecated')
def test_fewer_than_five_runs_declare_no_winner(tmp_path):
  """3 runs per variant, far apart: the intervals do not overlap, but from 3 runs the table says
  the comparison is unreliable instead of 'higher'."""
  _synthetic_sweep(str(tmp_path), {('a', 't1'): [100.0, 110.0, 105.0],
                                   ('b', 't1'): [900.0, 950.0, 925.0]})
  summary = report.summarize(report.collect_sweep(str(tmp_path)), reps=200)
  assert summary['per_task']['t1']['b']['vs_baseline'] == 'too few runs (n < 5)'
  table = report.markdown_table(summary)
  assert 'Fewer than 5 runs per variant here (3 at the least)' in table


def test_frames_done_reads_the_newest_logged_frame(tmp_path):
  from flowrl.sweep import job
  r = spec.Run('a', 't1', (4, 5), ('gin/sac.gin',), ())
  assert job.frames_done(str(tmp_path), r) == 0                   # not started
  d = os.path.join(str(tmp_path), 'runs', r.key, 'seed_4')
  os.makedirs(d)
  with open(os.path.join(d, 'train.csv'), 'w') as f:
    f.write('frame,loss\n' + ''.join(f'{k * 1000},0.5\n' for k in range(1, 400)))
  assert job.frames_done(str(tmp_path), r) == 399000


def test_a_suite_report_has_methods_by_tasks_aggregate_and_its_plot(tmp_path):
  finals = {('sac', 'Hopper-v5'): [10, 20, 30], ('sac', 'Ant-v5'): [1000, 1100, 1200],
            ('qsm', 'Hopper-v5'): [40, 50, 60], ('qsm', 'Ant-v5'): [3000, 3100, 3200]}
  _synthetic_sweep(str(tmp_path), finals)
  summary = report.write(report.collect_sweep(str(tmp_path)), str(tmp_path), 'suite', reps=500)
  table = open(tmp_path / 'table.md').read()
  assert '| variant | Hopper-v5 | Ant-v5 |' in table
  assert '| qsm | 50.0 [40.0, 60.0] | 3100.0 [3000.0, 3200.0] |' in table
  # qsm's runs beat every sac run on both tasks: normalized IQM 1 vs 0 up to the spread
  assert summary['aggregate']['qsm']['iqm'][0] > 0.9 > 0.1 > summary['aggregate']['sac']['iqm'][0]
  assert summary['probability_of_improvement']['qsm'][0] == 1.0
  assert '## Probability of improvement over sac' in table and '| qsm | 1.00 [1.00, 1.00] |' in table
  import matplotlib.image as mpimg
  for name in ('aggregate.png', 'curves_Hopper-v5.png', 'curves_Ant-v5.png', 'final_return.png'):
    assert mpimg.imread(str(tmp_path / name))[..., :3].std() > 0.05


# ---------------------------------------------------------------- end to end

def _final_returns(run_root):
  """{(variant folder, seed): last eval return} from a sweep's per-run CSVs."""
  out = {}
  for path in glob.glob(os.path.join(run_root, 'runs', '*', '*', '*', 'seed_*', 'eval.csv')):
    rows = list(csv.DictReader(open(path)))
    parts = path.split(os.sep)
    out[(parts[-5], parts[-2])] = float(rows[-1]['return_mean'])
  return out


def _layout(folder):
  """Relative paths of a results folder, without checkpoint internals and Ray's own records."""
  paths = set()
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if d not in ('checkpoints', 'tb', 'ray')]
    paths |= {os.path.relpath(os.path.join(root, f), folder) for f in files}
  return paths


@pytest.fixture(scope='module')
def local_sweep(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('sweep') / 'local')
  done = _cli('flowrl.ablate', SWEEP_ARGS + ['--out', out], timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  return out, done


def test_local_sweep_writes_the_runs_numbers_into_table_and_plots(local_sweep):
  out, done = local_sweep
  finals = _final_returns(out)
  assert sorted(finals) == [(v, f'seed_{s}') for v in ('exact_entropy', 'no_regularizer')
                            for s in (0, 1)]
  summary = json.load(open(os.path.join(out, 'summary.json')))
  rows = summary['per_task']['Pendulum-v1']
  for v in ('exact_entropy', 'no_regularizer'):
    expect = [finals[(v, 'seed_0')], finals[(v, 'seed_1')]]
    assert rows[v]['final_returns'] == pytest.approx(expect)
    assert rows[v]['iqm'][0] == pytest.approx(np.mean(expect))   # IQM of two runs is their mean
    assert rows[v]['iqm'][1] <= rows[v]['iqm'][0] <= rows[v]['iqm'][2]
  assert rows['exact_entropy']['vs_baseline'] == 'baseline'
  table = open(os.path.join(out, 'table.md')).read()
  assert table in done.stdout
  line = next(l for l in table.splitlines() if l.startswith('| no_regularizer |'))
  assert f"{rows['no_regularizer']['iqm'][0]:.1f}" in line and rows['no_regularizer']['vs_baseline'] in line
  import matplotlib.image as mpimg
  for name in ('curves_Pendulum-v1.png', 'final_return.png'):
    img = mpimg.imread(os.path.join(out, name))
    assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05
  # both runs trained their 2 seeds together in one program each
  assert sorted(json.load(open(p)) for p in glob.glob(os.path.join(out, 'runs', '*', '*', '*',
                                                                    'seeds.json'))) == [[0, 1]] * 2


def test_restarting_a_finished_sweep_runs_nothing(local_sweep):
  out, _ = local_sweep
  start = time.time()
  again = _cli('flowrl.ablate', ['--resume', out, '--reps', '2000'], timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert '2 already finished' in again.stderr
  assert not glob.glob(os.path.join(out, 'runs', '*', '*', '*', 'stdout.log')) or all(
      os.path.getmtime(p) < start for p in glob.glob(os.path.join(out, 'runs', '*', '*', '*', 'stdout.log')))


def test_plot_redraws_the_table_from_disk(local_sweep, tmp_path):
  out, _ = local_sweep
  table = open(os.path.join(out, 'table.md')).read()
  os.remove(os.path.join(out, 'table.md'))
  os.remove(os.path.join(out, 'curves_Pendulum-v1.png'))
  assert _cli('flowrl.plot', [out, '--reps', '2000']).returncode == 0
  assert open(os.path.join(out, 'table.md')).read() == table
  assert os.path.exists(os.path.join(out, 'curves_Pendulum-v1.png'))
  # plain run folders: one variant each
  blocks = sorted(glob.glob(os.path.join(out, 'runs', '*', '*', '*')))
  res = _cli('flowrl.plot', blocks + ['--out', str(tmp_path / 'cmp'), '--reps', '2000'])
  assert res.returncode == 0, res.stderr
  summary = json.load(open(tmp_path / 'cmp' / 'summary.json'))
  assert [r['runs'] for r in summary['per_task']['task'].values()] == [2, 2]


def test_an_interrupted_sweep_resumes_to_the_same_numbers(local_sweep, tmp_path):
  """SIGTERM to the sweep (as a scheduler sends it; Ctrl-C takes the same path) stops its workers,
  which keep their checkpoints; --resume ends with the uninterrupted numbers."""
  out, _ = local_sweep
  cut = str(tmp_path / 'cut')
  proc = subprocess.Popen([sys.executable, '-m', 'flowrl.ablate'] + SWEEP_ARGS + ['--out', cut],
                          cwd=REPO, env={**os.environ, 'PYTHONPATH': REPO},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not glob.glob(os.path.join(cut, 'runs', '*', '*', '*', 'checkpoints', '600')):
    assert proc.poll() is None and time.time() < deadline, 'no checkpoint before the end'
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130 and f'--resume {cut}' in err
  assert not glob.glob(os.path.join(cut, 'runs', '*', '*', '*', 'done.json'))
  resumed = _cli('flowrl.ablate', ['--resume', cut, '--reps', '2000'], timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert _final_returns(cut) == pytest.approx(_final_returns(out), rel=1e-6)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_ray_backend_on_a_loopback_head_writes_the_same_results_folder(local_sweep, tmp_path):
  out, _ = local_sweep
  ray_bin = os.path.join(os.path.dirname(sys.executable), 'ray')
  port = _free_port()
  # a home of its own: a local Ray started earlier on this machine leaves ~/.ray/auth_token, and
  # a head and driver that disagree about it fail with InvalidAuthToken (seen here)
  os.makedirs(tmp_path / 'home')
  env = {**os.environ, 'PYTHONPATH': REPO, 'RAY_USAGE_STATS_ENABLED': '0',
         'HOME': str(tmp_path / 'home')}
  head = subprocess.run([ray_bin, 'start', '--head', '--node-ip-address=127.0.0.1',
                         f'--port={port}', '--num-cpus=2', '--include-dashboard=false',
                         '--disable-usage-stats'], env=env, capture_output=True, text=True,
                        timeout=120)
  assert head.returncode == 0, head.stderr[-2000:]
  try:
    res = subprocess.run([sys.executable, '-m', 'flowrl.ablate'] + SWEEP_ARGS + [
        '--out', str(tmp_path / 'ray'), '--backend', 'ray', '--address', f'127.0.0.1:{port}'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  finally:
    subprocess.run([ray_bin, 'stop', '--force'], env=env, capture_output=True, timeout=120)
  assert res.returncode == 0, res.stderr[-3000:]
  assert _layout(str(tmp_path / 'ray')) == _layout(out)
  # the same single-threaded programs on the same seeds: the same numbers
  assert _final_returns(str(tmp_path / 'ray')) == pytest.approx(_final_returns(out), rel=1e-6)
  assert (json.load(open(tmp_path / 'ray' / 'summary.json'))['per_task'] ==
          json.load(open(os.path.join(out, 'summary.json')))['per_task'])


def test_methods_side_by_side_across_a_suite_end_to_end(tmp_path):
  out = str(tmp_path / 'suite')
  res = _cli('flowrl.ablate', [
      '--gin=gin/sac.gin,gin/td3.gin', '--suite', 'classic', '--seeds', '2',
      '--bind', 'tanh_gaussian.hidden=(16,)', '--bind', 'deterministic.hidden=(16,)',
      '--bind', 'ensemble_q.hidden=(16,)', '--bind', 'train.total_frames=400',
      '--bind', 'train.random_frames=200', '--bind', 'train.learning_starts=200',
      '--bind', 'train.eval_every=400', '--bind', 'train.eval_episodes=1',
      '--bind', 'train.checkpoint_every=400', '--bind', 'train.batch_size=32',
      '--reps', '1000', '--out', out], timeout=600)
  assert res.returncode == 0, res.stderr[-2000:]
  summary = json.load(open(os.path.join(out, 'summary.json')))
  assert summary['variants'] == ['sac', 'td3'] and summary['tasks'] == list(spec.SUITES['classic'])
  for task in spec.SUITES['classic']:
    for m in ('sac', 'td3'):
      runs = sorted(glob.glob(os.path.join(out, 'runs', m, task, '*', 'seed_*', 'eval.csv')))
      got = [float(list(csv.DictReader(open(p)))[-1]['return_mean']) for p in runs]
      assert summary['per_task'][task][m]['final_returns'] == pytest.approx(got) and len(got) == 2
  assert set(summary['aggregate']) == {'sac', 'td3'} and 'td3' in summary['probability_of_improvement']
  table = open(os.path.join(out, 'table.md')).read()
  assert '| variant | Pendulum-v1 | InvertedPendulum-v5 |' in table
  assert os.path.exists(os.path.join(out, 'aggregate.png'))


# ---------------------------------------------------------------- offline

def test_offline_suite_tasks_are_datasets_bound_by_name():
  runs = spec.expand_runs(spec.expand_variants(['gin/iql.gin', 'gin/dql.gin'], []),
                          spec.SUITES['offline-locomotion'], [0], 1)
  assert len(runs) == 2 * 9
  assert runs[0].task == 'dataset:flowrl/hopper/medium-v0'
  assert runs[0].bindings[-1] == "dataset_source.name = 'flowrl/hopper/medium-v0'"
  assert ablate._default_task(os.path.join(REPO, 'gin', 'iql.gin'), [], []) == \
      'dataset:flowrl/hopper/medium-v0'
  assert ablate._default_task(os.path.join(REPO, 'gin', 'sac.gin'), [], []) == 'HalfCheetah-v5'


def test_offline_methods_compare_on_normalized_scores_end_to_end(tmp_path):
  """BC and IQL on one small dataset through `flowrl.ablate`: the table's numbers are the
  runs' final D4RL-normalized scores, not their returns."""
  from tests.offline_data import controller_dataset
  data = str(tmp_path / 'pendulum.npz')
  controller_dataset(data, steps=1000)
  out = str(tmp_path / 'sweep')
  code = ablate.main(['--gin=gin/diffusion_bc.gin,gin/iql.gin', '--env', f'dataset:{data}',
                      '--seeds', '2', '--out', out, '--reps', '500',
                      '--bind', 'DenoiserNet.hidden=(16,)', '--bind', 'gaussian.hidden=(16,)',
                      '--bind', 'expectile_q.hidden=(16,)', '--bind', 'train.batch_size=32',
                      '--bind', 'dataset_source.updates_per_step=50',
                      '--bind', 'train.total_frames=100', '--bind', 'train.eval_every=100',
                      '--bind', 'train.checkpoint_every=100', '--bind', 'train.eval_episodes=2',
                      '--bind', 'dataset_source.ref_min_score=0.0',
                      '--bind', 'dataset_source.ref_max_score=500.0'])
  assert code == 0
  summary = json.load(open(os.path.join(out, 'summary.json')))
  res = report.collect_sweep(out)
  task = f'dataset:{data}'
  for variant in ('diffusion_bc', 'iql'):
    evals = [list(csv.DictReader(open(p)))[-1] for p in
             glob.glob(os.path.join(out, 'runs', variant, '*', '*', 'seed_*', 'eval.csv'))]
    assert len(evals) == 2
    scores = sorted(float(r['normalized_score_mean']) for r in evals)
    np.testing.assert_allclose(scores, sorted(float(r['return_mean']) / 5 for r in evals))
    np.testing.assert_allclose(sorted(r[1][-1] for r in res.curves[(variant, task)].values()),
                               scores)
  assert 'normalized score' in open(os.path.join(out, 'table.md')).read()
  assert set(summary['per_task'][task]) == {'diffusion_bc', 'iql'}
