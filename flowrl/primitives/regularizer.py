"""Regularizer axis: what keeps the policy from collapsing. A regularizer may own state (a
temperature α with its optimizer state); it adds a term to the actor loss, a bonus to the TD
target, and noise to actions by role ('behaviour' when collecting, 'target' in the TD target,
'actor' in the actor's own samples). Evaluation never adds noise.

  no_regularizer     nothing (DIPO: its sampler is stochastic)
  exact_entropy      SAC (Haarnoja et al. 2018b): actor + α log π, target − α log π',
                     α loss −log α·(log π + H*), H* = target_scale·|A|
  estimated_entropy  DACER (Wang et al. 2024): a + noise_scale·α·N(0, I) on every sampled action;
                     every `every` updates H is estimated by a Gaussian-mixture fit (EM, inside jit)
                     on `num_samples` actions per state, α loss −log α·(H* − H); the estimate is
                     a program of its own (`Periodic`) that the loop runs right after those updates
  noise_entropy      SDAC / DPMD (Ma et al. 2025): the same α-scaled noise, α tuned every 250
                     updates on the noise's own closed-form entropy
  kl_to_uniform      DPMD: auto-tuned weight temperature λ, KL(weights ‖ uniform) held at a target
  uniform_denoising  QVPO (Ding et al. 2024): denoising loss on uniform actions, weighted
  combined           several of the above at once (DPMD: kl_to_uniform + noise_entropy)
  reference_bc       ReinFlow's "W2" term (Zhang et al. 2025): c·‖a_ref(s) − a_θ(s)‖² between the
                     frozen starting actor's and the current actor's noise-free actions
  action_noise       Gaussian action noise: behaviour (exploration; QSM, TD3) and target
                     (TD3's target policy smoothing, clipped noise) standard deviations
"""
import distrax
import jax
import jax.numpy as jnp
import optax
from jax.scipy.stats import multivariate_normal

from flowrl.primitives.base import EnvSpec, Periodic, Regularizer, builder, primitive
from flowrl.primitives.sampler import draw
from flowrl.primitives.transition_kernel import sample_chain

_zero = lambda *_: 0.0
_no_update = lambda state, step, aux, sample_many, key: (state, {})


@primitive('regularizer')
@builder
def no_regularizer(spec: EnvSpec) -> Regularizer:
  """No regularization."""
  return Regularizer('no_regularizer', frozenset(), lambda: (), _zero, _zero,
                     lambda state, a, key, role: a, _no_update)


class Temperature:
  """α = exp(log α) with its own Adam, shared by the two entropy regularizers."""

  def __init__(self, alpha_init, learning_rate):
    self.opt = optax.adam(learning_rate)
    self.alpha_init = alpha_init

  def init(self):
    log_alpha = jnp.log(jnp.asarray(self.alpha_init, jnp.float32))
    return {'log_alpha': log_alpha, 'opt': self.opt.init(log_alpha)}

  def step(self, state, gap):
    """One Adam step on the loss −log α · sg(gap) with gap = H* − H: α grows while the entropy H
    is below its target H* (SAC: H = −mean log π; DACER: the GMM estimate)."""
    grad = jax.grad(lambda la: -la * jax.lax.stop_gradient(gap))(state['log_alpha'])
    updates, opt = self.opt.update(grad, state['opt'])
    return {**state, 'log_alpha': optax.apply_updates(state['log_alpha'], updates), 'opt': opt}


def alpha(state):
  return jnp.exp(jax.lax.stop_gradient(state['log_alpha']))


@primitive('regularizer')
@builder
def exact_entropy(spec: EnvSpec, alpha_init: float = 1.0, learning_rate: float = 3e-4,
                  target_scale: float = -1.0) -> Regularizer:
  """Maximum entropy with the policy's exact log-prob and automatic temperature."""
  temp, target = Temperature(alpha_init, learning_rate), target_scale * spec.act_dim

  def update(state, step, aux, sample, key):
    log_prob = jnp.mean(aux['log_prob'])
    new = temp.step(state, log_prob + target)
    return new, {'alpha': alpha(new), 'entropy': -log_prob}

  return Regularizer(
      'exact_entropy', frozenset({'exact_logprob', 'logprob', 'sample_log_prob'}), temp.init,
      actor_loss=lambda state, aux, *_: alpha(state) * jnp.mean(aux['log_prob']),
      target_bonus=lambda state, next_log_prob: -alpha(state) * next_log_prob,
      perturb=lambda state, a, key, role: a, update=update)


