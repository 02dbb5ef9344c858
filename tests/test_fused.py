"""JAX-native envs and the fused run: the protocol's autoreset, the pure Pendulum against
gymnasium's, the host backend inside a scan against stepping gymnasium directly, and a fused run
against the per-frame loop (the same numbers: each frame of a block is the same frame step)."""
import csv
import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl.envs import make_env
from flowrl.envs.jax_env import JaxEnv, autoreset, pendulum
from flowrl.runtime import fused, vector_env
from tests.test_gin_files import TINY


def test_jax_pendulum_steps_as_gymnasiums_pendulum():
  env, jenv = make_env('Pendulum-v1', 3), pendulum()
  state, _ = jenv.reset(jax.random.PRNGKey(0))
  env.unwrapped.state = np.asarray(state, np.float64)
  actions = np.random.default_rng(0).uniform(-1, 1, (60, 1)).astype(np.float32)
  step = jax.jit(jenv.step)
  for a in actions:
    obs, reward, term, trunc, _ = env.step(a)
    state, jobs, jreward, jterm, jtrunc = step(state, jnp.asarray(a))
    np.testing.assert_allclose(jobs, obs, rtol=1e-4, atol=1e-4)
    assert float(jreward) == pytest.approx(reward, rel=1e-4, abs=1e-4)
    assert not (term or trunc or bool(jterm) or bool(jtrunc))


def _counter(terminate_at: int, limit: int) -> JaxEnv:
  """obs = [reset value, steps]; terminates when steps reach terminate_at (0: never)."""
  reset = lambda key: (jnp.float32(0.0), jnp.stack([jax.random.uniform(key), 0.0]))
  def step(t, action):
    t = t + 1
    return t, jnp.stack([-1.0, t]), t, (t == terminate_at) & (terminate_at > 0), False
  return JaxEnv(2, 1, limit, reset, step)


@pytest.mark.parametrize('terminate_at, limit', [(0, 3), (3, 10)])
def test_autoreset_keeps_the_final_obs_and_resets_each_episode_from_its_own_key(terminate_at,
                                                                                limit):
  reset, step = autoreset(_counter(terminate_at, limit))
  key = jax.random.PRNGKey(7)
  s, obs = reset(key)
  assert float(obs[0]) == pytest.approx(float(jax.random.uniform(jax.random.fold_in(key, 0))))
  outs = []
  for _ in range(7):
    s, out = step(s, jnp.zeros(1))
    outs.append(out)
  end = outs[2]                  # the third step ends the first episode either way
  np.testing.assert_allclose(end.final_obs, [-1.0, 3.0])          # the true last observation
  first_of_second = float(jax.random.uniform(jax.random.fold_in(key, 1)))
  np.testing.assert_allclose(end.obs, [first_of_second, 0.0])      # the next episode's first
  assert (float(end.terminated), float(end.truncated)) == ((1.0, 0.0) if terminate_at else
                                                           (0.0, 1.0))
  assert all(float(o.terminated) + float(o.truncated) == 0 for o in outs[:2] + outs[3:5])
  second_end = outs[5]           # episode 1 ends three steps later, episode 2 has its own key
  np.testing.assert_allclose(second_end.final_obs, [-1.0, 3.0])
  np.testing.assert_allclose(second_end.obs[0], jax.random.uniform(jax.random.fold_in(key, 2)))
  assert int(s.episode) == 2 and int(s.t) == 1


def _host_step(vec, N):
  def host_step(action):
    a = action.reshape(len(vec.envs), -1)
    obs, reward, term, trunc, info = vec.step(a)
    done = term | trunc
    nxt = vector_env.transition_next_obs(obs, done, info)
    shape = lambda x: x.reshape((-1, N) + x.shape[1:])
    return ({'action': shape(a), 'reward': shape(reward), 'next_obs': shape(nxt),
             'terminated': shape(term.astype(np.float32)),
             'truncated': shape(trunc.astype(np.float32))}, shape(obs))
  return host_step


def test_the_host_backend_in_a_scan_steps_exactly_as_gymnasium():
  """InvertedPendulum terminates within the 40 steps of random actions: the scan's dones, final
  observations and resets are the vector env's own."""
  seeds, N, T = [0, 1], 2, 40
  actions = np.random.default_rng(1).uniform(-1, 1, (T, len(seeds), N, 1)).astype(np.float32)
  direct = vector_env.make_vector_env(make_env, 'InvertedPendulum-v5', seeds, N)
  direct.reset()
  want = [_host_step(direct, N)(a) for a in actions]
  inside = vector_env.make_vector_env(make_env, 'InvertedPendulum-v5', seeds, N)
  inside.reset()
  env_step = fused.host_env_step(_host_step(inside, N), len(seeds), N, 4, 1)
  run = jax.jit(lambda acts: jax.lax.scan(lambda c, a: (c, env_step((), a)[1:]), (), acts)[1])
  transitions, next_obs = run(actions)
  assert sum(float(np.sum(w[0]['terminated'])) for w in want) > 0
  for k in fused.STORED:
    np.testing.assert_array_equal(transitions[k], np.stack([w[0][k] for w in want]))
  np.testing.assert_array_equal(next_obs, np.stack([w[1] for w in want]))


