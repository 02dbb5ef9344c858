"""What a sweep runs: variants (one gin binding per `--axis` value, a grid for several axes, or
several method files), tasks (one env or a named suite) and seeds, expanded into runs; and the
check, before anything starts, that every variant is a valid configuration.

An axis is a taxonomy axis by name (`sampler=@ddpm,@ddim`, `signal=@qsm,...`, also `policy`,
`regularizer`, `critic`) or any gin parameter (`sampler.steps=5,10,20`, `train.batch_size=128,256`).
"""
import itertools
import os
from typing import Dict, List, NamedTuple, Sequence, Tuple

from flowrl.errors import ConfigError

# The taxonomy axes and the gin parameter each one sets.
AXIS_BINDINGS = {'policy': 'Method.policy', 'sampler': 'sampler.rule', 'signal': 'Method.signal',
                 'regularizer': 'Method.regularizer', 'critic': 'Method.critic'}

# Named lists of tasks, in one place.
SUITES: Dict[str, Tuple[str, ...]] = {
    'gym-locomotion': ('Hopper-v5', 'Walker2d-v5', 'HalfCheetah-v5', 'Ant-v5', 'Humanoid-v5'),
    'dmc': ('dmc:cheetah-run', 'dmc:walker-walk', 'dmc:walker-run', 'dmc:hopper-hop',
            'dmc:quadruped-run', 'dmc:finger-spin', 'dmc:reacher-hard', 'dmc:humanoid-walk'),
    # MuJoCo Playground's ports of the DMC tasks above (pure JAX; no quadruped port exists)
    'playground-dmc': ('playground:CheetahRun', 'playground:WalkerWalk', 'playground:WalkerRun',
                       'playground:HopperHop', 'playground:FingerSpin', 'playground:ReacherHard',
                       'playground:HumanoidWalk'),
    'classic': ('Pendulum-v1', 'InvertedPendulum-v5'),   # fast tasks for smoke tests
    # Isaac Lab (a GPU machine with Isaac Lab; docs/isaaclab.md): flow-rl's task list, 2.x ids
    'isaaclab': ('isaac:Isaac-Ant-v0', 'isaac:Isaac-Humanoid-v0', 'isaac:Isaac-Cartpole-v0',
                 'isaac:Isaac-Velocity-Flat-Anymal-D-v0', 'isaac:Isaac-Velocity-Flat-G1-v0',
                 'isaac:Isaac-Velocity-Rough-G1-v0', 'isaac:Isaac-Lift-Cube-Franka-v0',
                 'isaac:Isaac-Open-Drawer-Franka-v0'),
    # offline: local datasets (`dataset:<Minari id>`, made by examples/make_locomotion_datasets.sh)
    'offline-locomotion': tuple(f'dataset:flowrl/{task}/{level}-v0'
                                for task in ('hopper', 'walker2d', 'halfcheetah')
                                for level in ('medium', 'medium-replay', 'medium-expert')),
}
DATASET_TASK = 'dataset:'   # a task that is a dataset: the run binds dataset_source.name to it


def task_binding(task: str) -> str:
  """The binding that puts a run on `task`: an env (env.name), or offline a local dataset
  (dataset_source.name; the run evaluates on the env the data came from)."""
  if task.startswith(DATASET_TASK):
    return f'dataset_source.name = {task[len(DATASET_TASK):]!r}'
  return f'env.name = {task!r}'


class Variant(NamedTuple):
  name: str
  gin_files: Tuple[str, ...]
  bindings: Tuple[str, ...]


class Run(NamedTuple):
  """One job: a variant on a task with a block of seeds trained together (vmapped)."""
  variant: str
  task: str
  seeds: Tuple[int, ...]
  gin_files: Tuple[str, ...]
  bindings: Tuple[str, ...]

  @property
  def key(self) -> str:
    """Its folder under the sweep's runs/: variant/task/seeds_a-b."""
    seeds = 's' + '-'.join(map(str, self.seeds))
    return os.path.join(safe_name(self.variant), safe_name(self.task), seeds)


def safe_name(text: str) -> str:
  """`text` as one file or folder name: characters other than letters, digits and -_.=, become _."""
  return ''.join(c if c.isalnum() or c in '-_.=,' else '_' for c in text)


