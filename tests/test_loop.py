"""The off-policy loop: deterministic per seed, resumes identically, bootstraps on truncation,
stores terminations, and writes DIPO's improved actions beside (not over) the taken ones."""
import csv
import os

import jax
import numpy as np
import pytest

from flowrl.compose import compile_method, method
from flowrl.compose.step import TrainConfig, init_loop, replay_source
from flowrl.runtime import checkpoint, driver
from flowrl.runtime.interrupts import Interrupts
from flowrl.envs import make_env
from flowrl.primitives import critic, parameterization as P, regularizer as R, sampler as S, signal as G
from flowrl.primitives.base import EnvSpec

SAC = method(P.tanh_gaussian(hidden=(8,)), S.sampler(S.direct()), G.reparam_q(),
             R.exact_entropy(), critic.ensemble_q(hidden=(8,)), name='sac')
CFG = TrainConfig(total_frames=600, random_frames=100, learning_starts=100, batch_size=16,
                  buffer_size=1000, eval_every=300, eval_episodes=1, log_every=100,
                  checkpoint_every=300, seed=3)


def _rows(run_dir, name):
  with open(os.path.join(run_dir, f'{name}.csv')) as f:
    return [{k: v for k, v in r.items() if k != 'frames_per_second'} for r in csv.DictReader(f)]


def _agent(m, env='Pendulum-v1'):
  e = make_env(env)
  return compile_method(m, EnvSpec(e.observation_space.shape[0], e.action_space.shape[0]))


def _env_with(hook):
  """make_env whose training env (seed CFG.seed) returns hook(n, action, out) from its n-th step,
  out being the real step's result; and the count of those steps."""
  real_make_env, calls = driver.make_env, {'n': 0}

  def make(name, seed):
    e = real_make_env(name, seed)
    if seed != CFG.seed:               # the evaluation env steps on
      return e
    step = e.step

    def counted(action):
      calls['n'] += 1
      return hook(calls['n'], action, step(action))
    e.step = counted
    return e

  return make, calls


def _sigint_at(frame):
  """A step hook that sends this process SIGINT (as Ctrl-C in a terminal) at training `frame`."""
  import signal

  def hook(n, action, out):
    if n == frame:
      os.kill(os.getpid(), signal.SIGINT)
    return out

  return hook


def _killed_at(frame):
  """A step hook that raises KeyboardInterrupt at training `frame`, as a kill would end the run
  there (nothing of the run's own is saved)."""

  def hook(n, action, out):
    if n == frame:
      raise KeyboardInterrupt('killed')
    return out

  return hook


@pytest.fixture(scope='module')
def sac_runs(tmp_path_factory):
  """Two uninterrupted runs with one seed, and one killed after its first checkpoint + resumed;
  the first run's summary."""
  agent = _agent(SAC)
  base = tmp_path_factory.mktemp('loop')
  dirs = {k: str(base / k) for k in ('a', 'b', 'killed')}
  summary = driver.run(agent, CFG, 'Pendulum-v1', dirs['a'], progress=False)
  driver.run(agent, CFG, 'Pendulum-v1', dirs['b'], progress=False)

  real_make_env = driver.make_env
  driver.make_env, _ = _env_with(_killed_at(450))   # after the checkpoint at frame 300
  try:
    with pytest.raises(KeyboardInterrupt):
      driver.run(agent, CFG, 'Pendulum-v1', dirs['killed'], progress=False)
  finally:
    driver.make_env = real_make_env
  driver.run(agent, CFG, 'Pendulum-v1', dirs['killed'], resume=True, progress=False)
  return agent, dirs, summary


def _final(agent, run_dir, cfg=CFG):
  mngr = checkpoint.manager(run_dir)
  try:
    return checkpoint.restore(mngr, jax.eval_shape(lambda: init_loop(agent, replay_source(agent, cfg), cfg.seed)))
  finally:
    mngr.close()


