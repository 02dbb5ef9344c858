"""The envpool backend of the training envs (`vector_env.backend = "envpool"`): its same-step
autoreset on a fake pool with envpool's next-step semantics (always runs), the real envpool on
InvertedPendulum-v5 and through `flowrl.run` (the dev extra has it; skipped without it), and the
one-sentence errors."""
import sys

import numpy as np
import pytest

from flowrl.errors import ConfigError


class NextStepPool:
  """envpool's sync API and autoreset, in numpy: env i's observation is [i, steps, episode]; an
  episode ends after `length[i]` steps; the step after that resets the env, ignores its action
  and returns reward 0 (what the adapter must never let happen); `reset(ids)` returns those envs
  only, in id order."""

  def __init__(self, length):
    self.length = np.asarray(length)
    self.steps = np.zeros(len(length), int)
    self.episode = np.zeros(len(length), int)
    self.pending = np.zeros(len(length), bool)
    self.actions = []

  def _obs(self, ids):
    return np.stack([ids, self.steps[ids], self.episode[ids]], 1).astype(np.float64)

  def reset(self, ids=None):
    ids = np.arange(len(self.length)) if ids is None else np.asarray(ids)
    self.steps[ids], self.pending[ids] = 0, False
    self.episode[ids] += 1
    return self._obs(ids), {'env_id': ids}

  def step(self, action):
    self.actions.append(action.copy())
    ids = np.arange(len(self.length))
    reward = np.where(self.pending, 0.0, action[:, 0])
    for i in np.flatnonzero(self.pending):     # envpool's next-step reset
      self.reset([i])
    self.steps[~self.pending] += 1
    term = self.steps == self.length
    self.pending = term.copy()
    return self._obs(ids), reward, term, np.zeros_like(term), {'env_id': ids}


def _fake_vector(lengths, low=-2.0, high=2.0):
  from flowrl.envs.envpool_vector import EnvpoolVector
  v = EnvpoolVector.__new__(EnvpoolVector)
  v.pools = [NextStepPool(l) for l in lengths]
  v.low, v.high, v.n = np.full(1, low), np.full(1, high), len(lengths[0])
  return v


def test_finished_envs_reset_in_the_same_step_and_keep_their_final_observation():
  v = _fake_vector([[2, 3], [1, 5]])           # 2 seeds × 2 envs, staggered episode ends
  obs, _ = v.reset()
  np.testing.assert_array_equal(obs[:, 1:], [[0, 1]] * 4)
  for t in range(1, 7):
    action = np.full((4, 1), 0.5)
    obs, reward, term, trunc, info = v.step(action)
    assert obs.dtype == np.float32 and obs.shape == (4, 3)
    # 0.5 in [−1, 1] is 1.0 in [−2, 2], and no step is a reward-0 reset step
    np.testing.assert_allclose(reward, 1.0)
    for i, length in enumerate([2, 3, 1, 5]):
      done = t % length == 0
      assert term[i] == done
      # a finished env is already in its next episode; its last observation is the final one
      assert obs[i, 1] == (0 if done else t % length)
      assert info['final_obs'][i, 1] == (length if done else t % length)
      assert obs[i, 2] == 1 + t // length
  # every step the pools saw carried the policy's action rescaled to the box
  assert all(np.allclose(a, 1.0) for p in v.pools for a in p.actions)


def test_a_reset_that_returns_envs_in_another_order_is_placed_by_env_id():
  v = _fake_vector([[1, 9, 1]])
  pool = v.pools[0]
  reset = pool.reset
  pool.reset = lambda ids=None: (lambda o, i: (o[::-1], {'env_id': i['env_id'][::-1]}))(
      *reset(ids))
  v.reset()
  obs, *_ = v.step(np.zeros((3, 1)))
  np.testing.assert_array_equal(obs[:, 0], [0, 1, 2])   # each row is its own env's


@pytest.fixture(scope='module')
def envpool():
  return pytest.importorskip('envpool')      # in the dev extra; skipped without it