def parse_axis(text: str) -> Tuple[str, List[str]]:
  """'sampler=@ddpm,@ddim' -> ('sampler', ['@ddpm', '@ddim']); values split on commas outside
  brackets, so tuples such as (64, 64) stay whole."""
  if '=' not in text:
    raise ConfigError(f"malformed --axis {text!r}; expected 'name=value1,value2', "
                      f"e.g. --axis 'sampler=@ddpm,@ddim'.")
  name, rest = (s.strip() for s in text.split('=', 1))
  values, depth, cur = [], 0, ''
  for c in rest:
    depth += c in '([{'
    depth -= c in ')]}'
    if c == ',' and depth == 0:
      values.append(cur.strip())
      cur = ''
    else:
      cur += c
  values.append(cur.strip())
  values = [v for v in values if v]
  if not name or not values:
    raise ConfigError(f"malformed --axis {text!r}; expected 'name=value1,value2'.")
  return name, values


def axis_binding(name: str, value: str) -> Tuple[str, str]:
  """(variant label, gin binding) for one axis value; a taxonomy axis takes primitive names."""
  if name in AXIS_BINDINGS:
    from flowrl.primitives import REGISTRY
    prim = value.lstrip('@').split('(')[0].strip()
    if prim not in REGISTRY[name]:
      raise ConfigError(f"unknown {name} {value!r} in --axis; the {name} primitives are: "
                        f"{', '.join('@' + k for k in REGISTRY[name])}.")
    call = value.lstrip('@') if '(' in value else prim + '()'
    return prim, f'{AXIS_BINDINGS[name]} = @{call}'
  if '.' not in name:
    raise ConfigError(f"unknown axis {name!r}; use a taxonomy axis ({', '.join(AXIS_BINDINGS)}) "
                      f"or a gin parameter such as sampler.steps.")
  return f'{name.split(".")[-1]}={value}', f'{name} = {value}'


def expand_variants(method_files: Sequence[str], axes: Sequence[str]) -> List[Variant]:
  """Methods × the grid of all axes' values, in order (the first variant is the baseline)."""
  parsed = [parse_axis(a) for a in axes]
  names = [n for n, _ in parsed]
  if len(set(names)) != len(names):
    raise ConfigError(f"the axis {next(n for n in names if names.count(n) > 1)!r} is given twice; "
                      f"list all its values in one --axis.")
  options = [[axis_binding(n, v) for v in values] for n, values in parsed]
  multiple_methods = len(method_files) > 1
  variants = []
  for method_file in method_files:
    stem = os.path.splitext(os.path.basename(method_file))[0]
    for combo in itertools.product(*options):
      labels = ([stem] if multiple_methods or not combo else []) + [label for label, _ in combo]
      variants.append(Variant(','.join(labels), (method_file,),
                              tuple(binding for _, binding in combo)))
  return variants


def tasks_of(env: str = None, suite: str = None) -> Tuple[str, ...]:
  if suite is not None:
    if suite not in SUITES:
      raise ConfigError(f"unknown suite {suite!r}; the suites are: {', '.join(SUITES)}.")
    return SUITES[suite]
  return (env,) if env else ()


def seed_blocks(seeds: Sequence[int], size: int) -> List[Tuple[int, ...]]:
  return [tuple(seeds[i:i + size]) for i in range(0, len(seeds), size)]


def expand_runs(variants: Sequence[Variant], tasks: Sequence[str], seeds: Sequence[int],
                seeds_per_run: int, common_gin: Sequence[str] = (),
                common_bindings: Sequence[str] = ()) -> List[Run]:
  """Every variant × task × seed block; each run binds its task (env.name, or offline
  dataset_source.name) after the variant's own bindings, so every variant trains on the same
  tasks."""
  return [Run(v.name, task, block, v.gin_files + tuple(common_gin),
              tuple(common_bindings) + v.bindings + (task_binding(task),))
          for v in variants for task in tasks for block in seed_blocks(list(seeds), seeds_per_run)]


def validate(runs: Sequence[Run]) -> Dict[str, int]:
  """Parse and compile every distinct configuration (no tracing, no env stepping beyond a probe)
  so an unknown name or an illegal mix fails at start in one sentence naming the variant.
  Returns each run's frame budget (train.total_frames), {run key: frames}, for the progress bar."""
  from flowrl import run as cli
  frames = {}
  for r in runs:
    config = (r.gin_files, r.bindings)
    if config in frames:
      continue
    try:
      cli.parse_config(list(r.gin_files), list(r.bindings))
      _, cfg, _ = cli.build()
      frames[config] = cfg.total_frames
    except ConfigError as e:
      where = f'variant {r.variant!r} on {r.task}'
      raise ConfigError(f'{where}: {e}') from None
    finally:
      import gin
      gin.clear_config()
  return {r.key: frames[(r.gin_files, r.bindings)] for r in runs}
