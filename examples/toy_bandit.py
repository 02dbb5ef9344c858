"""Why a diffusion policy: a 2-D bandit with four equally good actions.

The reward r(a) = Σ_k exp(−‖a − c_k‖² / (2·0.25²)) has four equal peaks at (±0.5, ±0.5). Two
policies are trained on it for a few seconds each with flowrl's own primitives (the critic is the
known reward, so nothing but the policy is learned):

  gaussian   tanh-Gaussian · direct sampler · ∇Q through the sample · entropy (α = 0.05): SAC's
             actor. A unimodal family must pick one peak.
  diffusion  VP diffusion · DDPM 10 steps · reverse-sampling weighted denoising (SDAC) toward
             π ∝ exp(r/τ), τ = 0.05, on uniform 'replay' actions. It can put mass on every peak.

Run:  python examples/toy_bandit.py [--out toy_bandit.png]
It prints how many samples of each policy land near each peak and saves the samples over the
reward landscape as a PNG. tests/test_toy_bandit.py asserts those coverage numbers.
"""
import argparse
import json
from typing import Dict

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowrl.primitives import parameterization, regularizer, sampler, signal, weighted_denoising
from flowrl.primitives.base import ActorInputs, EnvSpec

CENTERS = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]], np.float32)
WIDTH = 0.25
SPEC = EnvSpec(obs_dim=1, act_dim=2)
BATCH = 256


def reward(a):
  """r(a) for actions [..., 2]."""
  d2 = jnp.sum(jnp.square(a[..., None, :] - CENTERS), axis=-1)
  return jnp.sum(jnp.exp(-d2 / (2 * WIDTH ** 2)), axis=-1)


def _q(obs, a):
  return reward(a)[None]                               # a one-member 'ensemble': the true reward


def _train(policy, samp, loss_fn, steps: int, learning_rate: float, seed: int):
  """`steps` Adam steps on loss_fn(params, inputs, key) inside one jitted lax.scan."""
  params = policy.init(jax.random.PRNGKey(seed))
  opt = optax.adam(learning_rate)
  obs = jnp.ones((BATCH, 1))              # the single state of the bandit

  def step(carry, key):
    params, opt_state = carry
    a_key, l_key = jax.random.split(key)
    replay = jax.random.uniform(a_key, (BATCH, 2), minval=-1.0, maxval=1.0)
    inputs = ActorInputs(obs, replay, {'improved_action': replay}, policy, samp, _q,
                         lambda a, k: a)
    loss, grads = jax.value_and_grad(lambda p: loss_fn(p, inputs, l_key))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  run = jax.jit(lambda p, k: jax.lax.scan(step, (p, opt.init(p)), jax.random.split(k, steps)))
  (params, _), losses = run(params, jax.random.PRNGKey(seed + 1))
  return params, np.asarray(losses)


def train_gaussian(steps: int = 1500, seed: int = 0):
  policy = parameterization.tanh_gaussian(hidden=(64, 64))(SPEC)
  samp = sampler.sampler(sampler.direct())
  reg = regularizer.exact_entropy(alpha_init=0.05, learning_rate=0.0)(SPEC)
  q_signal, reg_state = signal.reparam_q(), reg.init()

  def loss(params, inputs, key):
    value, aux = q_signal.loss(params, inputs, key)
    return value + reg.actor_loss(reg_state, aux, params, inputs, key)

  params, _ = _train(policy, samp, loss, steps, 3e-3, seed)
  return policy, samp, params


def train_diffusion(steps: int = 1500, seed: int = 0):
  gin.bind_parameter('DenoiserNet.hidden', (64, 64))
  gin.bind_parameter('DenoiserNet.obs_hidden', ())
  gin.bind_parameter('DenoiserNet.time_dim', 16)
  policy = parameterization.vp_diffusion()(SPEC)
  samp = sampler.sampler(sampler.ddpm(), steps=10)
  sdac = weighted_denoising.reverse_sampling(num_samples=64, temperature=0.05)
  params, _ = _train(policy, samp, lambda p, inputs, key: sdac.loss(p, inputs, key)[0], steps,
                     3e-3, seed)
  return policy, samp, params


def draw(policy, samp, params, n: int = 4000, seed: int = 7) -> np.ndarray:
  obs = jnp.ones((n, 1))
  return np.asarray(jax.jit(lambda k: sampler.draw(samp, policy, params, obs, k).action)(
      jax.random.PRNGKey(seed)))


def coverage(actions: np.ndarray, radius: float = 0.25) -> Dict[str, object]:
  """Share of samples within `radius` of each peak, and how many peaks hold ≥ 10% of them."""
  d = np.linalg.norm(actions[:, None, :] - CENTERS[None], axis=-1)
  shares = [float(np.mean(d[:, k] < radius)) for k in range(len(CENTERS))]
  return {'share_per_peak': [round(s, 3) for s in shares],
          'peaks_covered': int(sum(s >= 0.10 for s in shares)),
          'near_any_peak': round(float(np.mean(d.min(1) < radius)), 3),
          'mean_reward': round(float(np.mean(reward(jnp.asarray(actions)))), 3)}


def plot(samples: Dict[str, np.ndarray], path: str):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  grid = np.linspace(-1, 1, 201)
  xx, yy = np.meshgrid(grid, grid)
  r = np.asarray(reward(jnp.stack([xx, yy], -1)))
  fig, axes = plt.subplots(1, len(samples), figsize=(5 * len(samples), 5))
  for ax, (name, a) in zip(np.atleast_1d(axes), samples.items()):
    ax.contourf(xx, yy, r, levels=20, cmap='Greys')
    ax.scatter(a[:1000, 0], a[:1000, 1], s=3, alpha=0.5, color='tab:red')
    cov = coverage(a)
    ax.set_title(f"{name}: {cov['peaks_covered']} of 4 peaks covered")
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect('equal')
  fig.suptitle('Action samples over the reward of a four-peak bandit')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(out: str = 'toy_bandit.png', steps: int = 1500) -> Dict[str, dict]:
  samples = {'gaussian': draw(*train_gaussian(steps)), 'diffusion': draw(*train_diffusion(steps))}
  plot(samples, out)
  return {name: coverage(a) for name, a in samples.items()}


if __name__ == '__main__':
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', default='toy_bandit.png')
  p.add_argument('--steps', type=int, default=1500, help='Adam steps per policy')
  args = p.parse_args()
  print(json.dumps(main(args.out, args.steps), indent=2))
  print(f'saved {args.out}')
