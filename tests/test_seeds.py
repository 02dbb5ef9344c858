"""Seeds batched in one program (`run(..., seeds=[...])`, `flowrl.run --seeds`) give each seed the
numbers of a separate run with that seed: own keys, own buffer, own env seeds."""
import csv
import os

import gin
import numpy as np
import pytest

from flowrl.compose import compile_method, method
from flowrl.compose.step import TrainConfig
from flowrl.runtime import driver
from flowrl.envs import make_env
from flowrl.primitives import critic, parameterization as P, regularizer as R, sampler as S, signal as G
from flowrl.primitives.base import EnvSpec

# a diffusion actor that writes improved actions back to its buffer, with a delayed actor step:
# both the per-seed buffers and the unbatched counters (a real lax.cond under vmap) are exercised
DIPO = method(P.vp_diffusion(), S.sampler(S.ddpm(), steps=2),
              G.action_gradient(steps=2), R.no_regularizer(), critic.ensemble_q(hidden=(16,)),
              actor_every=2, target_actor=True, name='dipo')
CFG = TrainConfig(total_frames=400, random_frames=100, learning_starts=100, batch_size=16,
                  buffer_size=400, eval_every=200, eval_episodes=1, log_every=100,
                  checkpoint_every=200, seed=0)
SEEDS = (4, 9)


def _rows(path):
  with open(path) as f:
    return [{k: float(v) for k, v in r.items() if k != 'frames_per_second' and v != ''}
            for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  gin.parse_config(['DenoiserNet.hidden=(16,)', 'DenoiserNet.obs_hidden=(8,)',
                    'DenoiserNet.time_dim=8'])
  e = make_env('Pendulum-v1')
  agent = compile_method(DIPO, EnvSpec(e.observation_space.shape[0], e.action_space.shape[0]))
  base = tmp_path_factory.mktemp('seeds')
  together = driver.run(agent, CFG, 'Pendulum-v1', str(base / 'together'), progress=False,
                           seeds=list(SEEDS))
  alone = {s: driver.run(agent, CFG._replace(seed=s), 'Pendulum-v1', str(base / f'alone{s}'),
                            progress=False) for s in SEEDS}
  gin.clear_config()
  return base, together, alone


@pytest.mark.parametrize('name', ['train', 'eval'])
def test_batched_seeds_equal_separate_runs(runs, name):
  base, _, _ = runs
  for s in SEEDS:
    together = _rows(os.path.join(base, 'together', f'seed_{s}', f'{name}.csv'))
    alone = _rows(os.path.join(base, f'alone{s}', f'{name}.csv'))
    assert [r['frame'] for r in together] == [r['frame'] for r in alone]
    assert together[0].keys() == alone[0].keys()
    for rt, ra in zip(together, alone):
      for k in ra:   # batched matmuls may round differently in the last bits; nothing more
        np.testing.assert_allclose(rt[k], ra[k], rtol=1e-5, atol=1e-6, err_msg=f'seed {s} {k}')


def test_batched_seeds_are_independent(runs):
  base, together, _ = runs
  a, b = (_rows(os.path.join(base, 'together', f'seed_{s}', 'train.csv')) for s in SEEDS)
  assert a[-1]['critic/critic_loss'] != b[-1]['critic/critic_loss']
  assert together['eval_return'][0] != together['eval_return'][1]
