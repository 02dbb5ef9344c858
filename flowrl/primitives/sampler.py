"""Sampler axis: how an action is drawn from a policy.

A chain sampler walks a policy's Gaussian path x_k = α_k a + σ_k ε from k = K (noise) to 0 with a
per-step rule; every rule reads the network through the policy's `to_eps_x0`, so one rule serves
every parameterization that provides what it requires.

  direct  a ~ π(·|s) (reparameterized, with log-prob where the policy has one)
  ddpm    ancestral sampling from q(x_{k−1} | x_k, x̂0) (Ho et al. 2020), x̂0 clipped to [−1, 1]
  ddim    x_{k−1} = α_{k−1} x̂0 + sqrt(σ²_{k−1} − c²) ε̂ + c z, c = η·σ_ddpm (Song et al. 2021)
  euler   x_{t−Δ} = x_t − Δ·v_θ(s, x_t, t), the flow ODE (Liu et al. 2023)
  dpm_solver_2m   DPM-Solver++(2M) on the probability-flow ODE (Lu et al. 2022), any chain policy
  euler_maruyama  the reverse SDE through the policy's score, any chain policy (Song et al. 2021)
  noisy_euler     the flow's Euler step plus Gaussian noise, fixed or from a learned σ head
                  (ReinFlow)
  langevin_q      annealed Langevin ascent on Q: DDIM predictor, Langevin corrector on the policy's
                  score tilted by exp(Q̄/τ) (needs a score and the critic)

ddpm, ddim, euler_maruyama and noisy_euler are Gaussian transition kernels ('kernel';
`transition_kernel`), whose chains on-policy signals score. `sampler(rule, steps, best_of,
eval_best_of, ...)` sets the step count and best-of-N by the critic
(`best_of_n`), which wraps any rule. Every action leaving a sampler lies in [−1, 1].
"""
from typing import Callable

import gin
import jax
import jax.numpy as jnp
import optax

from flowrl.primitives.base import Sampler, SampleOut, primitive
from flowrl.primitives.q_values import min_q, min_q_action_grad
from flowrl.primitives.transition_kernel import Kernel, sample_chain


def draw(s: Sampler, policy, params, obs, key, deterministic: bool = False, q=None) -> SampleOut:
  """One action per observation from sampler `s` (no best-of-N). `q(obs, act) -> [E, ...]` is
  the critic, for samplers that use it ('critic' in their requires)."""
  return s.sample(policy, params, obs, key, s.steps, deterministic, q)


def best_of_n(sample: Callable, q: Callable, obs, key, n: int, with_values: bool = False,
              selection: str = 'argmax'):
  """Draw n candidates per state with n independent keys and keep, per state, the candidate of
  highest min-ensemble Q ('argmax'), or one drawn with probability softmax(Q) over the n
  ('softmax': Diffusion-QL's evaluation, Wang et al. 2023, temperature 1). sample: (obs, key) ->
  [B, A]; q: (obs, act) -> [E, ...]. Returns [B, A], and with `with_values` also the candidates'
  min-ensemble values [B, n] (QVPO weighs by them)."""
  if selection == 'softmax':
    key, pick_key = jax.random.split(key)
  keys = jax.random.split(key, n)
  cands = jnp.swapaxes(jax.vmap(lambda k: sample(obs, k))(keys), 0, 1)        # [B, n, A]
  obs_n = jnp.broadcast_to(obs[:, None], obs.shape[:1] + (n,) + obs.shape[1:])
  values = min_q(q, obs_n, cands)                                                # [B, n]
  if selection == 'softmax':
    best = jax.random.categorical(pick_key, values, axis=1)                     # [B]
  else:
    best = jnp.argmax(values, axis=1)                                            # [B]
  action = jnp.take_along_axis(cands, best[:, None, None], axis=1)[:, 0]
  return (action, values) if with_values else action


