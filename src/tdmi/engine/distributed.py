"""Distributed set-up from torchrun's environment (``tdmi train``, and ``tdmi test`` / ``tdmi infer`` through
:mod:`tdmi.sharding`), and the per-batch agreement of ranks (``tdmi train``).

One process, or one process per GPU under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK). Ranks must agree on
whether to stop (a non-finite loss or an interrupt on any rank stops all of them), so the checks are all-reduces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from tdmi.errors import CommandError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (one process: rank 0 of 1)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device this rank uses: ``cuda:LOCAL_RANK`` for a CUDA device under torchrun (or a bare ``cuda``), made
    the current device; anything else as given."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError("--device cuda was asked for, but torch sees no CUDA device")
        if info.enabled or device.index is None:
            if info.local_rank >= torch.cuda.device_count():
                raise CommandError(f"LOCAL_RANK {info.local_rank}: only {torch.cuda.device_count()} CUDA device(s) "
                                   f"visible; start at most that many processes per node (torchrun --nproc_per_node)")
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def init_process_group_for(info: DistInfo, device: torch.device, timeout_minutes: float = 120.0) -> None:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPU; collective timeout ``timeout_minutes``); nothing
    for one process or when already joined."""
    if info.enabled and not dist.is_initialized():
        from datetime import timedelta

        # TDMI_DIST_BACKEND=gloo allows several ranks on one GPU (NCCL refuses that), e.g. scripts/gpu_check.sh
        backend = os.environ.get("TDMI_DIST_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))


def setup_distributed(device_request: Optional[str], timeout_minutes: float = 120.0) -> tuple[DistInfo, torch.device]:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start NCCL on GPUs and gloo on CPU (collective timeout
    ``timeout_minutes``)."""
    info = dist_info_from_env()
    if device_request:
        device = torch.device(device_request)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = rank_device(device, info)
    init_process_group_for(info, device, timeout_minutes)
    return info, device


def any_rank(flag: bool, dev: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (one small all-reduce)."""
    value = torch.tensor([1.0 if flag else 0.0], device=dev)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def agree_across_ranks(nonfinite: Tensor, interrupted: bool, dev: torch.device) -> tuple[bool, bool]:
    """(a loss was non-finite on any rank, any rank was interrupted), the same on every rank: one all-reduce of two
    values and one host sync. ``nonfinite`` stays on the device until then; the flag is written by a fill kernel,
    not copied from the host."""
    flags = torch.zeros(2, device=dev)
    flags[0] = nonfinite.float()
    flags[1].fill_(1.0 if interrupted else 0.0)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    any_nonfinite, any_interrupted = flags.tolist()
    return any_nonfinite > 0, any_interrupted > 0