def test_same_seed_same_numbers(sac_runs):
  agent, dirs, _ = sac_runs
  assert _rows(dirs['a'], 'train') == _rows(dirs['b'], 'train')
  assert _rows(dirs['a'], 'eval') == _rows(dirs['b'], 'eval')
  (la, _), (lb, _) = _final(agent, dirs['a']), _final(agent, dirs['b'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, la.agent, lb.agent)


def test_resume_after_a_kill_continues_identically(sac_runs):
  agent, dirs, _ = sac_runs
  assert _rows(dirs['killed'], 'train') == _rows(dirs['a'], 'train')
  assert _rows(dirs['killed'], 'eval') == _rows(dirs['a'], 'eval')
  (la, ha), (lk, hk) = _final(agent, dirs['a']), _final(agent, dirs['killed'])
  assert int(lk.frame) == 600 and ha == hk
  jax.tree_util.tree_map(np.testing.assert_array_equal, la, lk)
  assert os.path.exists(os.path.join(dirs['killed'], 'learning_curve.png'))


def test_time_limit_truncation_is_not_stored_as_termination(sac_runs):
  agent, dirs, _ = sac_runs
  loop, host = _final(agent, dirs['a'])
  assert host['episodes'][0] >= 3                                 # 200-step Pendulum episodes ended
  assert float(np.asarray(loop.data.data['terminated']).sum()) == 0.0


def test_terminations_are_stored_and_dipo_writes_improved_actions_beside_taken_ones(tmp_path):
  dipo = method(P.vp_diffusion(), S.sampler(S.ddpm(), steps=2), G.action_gradient(steps=3),
                R.no_regularizer(), critic.ensemble_q(hidden=(8,)), target_actor=True, name='dipo')
  agent = _agent(dipo._replace(policy=P.vp_diffusion()), 'InvertedPendulum-v5')
  cfg = CFG._replace(total_frames=300, eval_every=10_000, checkpoint_every=300, random_frames=300)
  taken, terminations = [], []

  def record(n, action, out):
    taken.append(np.array(action))
    terminations.append(out[2])
    return out

  real_make_env = driver.make_env
  driver.make_env, _ = _env_with(record)
  try:
    driver.run(agent, cfg, 'InvertedPendulum-v5', str(tmp_path), progress=False)
  finally:
    driver.make_env = real_make_env
  loop, _ = _final(agent, str(tmp_path), cfg)
  data = jax.device_get(loop.data.data)
  n = len(taken)
  assert sum(terminations) >= 3                       # random actions drop the pole quickly
  np.testing.assert_array_equal(data['terminated'][:n], np.asarray(terminations, np.float32))
  np.testing.assert_allclose(data['action'][:n], np.stack(taken), atol=1e-6)   # critic's actions intact
  changed = np.abs(data['improved_action'][:n] - data['action'][:n]).max(-1) > 1e-6
  assert 0 < changed.sum() < n                        # sampled rows were improved and written back


def test_update_every_k_frames_fuses_k_updates(tmp_path):
  """update_every = 4: on every 4th frame past learning_starts one lax.scan runs 4 updates."""
  agent = _agent(SAC)
  cfg = CFG._replace(total_frames=300, learning_starts=100, random_frames=100, update_every=4,
                     eval_every=10_000, checkpoint_every=300)
  driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path), progress=False)
  loop, _ = _final(agent, str(tmp_path), cfg)
  bursts = len([f for f in range(100, 301) if f % 4 == 0])
  assert int(loop.agent.step) == 4 * bursts
  updates = sum(float(r['updates']) for r in _rows(str(tmp_path), 'train'))
  assert updates == 4 * bursts