def _run_chain(step_rule, policy, params, obs, key, steps, init_memory=lambda x: (), start=None):
  """x_K ~ N(0, I) (or `start`); for k = K..1: (x_{k−1}, m) = step_rule(x_k, out_k, α_k, σ_k,
  α_{k−1}, σ_{k−1}, key, m) with m a rule's memory (multistep solvers); returns clip(x_0)."""
  alphas, sigmas = policy.path(steps)
  init_key, key = jax.random.split(key)
  x = jax.random.normal(init_key, obs.shape[:-1] + (policy.act_dim,)) if start is None else start
  cond = policy.condition(params, obs)                 # loop-invariant: once per chain

  def body(carry, inputs):
    x, memory = carry
    k, step_key = inputs
    t = jnp.full((1,) * (x.ndim - 1), k / steps)        # one time for the batch, broadcast
    out = policy.predict_cond(params, cond, x, t)
    return step_rule(x, out, alphas[k], sigmas[k], alphas[k - 1], sigmas[k - 1], step_key,
                     memory), None

  ks = jnp.arange(steps, 0, -1)
  (x, _), _ = jax.lax.scan(body, (x, init_memory(x)), (ks, jax.random.split(key, steps)))
  return jnp.clip(x, -1.0, 1.0)


def _posterior(a_t, s_t, a_s, s_s):
  """Coefficients of q(x_s | x_t, x0) = N(c0 x0 + ct x_t, var) for a Gaussian path, s < t."""
  a_ts = a_t / a_s
  s2_ts = s_t ** 2 - a_ts ** 2 * s_s ** 2
  c0 = a_s * s2_ts / s_t ** 2
  ct = a_ts * s_s ** 2 / s_t ** 2
  return c0, ct, s2_ts * s_s ** 2 / s_t ** 2


def _chain_rule(name, requires, make_step, init_memory=None):
  """A Sampler from `make_step(policy) -> step(x, out, α_t, σ_t, α_s, σ_s, key)`, or with
  `init_memory(x)` a multistep `step(..., key, memory) -> (x, memory)`."""
  def sample(policy, params, obs, key, steps, deterministic, q=None, start=None):
    step = make_step(policy)
    if init_memory is None:
      rule = lambda *args: (step(*args[:-1]), args[-1])
      return SampleOut(_run_chain(rule, policy, params, obs, key, steps, start=start))
    return SampleOut(_run_chain(step, policy, params, obs, key, steps, init_memory, start))
  return Sampler(name, frozenset({'differentiable', 'chain_start'}), frozenset(requires), sample,
                 steps=1)


def _kernel_rule(name, requires, mean_std, scorable=True):
  """A Sampler whose steps are Gaussian transition kernels (`transition_kernel`): it samples by
  the kernel and exposes it, so on-policy signals can score its chains ('kernel') where every
  step has a positive std. DDPM's and DDIM's last step has none (σ = 0): they become scorable
  with `sampler.min_logprob_std` > 0."""
  provides = {'differentiable', 'chain_start'} | ({'kernel'} if scorable else set())
  return _with_kernel(Sampler(name, frozenset(provides), frozenset(requires), None, steps=1),
                      Kernel(mean_std))


def _with_kernel(s: Sampler, kernel: Kernel) -> Sampler:
  def sample(policy, params, obs, key, steps, deterministic, q=None, start=None):
    noise = not (deterministic and kernel.deterministic_eval)
    return SampleOut(sample_chain(kernel, policy, params, obs, key, steps, noise=noise,
                                  start=start)[0])
  return s._replace(sample=sample, kernel=kernel)


