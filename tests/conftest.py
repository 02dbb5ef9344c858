import os
import signal

# CI may start pytest with Ctrl-C ignored (a background job of a non-interactive shell). The
# interrupt tests need it delivered as in a terminal, to this process and to the runs it spawns.
signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault('MUJOCO_GL', 'egl')
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
import flowrl.run  # noqa: E402,F401  (the CLI's XLA settings, before JAX starts its backend)

import gin  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

import flowrl.primitives  # noqa: E402,F401  (registers gin configurables)
from flowrl.primitives.base import EnvSpec  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line('markers', 'learning: a short training run that must improve return '
                          '(slow; runs in CI within its budget; deselect with -m "not learning")')


@pytest.fixture(autouse=True)
def fresh_gin_config():
  """Gin bindings are process-global: no test sees another test's bindings."""
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def key():
  return jax.random.PRNGKey(0)


@pytest.fixture
def spec():
  return EnvSpec(obs_dim=3, act_dim=2)