def test_ctrl_c_saves_the_frame_in_progress_and_resume_continues_identically(sac_runs, tmp_path):
  """SIGINT at training frame 450, mid-episode (checkpoints due at 300 and 600): the run saves
  frame 450 and stops; the resumed run replays the episode's 50 actions and ends with the
  uninterrupted run's parameters, buffer and evaluations."""
  agent, dirs, _ = sac_runs
  make, calls = _env_with(_sigint_at(450))
  real_make_env, driver.make_env = driver.make_env, make
  try:
    with pytest.raises(KeyboardInterrupt):
      driver.run(agent, CFG, 'Pendulum-v1', str(tmp_path), progress=False)
    assert checkpoint.latest_frame(str(tmp_path)) == 450
    calls['n'] = 0
    summary = driver.run(agent, CFG, 'Pendulum-v1', str(tmp_path), resume=True, progress=False)
  finally:
    driver.make_env = real_make_env
  assert calls['n'] == 50 + 150 and summary['frames'] == 600
  # the log window 401..500 is split at the interrupt: its averages differ, the rest are equal
  split = lambda rows: [r for r in rows if r['frame'] not in ('450', '500')]
  assert split(_rows(str(tmp_path), 'train')) == split(_rows(dirs['a'], 'train'))
  assert _rows(str(tmp_path), 'eval') == _rows(dirs['a'], 'eval')
  (la, ha), (lc, hc) = _final(agent, dirs['a']), _final(agent, str(tmp_path))
  assert ha == hc
  jax.tree_util.tree_map(np.testing.assert_array_equal, la, lc)


def test_a_replay_that_does_not_reproduce_the_episode_starts_a_new_one(sac_runs, tmp_path):
  """An env that does not step deterministically: the resumed run warns, starts a new episode at
  the checkpoint's frame and trains on to the end."""
  agent, _, _ = sac_runs
  cfg = CFG._replace(total_frames=400, eval_every=10_000)
  make, _ = _env_with(_sigint_at(250))
  real_make_env, driver.make_env = driver.make_env, make
  try:
    with pytest.raises(KeyboardInterrupt):
      driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path), progress=False)
    drift = lambda n, action, out: (out[0] + 1e-3,) + tuple(out[1:])   # off the buffer's obs
    driver.make_env, _ = _env_with(drift)
    with pytest.warns(UserWarning, match='starts a new episode at frame 250'):
      summary = driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path), resume=True,
                              progress=False)
  finally:
    driver.make_env = real_make_env
  assert summary['frames'] == 400
  _, host = _final(agent, str(tmp_path), cfg)
  assert host['episode_start'] == [250]           # the new episode ran its 150 frames to the end


def test_the_periodic_step_follows_each_burst_that_contains_a_multiple_of_every():
  from flowrl.compose.step import runs_periodic
  agent = _agent(SAC)._replace(periodic_every=4)
  cfg = CFG._replace(learning_starts=10, update_every=2, updates_per_frame=1.5)   # 3 per burst
  source = replay_source(agent, cfg)
  assert source.n == 3
  done, ran = 0, []
  for frame in range(1, 31):
    due = bool(source.due(None, frame))
    assert due == (frame >= 10 and frame % 2 == 0)
    if runs_periodic(agent, source, frame, done, due):
      ran.append(done)
    done += 3 if due else 0
  assert ran == [0, 3, 6, 12, 15, 18, 24, 27, 30]   # bursts [0,3) [3,6) [6,9) [12,15) ...
  assert not runs_periodic(_agent(SAC), source, 10, 0, True)  # SAC has none


def test_dacer_estimates_its_entropy_every_k_updates_in_the_loop(tmp_path):
  """21 updates with estimated_entropy.every = 4: estimates (α's Adam steps) at updates 0, 4, ...,
  20, on the current parameters; α moved from its initial value."""
  import gin
  import optax
  gin.parse_config(['DenoiserNet.hidden=(8,)', 'DenoiserNet.obs_hidden=(4,)',
                    'DenoiserNet.time_dim=4'])
  dacer = method(P.vp_diffusion(),
                 S.sampler(S.ddpm(), steps=2), G.reparam_q(),
                 R.estimated_entropy(num_samples=4, every=4), critic.ensemble_q(hidden=(8,)),
                 name='dacer')
  agent = _agent(dacer)
  cfg = CFG._replace(total_frames=120, learning_starts=100, eval_every=10_000,
                     checkpoint_every=120)
  driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path), progress=False)
  loop, _ = _final(agent, str(tmp_path), cfg)
  assert int(loop.agent.step) == 21
  assert int(optax.tree_utils.tree_get(loop.agent.reg['opt'], 'count')) == 6
  assert float(loop.agent.reg['log_alpha']) != pytest.approx(np.log(3.0))