@primitive('sampler')
def ddpm(clip_denoised: bool = True) -> Sampler:
  """DDPM ancestral sampling (Ho et al. 2020) on any path with decreasing SNR; x̂0 clipped.
  Kernel: μ = c₀·x̂0 + c_t·x_k, σ² the posterior variance β̃_k of q(x_{k−1} | x_k, x̂0)."""

  def mean_std(policy, params, obs, cond, x, out, t, a_t, s_t, a_s, s_s, noise_bound=None):
    _, x0 = policy.to_eps_x0(out, x, a_t, s_t)
    x0 = jnp.clip(x0, -1.0, 1.0) if clip_denoised else x0
    c0, ct, var = _posterior(a_t, s_t, a_s, s_s)
    return c0 * x0 + ct * x, jnp.sqrt(var)

  return _kernel_rule('ddpm', {'vp_path'}, mean_std, scorable=False)


@primitive('sampler')
def ddim(eta: float = 0.0, clip_denoised: bool = True) -> Sampler:
  """DDIM (Song et al. 2021): deterministic at η = 0, DDPM's variance at η = 1. Kernel:
  μ = α_{k−1}·x̂0 + sqrt(σ²_{k−1} − c²)·ε̂, σ = c = η·σ_ddpm (a likelihood needs η > 0)."""

  def mean_std(policy, params, obs, cond, x, out, t, a_t, s_t, a_s, s_s, noise_bound=None):
    eps, x0 = policy.to_eps_x0(out, x, a_t, s_t)
    x0 = jnp.clip(x0, -1.0, 1.0) if clip_denoised else x0
    c = eta * jnp.sqrt(_posterior(a_t, s_t, a_s, s_s)[2])
    dir_scale = jnp.sqrt(jnp.maximum(s_s ** 2 - c ** 2, 0.0))
    return a_s * x0 + dir_scale * eps, c

  return _kernel_rule('ddim', {'vp_path'}, mean_std, scorable=False)


@primitive('sampler')
def euler() -> Sampler:
  """Euler integration of the flow ODE dx/dt = v_θ(s, x, t) from t = 1 to t = 0."""

  def make_step(policy):
    def step(x, out, a_t, s_t, a_s, s_s, key):
      return x - (s_t - s_s) * out        # σ_t = t on the rectified path, so Δt = σ_t − σ_s
    return step

  return _chain_rule('euler', {'velocity'}, make_step)


@primitive('sampler')
def dpm_solver_2m() -> Sampler:
  """DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order solver of the probability-flow
  ODE in x0-prediction form. With λ = log(α/σ), h = λ_s − λ_t, r = h_prev/h:
    D = (1 + 1/(2r))·x̂0_t − 1/(2r)·x̂0_prev   (D = x̂0_t on the first and the last step)
    x_s = (σ_s/σ_t)·x_t + α_s·(1 − e^{−h})·D,  e^{−h} = α_t σ_s/(σ_t α_s)
  written without logarithms of α or σ, so a path that starts at α = 0 (rectified flow) or ends
  at σ = 0 needs no special case. Deterministic; x̂0 is not clipped."""

  def make_step(policy):
    def step(x, out, a_t, s_t, a_s, s_s, key, memory):
      x0_prev, h_prev = memory
      _, x0 = policy.to_eps_x0(out, x, a_t, s_t)
      h = jnp.log(a_s * s_t) - jnp.log(jnp.maximum(a_t, 1e-12) * jnp.maximum(s_s, 1e-12))
      half_inv_r = jnp.where(jnp.isfinite(h_prev) & (s_s > 0), h / (2 * h_prev), 0.0)
      d = (1 + half_inv_r) * x0 - half_inv_r * x0_prev
      decay = a_t * s_s / (s_t * a_s)                                          # e^{−h}
      return (s_s / s_t) * x + a_s * (1 - decay) * d, (x0, jnp.where(a_t > 0, h, jnp.inf))
    return step

  init = lambda x: (jnp.zeros_like(x), jnp.asarray(jnp.inf, x.dtype))
  return _chain_rule('dpm_solver_2m', {'chain'}, make_step, init)


