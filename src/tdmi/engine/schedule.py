"""Data order and learning-rate schedule of ``tdmi train``: both depend only on (config, epoch, step), so a resumed
run continues exactly where the interrupted one was.

- :class:`EpochSampler`: a shuffled, rank-sharded order per epoch drawn from ``seed + epoch``, startable mid-epoch.
- :func:`lr_multiplier`: the lr of optimizer step ``step`` as a fraction of ``train.lr`` (the paper's steps, or
  cosine), with an optional linear warmup.
"""

from __future__ import annotations

import math
import random
from typing import Iterator

import numpy as np
import torch

from tdmi.config import ExperimentConfig


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled, rank-sharded sample order that depends only on (seed, epoch) and can start mid-epoch.

    Like ``DistributedSampler`` (the permutation is padded by wrapping so every rank gets the same count), plus
    ``start_batch`` so a resumed run skips exactly the batches already trained on.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.per_rank = math.ceil(num_samples / world_size)
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start_batch * self.batch_size)


def seed_worker(worker_id: int) -> None:
    # Python/numpy global RNGs in workers are not used for augmentation (the dataset draws from (seed, epoch,
    # index)), but seed them anyway so user transforms stay reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def lr_at_epoch(cfg: ExperimentConfig, epoch: int) -> float:
    """The paper's step schedule: lr * factor^(number of steps passed)."""
    return cfg.train.lr * cfg.train.lr_factor ** sum(epoch >= s for s in cfg.train.lr_steps)


def lr_multiplier(cfg: ExperimentConfig, step: int, steps_per_epoch: int) -> float:
    """The lr of optimizer step ``step`` (0-based) as a fraction of ``train.lr``, for either schedule.

    ``step``: ``lr_factor`` per passed epoch of ``lr_steps`` (the paper). ``cosine``: after the warmup,
    ``min + (1 - min) * (1 + cos(pi * progress)) / 2`` with progress running from 0 after the warmup to 1 at the
    end of ``train.epochs``. A warmup of ``warmup_epochs`` ramps linearly from 1/warmup_steps to 1 in front of
    either.
    """
    t = cfg.train
    steps_per_epoch = max(1, steps_per_epoch)
    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if t.schedule == "step":
        epoch = step // steps_per_epoch
        return ramp * t.lr_factor ** sum(epoch >= s for s in t.lr_steps)
    total = max(1, t.epochs * steps_per_epoch - warmup)
    progress = min(1.0, max(0, step - warmup) / total)
    return ramp * (t.min_lr_factor + (1.0 - t.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def steps_per_epoch(num_batches: int, grad_accum: int) -> int:
    """Optimizer steps in an epoch of ``num_batches`` batches (a short last accumulation group still steps)."""
    return math.ceil(num_batches / max(1, grad_accum))
