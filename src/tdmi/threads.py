"""How many CPU threads inference commands use: ``--threads N`` or ``auto``.

On a shared machine PyTorch's default (one thread per core) is the worst choice: with one other busy process
on a 2-core machine, ``tdmi demo`` took 58.7 s with default threads against 5.7 s with one thread (issue 10),
because threads that wait for a core that another process holds stall every parallel kernel. ``auto`` (the
default) therefore takes the cores nobody else is using, by the 1-minute load average, and at least one:

    threads = max(1, min(cores, cores - round(load average)))

``OMP_NUM_THREADS`` set in the environment is the user's decision and wins over ``auto``. OpenCV (decoding,
resizing, HOG) gets the same number.
"""

from __future__ import annotations

import os
from typing import Optional

from tdmi.errors import CommandError


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_threads(requested: Optional[str | int] = "auto") -> tuple[int, str]:
    """``(threads, why)`` for ``--threads`` (``auto``, None or a positive integer)."""
    cores = available_cores()
    if requested is None or str(requested).strip().lower() == "auto":
        environment = os.environ.get("OMP_NUM_THREADS", "").strip()
        if environment.isdigit() and int(environment) > 0:
            return int(environment), f"OMP_NUM_THREADS={environment}"
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = max(1, min(cores, cores - int(round(load))))
        return threads, f"auto: {cores} cores, load average {load:.1f}"
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
