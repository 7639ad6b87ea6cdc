"""Turn a training checkpoint into a checkpoint shipped in ``src/tdmi/weights/`` (the TDMI demo model and the
single-frame HRNet baseline it was compared with).

    python scripts/package_demo_checkpoint.py runs/bench/tdmi/seed_0/last.safetensors \
        --results runs/bench/tdmi_demo_test/results.json --val-sequences 30 --val-frames 30 --val-seed 1001
    python scripts/package_demo_checkpoint.py runs/bench/baseline/seed_0/last.safetensors \
        --out src/tdmi/weights/hrnet_baseline_demo.safetensors --results ... (same split)

(``scripts/ship_benchmark_demo.py`` makes these calls.) The sidecar records the split the table was measured on,
including the SynthTrack generator that rendered it (``--val-generator-version``, default 2, the current one; the
tables of the first shipped pair were measured on version 1, which their sidecars say by omitting the field).

Drops the training objective's weights (``mi_objective.*``), stores floating-point tensors as float16 (the file
halves to a few MB; they load back into float32 models), keeps the training config in the sidecar and, with
``--results``, records the validation table that `tdmi test` measured on exactly these weights. The config's
data paths are reset to the defaults of the SynthTrack demo, since the training machine's paths mean nothing to a
user.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tdmi.models.checkpoints import load_checkpoint, save_checkpoint

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "tdmi" / "weights" / "tdmi_demo.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--results", type=Path, help="results.json of `tdmi test` run on the packaged weights")
    parser.add_argument("--note", default="", help="free text stored in the sidecar (how it was trained)")
    parser.add_argument("--val-sequences", type=int, default=30, help="the SynthTrack val split the table is on")
    parser.add_argument("--val-frames", type=int, default=30)
    parser.add_argument("--val-seed", type=int, default=1001)
    parser.add_argument("--val-generator-version", type=int, default=2, choices=[1, 2],
                        help="the SynthTrack generator that rendered that split (tdmi synth --generator-version)")
    args = parser.parse_args()

    state, metadata = load_checkpoint(args.checkpoint)
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()
               if not k.startswith("mi_objective.")}
    config = metadata.get("config", {})
    data = config.setdefault("data", {})
    data.update(root="data/synthtrack", train_annotations="annotations/train", val_annotations="annotations/val")
    config["model"]["backbone"]["pretrained"] = None
    if "train" in config:  # the training machine's cache folder means nothing to a user
        config["train"]["feature_cache"] = None
    packaged = {"config": config, "training": metadata.get("training", {}), "source": str(args.checkpoint),
                "note": args.note, "dtype": "float16"}
    if args.results:
        results = json.loads(args.results.read_text())
        packaged["validation"] = {k: results[k] for k in results if k in
                                  ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")}
        packaged["validation"]["boxes"] = results.get("meta", {}).get("boxes", results.get("boxes", "gt"))
        # what `tdmi synth` makes the split the table was measured on (tests/test_shipped_checkpoint.py rebuilds it)
        packaged["validation"]["synthtrack"] = {"sequences": args.val_sequences, "frames": args.val_frames,
                                                "seed": args.val_seed, "split": "val",
                                                "generator_version": args.val_generator_version}
    path = save_checkpoint(args.out, weights, packaged)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB, {len(weights)} tensors)")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