@primitive('sampler')
def euler_maruyama(eta: float = 1.0) -> Sampler:
  """Euler–Maruyama on the reverse-time SDE dx = [u_t − ½g_t²∇log p_t] dt + g_t dW̄, whose
  marginals match the probability-flow ODE dx/dt = u_t = α'_t x̂0 + σ'_t ε̂ for any g (Song et al.
  2021; ∇log p_t = −ε̂/σ_t from the policy's ε estimate, the score). With g_t² = 2η σ_t σ'_t and a
  step Δ from t to s:
    x_s = x_t − (α_t − α_s)·x̂0 − (1 + η)(σ_t − σ_s)·ε̂ + sqrt(2η σ_t (σ_t − σ_s))·z
  η = 0 is the Euler ODE step (the `euler` sampler on a flow). Works on every chain policy: a VP
  diffusion, or a rectified flow through its score."""

  def mean_std(policy, params, obs, cond, x, out, t, a_t, s_t, a_s, s_s, noise_bound=None):
    eps, x0 = policy.to_eps_x0(out, x, a_t, s_t)
    return (x - (a_t - a_s) * x0 - (1 + eta) * (s_t - s_s) * eps,
            jnp.sqrt(2 * eta * s_t * jnp.maximum(s_t - s_s, 0.0)))

  return _kernel_rule('euler_maruyama', {'chain'}, mean_std)


@primitive('sampler')
def noisy_euler(sigma: float = 0.1, learned_std: bool = False, clip_mean: bool = True,
                bound_decay_steps: int = 0, bound_hold: float = 0.35,
                bound_decay_ratio: float = 0.7) -> Sampler:
  """The flow's Euler step with Gaussian noise injected (ReinFlow, Zhang et al. 2025; FPO's
  'denoising_mdp'): μ = x_t − Δ·v_θ(s, x_t, t), clipped to [−1, 1] with `clip_mean` (ReinFlow), and
  σ = `sigma`, or with `learned_std` the policy's noise head σ_φ(s, x_t, t) ∈ [σ_min, σ_max]
  (a flow built with `noise_head`). `bound_decay_steps` N > 0 schedules the head's upper bound
  over N updates (ReinFlow's 'learn_decay', train_ppo_flow_agent.py and scheduler_simple.py):
  held for a fraction `bound_hold` h of training, then cosine-annealed to
  (1 − r)·σ_min + r·σ_max, r = `bound_decay_ratio`: after u updates
    σ_max(u) = σ_min + b(u)·(σ_max − σ_min),
    b(u) = r + (1 − r)·½(1 + cos(π·clip((u/N − h)/(1 − h), 0, 1))).
  A rollout draws (and is re-scored) with the bound at the update count it starts at; ReinFlow
  moves the bound after each iteration, so its iteration i draws with the bound of i − 1, and it
  counts iterations where u counts the updates made (a KL early stop makes fewer)."""
  if bound_decay_steps:
    from flowrl.errors import ConfigError
    if not learned_std:
      raise ConfigError('noisy_euler.bound_decay_steps schedules the learned noise std\'s upper '
                        'bound; bind noisy_euler.learned_std=True with it.')
    if not 0.0 <= bound_hold < 1.0:
      raise ConfigError(f'noisy_euler.bound_hold is {bound_hold!r}; it must be in [0, 1) (the '
                        f'fraction of the run the bound is held before it decays).')
    hold = bound_hold * bound_decay_steps                   # held, then b(u) by optax's cosine
    bound = optax.join_schedules(
        [optax.constant_schedule(1.0),
         optax.cosine_decay_schedule(1.0, bound_decay_steps - hold, alpha=bound_decay_ratio)],
        [hold])

  def mean_std(policy, params, obs, cond, x, out, t, a_t, s_t, a_s, s_s, noise_bound=None):
    mean = x - (s_t - s_s) * out          # σ_t = t on the rectified path, so Δt = σ_t − σ_s
    mean = jnp.clip(mean, -1.0, 1.0) if clip_mean else mean
    std = (policy.noise_std(params, obs, x, t, noise_bound) if learned_std
           else jnp.full_like(mean, sigma))
    return mean, std

  rule = _kernel_rule('noisy_euler', {'velocity', 'noise_head'} if learned_std else {'velocity'},
                      mean_std)
  return _with_kernel(rule, rule.kernel._replace(noise_bound=bound)) if bound_decay_steps else rule


