#!/usr/bin/env bash
# The SynthTrack benchmark of docs/results.md ("The SynthTrack benchmark", protocol of 2026-12-06), end to end and
# resumable: rerun after an interruption and it continues where it stopped (finished runs are skipped, interrupted
# trainings resume from their last.state.pt).
#
#   bash scripts/synthtrack_benchmark.sh                 # everything, 2 training processes of one thread each
#   bash scripts/synthtrack_benchmark.sh --jobs 1        # one at a time (or JOBS=1)
#   bash scripts/synthtrack_benchmark.sh --device cuda --jobs 4   # on a GPU (the same runs; minutes in all)
#   COMMIT=1 bash scripts/synthtrack_benchmark.sh        # git-commit each result file as soon as it is written
#   ONLY="tdmi/0 tdmi_no_mi/0" bash scripts/synthtrack_benchmark.sh   # just these runs (after data, cache, MI choice)
#
# Steps (each skipped when its output exists):
#   data     SynthTrack version 2: train 60 x 40 (seed 1), dev 10 x 30 (seed 2), val 30 x 30 (seed 1001), and the
#            counterfactual val 40 x 20 (seed 2001: cfclean, cfdistractor, cfbackground) under runs/bench/data
#   cache    the frozen stage-1 backbone's features of 4 augmented draws of every training clip
#   speeds   val's articulated joint speeds (scripts/synthtrack_joint_speed.py)
#            -> docs/results/runs/val_joint_speed.json
#   choice   the MI formulation F*: tdmi with vsd, balanced and lineage (seed 100) scored on dev, the protocol's
#            rule applied -> docs/results/runs/mi_choice.json
#   arms     every arm and seed of the protocol, in the order of its questions, then the rival methods FAMI-Pose and
#            DCPose (issue 24, same protocol and budget); each finished run is scored by
#            scripts/benchmark_result.py into docs/results/runs/<arm>/seed<k>.json
#            then (addendum 13) tdmi_paper_tde: tdmi at the paper's TDE width, 3 seeds
#   ship     the best-on-dev tdmi seed and its baseline become the shipped demo pair (scripts/ship_benchmark_demo.py)
set -euo pipefail
cd "$(dirname "$0")/.."
work=runs/bench
data=$work/data
results=docs/results/runs
jobs=${JOBS:-2}
device=${DEVICE:-cpu}
# options win over the environment; anything else stops here, before any work
while [ $# -gt 0 ]; do
  case $1 in
    --device) [ $# -ge 2 ] || { echo "synthtrack_benchmark.sh: --device needs cpu, cuda or cuda:N" >&2; exit 2; }
              device=$2; shift 2 ;;
    --jobs) [ $# -ge 2 ] || { echo "synthtrack_benchmark.sh: --jobs needs a number" >&2; exit 2; }
            jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "synthtrack_benchmark.sh: unknown option '$1' (options: --device DEVICE, --jobs N, --help)" >&2; exit 2 ;;
  esac
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || {
  echo "synthtrack_benchmark.sh: --jobs/JOBS must be a positive whole number, not '$jobs'" >&2; exit 2; }
[[ $device =~ ^(cpu|cuda(:[0-9]+)?)$ ]] || {
  echo "synthtrack_benchmark.sh: --device/DEVICE must be cpu, cuda or cuda:N, not '$device'" >&2; exit 2; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}   # oversubscription: >10x slower
export work data results device
mkdir -p "$work" "$results"

# synthtrack_<split>.json is written last, so an interrupted generation is redone (deterministic per seed)
[ -f "$data/synthtrack_train.json" ] || tdmi synth --out "$data" --sequences 60 --frames 40 --seed 1 --split train
[ -f "$data/synthtrack_dev.json" ] || tdmi synth --out "$data" --sequences 10 --frames 30 --seed 2 --split dev
[ -f "$data/synthtrack_val.json" ] || tdmi synth --out "$data" --sequences 30 --frames 30 --seed 1001 --split val
[ -f "$data/synthtrack_cfbackground.json" ] || tdmi synth --out "$data" --counterfactual --sequences 40 \
  --frames 20 --seed 2001 --split cf

if [ ! -f "$work/feature_cache/manifest.json" ] || ! python - "$work/feature_cache/manifest.json" <<'PY'
import json, sys
sys.exit(0 if len(json.load(open(sys.argv[1]))["draws_done"]) >= 4 else 1)
PY
then
  python - "$device" > "$work/feature_cache.log" 2>&1 <<'PY'
import sys
import torch
from tdmi.config import load_config
from tdmi.engine.feature_cache import build_feature_cache
cfg = load_config("configs/bench_tdmi_w8.yaml")
build_feature_cache(cfg, cfg.train.feature_cache, cfg.train.feature_cache_draws, seed=cfg.train.feature_cache_seed,
                    device=torch.device(sys.argv[1]))
PY
fi

commit() {  # commit one result file at once (COMMIT=1), so a stopped session loses at most the runs in flight
  if [ "${COMMIT:-0}" = 1 ]; then
    git add "$1" && git commit -q -m "benchmark result: $1" -- "$1" || echo "could not commit $1" >&2
  fi
}
export -f commit

# the val split's articulated joint speeds, which the report reads the per-joint gains against
if [ ! -f "$results/val_joint_speed.json" ]; then
  python scripts/synthtrack_joint_speed.py --gt "$data/annotations/val" --out "$results/val_joint_speed.json"
  commit "$results/val_joint_speed.json"
fi

# train NAME CONFIG [--set ...]: train into $work/NAME (resuming); CPU seconds of each invocation appended
train() {
  local name=$1 config=$2; shift 2
  local run=$work/$name
  [ -f "$run/finished" ] && return 0
  mkdir -p "$run"
  if [ -f "$run/last.state.pt" ]; then
    /usr/bin/time -a -o "$run/cpu_time.txt" -f "%U %S" tdmi train --resume "$run" --device "$device" \
      >> "$run/train.log" 2>&1 || return 1
  else
    /usr/bin/time -a -o "$run/cpu_time.txt" -f "%U %S" tdmi train --config "$config" --out "$run" \
      --device "$device" "$@" > "$run/train.log" 2>&1 || return 1
  fi
  touch "$run/finished"
}
export -f train

# The MI formulation F* (protocol step 5), decided once and committed.
choice=$results/mi_choice.json
if [ ! -f "$choice" ]; then
  for formulation in vsd balanced lineage; do
    train "mi_choice/$formulation" configs/bench_tdmi_w8.yaml --set train.seed=100 \
      --set "model.mi.formulation=$formulation" &
    [ "$jobs" -le 1 ] && wait
  done
  wait
  for formulation in vsd balanced lineage; do
    out=$results/mi_choice/$formulation.json
    [ -f "$out" ] && continue
    tdmi test --checkpoint "$work/mi_choice/$formulation/last.safetensors" --set "data.root=$data" \
      --set data.val_annotations=annotations/dev --set data.workers=0 --boxes gt \
      --out "$work/mi_choice/$formulation/dev" > "$work/mi_choice/$formulation/dev.log" 2>&1
    mkdir -p "$results/mi_choice"
    cp "$work/mi_choice/$formulation/dev/results.json" "$out"
  done
  python - "$results/mi_choice" "$choice" <<'PY'
import json, sys
from pathlib import Path
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
dev = {f: json.loads((folder / f"{f}.json").read_text())["Mean"] for f in ("vsd", "balanced", "lineage")}
best = max(dev.values())
tied = [f for f in ("lineage", "vsd", "balanced") if best - dev[f] < 0.5]  # under 0.5 mAP is a tie
chosen = tied[0]  # the rule's order of preference: lineage, then vsd, then balanced
rule = ("highest dev Mean AP; differences under 0.5 mAP are ties, broken in favour of lineage, then vsd "
        "(protocol of 2026-12-06, step 5)")
out.write_text(json.dumps({"dev_mean_ap": dev, "chosen": chosen, "rule": rule}, indent=1) + "\n")
print(f"MI formulation F* = {chosen} (dev Mean AP: {dev})")
PY
  commit "$choice"
  for f in vsd balanced lineage; do commit "$results/mi_choice/$f.json"; done
fi
fstar=$(python -c "import json; print(json.load(open('$choice'))['chosen'])")
export fstar

# run_arm ARM SEED: train (if needed) and score one run into its result file
run_arm() {
  local arm=$1 seed=$2
  local out=$results/$arm/seed$seed.json
  [ -f "$out" ] && return 0
  local extra=() name=$arm/seed_$seed
  case $arm in
    tdmi|static|keyframe|concat|tdmi_paper_tde) extra=(--set "model.mi.formulation=$fstar") ;;
  esac
  if [ "$arm" = tdmi_lineage_mi ] && [ "$fstar" = lineage ] && [ "$seed" -le 2 ]; then
    name=tdmi/seed_$seed   # the same runs as tdmi's (protocol step 4)
  fi
  train "$name" "configs/bench_${arm}_w8.yaml" --set "train.seed=$seed" "${extra[@]}" || return 1
  local subs=()
  [ "$arm" = tdmi ] && subs=(--substitutions)
  python scripts/benchmark_result.py "$work/$name" --arm "$arm" --seed "$seed" --data "$data" "${subs[@]}" \
    --out "$out" >> "$work/$name/result.log" 2>&1 || return 1
  commit "$out"
  echo "done: $arm seed $seed"
}
export -f run_arm

