"""Offline methods on a locally made Hopper-v5 "medium" dataset: diffusion BC, IQL, Diffusion-QL
and FQL at one update budget over several seeds (trained together, vmapped), the final
iterate's D4RL-normalized score with rliable stratified-bootstrap 95% CIs; writes
benchmarks/results/offline_hopper.json and its section of docs/benchmarks.md.

The dataset (`flowrl/hopper/medium-v0` under MINARI_DATASETS_PATH) is made first by the recipe
  EXPERT_GIN=gin/ppo.gin LEVELS=medium NOISE=policy STEPS=200000 CKPT_EVERY=25000 \
      examples/make_locomotion_datasets.sh Hopper-v5
(an expert PPO run of 1M frames; medium: its checkpoint nearest a third of the expert's return,
acting with its Gaussian noise; ref_max: the expert's deterministic return). Published D4RL
numbers are context, never a gate: the data differs (MuJoCo v5, another policy).
Then, with --finetune METHOD, DPPO fine-tunes that method's offline policies online.
Usage: python benchmarks/offline_hopper.py [--methods ...] [--updates 10000] [--seeds 3]
       [--behaviour 'TEXT'] [--finetune diffusion_bc --finetune-frames 40000]
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, 'benchmarks', 'results', 'offline_hopper.json')
DOC = os.path.join(ROOT, 'docs', 'benchmarks.md')
DATASET = 'flowrl/hopper/medium-v0'
# Every method at its own file's settings, except the network widths, which are 3x256 for all
# (Diffusion-QL's own; FQL's 4x512 runs at about 6 updates/s here, benchmarks/offline_throughput.py)
# so that the four fit the budget on 2 cores.
ORDER = ['diffusion_bc', 'iql', 'dql', 'fql']


def run_key(method: str, updates: int) -> str:
  """A row of results['methods']: one method at one update budget, e.g. 'dql@100k'."""
  return f'{method}@{updates // 1000}k'

COMMON = ['ensemble_q.hidden=(256, 256, 256)', 'one_step_flow.hidden=(256, 256, 256)',
          'DenoiserNet.hidden=(256, 256, 256)']


def run_method(method: str, updates: int, seeds: int, work: str, every: int) -> list:
  """Final normalized scores per seed, and the curves."""
  import gin
  from flowrl import run as cli
  from flowrl.runtime import driver
  out = os.path.join(work, method)
  if not os.path.exists(os.path.join(out, 'done.json')):
    gin.clear_config()
    cli.parse_config([os.path.join(ROOT, 'gin', f'{method}.gin')],
                     [f'dataset_source.name="{DATASET}"', f'train.total_frames={updates}',
                      f'train.eval_every={every}', f'train.checkpoint_every={every}', *COMMON])
    agent, cfg, env = cli.build()
    driver.run(agent, cfg, env, out, progress=False, seeds=list(range(seeds)),
               resume=os.path.isdir(os.path.join(out, 'checkpoints')))
    json.dump({'done': True}, open(os.path.join(out, 'done.json'), 'w'))
  curves = {}
  for s in range(seeds):
    rows = list(csv.DictReader(open(os.path.join(out, f'seed_{s}', 'eval.csv'))))
    curves[s] = ([int(r['frame']) for r in rows], [float(r['normalized_score_mean']) for r in rows],
                 [float(r['return_mean']) for r in rows])
  return curves


FINETUNE = [  # DPPO's fine-tuning (gin/dppo_finetune.gin) on the offline policy's network,
    # schedule and 5 steps, the last 3 fine-tuned (the paper: 10 of 20), 4 envs (the paper: 40)
    'env.name="Hopper-v5"', 'DenoiserNet.hidden=(256, 256, 256)', 'DenoiserNet.obs_hidden=()',
    'DenoiserNet.time_dim=16', 'DenoiserNet.activation="mish"',
    'vp_diffusion.schedule=@linear_schedule', 'linear_schedule.beta_min=0.1',
    'linear_schedule.beta_max=10.0', 'sampler.steps=5', 'vp_diffusion.train_steps=5',
    'sampler.fine_tune_steps=3', 'train.envs_per_seed=4', 'rollout_source.steps=500',
    'rollout_source.minibatches=4', 'train.eval_episodes=10']


def finetune(method: str, frames: int, seeds: int, work: str, every: int,
             all_steps: bool = False) -> dict:
  """DPPO online from the offline run of `method` (--init-from; each seed from its own seed):
  the normalized score per evaluation, from the offline policy's last score on. `all_steps`:
  the control, every denoising step fine-tuned (no frozen base)."""
  import gin
  from flowrl import run as cli
  from flowrl.runtime import driver
  tag = '-all-steps' if all_steps else ''
  source, out = os.path.join(work, method), os.path.join(work, f'{method}-dppo{tag}')
  if not os.path.exists(os.path.join(out, 'done.json')):
    gin.clear_config()
    cli.parse_config([os.path.join(ROOT, 'gin', 'dppo_finetune.gin')],
                     FINETUNE + [f'train.total_frames={frames}', f'train.eval_every={every}',
                                 f'train.checkpoint_every={every}']
                     + (['sampler.fine_tune_steps=0']
                        if all_steps else []))
    agent, cfg, env = cli.build()
    driver.run(agent, cfg, env, out, progress=False, seeds=list(range(seeds)), init_from=source)
    json.dump({'done': True}, open(os.path.join(out, 'done.json'), 'w'))
  from flowrl.data import offline
  data = offline.load(DATASET)
  curves = {}
  for s in range(seeds):
    rows = list(csv.DictReader(open(os.path.join(out, f'seed_{s}', 'eval.csv'))))
    curves[str(s)] = {'frames': [int(r['frame']) for r in rows],
                      'normalized': [float(offline.normalized_score(
                          float(r['return_mean']), data.ref_min_score, data.ref_max_score))
                          for r in rows]}
  return {'from': method, 'frames': frames, 'curves': curves}


def later_range(entry: dict) -> str:
  """The lowest and highest normalized evaluation of any seed from half the budget on: how far
  the final iterate could have landed elsewhere."""
  later = [x for c in entry['curves'].values() for u, x in zip(c['updates'], c['normalized'])
           if u >= entry['updates'] // 2]
  return f'{min(later):.1f} to {max(later):.1f}'


def section(results: dict) -> str:
  lines = ['<!-- offline-hopper:start -->', '## Offline: Hopper-v5 medium, made here', '',
           'Written by `python benchmarks/offline_hopper.py` from '
           '`benchmarks/results/offline_hopper.json` (do not edit by hand). ' + results['protocol'],
           '', '| method | updates | seeds | final normalized scores | mean [95% CI] | '
           'IQM [95% CI] | final returns | all evaluations from half the budget on |',
           '|---|---|---|---|---|---|---|---|']
  for key, e in sorted(results['methods'].items(),
                       key=lambda kv: (ORDER.index(kv[0].split('@')[0]), kv[1]['updates'])):
    m = key.split('@')[0]
    ci = lambda x: f'{x[0]:.1f} [{x[1]:.1f}, {x[2]:.1f}]'
    lines.append(f"| {m} | {e['updates'] // 1000}k | {len(e['final_scores'])} | "
                 f"{', '.join(f'{x:.1f}' for x in e['final_scores'])} | {ci(e['mean'])} | "
                 f"{ci(e['iqm'])} | {', '.join(f'{x:.0f}' for x in e['final_returns'])} | "
                 f"{later_range(e)} |")
  missing = [m for m in ORDER if run_key(m, 100_000) not in results['methods']]
  if missing:
    lines += ['', f"Not yet at 100k updates: {', '.join(missing)} (about 100 minutes each for "
              f"3 seeds here; `--updates 100000 --every 10000 "
              f"--work ablations/offline_hopper_100k` resumes from the last checkpoint)."]
  lines += ['', results['data']]
  ft, control = results.get('finetune'), results.get('finetune_all_steps')
  if ft:
    start = np.mean(results['methods'][run_key(ft['from'], 10_000)]['final_scores'])
    curve = lambda run: ', '.join(f'{f // 1000}k frames {m:.1f}' for f, m in zip(
        next(iter(run['curves'].values()))['frames'],
        np.mean([c['normalized'] for c in run['curves'].values()], axis=0)))
    lines += ['', f"Online fine-tuning with DPPO (`gin/dppo_finetune.gin` on the offline "
              f"policy's network: 5 steps, the last 3 fine-tuned from a frozen copy's first 2, "
              f"clip 0.01, 4 envs × 500-step rollouts) from the {ft['from']} policies "
              f"({len(ft['curves'])} seeds, each from its own), normalized score averaged over "
              f"seeds: offline {start:.1f}, then {curve(ft)}."]
    if control:
      lines[-1] += (f' The control with every step fine-tuned (`sampler.fine_tune_steps=0`, '
                    f'otherwise the same, 4 minibatches of 2500 pairs): {curve(control)}.')
  lines.append('<!-- offline-hopper:end -->')
  return '\n'.join(lines)


def write_doc(results: dict):
  text = open(DOC).read()
  start, end = '<!-- offline-hopper:start -->', '<!-- offline-hopper:end -->'
  block = section(results)
  if start in text:
    text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
  else:
    text = text.rstrip('\n') + '\n\n' + block + '\n'
  open(DOC, 'w').write(text)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--methods', default='diffusion_bc,iql,dql,fql')
  p.add_argument('--updates', type=int, default=10_000)
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--every', type=int, default=5_000)
  p.add_argument('--work', default=os.path.join(ROOT, 'ablations', 'offline_hopper'))
  p.add_argument('--finetune', default='', help='an offline method (diffusion_bc, dql) to '
                 'fine-tune online with DPPO after the offline runs')
  p.add_argument('--finetune-frames', type=int, default=40_000)
  p.add_argument('--behaviour', default='', help="the data's behaviour and expert policies, for "
                 'the report (kept from the last run when not given)')
  args = p.parse_args()
  from flowrl.data import offline
  from flowrl.sweep import statistics as st
  data = offline.load(DATASET)
  data_score = offline.normalized_score(data.episode_returns, data.ref_min_score,
                                        data.ref_max_score)
  results = json.load(open(RESULTS)) if os.path.exists(RESULTS) else {'methods': {}}
  results['protocol'] = (
      f'Seeds per method trained together (vmapped) at batch 256, 10 evaluation episodes at '
      f'each half of a 10k-update budget and each tenth of a 100k one; the final iterate\'s '
      f'normalized score 100·(R − R_min)/(R_max − R_min), R_min the random policy\'s '
      f'{data.ref_min_score:.1f}, R_max the expert\'s {data.ref_max_score:.1f}; networks 3x256 '
      f'for all four (FQL\'s own are 4x512), otherwise each gin file\'s settings.')
  if args.behaviour or 'data' not in results:  # else the description of an earlier run stays
    results['data'] = (
      f'Data: {DATASET}, {len(data.arrays["obs"])} transitions in {len(data.episode_returns)} '
      f'episodes of {args.behaviour}: episode return mean '
      f'{data.episode_returns.mean():.0f} (normalized {np.mean(data_score):.1f}). For context '
      f'only (other data), published on D4RL hopper-medium-v2 at 1M+ updates: BC 52.9 and IQL '
      f'66.3 (IQL paper), Diffusion-QL 90.5 (its paper).')
  for m in args.methods.split(','):
    curves = run_method(m, args.updates, args.seeds, args.work, args.every)
    final = np.array([[c[1][-1]] for c in curves.values()])
    est = st.final_score_intervals({m: final})[m]
    results['methods'][run_key(m, args.updates)] = {
        'updates': args.updates, 'every': args.every, 'final_scores': final[:, 0].tolist(),
        'final_returns': [c[2][-1] for c in curves.values()],
        'mean': [float(x) for x in est['mean']], 'iqm': [float(x) for x in est['iqm']],
        'curves': {str(s): {'updates': c[0], 'normalized': c[1]} for s, c in curves.items()}}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    json.dump(results, open(RESULTS, 'w'), indent=1)
    write_doc(results)
    print(m, args.updates, final[:, 0].tolist(), flush=True)
  if args.finetune:
    if args.updates != 10_000:
      sys.exit('--finetune continues the 10k-update runs (their work folder); run it with the '
               'default --updates')
    results['finetune'] = finetune(args.finetune, args.finetune_frames, args.seeds, args.work,
                                   args.finetune_frames // 4)
    results['finetune_all_steps'] = finetune(args.finetune, args.finetune_frames, args.seeds,
                                             args.work, args.finetune_frames // 4, True)
    json.dump(results, open(RESULTS, 'w'), indent=1)
    write_doc(results)
    print('finetune', results['finetune']['curves'], flush=True)


if __name__ == '__main__':
  main()