@primitive('sampler')
def langevin_q(temperature: float = 0.1, corrector_steps: int = 2,
               step_size: float = 0.5) -> Sampler:
  """Annealed Langevin ascent on Q (NCLQL-style predictor–corrector; Song et al. 2021): between
  noise levels a deterministic DDIM step (predictor); at each level k < K, `corrector_steps`
  Langevin steps toward the policy tilted by the critic, p_k(x)·exp(Q̄(s, x̂0)/τ):
    x ← x + (η/2)·g + sqrt(η)·z,  g = −ε̂/σ_k + (α_k/τ)·∇ₐQ̄(s, clip(x̂0)),  η = (step_size·σ_k)²
  (the critic's gradient at the denoised estimate, faded by α_k where x̂0 is unreliable). With a
  flat critic it samples the policy itself. Needs the policy's score and the critic."""

  def sample(policy, params, obs, key, steps, deterministic, q=None):
    alphas, sigmas = policy.path(steps)
    init_key, key = jax.random.split(key)
    x = jax.random.normal(init_key, obs.shape[:-1] + (policy.act_dim,))
    cond = policy.condition(params, obs)

    def denoise(x, k):
      t = jnp.full((1,) * (x.ndim - 1), k / steps)
      return policy.to_eps_x0(policy.predict_cond(params, cond, x, t), x, alphas[k], sigmas[k])

    def ascent(x0):
      if q is None:
        return jnp.zeros_like(x0)
      return min_q_action_grad(q, obs, jnp.clip(x0, -1.0, 1.0))

    def corrector(x, inputs, k):
      eps, x0 = denoise(x, k)
      g = -eps / sigmas[k] + alphas[k] / temperature * ascent(x0)
      eta = jnp.square(step_size * sigmas[k])
      return x + 0.5 * eta * g + jnp.sqrt(eta) * jax.random.normal(inputs, x.shape), None

    def body(x, inputs):
      k, step_key = inputs
      eps, x0 = denoise(x, k)
      x = alphas[k - 1] * jnp.clip(x0, -1.0, 1.0) + sigmas[k - 1] * eps      # DDIM, η = 0
      keys = jax.random.split(step_key, corrector_steps)
      x, _ = jax.lax.cond(k > 1, lambda x: jax.lax.scan(
          lambda x, kk: corrector(x, kk, k - 1), x, keys), lambda x: (x, None), x)
      return x, None

    x, _ = jax.lax.scan(body, x, (jnp.arange(steps, 0, -1), jax.random.split(key, steps)))
    return SampleOut(jnp.clip(x, -1.0, 1.0))

  return Sampler('langevin_q', frozenset({'differentiable'}), frozenset({'score'}), sample, steps=1)


@primitive('sampler')
def direct() -> Sampler:
  """a ~ π(·|s) by reparameterization (mode when deterministic), with its log-prob (of the
  distribution's sample, mapped to the env's action by the policy's `env_action` where it has
  one: GenPO's doubled action)."""

  def sample(policy, params, obs, key, steps, deterministic, q=None):
    dist, mode = policy.distribution(params, obs)
    to_env = policy.env_action or (lambda x: x)
    if deterministic:
      return SampleOut(to_env(mode), None)
    action, log_prob = dist.sample_and_log_prob(seed=key)
    return SampleOut(to_env(action), log_prob)

  return Sampler('direct', frozenset({'differentiable', 'logprob'}), frozenset({'distribution'}),
                 sample, steps=1)