# The job list, in the order of the protocol's questions: one seed of every arm first, then the remaining seeds.
{
  for seed in 0 1 2; do
    for arm in tdmi tdmi_no_mi static keyframe concat tdmi_lineage_mi tde_only baseline fami_pose dcpose; do
      echo "$arm $seed"
    done
  done
  for seed in 3 4 5; do
    echo "tdmi $seed"
    echo "tdmi_no_mi $seed"
  done
  for seed in 0 1 2; do
    echo "tdmi_paper_tde $seed"   # addendum 13: TDMI at the paper's TDE width, near DCPose's parameter count
  done
} | while read -r arm seed; do
  if [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $arm/$seed "* ]]; then echo "$arm $seed"; fi
done | xargs -P "$jobs" -L 1 bash -c 'run_arm "$@"' _

echo "synthtrack_benchmark: all runs scored under $results (the report: scripts/synthtrack_benchmark_report.py)"

# The shipped pair (protocol addendum 12): the best-on-dev tdmi seed and its baseline, once every tdmi seed is in.
# Baselines exist for seeds 0-2; when seed 3, 4 or 5 wins on dev, its baseline is trained (and scored) here.
if [ -z "${ONLY:-}" ]; then
  python scripts/ship_benchmark_demo.py --dev-only --work "$work" --data "$data" --results "$results"
  chosen=$(python -c "import json; print(json.load(open('$results/demo_choice.json'))['chosen'])")
  run_arm baseline "$chosen"
  python scripts/ship_benchmark_demo.py --work "$work" --data "$data" --results "$results"
  if [ "${COMMIT:-0}" = 1 ]; then
    shipped=("$results/dev" "$results/demo_choice.json" src/tdmi/weights/tdmi_demo.*
             src/tdmi/weights/hrnet_baseline_demo.*)
    git add "${shipped[@]}" \
      && git commit -q -m "the shipped demo pair from the benchmark (docs/results.md addendum 12)" -- "${shipped[@]}" \
      || echo "could not commit the demo pair" >&2
  fi
fi
