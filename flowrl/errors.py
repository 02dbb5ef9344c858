"""The one exception type users see: a configuration that cannot run, said in one sentence."""


class ConfigError(ValueError):
  """Bad input caught before training starts (unknown name, illegal mix, missing file...).

  `flowrl.run` prints its message on one line to stderr and exits with status 2.
  """
