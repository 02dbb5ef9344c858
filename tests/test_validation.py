"""Illegal mixes fail before tracing with one sentence naming both axes and what is missing."""
import pytest

from flowrl.compose import compile_method, method
from flowrl.errors import ConfigError
from flowrl.primitives import critic, parameterization as P, regularizer as R, sampler as S, signal as G
from flowrl.primitives.base import EnvSpec

SPEC = EnvSpec(3, 2)


def assert_one_sentence_with(msg, words):
  assert msg.count('\n') == 0 and msg.endswith('.'), msg
  for w in words:
    assert w in msg, (w, msg)


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
     ["sampler 'direct'", "policy 'vp_diffusion'", "'distribution'", 'tanh_gaussian, gaussian, deterministic']),
    (_mix(P.vp_diffusion(), S.euler(), G.reparam_q()),
     ["sampler 'euler'", "'velocity'", 'rectified_flow']),
    (_mix(P.vp_diffusion(), S.ddpm(), G.reparam_q(), R.exact_entropy()),
     ["regularizer 'exact_entropy'", "'exact_logprob'", "policy 'vp_diffusion'", 'tanh_gaussian']),
    (_mix(P.tanh_gaussian(), S.direct(), G.deterministic_pg()),
     ["signal 'deterministic_pg'", "'deterministic'", 'deterministic']),
    (_mix(P.tanh_gaussian(), S.direct(), G.action_gradient()),
     ["signal 'action_gradient'", "'chain'"]),
    # typed contracts: a regularizer that reads what no signal sends would silently do nothing,
    # and a signal that reads Q needs a critic that estimates it
    (_mix(P.tanh_gaussian(), S.direct(), G.reparam_q(), R.kl_to_uniform()),
     ["regularizer 'kl_to_uniform'", "('weight_kl')", "signal 'reparam_q'", 'q_weighted_particles']),
    (_mix(P.vp_diffusion(), S.ddpm(), G.q_score_matching(),
          R.combined(parts=[R.kl_to_uniform(), R.noise_entropy()])),
     ["regularizer 'combined(kl_to_uniform, noise_entropy)'", "('weight_kl')"]),
    # an on-policy-style critic that estimates V only, under a signal that reads Q
    (method(P.tanh_gaussian(), S.sampler(S.direct(), steps=2), G.reparam_q(), R.no_regularizer(),
            lambda spec: critic.ensemble_q()(spec)._replace(name='v_only', provides=frozenset({'v'}))),
     ["signal 'reparam_q' needs action values Q(s, a) ('q')", "critic 'v_only'",
      'ensemble_q, distributional_q']),
])
def test_illegal_mix_raises_one_sentence(mix, words):
  with pytest.raises(ConfigError) as err:
    compile_method(mix, SPEC)
  assert_one_sentence_with(str(err.value), words)


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


