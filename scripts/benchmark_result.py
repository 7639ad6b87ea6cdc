"""One finished run of the SynthTrack benchmark -> its small result file ``docs/results/runs/<arm>/seed<k>.json``.

The protocol is in docs/results.md ("The SynthTrack benchmark", 2026-12-06). For the run's last weights this script
scores, with GT boxes and the poseval protocol (the config's own test settings: no flip test, argmax decoding):

- the held-out val split: the 8-column table, every sequence's matched predictions (compact, for the two-level
  bootstrap of ``tdmi.evaluation.bootstrap``) and the per-person subsets (blurred, occluded, fast, distractor in
  crop, none of these) from the generator's per-person fields;
- each counterfactual set (``<prefix>clean``, ``<prefix>distractor``, ``<prefix>background``): table and matched
  predictions;
- with ``--substitutions``, val again with every supporting frame replaced by the key frame and by another
  sequence's frames (test-time controls, no training).

It also records the arm, seed, config, commit (HEAD, and the code commit: see :func:`code_commit`), training CPU
seconds (``<run>/cpu_time.txt`` written by the runner), optimizer steps and the epochs they amount to. The file is
written atomically; nothing is written when a step fails.

    PYTHONPATH=src python scripts/benchmark_result.py runs/bench/tdmi/seed_0 --arm tdmi --seed 0 \\
        --data runs/bench/data [--substitutions] [--out docs/results/runs/tdmi/seed0.json]
"""

from __future__ import annotations

import argparse
import copy
import math
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")
COUNTERFACTUAL = ("clean", "distractor", "background")
BLURRED_PX, OCCLUDED_JOINTS, FAST_QUANTILE = 3.0, 2, 0.75