@gin.configurable(module='flowrl')
def sampler(rule: Sampler = gin.REQUIRED, steps: int = 20, best_of: int = 1,
            eval_best_of: int = 1, min_sampling_std: float = 0.0, min_logprob_std: float = 0.0,
            noise_clip: float = 0.0, deterministic_eval: bool = False,
            selection: str = 'argmax', fine_tune_steps: int = 0,
            eval_from_zero: bool = False) -> Sampler:
  """A sampling rule with its step count and best-of-N (by min-ensemble Q) when collecting
  (`best_of`) and when evaluating (`eval_best_of`); 1 means no selection. On a rule with a
  transition kernel: floors of the sampling and the likelihood std, and the clip of the standard
  normal noise (0: none), DPPO's 0.1, 0.1 and 3; `deterministic_eval` evaluates through the
  kernel's means without noise (DPPO, ReinFlow; otherwise chains sample in evaluation too).
  `selection` of the best of N: 'argmax' of Q, or 'softmax', a draw with probability softmax(Q)
  (Diffusion-QL's evaluation over 50 samples). `fine_tune_steps` = K_ft in 1..steps−1 (kernel
  rules): a frozen copy of the actor the run started from (its --init-from policy) draws the
  first steps − K_ft steps and the trained actor the last K_ft, which alone are scored (DPPO's
  fine-tuning, Ren et al. 2024: K_ft = 10 of 20); 0: the trained actor draws every step.
  `eval_from_zero` (chain rules): a deterministic draw (evaluation) starts its chain at x_K = 0
  instead of noise (FPO++'s zero-sampling evaluation, Yi, Choi et al. 2026)."""
  from flowrl.errors import ConfigError
  if selection not in ('argmax', 'softmax'):
    raise ConfigError(f"sampler.selection is {selection!r}; choices: 'argmax', 'softmax'.")
  if not 0 <= fine_tune_steps < steps:
    raise ConfigError(f'sampler.fine_tune_steps is {fine_tune_steps}; it must be 0 (all steps '
                      f'trained) or between 1 and sampler.steps - 1 = {steps - 1}.')
  floors = (min_sampling_std, min_logprob_std, noise_clip, deterministic_eval, fine_tune_steps)
  if any(floors):
    if rule.kernel is None:
      raise ConfigError(f"sampler.min_sampling_std/min_logprob_std/noise_clip/deterministic_eval/"
                        f"fine_tune_steps need a rule with a transition kernel; '{rule.name}' has "
                        f"none (kernel rules: ddpm, ddim, euler_maruyama, noisy_euler).")
    rule = _with_kernel(rule, rule.kernel._replace(
        min_sampling_std=min_sampling_std, min_logprob_std=min_logprob_std, noise_clip=noise_clip,
        deterministic_eval=deterministic_eval, fine_tune_steps=fine_tune_steps))
    if min_logprob_std > 0:            # every step now has a likelihood
      rule = rule._replace(provides=rule.provides | {'kernel'})
    if fine_tune_steps:                # the frozen base, and a signal that scores only K_ft steps
      rule = rule._replace(requires=rule.requires | {'reference_actor', 'split_chain'})
  if eval_from_zero:
    if 'chain_start' not in rule.provides:
      raise ConfigError(f"sampler.eval_from_zero starts a chain at x_K = 0; '{rule.name}' runs no "
                        f"chain from x_K (chain rules: ddpm, ddim, euler, euler_maruyama, "
                        f"noisy_euler, dpm_solver_2m).")
    inner = rule.sample

    def from_zero(policy, params, obs, key, steps, deterministic, q=None):
      start = jnp.zeros(obs.shape[:-1] + (policy.act_dim,)) if deterministic else None
      return inner(policy, params, obs, key, steps, deterministic, q, start=start)
    rule = rule._replace(sample=from_zero)
  return rule._replace(steps=steps, best_of=best_of, eval_best_of=eval_best_of,
                       selection=selection)
