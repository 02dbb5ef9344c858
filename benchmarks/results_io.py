"""The one way a benchmark script ends: its result as JSON on stdout, and in --out if given."""
import json


def emit(result: dict, out: str = None, indent: int = 1) -> None:
  text = json.dumps(result, indent=indent)
  print(text)
  if out:
    with open(out, 'w') as f:
      f.write(text + '\n')
