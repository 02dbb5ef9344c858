"""Policy parameterization axis: what distribution family the actor is, and its own regression loss.

  tanh_gaussian  a = tanh(μ(s) + σ(s) ξ), exact log-prob (Haarnoja et al. 2018, SAC)
  deterministic  a = tanh(μ(s)) (Fujimoto et al. 2018, TD3)
  gaussian       a ~ N(μ(s), diag σ²), σ a state-independent parameter, unsquashed (PPO)
  vp_diffusion   a_k = α_k a + σ_k ε on a VP schedule, ε/x0/v-prediction (Ho et al. 2020)
  rectified_flow a_t = (1 − t) a + t ε, velocity v = ε − a (Liu et al. 2023; Lipman et al. 2023)
"""
from typing import Optional, Sequence

import distrax
import gin
import haiku as hk
import jax
import jax.numpy as jnp

from flowrl.errors import ConfigError
from flowrl.primitives import initializers, networks, schedules
from flowrl.primitives.initializers import Initializer
from flowrl.primitives.base import EnvSpec, Policy, builder, primitive

PREDICTIONS = ('eps', 'x0', 'v')


def _direct_net(spec: EnvSpec, hidden, activation, outputs, hidden_init, output_init):
  init = initializers.resolve(hidden_init, output_init)
  net = hk.without_apply_rng(hk.transform(
      lambda obs: networks.mlp(hidden, outputs, activation, 'policy', init)(obs)))
  return net, (lambda key: net.init(key, jnp.zeros((1, spec.obs_dim))))


@primitive('policy')
@builder
def tanh_gaussian(spec: EnvSpec, hidden: Sequence[int] = (256, 256), activation: str = 'relu',
                  log_std_min: float = -20.0, log_std_max: float = 2.0,
                  hidden_init: Optional[Initializer] = None,
                  output_init: Optional[Initializer] = None) -> Policy:
  """Tanh-squashed diagonal Gaussian with state-dependent std; exact log-prob via distrax.
  One network outputs [mean, log std]; log std is clipped to [log_std_min, log_std_max] (flow-rl
  and the SAC authors' code: [−20, 2]). Initializers: None means the library's (`initializers`)."""
  net, init = _direct_net(spec, hidden, activation, 2 * spec.act_dim, hidden_init, output_init)

  def distribution(params, obs):
    mean, log_std = jnp.split(net.apply(params, obs), 2, axis=-1)
    log_std = jnp.clip(log_std, log_std_min, log_std_max)
    dist = distrax.Transformed(distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)),
                               distrax.Block(distrax.Tanh(), ndims=1))
    return dist, jnp.tanh(mean)

  return Policy('tanh_gaussian', frozenset({'distribution', 'exact_logprob', 'fits_actions'}),
                spec.act_dim, init,
                distribution=distribution)


@primitive('policy')
@builder
def gaussian(spec: EnvSpec, hidden: Sequence[int] = (64, 64), activation: str = 'tanh',
             log_std_init: float = 0.0, hidden_init: Optional[Initializer] = None,
             output_init: Optional[Initializer] = None, tanh_mean: bool = False,
             log_std_range: Optional[Sequence[float]] = None) -> Policy:
  """Unsquashed diagonal Gaussian N(μ(s), diag σ²) with a state-independent log σ parameter,
  initialised to `log_std_init` (PPO, Schulman et al. 2017; CleanRL's and flow-rl's Gaussian
  actor). Its samples are not squashed or clipped: the log-prob is of the sample itself, and the
  env receives it clipped to [−1, 1] (the driver clips for the env only). IQL's actor (Kostrikov
  et al. 2022): `tanh_mean` μ = tanh(MLP(s)), and log σ clipped to `log_std_range` (−5, 2)."""
  init_ = initializers.resolve(hidden_init, output_init)

  def forward(obs):
    mean = networks.mlp(hidden, spec.act_dim, activation, 'policy', init_)(obs)
    log_std = hk.get_parameter('log_std', (spec.act_dim,), init=hk.initializers.Constant(
        log_std_init))
    if tanh_mean:
      mean = jnp.tanh(mean)
    if log_std_range is not None:
      log_std = jnp.clip(log_std, *log_std_range)
    return mean, log_std

  net = hk.without_apply_rng(hk.transform(forward))

  def distribution(params, obs):
    mean, log_std = net.apply(params, obs)
    std = jnp.broadcast_to(jnp.exp(log_std), mean.shape)
    return distrax.MultivariateNormalDiag(mean, std), mean

  return Policy('gaussian', frozenset({'distribution', 'exact_logprob', 'fits_actions'}),
                spec.act_dim,
                lambda key: net.init(key, jnp.zeros((1, spec.obs_dim))), distribution=distribution)