def test_a_block_is_its_frames_one_after_another_with_a_pure_env_over_seeds_and_envs():
  """A stub frame step (stores the running reward sum, acts on the observation it is given)
  through fused_block on the pure Pendulum, [2 seeds, 3 envs], against a Python loop."""
  env_step, reset = fused.jax_env_step(pendulum(max_episode_steps=5))
  env_state, obs = reset(jax.random.split(jax.random.PRNGKey(0), 6).reshape(2, 3, 2))

  def step_fn(loop, transition, valid, next_obs):
    loop = loop + transition['reward'] + 0.1 * transition['obs'][..., 0]
    action = jnp.tanh(next_obs[..., :1] - next_obs[..., 2:])
    return loop, action, {'r': transition['reward'], 'trunc': transition['truncated']}

  action = jnp.zeros((2, 3, 1))
  loop0 = jnp.zeros((2, 3))
  block = jax.jit(fused.fused_block(step_fn, env_step, 12))
  loop, _, obs_b, action_b, metrics, episodes = block(loop0, env_state, obs, action)
  loop_ref, s, o, a, rewards = loop0, env_state, obs, action, []
  for _ in range(12):
    s, transition, nxt = env_step(s, a)
    loop_ref, a, m = step_fn(loop_ref, {**transition, 'obs': o}, True, nxt)
    o = nxt
    rewards.append(m['r'])
  np.testing.assert_allclose(loop, loop_ref, rtol=1e-5)
  np.testing.assert_allclose(obs_b, o, rtol=1e-5)
  np.testing.assert_allclose(action_b, a, rtol=1e-5)
  assert metrics['r'].shape == (2, 12 * 3)     # per seed: frames × envs
  np.testing.assert_allclose(metrics['r'], np.swapaxes(np.stack(rewards), 0, 1).reshape(2, -1),
                             rtol=1e-5)
  assert float(metrics['trunc'].sum()) == 2 * 3 * 2     # every env truncated at 5 and 10
  np.testing.assert_allclose(episodes['reward'], np.stack(rewards), rtol=1e-5)   # [K, S, N]



def test_the_batched_autoreset_resets_only_when_an_env_is_done_and_gives_the_same_numbers():
  """jax_env_step runs the resets only on steps where some env is done (a cond around the
  batch); over 12 steps with episodes ending at different steps it equals the per-env
  autoreset vmapped over [2, 3]."""
  env = pendulum(max_episode_steps=5)
  env_step, reset = fused.jax_env_step(env)
  _, per_env = autoreset(env)
  keys = jax.random.split(jax.random.PRNGKey(1), 6).reshape(2, 3, 2)
  batched, _ = reset(keys)
  single = batched._replace(t=batched.t.at[0, 1].set(2).at[1, 2].set(4))   # staggered ends
  batched = single
  actions = jnp.sin(jnp.arange(12.0 * 6)).reshape(12, 2, 3, 1)
  for a in actions:
    batched, transition, obs = env_step(batched, a)
    single, out = jax.vmap(jax.vmap(per_env))(single, a)
    np.testing.assert_array_equal(obs, out.obs)
    np.testing.assert_array_equal(transition['next_obs'], out.final_obs)
    np.testing.assert_array_equal(transition['truncated'], out.truncated)
    jax.tree_util.tree_map(np.testing.assert_array_equal, batched, single)
  assert int(single.episode.sum()) > 6        # every env began new episodes along the way


def _csv(path):
  with open(path) as f:
    return [{k: v for k, v in row.items() if k != 'frames_per_second'} for row in csv.DictReader(f)]


