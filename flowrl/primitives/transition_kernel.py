"""Transition kernels of chain samplers: each reverse step as a Gaussian, so an on-policy signal
can score the chain it sampled (DPPO, Ren et al. 2024; ReinFlow, Zhang et al. 2025):

  p_θ(x_{k−1} | x_k, s) = N(μ_θ(s, x_k, k), σ_k² I),        k = K..1, x_K ~ N(0, I)

  sampling     x_{k−1} = μ_k + max(σ_k, σ_sample_min)·clip(z, ±c),  z ~ N(0, I)
  likelihood   log N(x_{k−1}; μ_k, max(σ_k, σ_logprob_min)²), per action dimension

A rule supplies `mean_std(policy, params, obs, cond, x, out, t, a_t, s_t, a_s, s_s) -> (μ, σ)`
from the network output `out` at (x_k, t = k/K) and the path coefficients of steps k and k−1
(σ may read a policy's learned noise head). Sampling and scoring both call `kernel_mean_std`, so
the log-probability stored at collection and the one recomputed in training agree by
construction (DPPO's official code shares `p_mean_var`; flow-rl's clips x̂0 in one and not the
other). A stored chain is [B, K+1, A], x_K first and x_0 last.

What a chain is drawn with beyond the actor's params travels in `ChainParams` (`chain_params`
builds it from the train state): fine-tuning only the last K_ft steps (DPPO, diffusion_vpg.py;
`fine_tune_steps` = K_ft < K), where a frozen base network (the pretrained actor) draws steps
K..K_ft+1 and the trained one the last K_ft, which alone are scored; and a scheduled noise bound
(ReinFlow's 'learn_decay'), the fraction of the learned σ's range in use at this point of training.
"""
from typing import Any, Callable, NamedTuple, Optional

import distrax
import jax
import jax.numpy as jnp


class Kernel(NamedTuple):
  mean_std: Callable             # (policy, params, obs, cond, x, out, t, a_t, s_t, a_s, s_s,
                                 #  noise_bound) -> (μ, σ)
  min_sampling_std: float = 0.0  # floor of the std the sampler draws with (DPPO: 0.1)
  min_logprob_std: float = 0.0   # floor of the std the likelihood scores with (DPPO: 0.1)
  noise_clip: float = 0.0        # z clipped to ±noise_clip; 0: not clipped (DPPO: 3)
  deterministic_eval: bool = False  # evaluation walks the means, x_{k−1} = μ_k (DPPO, ReinFlow)
  fine_tune_steps: int = 0       # K_ft: the trained network's last steps; 0: all K (DPPO: 10 of 20)
  noise_bound: Optional[Callable] = None  # update step -> the fraction of a learned σ's range in
                                          # use (ReinFlow's schedule); None: all of it


class ChainParams(NamedTuple):
  """An actor's params with what its chains are drawn with: `base`, a frozen network that draws
  the first K − K_ft steps (None: `params` draw every step), and `noise_bound`, the fraction of
  a learned σ's range in use (None: all)."""
  params: Any
  base: Any = None
  noise_bound: Any = None


def chain_params(kernel: Optional[Kernel], params, reference, step):
  """The actor's params as its sampler draws with them at update `step`: `ChainParams` where
  the kernel splits the chain at K_ft (with the frozen `reference`) or schedules its noise
  bound, else `params` themselves."""
  if kernel is None or not (kernel.fine_tune_steps or kernel.noise_bound):
    return params
  return ChainParams(params, reference if kernel.fine_tune_steps else None,
                     kernel.noise_bound(step) if kernel.noise_bound else None)


def scored_steps(kernel: Kernel, steps: int) -> int:
  """K_ft, the number of final steps the trained network draws and a signal scores."""
  return kernel.fine_tune_steps or steps


def kernel_mean_std(kernel: Kernel, policy, params, obs, cond, x, k, steps, noise_bound=None):
  """(μ_k, σ_k) of the step from x_k (at t = k/K) to x_{k−1}; k an int or an array shaped
  like x's leading axes (for scoring every step of stored chains at once); `noise_bound` a
  scalar or per row of x."""
  alphas, sigmas = policy.path(steps)
  k = jnp.asarray(k)
  t = (k / steps).astype(x.dtype)
  if k.ndim == 0:
    t = jnp.full((1,) * (x.ndim - 1), t)               # one time for the batch, broadcast
  out = policy.predict_cond(params, cond, x, t)
  col = (lambda v: v[..., None]) if k.ndim else (lambda v: v)        # per-row coefficients
  return kernel.mean_std(policy, params, obs, cond, x, out, t, col(alphas[k]), col(sigmas[k]),
                         col(alphas[k - 1]), col(sigmas[k - 1]), noise_bound)


