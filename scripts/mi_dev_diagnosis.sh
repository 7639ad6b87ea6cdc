#!/usr/bin/env bash
# MI formulation diagnosis (docs/results.md, "Dev diagnosis") on the dev split (not the reported val): stage-1 epoch-6 backbone, 2 epochs, 1 cached draw.
set -euo pipefail
export OMP_NUM_THREADS=1
W=runs/mi_dev
mkdir -p $W
for ext in safetensors json; do  # the stage-1 run's epoch-6 snapshot (scripts/synthtrack_proof.sh makes it)
  [ -f $W/backbone.$ext ] || cp runs/synthtrack_proof/baseline/epoch_006.$ext $W/backbone.$ext
done
common=(--set model.backbone.pretrained=$W/backbone.safetensors --set train.feature_cache=$W/cache
        --set train.feature_cache_draws=1 --set train.epochs=2 --set train.mi_diagnostics_every=10)
for form in balanced vsd; do
  if [ "$form" = vsd ]; then cfg=configs/synthtrack_stage2_tdmi_w8_vsd.yaml; else cfg=configs/synthtrack_stage2_tdmi_w8.yaml; fi
  [ -f $W/$form/last.safetensors ] || tdmi train --config $cfg "${common[@]}" --out $W/$form > $W/$form.train.log 2>&1
  [ -f $W/$form/dev/results.json ] || tdmi test --checkpoint $W/$form/last.safetensors --config $W/$form/config.yaml \
      --set data.val_annotations=annotations/dev --boxes gt --out $W/$form/dev > $W/$form.test.log 2>&1
done
for form in no_mi; do
  [ -f $W/$form/last.safetensors ] || tdmi train --config configs/synthtrack_stage2_tdmi_w8_no_mi.yaml "${common[@]}" --out $W/$form > $W/$form.train.log 2>&1
  [ -f $W/$form/dev/results.json ] || tdmi test --checkpoint $W/$form/last.safetensors --config $W/$form/config.yaml \
      --set data.val_annotations=annotations/dev --boxes gt --out $W/$form/dev > $W/$form.test.log 2>&1
done
echo done
