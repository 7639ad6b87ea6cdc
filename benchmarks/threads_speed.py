"""Wall time of `tdmi demo` and `tdmi infer` by thread setting, on an idle machine and with one core busy.

    python benchmarks/threads_speed.py                      # prints the table, writes benchmarks/threads_speed.json
    python benchmarks/threads_speed.py --repeats 1 --frames 20

Settings: ``--threads 1``, ``--threads <cores>`` (what PyTorch does by default) and ``auto`` (tdmi's default:
the cores other processes leave free, from a 0.2 s look at /proc/stat). Conditions: as found (the load average is
recorded: "idle" is only idle on an otherwise idle machine) and with one extra busy process (a Python busy loop).
The target (issue 10): the default within 1.2x of the best setting in both conditions. Each run is a fresh process
(the command as a user types it) without OMP_NUM_THREADS, so the setting under test decides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "video" / "vtest.avi"


def _run(command: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds of one command and the thread line it printed ("tdmi demo: 2 CPU threads (auto: ...)")."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - start
    chosen = next((line.strip() for line in done.stderr.splitlines() if "CPU thread" in line), "")
    return seconds, chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the settings; the fastest counts")
    parser.add_argument("--frames", type=int, default=24, help="demo clip length and infer frames of vtest")
    parser.add_argument("--json-out", default=str(ROOT / "benchmarks" / "threads_speed.json"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    tdmi = [sys.executable, "-m", "tdmi"]
    with tempfile.TemporaryDirectory() as tmp:
        workloads = {"demo": tdmi + ["demo", "--frames", str(args.frames), "--out", f"{tmp}/demo"]}
        if VIDEO.is_file():
            clip = Path(tmp) / "clip"
            clip.mkdir()
            import cv2

            capture = cv2.VideoCapture(str(VIDEO))
            for i in range(args.frames):
                ok, frame = capture.read()
                if ok:
                    cv2.imwrite(str(clip / f"{i:06d}.jpg"), frame)
            workloads["infer"] = tdmi + ["infer", str(clip), "--detector", "hog", "--redetect", "--out", f"{tmp}/infer"]
        rows = []
        for condition in ("as found", "one core busy"):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition != "as found" else None
            try:
                if busy is not None:
                    time.sleep(3)
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                for name, command in workloads.items():
                    settings = ("1", str(cores), "auto")
                    times = {setting: float("inf") for setting in settings}
                    auto_choices = []
                    for repeat in range(args.repeats):  # settings interleaved, so drift hits them all alike
                        for setting in settings[repeat % 3:] + settings[:repeat % 3]:
                            seconds, chosen = _run(command + ["--threads", setting], env)
                            times[setting] = min(times[setting], seconds)
                            if setting == "auto":
                                auto_choices.append(chosen)
                    best = min(times.values())
                    rows.append({"condition": condition, "load_average": round(load, 2), "workload": name,
                                 "seconds": {k: round(v, 2) for k, v in times.items()},
                                 "default_over_best": round(times["auto"] / best, 3),
                                 "torch_default_over_best": round(times[str(cores)] / best, 3),
                                 "auto_chose": auto_choices})
            finally:
                if busy is not None:
                    busy.kill()
    print(f"{'condition':<15} {'load':>5} {'workload':<7} {'1 thread':>9} {f'{cores} threads':>10} {'auto':>7} "
          f"{'auto/best':>9}")
    for r in rows:
        s = r["seconds"]
        print(f"{r['condition']:<15} {r['load_average']:>5.1f} {r['workload']:<7} {s['1']:>9.1f} "
              f"{s[str(cores)]:>10.1f} {s['auto']:>7.1f} {r['default_over_best']:>9.2f}  "
              f"auto chose: {'; '.join(c.split(': ', 1)[-1] for c in r['auto_chose'])}")
    Path(args.json_out).write_text(json.dumps({"cores": cores, "frames": args.frames, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
