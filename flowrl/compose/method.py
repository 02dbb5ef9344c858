"""A method = one primitive per axis plus the few training-structure settings, and the check that
the choices fit together (run before anything is traced)."""
from typing import Any, Callable, NamedTuple, Optional

import gin

from flowrl.errors import ConfigError
from flowrl.primitives import REGISTRY
from flowrl.primitives.base import EnvSpec
from flowrl.optimizers import (actor_optimizer, adapt_to_kl, critic_optimizer,  # noqa: F401
                               joint_clip)

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
    'one_step': ('policy', 'a one-step generator μ(s, z) beside a flow (FQL)'),
    'fits_actions': ('policy', "a loss that fits given env actions (likelihood or regression)"),
    'differentiable': ('sampler', 'reparameterized, differentiable samples'),
    'kernel': ('sampler', 'Gaussian transition kernels with a likelihood at every step (ddpm '
                          'and ddim: with sampler.min_logprob_std > 0)'),
    'logprob': ('sampler', 'the log-probability of its samples'),
    'weight_temperature': ('regularizer', 'an auto-tuned temperature for its weights'),
    'sample_log_prob': ('signal', "the log-probability of the policy's own samples in its aux"),
    'weight_kl': ('signal', 'the KL of its sample weights to uniform in its aux'),
    'entropy': ('signal', "the policy's entropy in its aux"),
    'split_chain': ('signal', 'scoring only the last K_ft steps of chains a frozen base began'),
    'reference_actor': ('compiler', 'a frozen copy of the actor the run started from'),
    'q': ('critic', 'action values Q(s, a)'),
    'v': ('critic', 'state values V(s)'),
    'expectile_v': ('critic', "a state value V(s) learned beside Q (IQL's expectile value)"),
    'transitions': ('source', 'stored transitions (s, a, r, s′) to bootstrap a Q target from'),
    'rollout': ('source', 'on-policy rollouts with GAE advantages and the log-probs at collection'),
}


class Method(NamedTuple):
  policy: Callable          # EnvSpec -> Policy
  sampler: Any              # Sampler
  signal: Any               # Signal
  regularizer: Callable     # EnvSpec -> Regularizer
  critic: Callable          # EnvSpec -> Critic
  actor_every: int = 1      # actor, temperature, target updates every k-th update (TD3, DACER: 2)
  target_actor: bool = False  # TD target's a' from an EMA copy of the actor (TD3, DIPO)
  tau: float = 0.005        # EMA rate of target networks
  gamma: float = 0.99
  reward_scale: float = 1.0
  name: str = 'method'
  normalize_obs: bool = False  # running mean/std of observations (PPO on MuJoCo)
  eval_ema: float = 0.0     # > 0: evaluate with an EMA of the actor, per burst (FPO++: 0.95)
  eval_ema_warmup: int = 0  # bursts before it averages (it copies the actor until then)


@gin.configurable('Method', module='flowrl')
def method(policy=gin.REQUIRED, sampler=gin.REQUIRED, signal=gin.REQUIRED,
           regularizer=gin.REQUIRED, critic=gin.REQUIRED, actor_every: int = 1,
           target_actor: bool = False, tau: float = 0.005, gamma: float = 0.99,
           reward_scale: float = 1.0, name: str = 'method', normalize_obs: bool = False,
           eval_ema: float = 0.0, eval_ema_warmup: int = 0) -> Method:
  """One choice per axis of the taxonomy plus training-structure settings (see Method)."""
  return Method(policy, sampler, signal, regularizer, critic, actor_every, target_actor, tau,
                gamma, reward_scale, name, normalize_obs, eval_ema, eval_ema_warmup)


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
      if owner_axis == 'compiler':     # kept by the compiler for whoever asks
        continue
      owner = owners[owner_axis]
      if cap not in owner.provides:
        alternatives = ', '.join(_providers(owner_axis, cap, spec)) or 'none'
        raise ConfigError(
            f"{axis} '{prim.name}' needs {meaning} ('{cap}'), which {owner_axis} "
            f"'{owner.name}' does not provide; {owner_axis} choices that do: {alternatives}.")
