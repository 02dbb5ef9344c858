"""What holds FPO++ back on a fast task: InvertedPendulum-v5 with the diffusion/flow learning
test's settings (tests/test_learning.py GENERATIVE_COMMON: 2 vmapped seeds x 4 envs, rollouts
of 256 steps, 41k frames, 5 evaluations), FPO's flow settings, and one change at a time from
FPO's averaged ratio to FPO++'s per-pair ASPO; then gin/fpopp.gin itself and one change at a
time from it: 4x the iterations (rollouts of 64 steps; the same frames, minibatch size and
optimizer steps), no SPO branch, FPO's eps-space loss, 4x or 16x the rollout at the same 40
iterations (more frames), and the learning test's looser setting (clip 1.0, lr 3e-4), each
with the mean CFM loss over |A| and t ~ U(0, 1) they were measured with; last, gin/fpopp.gin now
(flow-rl's loss sum / sqrt|A| and t ~ U(0.005, 0.995)), alone and in the learning test. One
variant at a time, on both cores. Prints and writes benchmarks/results/fpopp_variants.json
(the seeds' mean return per evaluation).
Usage: python benchmarks/fpopp_variants.py [--work DIR]"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, 'benchmarks', 'results', 'fpopp_variants.json')
FPO = ['rollout_source.epochs=16', 'Method.reward_scale=1.0', 'Method.gamma=0.99']
PAIRS = FPO + ['fpo_ratio.per_sample=True']
LR_3E4 = ['actor_optimizer.learning_rate=3e-4', 'critic_optimizer.learning_rate=3e-4']
# The table was measured before gin/fpopp.gin took flow-rl's CFM reduction (sum / sqrt|A|) and t
# range (0.005, 0.995): its fpopp rows keep the mean over |A| and t ~ U(0, 1) they ran with.
AS_MEASURED = ['fpo_ratio.reduction="mean"', 'fpo_ratio.t_range=None']
VARIANTS = {   # name: (gin file, bindings beyond GENERATIVE_COMMON)
    'fpo (losses averaged, PPO-clip)': ('fpo', FPO),
    'per-pair ratios, PPO-clip': ('fpo', PAIRS),
    'per-pair ratios, ASPO, clip 0.05 (FPO++)': ('fpo', PAIRS + ['fpo_ratio.objective="aspo"']),
    'per-pair ratios, ASPO, clip 0.2': ('fpo', PAIRS + ['fpo_ratio.objective="aspo"',
                                                        'fpo_ratio.clip=0.2']),
    'per-pair ratios, ASPO, clip 0.5': ('fpo', PAIRS + ['fpo_ratio.objective="aspo"',
                                                        'fpo_ratio.clip=0.5']),
    'gin/fpopp.gin (velocity loss, 64 steps, lr 1e-4)': ('fpopp', []),
    # The same frames, minibatch size (256 rows) and optimizer steps; 4x the iterations, each a
    # new trust region: rollouts of 64 steps x 4 envs in one minibatch
    'gin/fpopp.gin, rollouts of 64 steps (160 iterations, not 40)': (
        'fpopp', ['rollout_source.steps=64', 'rollout_source.minibatches=1']),
    'gin/fpopp.gin with per-pair PPO-clip for every advantage (no SPO branch)': (
        'fpopp', ['fpo_ratio.objective="ppo"']),
    'gin/fpopp.gin with the eps-space loss (FPO\'s) instead of the velocity loss': (
        'fpopp', ['fpo_ratio.space="eps"']),
    # The same 40 iterations with 4x and 16x the rollout: is FPO++ a large-batch method?
    'gin/fpopp.gin with 16 envs (4096 frames per iteration, 40 iterations, 164k frames)': (
        'fpopp', ['train.envs_per_seed=16', 'train.total_frames=163840',
                  'train.eval_every=32768', 'train.checkpoint_every=163840']),
    'gin/fpopp.gin with 64 envs (16384 frames per iteration, 40 iterations, 655k frames)': (
        'fpopp', ['train.envs_per_seed=64', 'train.total_frames=655360',
                  'train.eval_every=131072', 'train.checkpoint_every=655360']),
    # A looser trust region and larger steps, as the learning test gives DPPO and ReinFlow:
    'gin/fpopp.gin at clip 1.0 and lr 3e-4': ('fpopp', ['fpo_ratio.clip=1.0', *LR_3E4]),
    'gin/fpopp.gin at clip 1.0 and lr 3e-4 in 8 minibatches (tests/test_learning.py)': (
        'fpopp', ['fpo_ratio.clip=1.0', *LR_3E4, 'rollout_source.minibatches=8']),
}
# gin/fpopp.gin as it is now, with flow-rl's CFM reduction and t range.
CURRENT = {
    'gin/fpopp.gin now (loss sum / sqrt|A|, t ~ U(0.005, 0.995))': ('fpopp', []),
    'gin/fpopp.gin now at clip 1.0 and lr 3e-4 in 8 minibatches (the learning test, with t ~ '
    'U(0.005, 0.995))': (
        'fpopp', ['fpo_ratio.clip=1.0', *LR_3E4, 'rollout_source.minibatches=8']),
}
VARIANTS.update(CURRENT)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--work', default=os.path.join(ROOT, 'ablations', 'fpopp_variants'))
  args = p.parse_args()
  import gin
  from flowrl import run as cli
  from flowrl.runtime import driver
  from tests.test_learning import GENERATIVE_COMMON, seed_mean_returns
  results = json.load(open(RESULTS)) if os.path.exists(RESULTS) else {}
  for i, (name, (method, extra)) in enumerate(VARIANTS.items()):
    out = os.path.join(args.work, str(i))
    if name not in results:
      gin.clear_config()
      cli.parse_config([os.path.join(ROOT, 'gin', f'{method}.gin')], GENERATIVE_COMMON + extra
                       + (AS_MEASURED if method == 'fpopp' and name not in CURRENT else []))
      agent, cfg, env = cli.build()
      driver.run(agent, cfg, env, out, progress=False, seeds=[0, 1])
      returns, per_seed = seed_mean_returns(out)
      results[name] = {'gin': f'gin/{method}.gin', 'bindings': extra,
                       'seed_mean': [round(r, 1) for r in returns],
                       'per_seed': [[round(r, 1) for r in s] for s in per_seed]}
      json.dump(results, open(RESULTS, 'w'), indent=1)
    print(name, results[name]['seed_mean'], flush=True)


if __name__ == '__main__':
  main()