def sample_chain(kernel: Kernel, policy, params, obs, key, steps: int, keep_chain: bool = False,
                 noise: bool = True, start=None):
  """Run the kernel from x_K ~ N(0, I) (or from `start`) to x_0 (without `noise`, through the
  means); `params` may be `ChainParams`. Returns clip(x_0, ±1) and, with `keep_chain`, the chain
  [B, K+1, A] (unclipped, as scored)."""
  init_key, key = jax.random.split(key)
  x = jax.random.normal(init_key, obs.shape[:-1] + (policy.act_dim,)) if start is None else start
  params, base, bound = params if isinstance(params, ChainParams) else (params, None, None)
  base = params if base is None else base

  def run(x, params, ks, keys):
    cond = policy.condition(params, obs)               # loop-invariant: once per chain

    def body(x, inputs):
      k, step_key = inputs
      mean, std = kernel_mean_std(kernel, policy, params, obs, cond, x, k, steps, bound)
      z = jax.random.normal(step_key, x.shape)
      if kernel.noise_clip:
        z = jnp.clip(z, -kernel.noise_clip, kernel.noise_clip)
      if kernel.min_sampling_std:
        std = jnp.maximum(std, kernel.min_sampling_std)
      x = mean + std * z if noise else mean
      return x, (x if keep_chain else None)
    return jax.lax.scan(body, x, (ks, keys))

  ks, keys = jnp.arange(steps, 0, -1), jax.random.split(key, steps)
  first = steps - scored_steps(kernel, steps)          # steps the base draws
  chain = [x[:, None]]                                 # x_K, then each step's x_{k−1}
  if first:
    x, xs = run(x, base, ks[:first], keys[:first])
    chain.append(jnp.swapaxes(xs, 0, 1) if keep_chain else None)
  x, xs = run(x, params, ks[first:], keys[first:])
  action = jnp.clip(x, -1.0, 1.0)
  if not keep_chain:
    return action, None
  return action, jnp.concatenate(chain + [jnp.swapaxes(xs, 0, 1)], axis=1)


def chain_log_probs(kernel: Kernel, policy, params, obs, chain, steps: int, index=None,
                    noise_bound=None):
  """Per-step, per-dimension log N(x_{k−1}; μ_k, max(σ_k, σ_logprob_min)²) of stored chains
  [B, K+1, A] and the matching Gaussian entropies, both [B, K_ft, A]: the last K_ft steps
  (`scored_steps`; all K by default), scored in one network pass over B·K_ft rows. With `index`
  [B] (DPPO's (env step, denoising step) minibatch unit), only the index_b-th of those steps of
  row b: [B, 1, A]. `noise_bound` [B]: each chain's, as it was drawn."""
  b, _, a = chain.shape
  n_scored = scored_steps(kernel, steps)
  first = steps - n_scored                                                # steps the base drew
  if index is None:
    i = jnp.broadcast_to(jnp.arange(first, steps), (b, n_scored))          # [B, K_ft]
    x_from, x_to = chain[:, first:-1], chain[:, first + 1:]               # [B, K_ft, A]
  else:
    i = first + index[:, None]                                            # [B, 1]
    take = lambda j: jnp.take_along_axis(chain, j[..., None], axis=1)
    x_from, x_to = take(i), take(i + 1)                                   # [B, 1, A]
  n = i.shape[1]
  rows = lambda v: v.reshape((b * n,) + v.shape[2:])
  cond = policy.condition(params, obs)
  cond_rows = jnp.repeat(cond, n, axis=0)
  obs_rows = jnp.repeat(obs, n, axis=0)
  bound_rows = None if noise_bound is None else jnp.repeat(noise_bound, n, axis=0)
  mean, std = kernel_mean_std(kernel, policy, params, obs_rows, cond_rows, rows(x_from),
                              rows(steps - i), steps, bound_rows)
  std = jnp.broadcast_to(std, mean.shape)
  if kernel.min_logprob_std:
    std = jnp.maximum(std, kernel.min_logprob_std)
  dist = distrax.Normal(mean, std)
  shape = (b, n, a)
  return dist.log_prob(rows(x_to)).reshape(shape), dist.entropy().reshape(shape)


def initial_log_prob(chain):
  """log N(x_K; 0, I) per dimension [B, A] of stored chains (ReinFlow counts the initial noise)."""
  return distrax.Normal(0.0, 1.0).log_prob(chain[:, 0])
