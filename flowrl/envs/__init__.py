"""One environment registry: gymnasium MuJoCo v5 / classic control tasks by id, dm_control suite
tasks as "dmc:domain-task". Every env exposes the gymnasium API with actions rescaled to [−1, 1]."""
from flowrl.envs.registry import (env, env_spec, is_isaac, is_pure, known_envs, make_env,  # noqa
                                  make_jax_env, per_task)
from flowrl.envs import isaaclab  # noqa: F401  (its gin names; Isaac Lab itself is imported on use)
