"""The interfaces of the four axes plus the critic, and the registry behind `flowrl.run --list`.

Every primitive is a NamedTuple of pure functions over explicit pytrees, plus two frozensets:
`provides` (capabilities other axes may rely on) and `requires` (capabilities it needs). The
compiler checks `requires ⊆ provides` of the other axes before tracing anything.

Capabilities used so far:
  policy:  'distribution' (direct sampling), 'exact_logprob', 'deterministic', 'chain'
           (a Gaussian probability path x_t = α_t a + σ_t ε with a network), 'vp_path' (α²+σ²=1),
           'score' (a noise estimate, hence ∇ log p), 'velocity' (a flow's velocity field),
           'noise_head' (a learned per-step noise std σ_φ(s, x_t, t)), 'coupled' (GenPO's
           doubled action, mapped to the env's by `env_action`)
  sampler: 'differentiable' (reparameterized sample), 'logprob' (log-prob of its sample),
           'kernel' (each step a Gaussian transition kernel, so its chains can be scored)
  signal:  'sample_log_prob', 'weight_kl', 'entropy' (what its aux carries for a regularizer)
  critic:  'q' (action values), 'v' (state values)
  source:  'transitions' (replay, dataset), 'rollout' (on-policy; `flowrl.compose.step`)
  regularizer: 'weight_temperature' (an auto-tuned temperature λ for Q-weighted losses)
  compiler:    'reference_actor' (a frozen copy of the actor the run started from, kept in the
               train state for any primitive that requires it: a BC-to-pretrained regularizer)
"""
import functools
import inspect
from typing import Any, Callable, Dict, NamedTuple, Optional

import gin

# axis -> {name: configurable}; filled by `primitive`, read by `flowrl.run --list` and tests.
REGISTRY: Dict[str, Dict[str, Callable]] = {
    'policy': {}, 'sampler': {}, 'signal': {}, 'regularizer': {}, 'critic': {}}


def primitive(axis: str):
  """Register `fn` as a gin configurable `flowrl.<axis>.<name>` and in REGISTRY[axis]."""

  def wrap(fn):
    configurable = gin.configurable(fn.__name__, module=f'flowrl.{axis}')(fn)
    REGISTRY[axis][fn.__name__] = configurable
    return configurable

  return wrap


def _gin_value(v) -> str:
  if v is gin.REQUIRED:
    return 'REQUIRED'
  return f'@{v.__name__}' if callable(v) and hasattr(v, '__name__') else repr(v)


HIDDEN_PARAMS = ('spec', 'self', 'act_dim', 'obs_dim')  # filled in by the compiler, not by gin


def describe(fn: Callable, name: str = None, doc_of: Callable = None) -> str:
  """`name(param=default, ...)` and the docstring's first paragraph, for --list."""
  sig = inspect.signature(inspect.unwrap(fn))
  params = ', '.join(f'{p.name}={_gin_value(p.default)}' if p.default is not p.empty else p.name
                     for p in sig.parameters.values() if p.name not in HIDDEN_PARAMS)
  doc = (inspect.getdoc(doc_of or fn) or '').split('\n\n')[0].split('\n')
  doc = ' '.join(line.strip() for line in doc)
  return f"{name or fn.__name__}({params})" + (f"\n      {doc}" if doc else '')


class EnvSpec(NamedTuple):
  obs_dim: int
  act_dim: int


