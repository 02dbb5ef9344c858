"""Evaluation: deterministic episodes of every seed's policy, the seeds' envs stepping together."""
import jax
import jax.numpy as jnp
import numpy as np


_fold_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))   # compiled once per process


def evaluate(act_eval, state, envs, episodes: int, seeds) -> np.ndarray:
  """Returns [S, episodes] of the jitted deterministic act, seed j's episode i on its own env reset
  with seeds[j] + i; the S envs step together and each stops at its own episode end."""
  returns = np.zeros((len(envs), episodes))
  for i in range(episodes):
    obs = np.stack([env.reset(seed=s + i)[0] for env, s in zip(envs, seeds)])
    keys = jnp.stack([jax.random.PRNGKey(s + i) for s in seeds])
    done, t = np.zeros(len(envs), bool), 0
    while not done.all():
      actions = np.asarray(act_eval(state, obs[:, None], _fold_keys(keys, t)))[:, 0]
      for j in np.flatnonzero(~done):
        obs[j], r, term, trunc, _ = envs[j].step(np.clip(actions[j], -1.0, 1.0))
        returns[j, i] += r
        done[j] = term or trunc
      t += 1
  return returns
