"""Environments written in JAX: a small protocol, and the library's one same-step autoreset.

A `JaxEnv` is pure: `reset(key) -> (state, obs)` and `step(state, action) -> (state, obs, reward,
terminated, truncated)`, with no reset inside, so it can be stepped inside `lax.scan`, vmapped
over envs and seeds, and fused with the updates into one XLA program (`flowrl.runtime.fused`).

`autoreset(env)` adds what a learner needs around it (as gymnasium's SAME_STEP vector envs do):
  * the true final observation of an episode is kept for bootstrapping a time-limit truncation
    (`final_obs`), while `obs` is already the next episode's first;
  * the time limit `max_episode_steps` truncates;
  * episode e of an env starts from reset(fold_in(key, e)), so a run is reproducible and any
    episode can be reset again from its index alone.
Playground's own auto-reset wrapper returns to a cached first state and overwrites the final
observation; its envs are adapted to this protocol instead.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class JaxEnv(NamedTuple):
  obs_dim: int
  act_dim: int
  max_episode_steps: int     # the time limit autoreset applies (0: none)
  reset: Callable            # key -> (state, obs [O])
  step: Callable             # (state, action [A] in [−1, 1]) -> (state, obs, reward, terminated,
                             #   truncated)


class EpisodeState(NamedTuple):
  env: Any                   # the env's own state
  key: jax.Array             # the env's base key; episode e resets with fold_in(key, e)
  episode: jax.Array         # int32: episodes begun so far − 1
  t: jax.Array               # int32: steps taken in this episode


class AutoresetStep(NamedTuple):
  obs: jax.Array             # the observation to act on next (a new episode's after a done)
  final_obs: jax.Array       # the observation this step led to (store it as next_obs)
  reward: jax.Array
  terminated: jax.Array      # float32: the bootstrap mask is 1 − terminated
  truncated: jax.Array       # float32: time limit (or the env's own truncation)


def autoreset(env: JaxEnv):
  """(reset(key) -> (EpisodeState, obs), step(EpisodeState, action) -> (EpisodeState,
  AutoresetStep)): same-step autoreset around a pure env, vmappable over envs."""
  reset, advance, restart = autoreset_parts(env)
  return reset, lambda s, action: restart(*advance(s, action))


def autoreset_parts(env: JaxEnv):
  """autoreset's step in two halves, (reset, advance, restart): advance(s, action) -> (s, out,
  done) steps the env and applies the time limit; restart(s, out, done) begins the next episode
  where done. A batch of envs can run restart only when one of them is done (`batched_autoreset`):
  a reset can cost far more than a step (dm_control's cheetah settles for 200 physics steps)."""

  def reset(key):
    state, obs = env.reset(jax.random.fold_in(key, 0))
    return EpisodeState(state, key, jnp.int32(0), jnp.int32(0)), obs

  def advance(s: EpisodeState, action):
    state, obs, reward, terminated, truncated = env.step(s.env, action)
    t = s.t + 1
    if env.max_episode_steps:
      truncated = jnp.logical_or(truncated, t >= env.max_episode_steps)
    terminated = jnp.asarray(terminated, bool)
    truncated = jnp.logical_and(jnp.asarray(truncated, bool), ~terminated)
    out = AutoresetStep(obs, obs, jnp.asarray(reward, jnp.float32),
                        terminated.astype(jnp.float32), truncated.astype(jnp.float32))
    return s._replace(env=state, t=t), out, terminated | truncated

  def restart(s: EpisodeState, out: AutoresetStep, done):
    fresh_state, fresh_obs = env.reset(jax.random.fold_in(s.key, s.episode + 1))
    pick = lambda new, old: jnp.where(done, new, old)
    next_s = EpisodeState(jax.tree_util.tree_map(pick, fresh_state, s.env), s.key,
                          s.episode + done.astype(jnp.int32), jnp.where(done, 0, s.t))
    return next_s, out._replace(obs=pick(fresh_obs, out.obs))

  return reset, advance, restart


def batched_autoreset(env: JaxEnv, over):
  """autoreset over a batch of envs (`over` vmaps a per-env function over it): (reset, step), the
  same numbers, with the resets computed only on steps where some env of the batch is done."""
  reset, advance, restart = autoreset_parts(env)

  def step(s, action):
    s, out, done = over(advance)(s, action)
    return jax.lax.cond(done.any(), lambda: over(restart)(s, out, done), lambda: (s, out))

  return over(reset), step


def pendulum(max_episode_steps: int = 200) -> JaxEnv:
  """gymnasium's Pendulum-v1 in JAX (same dynamics, reward and reset distribution; actions in
  [−1, 1] rescaled to its torque box [−2, 2], as flowrl's env registry rescales): a pure env
  for tests and for fused runs without a simulator."""
  g, m, l, dt, max_speed, max_torque = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0

  def obs_of(th, thdot):
    return jnp.stack([jnp.cos(th), jnp.sin(th), thdot]).astype(jnp.float32)

  def reset(key):
    th, thdot = jax.random.uniform(key, (2,), minval=jnp.array([-jnp.pi, -1.0]),
                                   maxval=jnp.array([jnp.pi, 1.0]))
    return (th, thdot), obs_of(th, thdot)

  def step(state, action):
    th, thdot = state
    u = jnp.clip(action[0] * max_torque, -max_torque, max_torque)
    angle = ((th + jnp.pi) % (2 * jnp.pi)) - jnp.pi
    cost = angle ** 2 + 0.1 * thdot ** 2 + 0.001 * u ** 2
    thdot = jnp.clip(thdot + (3 * g / (2 * l) * jnp.sin(th) + 3.0 / (m * l ** 2) * u) * dt,
                     -max_speed, max_speed)
    th = th + thdot * dt
    return (th, thdot), obs_of(th, thdot), -cost, jnp.bool_(False), jnp.bool_(False)

  return JaxEnv(3, 1, max_episode_steps, reset, step)
