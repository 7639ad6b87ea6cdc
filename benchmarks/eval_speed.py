"""Speed of `tdmi evaluate` on a PoseTrack18-val-sized synthetic set (170 sequences, ~30 labelled frames each).

Prints a table and writes JSON. The baseline, measured in the same run, is the official poseval package when it is
importable (it is not on PyPI: install it from its repository or put a checkout on PYTHONPATH); otherwise only
our timings are reported.

    PYTHONPATH=src python benchmarks/eval_speed.py [--sequences 170] [--json-out eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic PoseTrack generator shared with the tests
sys.path.insert(0, str(ROOT / "src"))

from posetrack_gen import make_gt_sequence, make_predictions, write_sequences  # noqa: E402
from tdmi.evaluation.posetrack_ap import evaluate_dirs, evaluate_sequences, reader_processes  # noqa: E402


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=170)
    parser.add_argument("--frames", type=int, default=60, help="images per sequence; every 2nd is labelled")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default="eval_speed.json")
    parser.add_argument("--no-baseline", action="store_true", help="skip poseval even if importable")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    gts = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=args.frames, labeled_every=2)
           for i in range(1, args.sequences + 1)}
    preds = {n: make_predictions(rng, g, miss_prob=0.1, extra_people=0.8) for n, g in gts.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir = write_sequences(Path(tmp) / "gt", gts)
        pred_dir = write_sequences(Path(tmp) / "pred", preds)
        t_dirs, result = best_of(args.repeats, lambda: evaluate_dirs(gt_dir, pred_dir))
        # the same read with Python's json module (what evaluate_dirs used before orjson), for the ratio
        from tdmi.evaluation import posetrack_files

        parser_module, posetrack_files._orjson = posetrack_files._orjson, None
        try:
            t_stdlib, stdlib_result = best_of(args.repeats, lambda: evaluate_dirs(gt_dir, pred_dir))
        finally:
            posetrack_files._orjson = parser_module
        assert stdlib_result.table == result.table
        t_serial, serial_result = best_of(args.repeats, lambda: evaluate_dirs(gt_dir, pred_dir, workers=1))
        assert serial_result.table == result.table
        t_mem, _ = best_of(args.repeats, lambda: evaluate_sequences(gts, preds))
        t_pt21, _ = best_of(args.repeats, lambda: evaluate_dirs(gt_dir, pred_dir, protocol="pt21"))
        rows += [("tdmi evaluate_dirs (read JSON + AP)", t_dirs),
                 ("tdmi evaluate_dirs, stdlib json reader", t_stdlib),
                 ("tdmi evaluate_dirs, 1 reader process", t_serial),
                 ("tdmi evaluate_sequences (in memory)", t_mem),
                 ("tdmi evaluate_dirs, pt21 protocol", t_pt21)]
        t_official, official_mean = None, None
        track_rows: list[tuple[str, float]] = []
        t_track_official, official_mota, eval_helpers = None, None, None
        if not args.no_baseline:
            try:
                from poseval import eval_helpers, evaluateAP
            except ImportError:
                pass
            if eval_helpers is not None:
                def run_official():
                    g, p = eval_helpers.load_data_dir(["", f"{gt_dir}/", f"{pred_dir}/"])
                    return evaluateAP.evaluateAP(g, p, None, False, False)
                t_official, (ap, _, _) = best_of(1, run_official)
                official_mean = float(ap[15, 0])
                rows.append(("poseval (baseline)", t_official))
        # tracking metrics (tdmi evaluate --track) against poseval --evalPoseTracking, when both are importable
        from tdmi.evaluation.posetrack_mota import evaluate_tracking_dirs

        t_track, track_result = best_of(args.repeats, lambda: evaluate_tracking_dirs(gt_dir, pred_dir))
        track_rows.append(("tdmi evaluate_tracking_dirs (MOTA)", t_track))
        if not args.no_baseline:
            try:
                from poseval import evaluateTracking
            except ImportError:
                evaluateTracking = None
            if evaluateTracking is not None and eval_helpers is not None:
                import contextlib
                import io

                def run_official_tracking():
                    g, p = eval_helpers.load_data_dir(["", f"{gt_dir}/", f"{pred_dir}/"])
                    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
                        return evaluateTracking.evaluateTracking(g, p, tmp, False, False)
                t_track_official, official_tracking = best_of(1, run_official_tracking)
                track_rows.append(("poseval --evalPoseTracking (baseline)", t_track_official))
                official_mota = [float(v) for v in official_tracking["mota"][0]]
    people = sum(len(g["annotations"]) for g in gts.values())
    print(f"{args.sequences} sequences, {result.num_frames} evaluated frames, {people} GT people, "
          f"{result.num_predicted_people} predicted people; Mean AP {result.table['Mean']:.2f}")
    print(f"`tdmi evaluate` reads the files in {reader_processes(args.sequences)} processes on {os.cpu_count()} cores")
    print(f"{'method':<40} {'seconds':>9} {'vs poseval':>11}")
    for name, seconds in rows:
        ratio = f"{t_official / seconds:10.1f}x" if t_official else "        n/a"
        print(f"{name:<40} {seconds:9.3f} {ratio}")
    if official_mean is not None:
        print(f"Mean AP identical to poseval: {official_mean == result.table['Mean']}")
    for name, seconds in track_rows:
        ratio = f"{t_track_official / seconds:10.1f}x" if t_track_official else "        n/a"
        print(f"{name:<40} {seconds:9.3f} {ratio}")
    mota_identical = None
    if official_mota is not None:
        mota_identical = bool(np.array_equal(np.asarray(official_mota), track_result.mota, equal_nan=True))
        print(f"MOTA identical to poseval (16 values): {mota_identical}")
    payload = {
        "sequences": args.sequences, "frames_evaluated": result.num_frames, "gt_people": people,
        "mean_ap": result.table["Mean"], "timings_s": {name: seconds for name, seconds in rows},
        "speedup_vs_poseval": {name: (t_official / s if t_official else None) for name, s in rows},
        "poseval_mean_ap": official_mean, "python": platform.python_version(), "machine": platform.machine(),
        "tracking_timings_s": {name: seconds for name, seconds in track_rows},
        "tracking_speedup_vs_poseval": {name: (t_track_official / s if t_track_official else None)
                                        for name, s in track_rows},
        "mota_total": float(track_result.mota[-1]), "mota_identical_to_poseval": mota_identical,
        "reader_processes": reader_processes(args.sequences), "cores": os.cpu_count(),
    }
    Path(args.json_out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"eval_speed: evaluate_dirs {t_dirs:.2f} s for {args.sequences} sequences; wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
