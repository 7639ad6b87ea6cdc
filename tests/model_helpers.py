"""Helpers shared by the model tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

from tdmi.models.tde import SpatialModulation


def perturb_zero_predictors(model: nn.Module, std: float = 0.05) -> None:
    """Give the zero-initialised offset/mask convs small random weights.

    At initialisation they pass no gradient to the layers before them, which would hide a disconnected predictor
    from the gradient checks.
    """
    gen = torch.Generator().manual_seed(1)
    for layer in model.modules():
        if isinstance(layer, SpatialModulation):
            for conv in (layer.offset_predictor[1], layer.mask_predictor[1]):
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
