"""The Ray Tune backend: each (variant, task, seed block) run is one Tune trial on an existing Ray
cluster (`--address`) or on a Ray started here, writing the same results folder as the local
backend (a shared filesystem on a multi-machine cluster). Ray is the optional extra `[ray]`."""
import os
from typing import Callable, Optional, Sequence

from flowrl.errors import ConfigError
from flowrl.sweep import job
from flowrl.sweep.local import Layout, cores
from flowrl.sweep.spec import Run

INSTALL = 'pip install -e ".[ray]"'
# The driver-side on_finish of each running sweep, by id: Tune pickles its callbacks, and the
# sweep's callback holds a progress bar and its thread (not picklable), so the callback refers
# to it by key through this module (pickled by reference).
_ON_FINISH = {}


def require_ray():
  try:
    import ray  # noqa: F401
    from ray import tune  # noqa: F401
  except ImportError:
    raise ConfigError(f'--backend ray needs Ray Tune, which is not installed; install it with '
                      f'{INSTALL}, or use the default --backend local.') from None


def run_all(out_dir: str, runs: Sequence[Run], layout: Layout, address: Optional[str] = None,
            on_finish: Callable[[Run, str], None] = lambda run, status: None) -> dict:
  """One trial per run not yet done, one CPU each (one XLA thread), at most `layout.workers` at
  once on a local Ray; a cluster schedules by its own CPUs. Returns {run key: status}."""
  require_ray()
  import ray
  from ray import tune
  out_dir = os.path.abspath(out_dir)
  todo = [r for r in runs if not job.is_done(out_dir, r)]
  if not todo:
    return {}
  started_here = not ray.is_initialized()
  if started_here:
    try:
      if address:
        ray.init(address=address, log_to_driver=False)
      else:
        ray.init(num_cpus=len(cores()), include_dashboard=False, log_to_driver=False)
    except Exception as e:   # Ray's own message is a long traceback; say it in one sentence
      where = f'the Ray cluster at {address}' if address else 'a local Ray'
      first = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise ConfigError(f'cannot start or reach {where}: {first}') from None
  by_key = {r.key: r for r in todo}

  def trial(config):
    run = by_key[config['run']]
    code = job.start(out_dir, run, single_thread=True).wait()
    tune.report({'returncode': code, 'status': job.finish(out_dir, run, code)})

  token = id(on_finish)
  _ON_FINISH[token] = on_finish

  class Finished(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
      from flowrl.sweep import ray_backend      # by import: cloudpickle copies a global by value
      ray_backend._ON_FINISH[token](by_key[trial.config['run']], result['status'])

  tuner = tune.Tuner(
      tune.with_resources(trial, {'cpu': 1}),
      param_space={'run': tune.grid_search([r.key for r in todo])},
      tune_config=tune.TuneConfig(max_concurrent_trials=None if address else layout.workers),
      run_config=tune.RunConfig(name='trials', storage_path=os.path.join(out_dir, 'ray'),
                                verbose=0, callbacks=[Finished()]))
  try:
    results = tuner.fit()
  finally:
    _ON_FINISH.pop(token, None)
    if started_here:
      ray.shutdown()
  return {r.config['run']: (r.metrics or {}).get('status', 'failed') for r in results}
