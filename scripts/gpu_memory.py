"""Memory of scripts/gpu_check.py's training rows: what a step needs, what is available, which batch fits.

    estimate = estimate_train_memory(cfg, device)     # measured on small probes, not at full size
    available, where = available_memory(device)
    batch, reason = fit_batch(16, estimate, available, f"available ({where})")

The step's peak is ``fixed`` (weights, their gradients, Adam's two moments, and what autograd keeps once per step
whatever the batch: autocast's half-precision copies of the weights) plus ``per_clip`` times the batch. The probes
run the step's forward at 1/k of the input size with 1 and with 2 clips while a saved-tensors hook adds up what
autograd keeps; the difference of the two is one clip's activations (scaled by k^2 to the full size), and what is
left of the 1-clip probe is the part that does not grow with the batch (the weight copies under bf16/fp16 autocast:
1.65 GiB of W48's 3.44 GiB per 1-clip probe, which a single probe would have scaled by k^2 and the batch).

Imported by scripts/gpu_check.py (``python scripts/gpu_check.py`` puts this folder on ``sys.path``; so does
gpu_check.py itself when it is loaded from elsewhere, as the tests do).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Optional

import torch

GIB = 2**30
MEMORY_HEADROOM = 0.85
"""Share of the available memory a row may plan to fill (the rest: allocator slack, the loader, fragmentation)."""
BACKWARD_FACTOR = 1.5
"""Peak memory of a step over the activations autograd keeps for backward: activation gradients in flight and
kernel workspaces come on top (conservative)."""


def release_memory(device: torch.device) -> None:
    """Give back what dropped objects held: collect cycles, and on CUDA return the allocator's cached blocks, so that
    the next row's :func:`available_memory` sees them free."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def available_memory(device: torch.device) -> tuple[Optional[int], str]:
    """``(bytes this process can still allocate on device, where the number comes from)``; None when unknown.

    CUDA: the device's free memory (``torch.cuda.mem_get_info``) plus what this process's allocator holds unused.
    CPU: ``MemAvailable`` of /proc/meminfo, or less when a cgroup (a container's memory limit, which is what the
    kernel kills at) leaves less."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0)), "free on the device"
    found: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            found.append((max(0, int(limit) - usage), "the cgroup's memory limit"))
    return min(found) if found else (None, "unknown")


class MemoryEstimate:
    """Peak memory of a training step: ``fixed`` (weights, their gradients and Adam's two moments, and what autograd
    keeps once per step: autocast's weight copies) plus ``per_clip`` (one clip's activations kept for backward,
    times :data:`BACKWARD_FACTOR`) per clip of the batch."""

    def __init__(self, fixed: int, per_clip: int, how: str):
        self.fixed, self.per_clip, self.how = int(fixed), int(per_clip), how

    def need(self, batch_size: int) -> int:
        return self.fixed + self.per_clip * int(batch_size)


def probe_divisor(cfg) -> int:
    """The largest k in 4, 3, 2 that divides the input and heatmap sizes and leaves the input a multiple of 32
    (HRNet's deepest branch); 1 when none does."""
    w, h = cfg.model.input_size
    hw, hh = cfg.model.heatmap_size
    for k in (4, 3, 2):
        if all(v % k == 0 for v in (w, h, hw, hh)) and (w // k) % 32 == 0 and (h // k) % 32 == 0:
            return k
    return 1


def estimate_from_probes(kept_one: int, kept_two: int, k: int, weights: int, how: str = "") -> MemoryEstimate:
    """:class:`MemoryEstimate` from what autograd kept for one and for two clips at 1/``k`` of the input size.

    The difference is one probe clip's activations, times k^2 for a full-size clip (HRNet's activations scale with
    the pixels) and :data:`BACKWARD_FACTOR`; the rest of the 1-clip probe does not grow with the batch or the size
    (autocast's copies of the weights) and is counted once, in ``fixed``, with ``weights`` (parameters, gradients,
    optimizer state). A difference that is not positive (a probe too small to tell) counts the whole 1-clip probe
    per clip, as a single probe would."""
    per_probe_clip = kept_two - kept_one
    if per_probe_clip <= 0:
        per_probe_clip, once = kept_one, 0
    else:
        once = max(0, kept_one - per_probe_clip)
    return MemoryEstimate(weights + once, per_probe_clip * k * k * BACKWARD_FACTOR, how)


def saved_for_backward(module: torch.nn.Module, batch: tuple) -> int:
    """Bytes autograd keeps for the backward of ``module(*batch)["loss"]``: each storage once, the parameters not
    (their autocast copies are counted: :func:`estimate_from_probes` separates them)."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = module(*batch)["loss"]
    total = sum(kept.values())  # measured while the graph (and so every saved storage) is alive
    del loss
    return total


def estimate_train_memory(cfg, device: torch.device,
                          make_batch: Optional[Callable[[object, int, torch.device], tuple]] = None) -> MemoryEstimate:
    """:class:`MemoryEstimate` of ``cfg``'s training step (its ``train.amp``), measured without running it at full
    size: the step's forward at 1/k of the input size (:func:`probe_divisor`) with 1 and with 2 clips
    (:func:`saved_for_backward`, :func:`estimate_from_probes`). ``make_batch(cfg, clips, device)`` gives the step's
    inputs (default: random frames and heatmaps, :func:`random_batch`)."""
    import copy

    from tdmi.engine.train import build_train_step

    make_batch = make_batch or random_batch
    k = probe_divisor(cfg)
    probe = copy.deepcopy(cfg)
    probe.model.input_size = [v // k for v in cfg.model.input_size]
    probe.model.heatmap_size = [v // k for v in cfg.model.heatmap_size]
    torch.manual_seed(0)
    module = build_train_step(probe).to(device).train()
    try:
        trainable = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
        frozen = sum(p.numel() * p.element_size() for p in module.parameters() if not p.requires_grad)
        kept = [saved_for_backward(module, make_batch(probe, clips, device)) for clips in (1, 2)]
    finally:
        del module
        release_memory(device)
    where = f"at 1/{k} of the input size" if k > 1 else "at the input size"
    return estimate_from_probes(kept[0], kept[1], k, frozen + 4 * trainable,
                                f"measured on 1 and 2 clips {where}")


def random_batch(cfg, batch_size: int, device):
    """A training step's inputs: random frames, heatmaps and joint weights of ``cfg``'s sizes (seeded)."""
    g = torch.Generator().manual_seed(0)
    w, h = cfg.model.input_size
    hw, hh = cfg.model.heatmap_size
    return (torch.randn(batch_size, cfg.model.num_frames, 3, h, w, generator=g).to(device),
            torch.rand(batch_size, cfg.model.num_joints, hh, hw, generator=g).to(device),
            torch.ones(batch_size, cfg.model.num_joints).to(device))


def fit_batch(batch_size: int, estimate: MemoryEstimate, available: Optional[int],
              where: str = "available") -> tuple[int, Optional[str]]:
    """``(batch to run, None)`` when ``batch_size`` fits in :data:`MEMORY_HEADROOM` of ``available`` (or the
    memory is unknown); ``(smaller batch, reason)`` when only that fits; ``(0, reason)`` when not even one clip
    does. The reason is one line with the memory needed and available."""
    if available is None or estimate.need(batch_size) <= MEMORY_HEADROOM * available:
        return batch_size, None
    budget = MEMORY_HEADROOM * available
    fits = min(batch_size - 1, int((budget - estimate.fixed) // max(estimate.per_clip, 1)))
    needed = (f"batch {batch_size} needs ~{estimate.need(batch_size) / GIB:.1f} GiB, {available / GIB:.1f} GiB "
              f"{where}")
    if fits < 1:
        return 0, f"skipped: {needed}, and even 1 clip needs ~{estimate.need(1) / GIB:.1f} GiB"
    return fits, f"sized down: {needed}; batch {fits} needs ~{estimate.need(fits) / GIB:.1f} GiB"
