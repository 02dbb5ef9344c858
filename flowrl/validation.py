"""Numeric and type checks of every gin binding, at start, each failure one sentence.

A bound value must have its parameter's type (the default's: an integer where the default is
an integer, a number where it is a float, a tuple of integers for layer sizes), and counts,
rates and factors must lie in their range:

  counts     steps, *_every, num*, *_samples, best_of, components, episodes, batch and buffer
             sizes, total_frames, layer widths: integers ≥ 1 (random_frames, learning_starts,
             fused_frames, keep_checkpoints ≥ 0)
  rates      learning rates, eps, scales, temperatures: > 0 (a final learning rate, noise std's
             and clips ≥ 0)
  factors    gamma and eval_ema in [0, 1], tau in (0, 1]

and the training settings must fit together (a batch no larger than the buffer it is drawn from).
"""
import inspect
import math
import numbers
import re

import gin

from flowrl.errors import ConfigError

ZERO_OFF = ('fine_tune_steps', 'bound_decay_steps')   # counts whose 0 means "off"
AT_LEAST_ONE = re.compile(r'^(steps|(?!' + '|'.join(n + '$' for n in ZERO_OFF) + r').*_steps|every|'
                          r'.*_every|num|num_.*|.*_samples|best_of|'
                          r'eval_best_of|components|eval_episodes|batch_size|buffer_size|'
                          r'total_frames|refresh_every|time_dim|envs_per_seed)$')
AT_LEAST_ZERO = re.compile(r'^(random_frames|learning_starts|fused_frames|keep_checkpoints|'
                           r'max_grad_norm|final_learning_rate|.*_std|.*_clip|noise_scale|'
                           r'particle_noise|loss_clip|weight|eval_ema_warmup|' + '|'.join(ZERO_OFF)
                           + r')$')
POSITIVE = re.compile(r'^(learning_rate|eps|scale|score_scale|temperature|'
                      r'target_kl|alpha_init|updates_per_frame|reward_scale)$')
LAYERS = re.compile(r'^(hidden|.*_hidden)$')
# (low, high, low included)
UNIT = {'gamma': (0.0, 1.0, True), 'tau': (0.0, 1.0, False), 'eval_ema': (0.0, 1.0, True)}


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _defaults(selector: str) -> dict:
  configurable = gin.config._REGISTRY.get_match(selector)
  try:
    sig = inspect.signature(configurable.wrapped)
  except (TypeError, ValueError):
    return {}
  return {p.name: p.default for p in sig.parameters.values() if p.default is not p.empty}


def check_value(name: str, param: str, value, default) -> None:
  """One binding `name.param = value` against its default and the ranges above."""
  where = f'{name}.{param} = {value!r}'
  if isinstance(value, gin.config.ConfigurableReference) or value is None:
    return
  if _is_int(default) and not _is_int(value):
    raise ConfigError(f'{where} must be an integer.')
  if _is_number(default) and not isinstance(default, numbers.Integral) and not _is_number(value):
    raise ConfigError(f'{where} must be a number.')
  if isinstance(default, bool) and not isinstance(value, bool):
    raise ConfigError(f'{where} must be True or False.')
  if isinstance(default, str) and not isinstance(value, str):
    raise ConfigError(f'{where} must be a string.')
  if LAYERS.match(param):
    if not isinstance(value, (tuple, list)) or not all(_is_int(w) and w >= 1 for w in value):
      raise ConfigError(f'{where} must be a tuple of layer widths, integers >= 1, e.g. (256, 256).')
    return
  if _is_number(value) and not math.isfinite(value):
    raise ConfigError(f'{where} must be finite.')
  if AT_LEAST_ONE.match(param) and _is_number(value) and value < 1:
    raise ConfigError(f'{where} must be at least 1.')
  if AT_LEAST_ZERO.match(param) and _is_number(value) and value < 0:
    raise ConfigError(f'{where} must not be negative.')
  if POSITIVE.match(param) and _is_number(value) and not value > 0:
    raise ConfigError(f'{where} must be positive.')
  if param in UNIT and _is_number(value):
    low, high, closed = UNIT[param]
    if not (low <= value if closed else low < value) or value > high:
      raise ConfigError(f'{where} must lie in {"[" if closed else "("}{low:g}, {high:g}].')


def check_bindings() -> None:
  """Every binding of the parsed gin config (ConfigError on the first bad one)."""
  for (scope, selector), params in gin.config._CONFIG.items():
    defaults = _defaults(selector)
    name = selector.split('.')[-1]
    for param, value in params.items():
      check_value(name, param, value, defaults.get(param))


def check_train(cfg) -> None:
  """Settings of the loop that must fit together."""
  capacity = min(cfg.buffer_size, cfg.total_frames)
  replay = cfg.source is None or cfg.source.name == 'replay_source'
  if cfg.source is not None and cfg.source.check is not None:
    cfg.source.check(cfg)
  if replay and cfg.batch_size > capacity:
    raise ConfigError(f'train.batch_size = {cfg.batch_size} is larger than the replay buffer it '
                      f'is drawn from (min(buffer_size, total_frames) = {capacity}).')
