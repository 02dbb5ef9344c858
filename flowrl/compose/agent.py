"""The compiler: from a Method and the environment's sizes, one agent with
  init(key) -> TrainState
  act(state, obs, key, deterministic) -> action            (collect: best_of + behaviour noise;
                                                            evaluate: eval_best_of, no noise)
  collect(state, obs, key) -> (action, extras)             (the behaviour action and the columns
                                                            stored beside it, `extras` shapes)
  update(state, batch, key) -> (state, writes, metrics)   (batch: {column: [B, ...]}; writes:
                                                            the signal's columns, written back)
  periodic(state, obs, key) -> state                       (only where the regularizer has a
                                                            `Periodic` step, every periodic_every
                                                            updates: DACER's entropy estimate)
All are pure; the training loop jits them (update inside one `lax.scan` of updates).

One update = critic step every call; actor step, regularizer (temperature) step, the signal's own
state (DPMD's frozen particle policy) and target EMAs every `actor_every` calls via `lax.cond` on
the step counter in the state, never Python branching. Samplers get the critic (Langevin on Q).
"""
import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from flowrl.compose.method import (Method, actor_optimizer, adapt_to_kl, critic_optimizer,
                                  joint_clip, validate)
from flowrl.control_flow import cond_or_pass
from flowrl.primitives import evaluation_actor, normalization
from flowrl.primitives.base import ActorInputs, EnvSpec
from flowrl.primitives.critic import Batch
from flowrl.primitives.sampler import best_of_n, draw
from flowrl.primitives.transition_kernel import chain_params


class ActorState(NamedTuple):
  params: Any
  target_params: Any
  opt_state: Any


class CriticState(NamedTuple):
  params: Any
  target_params: Any
  opt_state: Any
  extra: Any               # critic-owned state (DSAC-T's running std)


class TrainState(NamedTuple):
  step: jax.Array          # int32 count of updates
  actor: ActorState
  critic: CriticState
  reg: Any                 # regularizer-owned state (temperature)
  signal: Any = ()         # signal-owned state (DPMD's frozen particle policy)
  obs_norm: Any = ()       # running observation statistics, where the method normalizes
  reference: Any = ()      # the frozen actor the run started from (its --init-from policy, else
                           #   its initialization), where a primitive needs 'reference_actor'
  eval_actor: Any = ()     # the evaluation actor, where Method.eval_ema > 0 (evaluation_actor)


class Agent(NamedTuple):
  method: Method
  spec: EnvSpec
  policy: Any
  sampler: Any
  signal: Any
  regularizer: Any
  critic: Any
  init: Callable
  act: Callable
  update: Callable
  periodic: Optional[Callable] = None
  periodic_every: int = 0
  columns: tuple = ()      # transition columns beyond Batch's, each starting as the taken action
  collect: Optional[Callable] = None   # (state, obs, key) -> (action, extras {name: [B, ...]})
  extras: Any = None       # {name: per-row shape} of what `collect` returns beside the action
  value: Optional[Callable] = None     # (state, obs) -> V(obs) [B], where the critic provides 'v'
  observe: Optional[Callable] = None   # (state, obs [N, O]) -> state: accumulate stored obs
  settle: Optional[Callable] = None    # (state) -> state: merge them, after an update burst


def _scalars(aux, columns):
  return {k: jnp.mean(v) for k, v in aux.items()
          if v is not None and k not in ('log_prob', 'actions') + columns}