def gmm_entropy(x, key, components: int = 3, iterations: int = 30, reg: float = 1e-6):
  """Entropy of a Gaussian mixture fitted to samples x [N, D] by EM (inside jit, fixed iterations),
  as DACER estimates its policy's entropy: H ≈ −Σ_k w_k log w_k + Σ_k w_k H(N(μ_k, Σ_k))."""
  n, d = x.shape
  eye = reg * jnp.eye(d)
  means = x[jax.random.choice(key, n, (components,), replace=False)]
  covs = jnp.broadcast_to(jnp.cov(x.T).reshape(d, d) + eye, (components, d, d))
  weights = jnp.full((components,), 1.0 / components)

  def em(_, params):
    weights, means, covs = params
    log_p = jax.vmap(lambda m, c: multivariate_normal.logpdf(x, m, c))(means, covs)  # [K, N]
    resp = jax.nn.softmax(jnp.log(weights)[:, None] + log_p, axis=0)
    nk = jnp.sum(resp, axis=1) + 1e-10
    means = resp @ x / nk[:, None]
    diff = x[None] - means[:, None]                                              # [K, N, D]
    covs = jnp.einsum('kn,kni,knj->kij', resp, diff, diff) / nk[:, None, None] + eye
    return nk / n, means, covs

  weights, means, covs = jax.lax.fori_loop(0, iterations, em, (weights, means, covs))
  entropy = lambda m, c: distrax.MultivariateNormalFullCovariance(m, c).entropy()
  comp = jax.vmap(entropy)(means, covs)
  return -jnp.sum(weights * jnp.log(weights + 1e-12)) + jnp.sum(weights * comp)


def _alpha_noise(name, spec, alpha_init, learning_rate, target_scale, noise_scale, every,
                 entropy_of, own_program=False) -> Regularizer:
  """a + noise_scale·α·N(0, I) on every sampled action (clipped to the box); every `every`
  updates one Adam step on −log α·(H* − H) with H = entropy_of(state, sample_many, key): inside
  the update under `lax.cond`, or with `own_program` as a `Periodic` step the loop runs right
  after the update (for an estimate that costs far more than an update)."""
  temp, target = Temperature(alpha_init, learning_rate), target_scale * spec.act_dim

  def perturb(state, a, key, role):
    return jnp.clip(a + noise_scale * alpha(state) * jax.random.normal(key, a.shape), -1.0, 1.0)

  def init():
    return {**temp.init(), 'entropy': jnp.float32(0.0)}   # the latest estimate, as DACER keeps it

  def estimate_and_step(state, sample_many, key):
    entropy = entropy_of(state, sample_many, key)
    return {**temp.step(state, target - entropy), 'entropy': entropy}

  def report(state):
    return {'alpha': alpha(state), 'entropy_estimate': state['entropy']}

  if own_program:
    return Regularizer(name, frozenset(), init, _zero, _zero, perturb,
                       lambda state, step, aux, sample_many, key: (state, report(state)),
                       periodic=Periodic(every, estimate_and_step))

  def update(state, step, aux, sample_many, key):
    state = jax.lax.cond(step % every == 0, lambda s: estimate_and_step(s, sample_many, key),
                         lambda s: s, state)
    return state, report(state)

  return Regularizer(name, frozenset(), init, _zero, _zero, perturb, update)


@primitive('regularizer')
@builder
def estimated_entropy(spec: EnvSpec, alpha_init: float = 3.0, learning_rate: float = 0.03,
                      target_scale: float = -0.9, noise_scale: float = 0.1, num_samples: int = 200,
                      components: int = 3, every: int = 10000) -> Regularizer:
  """DACER's entropy regulator for policies without a log-prob: α-scaled action noise, α tuned
  every `every` updates on a GMM entropy estimate over `num_samples` actions per state (a
  program of its own, run by the loop right after those updates, on the parameters they left)."""

  def entropy_of(state, sample_many, key):
    s_key, g_key = jax.random.split(key)
    actions = sample_many(s_key, num_samples)                                    # [B, n, A]
    keys = jax.random.split(g_key, actions.shape[0])
    return jnp.mean(jax.vmap(lambda a, k: gmm_entropy(a, k, components))(actions, keys))

  return _alpha_noise('estimated_entropy', spec, alpha_init, learning_rate, target_scale,
                      noise_scale, every, entropy_of, own_program=True)


