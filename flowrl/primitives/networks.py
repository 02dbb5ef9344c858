"""Haiku networks shared by every primitive: MLP, Fourier time embedding, the ε/velocity network,
and a Q ensemble whose members are vmapped parameters (one batched matmul, not a Python loop)."""
from typing import Callable, Sequence

import gin
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {'relu': jax.nn.relu, 'mish': jax.nn.mish, 'elu': jax.nn.elu,
               'gelu': jax.nn.gelu, 'tanh': jnp.tanh, 'silu': jax.nn.silu}


def activation_fn(name: str) -> Callable:
  if name not in ACTIVATIONS:
    from flowrl.errors import ConfigError
    raise ConfigError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}.")
  return ACTIVATIONS[name]


def mlp(hidden: Sequence[int], out: int, activation: str, name: str = None) -> hk.Module:
  """Hidden layers with `activation`, then a linear output layer of width `out`."""
  return hk.nets.MLP(list(hidden) + [out], activation=activation_fn(activation), name=name)


def fourier_time_embedding(t: jax.Array, dim: int) -> jax.Array:
  """Learned Fourier features of a scalar time t ∈ [0, 1] (Tancik et al. 2020):
  [cos(2π t W), sin(2π t W)], W ~ N(0, 16) initialised, trained like any weight. Output [..., dim]."""
  w = hk.get_parameter('fourier_w', (1, dim // 2), init=hk.initializers.RandomNormal(4.0))
  proj = 2.0 * jnp.pi * t[..., None] * w[0]
  return jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=-1)


@gin.configurable(module='flowrl.networks')
class DenoiserNet(hk.Module):
  """ε-, x0-, v- or velocity-prediction network f(obs, x_t, t) used by diffusion and flow policies.

  obs -> MLP `obs_hidden` (the observation embedding); t -> Fourier features of `time_dim`;
  [embed(obs), x_t, embed(t)] -> MLP `hidden` -> |A| outputs.
  """

  def __init__(self, act_dim: int, hidden: Sequence[int] = (256, 256, 256),
               obs_hidden: Sequence[int] = (128, 128), time_dim: int = 64,
               activation: str = 'mish', name: str = 'denoiser'):
    super().__init__(name=name)
    self.act_dim, self.hidden, self.obs_hidden = act_dim, hidden, obs_hidden
    self.time_dim, self.activation = time_dim, activation

  def __call__(self, obs, x_t, t):
    act = activation_fn(self.activation)
    h_obs = obs
    if self.obs_hidden:
      h_obs = act(mlp(self.obs_hidden[:-1], self.obs_hidden[-1], self.activation, 'obs_embed')(obs))
    h_t = fourier_time_embedding(jnp.broadcast_to(t, x_t.shape[:-1]), self.time_dim)
    h = jnp.concatenate([jnp.broadcast_to(h_obs, x_t.shape[:-1] + h_obs.shape[-1:]), x_t, h_t], -1)
    return mlp(self.hidden, self.act_dim, self.activation, 'trunk')(h)


def q_ensemble(obs_dim: int, act_dim: int, num: int, hidden: Sequence[int], activation: str,
               outputs: int = 1):
  """A Q ensemble of `num` identical MLPs on [obs, act] with stacked parameters.

  Returns (init(key) -> params with a leading axis of size `num`,
           apply(params, obs, act) -> [num, *batch, outputs]). Members never share weights."""
  net = hk.without_apply_rng(hk.transform(
      lambda o, a: mlp(hidden, outputs, activation, 'q')(jnp.concatenate([o, a], -1))))

  def init(key):
    keys = jax.random.split(key, num)
    return jax.vmap(net.init, in_axes=(0, None, None))(
        keys, jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)))

  def apply(params, obs, act):
    return jax.vmap(net.apply, in_axes=(0, None, None))(params, obs, act)

  return init, apply


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
