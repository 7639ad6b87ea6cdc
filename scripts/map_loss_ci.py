"""Confidence intervals for the mAP loss of the video inference modes against naive (issue 11's <= 0.5 target).

Protocol (fixed before reading the intervals): the predictions are those of the last run of
``benchmarks/infer_speed.py`` (``--cache-dir``/predictions/<mode>/, one PoseTrack18 file per SynthTrack
sequence), scored by tdmi's poseval-identical metric. The loss of a mode is naive's pooled Mean AP minus the
mode's, over all sequences. Its uncertainty: a paired bootstrap over sequences (the same resampled sequences for
naive and the mode, ``--resamples`` times, seed 0), the 2.5 and 97.5 percentiles as a 95% interval, and the share of
resamples with a loss above 0.5. Sequences, not person-frames, are resampled because the people of one sequence
share its scene and motion. With 10 sequences the interval is wide; it says how far the point estimate can be
trusted, not more.

    PYTHONPATH=src python benchmarks/infer_speed.py --repeats 1 --synth-sequences 10
    PYTHONPATH=src python scripts/map_loss_ci.py --resamples 1000
    # -> the table printed, docs/results/infer_map_loss_ci.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tdmi.data.fileio import atomic_write_json
from tdmi.evaluation.posetrack_ap import evaluate_dirs

REPO = Path(__file__).resolve().parents[1]
MODES = ("tube", "warp", "tube-online", "warp-online")


def pooled_map(gt_dir: Path, pred_dir: Path, names: list[str]) -> float:
    """Mean AP over ``names`` (repeats allowed: each copy is its own sequence), through links in a temp folder."""
    with tempfile.TemporaryDirectory() as tmp:
        gt, pred = Path(tmp, "gt"), Path(tmp, "pred")
        gt.mkdir()
        pred.mkdir()
        for i, name in enumerate(names):
            os.symlink((gt_dir / name).resolve(), gt / f"{i:03d}_{name}")
            os.symlink((pred_dir / name).resolve(), pred / f"{i:03d}_{name}")
        return float(evaluate_dirs(gt, pred, workers=1).table["Mean"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: PYTHONPATH=src python scripts/map_loss_ci.py --resamples 1000")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "bench-results" / "infer_speed_cache",
                        help="infer_speed.py's --cache-dir (default: its default)")
    parser.add_argument("--sequences", type=int, default=10, help="the run's --synth-sequences (default 10)")
    parser.add_argument("--frames", type=int, default=30, help="the run's --synth-frames (default 30)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json-out", type=Path, default=REPO / "docs" / "results" / "infer_map_loss_ci.json")
    args = parser.parse_args()

    gt_dir = args.cache_dir / f"synth_{args.sequences}x{args.frames}" / "annotations" / "val"
    pred_root = args.cache_dir / "predictions"
    names = sorted(p.name for p in gt_dir.glob("*.json"))
    if not names:
        print(f"error: no SynthTrack annotations in {gt_dir}: run benchmarks/infer_speed.py with "
              f"--synth-sequences {args.sequences} first", file=sys.stderr)
        return 2
    for mode in ("naive", *MODES):
        missing = [n for n in names if not (pred_root / mode / n).is_file()]
        if missing:
            print(f"error: {pred_root / mode} lacks {missing[0]} (and {len(missing) - 1} more): the predictions "
                  f"are from another run; rerun benchmarks/infer_speed.py --synth-sequences {args.sequences}",
                  file=sys.stderr)
            return 2

    full = {mode: pooled_map(gt_dir, pred_root / mode, names) for mode in ("naive", *MODES)}
    rng = np.random.default_rng(0)
    losses: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in tqdm(range(args.resamples), desc="bootstrap", unit="resample", file=sys.stderr):
        sample = list(rng.choice(names, len(names)))
        base = pooled_map(gt_dir, pred_root / "naive", sample)
        for mode in MODES:
            losses[mode].append(base - pooled_map(gt_dir, pred_root / mode, sample))

    print(f"\nmAP loss vs naive (naive {full['naive']:.2f}), {len(names)} sequences, {args.resamples} paired "
          "bootstrap resamples")
    print(f"{'mode':<13}{'mAP':>7}{'loss':>7}{'95% interval':>18}{'P(loss > 0.5)':>15}")
    payload = {"sequences": names, "resamples": args.resamples, "seed": 0, "map": full, "loss": {}}
    for mode in MODES:
        sample = np.asarray(losses[mode])
        low, high = np.percentile(sample, [2.5, 97.5])
        share = float((sample > 0.5).mean())
        loss = full["naive"] - full[mode]
        print(f"{mode:<13}{full[mode]:>7.2f}{loss:>7.2f}{f'[{low:.2f}, {high:.2f}]':>18}{share:>15.2f}")
        payload["loss"][mode] = {"point": loss, "ci95": [float(low), float(high)], "p_loss_above_0_5": share}
    atomic_write_json(args.json_out, payload)
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
