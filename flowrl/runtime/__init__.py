"""What runs around the jitted step on the host: the driver (`driver.run`), vector envs with seeded
resets, evaluation, logs, checkpoints, signals and the scheduling of XLA compiles."""