class Policy(NamedTuple):
  """Parameterization axis. Direct policies fill `distribution`; chain policies (diffusion, flow)
  fill `predict`, `path`, `to_eps_x0` and `fit_loss`."""
  name: str
  provides: frozenset
  act_dim: int
  init: Callable            # (key) -> params
  distribution: Optional[Callable] = None  # (params, obs) -> (distrax dist, mode action)
  predict: Optional[Callable] = None       # (params, obs, x_t, t) -> network output
  path: Optional[Callable] = None          # (steps) -> (alpha, sigma) [steps+1] at t = k/steps
  to_eps_x0: Optional[Callable] = None     # (output, x_t, alpha, sigma) -> (eps_hat, x0_hat)
  fit_loss: Optional[Callable] = None      # (params, obs, a0, key) -> per-sample loss [B], on the
                                           #   policy's own training noise grid (not the sampler's)
  noised: Optional[Callable] = None        # (a0, key) -> (x_t, t, eps, alpha, sigma), same grid
  condition: Optional[Callable] = None     # (params, obs) -> per-state features, once per chain
  predict_cond: Optional[Callable] = None  # (params, condition, x_t, t) -> network output
  noise_std: Optional[Callable] = None     # (params, obs, x_t, t, bound) -> σ [B, A]: a learned
                                           #   noise head ('noise_head', ReinFlow); bound: the
                                           #   fraction of its range in use (None: all)
  env_action: Optional[Callable] = None    # (sample) -> the env's action, where a distribution's
                                           #   sample is not the action itself (GenPO's doubled
                                           #   action x = (z, y) -> (z + y)/2; 'coupled')
  one_step: Optional[Callable] = None      # (params, obs, z) -> unclipped action: FQL's one-step
                                           #   generator μ_ω(s, z) ('one_step')
  cfm_loss_at: Optional[Callable] = None   # (params, obs [B, O], a [B, A], t [B, N], ε [B, N, A],
                                           #   space) -> [B, N]: its regression loss at given
                                           #   (t, ε) ('native' target, or 'eps': ‖ε̂ − ε‖²; FPO)


class SampleOut(NamedTuple):
  action: Any               # [B, A], inside [-1, 1]
  log_prob: Any = None      # [B] where the sampler provides 'logprob'


class Sampler(NamedTuple):
  """Sampler axis: `sample(policy, params, obs, key, steps, deterministic, q) -> SampleOut`, with
  q(obs, act) -> [E, ...] the critic (None where there is none; only critic-guided samplers read
  it). Call it through `flowrl.primitives.sampler.draw`, which passes `steps`."""
  name: str
  provides: frozenset
  requires: frozenset
  sample: Callable
  steps: int                # denoising / integration steps (1 for direct sampling)
  best_of: int = 1          # best-of-N by the critic when collecting experience
  eval_best_of: int = 1     # best-of-N by the critic when evaluating
  selection: str = 'argmax'    # how the best of N is chosen: argmax of Q, or a softmax(Q) draw
  kernel: Any = None        # its Gaussian transition kernel where it has one ('kernel';
                            #   `flowrl.primitives.transition_kernel.Kernel`)


class ActorInputs(NamedTuple):
  """What the compiler hands an improvement signal (closures are over the current params)."""
  obs: Any                  # [B, O]
  action: Any               # replay actions [B, A]
  columns: Any              # {name: [B, ...]}: every column of the batch, the source's own among
                            # them (a rollout's log_prob, advantage, return, value; DIPO's
                            # improved_action, which it writes back through its aux)
  policy: Policy
  sampler: Sampler
  q: Callable               # (obs, act) -> [E, B] critic values (means), current critic params
  perturb: Callable         # (action, key) -> action: the regularizer's noise on actor samples
  signal_state: Any = None  # the signal's own state (DPMD: its frozen particle policy)
  temperature: Any = None   # the regularizer's weight temperature λ where it provides one
  reference: Any = None     # the frozen actor params the run started from ('reference_actor')
  v: Optional[Callable] = None  # (obs) -> [B] the critic's state values, where it provides
                                #   'expectile_v' (IQL's advantage Q − V)


