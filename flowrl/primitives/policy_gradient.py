"""On-policy improvement signals: clipped policy-gradient surrogates on a rollout's advantages Â.

  ppo_clip        PPO (Schulman et al. 2017) on the exact log-ratio of a direct policy
  ppo_clip_chain  PPO on the denoising chain a kernel sampler drew: one ratio per denoising step
                  (DPPO, Ren et al. 2024) or one joint ratio over the chain (ReinFlow, Zhang et al.
                  2025)
  fpo_ratio       FPO (McAllister et al. 2025): a ratio from differences of the policy's own
                  regression (CFM) loss at N stored (t, ε) pairs; per sample with the ASPO
                  objective it is FPO++ (Yi, Choi et al. 2026)

Each signal says what the rollout stores beside the action (`collect`), computed by the same
function that re-scores it in training, so the first epoch's ratio is 1. All report the
approximate KL mean((r − 1) − log r) and the clipped fraction.
"""
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp

from flowrl.errors import ConfigError
from flowrl.primitives.base import ActorInputs, Signal, primitive
from flowrl.primitives.sampler import draw
from flowrl.primitives.transition_kernel import (ChainParams, chain_log_probs, initial_log_prob,
                                                 sample_chain, scored_steps)


def _advantage(inp: ActorInputs, normalize: bool):
  adv = inp.columns['advantage']
  return (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8) if normalize else adv


def _clipped(ratio, adv, clip):
  """−min(r·Â, clip(r, 1 ± ε)·Â), elementwise."""
  return -jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)


def _diagnostics(log_ratio, clip):
  ratio = jnp.exp(log_ratio)
  return {'ratio': ratio, 'approx_kl': jnp.mean((ratio - 1.0) - log_ratio),
          'clip_fraction': jnp.mean((jnp.abs(ratio - 1.0) > clip).astype(jnp.float32))}


def _collect_log_prob(policy, sampler, params, obs, key):
  """The action and its log-prob; where the policy's sample is not the env's action (GenPO), the
  sample too, scored by the same `log_prob` the loss calls."""
  if policy.env_action is None:
    out = draw(sampler, policy, params, obs, key)
    return out.action, {'log_prob': out.log_prob}
  dist, _ = policy.distribution(params, obs)
  sample = dist.sample(seed=key)
  return policy.env_action(sample), {'log_prob': dist.log_prob(sample), 'sample': sample}


@primitive('signal')
def ppo_clip(clip: float = 0.2, normalize_advantage: bool = True) -> Signal:
  """PPO's clipped surrogate (Schulman et al. 2017) on the exact log-ratio of a rollout's actions:
  r = exp(log π_θ(a|s) − log π_old(a|s)), L = −mean min(r·Â, clip(r, 1 ± ε)·Â), with Â the GAE
  advantages, normalized per minibatch (CleanRL) unless `normalize_advantage` is False. Reports
  the approximate KL mean((r − 1) − log r), the clipped fraction, and the policy's entropy for an
  entropy regularizer (closed form where the distribution has one, else −log π of a fresh
  reparameterized sample)."""

  def loss(params, inp: ActorInputs, key):
    dist, _ = inp.policy.distribution(params, inp.obs)
    log_prob = dist.log_prob(inp.columns.get('sample', inp.action))
    old, adv = inp.columns['log_prob'], _advantage(inp, normalize_advantage)
    chex.assert_equal_shape([log_prob, old, adv])                    # [B]
    log_ratio = log_prob - old
    try:
      entropy = dist.entropy()
    except NotImplementedError:        # no closed form (a squashed Gaussian): −log π(a′|s), a′ ~ π
      entropy = -dist.sample_and_log_prob(seed=key)[1]
    return jnp.mean(_clipped(jnp.exp(log_ratio), adv, clip)), {
        'entropy': entropy, **_diagnostics(log_ratio, clip)}

  return Signal('ppo_clip', frozenset({'distribution', 'exact_logprob', 'v', 'rollout'}), loss,
                provides=frozenset({'entropy'}), collect=_collect_log_prob)


