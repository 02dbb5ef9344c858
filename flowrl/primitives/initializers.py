"""Weight initializers: a choice for every network, bound in gin like any primitive parameter.

  orthogonal(scale)      W = scale·Q with Q a uniformly drawn orthogonal matrix (Saxe et al.
                         2014), so WᵀW = scale²·I for a square layer. scale √2: the convention
                         of the JAX RL codebases (jaxrl's `default_init`, flow-rl's
                         `orthogonal_init`), and this library's default.
  variance_scaling(scale, mode, distribution)
                         Var(W) = scale / n, n = fan_in, fan_out or their mean (He et al. 2015;
                         Glorot & Bengio 2010). Its cases:
                           lecun normal     scale 1, 'fan_in',  'truncated_normal'
                           he normal        scale 2, 'fan_in',  'truncated_normal'
                           xavier uniform   scale 1, 'fan_avg', 'uniform'  (QSM's flax Dense)
                           PyTorch Linear   scale 1/3, 'fan_in', 'uniform'  (kaiming_uniform(a=√5))
                         A 'truncated_normal' is cut at ±2 std and rescaled to the variance asked.
  haiku_default()        hk.Linear's own: a normal cut at ±2 std with std 1/√fan_in before the
                         cut (so Var(W) ≈ 0.77/fan_in). DACER's and SDAC/DPMD's code use it.
  torch_linear()         PyTorch's nn.Linear: W and b ~ U(±1/√fan_in), i.e. Var(W) = 1/(3·fan_in)
                         (kaiming_uniform with a = √5). Stable-Baselines3's policies keep it
                         where ortho_init=False (the RL Zoo's tuned MuJoCo PPO).

Biases start at zero (haiku, flax and most PyTorch codes this library follows zero them) except
under an initializer that says otherwise: an `Initializer` may carry `bias`, fan_in -> the bias's
initializer, which `bias_init` reads (only torch_linear does). An `Initializer` is hk's
(shape, dtype) -> array with a readable name, so `python -m flowrl.run --list` shows a default.
"""
from typing import Callable, NamedTuple, Optional

import gin
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from flowrl.errors import ConfigError

MODES = ('fan_in', 'fan_out', 'fan_avg')
DISTRIBUTIONS = ('truncated_normal', 'normal', 'uniform')


class Initializer(NamedTuple):
  """A haiku initializer (shape, dtype) -> array with the name it was made from."""
  name: str
  init: Callable
  bias: Optional[Callable] = None    # fan_in -> the bias's haiku initializer; None: zeros

  def __call__(self, shape, dtype):
    return self.init(shape, dtype)

  def __repr__(self):
    return self.name


def host_qr(a):
  """`jnp.linalg.qr(a)` of one matrix [M, N], computed by scipy's LAPACK (the one jaxlib calls)
  through a host callback, one matrix at a time under `vmap`. jaxlib's CPU QR splits a batch (the
  vmapped seeds of an init) over XLA's intra-op thread pool and waits for the parts from inside
  that pool: when two batched QRs run at once on a 2-thread pool, both threads wait for work only
  they could do, and the init program never finishes (seen as an intermittent hang at init with
  vmapped seeds; a gdb backtrace shows both pool threads in QrFactorization's ParallelBatchMap)."""
  import scipy.linalg
  k = min(a.shape)
  shapes = (jax.ShapeDtypeStruct((a.shape[0], k), a.dtype),
            jax.ShapeDtypeStruct((k, a.shape[1]), a.dtype))

  def qr(x):
    q, r = scipy.linalg.qr(np.asarray(x), mode='economic')
    return q.astype(x.dtype), r.astype(x.dtype)
  return jax.pure_callback(qr, shapes, a, vmap_method='sequential')


