#!/usr/bin/env bash
# D4RL-like offline datasets for Gymnasium MuJoCo v5, made on this machine from flowrl's own SAC
# (the recipe of Minari's generation scripts; D4RL's definitions, Fu et al. 2020):
#   expert         rollouts of the final SAC policy (deterministic)
#   medium         rollouts of the checkpoint whose evaluation return is closest to 1/3 of the
#                  expert's (deterministic)
#   medium-replay  SAC's replay buffer at that checkpoint (what it saw while it learned)
#   medium-expert  medium + expert
#   random         uniform random actions
# Each set records ref_min_score (random) and ref_max_score (the expert), so eval.csv of an
# offline run has D4RL's normalized score. Usage:
#   examples/make_locomotion_datasets.sh [TASK ...]          (default: Hopper-v5 Walker2d-v5 HalfCheetah-v5)
# Budgets (environment variables): EXPERT_FRAMES (default 1000000; about 2 h per 300k frames on 2
# cores), CKPT_EVERY (50000), STEPS per set (1000000, as Minari's; 100000 is enough to try it).
# EXPERT_GIN (gin/sac.gin) names the method that trains the expert: gin/ppo.gin reaches Hopper's
# expert level within 1M frames in about 20 min on 2 cores, but has no replay (no medium-replay
# set).
# LEVELS (expert medium medium-replay random medium-expert) picks the sets; NOISE (none) is how
# the medium policy acts: none (its evaluation action) or policy (its behaviour noise).
# The sets go to $MINARI_DATASETS_PATH (else ~/.minari/datasets) as flowrl/<task>/<level>-v0.
set -euo pipefail
EXPERT_FRAMES=${EXPERT_FRAMES:-${SAC_FRAMES:-1000000}}
EXPERT_GIN=${EXPERT_GIN:-gin/sac.gin}
LEVELS=" ${LEVELS:-expert medium medium-replay random medium-expert} "
NOISE=${NOISE:-none}
CKPT_EVERY=${CKPT_EVERY:-50000}
STEPS=${STEPS:-1000000}
RUNS=${RUNS:-runs/datasets}
TASKS=("$@")
[ ${#TASKS[@]} -eq 0 ] && TASKS=(Hopper-v5 Walker2d-v5 HalfCheetah-v5)

for task in "${TASKS[@]}"; do
  name=$(echo "${task%-v*}" | tr '[:upper:]' '[:lower:]')
  run="$RUNS/$(basename "$EXPERT_GIN" .gin)-$task"
  if [ ! -d "$run/checkpoints" ]; then
    # every checkpoint is kept (train.keep_checkpoints=0): medium comes from an earlier one
    python -m flowrl.run --gin="$EXPERT_GIN" --bind "env.name='$task'" --run-dir "$run" \
      --no-progress \
      --bind "train.total_frames=$EXPERT_FRAMES" --bind "train.checkpoint_every=$CKPT_EVERY" \
      --bind "train.eval_every=$CKPT_EVERY" --bind train.keep_checkpoints=0
  fi
  # the medium checkpoint: the evaluation (at a checkpointed frame) closest to 1/3 of the last
  medium=$(python - "$run/eval.csv" "$run/checkpoints" <<'PY'
import csv, os, sys
rows = [(int(r['frame']), float(r['return_mean'])) for r in csv.DictReader(open(sys.argv[1]))]
saved = {int(d) for d in os.listdir(sys.argv[2]) if d.isdigit()}
target = rows[-1][1] / 3
print(min((f for f, _ in rows if f in saved), key=lambda f: abs(dict(rows)[f] - target)))
PY
)
  echo "$task: expert = final policy of $run, medium = its checkpoint at frame $medium"
  collect() { python -m flowrl.collect --expert "$run" "$@"; }
  want() { [[ "$LEVELS" == *" $1 "* ]]; }
  if want expert; then collect --policy "$run" --steps "$STEPS" --id "flowrl/$name/expert-v0"; fi
  if want medium; then
    collect --policy "$run@$medium" --noise "$NOISE" --steps "$STEPS" --id "flowrl/$name/medium-v0"
  fi
  if want medium-replay; then
    collect --replay "$run@$medium" --id "flowrl/$name/medium-replay-v0"
  fi
  if want random; then
    collect --policy random --env "$task" --steps "$STEPS" --id "flowrl/$name/random-v0"
  fi
  if want medium-expert; then
    python -m flowrl.collect --combine "flowrl/$name/medium-v0,flowrl/$name/expert-v0" \
      --id "flowrl/$name/medium-expert-v0"
  fi
done
