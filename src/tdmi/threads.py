"""How many CPU threads inference commands use: ``--threads N`` or ``auto``.

On a shared machine PyTorch's default (one thread per core) is the worst choice: with one other busy process
on a 2-core machine, ``tdmi demo`` took 58.7 s with default threads against 5.7 s with one thread (issue 10),
because threads that wait for a core that another process holds stall every parallel kernel. ``auto`` (the
default) therefore takes the cores nobody else is using right now, and at least one:

    threads = max(1, min(cores, cores - round(busy cores)))

``busy cores`` is the CPU time the machine spent outside idle during a 0.2 s look at ``/proc/stat`` (this process
sleeps meanwhile, so it is everyone else's), counted over the cores this process may run on. The 1-minute load
average, used where ``/proc/stat`` is absent, lags: a command run just after another (or after a busy process
stopped) sees a load that is gone, and took one thread on an idle machine (``benchmarks/threads_speed.py``).

``OMP_NUM_THREADS`` set in the environment is the user's decision and wins over ``auto``. OpenCV (decoding,
resizing, HOG) gets the same number.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from tdmi.errors import CommandError


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


SAMPLE_SECONDS = 0.2
_PROC_STAT = "/proc/stat"


def _cpu_times(cores: set[int]) -> Optional[tuple[float, float]]:
    """(busy, total) jiffies summed over ``cores`` from /proc/stat, or None where it cannot be read."""
    try:
        with open(_PROC_STAT) as handle:
            lines = handle.readlines()
    except OSError:
        return None
    busy = total = 0.0
    seen = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit() or int(name[3:]) not in cores:
            continue
        values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)
        busy += sum(values) - idle
        total += sum(values)
        seen += 1
    return (busy, total) if seen else None


def busy_cores(seconds: float = SAMPLE_SECONDS) -> tuple[float, str]:
    """``(cores busy with other work, how it was measured)``: /proc/stat over ``seconds``, else the load average."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    before = _cpu_times(cores)
    if before is not None:
        time.sleep(seconds)
        after = _cpu_times(cores)
        if after is not None and after[1] > before[1]:
            share = (after[0] - before[0]) / (after[1] - before[1])
            return share * len(cores), f"{share * len(cores):.1f} busy over {seconds:g} s"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return load, f"load average {load:.1f}"


def choose_threads(requested: Optional[str | int] = "auto") -> tuple[int, str]:
    """``(threads, why)`` for ``--threads`` (``auto``, None or a positive integer)."""
    cores = available_cores()
    if requested is None or str(requested).strip().lower() == "auto":
        environment = os.environ.get("OMP_NUM_THREADS", "").strip()
        if environment.isdigit() and int(environment) > 0:
            return int(environment), f"OMP_NUM_THREADS={environment}"
        busy, how = busy_cores()
        threads = max(1, min(cores, cores - int(round(busy))))
        return threads, f"auto: {cores} cores, {how}"
    try:
        threads = int(str(requested))
    except ValueError:
        raise CommandError(f"--threads {requested!r}: expected a positive integer or 'auto'") from None
    if threads < 1:
        raise CommandError(f"--threads {requested!r}: expected a positive integer or 'auto'")
    return threads, f"--threads {threads}" + (f" (more than the {cores} cores)" if threads > cores else "")


def apply_threads(threads: int) -> None:
    """Use ``threads`` in PyTorch's intra-op pool and in OpenCV."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