def code_commit(repo: Path) -> tuple[str, bool | None]:
    """The newest commit that changed anything outside ``docs/results``, and whether tracked files outside it differ
    from HEAD. HEAD alone is not enough: with ``COMMIT=1`` the benchmark commits each result file as it lands, so
    HEAD is a result-only commit on the benchmark's own branch, which may never reach main; the code commit is the
    one whose code scored the run, and the one a reader can check out. Outside a git checkout: ``("", None)``."""
    outside = ["--", ".", ":(exclude)docs/results"]
    found = subprocess.run(["git", "log", "-1", "--format=%H", *outside], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", *outside], cwd=repo, capture_output=True)
    return found.stdout.strip(), {0: False, 1: True}.get(dirty.returncode)


def _table(result) -> dict:
    return {k: round(float(result.table[k]), 3) for k in COLUMNS}


def person_subsets(gt_dir: Path) -> tuple[dict[str, set], float]:
    """Per subset, the ``(file, image_id, track_id)`` of its people on labelled frames; and the speed threshold (the
    top quarter of val's labelled people)."""
    people = []
    for path in sorted(gt_dir.glob("*.json")):
        for ann in json.loads(path.read_text())["annotations"]:
            fields = ann.get("synthtrack", {})
            if "speed" not in fields:
                raise SystemExit(f"{path}: annotations without per-person fields; regenerate the data with "
                                 "SynthTrack version >= 2 (tdmi synth)")
            people.append(((path.name, ann["image_id"], ann["track_id"]), fields))
    fast = float(np.quantile([f["speed"] for _, f in people], FAST_QUANTILE))
    subsets: dict[str, set] = {name: set() for name in ("blurred", "occluded", "fast", "distractor_in_crop", "none")}
    for key, f in people:
        flags = {"blurred": f["blur_px"] >= BLURRED_PX, "occluded": f["hidden_joints"] >= OCCLUDED_JOINTS,
                 "fast": f["speed"] >= fast, "distractor_in_crop": bool(f["distractor_in_crop"])}
        for name, on in flags.items():
            if on:
                subsets[name].add(key)
        if not any(flags.values()):
            subsets["none"].add(key)
    return subsets, fast


def subset_ap(gt_dir: Path, pred_dir: Path, keep: set, work: Path) -> dict:
    """poseval AP over the people in ``keep`` only: the others leave the ground truth and the predictions (with GT
    boxes, a prediction carries its person's track id)."""
    from tdmi.evaluation.posetrack_ap import evaluate_dirs

    gt_out, pred_out = work / "gt", work / "pred"
    gt_out.mkdir(parents=True)
    pred_out.mkdir(parents=True)
    for path in sorted(gt_dir.glob("*.json")):
        gt = json.loads(path.read_text())
        pred = json.loads((pred_dir / path.name).read_text())
        for doc in (gt, pred):
            doc["annotations"] = [a for a in doc["annotations"]
                                  if (path.name, a["image_id"], a.get("track_id")) in keep]
        (gt_out / path.name).write_text(json.dumps(gt))
        (pred_out / path.name).write_text(json.dumps(pred))
    result = evaluate_dirs(gt_out, pred_out)
    return {**{k: round(float(result.table[k]), 3) for k in COLUMNS}, "people": len(keep)}


def score(model, cfg, annotations: str, work: Path, overrides: dict | None = None) -> tuple[dict, dict, object]:
    """Test on ``annotations`` (relative to the data root): table, encoded matched predictions, the TestResult."""
    from tdmi.engine.test import run_test
    from tdmi.evaluation.bootstrap import encode_stats, sequence_stats

    cfg = copy.deepcopy(cfg)
    cfg.data.val_annotations = annotations
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    result = run_test(model, cfg, split="val", boxes="gt", out_dir=work, device="cpu", progress=False)
    return _table(result), encode_stats(sequence_stats(result.ground_truth, result.predictions_dir)), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run folder (config.yaml, last.safetensors)")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="SynthTrack root with val and the counterfactual sets")
    parser.add_argument("--counterfactual-prefix", default="cf")
    parser.add_argument("--substitutions", action="store_true", help="also the two test-time substitutions")
    parser.add_argument("--weights", default="last.safetensors", help="file in the run folder (default last)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default docs/results/runs/<arm>/seed<seed>.json")
    args = parser.parse_args(argv)
    out = args.out or REPO / "docs" / "results" / "runs" / args.arm / f"seed{args.seed}.json"
    weights = args.run / args.weights
    for path, what in ((weights, "weights"), (args.data / "annotations" / "val", "val annotations")):
        if not path.exists():
            parser.error(f"{path}: {what} not found")

    import torch

    from tdmi.atomic import atomic_write_json
    from tdmi.engine.test import load_model_for_test
    from tdmi.models.summary import summarise_config

    torch.set_num_threads(1)
    start = time.process_time()
    loaded = load_model_for_test(weights, device="cpu", overrides=[f"data.root={args.data}", "data.workers=0"])
    model, cfg, metadata = loaded
    record: dict = {"arm": args.arm, "seed": args.seed, "run": str(args.run), "weights": args.weights,
                    "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                             text=True).stdout.strip(),
                    "config": metadata["config"], "training": metadata.get("training", {})}
    record["code_commit"], record["code_dirty"] = code_commit(REPO)
    steps = int(record["training"].get("step", 0))
    cache_manifest = Path(cfg.train.feature_cache or "") / "manifest.json"
    samples = json.loads(cache_manifest.read_text())["num_samples"] if cache_manifest.is_file() else None
    record["steps"] = steps
    # optimizer steps per epoch as the trainer counts them: ceil(samples / batch) batches (the last one partial),
    # grouped by train.grad_accum
    from tdmi.engine.train import steps_per_epoch

    epoch_steps = (steps_per_epoch(math.ceil(samples / cfg.train.batch_size), cfg.train.grad_accum) if samples
                   else None)
    record["epochs_from_steps"] = round(steps / epoch_steps, 3) if epoch_steps else None
    cpu_file = args.run / "cpu_time.txt"
    if "cpu_seconds" in record["training"]:
        # the trainer's own count, summed over resumes (a process killed at a session's end never writes its line
        # to cpu_time.txt, so that file undercounts interrupted runs)
        record["train_cpu_seconds"], record["train_cpu_source"] = record["training"]["cpu_seconds"], "trainer"
    else:  # runs trained before the trainer counted: one "user system" line per invocation in cpu_time.txt
        record["train_cpu_seconds"] = (round(sum(float(v) for line in cpu_file.read_text().splitlines()
                                                 for v in line.split()[:2]), 1) if cpu_file.is_file() else None)
        record["train_cpu_source"] = "cpu_time.txt"
    summary = summarise_config(cfg)
    record["trainable_parameters"] = summary["trainable_parameters"]
    record["macs_per_person"] = summary["macs"]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        table, stats, result = score(model, cfg, "annotations/val", work / "val")
        record["val"] = {"table": table, "stats": stats}
        subsets, fast = person_subsets(result.ground_truth)
        record["val"]["fast_speed_threshold"] = round(fast, 4)
        record["val"]["subsets"] = {name: subset_ap(result.ground_truth, result.predictions_dir, keep,
                                                    work / f"subset_{name}")
                                    for name, keep in subsets.items()}
        record["counterfactual"] = {}
        for variant in COUNTERFACTUAL:
            split = f"{args.counterfactual_prefix}{variant}"
            if not (args.data / "annotations" / split).is_dir():
                continue
            table, stats, _ = score(model, cfg, f"annotations/{split}", work / split)
            record["counterfactual"][variant] = {"table": table, "stats": stats}
        if args.substitutions:
            record["substitutions"] = {}
            for name, overrides in (("key_frame", None), ("other_sequence", {"test": {"support_from":
                                                                                     "other_sequence"}})):
                if name == "key_frame":
                    static, _, _ = load_model_for_test(weights, device="cpu", overrides=[
                        f"data.root={args.data}", "data.workers=0", "model.support_frames=key_frame"])
                    table, stats, _ = score(static, cfg, "annotations/val", work / f"sub_{name}")
                else:
                    table, stats, _ = score(model, cfg, "annotations/val", work / f"sub_{name}", overrides)
                record["substitutions"][name] = {"table": table, "stats": stats}
    record["scoring_cpu_seconds"] = round(time.process_time() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    print(f"benchmark_result: {args.arm} seed {args.seed}: val Mean {record['val']['table']['Mean']:.2f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
