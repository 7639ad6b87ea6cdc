"""Mixed precision in one place: ``amp`` names (``none``, ``bf16``, ``fp16``) to autocast contexts.

Training (``train.amp``), ``tdmi test`` (``test.amp``) and ``tdmi infer --amp`` share it. Whatever ``amp`` is, the
heatmap heads run in float32 (:func:`tdmi.models.tdmi.head_outside_autocast`), the losses too, and heatmaps are
decoded in float32.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

AMP_CHOICES = ("none", "bf16", "fp16")


def autocast_for(device_type: str, amp: str):
    """The autocast context for ``amp`` on ``device_type`` (a no-op context for ``none``)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp {amp!r}: expected one of {', '.join(AMP_CHOICES)}")
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def autocast_off(device_type: str):
    """A context with autocast disabled on ``device_type``; a no-op context where the device type has no autocast
    at all (e.g. ``meta``, used to count MACs), which ``torch.autocast`` refuses."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except (RuntimeError, ValueError):
        return nullcontext()
