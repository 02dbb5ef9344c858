"""A short fixed-seed run through the whole training loop gives the numbers it gave when
tests/golden_runs.json was written: every train.csv and eval.csv value of two seeds trained
together. `test_gin_files` pins one update of every method; this pins the loop around it
(environment stepping and resets, the replay buffer, sampling of batches, update cadence, DIPO's
written-back actions, DACER's periodic entropy step, evaluation). A refactor of the loop that
changes a number fails here. After a deliberate change, rewrite the file with
FLOWRL_WRITE_GOLDEN=1 python -m pytest tests/test_golden_runs.py and say why in the commit."""
import csv
import os

import pytest

from flowrl import run as cli
from flowrl.runtime import driver
from tests.test_gin_files import TINY, _same_numbers_as_golden

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, 'tests', 'golden_runs.json')
LOOP = ['train.total_frames=400', 'train.random_frames=100', 'train.learning_starts=100',
        'train.batch_size=16', 'train.buffer_size=300', 'train.log_every=100',
        'train.eval_every=200', 'train.eval_episodes=1', 'train.checkpoint_every=400',
        'train.update_every=2', 'train.updates_per_frame=1.0', 'estimated_entropy.every=50']
SEEDS = [0, 1]


def _table(path):
  with open(path) as f:
    return {f"{int(float(r['frame']))}/{k}": float(v) for r in csv.DictReader(f)
            for k, v in r.items() if k not in ('frame', 'frames_per_second') and v != ''}


@pytest.mark.parametrize('name', ['sac', 'dipo', 'dacer'])
def test_a_short_run_gives_the_golden_numbers(name, tmp_path):
  cli.parse_config([os.path.join(ROOT, 'gin', f'{name}.gin')], TINY + LOOP)
  agent, cfg, env_name = cli.build()
  driver.run(agent, cfg, env_name, str(tmp_path), progress=False, seeds=SEEDS)
  seen = {f'seed_{s}/{kind}/{k}': v for s in SEEDS for kind in ('train', 'eval')
          for k, v in _table(os.path.join(tmp_path, f'seed_{s}', f'{kind}.csv')).items()}
  _same_numbers_as_golden(name, seen, GOLDEN, atol=1e-4)
