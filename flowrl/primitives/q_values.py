"""The two ways every primitive reads a critic ensemble q(obs, act) -> [E, ...]:

  min_q(q, s, a)              Q̄(s, a) = min_e Q_e(s, a), per sample (the clipped double-Q
                              estimate of Fujimoto et al. 2018; never one member for a batch)
  min_q_action_grad(q, s, a)  ∇_a Q̄(s, a), per sample (the sum over samples separates, so one
                              backward pass gives every sample's own gradient)
"""
import jax
import jax.numpy as jnp


def min_q(q, obs, act) -> jax.Array:
  """min over the ensemble axis 0 of q(obs, act): [E, ...] -> [...]."""
  return jnp.min(q(obs, act), axis=0)


def min_q_action_grad(q, obs, act) -> jax.Array:
  """∇_a min_e Q_e(s, a) for every sample, shaped like `act`."""
  return jax.grad(lambda a: jnp.sum(min_q(q, obs, a)))(act)