@pytest.mark.parametrize('name, extra', [
    ('sac', []),
    ('dacer', ['estimated_entropy.every=60']),   # its periodic step falls inside some blocks
])
def test_a_fused_run_gives_the_per_frame_loops_numbers(tmp_path, monkeypatch, name, extra):
  from flowrl import run as cli
  from flowrl.runtime.driver import Driver, run
  blocks, run_block = [], Driver.run_block
  monkeypatch.setattr(Driver, 'run_block', lambda d, *a: blocks.append(a[3]) or run_block(d, *a))
  binds = TINY + extra + ['train.total_frames=700', 'train.learning_starts=200',
                          'train.random_frames=200', 'train.batch_size=16', 'train.log_every=100',
                          'train.eval_every=350', 'train.checkpoint_every=350',
                          'train.eval_episodes=1']
  out = {}
  for fused_frames in (0, 40):
    cli.parse_config([f'gin/{name}.gin'], binds + [f'train.fused_frames={fused_frames}'])
    agent, cfg, env = cli.build()
    d = str(tmp_path / f'f{fused_frames}')
    run(agent, cfg, env, d, progress=False)
    out[fused_frames] = (_csv(os.path.join(d, 'train.csv')), _csv(os.path.join(d, 'eval.csv')))
  assert len(out[40][0]) == 8 and out[40] == out[0]    # logs every 100 frames and at 350
  # blocks of 40 from the first update on, except where a log (every 100), evaluation or
  # checkpoint (every 350) or DACER's entropy step (every 60 updates) falls inside one
  assert blocks and all(f >= 200 and (f + 39) // 100 == f // 100 for f in blocks), blocks
  if name == 'sac':
    assert blocks == [200, 240, 300, 350, 400, 440, 500, 540, 600, 640]


def test_a_pure_env_run_vmaps_seeds_fuses_blocks_and_resumes_to_the_same_numbers(tmp_path,
                                                                                   monkeypatch):
  """SAC on the pure Pendulum (`jax:Pendulum-v1`), 2 seeds in one program: a fused run (blocks
  of 40 frames, env inside the scan, evaluation as one program) against a per-frame run that is
  killed by SIGINT at frame 450 and resumed from the saved env state. Same evaluations, same
  training logs (but the window split by the interrupt), and the two seeds differ."""
  import signal
  from flowrl import run as cli
  from flowrl.runtime import checkpoint
  from flowrl.runtime.driver import Driver, run
  binds = TINY + ['env.name="jax:Pendulum-v1"', 'train.total_frames=700',
                  'train.learning_starts=200', 'train.random_frames=200', 'train.batch_size=16',
                  'train.log_every=100', 'train.eval_every=350', 'train.checkpoint_every=350',
                  'train.eval_episodes=2']
  logs = lambda d, s: [_csv(os.path.join(d, f'seed_{s}', f'{n}.csv')) for n in ('train', 'eval')]
  cli.parse_config(['gin/sac.gin'], binds + ['train.fused_frames=40'])
  agent, cfg, env = cli.build()
  blocks, run_block = [], Driver.run_block
  monkeypatch.setattr(Driver, 'run_block', lambda d, *a: blocks.append(a[3]) or run_block(d, *a))
  fused_run = str(tmp_path / 'fused')
  run(agent, cfg, env, fused_run, progress=False, seeds=[0, 1])
  assert blocks == [200, 240, 300, 350, 400, 440, 500, 540, 600, 640]

  cfg = cfg._replace(fused_frames=0)
  env_step = Driver.env_step

  def interrupted(d, action, frame, returns):
    if frame == 450:
      os.kill(os.getpid(), signal.SIGINT)
    return env_step(d, action, frame, returns)

  killed = str(tmp_path / 'killed')
  monkeypatch.setattr(Driver, 'env_step', interrupted)
  with pytest.raises(KeyboardInterrupt):
    run(agent, cfg, env, killed, progress=False, seeds=[0, 1])
  assert checkpoint.latest_frame(killed) == 450
  monkeypatch.setattr(Driver, 'env_step', env_step)
  summary = run(agent, cfg, env, killed, resume=True, progress=False, seeds=[0, 1])
  assert summary['frames'] == 700
  split = lambda rows: [r for r in rows if r['frame'] not in ('450', '500')]
  for s in (0, 1):
    (train_f, eval_f), (train_k, eval_k) = logs(fused_run, s), logs(killed, s)
    assert eval_k == eval_f and len(eval_f) == 2
    assert split(train_k) == split(train_f) and len(split(train_f)) == 7
    assert all(r['episode_return'] != 'nan' for r in train_f[2:])   # 200-step episodes ended
  assert logs(fused_run, 0)[1] != logs(fused_run, 1)[1]


def test_a_pure_env_name_that_is_unknown_or_lacks_its_extra_is_one_sentence(monkeypatch):
  import sys
  from flowrl.envs import env_spec
  from flowrl.errors import ConfigError
  with pytest.raises(ConfigError, match=r"unknown environment 'jax:Hopper-v5'; the pure-JAX envs"):
    env_spec('jax:Hopper-v5')
  with pytest.raises(ConfigError, match=r"unknown Playground task 'CheetahRunn'.*CheetahRun"):
    env_spec('playground:CheetahRunn')
  monkeypatch.setitem(sys.modules, 'mujoco_playground', None)     # as if not installed
  with pytest.raises(ConfigError, match=r'pip install -e "\.\[playground\]"'):
    env_spec('playground:CheetahRun')
  with pytest.raises(ConfigError, match='pure-JAX env'):
    make_env('jax:Pendulum-v1')


def test_a_playground_task_resets_steps_and_autoresets_on_a_tiny_scan(tmp_path):
  """MuJoCo Playground's PendulumSwingup (MJX, impl 'jax') in flowrl's autoreset: 5-step
  episodes over a 12-step scan with action_repeat 2. Each step is two physics control steps
  with their rewards summed; truncations at 5 and 10 keep the true final observation, and the
  next episode starts from reset(fold_in(key, episode)). The env state (an MJX state, with empty
  arrays that orbax cannot write) survives a checkpoint."""
  pytest.importorskip('mujoco_playground')
  from flowrl.envs.playground import playground_env
  env = playground_env('PendulumSwingup', action_repeat=2, episode_length=10)
  assert (env.obs_dim, env.act_dim, env.max_episode_steps) == (3, 1, 5)
  reset, step = autoreset(env)
  key = jax.random.PRNGKey(3)

  @jax.jit
  def scan(key):
    s, obs = reset(key)
    actions = jnp.sin(jnp.arange(12.0))[:, None]
    s, out = jax.lax.scan(step, s, actions)
    raw, raw_obs = env.reset(jax.random.fold_in(key, 0))
    raw, *once = env.step(raw, actions[0])              # the first step, outside autoreset
    second = [env.reset(jax.random.fold_in(key, e))[1] for e in (1, 2)]
    return obs, out, once, jnp.stack(second), s

  obs, out, once, second, state = scan(key)
  np.testing.assert_allclose(out.final_obs[0], once[0], rtol=1e-5, atol=1e-6)
  assert float(out.reward[0]) == pytest.approx(float(once[1]), rel=1e-5)
  assert 0.0 <= float(out.reward.max()) <= 2.0                  # two tolerance rewards in [0, 1]
  np.testing.assert_array_equal(out.truncated, np.isin(np.arange(12), (4, 9)).astype(np.float32))
  assert not out.terminated.any()
  for t, e in ((4, 0), (9, 1)):
    np.testing.assert_allclose(out.obs[t], second[e], rtol=1e-6)    # reset by episode index
    assert not np.allclose(out.final_obs[t], out.obs[t])            # the final obs is kept
  from flowrl.runtime import checkpoint
  assert any(x.size == 0 for x in jax.tree_util.tree_leaves(state))
  mngr = checkpoint.manager(str(tmp_path))
  checkpoint.save(mngr, 12, {'frame': jnp.int32(12)}, {}, env=(state, out.obs[-1]))
  (_, (back, back_obs)), _ = checkpoint.restore(mngr, {'frame': jnp.int32(0)}, (state, obs))
  mngr.close()
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, state)
  np.testing.assert_array_equal(back_obs, out.obs[-1])


