"""The actor's and the critic's optimizers: Adam (optax), optionally after global-norm clipping,
with AdamW's decoupled weight decay, a linear or cosine learning-rate decay, or the adaptive-KL
learning rate of on-policy methods (a hyperparameter in the optimizer state via
`optax.inject_hyperparams`, moved by `adapt_to_kl` after each minibatch), and the one global-norm
clip over both networks' gradients of the single-optimizer PPO codes (`joint_clip`)."""
from typing import Optional

import gin
import jax.numpy as jnp
import optax

from flowrl.errors import ConfigError

DECAYS = ('linear', 'cosine')


def _adam(learning_rate: float, max_grad_norm: float, final_learning_rate: Optional[float],
          decay_steps: int, eps: float, decay: str, name: str, weight_decay: float = 0.0,
          kl_target: Optional[float] = None, b2: float = 0.999):
  """Adam (optax.adam, ε = `eps`, second-moment decay `b2`; optax.adamw with `weight_decay`),
  optionally after global-norm clipping, with the learning rate decayed from `learning_rate` to
  `final_learning_rate` over `decay_steps` optimizer steps, linearly (optax.linear_schedule) or
  on a cosine (optax.cosine_decay_schedule), or adapted to a KL target (`kl_target`: the
  learning rate is a hyperparameter in the optimizer state, optax.inject_hyperparams, moved by
  `adapt_to_kl`)."""
  if decay not in DECAYS:
    raise ConfigError(f'{name}.decay={decay!r} is not one of {DECAYS}.')
  if not eps > 0:
    raise ConfigError(f'{name}.eps={eps!r} must be positive.')
  if kl_target is not None and final_learning_rate is not None:
    raise ConfigError(f'{name}: kl_target and final_learning_rate both set the learning rate; '
                      f'bind one of them.')

  def make(lr):
    adam = (optax.adamw(lr, b2=b2, eps=eps, weight_decay=weight_decay) if weight_decay
            else optax.adam(lr, b2=b2, eps=eps))
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
                    kl_target: Optional[float] = None, b2: float = 0.999):
  """Adam for the actor (ε 1e-8, optax's and flow-rl's default); optional global-norm clipping,
  decoupled weight decay (AdamW), and a linear or cosine learning-rate decay to
  `final_learning_rate` or an adaptive-KL learning rate (`kl_target`, on-policy)."""
  return _adam(learning_rate, max_grad_norm, final_learning_rate, decay_steps, eps, decay,
               'actor_optimizer', weight_decay, kl_target, b2)


@gin.configurable(module='flowrl')
def critic_optimizer(learning_rate: float = 3e-4, max_grad_norm: float = 0.0,
                     final_learning_rate: Optional[float] = None, decay_steps: int = 1_000_000,
                     eps: float = 1e-8, decay: str = 'linear', weight_decay: float = 0.0,
                     kl_target: Optional[float] = None, b2: float = 0.999):
  """Adam for the critic (ε 1e-8); optional global-norm clipping, AdamW's weight decay, and a
  linear or cosine learning-rate decay to `final_learning_rate` or an adaptive-KL learning rate
  (`kl_target`: moved by the actor's approximate KL, on-policy)."""
  return _adam(learning_rate, max_grad_norm, final_learning_rate, decay_steps, eps, decay,
               'critic_optimizer', weight_decay, kl_target, b2)


@gin.configurable(module='flowrl')
def joint_clip(onpolicy: bool, max_grad_norm: float = 0.0):
  """(actor grads, critic grads) -> both scaled by min(1, max_grad_norm / ‖(g_actor, g_critic)‖₂):
  the one `clip_grad_norm_` over every parameter of the PPO codes that step one optimizer on the
  joint loss pg − c_H·H + c_V·L_V (CleanRL's ppo_continuous_action.py, Stable-Baselines3's PPO).
  Adam is per parameter, so one Adam over both networks is two Adams with the same settings; the
  clip is what couples them: when it engages, the actor's step shrinks by the factor the critic's
  gradient (scaled by its value coefficient, usually the larger) sets. Each network's own
  `max_grad_norm` then applies to its part. 0: off. On-policy minibatch updates only, where the
  actor and the critic step on the same minibatch; `onpolicy` is the method's paradigm."""
  if not max_grad_norm >= 0:
    raise ConfigError(f'joint_clip.max_grad_norm={max_grad_norm!r} must be 0 (off) or positive.')
  if max_grad_norm and not onpolicy:
    raise ConfigError('joint_clip.max_grad_norm clips the actor and the critic of one on-policy '
                      'minibatch together, but this method updates them off-policy in separate '
                      'steps: bind actor_optimizer.max_grad_norm and '
                      'critic_optimizer.max_grad_norm instead.')
  if not max_grad_norm:
    return lambda grads: grads
  clip = optax.clip_by_global_norm(max_grad_norm)
  return lambda grads: clip.update(grads, clip.init(grads))[0]
