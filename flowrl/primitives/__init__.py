"""The four axes plus the critic; importing this package registers every primitive with gin."""
from flowrl.primitives.base import REGISTRY, EnvSpec
from flowrl.primitives import (critic, initializers, networks, parameterization, regularizer, sampler,  # noqa
                               schedules, signal, weighted_denoising)
