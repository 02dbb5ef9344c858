"""A method = one primitive per axis plus the few training-structure settings, and the check that
the choices fit together (run before anything is traced)."""
from typing import Any, Callable, NamedTuple, Optional

import gin
import jax.numpy as jnp
import optax

from flowrl.errors import ConfigError
from flowrl.primitives import REGISTRY
from flowrl.primitives.base import EnvSpec

# Which axis is expected to provide each capability, and what it means in an error message.
CAPABILITIES = {
    'distribution': ('policy', 'a distribution it can sample directly'),
    'exact_logprob': ('policy', 'an exact log-probability'),
    'deterministic': ('policy', 'a deterministic action'),
    'chain': ('policy', 'a denoising/flow chain with its own regression loss'),
    'vp_path': ('policy', 'a variance-preserving diffusion path'),
    'score': ('policy', 'a score (a noise estimate, hence ∇ log p)'),
    'velocity': ('policy', 'a velocity field'),
    'noise_head': ('policy', 'a learned noise std σ_φ(s, x_t, t)'),
    'coupled': ('policy', "a coupled flow's doubled action (z, y)"),
    'differentiable': ('sampler', 'reparameterized, differentiable samples'),
    'kernel': ('sampler', 'Gaussian transition kernels with a likelihood at every step (ddpm '
                          'and ddim: with sampler.min_logprob_std > 0)'),
    'logprob': ('sampler', 'the log-probability of its samples'),
    'weight_temperature': ('regularizer', 'an auto-tuned temperature for its weights'),
    'sample_log_prob': ('signal', "the log-probability of the policy's own samples in its aux"),
    'weight_kl': ('signal', 'the KL of its sample weights to uniform in its aux'),
    'entropy': ('signal', "the policy's entropy in its aux"),
    'q': ('critic', 'action values Q(s, a)'),
    'v': ('critic', 'state values V(s)'),
    'transitions': ('source', 'stored transitions (s, a, r, s′) to bootstrap a Q target from'),
    'rollout': ('source', 'on-policy rollouts with GAE advantages and the log-probs at collection'),
}


DECAYS = ('linear', 'cosine')


def _adam(learning_rate: float, max_grad_norm: float, final_learning_rate: Optional[float],
          decay_steps: int, eps: float, decay: str, name: str, weight_decay: float = 0.0,
          kl_target: Optional[float] = None):
  """Adam (optax.adam, ε = `eps`; optax.adamw with `weight_decay`), optionally after global-norm
  clipping, with the learning rate decayed from `learning_rate` to `final_learning_rate` over
  `decay_steps` optimizer steps, linearly (optax.linear_schedule) or on a cosine
  (optax.cosine_decay_schedule), or adapted to a KL target (`kl_target`: the learning rate is a
  hyperparameter in the optimizer state, optax.inject_hyperparams, moved by `adapt_to_kl`)."""
  if decay not in DECAYS:
    raise ConfigError(f'{name}.decay={decay!r} is not one of {DECAYS}.')
  if not eps > 0:
    raise ConfigError(f'{name}.eps={eps!r} must be positive.')
  if kl_target is not None and final_learning_rate is not None:
    raise ConfigError(f'{name}: kl_target and final_learning_rate both set the learning rate; '
                      f'bind one of them.')

  def make(lr):
    adam = (optax.adamw(lr, eps=eps, weight_decay=weight_decay) if weight_decay
            else optax.adam(lr, eps=eps))
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam) if max_grad_norm else adam

  if kl_target is not None:
    return optax.inject_hyperparams(lambda learning_rate, kl_target: make(learning_rate))(
        learning_rate=learning_rate, kl_target=kl_target)
  lr = learning_rate
  if final_learning_rate is not None:
    lr = (optax.linear_schedule(learning_rate, final_learning_rate, decay_steps)
          if decay == 'linear' else optax.cosine_decay_schedule(
              learning_rate, decay_steps, alpha=final_learning_rate / learning_rate))
  return make(lr)


def adapt_to_kl(opt_state, approx_kl, low: float = 1e-5, high: float = 1e-2):
  """The adaptive-KL learning rate of rsl_rl and GenPO (Ding et al. 2025, genpo.py): lr ← lr/1.5
  when the approximate KL exceeds 2·target, lr ← 1.5·lr when it is under target/2, kept in
  [low, high]; applied after each minibatch, so it steers the next. The state is left as is where
  the optimizer has no `kl_target`."""
  hyper = getattr(opt_state, 'hyperparams', None)
  if not hyper or 'kl_target' not in hyper:
    return opt_state
  lr, target = hyper['learning_rate'], hyper['kl_target']
  lr = jnp.where(approx_kl > 2.0 * target, jnp.maximum(low, lr / 1.5),
                 jnp.where(approx_kl < 0.5 * target, jnp.minimum(high, lr * 1.5), lr))
  return opt_state._replace(hyperparams={**hyper, 'learning_rate': lr})


