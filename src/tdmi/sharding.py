"""``tdmi test`` and ``tdmi infer`` spread over torchrun's processes: each rank takes a fixed share of the work,
rank 0 collects the results, and the output is the one a single process writes.

    torchrun --nproc_per_node 4 -m tdmi test --checkpoint best.safetensors --out runs/test
    torchrun --nproc_per_node 4 -m tdmi infer videos/*.mp4 --out out/

The process group comes from torchrun's environment (RANK / WORLD_SIZE / LOCAL_RANK, any rendezvous, one node or
many; :mod:`tdmi.engine.distributed`): NCCL on GPUs, where rank r uses ``cuda:LOCAL_RANK``, gloo on CPU.

Shares are fixed by position, so every rank computes them alone and they never depend on timing:

- ``tdmi test``: the split's batches (``test.batch_size`` consecutive clips of the dataset's order, exactly the
  batches one process runs), batch ``b`` on rank ``b % world``. Every clip meets the model in the same batch as
  in one process, so the numbers are the same bit for bit (a kernel's result can depend on the batch it runs in);
  rank 0 gathers the decoded persons, puts them back in the dataset's order, and alone writes, scores and prints.
  The other ranks write nothing.
- ``tdmi infer``: input ``i`` (in the order given, after the inputs are checked) on rank ``i % world``; each
  input's files are written by the rank that ran it, under the names one process gives them. The checked list is
  rank 0's, sent to the others (:func:`broadcast_from_main`) before the shares are taken, so an input whose check
  fails on one rank only cannot shift the shares or the names.

Inputs and checkpoints are checked on every rank before the process group starts, so a bad argument is the same
one-line error everywhere and nothing waits. Output locations are checked before any work where they are written:
``tdmi infer``'s ``--out`` on every rank (rank 0 creates and probes, the other ranks ask ``os.access``, so that their
checks cannot leave folders behind; :mod:`tdmi.outputs`), ``tdmi test``'s ``--out`` / ``test.out_dir`` /
``--report`` on rank 0 only (the other ranks write nothing, and may run where that location is not mounted). A
failure during the work is shared: the ranks exchange it before any result is gathered, and every rank stops with
it. ``tdmi infer``'s results saved in a fallback folder or lost (:mod:`tdmi.results_fallback`) on any rank are in
rank 0's summary, and every rank then exits with status 1.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from tdmi.engine.distributed import DistInfo, dist_info_from_env, init_process_group_for, rank_device

__all__ = ["DistInfo", "dist_info_from_env", "rank_device", "process_group", "batch_share", "input_share",
           "agree_on_failure", "gather_to_main", "all_gather", "broadcast_from_main"]

T = TypeVar("T")


@contextlib.contextmanager
def process_group(info: DistInfo, device: torch.device, timeout_minutes: float = 120.0) -> Iterator[None]:
    """Join torchrun's process group for the block (nothing for one process); left at the end, also on errors."""
    started = info.enabled and not dist.is_initialized()
    if started:
        init_process_group_for(info, device, timeout_minutes)
    try:
        yield
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def batch_share(num_samples: int, batch_size: int, info: DistInfo) -> list[list[int]]:
    """This rank's batches: the sample indices of batches ``b`` with ``b % world == rank``, where batch ``b`` holds
    samples ``b * batch_size ...`` in order (the batches of a sequential loader in one process)."""
    size = max(1, int(batch_size))
    starts = range(0, num_samples, size)
    return [list(range(start, min(start + size, num_samples)))
            for b, start in enumerate(starts) if b % info.world_size == info.rank]


def input_share(items: Sequence[T], info: DistInfo) -> list[tuple[int, T]]:
    """``(position, item)`` of the items this rank runs: position ``i % world == rank``."""
    return [(i, item) for i, item in enumerate(items) if i % info.world_size == info.rank]


def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (what the other ranks pass is ignored; ``obj`` itself for one process)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj: Any, info: DistInfo) -> Optional[list[Any]]:
    """Every rank's ``obj`` in rank order on rank 0; None on the other ranks (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    gathered: Optional[list[Any]] = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def agree_on_failure(failure: Optional[str], info: DistInfo) -> Optional[str]:
    """Every rank says whether its share failed; returns the first rank's failure as ``rank R: message`` (the same
    on every rank), or None when all succeeded. One process: ``failure`` itself."""
    if not info.enabled:
        return failure
    for rank, message in enumerate(all_gather(failure, info)):
        if message is not None:
            return f"rank {rank}: {message}"
    return None
