"""How long SynthTrack takes to write a set on one CPU core (target: the 10 x 30 default set in seconds).

Runs, in one process pinned to one core with OpenCV single-threaded:
  baseline  sharp set (no blur, occluders, shake or crowd), same sizes
  default   the default difficulty (blur, occlusion, shake, distractors, crowds)
and prints a table (wall and CPU seconds, frames per second, ratio to the baseline) plus JSON.

    PYTHONPATH=src python benchmarks/synth_speed.py [--sequences 10 --frames 30 --size 480 360 --json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2

from tdmi.data.synthetic import DEFAULT_SIZE, SynthOptions, generate_synthtrack


def _run(name: str, options: SynthOptions, args) -> dict:
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        summary = generate_synthtrack(out, sequences=args.sequences, frames=args.frames, seed=args.seed,
                                      size=tuple(args.size), options=options, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"config": name, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "frames": summary.frames,
            "frames_per_cpu_s": round(summary.frames / cpu, 1), "blurred_frames": summary.blurred_frames,
            "occluded_frames": summary.occluded_frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=10)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, nargs=2, default=list(DEFAULT_SIZE), metavar=("W", "H"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    sharp = SynthOptions(blur_probability=0.0, occluder_probability=0.0, shake_probability=0.0,
                         distractor_probability=0.0, crowd_probability=0.0)
    rows = [_run("baseline (sharp, no occluders)", sharp, args), _run("default difficulty", SynthOptions(), args)]
    base = rows[0]["cpu_s"]
    for row in rows:
        row["cpu_ratio_to_baseline"] = round(row["cpu_s"] / base, 2)

    print(f"SynthTrack {args.sequences} sequences x {args.frames} frames at {args.size[0]}x{args.size[1]}, one core")
    print(f"{'config':34s} {'wall s':>8s} {'cpu s':>8s} {'frames/cpu s':>13s} {'x baseline':>11s} {'blurred':>8s}")
    for row in rows:
        print(f"{row['config']:34s} {row['wall_s']:8.2f} {row['cpu_s']:8.2f} {row['frames_per_cpu_s']:13.1f} "
              f"{row['cpu_ratio_to_baseline']:11.2f} {row['blurred_frames']:8d}")
    result = {"benchmark": "synth_speed", "sequences": args.sequences, "frames": args.frames, "size": args.size,
              "seed": args.seed, "cpu": platform.processor() or platform.machine(), "opencv": cv2.__version__,
              "rows": rows}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