@pytest.mark.parametrize('signum', ['SIGINT', 'SIGTERM'])
def test_ctrl_c_or_sigterm_while_training_is_held_until_a_safe_point(signum):
  import signal
  signum = getattr(signal, signum)
  done = []
  before = signal.getsignal(signum)
  interrupts = Interrupts()
  try:
    os.kill(os.getpid(), signum)
    done.append('the checkpoint write finished')     # still runs: the interrupt only set a flag
    with pytest.raises(KeyboardInterrupt):
      interrupts.check()                             # once the frame is saved
  finally:
    interrupts.restore()
  assert done == ['the checkpoint write finished']
  assert signal.getsignal(signum) is before


def test_ctrl_c_ignored_at_start_stays_ignored():
  """A run started with SIGINT ignored (`nohup`, a script's background job) does not take it up."""
  import signal
  before = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    interrupts = Interrupts()
    os.kill(os.getpid(), signal.SIGINT)
    interrupts.check()                               # nothing received: no KeyboardInterrupt
    interrupts.restore()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, before)


def test_evaluation_before_the_first_update_compiles_the_evaluation_policy_on_demand(tmp_path):
  """The evaluation program is compiled in the background once the first update has run; a run
  that evaluates earlier (here: never updates) compiles it at its first evaluation instead."""
  cfg = CFG._replace(total_frames=200, learning_starts=10_000, eval_every=100,
                     checkpoint_every=200)
  summary = driver.run(_agent(SAC), cfg, 'Pendulum-v1', str(tmp_path), progress=False)
  evals = _rows(str(tmp_path), 'eval')
  assert [int(r['frame']) for r in evals] == [100, 200]
  assert all(np.isfinite(float(r['return_mean'])) for r in evals)
  assert 'seconds_to_first_update' not in summary


def test_summary_times_the_first_update(sac_runs):
  summary = sac_runs[2]
  assert 0 < summary['first_update_call_seconds'] <= summary['seconds_to_first_update'] \
      <= summary['seconds']


def test_several_envs_per_seed_store_every_env_bootstrap_from_final_obs_and_resume(tmp_path):
  """2 envs per seed: each vector step stores both envs' rows (row 2t + e), fuses 2 updates, a
  200-step Pendulum time limit stores the true final observation (from the vector env's
  `final_obs`, not the next episode's first) with terminated = 0, and a run killed mid-episode
  resumes to the uninterrupted run's numbers."""
  agent = _agent(SAC)
  cfg = CFG._replace(total_frames=600, envs_per_seed=2, eval_every=600)
  seen = []
  record = lambda n, action, out: (seen.append(out), out)[1]
  make, _ = _env_with(record)
  real_make_env, driver.make_env = driver.make_env, make
  try:
    summary = driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path / 'a'), progress=False)
    driver.make_env, _ = _env_with(_killed_at(225))          # env 0's step 225: frame 450
    with pytest.raises(KeyboardInterrupt):
      driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path / 'k'), progress=False)
  finally:
    driver.make_env = real_make_env
  driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path / 'k'), resume=True, progress=False)
  assert summary['frames'] == 600
  loop, host = _final(agent, str(tmp_path / 'a'), cfg)
  assert int(loop.frame) == 600 and int(loop.agent.step) == 2 * len(range(100, 601, 2))
  data = jax.device_get(loop.data.data)
  assert int(loop.data.size) == 600 and float(data['terminated'].sum()) == 0.0
  final = seen[199][0]                                       # env 0's 200th step: truncated
  assert seen[199][3] and not seen[199][2]
  np.testing.assert_allclose(data['next_obs'][2 * 199], final, atol=1e-6)
  assert not np.allclose(data['obs'][2 * 200], final)        # the next row starts a new episode
  np.testing.assert_allclose(data['obs'][2 * 199 + 1], data['next_obs'][2 * 198 + 1], atol=1e-6)
  assert host['episodes'] == [2] and host['episode_start'] == [200, 200]   # one each, at step 200
  (lk, hk) = _final(agent, str(tmp_path / 'k'), cfg)
  assert hk == host
  jax.tree_util.tree_map(np.testing.assert_array_equal, loop, lk)


