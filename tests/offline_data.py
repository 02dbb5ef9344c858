"""A small offline dataset made in the test itself (nothing is downloaded): InvertedPendulum-v5
under a stabilizing linear controller a = clip(k·s + noise), half its episodes with noise std 0.5
(mean return ≈ 500) and half with std 1.0 (≈ 30), so the data mixes good and poor behaviour and
a policy that picks the better actions beats one that copies them all. Written as a D4RL-style
.npz (observations, actions, rewards, terminals, timeouts, next_observations)."""
import numpy as np

from flowrl.envs import make_env

GAIN = np.array([1.0, 5.0, 1.0, 1.0])


def controller_dataset(path: str, steps: int = 20_000, noises=(0.5, 1.0), seed: int = 0) -> float:
  """Write the dataset to `path`; returns the mean return of its complete episodes."""
  env = make_env('InvertedPendulum-v5', seed)
  rng = np.random.default_rng(seed)
  cols = {k: [] for k in ('observations', 'actions', 'rewards', 'terminals', 'timeouts',
                          'next_observations')}
  returns, episode = [], 0
  while len(cols['rewards']) < steps:
    obs, _ = env.reset(seed=seed + episode)
    noise, ret, done = noises[episode % len(noises)], 0.0, False
    while not done and len(cols['rewards']) < steps:
      action = np.clip(GAIN @ obs + noise * rng.normal(), -1.0, 1.0)[None]
      nxt, r, term, trunc, _ = env.step(action)
      for k, v in zip(cols, (obs, action, r, term, trunc, nxt)):
        cols[k].append(v)
      obs, ret, done = nxt, ret + r, term or trunc
    if done:
      returns.append(ret)
    episode += 1
  np.savez(path, env_name="InvertedPendulum-v5",
           **{k: np.asarray(v, np.float32) for k, v in cols.items()})
  return float(np.mean(returns))


def random_dataset(path: str, env_name: str = 'Pendulum-v1', steps: int = 64, seed: int = 0):
  """`steps` uniform random steps of `env_name` as a D4RL-style .npz (for tests that only need
  a dataset of the right sizes)."""
  env = make_env(env_name, seed)
  env.action_space.seed(seed)
  cols = {k: [] for k in ('observations', 'actions', 'rewards', 'terminals', 'timeouts',
                          'next_observations')}
  obs, _ = env.reset(seed=seed)
  for _ in range(steps):
    action = env.action_space.sample()
    nxt, r, term, trunc, _ = env.step(action)
    for k, v in zip(cols, (obs, action, r, term, trunc, nxt)):
      cols[k].append(v)
    obs = env.reset()[0] if term or trunc else nxt
  np.savez(path, env_name=env_name, **{k: np.asarray(v, np.float32) for k, v in cols.items()})
  return path