@primitive('policy')
@builder
def deterministic(spec: EnvSpec, hidden: Sequence[int] = (256, 256), activation: str = 'relu',
                  hidden_init: Optional[Initializer] = None,
                  output_init: Optional[Initializer] = None) -> Policy:
  """a = tanh(μ(s)): a point mass; exploration comes from a regularizer's noise."""
  net, init = _direct_net(spec, hidden, activation, spec.act_dim, hidden_init, output_init)

  def distribution(params, obs):
    mode = jnp.tanh(net.apply(params, obs))
    return distrax.Deterministic(mode), mode

  return Policy('deterministic', frozenset({'distribution', 'deterministic', 'fits_actions'}),
                spec.act_dim, init,
                distribution=distribution)


def _chain_net(spec: EnvSpec):
  """(init, predict, condition, predict_cond) of a DenoiserNet with shared parameters."""

  def make():
    net = networks.DenoiserNet(spec.act_dim, spec.obs_dim)
    return (lambda obs, x, t: net.step(net.condition(obs), x, t)), (net.condition, net.step)

  net = hk.without_apply_rng(hk.multi_transform(make))
  condition, predict_cond = net.apply
  init = lambda key: net.init(key, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)),
                              jnp.zeros((1,)))
  predict = lambda params, obs, x, t: predict_cond(params, condition(params, obs), x, t)
  return init, predict, condition, predict_cond


def _regression(pred, target):
  return jnp.mean(jnp.square(pred - target), axis=-1)


@primitive('policy')
@builder
def vp_diffusion(spec: EnvSpec, schedule=schedules.cosine_schedule,
                 prediction: str = 'eps', train_steps: int = 20) -> Policy:
  """Variance-preserving diffusion (Ho et al. 2020): a_k = α_k a + σ_k ε, α² + σ² = 1, on the
  `schedule`. The network predicts ε ('eps'), a ('x0') or v = α ε − σ a ('v', Salimans & Ho
  2022); fit loss: E_{k,ε} ‖f_θ(s, a_k, k/K) − target‖² averaged over action dimensions, with
  k ~ U{1..K} on the policy's own training grid K = `train_steps` (the papers train and sample on
  the same K, so each method file binds it to its sampler's steps). A sampler may run on another
  grid (t = k/K is continuous, the schedule is a function of t): a sampler ablation then changes
  only sampling. The network is `DenoiserNet` (bind its sizes there)."""
  if prediction not in PREDICTIONS:
    raise ConfigError(f"vp_diffusion.prediction={prediction!r} is not one of {PREDICTIONS}.")
  init, predict, condition, predict_cond = _chain_net(spec)

  def path(steps):
    alpha_bar = schedule(steps)
    return jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)

  def to_eps_x0(out, x_t, alpha, sigma):
    if prediction == 'eps':
      return out, (x_t - sigma * out) / alpha
    if prediction == 'x0':
      return (x_t - alpha * out) / sigma, out
    return sigma * x_t + alpha * out, alpha * x_t - sigma * out

  def noised(a0, key):
    k_key, e_key = jax.random.split(key)
    k = jax.random.randint(k_key, a0.shape[:-1] + (1,), 1, train_steps + 1)
    alphas, sigmas = path(train_steps)
    eps = jax.random.normal(e_key, a0.shape)
    alpha, sigma = alphas[k], sigmas[k]
    return alpha * a0 + sigma * eps, k[..., 0] / train_steps, eps, alpha, sigma

  def target(a0, eps, alpha, sigma):
    return {'eps': eps, 'x0': a0, 'v': alpha * eps - sigma * a0}[prediction]

  def fit_loss(params, obs, a0, key):
    x_t, t, eps, alpha, sigma = noised(a0, key)
    return _regression(predict(params, obs, x_t, t), target(a0, eps, alpha, sigma))

  def coefficients(t):
    """(α, σ) at t on the training grid (t = k/K; rounded to the nearest k)."""
    alphas, sigmas = path(train_steps)
    k = jnp.clip(jnp.round(t * train_steps).astype(jnp.int32), 0, train_steps)
    return alphas[k], sigmas[k]

  return Policy('vp_diffusion', frozenset({'chain', 'vp_path', 'score', 'fits_actions'}),
                spec.act_dim, init,
                predict=predict, path=path, to_eps_x0=to_eps_x0, fit_loss=fit_loss,
                noised=noised, condition=condition, predict_cond=predict_cond,
                cfm_loss_at=_cfm_loss_at(predict, to_eps_x0, coefficients, target))


def _cfm_loss_at(predict, to_eps_x0, coefficients, native_target):
  """The policy's regression loss at given noise levels and noises (FPO's per-sample CFM loss):
  obs [B, O], a [B, A], t [B, N], ε [B, N, A] -> [B, N], one network pass over B·N rows.
  space 'native' regresses the policy's own target, 'eps' the noise: mean_A (ε̂ − ε)²."""

  def cfm_loss_at(params, obs, a, t, eps, space='native'):
    b, n = t.shape
    alpha, sigma = coefficients(t[..., None])
    a = jnp.broadcast_to(a[:, None], eps.shape)
    x_t = alpha * a + sigma * eps
    rows = lambda v: v.reshape((b * n,) + v.shape[2:])
    obs_n = jnp.broadcast_to(obs[:, None], (b, n) + obs.shape[1:])
    out = predict(params, rows(obs_n), rows(x_t), rows(t)).reshape(eps.shape)
    if space == 'eps':
      return _regression(to_eps_x0(out, x_t, alpha, sigma)[0], eps)
    return _regression(out, native_target(a, eps, alpha, sigma))

  return cfm_loss_at