class Signal(NamedTuple):
  """Improvement-signal axis: `loss(actor_params, inputs, key) -> (loss, aux)`.

  aux may carry 'log_prob' [B] of the policy's own samples (read by entropy regularizers) and
  'actions' (sampled actions).

  `columns` names transition columns of its own that the data source stores beside the standard
  ones, each starting as a copy of the taken action (DIPO: 'improved_action'); the signal reads
  them in `inputs.columns` and writes them back by returning new values under the same names in
  its aux. Methods whose signal declares none store nothing extra.

  A signal may own state (DPMD: a frozen copy of the policy): `init(actor_params) -> state`, and
  `refresh(state, actor_params, step) -> state` after each actor step, `step` counting actor steps
  from 0; both pure, so the state lives in the train state.

  What its aux carries for a regularizer is declared in `provides` and checked by the compiler:
  'sample_log_prob' (aux['log_prob'] of the policy's own samples), 'weight_kl' (aux['weight_kl'],
  the KL of its sample weights to uniform), so a regularizer that reads one is never paired with
  a signal that does not send it (which would silently do nothing)."""
  name: str
  requires: frozenset
  loss: Callable
  init: Optional[Callable] = None
  refresh: Optional[Callable] = None
  provides: frozenset = frozenset()
  columns: tuple = ()
  collect: Optional[Callable] = None  # on-policy: (policy, sampler, params, obs, key) ->
                                      #   (action [B, A], {name: [B, ...]}) what a rollout stores
                                      #   beside the action to re-score it (log-probs, chains)


class Periodic(NamedTuple):
  """A regularizer step too costly for every update (DACER's entropy estimate), which the loop
  runs as a program of its own right after update k·every (k = 0, 1, ...; with several updates
  fused in one call, after that call) on the parameters it left:
  run(state, sample_many, key) -> state, with sample_many(key, n) -> [B, n, A] actions of the
  current policy, as collected, on B states from the replay buffer. Kept out of the update, it
  leaves the update's program smaller (DACER: 3.9 s of compile instead of 5.0 s), and compiles
  after it, beside the warm-up frames."""
  every: int
  run: Callable


class Regularizer(NamedTuple):
  """Regularizer axis. It may own state (a temperature and its optimizer state)."""
  name: str
  requires: frozenset
  init: Callable            # () -> state
  actor_loss: Callable      # (state, aux, actor_params, inputs, key) -> scalar added to the
                            #   signal's loss (aux is the signal's; inputs its ActorInputs)
  target_bonus: Callable    # (state, next_log_prob or None) -> [B] or 0, added to min Q'
  perturb: Callable         # (state, action, key, role) -> action;
                            #   role in {'behaviour', 'target', 'actor'}
  update: Callable          # (state, step, aux, sample_many, key) -> (state, metrics)
  provides: frozenset = frozenset()
  temperature: Optional[Callable] = None  # (state) -> λ, with 'weight_temperature'
  periodic: Optional[Periodic] = None     # a costly step run by the loop every `every` updates


class Critic(NamedTuple):
  """Critic axis: values for the actor, a loss for itself; may own extra state. `provides` says
  what it estimates: 'q' (action values Q(s, a), what every off-policy signal reads; a TD loss on
  stored transitions) or 'v' (state values V(s), fitted to a rollout's returns with
  `loss(params, batch) -> (loss, metrics)`); `requires` what the data source must provide."""
  name: str
  init: Callable            # (key) -> params (ensemble stacked on axis 0)
  init_extra: Callable      # () -> extra state (e.g. running std for DSAC-T)
  values: Callable          # (params, obs, act) -> [E, B] mean values
  loss: Callable            # (params, target_params, extra, batch, next_action, bonus,
                            #   discount, key) -> (loss, (new_extra, metrics))
  provides: frozenset = frozenset({'q'})
  requires: frozenset = frozenset({'transitions'})   # of the data source
  state_values: Optional[Callable] = None   # (params, obs) -> [B]: a V(s) learned beside Q, where
                                            #   it provides 'expectile_v' (IQL)
  next_action: bool = True  # whether its loss reads the policy's next action a' ~ π(s′) (drawn
                            #   by the compiler; IQL bootstraps from V(s′), no critic needs none)


def builder(fn):
  """Make `fn(spec, **hyper)` a configurable whose call with hyperparameters returns
  `build(spec)`, so gin can bind hyperparameters before the environment's sizes are known."""

  @functools.wraps(fn)
  def configured(**hyper):
    return functools.partial(fn, **hyper)

  sig = inspect.signature(fn)
  configured.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
  return configured