def _learning_steps(method: Method, policy, sampler, signal, reg, critic, actor_opt, critic_opt):
  """The critic step, the actor step (with the regularizer's, the signal state's and the target
  EMAs) and the sampling of many actions per state that both the actor step and a periodic
  regularizer step use."""

  def critic_step(state: TrainState, batch: Batch, key):
    next_key, noise_key, loss_key = jax.random.split(key, 3)
    if critic.next_action:
      source = state.actor.target_params if method.target_actor else state.actor.params
      q_next = lambda o, a: critic.values(state.critic.target_params, o, a)
      nxt = draw(sampler, policy, source, batch.next_obs, next_key, q=q_next)
      next_action = reg.perturb(state.reg, nxt.action, noise_key, 'target')
      bonus = reg.target_bonus(state.reg, nxt.log_prob) if nxt.log_prob is not None else 0.0
    else:                              # IQL: V(s′); BC: no critic
      next_action, bonus = jnp.zeros_like(batch.action), 0.0
    batch = batch._replace(reward=method.reward_scale * batch.reward)
    discount = method.gamma * (1.0 - batch.terminated)
    c = state.critic
    grads, (extra, metrics) = jax.grad(critic.loss, has_aux=True)(
        c.params, c.target_params, c.extra, batch, jax.lax.stop_gradient(next_action),
        jax.lax.stop_gradient(bonus), discount, loss_key)
    updates, opt_state = critic_opt.update(grads, c.opt_state, c.params)
    return c._replace(params=optax.apply_updates(c.params, updates), opt_state=opt_state,
                      extra=extra), metrics

  def sample_many_actions(params, obs, q, perturb, key, n):
    """[B, n, A] actions of the policy with `params` on each of the B states, as collected in
    training (with the regularizer's noise). One chain over the B·n repeated states: distributed
    as n vmapped chains, and 0.3 s less to compile for DACER's 200 samples per state."""
    s_key, n_key = jax.random.split(key)
    many = jnp.repeat(obs, n, axis=0)
    actions = perturb(draw(sampler, policy, params, many, s_key, q=q).action, n_key)
    return actions.reshape(obs.shape[0], n, -1)

  def actor_step(state: TrainState, batch: Batch, columns, key):
    """Actor, regularizer and target-network step; returns the new parts and the signal's
    columns to write back."""
    signal_key, reg_key, reg_loss_key = jax.random.split(key, 3)
    a, c = state.actor, state.critic
    q = lambda o, act: critic.values(c.params, o, act)
    perturb = lambda act, k: reg.perturb(state.reg, act, k, 'actor')
    temperature = reg.temperature(state.reg) if reg.temperature else None
    v = critic.state_values and (lambda o: critic.state_values(c.params, o))
    inputs = ActorInputs(batch.obs, batch.action, columns, policy, sampler, q, perturb,
                         state.signal, temperature, state.reference, v)

    def loss(params):
      signal_loss, aux = signal.loss(params, inputs, signal_key)
      reg_loss = reg.actor_loss(state.reg, aux, params, inputs, reg_loss_key)
      return signal_loss + reg_loss, (signal_loss, aux)

    (_, (signal_loss, aux)), grads = jax.value_and_grad(loss, has_aux=True)(a.params)
    updates, opt_state = actor_opt.update(grads, a.opt_state, a.params)
    params = optax.apply_updates(a.params, updates)
    actor = ActorState(params, optax.incremental_update(params, a.target_params, method.tau),
                       opt_state)
    critic_state = c._replace(
        target_params=optax.incremental_update(c.params, c.target_params, method.tau))

    sample_many = functools.partial(sample_many_actions, params, batch.obs, q, perturb)
    reg_state, reg_metrics = reg.update(state.reg, state.step, aux, sample_many, reg_key)
    metrics = {'actor/loss': signal_loss,
               **{f'actor/{k}': v for k, v in _scalars(aux, signal.columns).items()},
               **{f'reg/{k}': jnp.asarray(v, jnp.float32) for k, v in reg_metrics.items()}}
    writes = {c: aux[c] for c in signal.columns}
    signal_state = (signal.refresh(state.signal, params, state.step // method.actor_every)
                    if signal.refresh else state.signal)
    return actor, critic_state, reg_state, signal_state, writes, metrics

  return critic_step, actor_step, sample_many_actions


def _onpolicy_update(method: Method, policy, sampler, signal, reg, critic, actor_opt, critic_opt,
                     clip):
  """One minibatch step of an on-policy method: the critic's value loss on the rollout's returns
  and the signal's loss (plus the regularizer's) on its actions, each with its own optimizer after
  `clip` (`joint_clip`: one global-norm clip over both gradients, or none)."""

  def update(state: TrainState, columns, key):
    c, a = state.critic, state.actor
    (_, critic_metrics), c_grads = jax.value_and_grad(critic.loss, has_aux=True)(c.params, columns)
    signal_key, reg_key = jax.random.split(key)
    q = lambda o, act: critic.values(c.params, o, act)
    inputs = ActorInputs(columns['obs'], columns['action'], columns, policy, sampler, q,
                         lambda act, k: act, state.signal, reference=state.reference)

    def loss(params):
      signal_loss, aux = signal.loss(params, inputs, signal_key)
      reg_loss = reg.actor_loss(state.reg, aux, params, inputs, reg_key)
      return signal_loss + reg_loss, (signal_loss, aux)

    (_, (signal_loss, aux)), a_grads = jax.value_and_grad(loss, has_aux=True)(a.params)
    a_grads, c_grads = clip((a_grads, c_grads))
    updates, opt_state = critic_opt.update(c_grads, c.opt_state, c.params)
    critic_state = c._replace(params=optax.apply_updates(c.params, updates),
                              opt_state=adapt_to_kl(opt_state, aux['approx_kl']))
    updates, opt_state = actor_opt.update(a_grads, a.opt_state, a.params)
    actor = a._replace(params=optax.apply_updates(a.params, updates),
                       opt_state=adapt_to_kl(opt_state, aux['approx_kl']))
    metrics = {**{f'critic/{k}': v for k, v in critic_metrics.items()},
               'actor/loss': signal_loss, **{f'actor/{k}': v for k, v in _scalars(aux, ()).items()},
               'actor_updated': jnp.float32(1.0)}
    return state._replace(step=state.step + 1, actor=actor, critic=critic_state), {}, metrics

  return update


def compile_method(method: Method, spec: EnvSpec, source=None) -> Agent:
  """`source`: the data source's choice (`flowrl.data.SourceChoice`; the replay when None)."""
  from flowrl.data.replay import REPLAY
  policy, critic, reg = method.policy(spec), method.critic(spec), method.regularizer(spec)
  sampler, signal = method.sampler, method.signal
  validate(policy, sampler, signal, reg, critic, spec, source or REPLAY)
  actor_opt, critic_opt = actor_optimizer(), critic_optimizer()
  onpolicy = 'v' in critic.provides
  clip = joint_clip(onpolicy)
  needs_reference = 'reference_actor' in signal.requires | reg.requires | sampler.requires
  acting = lambda s: chain_params(sampler.kernel, s.actor.params, s.reference, s.step)

  def init(key) -> TrainState:
    a_key, c_key = jax.random.split(key)
    a_params, c_params = policy.init(a_key), critic.init(c_key)
    copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)  # targets own their buffers
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        actor=ActorState(a_params, copy(a_params), actor_opt.init(a_params)),
        critic=CriticState(c_params, copy(c_params), critic_opt.init(c_params),
                           critic.init_extra()),
        reg=reg.init(),
        signal=signal.init(copy(a_params)) if signal.init else (),
        reference=copy(a_params) if needs_reference else ())

  def act(state: TrainState, obs, key, deterministic: bool = False):
    sample_key, noise_key = jax.random.split(key)
    n = sampler.eval_best_of if deterministic else sampler.best_of
    q = lambda o, a: critic.values(state.critic.params, o, a)
    one = lambda o, k: draw(sampler, policy, acting(state), o, k, deterministic and n == 1,
                            q).action
    if n > 1:
      action = best_of_n(one, q, obs, sample_key, n, selection=sampler.selection)
    else:
      action = one(obs, sample_key)
    return action if deterministic else reg.perturb(state.reg, action, noise_key, 'behaviour')

  critic_step, actor_step, sample_many_actions = _learning_steps(
      method, policy, sampler, signal, reg, critic, actor_opt, critic_opt)

  def periodic(state: TrainState, obs, key) -> TrainState:
    q = lambda o, act: critic.values(state.critic.params, o, act)
    perturb = lambda act, k: reg.perturb(state.reg, act, k, 'actor')
    sample_many = functools.partial(sample_many_actions, state.actor.params, obs, q, perturb)
    return state._replace(reg=reg.periodic.run(state.reg, sample_many, key))

  def offpolicy_update(state: TrainState, columns, key):
    batch = Batch(*(columns[f] for f in Batch._fields))
    critic_key, actor_key = jax.random.split(key)
    critic_state, critic_metrics = critic_step(state, batch, critic_key)
    state = state._replace(critic=critic_state)
    do_actor = state.step % method.actor_every == 0
    unchanged = lambda s, b, c, k: (s.actor, s.critic, s.reg, s.signal,
                                    {n: c[n] for n in signal.columns})   # columns as read
    actor, critic_state, reg_state, signal_state, writes, actor_metrics = cond_or_pass(
        do_actor, actor_step, unchanged, state, batch, columns, actor_key)
    metrics = {**{f'critic/{k}': v for k, v in critic_metrics.items()}, **actor_metrics,
               'actor_updated': do_actor.astype(jnp.float32)}
    new_state = state._replace(step=state.step + 1, actor=actor, critic=critic_state,
                               reg=reg_state, signal=signal_state)
    return new_state, writes, metrics

  def collect(state: TrainState, obs, key):
    """The behaviour action and what the data source stores beside it: nothing off-policy; on
    policy, what the signal re-scores the action with (`Signal.collect`: its log-prob, a chain
    and its step log-probs, FPO's (t, ε, ℓ)) and V(obs) at collection."""
    if not onpolicy:
      return act(state, obs, key, False), {}
    action, extras = signal.collect(policy, sampler, acting(state), obs, key)
    return action, {**extras, 'value': value(state, obs)}

  def value(state: TrainState, obs):
    return critic.values(state.critic.params, obs, None)[0]

  update = (_onpolicy_update(method, policy, sampler, signal, reg, critic, actor_opt, critic_opt,
                              clip) if onpolicy else offpolicy_update)
  extras = {}
  if onpolicy:       # per-row shapes of what collect stores, from one traced observation
    one = jax.eval_shape(lambda k: collect(init(k), jnp.zeros((1, spec.obs_dim)), k),
                         jax.random.PRNGKey(0))[1]
    extras = {name: tuple(v.shape[1:]) for name, v in one.items()}
  agent = Agent(method, spec, policy, sampler, signal, reg, critic, init, act, update,
                periodic if reg.periodic else None, reg.periodic.every if reg.periodic else 0,
                signal.columns, collect, extras, value if onpolicy else None)
  agent = normalization.normalizing_agent(agent) if method.normalize_obs else agent
  return (evaluation_actor.averaging_agent(agent, method.eval_ema, method.eval_ema_warmup)
          if method.eval_ema else agent)