def test_envpool_inverted_pendulum_same_step_autoreset_and_reproducible(envpool):
  from flowrl.envs.envpool_vector import EnvpoolVector

  def rollout():
    v = EnvpoolVector('InvertedPendulum-v5', [0, 1], 3)
    obs, _ = v.reset()
    rng, seen, ends = np.random.default_rng(0), [obs], 0
    for _ in range(60):
      action = rng.uniform(-1, 1, (6, 1))
      action[::3] = 1.0                         # env 0 of each seed falls fast: staggered ends
      obs, reward, term, trunc, info = v.step(action)
      seen.append(obs)
      # v5's reward is 1 until the pole falls, 0 on that step; a reward-0 step that did not
      # terminate would be envpool's own reset step, which the adapter must never let through
      np.testing.assert_array_equal(reward, 1.0 - term)
      for i in np.flatnonzero(term):
        ends += 1
        assert abs(info['final_obs'][i, 1]) > 0.2   # the episode ended by its pole angle
        assert np.all(np.abs(obs[i, :2]) <= 0.01)   # and the env is already reset (noise 0.01)
      not_done = ~(term | trunc)
      np.testing.assert_array_equal(info['final_obs'][not_done], obs[not_done])
    v.close()
    return np.stack(seen), ends

  first, ends = rollout()
  assert ends >= 4 and first.dtype == np.float32 and first.shape == (61, 6, 4)
  np.testing.assert_array_equal(first, rollout()[0])    # the same seed, the same episodes
  assert not np.allclose(first[:, 0], first[:, 3])       # the two seeds differ


def test_flowrl_runs_ppo_on_envpool_and_resumes_with_new_episodes(envpool, tmp_path, capsys):
  import csv
  from flowrl import run as cli
  from flowrl.runtime.driver import run
  from tests.test_gin_files import TINY
  binds = TINY + ['env.name="InvertedPendulum-v5"', 'vector_env.backend="envpool"',
                  'train.envs_per_seed=4', 'rollout_source.steps=32',
                  'rollout_source.minibatches=2', 'rollout_source.epochs=2',
                  'train.log_every=128', 'train.checkpoint_every=256', 'train.eval_every=256',
                  'train.eval_episodes=2', 'train.total_frames=512']
  cli.parse_config(['gin/ppo.gin'], binds)
  agent, cfg, env = cli.build()
  summary = run(agent, cfg, env, str(tmp_path), progress=False)
  rows = list(csv.DictReader(open(tmp_path / 'train.csv')))
  assert summary['frames'] == 512 and [r['frame'] for r in rows] == ['128', '256', '384', '512']
  assert all(1.0 <= float(r['episode_return']) <= 1000 for r in rows)
  assert float(rows[-1]['updates']) > 0 and np.isfinite(summary['eval_return'])
  summary = run(agent, cfg._replace(total_frames=768), env, str(tmp_path), resume=True,
                progress=False)
  assert summary['frames'] == 768
  assert 'envs start new episodes' in capsys.readouterr().err


def test_backend_errors_are_one_sentence(monkeypatch):
  from flowrl.runtime.vector_env import check_backend
  with pytest.raises(ConfigError, match=r"^unknown vector_env.backend 'envpol'; the backends are "
                                        r"'gymnasium', 'envpool'\.$"):
    check_backend('envpol')
  assert check_backend('gymnasium', 'dmc:cheetah-run') == 'gymnasium'
  monkeypatch.setitem(sys.modules, 'envpool', None)      # as without the extra
  with pytest.raises(ConfigError, match=r'needs envpool 1\.2\.5, which is not installed .*'
                                        r'pip install -e "\.\[envpool\]"'):
    check_backend('envpool', 'HalfCheetah-v5')


def test_a_task_envpool_lacks_is_one_sentence_listing_those_it_has(envpool):
  from flowrl.runtime.vector_env import check_backend
  with pytest.raises(ConfigError, match=r"^vector_env.backend = \"envpool\" steps gymnasium tasks "
                                        r"envpool has, and 'dmc:cheetah-run' is not one; they "
                                        r"are Ant-v5, HalfCheetah-v5"):
    check_backend('envpool', 'dmc:cheetah-run')
  assert check_backend('envpool', 'Hopper-v5') == 'envpool'