def test_a_fused_rollout_run_gives_the_per_frame_loops_numbers(tmp_path, monkeypatch):
  """PPO (the rollout source: 64-step rollouts of 2 envs, 2 epochs × 2 minibatches) fused into
  blocks of 64 frames, against the per-frame loop: the same logs and evaluations. A block holds
  the rollout's end, so its updates run inside the block's scan."""
  from flowrl import run as cli
  from flowrl.runtime.driver import Driver, run
  blocks, run_block = [], Driver.run_block
  monkeypatch.setattr(Driver, 'run_block', lambda d, *a: blocks.append(a[3]) or run_block(d, *a))
  binds = TINY + ['train.total_frames=768', 'rollout_source.steps=64', 'train.envs_per_seed=2',
                  'rollout_source.minibatches=2', 'rollout_source.epochs=2',
                  'train.log_every=128', 'train.eval_every=384', 'train.checkpoint_every=384',
                  'train.eval_episodes=1']
  out = {}
  for fused_frames in (0, 64):
    cli.parse_config(['gin/ppo.gin'], binds + [f'train.fused_frames={fused_frames}'])
    agent, cfg, env = cli.build()
    d = str(tmp_path / f'f{fused_frames}')
    run(agent, cfg, env, d, progress=False)
    out[fused_frames] = (_csv(os.path.join(d, 'train.csv')), _csv(os.path.join(d, 'eval.csv')))
  assert out[64] == out[0] and len(out[0][0]) == 6 and float(out[0][0][-1]['updates']) == 4
  assert blocks == [2] + list(range(128, 768, 64))   # after the first step's update
