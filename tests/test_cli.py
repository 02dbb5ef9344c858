"""`python -m flowrl.run` on bad input: one sentence on stderr, exit 2, no traceback; a run whose
loss turns NaN stops with exit 3 and keeps its last finite checkpoint."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=ROOT, timeout=240):
  env = {**os.environ, 'MUJOCO_GL': 'egl'}
  return subprocess.run([sys.executable, '-m', 'flowrl.run', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('args,words', [
    (['--gin=gin/nope.gin'], ["gin file 'gin/nope.gin' does not exist"]),
    (['--gin=gin/sac.gin', '--bind', 'nosuch.param=1'], ['nosuch']),
    (['--gin=gin/sac.gin', '--bind', 'train.total_frames'], ['malformed --bind', "'name.param=value'"]),
    (['--gin=gin/sac.gin', '--bind', 'train.total_frmes=5'], ['total_frmes']),
    (['--gin=gin/sac.gin', '--bind', 'env.name="Nope-v0"'], ["unknown environment 'Nope-v0'", 'HalfCheetah-v5']),
    (['--gin=gin/sac.gin', '--bind', 'env.name="dmc:cheetah-fly"'], ["unknown environment 'dmc:cheetah-fly'", 'dmc:cheetah-run']),
    (['--gin=gin/qsm.gin', '--bind', 'Method.policy=@tanh_gaussian()'],
     ["sampler 'ddpm'", "policy 'tanh_gaussian' does not provide", 'vp_diffusion']),
    (['--gin=gin/sac.gin', '--bind', 'sampler.rule=@no_such_sampler()'], ['no_such_sampler']),
    (['--gin=gin/sac.gin', '--bind', 'sampler.selection="best"'], ["sampler.selection is 'best'"]),
    (['--gin=gin/dql.gin', '--bind', 'dataset_source.name="flowrl/nope/medium-v0"'],
     ["no local Minari dataset 'flowrl/nope/medium-v0'", 'python -m flowrl.collect']),
    (['--gin=gin/iql.gin', '--bind', 'dataset_source.name="/tmp/no/such.npz"'],
     ["no file '/tmp/no/such.npz'"]),
    ([], ['no method given']),
    (['--resume', '/tmp/not-a-run-folder'], ['not a run folder']),
])
def test_bad_input_fails_with_one_sentence(args, words):
  out = run(*args)
  assert out.returncode == 2, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith('flowrl:')]
  assert len(lines) == 1, out.stderr
  assert 'Traceback' not in out.stderr and 'In call to configurable' not in out.stderr
  for w in words:
    assert w in lines[0], (w, lines[0])


def test_list_prints_every_axis_with_parameters():
  out = run('--list')
  assert out.returncode == 0
  for w in ('policy:', 'sampler:', 'signal:', 'regularizer:', 'critic:', 'vp_diffusion(',
            'ddpm(clip_denoised=True)', 'q_score_matching(score_scale=50.0', 'exact_entropy(',
            'distributional_q(', 'action_gradient(steps=20', 'ppo_clip(clip=0.2',
            'state_value(', 'rollout_source(steps=2048, epochs=10, minibatches=32',
            'replay_source()'):
    assert w in out.stdout, w


def diverging_sac(checkpoint_every: int):
  """A tiny SAC on Pendulum whose critic blows up soon after its first update (frame 250)."""
  return ('--gin=gin/sac.gin', '--gin=gin/env/pendulum.gin', '--no-progress',
          '--bind', 'train.total_frames=600', '--bind', 'train.random_frames=200',
          '--bind', 'train.learning_starts=250', '--bind', f'train.checkpoint_every={checkpoint_every}',
          '--bind', 'train.log_every=100', '--bind', 'train.eval_every=100000',
          '--bind', 'tanh_gaussian.hidden=(8,)', '--bind', 'ensemble_q.hidden=(8,)',
          '--bind', 'critic_optimizer.learning_rate=1e30', '--bind', 'Method.reward_scale=1e30')


def test_nan_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
  out = run(*diverging_sac(checkpoint_every=200), '--logdir', str(tmp_path))
  assert out.returncode == 3, out.stderr
  assert 'training diverged' in out.stderr and 'Traceback' not in out.stderr
  assert 'the last finite checkpoint (frame 200) is kept' in out.stderr
  (run_dir,) = [tmp_path / d for d in os.listdir(tmp_path)]
  steps = sorted(int(d) for d in os.listdir(run_dir / 'checkpoints') if d.isdigit())
  assert steps == [200]
  import jax
  from flowrl.runtime import checkpoint
  from flowrl import run as cli
  cli.parse_config([str(run_dir / 'config.gin')], [])
  agent, cfg, _ = cli.build()
  from flowrl.compose.step import init_loop, replay_source
  mngr = checkpoint.manager(str(run_dir))
  loop, host = checkpoint.restore(mngr, jax.eval_shape(lambda: init_loop(agent, replay_source(agent, cfg), cfg.seed)))
  mngr.close()
  assert int(loop.frame) == 200 and checkpoint.is_finite(loop.agent)


def test_nan_before_the_first_checkpoint_says_there_is_none(tmp_path):
  out = run(*diverging_sac(checkpoint_every=100000), '--logdir', str(tmp_path))
  assert out.returncode == 3, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith('flowrl:')]
  assert len(lines) == 1 and 'no checkpoint had been written yet' in lines[0], out.stderr
  assert 'the first was due at frame 100000' in lines[0]
  (run_dir,) = [tmp_path / d for d in os.listdir(tmp_path)]
  assert not [d for d in os.listdir(run_dir / 'checkpoints') if d.isdigit()]


@pytest.mark.parametrize('signum', ['SIGINT', 'SIGTERM'])
def test_ctrl_c_or_sigterm_saves_the_frame_in_progress_and_says_how_to_resume(tmp_path, signum):
  """No checkpoint is due (every 100k frames): Ctrl-C (SIGINT) or a scheduler's SIGTERM itself
  writes one, at the frame it stopped."""
  import re
  import signal
  import time
  env = {**os.environ, 'MUJOCO_GL': 'egl'}
  proc = subprocess.Popen(
      [sys.executable, '-m', 'flowrl.run', '--gin=gin/sac.gin', '--gin=gin/env/pendulum.gin',
       '--no-progress', '--bind', 'train.checkpoint_every=100000', '--bind', 'train.log_every=100',
       '--bind', 'train.random_frames=200', '--bind', 'train.learning_starts=200',
       '--bind', 'tanh_gaussian.hidden=(8,)', '--bind', 'ensemble_q.hidden=(8,)',
       '--logdir', str(tmp_path)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while time.time() < deadline and not list(tmp_path.glob('*/train.csv')):
    time.sleep(0.2)
  assert list(tmp_path.glob('*/train.csv')), 'no training log within 120 s'
  proc.send_signal(getattr(signal, signum))
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err
  assert 'python -m flowrl.run --resume' in err and 'Traceback' not in err
  frame = int(re.search(r'checkpoint at frame (\d+) is kept', err).group(1))
  assert frame >= 100
  (run_dir,) = tmp_path.iterdir()
  assert sorted(int(d) for d in os.listdir(run_dir / 'checkpoints') if d.isdigit()) == [frame]
