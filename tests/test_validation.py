"""Illegal mixes fail before tracing with one sentence naming both axes and what is missing."""
import pytest

from flowrl.compose import compile_method, method
from flowrl.errors import ConfigError
from flowrl.primitives import critic, parameterization as P, regularizer as R, sampler as S, signal as G
from flowrl.primitives.base import EnvSpec

SPEC = EnvSpec(3, 2)


def _mix(policy, rule, sig, reg=None):
  return method(policy, S.sampler(rule, steps=2), sig, reg or R.no_regularizer(), critic.ensemble_q())


@pytest.mark.parametrize('mix,words', [
    (_mix(P.tanh_gaussian(), S.direct(), G.q_score_matching()),
     ["signal 'q_score_matching'", "policy 'tanh_gaussian'", "'score'", 'vp_diffusion']),
    (_mix(P.rectified_flow(), S.ddim(), G.reparam_q()),
     ["sampler 'ddim'", "policy 'rectified_flow'", "'vp_path'", 'vp_diffusion']),
    (_mix(P.tanh_gaussian(), S.ddpm(), G.reparam_q()),
     ["sampler 'ddpm'", "policy 'tanh_gaussian'"]),
    (_mix(P.vp_diffusion(), S.direct(), G.reparam_q()),
     ["sampler 'direct'", "policy 'vp_diffusion'", "'distribution'", 'tanh_gaussian, deterministic']),
    (_mix(P.vp_diffusion(), S.euler(), G.reparam_q()),
     ["sampler 'euler'", "'velocity'", 'rectified_flow']),
    (_mix(P.vp_diffusion(), S.ddpm(), G.reparam_q(), R.exact_entropy()),
     ["regularizer 'exact_entropy'", "'exact_logprob'", "policy 'vp_diffusion'", 'tanh_gaussian']),
    (_mix(P.tanh_gaussian(), S.direct(), G.deterministic_pg()),
     ["signal 'deterministic_pg'", "'deterministic'", 'deterministic']),
    (_mix(P.tanh_gaussian(), S.direct(), G.action_gradient()),
     ["signal 'action_gradient'", "'chain'"]),
])
def test_illegal_mix_raises_one_sentence(mix, words):
  with pytest.raises(ConfigError) as err:
    compile_method(mix, SPEC)
  msg = str(err.value)
  assert msg.count('\n') == 0 and msg.endswith('.')
  for w in words:
    assert w in msg, (w, msg)


@pytest.mark.parametrize('mix', [
    _mix(P.tanh_gaussian(), S.direct(), G.reparam_q(), R.exact_entropy()),
    _mix(P.deterministic(), S.direct(), G.deterministic_pg(), R.action_noise()),
    _mix(P.vp_diffusion(), S.ddpm(), G.q_score_matching()),
    _mix(P.vp_diffusion(), S.ddim(), G.action_gradient()),
    _mix(P.rectified_flow(), S.euler(), G.action_gradient(), R.estimated_entropy()),
])
def test_legal_mix_compiles(mix):
  agent = compile_method(mix, SPEC)
  assert agent.policy.act_dim == 2