MODES = ('per_step', 'joint')


@primitive('signal')
def ppo_clip_chain(mode: str = 'per_step', clip: float = 0.1, clip_base: float = 0.1,
                   denoising_discount: float = 0.99, log_prob_min: float = -5.0,
                   log_prob_max: float = 2.0, normalize_advantage: bool = True) -> Signal:
  """PPO on the denoising chain x_K → … → x_0 drawn by a kernel sampler, whose steps are Gaussian
  N(μ_θ, σ²) (`transition_kernel`); the rollout stores the chain and its per-step, per-dimension
  log-probs ℓ_{k,d}.

  'per_step' (DPPO, Ren et al. 2024, diffusion_ppo.py): each step i = 0 (noisiest) … K−1 is an
  action of the denoising MDP, with ratio r_i = exp(mean_d (clamp(ℓ_new) − clamp(ℓ_old))), the
  clamp to [log_prob_min, log_prob_max] = [−5, 2] taken per dimension before the mean (clamping
  a sum over dimensions would freeze most steps once |A| ≳ 5), advantage Â_i = γ_den^{K−1−i}·Â
  and clip ε_i = ε_base + (ε − ε_base)(e^{3i/(K−1)} − 1)/(e³ − 1);
  L = mean_{b,i} max(−Â_i r_i, −Â_i clip(r_i, 1 ± ε_i)). With sampler.fine_tune_steps = K_ft
  (a frozen base draws the first K − K_ft steps; DPPO's fine-tuning), i runs over the last K_ft
  steps only and K_ft replaces K in the discount and the clip ramp.

  'joint' (ReinFlow, Zhang et al. 2025, ppoflow.py): one ratio per env step from the chain's
  log-likelihood log N(x_K; 0, I) + Σ_k log N(x_{k−1}; μ_k, σ_k²), divided by (K+1)·|A| and
  clamped to [log_prob_min, log_prob_max] (ReinFlow: [−1, 1]), with PPO's clip ε.

  The entropy it reports is the chain's per-dimension Gaussian entropy rate, normalized alike.

  A minibatch row is an env step with its whole chain, or, with rollout_source.unit =
  'denoising_step' ('per_step' only; DPPO v0.7's unit, irom-princeton/dppo#13), one
  (env step, denoising step) pair: the rollout's T·N·K_ft pairs are shuffled together and each
  row scores only its own step i (column 'denoising_index')."""
  if mode not in MODES:
    raise ConfigError(f'ppo_clip_chain.mode={mode!r} is not one of {MODES}.')

  def collect(policy, sampler, params, obs, key):
    action, chain = sample_chain(sampler.kernel, policy, params, obs, key, sampler.steps, True)
    drawn = params if isinstance(params, ChainParams) else ChainParams(params)
    bound = drawn.noise_bound
    if bound is not None:              # each chain is re-scored with the bound it was drawn with
      bound = jnp.broadcast_to(bound, obs.shape[:1])
    log_prob, _ = chain_log_probs(sampler.kernel, policy, drawn.params, obs, chain, sampler.steps,
                                  noise_bound=bound)
    return action, {'chain': chain, 'chain_log_prob': log_prob,
                    **({} if bound is None else {'noise_bound': bound})}

  def loss(params, inp: ActorInputs, key):
    chain, old = inp.columns['chain'], inp.columns['chain_log_prob']
    steps, index = inp.sampler.steps, inp.columns.get('denoising_index')
    scored = scored_steps(inp.sampler.kernel, steps)     # K_ft
    if index is not None and mode != 'per_step':
      raise ConfigError("rollout_source.unit='denoising_step' gives one denoising step per "
                        "minibatch row, which only ppo_clip_chain.mode='per_step' scores; bind "
                        "rollout_source.unit='env_step' with mode='joint'.")
    new, entropy = chain_log_probs(inp.sampler.kernel, inp.policy, params, inp.obs, chain, steps,
                                   index, inp.columns.get('noise_bound'))
    if index is None:                    # i: the index among the K_ft scored steps
      i = jnp.arange(scored)[None]                                               # [1, K_ft]
    else:                                # (env step, denoising step) rows: step i of each
      i = index[:, None]                                                         # [B, 1]
      old = jnp.take_along_axis(old, i[..., None], axis=1)
    chex.assert_equal_shape([new, old])                                          # [B, K_ft|1, A]
    adv = _advantage(inp, normalize_advantage)
    if mode == 'per_step':
      clamp = lambda lp: jnp.mean(jnp.clip(lp, log_prob_min, log_prob_max), axis=-1)
      log_ratio = clamp(new) - clamp(old)                                        # [B, K|1]
      adv = adv[:, None] * denoising_discount ** (scored - 1 - i)
      ramp = (jnp.exp(3.0 * i / max(scored - 1, 1)) - 1.0) / (jnp.exp(3.0) - 1.0)
      eps = clip_base + (clip - clip_base) * ramp
      entropy = jnp.mean(entropy, axis=(1, 2))
    else:
      scale = (steps + 1) * chain.shape[-1]
      start = jnp.sum(initial_log_prob(chain), axis=-1)
      joint = lambda lp: jnp.clip((start + jnp.sum(lp, axis=(1, 2))) / scale, log_prob_min,
                                  log_prob_max)
      log_ratio = joint(new) - joint(old)                                        # [B]
      eps = clip
      entropy = (0.5 * jnp.log(2 * jnp.pi * jnp.e) * chain.shape[-1]
                 + jnp.sum(entropy, axis=(1, 2))) / scale
    surrogate = _clipped(jnp.exp(log_ratio), adv, eps)
    return jnp.mean(surrogate), {'entropy': entropy, **_diagnostics(log_ratio, clip)}

  pairs = frozenset({'denoising_pairs', 'split_chain'}) if mode == 'per_step' else frozenset()
  return Signal('ppo_clip_chain', frozenset({'kernel', 'v', 'rollout'}), loss,
                provides=frozenset({'entropy'}) | pairs, collect=collect)


