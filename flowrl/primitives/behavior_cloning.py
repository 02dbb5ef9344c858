"""Behaviour cloning on the data's own actions, as a regularizer: the whole actor loss of BC, and
the anchor that offline methods add to their Q term (Diffusion-QL: L = L_bc + η·L_q, Wang et al.
2023; TD3+BC, Fujimoto & Gu 2021).

  c·mean_b ℓ(s_b, a_b)  with ℓ the policy's own fit:
    a chain policy (diffusion, flow): its denoising / flow-matching loss `fit_loss` on the data
      action (Ho et al. 2020; Lipman et al. 2023), on the policy's training noise grid;
    a policy with an exact likelihood: −log π(a_b | s_b) (maximum likelihood);
    a deterministic policy: mean_d (μ(s_b) − a_b)_d² (TD3+BC).
"""
import jax.numpy as jnp

from flowrl.primitives.base import EnvSpec, Regularizer, builder, primitive


def fit_to_actions(policy, params, obs, actions, key):
  """Per-sample loss [B] of fitting `policy` to `actions` at `obs`, by the policy's kind."""
  if policy.fit_loss is not None:
    return policy.fit_loss(params, obs, actions, key)
  dist, mode = policy.distribution(params, obs)
  if 'exact_logprob' in policy.provides:
    return -dist.log_prob(actions)
  return jnp.mean(jnp.square(mode - actions), axis=-1)


@primitive('regularizer')
@builder
def behavior_cloning(spec: EnvSpec, coefficient: float = 1.0) -> Regularizer:
  """Behaviour cloning on the batch's actions, c·mean ℓ(s, a): the policy's own fit loss (chain
  policies: denoising / flow matching), −log π(a|s) (exact likelihoods) or the squared error of
  a deterministic action. With signal `no_improvement` it is BC; Diffusion-QL adds it to η·Q."""

  def actor_loss(state, aux, params, inp, key):
    return coefficient * jnp.mean(fit_to_actions(inp.policy, params, inp.obs, inp.action, key))

  return Regularizer('behavior_cloning', frozenset({'fits_actions'}), lambda: (), actor_loss,
                     lambda *_: 0.0, lambda state, a, key, role: a,
                     lambda state, step, aux, sample_many, key: (state, {}))