@primitive('regularizer')
@builder
def noise_entropy(spec: EnvSpec, alpha_init: float = 5.0, learning_rate: float = 7e-3,
                  target_scale: float = -0.9, noise_scale: float = 0.1,
                  every: int = 250) -> Regularizer:
  """SDAC / DPMD (Ma et al. 2025): α-scaled action noise, α tuned every `every` updates on the
  closed-form entropy of that noise, H = ½|A| log(2πe (noise_scale·α)²) (distrax)."""

  def entropy_of(state, sample_many, key):
    std = noise_scale * alpha(state)
    return distrax.MultivariateNormalDiag(jnp.zeros(spec.act_dim),
                                          jnp.full(spec.act_dim, std)).entropy()

  return _alpha_noise('noise_entropy', spec, alpha_init, learning_rate, target_scale, noise_scale,
                      every, entropy_of)


@primitive('regularizer')
@builder
def kl_to_uniform(spec: EnvSpec, target_kl: float = 2.0, lambda_init: float = 1.0,
                  learning_rate: float = 1e-3) -> Regularizer:
  """DPMD: the weight temperature λ of a Q-weighted signal, tuned so that the weights'
  KL(w ‖ uniform) = log N − H(w) stays at `target_kl`: one Adam step per actor step on
  λ·(KL* − KL) over log λ (λ falls, sharpening the weights, while KL < KL*). Provides
  'weight_temperature'; the signal reports KL as aux['weight_kl']."""
  opt = optax.adam(learning_rate)

  def init():
    log_lam = jnp.log(jnp.asarray(lambda_init, jnp.float32))
    return {'log_lambda': log_lam, 'opt': opt.init(log_lam)}

  def update(state, step, aux, sample_many, key):
    gap = jax.lax.stop_gradient(target_kl - jnp.mean(aux['weight_kl']))
    grad = jax.grad(lambda ll: jnp.exp(ll) * gap)(state['log_lambda'])
    updates, opt_state = opt.update(grad, state['opt'])
    state = {'log_lambda': optax.apply_updates(state['log_lambda'], updates), 'opt': opt_state}
    return state, {'lambda': jnp.exp(state['log_lambda'])}

  return Regularizer('kl_to_uniform', frozenset({'weight_kl'}), init, _zero, _zero,
                     lambda state, a, key, role: a, update, frozenset({'weight_temperature'}),
                     lambda state: jnp.exp(jax.lax.stop_gradient(state['log_lambda'])))


@primitive('regularizer')
@builder
def uniform_denoising(spec: EnvSpec, num_actions: int = 10, weight: float = 0.02) -> Regularizer:
  """QVPO's entropy term: the policy's own fit loss on `num_actions` actions per state drawn
  uniformly from [−1, 1]^|A|, weighted by weight·w_b (w_b: the signal's per-state weights,
  aux['weights'], or 1): L = weight·mean_b w_b·mean_m ℓ_fit(s_b, u_bm)."""

  def actor_loss(state, aux, params, inp, key):
    u_key, fit_key = jax.random.split(key)
    b = inp.obs.shape[0]
    u = jax.random.uniform(u_key, (b * num_actions, spec.act_dim), minval=-1.0, maxval=1.0)
    obs = jnp.repeat(inp.obs, num_actions, axis=0)
    fit = inp.policy.fit_loss(params, obs, u, fit_key).reshape(b, num_actions)
    w = jax.lax.stop_gradient(aux.get('weights', jnp.ones(b)))
    return weight * jnp.mean(w * jnp.mean(fit, axis=-1))

  return Regularizer('uniform_denoising', frozenset({'chain'}), lambda: (), actor_loss, _zero,
                     lambda state, a, key, role: a, _no_update)


