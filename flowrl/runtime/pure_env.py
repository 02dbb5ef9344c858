"""A run on a pure-JAX env (`jax:…`, `playground:…`): the envs of every seed step on the device,
inside the run's programs, and evaluation episodes run as one program too.

  keys(seeds, envs)      [S, N] env keys: env e of seed s is fold_in(fold_in(PRNGKey(s), ENV), e),
                         and its episode k starts from reset(fold_in(that key, k)) (`autoreset`)
  PureEnv.reset          keys [S, N] -> (env_state, obs [S, N, O])
  PureEnv.step           (env_state, action [S, N, A]) -> (env_state, transition {column:
                         [S, N, ...]}, next_obs [S, N, O]): flowrl's same-step autoreset, the true
                         final observation kept as the transition's next_obs
  PureEnv.evaluate       (agent state, keys [S]) -> returns [S, episodes]: deterministic episodes
                         from reset(fold_in(key_s, i)), all seeds and episodes stepping together
                         for the env's whole time limit, each episode's return summed until its
                         end

The driver saves env_state with its checkpoints, so a resumed run continues the same episodes.
"""
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flowrl.envs.jax_env import JaxEnv
from flowrl.errors import ConfigError
from flowrl.runtime.fused import jax_env_step

ENV = 0x656E76     # 'env': the env keys' stream, apart from the agent's PRNGKey(seed) splits


def keys(seeds, envs: int) -> jax.Array:
  base = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), ENV))
  per_env = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
  return jax.vmap(per_env, in_axes=(0, None))(base(jnp.asarray(seeds, jnp.int32)),
                                                 jnp.arange(envs))


class PureEnv(NamedTuple):
  env: JaxEnv
  reset: Callable
  step: Callable
  evaluate: Callable
  step_fn: Optional[Callable] = None   # `step` unjitted, for a fused block to trace
  reset_like: Any = None               # reset's (env_state, obs) as shapes, for a restore


def pure_env(env: JaxEnv, act_eval: Callable, episodes: int, seeds, envs: int) -> PureEnv:
  """The jitted reset, step (donating its env state) and evaluation of `env` for `seeds` × `envs`
  envs; act_eval is the run's batched deterministic policy (agent state, obs [S, B, O], keys [S])
  -> [S, B, A]."""
  if not env.max_episode_steps:
    raise ConfigError('a pure-JAX env needs a time limit (max_episode_steps) to be evaluated in '
                      'one program.')
  env_step, reset = jax_env_step(env)
  over = lambda fn: jax.vmap(jax.vmap(fn))

  def evaluate(agent_state, seed_keys):
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    per_episode = lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(episodes))
    episode_keys = jax.vmap(per_episode)(seed_keys)                     # [S, E]
    state, obs = over(env.reset)(episode_keys)

    def frame(carry, t):
      state, obs, alive, total = carry
      action = act_eval(agent_state, obs, fold(seed_keys, t))
      state, obs, reward, terminated, truncated = over(env.step)(
          state, jnp.clip(action, -1.0, 1.0))
      total = total + jnp.where(alive, reward, 0.0)
      return (state, obs, alive & ~(terminated | truncated), total), None

    alive = jnp.ones(obs.shape[:2], bool)
    carry = (state, obs, alive, jnp.zeros(obs.shape[:2], jnp.float32))
    return jax.lax.scan(frame, carry, jnp.arange(env.max_episode_steps))[0][3]

  return PureEnv(env, jax.jit(reset), jax.jit(env_step, donate_argnums=0), jax.jit(evaluate),
                 env_step, jax.eval_shape(reset, keys(seeds, envs)))


def eval_keys(seeds, frame: int) -> jax.Array:
  """Evaluation at `frame`: seed s's episodes fold into PRNGKey(reset_seed(s + 777, frame)), as
  the host envs' evaluation seeds its resets."""
  from flowrl.runtime.vector_env import reset_seed
  return jnp.stack([jax.random.PRNGKey(reset_seed(s + 777, frame)) for s in seeds])


def episode_columns(transitions) -> tuple:
  """(reward, done) host arrays [K, S·N] of a block's stacked transitions [K, S, N]."""
  host = jax.device_get({k: transitions[k] for k in ('reward', 'terminated', 'truncated')})
  flat = lambda x: np.asarray(x).reshape(x.shape[0], -1)
  return flat(host['reward']), flat(host['terminated'] + host['truncated']) > 0


def isaac_env(adapter, seed: int) -> PureEnv:
  """An Isaac Lab env (`flowrl.envs.isaaclab.IsaacLabAdapter`: one seed, its num_envs envs, with
  their own same-step autoreset) on the same device path: observations, actions and transitions
  stay JAX arrays on its device, and only reward and done reach the host for the episode log.
  It is not JAX, so it steps between the programs (no fused blocks); one Isaac Sim app per
  process leaves no env to evaluate on (`evaluate` is None: the training episodes are the log),
  and its GPU physics cannot be replayed, so a resumed run starts new episodes (`env` is None)."""

  def reset(_keys):
    return (), adapter.reset(seed=seed)[None]

  def step(env_state, action):
    out = adapter.step(jnp.clip(action[0], -1.0, 1.0))
    lead = lambda x: x[None]
    return env_state, {'action': action, 'reward': lead(out.reward),
                       'next_obs': lead(out.final_obs), 'terminated': lead(out.terminated),
                       'truncated': lead(out.truncated)}, lead(out.obs)

  return PureEnv(None, reset, step, None)
