"""Data sources: where a paradigm's training batches come from, each an optax-shaped set of pure
functions over its own state (`flowrl.data.base.DataSource`): replay (off-policy), rollout
(on-policy) and dataset (offline)."""
from flowrl.data.base import DataSource  # noqa: F401
