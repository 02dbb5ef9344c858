"""The jitted step of every paradigm, over an agent and a data source (`flowrl.data`):

  add(transition) → cond(due, prepare → scan(gather → update → write) → finish) → act

One compiled program serves the whole run; warm-up and off-frames take the cond's other branch.
The data source decides what is stored and when an update burst is due (replay: after warm-up,
every `update_every` steps; rollout: when full; dataset: always), so a new paradigm is a new
source, never a new loop.
"""
from typing import Any, NamedTuple, Optional

import gin
import jax
import jax.numpy as jnp

from flowrl.compose.agent import Agent, TrainState
from flowrl.control_flow import cond_or_pass
from flowrl.data.base import DataSource, SourceChoice
from flowrl.data.replay import REPLAY


class TrainConfig(NamedTuple):
  """Settings of the loop; bound in gin as `train.<field>`."""
  total_frames: int = 1_000_000
  random_frames: int = 5_000         # uniform random actions before the policy acts
  learning_starts: int = 5_000       # first update after this many stored transitions
  batch_size: int = 256
  buffer_size: int = 1_000_000
  update_every: int = 1              # vector steps between update bursts (frames with one env)
  updates_per_frame: float = 1.0     # updates per burst = update_every × updates_per_frame × envs
  eval_every: int = 10_000
  eval_episodes: int = 5
  log_every: int = 1_000
  checkpoint_every: int = 50_000     # resume replays the episode in progress, then continues
  keep_checkpoints: int = 2          # the newest kept; 0: every one (datasets of earlier policies)
  seed: int = 0
  envs_per_seed: int = 1             # envs stepped together per seed; frames count all of them
  source: Optional[SourceChoice] = None   # where batches come from: None = the replay
  fused_frames: int = 0              # > 0: frames per host call, envs stepped from in the program


train = gin.external_configurable(TrainConfig, 'train', module='flowrl')


class LoopState(NamedTuple):
  agent: TrainState
  data: Any                # the data source's state
  key: jax.Array
  frame: jax.Array         # env frames stored so far (offline: updates run so far)
  extras: Any = ()         # what `collect` returned beside the actions the envs are taking now,
                           # stored with their transition at the next add


TRANSITION = ('obs', 'action', 'reward', 'next_obs', 'terminated', 'truncated')


def make_source(agent: Agent, cfg: TrainConfig, envs: int = 1) -> DataSource:
  """The method's data source (`train.source`; the replay when unset) for this agent."""
  return (cfg.source or REPLAY).make(agent, cfg, envs)


def replay_source(agent: Agent, cfg: TrainConfig, envs: int = 1) -> DataSource:
  return REPLAY.make(agent, cfg, envs)


def init_loop(agent: Agent, source: DataSource, seed: int, envs: int = 1) -> LoopState:
  init_key, key = jax.random.split(jax.random.PRNGKey(seed))
  extras = {k: jnp.zeros((envs,) + tuple(s), jnp.float32) for k, s in (agent.extras or {}).items()}
  return LoopState(agent.init(init_key), source.init(), key, jnp.zeros((), jnp.int32), extras)


def fused_updates(agent: Agent, source: DataSource):
  """(TrainState, source state, key) -> (TrainState, source state, metrics [n, ...]): `n` updates
  in one `lax.scan`, each on a batch gathered after the previous one's write-back. Where the
  source has a `stop_when(metrics)` rule (on-policy early stop on approximate KL), the updates
  after the first that meets it are skipped, and metrics['ran'] says which ran."""

  def update(state, data, idx, key):
    state, writes, metrics = agent.update(state, source.gather(data, idx), key)
    return state, source.write(data, idx, writes), metrics

  def one(carry, inputs):
    state, data = carry
    state, data, metrics = update(state, data, *inputs)
    return (state, data), metrics

  def one_unless_stopped(carry, inputs):
    state, data, halted = carry
    step = state.step
    state, data, metrics = cond_or_pass(~halted, update, lambda s, d, i, k: (s, d), state, data,
                                        *inputs)
    # The counter counts update slots, run or skipped, so it stays in lockstep across vmapped
    # seeds (whose early stops differ) and unbatched (`seed_axes`).
    state = state._replace(step=step + 1)
    return (state, data, halted | source.stop_when(metrics)), {**metrics, 'ran': ~halted}

  def run(state, data, key):
    keys = jax.vmap(jax.random.split)(jax.random.split(key, source.n))   # [n, 2 (batch, update)]
    data = source.prepare(data, agent.value and (lambda obs: agent.value(state, obs)))
    idx = source.batches(data, keys[:, 0])
    if source.stop_when is None:
      (state, data), metrics = jax.lax.scan(one, (state, data), (idx, keys[:, 1]))
    else:
      (state, data, _), metrics = jax.lax.scan(one_unless_stopped, (state, data, jnp.bool_(False)),
                                               (idx, keys[:, 1]))
    if agent.settle:                   # observation statistics move only between bursts
      state = agent.settle(state)
    return state, source.finish(data), metrics

  return run


def frames_per_step(source: DataSource, envs: int) -> int:
  """What one loop step adds to the frame count: the envs' steps, or offline its updates."""
  return envs if source.collects else source.n