def _noise_head(spec: EnvSpec, std_range, hidden=(64, 64)):
  """ReinFlow's exploration-noise network: σ_φ(s, x_t, t) = exp(½ log σ²) with
  log σ² = log σ²_min + (log σ²_max − log σ²_min)·(tanh(h) + 1)/2,
  h = MLP(64, 64, tanh)([s, x_t, t]) (ReinFlow model/flow/mlp_flow.py). With `bound` b (a scalar
  or per row), σ_max becomes σ_min + b·(σ_max − σ_min), as ReinFlow's `set_noise_range` moves it.
  Returns (init, noise_std)."""
  s_min, s_max = std_range
  lo = 2.0 * jnp.log(s_min)
  net = hk.without_apply_rng(hk.transform(lambda obs, x, t: networks.mlp(
      hidden, spec.act_dim, 'tanh', 'noise_head')(jnp.concatenate([obs, x, t], axis=-1))))

  def noise_std(params, obs, x, t, bound=None):
    t = jnp.broadcast_to(jnp.reshape(t, t.shape + (1,) * (x.ndim - t.ndim)), x.shape[:-1] + (1,))
    h = net.apply(params, obs, x, t)
    top = s_max if bound is None else s_min + jnp.reshape(bound, jnp.shape(bound) + (1,) * (
        x.ndim - jnp.ndim(bound))) * (s_max - s_min)
    hi = 2.0 * jnp.log(top)
    return jnp.exp(0.5 * (lo + (hi - lo) * (jnp.tanh(h) + 1.0) / 2.0))

  init = lambda key: net.init(key, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim)),
                              jnp.zeros((1, 1)))
  return init, noise_std


@primitive('policy')
@builder
def rectified_flow(spec: EnvSpec, train_grid: int = 0, noise_head: Sequence[float] = ()) -> Policy:
  """Rectified flow / conditional flow matching (Liu et al. 2023; Lipman et al. 2023):
  a_t = (1 − t) a + t ε, t ~ U(0, 1) (or, with `train_grid` K > 0, t ∈ {1/K, ..., 1}, FPO's
  discretized grid); the network predicts the velocity v = ε − a; fit loss
  E_{t,ε} ‖v_θ(s, a_t, t) − (ε − a)‖². Sampling integrates from t = 1 (noise) to 0.
  Its noise estimate ε̂ = a_t + (1 − t) v̂ gives the score ∇log p_t = −ε̂/t (SDE sampling, QSM).
  `noise_head` = (σ_min, σ_max) adds ReinFlow's learned noise std σ_φ(s, x_t, t) in that range,
  read by `noisy_euler(learned_std=True)`."""
  init, predict, condition, predict_cond = _chain_net(spec)
  provides = {'chain', 'velocity', 'score', 'fits_actions'}
  noise_std = None
  if noise_head:
    if len(noise_head) != 2 or not 0 < noise_head[0] <= noise_head[1]:
      raise ConfigError(f'rectified_flow.noise_head={tuple(noise_head)!r} must be (σ_min, σ_max) '
                        f'with 0 < σ_min <= σ_max.')
    head_init, noise_std = _noise_head(spec, noise_head)
    flow_init = init
    init = lambda key: {**flow_init(key), **head_init(jax.random.fold_in(key, 1))}
    provides.add('noise_head')

  def path(steps):
    t = jnp.linspace(0.0, 1.0, steps + 1)
    return 1.0 - t, t

  def to_eps_x0(out, x_t, alpha, sigma):
    # x_t = α x0 + σ ε with α = 1 − t, σ = t and v = ε − x0.
    return x_t + alpha * out, x_t - sigma * out

  def noised(a0, key):
    t_key, e_key = jax.random.split(key)
    if train_grid:
      t = jax.random.randint(t_key, a0.shape[:-1] + (1,), 1, train_grid + 1) / train_grid
    else:
      t = jax.random.uniform(t_key, a0.shape[:-1] + (1,))
    eps = jax.random.normal(e_key, a0.shape)
    return (1 - t) * a0 + t * eps, t[..., 0], eps, 1 - t, t

  def fit_loss(params, obs, a0, key):
    x_t, t, eps, _, _ = noised(a0, key)
    return _regression(predict(params, obs, x_t, t), eps - a0)

  cfm_loss_at = _cfm_loss_at(predict, to_eps_x0, lambda t: (1 - t, t),
                             lambda a, eps, alpha, sigma: eps - a)
  return Policy('rectified_flow', frozenset(provides), spec.act_dim, init,
                predict=predict, path=path, to_eps_x0=to_eps_x0, fit_loss=fit_loss,
                noised=noised, condition=condition, predict_cond=predict_cond,
                noise_std=noise_std, cfm_loss_at=cfm_loss_at)
