#!/usr/bin/env bash
# An ablation of one axis: QSM's sampler, DDPM against DDIM, everything else fixed, 4 seeds each,
# on the fast Pendulum task with the learning tests' small networks. On 2 CPU cores the two
# variants run side by side (one pinned worker per core, 4 vmapped seeds in each): about 70 s.
#
#   bash examples/ablation.sh [results folder]
#
# Writes table.md (IQM and mean of the final return with 95% CIs, which variant differs from the
# DDPM baseline), curves_Pendulum-v1.png, final_return.png and summary.json. Run it again with
# the same folder, or `python -m flowrl.ablate --resume FOLDER`, to finish an interrupted sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-ablations/example-qsm-sampler}"
python -m flowrl.ablate --gin=gin/qsm.gin --gin=gin/env/pendulum.gin \
    --axis 'sampler=@ddpm,@ddim' --seeds 4 \
    --bind 'train.total_frames=6000' --bind 'train.eval_every=1000' \
    --bind 'sampler.steps=5' --bind 'train.batch_size=128' \
    --bind 'DenoiserNet.hidden=(128, 128)' --bind 'DenoiserNet.obs_hidden=()' \
    --bind 'DenoiserNet.time_dim=16' --bind 'ensemble_q.hidden=(128, 128)' \
    --out "$OUT"
