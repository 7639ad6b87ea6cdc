"""Confidence intervals for the mAP loss of the video inference modes against naive (issue 11's <= 0.5 target).

Protocol (written before the first full run): the predictions are those of the last run of
``benchmarks/infer_speed.py`` (``--cache-dir``/predictions/<mode>/, one PoseTrack18 file per SynthTrack
sequence), scored by tdmi's poseval-identical metric. The loss of a mode is naive's pooled Mean AP minus the
mode's, over all sequences. Its uncertainty: a paired bootstrap over sequences (the same resampled sequences for
naive and the mode, ``--resamples`` times, seed 0; ``tdmi.evaluation.bootstrap``), the 2.5 and 97.5 percentiles
as a 95% interval, and the share of resamples with no loss. Sequences, not person-frames, are resampled because
the people of one sequence share its scene and motion. With 10 sequences the interval is wide; it says how far
the point estimate can be trusted, not more.

Several runs (``--runs DIR DIR ...``: prediction folders of repeated runs, e.g. models trained with other seeds, each
with one ``<mode>/`` folder per mode) make the interval include the variance between runs: a two-level bootstrap
(resample the runs, then the sequences; naive and each mode share the run, so they are paired by it;
``two_level_bootstrap``), with each run's own loss beside it. One run gives the sequence-level interval only, and
the JSON says so (``"run_variance": false``).

    PYTHONPATH=src python benchmarks/infer_speed.py --repeats 1 --synth-sequences 10
    PYTHONPATH=src python scripts/map_loss_ci.py --resamples 2000
    # -> the table printed, docs/results/infer_map_loss_ci.json
    PYTHONPATH=src python scripts/map_loss_ci.py --runs seed0/predictions seed1/predictions seed2/predictions
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tdmi.data.fileio import atomic_write_json
from tdmi.evaluation.bootstrap import mean_ap, paired_bootstrap, sequence_stats, two_level_bootstrap

REPO = Path(__file__).resolve().parents[1]
MODES = ("tube", "warp", "tube-online", "warp-online")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: PYTHONPATH=src python scripts/map_loss_ci.py --resamples 1000")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "bench-results" / "infer_speed_cache",
                        help="infer_speed.py's --cache-dir (default: its default)")
    parser.add_argument("--sequences", type=int, default=10, help="the run's --synth-sequences (default 10)")
    parser.add_argument("--frames", type=int, default=30, help="the run's --synth-frames (default 30)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--runs", type=Path, nargs="+", default=None, metavar="DIR",
                        help="prediction folders of repeated runs (each with one folder per mode); default: the "
                             "cache's predictions/ alone")
    parser.add_argument("--json-out", type=Path, default=REPO / "docs" / "results" / "infer_map_loss_ci.json")
    args = parser.parse_args()

    gt_dir = args.cache_dir / f"synth_{args.sequences}x{args.frames}" / "annotations" / "val"
    pred_roots = args.runs or [args.cache_dir / "predictions"]
    if not list(gt_dir.glob("*.json")):
        print(f"error: no SynthTrack annotations in {gt_dir}: run benchmarks/infer_speed.py with "
              f"--synth-sequences {args.sequences} first", file=sys.stderr)
        return 2
    for root in pred_roots:
        missing = [mode for mode in ("naive", *MODES) if not (root / mode).is_dir()]
        if missing:
            print(f"error: {root}: no prediction folder for {', '.join(missing)} (each run needs one per mode)",
                  file=sys.stderr)
            return 2
    # sequence_stats names a missing prediction file (predictions of another run) in its error
    stats = {mode: {k: sequence_stats(gt_dir, root / mode) for k, root in enumerate(pred_roots)}
             for mode in ("naive", *MODES)}
    maps = {mode: float(np.mean([mean_ap(s) for s in runs.values()])) for mode, runs in stats.items()}
    sequences = len(stats["naive"][0])
    several = len(pred_roots) > 1
    kind = (f"two-level bootstrap over {len(pred_roots)} runs and the sequences" if several
            else "paired bootstrap over sequences (one run: no run-to-run variance)")
    print(f"mAP loss vs naive (naive {maps['naive']:.2f}), {sequences} sequences, {args.resamples} resamples, {kind}")
    print(f"{'mode':<13}{'mAP':>7}{'loss':>7}{'95% interval':>18}{'P(loss <= 0)':>14}  per run")
    payload = {"sequences": [s.name for s in stats["naive"][0]], "resamples": args.resamples, "seed": 0,
               "runs": [str(r) for r in pred_roots], "run_variance": several, "map": maps, "loss": {}}
    for mode in MODES:
        if several:
            result = two_level_bootstrap(stats["naive"], stats[mode], paired=True, resamples=args.resamples, seed=0)
        else:
            result = paired_bootstrap([stats["naive"][0]], [stats[mode][0]], resamples=args.resamples, seed=0)
            result["per_seed"] = {0: result["difference"]}
        low, high = result["ci95"]
        per_run = " ".join(f"{v:+.2f}" for v in result["per_seed"].values())
        print(f"{mode:<13}{maps[mode]:>7.2f}{result['difference']:>7.2f}{f'[{low:.2f}, {high:.2f}]':>18}"
              f"{result['p_not_positive']:>14.2f}  {per_run}")
        payload["loss"][mode] = result
    atomic_write_json(args.json_out, payload)
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