@primitive('regularizer')
@builder
def combined(spec: EnvSpec, parts=()) -> Regularizer:
  """Several regularizers at once (optax.chain-style): losses and bonuses add, noise is applied
  in order, each part keeps its own state; the first part with a weight temperature provides it.
  DPMD: combined.parts = [@kl_to_uniform(), @noise_entropy()]."""
  regs = [make(spec) for make in parts]
  with_temp = [i for i, r in enumerate(regs) if r.temperature is not None]
  with_periodic = [i for i, r in enumerate(regs) if r.periodic is not None]
  if len(with_periodic) > 1:
    raise ValueError('combined regularizer: at most one part may have a periodic step of its '
                     f"own, but {', '.join(regs[i].name for i in with_periodic)} each have one.")
  periodic = None
  if with_periodic:
    i = with_periodic[0]

    def run_part(states, sample_many, key):
      return states[:i] + (regs[i].periodic.run(states[i], sample_many, key),) + states[i + 1:]

    periodic = Periodic(regs[i].periodic.every, run_part)

  def perturb(states, a, key, role):
    for r, st, k in zip(regs, states, jax.random.split(key, max(len(regs), 1))):
      a = r.perturb(st, a, k, role)
    return a

  def update(states, step, aux, sample_many, key):
    out, metrics = [], {}
    for r, st, k in zip(regs, states, jax.random.split(key, max(len(regs), 1))):
      st, m = r.update(st, step, aux, sample_many, k)
      out.append(st)
      metrics.update(m)
    return tuple(out), metrics

  def actor_loss(states, aux, params, inp, key):
    keys = jax.random.split(key, max(len(regs), 1))
    return sum(r.actor_loss(st, aux, params, inp, k) for r, st, k in zip(regs, states, keys))

  def target_bonus(states, next_log_prob):
    return sum(r.target_bonus(st, next_log_prob) for r, st in zip(regs, states))

  return Regularizer(
      'combined(' + ', '.join(r.name for r in regs) + ')',
      frozenset().union(*[r.requires for r in regs]),
      lambda: tuple(r.init() for r in regs), actor_loss, target_bonus, perturb, update,
      frozenset().union(*[r.provides for r in regs]),
      (lambda states: regs[with_temp[0]].temperature(states[with_temp[0]])) if with_temp else None,
      periodic)


@primitive('regularizer')
@builder
def action_noise(spec: EnvSpec, behaviour_std: float = 0.1, target_std: float = 0.0,
                 target_clip: float = 0.5) -> Regularizer:
  """Gaussian noise on collected actions (exploration) and, clipped to ±target_clip, on the TD
  target's next action (TD3's target policy smoothing); results clipped to [−1, 1]."""
  stds = {'behaviour': behaviour_std, 'target': target_std, 'actor': 0.0}

  def perturb(state, a, key, role):
    if not stds[role]:
      return a
    noise = stds[role] * jax.random.normal(key, a.shape)
    if role == 'target':
      noise = jnp.clip(noise, -target_clip, target_clip)
    return jnp.clip(a + noise, -1.0, 1.0)

  return Regularizer('action_noise', frozenset(), lambda: (), _zero, _zero, perturb, _no_update)


@primitive('regularizer')
@builder
def entropy_bonus(spec: EnvSpec, coefficient: float = 0.0) -> Regularizer:
  """An entropy bonus in the actor loss, −c·mean H(π(·|s)), with H the entropy the signal reports
  (aux['entropy']; PPO's c_H, 0 in CleanRL's MuJoCo settings, 0.005 in flow-rl's)."""
  loss = lambda state, aux, params, inputs, key: -coefficient * jnp.mean(aux['entropy'])
  return Regularizer('entropy_bonus', frozenset({'entropy'}), lambda: (), loss, _zero,
                     lambda state, a, key, role: a, _no_update)


@primitive('regularizer')
@builder
def reference_bc(spec: EnvSpec, coefficient: float = 0.0) -> Regularizer:
  """A behaviour-cloning pull towards the actor the run started from (its --init-from policy, the
  compiler's frozen 'reference_actor'): c·mean_{b,d} (a_ref(s_b) − a_θ(s_b))_d², with both actions
  drawn without noise from one shared start, so the squared distance of a coupling, an upper
  bound on W2² (ReinFlow's "W2" BC loss, Zhang et al. 2025, ppoflow.py: x_K = 0 and the chains'
  means for kernel samplers; the mode, or one shared key, for the others). The reference side
  carries no gradient."""

  def actions(params, inp, key):
    kernel = inp.sampler.kernel
    if kernel is None:
      return draw(inp.sampler, inp.policy, params, inp.obs, key, True).action
    start = jnp.zeros(inp.obs.shape[:-1] + (spec.act_dim,))
    return sample_chain(kernel, inp.policy, params, inp.obs, key, inp.sampler.steps, False,
                        False, start)[0]

  def actor_loss(state, aux, params, inp, key):
    if not coefficient:
      return 0.0
    target = jax.lax.stop_gradient(actions(inp.reference, inp, key))
    return coefficient * jnp.mean(jnp.square(actions(params, inp, key) - target))

  return Regularizer('reference_bc', frozenset({'reference_actor'}), lambda: (), actor_loss,
                     _zero, lambda state, a, key, role: a, _no_update)
