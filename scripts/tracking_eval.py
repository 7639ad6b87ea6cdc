"""Pose-aware tracker vs the IoU tracker, by poseval's MOTA, on SynthTrack val (issue 12, point 3).

Protocol (fixed before the first run): the shipped single-frame baseline (src/tdmi/weights/hrnet_demo) estimates
the poses of the held-out SynthTrack val split (30 x 30 frames, seed 1001, the proof's val) once per box source:
GT boxes (their track ids discarded) and SynthTrack's synthetic detections (score >= 0.2). Both trackers then
run over the same poses; the tracking submission leaves out joints scoring below the threshold (swept) and
people of unconfirmed tracks. Reported per tracker and threshold: MOTA Total, ID switches (summed over joints),
and the MOTA-best threshold. Target: pose tracker >= IoU tracker + 5 MOTA, switches at most half.

    python scripts/tracking_eval.py --data runs/synthtrack_proof/data --out runs/tracking_eval
    # -> docs/results/tracking.json and the table printed

Poses are cached in OUT/poses_<boxes>.npz, so a rerun only re-tracks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tdmi.atomic import atomic_write_json  # noqa: E402
from tdmi.engine.test import build_dataset, load_model_for_test, make_loader, predict_split  # noqa: E402
from tdmi.engine.test_tracking import TrackingSettings, track_split  # noqa: E402
from tdmi.evaluation.posetrack_mota import evaluate_tracking_dirs  # noqa: E402
from tdmi.evaluation.writers import PersonPrediction, write_posetrack18_predictions  # noqa: E402

THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
TRACKERS = ("iou", "pose")


def _save(path: Path, predictions: dict) -> None:
    keys = list(predictions)
    rows = [(i, p) for i, k in enumerate(keys) for p in predictions[k]]
    np.savez(path, keys=np.array(json.dumps(keys)), frame=np.array([i for i, _ in rows]),
             keypoints=np.stack([p.keypoints for _, p in rows]), heatmap=np.stack([p.heatmap_scores for _, p in rows]),
             box_score=np.array([p.box_score for _, p in rows]), box=np.stack([p.box for _, p in rows]))


def _load(path: Path) -> dict:
    data = np.load(path, allow_pickle=False)
    keys = [tuple(k) for k in json.loads(str(data["keys"]))]
    out: dict = {k: [] for k in keys}
    for i, kp, hm, bs, box in zip(data["frame"], data["keypoints"], data["heatmap"], data["box_score"], data["box"]):
        out[keys[i]].append(PersonPrediction(kp, hm, float(bs), None, box))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/synthtrack_proof/data")
    parser.add_argument("--checkpoint", default=str(ROOT / "src/tdmi/weights/hrnet_demo.safetensors"))
    parser.add_argument("--out", default="runs/tracking_eval")
    parser.add_argument("--json-out", default=str(ROOT / "docs/results/tracking.json"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model_for_test(args.checkpoint, device="cpu", overrides=[f"data.root={args.data}"])
    cfg = loaded.cfg
    report: dict = {"protocol": __doc__.split("\n\n")[1], "checkpoint": Path(args.checkpoint).name,
                    "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                             text=True, cwd=ROOT).stdout.strip(), "sources": {}}
    sources = {"gt": "gt", "detections": str(Path(args.data) / "detections" / "val_boxes.json")}
    for name, boxes in sources.items():
        dataset = build_dataset(cfg, "val", boxes=boxes)
        cache = out / f"poses_{name}.npz"
        if cache.is_file():
            predictions = _load(cache)
        else:
            start = time.perf_counter()
            cpu = torch.device("cpu")
            predictions = predict_split(loaded.model, make_loader(dataset, cfg, cpu), cpu, progress=True)
            print(f"{name}: poses of {len(dataset)} boxes in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            _save(cache, predictions)
        gt_dir = Path(args.data) / cfg.data.val_annotations
        rows = []
        for tracker in TRACKERS:
            for threshold in THRESHOLDS:
                _, submission = track_split(predictions, dataset.sequences, TrackingSettings(tracker, threshold))
                folder = out / f"{name}_{tracker}_{threshold:g}"
                write_posetrack18_predictions(gt_dir, submission, folder)
                result = evaluate_tracking_dirs(gt_dir, folder, allow_missing=True)
                rows.append({"tracker": tracker, "joint_threshold": threshold,
                             "MOTA": result.table["MOTA"]["Total"], "MOTP": result.table["MOTP"]["Total"],
                             "Precision": result.table["Precision"]["Total"], "Recall": result.table["Recall"]["Total"],
                             "switches": int(result.counts["switches"].sum()), "tracking": result.table})
                print(f"{name:10} {tracker:4} joints >= {threshold:.1f}: MOTA {rows[-1]['MOTA']:6.1f}  switches "
                      f"{rows[-1]['switches']:5d}  precision {rows[-1]['Precision']:5.1f}  recall "
                      f"{rows[-1]['Recall']:5.1f}")
        best = {t: max((r for r in rows if r["tracker"] == t), key=lambda r: r["MOTA"]) for t in TRACKERS}
        report["sources"][name] = {"boxes": boxes if name == "gt" else Path(boxes).name, "rows": rows,
                                   "best": {t: {k: best[t][k] for k in ("joint_threshold", "MOTA", "switches")}
                                            for t in TRACKERS},
                                   "mota_gain": best["pose"]["MOTA"] - best["iou"]["MOTA"],
                                   "switch_ratio": best["pose"]["switches"] / max(best["iou"]["switches"], 1)}
        print(f"{name}: best pose {best['pose']['MOTA']:.1f} (>= {best['pose']['joint_threshold']:g}) vs best iou "
              f"{best['iou']['MOTA']:.1f} (>= {best['iou']['joint_threshold']:g}): "
              f"{report['sources'][name]['mota_gain']:+.1f} MOTA, "
              f"switches x{report['sources'][name]['switch_ratio']:.2f}")
    atomic_write_json(Path(args.json_out), report, indent=2)
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
