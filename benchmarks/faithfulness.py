"""Does each named method learn as fast as its reference? Runs methods through `flowrl.ablate` at a
fixed frame budget on HalfCheetah-v5 and Hopper-v5, ≥ 4 seeds, 10 deterministic evaluation
episodes every 10k frames, and reports the final return (last evaluation) as mean and IQM with
rliable's stratified-bootstrap 95% CIs, against the reference figures where they exist.

  python benchmarks/faithfulness.py                          # every method of BUDGETS
  python benchmarks/faithfulness.py --methods sac,td3 --tasks HalfCheetah-v5
  python benchmarks/faithfulness.py --report-only            # redo docs/benchmarks.md from JSON

Each (method, task) is one `flowrl.ablate` sweep folder under --work (resumable: a finished sweep
is not rerun). Results merge into benchmarks/results/faithfulness.json, one entry per (method,
task), so methods can be run in pieces; the faithfulness section of docs/benchmarks.md and its
curves (docs/img/) are rewritten from the whole file every time. Prints the new entries as JSON.

Budgets (2 CPU cores, one process per core, 2 seeds vmapped in each): SAC and TD3 at 50k frames
(~200–280 updates/s); the diffusion methods at 20k frames (15k updates after the 5k random
frames), the shortest budget that still shows early learning, because their updates run at
2–56/s (benchmarks/throughput.py): QSM, DACER and DIPO by default. SDAC, IDEM, DPMD, GeMPO and
QVPO (2.6–7.7 updates/s: 20k frames × 4 seeds × 2 tasks is 6–17 hours here) are left to a longer
run of this same script, `--methods sdac,idem,dpmd,gempo,qvpo`.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TASKS = ('HalfCheetah-v5', 'Hopper-v5')
BUDGETS = {'sac': 50_000, 'td3': 50_000, 'qsm': 20_000, 'dacer': 20_000, 'dipo': 20_000}
SLOW = {'sdac': 20_000, 'idem': 20_000, 'dpmd': 20_000, 'gempo': 20_000, 'qvpo': 20_000}
# On-policy methods at the budget of their published figures, on their own tasks, evaluated every
# 50k frames (10 episodes every 10k would cost as many env steps as training).
ONPOLICY = {'ppo': 1_000_000}
ONPOLICY_TASKS = ('Hopper-v5', 'Walker2d-v5', 'HalfCheetah-v5')
# PPO in the setting behind SB3's published HalfCheetah figure (the RL Zoo's tuned
# hyperparameters), to tell the port from the setting where gin/ppo.gin (CleanRL's) falls short.
ONPOLICY['ppo-sb3'] = 1_000_000
OWN_TASKS = {'ppo-sb3': ('HalfCheetah-v5',)}
EXTRA_GIN = {'ppo-sb3': 'benchmarks/gin/ppo_sb3_halfcheetah.gin'}
# gin/ppo.gin with CleanRL's one clip over both networks (joint_clip) instead of one per network.
ONPOLICY['ppo-joint'] = 1_000_000
OWN_TASKS['ppo-joint'] = ('HalfCheetah-v5',)
EXTRA_GIN['ppo-joint'] = 'benchmarks/gin/ppo_joint_clip.gin'
# The SB3 setting with PyTorch's uniform biases as well as its weights (torch_linear).
ONPOLICY['ppo-sb3-torch'] = 1_000_000
OWN_TASKS['ppo-sb3-torch'] = ('HalfCheetah-v5',)
EXTRA_GIN['ppo-sb3-torch'] = 'benchmarks/gin/ppo_sb3_torch_init.gin'
EVAL_EVERY = {'ppo': 50_000, 'ppo-sb3': 50_000, 'ppo-joint': 50_000, 'ppo-sb3-torch': 50_000}
# The diffusion/flow on-policy methods side by side on Hopper-v5 at one frame budget, in a common
# small setting (benchmarks/gin/onpolicy_small/: 2x64 networks, 8 envs x 256 steps; their
# papers' settings are for 1M+ frames on GPUs), with PPO in the same setting as the baseline.
GENERATIVE = {f'{m}-small': 200_000 for m in ('ppo', 'dppo', 'reinflow', 'fpo', 'fpopp', 'genpo')}
GENERATIVE_TASKS = ('Hopper-v5',)
EVAL_EVERY.update({m: 20_000 for m in GENERATIVE})
_PPO_FIGURES = {'Hopper-v5': (2449, 2410), 'Walker2d-v5': (3142, 3479),
                'HalfCheetah-v5': (2149, 5819)}

# Reference figures: evaluation return at the same frame budget, same evaluation (10
# deterministic episodes), from the reference implementation run on this machine kind.
REFERENCE = {
    ('sac', 'HalfCheetah-v5', 50_000): {
        'target_mean': 3400.0,
        'reference_runs': [3969.0, 3479.0],
        'source': 'flow-rl (typoverflow/flow-rl) SAC, seeds 0 and 1, 50k frames, 10 deterministic '
                  'episodes, run on this machine kind; target: mean >= 3400 over >= 4 seeds'},
}
for _task, (_ppo2, _sb3) in _PPO_FIGURES.items():
  REFERENCE[('ppo', _task, 1_000_000)] = {
      'target_mean': float(min(_ppo2, _sb3)), 'reference_runs': [float(_ppo2), float(_sb3)],
      'source': 'published PPO at 1M steps on the MuJoCo v1-v3 tasks: OpenAI baselines ppo2 '
                '(Hopper 2449, Walker2d 3142, HalfCheetah 2149) and Stable-Baselines3 (2410, 3479, '
                '5819); target: mean >= the lower of the two'}
REFERENCE[('ppo-joint', 'HalfCheetah-v5', 1_000_000)] = REFERENCE[('ppo', 'HalfCheetah-v5',
                                                                  1_000_000)]
REFERENCE[('ppo-sb3', 'HalfCheetah-v5', 1_000_000)] = {
    'target_mean': 5819.0 - 663.0, 'reference_runs': [5819.0],
    'source': 'Stable-Baselines3 PPO, RL Zoo benchmark (HalfCheetah-v3, 1M steps, tuned '
              'hyperparameters of rl-baselines3-zoo hyperparams/ppo.yml): 5819 +- 663, one '
              'trained agent (benchmark.md: "it corresponds to only one run"), so 663 is the '
              'spread of its evaluation episodes, not of seeds; target: mean >= 5156, the '
              'published mean less that spread, set before the first run'}
REFERENCE[('ppo-sb3-torch', 'HalfCheetah-v5', 1_000_000)] = REFERENCE[('ppo-sb3', 'HalfCheetah-v5',
                                                                      1_000_000)]

# What a result means where no reference figure exists at its budget.
REMARKS = {
    ('qsm', 'HalfCheetah-v5', 20_000):
        'no reference figure at this budget (the QSM paper reports DMC, at 1M+ frames); at 15k '
        'updates its deterministic policy has not left the random level here, where SAC\'s four '
        'seeds were at −270 to 1370 (mean 317) at 20k frames. Whether that is QSM or a difference from its code is '
        'open: a longer run against the authors\' code is the next check.',
    ('ppo', 'HalfCheetah-v5', 1_000_000):
        'below the lower published figure (ppo2, 2149) by 14%, with the four seeds close together '
        '(1739-1899) and still rising at 1M frames: the target is not met. The setting is '
        'CleanRL\'s ppo_continuous_action.py, whose own benchmark of it at 1M steps on MuJoCo v4 '
        '(CleanRL docs/benchmark/ppo_continuous_action.md, tag pr-424; returns of training '
        'episodes, where this table evaluates deterministically) reports HalfCheetah 1443 ± 46, '
        'Hopper 2383 ± 272 and Walker2d 2288 ± 572. This library\'s 1840, 3031 and 4077 in that '
        'setting are at or above those on all three tasks, so the HalfCheetah gap is between '
        'settings (ppo2 2149, SB3 5819), not a loss of the ported one. In SB3\'s own tuned '
        'setting with PyTorch\'s init (the ppo-sb3-torch row) the same code reaches 5563, '
        'which meets the SB3 target.',
    ('ppo-sb3', 'HalfCheetah-v5', 1_000_000):
        'gin/ppo.gin with the RL Zoo\'s tuned HalfCheetah hyperparameters '
        '(benchmarks/gin/ppo_sb3_halfcheetah.gin), run to tell the port from the setting, now '
        'with SB3\'s one global-norm clip of 0.8 over both networks (joint_clip): the mean is '
        '4784 (seeds 6204, 4824, 5176, 2932), 2.6x the 1840 of CleanRL\'s setting, but below '
        'the target of 5156 set before the first run: not met. With one clip per network the '
        'same seeds gave 4638 (5887, 5158, 4645, 2862), so the coupled clip is within seed '
        'spread. Three seeds are at or above 4824 and the best above SB3\'s 5819; seed 3 stays '
        'near 2900 in both runs. SB3\'s figure is one trained agent and its 663 the spread of '
        'that agent\'s episodes, so a mean over seeds, which counts a stuck seed, is a harder '
        'bar than the one run it comes from. This row starts biases at zero; the ppo-sb3-torch '
        'row starts them as PyTorch does.',
    ('ppo-sb3-torch', 'HalfCheetah-v5', 1_000_000):
        'the ppo-sb3 setting with PyTorch\'s whole nn.Linear init, uniform biases included '
        '(torch_linear; benchmarks/gin/ppo_sb3_torch_init.gin): the mean 5563 [4940, 6186] '
        '(seeds 5279, 4602, 6367, 6004) meets the target of 5156, and two seeds pass SB3\'s '
        '5819. No seed stays near 2900 as one did with zero biases (4784), but four seeds '
        'cannot tell whether the biases or the draw made that difference. The one difference '
        'from SB3 left is that the running statistics move once per rollout (VecNormalize: '
        'every step).',
    ('ppo-joint', 'HalfCheetah-v5', 1_000_000):
        'gin/ppo.gin with CleanRL\'s one gradient clip of 0.5 over both networks (joint_clip, '
        'value coefficient 0.25; benchmarks/gin/ppo_joint_clip.gin) instead of one per '
        'network: the mean 2624 is above ppo2\'s 2149, but one seed makes it (5098, which '
        'pulled away from the others from 200k frames on); the other three end at 1715, 1882 '
        'and 1800, where the per-network clip\'s four ended at 1739-1899, and the IQM (1841) '
        'equals that row\'s mean (1840). So the coupled clip is not shown to change learning '
        'here; the target counts as met only by the mean, on one seed. gin/ppo.gin keeps its '
        'per-network clips, with which its Hopper and Walker2d rows were run.',
    ('ppo-small', 'Hopper-v5', 200_000):
        'the on-policy generative group (ppo-small, dppo-small, reinflow-small, fpo-small, '
        'fpopp-small, genpo-small) shares one small setting (benchmarks/gin/onpolicy_small/: 8 '
        'envs x 256 steps, 2x64 networks, observation normalization), learning from scratch; '
        'there is no published figure for it (the papers fine-tune pretrained policies, DPPO and '
        'ReinFlow, or run 1M+ frames on GPUs). At 200k frames Gaussian PPO leads (mean 1426); '
        'DPPO (1080) and ReinFlow (804) follow with one seed each far from the others (DPPO 2733, '
        'ReinFlow 168); FPO (386), GenPO (338, with its exact constant log-determinant; 266 with '
        'the float32 slogdet of its code) and FPO++ (245, three seeds near 100 and one at 672) '
        'are far behind (a random policy scores about 10 here), in a setting far from their '
        'papers\' (FPO: 16 epochs and reward x10 on GPU envs; GenPO and FPO++: thousands of '
        'parallel envs; FPO++\'s per-pair ASPO, benchmarks/fpopp_variants.py).',
}
RESULTS = os.path.join(ROOT, 'benchmarks', 'results', 'faithfulness.json')
DOC = os.path.join(ROOT, 'docs', 'benchmarks.md')
IMG = os.path.join(ROOT, 'docs', 'img')


def sweep_bindings(frames: int, method: str = ''):
  every = EVAL_EVERY.get(method, 10_000)
  return [f'train.total_frames={frames}', f'train.eval_every={every}', 'train.eval_episodes=10',
          f'train.checkpoint_every={frames}', f'train.log_every={max(5000, every // 2)}']


def gin_file(method: str) -> str:
  if method in EXTRA_GIN:
    return os.path.join(ROOT, EXTRA_GIN[method])
  if method in GENERATIVE:
    return os.path.join(ROOT, 'benchmarks', 'gin', 'onpolicy_small',
                        method[:-len('-small')] + '.gin')
  return os.path.join(ROOT, 'gin', method + '.gin')


def run_one(method: str, task: str, frames: int, seeds: int, work: str) -> str:
  """One ablate sweep (method × task × seeds); returns its folder."""
  from flowrl import ablate
  out = os.path.join(work, f'{method}-{task}-{frames}')
  args = [f'--gin={gin_file(method)}', '--env', task, '--seeds', str(seeds), '--out', out,
          '--reps', '2000']
  for b in sweep_bindings(frames, method):
    args += ['--bind', b]
  if os.path.exists(os.path.join(out, 'sweep.json')):
    args = ['--resume', out, '--reps', '2000']
  code = ablate.main(args)
  if code != 0:
    raise RuntimeError(f'flowrl.ablate failed for {method} on {task} (exit {code}); see {out}')
  return out


def entry(method: str, task: str, frames: int, out: str, reps: int) -> dict:
  from flowrl.sweep import report
  from flowrl.sweep import statistics as st
  res = report.collect_sweep(out)
  runs = res.curves[(res.variants[0], task)]
  final = np.array([[runs[s][1][-1]] for s in sorted(runs)])
  est = st.final_score_intervals({method: final}, reps=reps)[method]
  e = {'method': method, 'task': task, 'frames': frames, 'seeds': sorted(runs),
       'final_returns': final[:, 0].tolist(), 'mean': list(est['mean']), 'iqm': list(est['iqm']),
       'curves': {str(s): {'frames': f.tolist(), 'returns': r.tolist()}
                  for s, (f, r) in sorted(runs.items())}}
  ref = REFERENCE.get((method, task, frames))
  if ref:
    e['reference'] = ref
    e['meets_target'] = bool(est['mean'][0] >= ref['target_mean'])
  return e


def load() -> dict:
  return json.load(open(RESULTS)) if os.path.exists(RESULTS) else {}


def save(results: dict):
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, 'w') as f:
    json.dump(results, f, indent=1)


def _ci(interval) -> str:
  p, lo, hi = interval
  return f'{p:.0f} [{lo:.0f}, {hi:.0f}]'


def write_doc(results: dict):
  from flowrl.sweep import report
  os.makedirs(IMG, exist_ok=True)
  rows = sorted(results.values(), key=lambda e: (e['task'], -e['frames'], e['method']))
  lines = [
      '## Faithfulness: learning speed at a fixed frame budget', '',
      'Written by `python benchmarks/faithfulness.py` from `benchmarks/results/faithfulness.json` '
      '(this section only; do not edit it by hand). Each method runs its own gin file through `flowrl.ablate` on this '
      '2-core CPU machine, with 10 deterministic evaluation episodes every 10k frames (PPO: '
      'every 50k). The final '
      'return is the last evaluation (at the budget), never the best one seen. Mean and IQM over '
      'seeds with rliable stratified-bootstrap 95% CIs; with 4 seeds the IQM is the mean of the '
      'middle two.', '',
      '| task | method | frames | seeds | final returns | mean [95% CI] | IQM [95% CI] | reference |',
      '|---|---|---|---|---|---|---|---|']
  for e in rows:
    ref = e.get('reference')
    ref_cell = '—'
    if ref:
      ref_cell = (f"target mean ≥ {ref['target_mean']:.0f} "
                  f"({'met' if e['meets_target'] else '**not met**'}); reference runs "
                  + ', '.join(f'{x:.0f}' for x in ref['reference_runs']))
    lines.append(f"| {e['task']} | {e['method']} | {e['frames'] // 1000}k | {len(e['seeds'])} | "
                 + ', '.join(f'{x:.0f}' for x in e['final_returns'])
                 + f" | {_ci(e['mean'])} | {_ci(e['iqm'])} | {ref_cell} |")
  remarks = [f"{m} on {t} at {f // 1000}k frames: {text}" for (m, t, f), text in REMARKS.items()
             if f'{m}/{t}/{f}' in results]
  if remarks:
    lines += ['', 'Remarks: ' + ' '.join(remarks)]
  by_source = {}
  for (m, t, f), r in REFERENCE.items():
    by_source.setdefault(r['source'], []).append(f'{m} on {t} at {f // 1000}k frames')
  lines += ['', 'References: ' + '; '.join(
      f'{", ".join(runs)}: {source}' for source, runs in by_source.items()), '']
  for task in sorted({e['task'] for e in rows}):
    named = {e['method']: {int(sd): (np.array(c['frames']), np.array(c['returns']))
                           for sd, c in e['curves'].items()} for e in rows if e['task'] == task}
    name = f'faithfulness_{task}.png'
    report.curves_png(task, named, os.path.join(IMG, name), unit='seeds', marker='o', dpi=90)
    lines += [f'### {task}', '', f'![{task} learning curves](img/{name})', '']
  done = {(e['method'], e['task']) for e in rows}
  missing = [m for m in list(BUDGETS) + list(SLOW) + list(ONPOLICY) + list(GENERATIVE)
             if not any(e['method'] == m for e in rows)]
  partial = [f'{m} on {t}' for m in BUDGETS for t in TASKS
             if m not in missing and (m, t) not in done]
  if missing or partial:
    lines += ['### Not run yet', '',
              'At 2–56 updates/s on this machine (`benchmarks/throughput.py`: DACER 22, DIPO 16, '
              'QSM 56; SDAC 7.7, IDEM 4.6, QVPO 2.7, DPMD and GeMPO 2.6), 20k frames × 4 seeds × 2 '
              'tasks of a diffusion method take from about an hour (QSM) to 6–17 hours (the '
              'particle and reverse-sampling methods) of both cores. Not yet run here: '
              + ', '.join(partial + missing) + '. `python benchmarks/faithfulness.py --methods '
              + ','.join(dict.fromkeys([p.split(' on ')[0] for p in partial] + missing))
              + '` runs them with the same protocol (a finished sweep is not rerun) and adds them '
              'to this section.', '']
  _replace_section('\n'.join(lines))


START, END = '<!-- faithfulness:start -->', '<!-- faithfulness:end -->'


def _replace_section(text: str):
  """Write `text` between the faithfulness markers of docs/benchmarks.md, keeping the rest."""
  doc = open(DOC).read() if os.path.exists(DOC) else f'# Benchmarks\n\n{START}\n{END}\n'
  if START not in doc or END not in doc:
    doc = doc.rstrip('\n') + f'\n\n{START}\n{END}\n'
  head, rest = doc.split(START, 1)
  tail = rest.split(END, 1)[1]
  with open(DOC, 'w') as f:
    f.write(f'{head}{START}\n{text}\n{END}{tail}')


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--methods', default=','.join(BUDGETS),
                 help=f'comma-separated; budgets: {dict(BUDGETS, **SLOW, **ONPOLICY, **GENERATIVE)}')
  p.add_argument('--tasks', default=None, help=f'default: {",".join(TASKS)} '
                 f'({",".join(ONPOLICY_TASKS)} for {",".join(ONPOLICY)})')
  p.add_argument('--seeds', type=int, default=4)
  p.add_argument('--frames', type=int, help='override every method\'s budget')
  p.add_argument('--work', default=os.path.join(ROOT, 'ablations', 'faithfulness'))
  p.add_argument('--reps', type=int, default=20000)
  p.add_argument('--report-only', action='store_true')
  args = p.parse_args(argv)
  if args.seeds < 4 and not args.frames:
    p.error('the protocol needs >= 4 seeds')
  results = load()
  new = {}
  if not args.report_only:
    budgets = dict(BUDGETS, **SLOW, **ONPOLICY, **GENERATIVE)
    for method in args.methods.split(','):
      if method not in budgets:
        p.error(f'unknown method {method!r}; known: {", ".join(budgets)}')
      frames = args.frames or budgets[method]
      tasks = args.tasks or ','.join(OWN_TASKS.get(method) or ONPOLICY_TASKS if method in ONPOLICY else
                                     GENERATIVE_TASKS if method in GENERATIVE else TASKS)
      for task in tasks.split(','):
        out = run_one(method, task, frames, args.seeds, args.work)
        e = entry(method, task, frames, out, args.reps)
        new[f'{method}/{task}/{frames}'] = results[f'{method}/{task}/{frames}'] = e
        save(results)
        write_doc(results)
  write_doc(results)
  print(json.dumps({k: {x: v[x] for x in ('final_returns', 'mean', 'iqm', 'meets_target')
                        if x in v} for k, v in new.items()}, indent=1))


if __name__ == '__main__':
  main()
