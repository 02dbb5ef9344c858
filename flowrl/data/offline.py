"""Offline datasets as flat transitions: a Minari dataset (by id, or the path of its folder), a
D4RL-style `.npz` file or dict, each turned into the columns the critic reads
(obs, action, reward, next_obs, terminated), on the host.

  * Only true terminations stop bootstrapping: `terminated` is the dataset's termination flag,
    and a time-limit truncation (D4RL's `timeouts`) still bootstraps (flow-rl d4rl.py; FQL
    d4rl_utils.py).
  * Without `next_observations`, a D4RL-style set has next_obs = obs[i + 1] inside an episode; the
    last step of an episode cut by a timeout, or of the file, has no next observation and is
    dropped. A Minari episode stores its T + 1 observations, so every step is kept.
  * Actions are clipped to ±(1 − `clip_eps`) (flow-rl `clip_eps`, FQL `action_clip_eps`: 1e-5),
    so a policy's log-prob or its inverse never meets the box's edge.
  * Reward transforms of the papers (flow-rl d4rl.py): 'iql_mujoco' r·1000/(max return − min
    return) over the dataset's episodes (Kostrikov et al. 2022, IQL), 'iql_antmaze' r − 1,
    'cql_antmaze' (r − 0.5)·4, or 'none'.
"""
import json
import os
from typing import Dict, NamedTuple, Optional, Union

import numpy as np

from flowrl.errors import ConfigError

REWARD_TRANSFORMS = ('none', 'iql_mujoco', 'iql_antmaze', 'cql_antmaze')
D4RL_KEYS = ('observations', 'actions', 'rewards', 'terminals')


class OfflineData(NamedTuple):
  arrays: Dict[str, np.ndarray]       # obs, action, reward, next_obs, terminated ([N, ...] float32)
  episode_returns: np.ndarray         # undiscounted return of each episode (raw rewards)
  env_id: Optional[str] = None        # the gymnasium id the data was collected on, where known
  ref_min_score: Optional[float] = None   # for normalized scores 100·(R − min)/(max − min)
  ref_max_score: Optional[float] = None


def normalized_score(returns, ref_min: Optional[float], ref_max: Optional[float]):
  """D4RL's normalized score 100·(R − R_min)/(R_max − R_min) (Fu et al. 2020); note that
  `minari.get_normalized_score` returns the fraction, without the factor 100. None without refs."""
  if ref_min is None or ref_max is None or ref_max == ref_min:
    return None
  return 100.0 * (np.asarray(returns, np.float64) - ref_min) / (ref_max - ref_min)


def from_d4rl(d) -> OfflineData:
  """A D4RL-style mapping: observations, actions, rewards, terminals, optional timeouts,
  next_observations (rows in episode order) and env_name (the gymnasium id it came from)."""
  missing = [k for k in D4RL_KEYS if k not in d]
  if missing:
    raise ConfigError(f'dataset: a D4RL-style dataset needs {", ".join(D4RL_KEYS)} '
                      f'(timeouts and next_observations optional); missing {", ".join(missing)}.')
  obs = np.asarray(d['observations'], np.float32)
  n = len(obs)
  terminals = np.asarray(d['terminals'], bool).reshape(n)
  timeouts = np.asarray(d['timeouts'], bool).reshape(n) if 'timeouts' in d else np.zeros(n, bool)
  ends = terminals | timeouts
  if 'next_observations' in d:
    next_obs, keep = np.asarray(d['next_observations'], np.float32), np.ones(n, bool)
  else:   # obs[i + 1] inside an episode; a timeout's (and the file's last) successor is unknown
    next_obs = np.concatenate([obs[1:], obs[-1:]])
    keep = ~(timeouts & ~terminals)
    keep[-1] = bool(terminals[-1])
  rewards = np.asarray(d['rewards'], np.float32).reshape(n)
  arrays = {'obs': obs, 'action': np.asarray(d['actions'], np.float32), 'reward': rewards,
            'next_obs': next_obs, 'terminated': terminals.astype(np.float32)}
  arrays = {k: v[keep] for k, v in arrays.items()}
  env_id = str(np.asarray(d['env_name'])) if 'env_name' in d else None
  return OfflineData(arrays, _episode_returns(rewards, ends), env_id)