OBJECTIVES = ('ppo', 'aspo')


@primitive('signal')
def fpo_ratio(samples: int = 8, clip: float = 0.05, per_sample: bool = False,
              objective: str = 'ppo', space: str = 'eps', loss_max: float = 20.0,
              log_ratio_max: float = 10.0, advantage_max: float = 100.0,
              action_noise: float = 0.0, normalize_advantage: bool = True,
              reduction: str = 'mean', t_range: Optional[Tuple[float, float]] = None) -> Signal:
  """FPO (McAllister et al. 2025): at collection, N = `samples` pairs (t_i, ε_i) on the policy's
  own training grid and ℓ_old,i = ℓ_θold(a, t_i, ε_i; s), the policy's regression loss
  (`cfm_loss_at`; `space` 'eps': mean_A ‖ε̂ − ε‖², FPO's default 'u_but_supervise_as_eps',
  which on a flow is (1 − t)²·‖v̂ − v‖²; 'native': the policy's own target). The ratio
  ρ = exp(mean_i ℓ_old,i − mean_i ℓ_new,i) (losses averaged before the exp) enters PPO's clipped
  surrogate. It is a surrogate: the loss is an ELBO proxy, not log π.

  `per_sample` (FPO++, Yi, Choi et al. 2026, fpopp.py): ρ_i = exp(min(ℓ_old,i − ℓ_new,i,
  log_ratio_max)) per pair (a straight-through clamp from above only, as flow-rl's fpopp.py
  since bae22f4, "matching official"; losses capped at `loss_max`), and
  objective 'aspo': PPO-clip for Â ≥ 0, SPO's ρÂ − |Â|/(2ε)·(ρ − 1)² for Â < 0, with Â clamped
  to ±`advantage_max`, averaged over B × N. `action_noise` adds that std of Gaussian noise to the
  collected action (clipped to ±2) before ℓ_old is taken (FPO++: 0.02).

  `reduction` 'mean' takes ℓ as the mean of squares over the |A| action dimensions; 'sqrt' as
  their sum over √|A| (= √|A|·mean, flow-rl fpopp.py's `cfm_loss_reduction: sqrt`), which scales
  every log-ratio by √|A|. `t_range` (lo, hi) draws the pairs' t ~ U(lo, hi) (FPO++: (0.005,
  0.995), fpopp.py's t = 0.005 + 0.99·u at β = 1) instead of on the policy's own training grid;
  on a policy with a discrete grid (a VP diffusion) t is then rounded to it."""
  if objective not in OBJECTIVES:
    raise ConfigError(f'fpo_ratio.objective={objective!r} is not one of {OBJECTIVES}.')
  if objective == 'aspo' and not per_sample:
    raise ConfigError("fpo_ratio.objective='aspo' is FPO++'s per-pair objective; bind "
                      "fpo_ratio.per_sample = True with it.")
  if space not in ('eps', 'native'):
    raise ConfigError(f"fpo_ratio.space={space!r} is not one of ('eps', 'native').")
  if reduction not in ('mean', 'sqrt'):
    raise ConfigError(f"fpo_ratio.reduction={reduction!r} is not one of ('mean', 'sqrt').")
  if t_range is not None and not (isinstance(t_range, (tuple, list)) and len(t_range) == 2
                                  and 0.0 <= t_range[0] < t_range[1] <= 1.0):
    raise ConfigError(f'fpo_ratio.t_range={t_range!r} must be (lo, hi) with 0 <= lo < hi <= 1.')

  def cfm_loss(policy, params, obs, action, t, eps):                  # ℓ [B, N]
    ell = policy.cfm_loss_at(params, obs, action, t, eps, space)
    return ell * jnp.sqrt(eps.shape[-1]) if reduction == 'sqrt' else ell

  def collect(policy, sampler, params, obs, key):
    sample_key, noise_key, pair_key = jax.random.split(key, 3)
    action = draw(sampler, policy, params, obs, sample_key).action
    if action_noise:
      action = jnp.clip(action + action_noise * jax.random.normal(noise_key, action.shape), -2, 2)
    many = jnp.broadcast_to(action[:, None], action.shape[:1] + (samples,) + action.shape[1:])
    _, t, eps, _, _ = policy.noised(many, pair_key)                  # t [B, N], ε [B, N, A]
    if t_range is not None:
      t = jax.random.uniform(jax.random.fold_in(pair_key, 1), t.shape, minval=t_range[0],
                             maxval=t_range[1])
    return action, {'fpo_t': t, 'fpo_eps': eps,
                    'fpo_loss': cfm_loss(policy, params, obs, action, t, eps)}

  def loss(params, inp: ActorInputs, key):
    c = inp.columns
    new = cfm_loss(inp.policy, params, inp.obs, inp.action, c['fpo_t'], c['fpo_eps'])
    old = c['fpo_loss']
    chex.assert_equal_shape([new, old])                                          # [B, N]
    adv = _advantage(inp, normalize_advantage)
    if not per_sample:
      log_ratio = jnp.mean(old, axis=1) - jnp.mean(new, axis=1)                  # [B]
      return jnp.mean(_clipped(jnp.exp(log_ratio), adv, clip)), _diagnostics(log_ratio, clip)
    delta = jnp.minimum(old, loss_max) - jnp.minimum(new, loss_max)
    clamped = jnp.minimum(delta, log_ratio_max)
    log_ratio = delta + jax.lax.stop_gradient(clamped - delta)
    ratio = jnp.exp(log_ratio)                                                   # [B, N]
    adv = jnp.clip(adv, -advantage_max, advantage_max)[:, None]
    if objective == 'aspo':
      spo = ratio * adv - jnp.abs(adv) / (2 * clip) * jnp.square(ratio - 1.0)
      objective_value = jnp.where(adv >= 0, -_clipped(ratio, adv, clip), spo)
      return -jnp.mean(objective_value), _diagnostics(log_ratio, clip)
    return jnp.mean(_clipped(ratio, adv, clip)), _diagnostics(log_ratio, clip)

  return Signal('fpo_ratio', frozenset({'chain', 'v', 'rollout'}), loss, collect=collect)
