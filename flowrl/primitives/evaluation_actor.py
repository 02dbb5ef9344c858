"""An evaluation actor that is an exponential moving average of the trained actor's weights (FPO++:
Yi, Choi et al., arXiv:2602.02481, 2026; flow-rl's fpopp.py:456-464, decay 0.95 after 500
iterations). After each update burst (on-policy: one rollout's epochs × minibatches)

  θ̄ ← θ                       for the first `warmup` bursts,
  θ̄ ← d·θ̄ + (1 − d)·θ        after them,

and deterministic (evaluation) actions are drawn with θ̄. Behaviour actions, the stored
log-probs and every loss use θ, so the evaluation actor changes nothing about training.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class EvaluationActor(NamedTuple):
  params: Any              # θ̄
  bursts: jax.Array        # int32: update bursts averaged so far


def averaging_agent(agent, decay: float, warmup: int):
  """The agent with an EvaluationActor in its state (TrainState.eval_actor), averaged in its
  `settle` after the agent's own (observation statistics), and used by `act(deterministic=True)`."""
  copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)

  def init(key):
    state = agent.init(key)
    return state._replace(eval_actor=EvaluationActor(copy(state.actor.params),
                                                     jnp.zeros((), jnp.int32)))

  def act(state, obs, key, deterministic: bool = False):
    if deterministic:
      state = state._replace(actor=state.actor._replace(params=state.eval_actor.params))
    return agent.act(state, obs, key, deterministic)

  def settle(state):
    state = agent.settle(state) if agent.settle else state
    averaged = state.eval_actor
    rate = jnp.where(averaged.bursts < warmup, 1.0, 1.0 - decay)   # the weight of θ
    params = optax.incremental_update(state.actor.params, averaged.params, rate)
    return state._replace(eval_actor=EvaluationActor(params, averaged.bursts + 1))

  return agent._replace(init=init, act=act, settle=settle)