@gin.configurable(module='flowrl')
def actor_optimizer(learning_rate: float = 3e-4, max_grad_norm: float = 0.0,
                    final_learning_rate: Optional[float] = None, decay_steps: int = 1_000_000,
                    eps: float = 1e-8, decay: str = 'linear', weight_decay: float = 0.0,
                    kl_target: Optional[float] = None):
  """Adam for the actor (ε 1e-8, optax's and flow-rl's default); optional global-norm clipping,
  decoupled weight decay (AdamW), and a linear or cosine learning-rate decay to
  `final_learning_rate` or an adaptive-KL learning rate (`kl_target`, on-policy)."""
  return _adam(learning_rate, max_grad_norm, final_learning_rate, decay_steps, eps, decay,
               'actor_optimizer', weight_decay, kl_target)


@gin.configurable(module='flowrl')
def critic_optimizer(learning_rate: float = 3e-4, max_grad_norm: float = 0.0,
                     final_learning_rate: Optional[float] = None, decay_steps: int = 1_000_000,
                     eps: float = 1e-8, decay: str = 'linear', weight_decay: float = 0.0,
                     kl_target: Optional[float] = None):
  """Adam for the critic (ε 1e-8); optional global-norm clipping, AdamW's weight decay, and a
  linear or cosine learning-rate decay to `final_learning_rate` or an adaptive-KL learning rate
  (`kl_target`: moved by the actor's approximate KL, on-policy)."""
  return _adam(learning_rate, max_grad_norm, final_learning_rate, decay_steps, eps, decay,
               'critic_optimizer', weight_decay, kl_target)


class Method(NamedTuple):
  policy: Callable          # EnvSpec -> Policy
  sampler: Any              # Sampler
  signal: Any               # Signal
  regularizer: Callable     # EnvSpec -> Regularizer
  critic: Callable          # EnvSpec -> Critic
  actor_every: int = 1      # actor, temperature and target updates every k-th update (TD3, DACER: 2)
  target_actor: bool = False  # TD target's a' from an EMA copy of the actor (TD3, DIPO)
  tau: float = 0.005        # EMA rate of target networks
  gamma: float = 0.99
  reward_scale: float = 1.0
  name: str = 'method'
  normalize_obs: bool = False  # running mean/std of observations (PPO on MuJoCo)


@gin.configurable('Method', module='flowrl')
def method(policy=gin.REQUIRED, sampler=gin.REQUIRED, signal=gin.REQUIRED,
           regularizer=gin.REQUIRED, critic=gin.REQUIRED, actor_every: int = 1,
           target_actor: bool = False, tau: float = 0.005, gamma: float = 0.99,
           reward_scale: float = 1.0, name: str = 'method', normalize_obs: bool = False) -> Method:
  """One choice per axis of the taxonomy plus training-structure settings (see Method)."""
  return Method(policy, sampler, signal, regularizer, critic, actor_every, target_actor, tau,
                gamma, reward_scale, name, normalize_obs)


def _providers(axis: str, cap: str, spec: EnvSpec):
  if axis == 'source':
    from flowrl.data import SOURCES
    return [f'train.source = @{name}()' for name, provides in SOURCES.items() if cap in provides]
  names = []
  for name, make in REGISTRY[axis].items():
    try:
      prim = make()(spec) if axis in ('policy', 'regularizer', 'critic') else make()
    except Exception:  # a primitive that cannot build with its defaults is not a suggestion
      continue
    if cap in prim.provides:
      names.append(name)
  return names


def validate(policy, sampler, signal, regularizer, critic, spec: EnvSpec, source) -> None:
  """Raise ConfigError in one sentence if an axis requires what another does not provide.
  `source` is the data source's choice (`flowrl.compose.step.SourceChoice`: name, provides)."""
  owners = {'policy': policy, 'sampler': sampler, 'regularizer': regularizer, 'signal': signal,
            'critic': critic, 'source': source}
  for axis, prim in (('sampler', sampler), ('signal', signal), ('regularizer', regularizer),
                     ('critic', critic)):
    for cap in sorted(prim.requires):
      owner_axis, meaning = CAPABILITIES[cap]
      owner = owners[owner_axis]
      if cap not in owner.provides:
        alternatives = ', '.join(_providers(owner_axis, cap, spec)) or 'none'
        raise ConfigError(
            f"{axis} '{prim.name}' needs {meaning} ('{cap}'), which {owner_axis} "
            f"'{owner.name}' does not provide; {owner_axis} choices that do: {alternatives}.")