def _orthogonal_init(scale: float):
  """hk.initializers.Orthogonal(scale) (axis −1), with its QR by `host_qr`."""

  def init(shape, dtype):
    if len(shape) < 2:
      raise ValueError('Orthogonal initializer requires at least a 2D shape.')
    n_rows, n_cols = shape[-1], int(np.prod(shape)) // shape[-1]
    matrix_shape = (n_rows, n_cols) if n_rows > n_cols else (n_cols, n_rows)
    q, r = host_qr(jax.random.normal(hk.next_rng_key(), matrix_shape, dtype))
    q = q * jnp.sign(jnp.diag(r))                      # Q uniformly distributed
    if n_rows < n_cols:
      q = q.T
    q = jnp.moveaxis(jnp.reshape(q, (n_rows,) + tuple(shape[:-1])), 0, -1)
    return jax.lax.convert_element_type(scale, dtype) * q
  return init


def _orthogonal(scale: float = float(np.sqrt(2.0))) -> Initializer:
  """W = scale·Q, Q orthogonal (Saxe et al. 2014): WᵀW = scale²·I for a square layer."""
  return Initializer(f'orthogonal(scale={scale:.4g})', _orthogonal_init(scale))


orthogonal = gin.configurable('orthogonal', module='flowrl.init')(_orthogonal)


@gin.configurable(module='flowrl.init')
def variance_scaling(scale: float = 1.0, mode: str = 'fan_in',
                     distribution: str = 'truncated_normal') -> Initializer:
  """Var(W) = scale/n with n = fan_in, fan_out or fan_avg: lecun (1, fan_in), he (2, fan_in),
  xavier (1, fan_avg), PyTorch's Linear (1/3, fan_in, uniform)."""
  if mode not in MODES:
    raise ConfigError(f'variance_scaling.mode={mode!r} is not one of {MODES}.')
  if distribution not in DISTRIBUTIONS:
    raise ConfigError(f'variance_scaling.distribution={distribution!r} is not one of '
                      f'{DISTRIBUTIONS}.')
  if not scale > 0:
    raise ConfigError(f'variance_scaling.scale={scale!r} must be positive.')
  return Initializer(f'variance_scaling(scale={scale:.4g}, mode={mode!r}, '
                     f'distribution={distribution!r})',
                     hk.initializers.VarianceScaling(scale, mode, distribution))


def _haiku_linear_default(shape, dtype):
  return hk.initializers.TruncatedNormal(1.0 / np.sqrt(shape[0]))(shape, dtype)


@gin.configurable(module='flowrl.init')
def haiku_default() -> Initializer:
  """hk.Linear's default: a normal cut at ±2 std, std 1/√fan_in before the cut."""
  return Initializer('haiku_default()', _haiku_linear_default)


def _torch_bias(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)
  return hk.initializers.RandomUniform(-bound, bound)


@gin.configurable(module='flowrl.init')
def torch_linear() -> Initializer:
  """PyTorch's nn.Linear.reset_parameters: W ~ U(±1/√fan_in) (kaiming_uniform, a = √5, so
  Var(W) = 1/(3·fan_in)) and b ~ U(±1/√fan_in)."""
  return Initializer('torch_linear()', hk.initializers.VarianceScaling(1.0 / 3.0, 'fan_in',
                                                                         'uniform'), _torch_bias)


def bias_init(initializer, fan_in: int) -> Callable:
  """The initializer of the bias of a layer whose weights `initializer` draws from `fan_in`
  inputs: the initializer's own `bias`, else zeros."""
  bias = getattr(initializer, 'bias', None)
  return bias(fan_in) if bias else jnp.zeros


class Initializers(NamedTuple):
  hidden: Initializer       # every hidden layer (and the embeddings of a denoiser)
  output: Initializer       # the last layer (a policy's mean, a Q value, a noise prediction)


@gin.configurable(module='flowrl.init')
def initializers(hidden: Initializer = _orthogonal(), output: Initializer = _orthogonal()
                 ) -> Initializers:
  """The weights of every network that is not given its own (a network's `hidden_init` and
  `output_init`). Default: orthogonal(√2) on every layer, as jaxrl and flow-rl, the field's JAX
  reference codes; a method whose official code differs binds its own in its gin file."""
  return Initializers(hidden, output)


def resolve(hidden_init=None, output_init=None) -> Initializers:
  """A network's initializers: its own where given, else the library's (`initializers`)."""
  default = initializers()
  return Initializers(hidden_init or default.hidden, output_init or default.output)