def test_a_checkpoint_that_does_not_fit_the_run_is_refused_in_one_sentence(sac_runs):
  """A resume whose state has other sizes (here a smaller buffer) than the checkpoint's is refused
  before orbax reads any array."""
  agent, dirs, _ = sac_runs
  with pytest.raises(checkpoint.CheckpointMismatch, match='does not fit this run'):
    _final(agent, dirs['a'], CFG._replace(buffer_size=500))


def _random_dataset(rows):
  """A dataset source of `rows` random Pendulum-shaped transitions, 2 updates of 16 per step."""
  from flowrl.data.dataset import dataset
  rng = np.random.default_rng(0)
  arrays = {'obs': rng.normal(size=(rows, 3)), 'action': rng.uniform(-1, 1, (rows, 1)),
            'reward': rng.normal(size=rows), 'next_obs': rng.normal(size=(rows, 3)),
            'terminated': np.zeros(rows)}
  return dataset({k: v.astype(np.float32) for k, v in arrays.items()}, batch_size=16, n=2)


def test_the_driver_trains_on_a_dataset_without_stepping_an_env(tmp_path):
  """The dataset source through the same driver: no training env is made or stepped, every step
  is one burst of updates on the device-resident arrays (frames count updates), evaluation runs
  as usual, and the checkpoint keeps everything but the dataset."""
  agent, source = _agent(SAC), _random_dataset(500)
  cfg = CFG._replace(total_frames=100, learning_starts=0, random_frames=0, eval_every=100,
                     checkpoint_every=100, log_every=50)
  made = []
  real_make_env = driver.make_env
  driver.make_env = lambda name, seed: (made.append(seed), real_make_env(name, seed))[1]
  try:
    summary = driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path), progress=False, source=source)
  finally:
    driver.make_env = real_make_env
  assert made == [CFG.seed + 12345]                     # the evaluation env only
  mngr = checkpoint.manager(str(tmp_path))
  try:
    like = jax.eval_shape(lambda: init_loop(agent, source, cfg.seed))
    loop, _ = checkpoint.restore(mngr, like._replace(data=()))
  finally:
    mngr.close()
  assert int(loop.agent.step) == 100 and summary['frames'] == 100
  assert [float(r['updates']) for r in _rows(str(tmp_path), 'train')] == [50.0, 50.0]
  assert np.isfinite(float(_rows(str(tmp_path), 'eval')[0]['return_mean']))


def test_a_signal_that_comes_while_a_frame_is_awaited_saves_that_frame(tmp_path, monkeypatch):
  """SIGTERM delivered while the main thread waits for frame 10's results (here: in its log,
  which is where an offline burst of updates is awaited) saves frame 10 and stops, not one step
  later: a step of a long offline burst takes minutes."""
  import signal
  agent, source = _agent(SAC), _random_dataset(200)
  cfg = CFG._replace(total_frames=40, learning_starts=0, random_frames=0, eval_every=1000,
                     checkpoint_every=1000, log_every=2)
  real_log = driver.Driver.log

  def log(self, frame, pending, fps):
    real_log(self, frame, pending, fps)
    if frame == 10:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(driver.Driver, 'log', log)
  with pytest.raises(KeyboardInterrupt):
    driver.run(agent, cfg, 'Pendulum-v1', str(tmp_path), progress=False, source=source)
  assert checkpoint.latest_frame(str(tmp_path)) == 10
  assert [r['frame'] for r in _rows(str(tmp_path), 'train')][-1] == '10'
