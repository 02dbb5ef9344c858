"""The Isaac Lab adapter against a fake Isaac Lab env on torch CPU tensors (tests/fake_isaaclab.py),
and the guard's one sentence where Isaac Lab is absent (always: it cannot install beside our pins)."""
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from flowrl.errors import ConfigError


def test_an_isaac_task_without_isaac_lab_is_one_sentence_naming_what_it_needs(monkeypatch):
  from flowrl.envs import isaaclab, make_env
  monkeypatch.setitem(sys.modules, 'isaaclab', None)      # as on every machine without it
  with pytest.raises(ConfigError, match=r'^Isaac Lab tasks need a CUDA GPU machine .*isaaclab 3\.0 '
                                        r'on Python 3\.12.*isaaclab 2\.3 with Isaac Sim 5\.1'):
    isaaclab.require_isaaclab()
  with pytest.raises(ConfigError, match='^Isaac Lab tasks need'):
    make_env('isaac:Isaac-Ant-v0')
  out = subprocess.run([sys.executable, '-m', 'flowrl.run', '--gin=gin/ppo.gin', '--bind',
                        'env.name="isaac:Isaac-Ant-v0"'], capture_output=True, text=True)
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2 and len(lines) == 1 and 'Isaac Lab tasks need' in lines[0], out.stderr
  from flowrl.sweep import spec
  assert spec.SUITES['isaaclab'] == tuple(isaaclab.PREFIX + t for t in isaaclab.TASKS)


@pytest.fixture
def torch():
  return pytest.importorskip('torch')     # in the dev extra (the CPU build); skipped without it


def _adapter(torch, **kw):
  from flowrl.envs.isaaclab import IsaacLabAdapter
  from tests.fake_isaaclab import FakeIsaacLabEnv
  fake = FakeIsaacLabEnv(**kw)
  return fake, IsaacLabAdapter(fake, torch=torch)


def test_observations_cross_without_a_copy_and_actions_arrive_as_sent(torch):
  fake, env = _adapter(torch)
  obs = env.reset(seed=0)
  assert (env.num_envs, env.obs_dim, env.act_dim) == (4, 3, 2)
  fake_obs = fake._obs()['policy']
  np.testing.assert_array_equal(np.asarray(obs), fake_obs.numpy())
  action = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 2)), jnp.float32)
  out = env.step(action)
  np.testing.assert_array_equal(fake.last_action.numpy(), np.asarray(action))
  assert fake.last_action.data_ptr() == action.unsafe_buffer_pointer()       # zero-copy in
  # the observation the env returned is the very tensor JAX reads (zero-copy out)
  original = fake._obs
  seen = []
  fake._obs = lambda: seen.append(original()) or seen[-1]
  out = env.step(action)
  assert out.obs.unsafe_buffer_pointer() == seen[-1]['policy'].data_ptr()


def test_dones_and_rewards_do_not_change_when_the_env_rewrites_its_buffers(torch):
  fake, env = _adapter(torch, max_episode_length=2)
  env.reset(seed=0)
  a = jnp.zeros((4, 2))
  env.step(a)
  second = env.step(a)                 # every env times out here
  kept = (np.asarray(second.truncated).copy(), np.asarray(second.reward).copy())
  assert kept[0].tolist() == [1.0] * 4
  env.step(a)                          # rewrites reset_time_outs and reward_buf in place
  assert fake.reset_time_outs.tolist() == [False] * 4        # the raw buffer did change
  np.testing.assert_array_equal(np.asarray(second.truncated), kept[0])
  np.testing.assert_array_equal(np.asarray(second.reward), kept[1])
  assert second.truncated.dtype == jnp.float32 and second.terminated.dtype == jnp.float32