def make_frame_step(agent: Agent, source: DataSource, cfg: TrainConfig, envs: int = 1):
  """step(loop, transition {column: [N, ...]}, valid, next_obs [N, O]) -> (loop, actions [N, A],
  metrics [n, ...]). `valid` = False only for a run's first call, which just chooses actions."""
  run = fused_updates(agent, source)

  def step(loop: LoopState, transition, valid, next_obs):
    transition = {**transition, **loop.extras, **{c: transition['action'] for c in agent.columns}}
    data = jax.lax.cond(valid, source.add, lambda d, t: d, loop.data, transition)
    frame = loop.frame + valid.astype(jnp.int32) * frames_per_step(source, envs)
    key, update_key, act_key = jax.random.split(loop.key, 3)
    do_update = valid & source.due(data, frame)
    state = loop.agent
    if agent.observe:
      state = jax.lax.cond(valid, agent.observe, lambda s, o: s, state, transition['obs'])
    state, data, metrics = cond_or_pass(do_update, run, lambda s, d, k: (s, d),
                                        state, data, update_key)
    ran = metrics.pop('ran', True)     # False for the updates an early stop skipped
    metrics = {**metrics, 'updated': jnp.broadcast_to((do_update & ran).astype(jnp.float32),
                                                      (source.n,))}
    uniform = jax.random.uniform(act_key, (envs, agent.spec.act_dim), minval=-1.0, maxval=1.0)
    no_extras = jax.tree_util.tree_map(jnp.zeros_like, loop.extras)
    if not source.collects:            # offline: no env takes actions
      return LoopState(state, data, key, frame, no_extras), jnp.zeros_like(uniform), metrics
    action, extras = jax.lax.cond(frame < cfg.random_frames, lambda: (uniform, no_extras),
                                  lambda: agent.collect(state, next_obs, act_key))
    return LoopState(state, data, key, frame, extras), action, metrics

  return step


def make_periodic_step(agent: Agent, source: DataSource, cfg: TrainConfig):
  """periodic(loop) -> loop: the agent's periodic step (DACER's entropy estimate and α step) on a
  batch of states from the source, with a key folded from the loop's (the frame step's keys are
  untouched). The driver runs it right after the step whose updates include update
  k·agent.periodic_every."""

  def periodic(loop: LoopState) -> LoopState:
    obs_key, run_key = jax.random.split(jax.random.fold_in(loop.key, 0x5EED))
    obs = source.gather(loop.data, source.batches(loop.data, obs_key[None])[0])['obs']
    return loop._replace(agent=agent.periodic(loop.agent, obs, run_key))

  return periodic


def runs_periodic(agent: Agent, source: DataSource, frame: int, updates_done: int,
                  due: bool) -> bool:
  """Whether the step that brought the frame count to `frame` runs updates (`due`, the source's
  own rule evaluated on the host) and they include a multiple of agent.periodic_every,
  `updates_done` having run before it."""
  if not agent.periodic_every or not due:
    return False
  return (-updates_done) % agent.periodic_every < source.n


def seed_axes(source: DataSource) -> LoopState:
  """vmap axes of the loop state when seeds train together: every leaf carries a leading seed axis
  except the counters, which advance in lockstep and stay unbatched so that `lax.cond` on them
  (warm-up, delayed actor steps, SDAC's α step every 250 updates) remains a real branch under
  `vmap` instead of a select of both sides; the host reads the update counter to schedule the
  periodic step."""
  return LoopState(agent=TrainState(step=None, actor=0, critic=0, reg=0, signal=0, obs_norm=0,
                                     reference=0, eval_actor=0),
                   data=source.seed_axes, key=0, frame=None, extras=0)


def batched_programs(agent: Agent, source: DataSource, cfg: TrainConfig, seeds, envs: int = 1):
  """(init, step, act_eval, periodic) over S = len(seeds) seeds, all with a leading seed axis on
  the host side:
    init() -> loop;  step(loop, transitions {column: [S, N, ...]}, valid, next_obs [S, N, O])
                     -> (loop, [S, N, A], metrics [S, n, ...]);
    act_eval(agent state, obs [S, 1, O], keys [S]) -> [S, 1, A];
    periodic(loop) -> loop, or None where the agent has no periodic step.
  One seed runs the unbatched programs (indexing inside jit is free); several are `vmap`ped over
  `seed_axes`, each seed with its own keys, data and envs: seed s gives a separate run's numbers."""
  step = make_frame_step(agent, source, cfg, envs)
  act = lambda state, obs, key: agent.act(state, obs, key, True)
  periodic = make_periodic_step(agent, source, cfg) if agent.periodic else None
  if len(seeds) == 1:
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
    lead = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)

    def step_one(loop, transitions, valid, next_obs):
      loop, action, metrics = step(loop, first(transitions), valid, next_obs[0])
      return loop, action[None], lead(metrics)

    return (lambda: init_loop(agent, source, seeds[0], envs), step_one,
            lambda state, obs, keys: act(state, obs[0], keys[0])[None], periodic)
  axes = seed_axes(source)
  seed_array = jnp.asarray(seeds, jnp.int32)
  init = lambda: jax.vmap(lambda s: init_loop(agent, source, s, envs), out_axes=axes)(seed_array)
  return (init, jax.vmap(step, in_axes=(axes, 0, None, 0), out_axes=(axes, 0, 0)),
          jax.vmap(act, in_axes=(axes.agent, 0, 0)),
          periodic and jax.vmap(periodic, in_axes=(axes,), out_axes=axes))
