#!/usr/bin/env bash
# The SynthTrack proof of docs/results.md: does TDMI's temporal modelling beat the single-frame HRNet at equal budget?
#
#   bash scripts/synthtrack_proof.sh [WORK_DIR]      (default WORK_DIR: runs/synthtrack_proof; about 1 h on 2 otherwise idle CPU cores)
#
# Protocol (the paper's, at CPU scale):
#   stage 1  the single-frame HRNet-W8 baseline trains from scratch on SynthTrack key frames for 8 epochs; it stands
#            in for the COCO-pretrained HRNet;
#   stage 2  TDMI (TDE, RDM, fusion, head, MI objective) trains for 2 epochs on clips over the frozen stage-1
#            backbone; the ablation without the MI objective gets the same 2 epochs;
#   budget   the baseline resumes for the same 2 extra epochs, so both have seen the same number of samples;
#   test     all three on a held-out SynthTrack split (other seeds), GT boxes, poseval-identical mAP.
# On small CPUs one thread per process avoids OpenMP oversubscription (it made steps >10x slower here).
set -euo pipefail
work=${1:-runs/synthtrack_proof}
data=$work/data
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$work"

[ -d "$data/annotations/train" ] || tdmi synth --out "$data" --sequences 40 --frames 40 --seed 1 --split train
[ -d "$data/annotations/val" ] || tdmi synth --out "$data" --sequences 12 --frames 30 --seed 1001 --split val

common=(--set "data.root=$data")
steps_per_epoch=$(python - "$data" <<'PY'
import math, sys
from tdmi.config import load_config
from tdmi.data.dataset import build_dataset
cfg = load_config("configs/synthtrack_stage1_hrnet_w8.yaml", [f"data.root={sys.argv[1]}"])
print(math.ceil(len(build_dataset(cfg, "train")) / cfg.train.batch_size))
PY
)

# Stage 1: baseline epochs 1-8 (the run is configured for 10; it stops after 8 to lend its backbone).
tdmi train --config configs/synthtrack_stage1_hrnet_w8.yaml "${common[@]}" --out "$work/baseline" \
  --set "train.max_steps=$((8 * steps_per_epoch))"

# Stage 2 (TDMI, TDMI without MI) and the baseline's last 2 epochs run side by side.
tdmi train --config configs/synthtrack_stage2_tdmi_w8.yaml "${common[@]}" --out "$work/tdmi" \
  --set "model.backbone.pretrained=$work/baseline/epoch_008.safetensors" > "$work/tdmi.log" 2>&1 &
tdmi train --config configs/synthtrack_stage2_tdmi_w8_no_mi.yaml "${common[@]}" --out "$work/tdmi_no_mi" \
  --set "model.backbone.pretrained=$work/baseline/epoch_008.safetensors" > "$work/tdmi_no_mi.log" 2>&1 &
tdmi train --config configs/synthtrack_stage1_hrnet_w8.yaml "${common[@]}" --out "$work/baseline" \
  --resume "$work/baseline" > "$work/baseline_resume.log" 2>&1 &
wait

for run in baseline tdmi tdmi_no_mi; do
  tdmi test --checkpoint "$work/$run/last.safetensors" "${common[@]}" --boxes gt --out "$work/$run/test" \
    | tee "$work/$run/test.log"
done