# Numbers and types: every bound value is checked when the config is parsed (flowrl.validation).
@pytest.mark.parametrize('method_file,binding,words', [
    ('dacer', 'sampler.steps=-3', ['sampler.steps = -3 must be at least 1']),
    ('sac', 'sampler.steps="ten"', ["sampler.steps = 'ten' must be an integer"]),
    ('sac', 'train.batch_size=0', ['train.batch_size = 0 must be at least 1']),
    ('sac', 'actor_optimizer.learning_rate=0.0', ['actor_optimizer.learning_rate = 0.0 must be positive']),
    ('sac', 'critic_optimizer.eps=-1e-8', ['critic_optimizer.eps = -1e-08 must be positive']),
    ('sac', 'Method.gamma=1.5', ['Method.gamma = 1.5 must lie in [0, 1]']),
    ('sac', 'Method.tau=0.0', ['Method.tau = 0.0 must lie in (0, 1]']),
    ('sac', 'Method.actor_every=0', ['Method.actor_every = 0 must be at least 1']),
    ('sac', 'train.random_frames=-1', ['train.random_frames = -1 must not be negative']),
    ('sac', 'tanh_gaussian.hidden=(256, -1)', ['tanh_gaussian.hidden = (256, -1) must be a tuple']),
    ('sac', 'exact_entropy.alpha_init=0.0', ['exact_entropy.alpha_init = 0.0 must be positive']),
    ('qsm', 'q_score_matching.score_scale="big"', ["score_scale = 'big' must be a number"]),
    ('dipo', 'action_gradient.steps=2.5', ['action_gradient.steps = 2.5 must be an integer']),
    ('sdac', 'sampler.best_of=0', ['sampler.best_of = 0 must be at least 1']),
    ('td3', 'action_noise.behaviour_std=-0.1', ['action_noise.behaviour_std = -0.1 must not be negative']),
    ('dppo', 'sampler.fine_tune_steps=-1', ['sampler.fine_tune_steps = -1 must not be negative']),
    ('reinflow', 'noisy_euler.bound_decay_steps=-5',
     ['noisy_euler.bound_decay_steps = -5 must not be negative']),
    ('fpopp', 'Method.eval_ema=1.5', ['Method.eval_ema = 1.5 must lie in [0, 1]']),
    ('fpopp', 'Method.eval_ema_warmup=-1', ['Method.eval_ema_warmup = -1 must not be negative']),
])
def test_bad_numbers_and_types_are_one_sentence(method_file, binding, words):
  from flowrl import run as cli
  with pytest.raises(ConfigError) as err:
    cli.parse_config([f'gin/{method_file}.gin'], [binding])
  assert_one_sentence_with(str(err.value), words)


def test_a_batch_larger_than_the_buffer_is_refused():
  from flowrl import run as cli
  cli.parse_config(['gin/sac.gin', 'gin/env/pendulum.gin'],
                   ['train.buffer_size=100', 'train.batch_size=256'])
  with pytest.raises(ConfigError, match=r'train.batch_size = 256 is larger than the replay buffer'):
    cli.build()


def test_counts_whose_zero_means_off_accept_zero():
  from flowrl import run as cli
  cli.parse_config(['gin/dppo_finetune.gin'], ['sampler.fine_tune_steps=0'])
  cli.parse_config(['gin/reinflow.gin'], ['noisy_euler.bound_decay_steps=0'])


def test_every_shipped_gin_file_passes_the_checks():
  import glob
  import os
  from flowrl import run as cli
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for path in sorted(glob.glob(os.path.join(root, 'gin', '*.gin')) +
                     glob.glob(os.path.join(root, 'examples', '*.gin')) +
                     glob.glob(os.path.join(root, 'benchmarks', 'gin', '*.gin')) +
                     glob.glob(os.path.join(root, 'benchmarks', 'gin', '*', '*.gin'))):
    for env in ([], [os.path.join(root, 'gin', 'env', 'pendulum.gin')],
                [os.path.join(root, 'gin', 'env', 'dmc.gin')]):
      cli.parse_config([path] + env, [])


@pytest.mark.parametrize('name,suggestion', [
    ('Halfcheetah-v5', "did you mean 'HalfCheetah-v5'?"),     # case
    ('HalfCheetah-v4', "did you mean 'HalfCheetah-v5'?"),     # version
    ('dmc:cheetah-rnu', "did you mean 'dmc:cheetah-run'?"),   # typo
    ('cheetah-run', "did you mean 'dmc:cheetah-run'?"),       # the dmc: prefix forgotten
    ('Nope-v0', None),                                        # nothing close: the list only
])
def test_an_unknown_environment_suggests_a_near_miss(name, suggestion):
  from flowrl.envs import make_env
  with pytest.raises(ConfigError) as err:
    make_env(name)
  msg = str(err.value)
  assert msg.startswith(f'unknown environment {name!r};') and msg.count('\n') == 0
  if suggestion:
    assert suggestion in msg
  else:
    assert 'did you mean' not in msg and 'HalfCheetah-v5' in msg

