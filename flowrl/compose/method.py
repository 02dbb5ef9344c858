"""A method = one primitive per axis plus the few training-structure settings, and the check that
the choices fit together (run before anything is traced)."""
from typing import Any, Callable, NamedTuple, Optional

import gin
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
    'differentiable': ('sampler', 'reparameterized, differentiable samples'),
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
          decay_steps: int, eps: float, decay: str, name: str):
  """Adam (optax.adam, ε = `eps`), optionally after global-norm clipping, with the learning rate
  decayed from `learning_rate` to `final_learning_rate` over `decay_steps` optimizer steps,
  linearly (optax.linear_schedule) or on a cosine (optax.cosine_decay_schedule)."""
  if decay not in DECAYS:
    raise ConfigError(f'{name}.decay={decay!r} is not one of {DECAYS}.')
  if not eps > 0:
    raise ConfigError(f'{name}.eps={eps!r} must be positive.')
  lr = learning_rate
  if final_learning_rate is not None:
    lr = (optax.linear_schedule(learning_rate, final_learning_rate, decay_steps)
          if decay == 'linear' else optax.cosine_decay_schedule(
              learning_rate, decay_steps, alpha=final_learning_rate / learning_rate))
  adam = optax.adam(lr, eps=eps)
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam) if max_grad_norm else adam


@gin.configurable(module='flowrl')
def actor_optimizer(learning_rate: float = 3e-4, max_grad_norm: float = 0.0,
                    final_learning_rate: Optional[float] = None, decay_steps: int = 1_000_000,
                    eps: float = 1e-8, decay: str = 'linear'):
  """Adam for the actor (ε 1e-8, optax's and flow-rl's default); optional global-norm clipping
  and a linear or cosine learning-rate decay to `final_learning_rate`."""
  return _adam(learning_rate, max_grad_norm, final_learning_rate, decay_steps, eps, decay,
               'actor_optimizer')


@gin.configurable(module='flowrl')
def critic_optimizer(learning_rate: float = 3e-4, max_grad_norm: float = 0.0,
                     final_learning_rate: Optional[float] = None, decay_steps: int = 1_000_000,
                     eps: float = 1e-8, decay: str = 'linear'):
  """Adam for the critic (ε 1e-8); optional global-norm clipping and a linear or cosine
  learning-rate decay to `final_learning_rate`."""
  return _adam(learning_rate, max_grad_norm, final_learning_rate, decay_steps, eps, decay,
               'critic_optimizer')


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
