"""The four axes plus the critic; importing this package registers every primitive with gin."""
from flowrl.primitives.base import REGISTRY, EnvSpec
from flowrl.primitives import (  # noqa
    behavior_cloning, coupled_flow, critic, implicit_q, initializers, networks, one_step_flow,
    parameterization, policy_gradient, regularizer, sampler, schedules, signal, weighted_denoising)