def _episode_returns(rewards, ends) -> np.ndarray:
  """Returns of the episodes delimited by `ends` (a trailing unfinished one included)."""
  bounds = np.flatnonzero(ends) + 1
  if not len(bounds) or bounds[-1] != len(rewards):
    bounds = np.append(bounds, len(rewards))
  return np.add.reduceat(rewards.astype(np.float64), np.concatenate([[0], bounds[:-1]]))


def from_minari(dataset) -> OfflineData:
  """A `minari.MinariDataset`: each episode has T + 1 observations and T actions, rewards,
  terminations and truncations; its metadata the env id and ref_min/max_score."""
  cols = {k: [] for k in ('obs', 'action', 'reward', 'next_obs', 'terminated')}
  returns = []
  for ep in dataset.iterate_episodes():
    o = np.asarray(ep.observations, np.float32)
    if o.dtype == object or o.ndim != 2:
      raise ConfigError('dataset: only flat Box observations are supported; this Minari dataset '
                        f'has observations of shape {np.shape(ep.observations)}.')
    cols['obs'].append(o[:-1])
    cols['next_obs'].append(o[1:])
    cols['action'].append(np.asarray(ep.actions, np.float32).reshape(len(o) - 1, -1))
    cols['reward'].append(np.asarray(ep.rewards, np.float32))
    cols['terminated'].append(np.asarray(ep.terminations, np.float32))
    returns.append(float(np.sum(ep.rewards, dtype=np.float64)))
  arrays = {k: np.concatenate(v) for k, v in cols.items()}
  meta = dataset.storage.metadata
  # flowrl.collect's env (a wrapped one) has no serializable spec; its eval_env names it
  spec = meta.get('env_spec') or meta.get('eval_env_spec')
  env_id = json.loads(spec)['id'] if isinstance(spec, str) else None
  ref = lambda k: None if meta.get(k) is None else float(meta[k])
  return OfflineData(arrays, np.asarray(returns), env_id, ref('ref_min_score'),
                     ref('ref_max_score'))


def load_minari(name: str):
  """A Minari dataset by id (under MINARI_DATASETS_PATH or ~/.minari/datasets), or the path of a
  dataset folder (the one holding `data/`). Never downloads."""
  import minari
  if os.path.isdir(name):
    data = os.path.join(name, 'data') if os.path.isdir(os.path.join(name, 'data')) else name
    return minari.MinariDataset(data)
  local = minari.list_local_datasets()
  if name not in local:
    raise ConfigError(f'dataset: no local Minari dataset {name!r} (nothing is downloaded); '
                      f'local ones: {", ".join(sorted(local)) or "none"} — make one with '
                      '`python -m flowrl.collect`.')
  return minari.load_dataset(name)


def load(source: Union[str, dict], clip_eps: float = 1e-5, reward_transform: str = 'none',
         ref_min_score: Optional[float] = None,
         ref_max_score: Optional[float] = None) -> OfflineData:
  """`source`: a Minari id or folder, a `.npz` path, or a D4RL-style dict. Reference scores
  given here override the dataset's own."""
  if reward_transform not in REWARD_TRANSFORMS:
    raise ConfigError(f'dataset: unknown reward_transform {reward_transform!r}; '
                      f'choices: {", ".join(REWARD_TRANSFORMS)}.')
  if isinstance(source, dict):
    data = from_d4rl(source)
  elif str(source).endswith('.npz'):
    if not os.path.exists(source):
      raise ConfigError(f'dataset: no file {source!r}.')
    with np.load(source) as f:
      data = from_d4rl({k: f[k] for k in f.files})
  else:
    data = from_minari(load_minari(str(source)))
  arrays = dict(data.arrays)
  arrays['action'] = np.clip(arrays['action'], -1.0 + clip_eps, 1.0 - clip_eps)
  arrays['reward'] = transform_rewards(arrays['reward'], reward_transform, data.episode_returns)
  return data._replace(
      arrays=arrays,
      ref_min_score=data.ref_min_score if ref_min_score is None else float(ref_min_score),
      ref_max_score=data.ref_max_score if ref_max_score is None else float(ref_max_score))


def transform_rewards(rewards, kind: str, episode_returns) -> np.ndarray:
  if kind == 'iql_mujoco':
    spread = float(np.max(episode_returns) - np.min(episode_returns))
    return (rewards * (1000.0 / max(spread, 1e-8))).astype(np.float32)
  if kind == 'iql_antmaze':
    return (rewards - 1.0).astype(np.float32)
  if kind == 'cql_antmaze':
    return ((rewards - 0.5) * 4.0).astype(np.float32)
  return rewards
