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


TINY_CLIP_MODEL = ["model.input_size=[96,128]", "model.heatmap_size=[24,32]", "model.delta=1", "model.backbone.width=4",
                   "model.tde.channels=8", "model.tde.deform_groups=4", "model.tde.blocks_per_stage=[1,1,1,1]",
                   "model.fusion_blocks=1", "model.st_blocks=1", "data.workers=0"]
"""`--set` overrides of the smallest TDMI the command tests run (3 frames, W4 backbone, 96x128 crops)."""
