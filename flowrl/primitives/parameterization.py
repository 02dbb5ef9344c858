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

  return Policy('tanh_gaussian', frozenset({'distribution', 'exact_logprob'}), spec.act_dim, init,
                distribution=distribution)


@primitive('policy')
@builder
def gaussian(spec: EnvSpec, hidden: Sequence[int] = (64, 64), activation: str = 'tanh',
             log_std_init: float = 0.0, hidden_init: Optional[Initializer] = None,
             output_init: Optional[Initializer] = None) -> Policy:
  """Unsquashed diagonal Gaussian N(μ(s), diag σ²) with a state-independent log σ parameter,
  initialised to `log_std_init` (PPO, Schulman et al. 2017; CleanRL's and flow-rl's Gaussian
  actor). Its samples are not squashed or clipped: the log-prob is of the sample itself, and the
  env receives it clipped to [−1, 1] (the driver clips for the env only)."""
  init_ = initializers.resolve(hidden_init, output_init)

  def forward(obs):
    mean = networks.mlp(hidden, spec.act_dim, activation, 'policy', init_)(obs)
    log_std = hk.get_parameter('log_std', (spec.act_dim,), init=hk.initializers.Constant(
        log_std_init))
    return mean, log_std

  net = hk.without_apply_rng(hk.transform(forward))

  def distribution(params, obs):
    mean, log_std = net.apply(params, obs)
    return distrax.MultivariateNormalDiag(mean, jnp.broadcast_to(jnp.exp(log_std), mean.shape)), mean

  return Policy('gaussian', frozenset({'distribution', 'exact_logprob'}), spec.act_dim,
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

  return Policy('deterministic', frozenset({'distribution', 'deterministic'}), spec.act_dim, init,
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

  def fit_loss(params, obs, a0, key):
    x_t, t, eps, alpha, sigma = noised(a0, key)
    out = predict(params, obs, x_t, t)
    target = {'eps': eps, 'x0': a0, 'v': alpha * eps - sigma * a0}[prediction]
    return _regression(out, target)

  return Policy('vp_diffusion', frozenset({'chain', 'vp_path', 'score'}), spec.act_dim, init,
                predict=predict, path=path, to_eps_x0=to_eps_x0, fit_loss=fit_loss,
                noised=noised, condition=condition, predict_cond=predict_cond)


@primitive('policy')
@builder
def rectified_flow(spec: EnvSpec) -> Policy:
  """Rectified flow / conditional flow matching (Liu et al. 2023; Lipman et al. 2023):
  a_t = (1 − t) a + t ε, t ~ U(0, 1); the network predicts the velocity v = ε − a;
  fit loss E_{t,ε} ‖v_θ(s, a_t, t) − (ε − a)‖². Sampling integrates from t = 1 (noise) to 0.
  Its noise estimate ε̂ = a_t + (1 − t) v̂ gives the score ∇log p_t = −ε̂/t (SDE sampling, QSM)."""
  init, predict, condition, predict_cond = _chain_net(spec)

  def path(steps):
    t = jnp.linspace(0.0, 1.0, steps + 1)
    return 1.0 - t, t

  def to_eps_x0(out, x_t, alpha, sigma):
    # x_t = α x0 + σ ε with α = 1 − t, σ = t and v = ε − x0.
    return x_t + alpha * out, x_t - sigma * out

  def noised(a0, key):
    t_key, e_key = jax.random.split(key)
    t = jax.random.uniform(t_key, a0.shape[:-1] + (1,))
    eps = jax.random.normal(e_key, a0.shape)
    return (1 - t) * a0 + t * eps, t[..., 0], eps, 1 - t, t

  def fit_loss(params, obs, a0, key):
    x_t, t, eps, _, _ = noised(a0, key)
    return _regression(predict(params, obs, x_t, t), eps - a0)

  return Policy('rectified_flow', frozenset({'chain', 'velocity', 'score'}), spec.act_dim, init,
                predict=predict, path=path, to_eps_x0=to_eps_x0, fit_loss=fit_loss,
                noised=noised, condition=condition, predict_cond=predict_cond)
