"""Optional extras (Playground, envpool): import one, or fail at start with one sentence that says
what is missing and how to install it."""
import importlib
from typing import Callable

from flowrl.errors import ConfigError


def import_extra(module: str, sentence: Callable[[ImportError], str]):
  """`module`, imported; on an ImportError (a missing package only: a broken install's own error
  is not hidden), the ConfigError `sentence(error)`."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(sentence(e)) from None
