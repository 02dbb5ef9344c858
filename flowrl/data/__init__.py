"""Data sources: where a paradigm's training batches come from, each an optax-shaped set of pure
functions over its own state (`flowrl.data.base.DataSource`): replay (off-policy), rollout
(on-policy) and dataset (offline). `SOURCES`: the choices for `train.source` and what each
provides to the critic and signal."""
from flowrl.data.base import DataSource, SourceChoice  # noqa: F401
from flowrl.data.replay import REPLAY, replay_source  # noqa: F401
from flowrl.data.rollout import rollout_source  # noqa: F401
from flowrl.data.dataset import dataset_source  # noqa: F401

SOURCES = {'replay_source': REPLAY.provides, 'rollout_source': frozenset({'rollout'}),
           'dataset_source': frozenset({'transitions'})}