def test_the_final_observation_comes_from_extras_and_without_it_time_outs_terminate(torch,
                                                                                  capsys):
  fake, env = _adapter(torch, max_episode_length=2)
  env.reset(seed=0)
  a = jnp.full((4, 2), 0.1)
  env.step(a)
  out = env.step(a)                                          # the time-out step
  np.testing.assert_allclose(np.asarray(out.final_obs)[:, 1], 0.2)   # the last step's counter
  np.testing.assert_allclose(np.asarray(out.obs)[:, 1], 0.0)         # the new episode's first
  assert np.asarray(out.truncated).tolist() == [1.0] * 4
  assert np.asarray(out.terminated).tolist() == [0.0] * 4

  fake, env = _adapter(torch, max_episode_length=2, compute_final_obs=False)
  env.reset(seed=0)
  env.step(a)
  out = env.step(a)
  assert np.asarray(out.terminated).tolist() == [1.0] * 4   # no final obs: never bootstrap
  assert np.asarray(out.truncated).tolist() == [0.0] * 4
  env.step(a)
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'no final observation' in err[0]     # said once
  from flowrl.envs.isaaclab import IsaacLabAdapter
  with pytest.raises(ConfigError, match="compute_final_obs = True"):
    IsaacLabAdapter(fake, final_obs='extras', torch=torch).step(a)


def test_flowrl_runs_ppo_on_an_isaac_task_and_resumes_with_new_episodes(torch, tmp_path,
                                                                        monkeypatch, capsys):
  """`flowrl.run`'s path for `isaac:<task>` with the fake env in Isaac Lab's place: the env is
  made once with train.envs_per_seed envs, PPO trains on its batch through the adapter, training
  episodes are logged, there is no evaluation, and a resumed run starts new episodes."""
  import csv
  import os
  from flowrl import run as cli
  from flowrl.envs import isaaclab
  from flowrl.runtime.driver import run
  from tests.fake_isaaclab import FakeIsaacLabEnv
  from tests.test_gin_files import TINY
  made = []

  def make(task, num_envs, seed=0, device='cuda:0'):
    made.append((task, num_envs))
    return isaaclab.IsaacLabAdapter(FakeIsaacLabEnv(num_envs=num_envs, max_episode_length=8),
                                    torch=torch)

  monkeypatch.setattr(isaaclab, 'make_isaaclab', make)
  monkeypatch.setattr(isaaclab, 'require_isaaclab', lambda: torch)
  monkeypatch.setattr(isaaclab, '_MADE', {})
  binds = TINY + ['env.name="isaac:Isaac-Ant-v0"', 'train.envs_per_seed=4',
                  'rollout_source.steps=16', 'rollout_source.minibatches=2',
                  'rollout_source.epochs=1', 'train.log_every=64', 'train.checkpoint_every=128',
                  'train.eval_every=128', 'train.fused_frames=32']   # not JAX: not fused
  cli.parse_config(['gin/ppo.gin'], binds + ['train.total_frames=256'])
  agent, cfg, env = cli.build()
  assert (agent.spec.obs_dim, agent.spec.act_dim) == (3, 2) and made == [('Isaac-Ant-v0', 4)]
  summary = run(agent, cfg, env, str(tmp_path), progress=False)
  rows = list(csv.DictReader(open(tmp_path / 'train.csv')))
  assert summary['frames'] == 256 and [r['frame'] for r in rows] == ['64', '128', '192', '256']
  returns = [float(r['episode_return']) for r in rows]
  assert all(-8.0 <= r <= 0.0 for r in returns)       # 8-step episodes of reward −|position|
  assert float(rows[-1]['updates']) > 0 and not os.path.exists(tmp_path / 'eval.csv')
  assert 'no evaluation episodes' in capsys.readouterr().err
  summary = run(agent, cfg._replace(total_frames=384), env, str(tmp_path), resume=True,
                progress=False)
  assert summary['frames'] == 384 and made == [('Isaac-Ant-v0', 4)]   # made once per process
  assert 'start new episodes' in capsys.readouterr().err
  with pytest.raises(ConfigError, match='trains one seed'):
    run(agent, cfg, env, str(tmp_path / 'seeds'), seeds=[0, 1], progress=False)
