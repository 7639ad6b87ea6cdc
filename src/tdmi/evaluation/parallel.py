"""Per-sequence work (reading, checking and cleaning a GT file and its prediction file; a sequence's tracking
events) spread over processes, results back in sequence order.

Parsing JSON and the per-frame bookkeeping hold the GIL, so threads would not help; each task returns compact
arrays, so sending them back costs little beside the work. Results come back in task order, so the first bad
file in that order raises, exactly as when the work runs in this process, and sums over sequences add up in the
same order (bit-identical totals).
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence, TypeVar

from tdmi.threads import available_cores

Task = TypeVar("Task")
Result = TypeVar("Result")

FILES_PER_PROCESS = 16  # below this a process costs more to start than it saves
MAX_PROCESSES = 8


def reader_processes(num_tasks: int, requested: Optional[int] = None) -> int:
    """Processes for ``num_tasks`` sequences: ``requested`` if given (1 = this process only), else one per 16
    sequences up to the usable cores, at most 8."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"workers must be >= 1, got {requested}")
        return min(requested, max(num_tasks, 1))
    return max(1, min(available_cores(), MAX_PROCESSES, num_tasks // FILES_PER_PROCESS))


def _pool_context():
    """fork where the platform has it: the children need no re-import, so a pool starts in milliseconds."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else methods[0])


def map_in_order(fn: Callable[[Task], Result], tasks: Sequence[Task], processes: int,
                 progress: Optional[str] = None) -> list[Result]:
    """``[fn(t) for t in tasks]``, in ``processes`` processes (1 = here); ``progress`` names a tqdm bar."""
    pool = None
    if processes <= 1:
        results = map(fn, tasks)
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(processes, mp_context=_pool_context())
        # several sequences per round trip: one per sequence would cost more than a small file takes to read
        results = pool.map(fn, tasks, chunksize=max(1, len(tasks) // (4 * processes)))
    try:
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(tasks), desc=progress, unit="seq", file=sys.stderr, leave=False)
        return list(results)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
