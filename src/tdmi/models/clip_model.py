"""The contract every pose model of tdmi keeps: ``encode / decode / forward`` over clips, and one output type.

TDMI (``tdmi.py``), the single-frame baseline and the rival methods (``rivals/``) all derive from
:class:`ClipModel` and return :class:`TDMIOutput`, so the trainer, the tester and inference treat them alike.
Its own file so that the rivals need not import the TDMI assembly (which builds them).

    frames [B, T, 3, H, W] --encode (backbone, per frame [N, 3, H, W])--> StageFeatures of [B, T, C_j, h, w]
      --decode (the model's own)--> TDMIOutput
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from tdmi.models.hrnet import freeze, set_bn_eval
from tdmi.precision import autocast_off


class TDMIOutput(NamedTuple):
    """What every model returns; the MI objective (``mi_loss.py``) reads the intermediate features.

    Attributes:
        heatmaps: ``[B, J, h, w]`` the prediction H for the key frame.
        motion: M ``[B, C, h, w]`` from the TDE; None for the single-frame baseline.
        useful: Mu ``[B, C, h, w]``; None when the RDM is disabled (M itself is fused then) and for the baseline.
        noisy: Mn ``[B, C, h, w]``; None when the RDM is disabled and for the baseline.
        visual: F = the key frame's stage-4 feature F_t^4 ``[B, C4, h, w]`` (``final_layer``'s input).
        fused: F~ ``[B, C, h, w]``, the input of the detection head; None for the baseline.
        static_heatmaps: ``[B, J, h, w]`` = backbone ``final_layer(visual)``, the single-frame HRNet prediction
            (the teacher q_F of the MI objective; the prediction itself for the baseline).
    """

    heatmaps: Tensor
    motion: Optional[Tensor]
    useful: Optional[Tensor]
    noisy: Optional[Tensor]
    visual: Tensor
    fused: Optional[Tensor]
    static_heatmaps: Tensor


def check_backbone(backbone: nn.Module) -> None:
    for name in ("stage_channels", "final_layer"):
        if not hasattr(backbone, name):
            raise TypeError(f"the backbone must expose `{name}` like tdmi.models.hrnet.HRNet; "
                            f"{type(backbone).__name__} does not")


class ClipModel(nn.Module):
    """The ``encode / decode / forward`` contract and backbone freezing, shared by TDMI and the baseline."""

    def __init__(self, backbone: nn.Module, delta: int, freeze_backbone: bool, backbone_bn_eval: bool):
        super().__init__()
        check_backbone(backbone)
        self.backbone = backbone
        self.delta = delta
        self.num_frames = 2 * delta + 1
        self.freeze_backbone = freeze_backbone
        self.backbone_bn_eval = backbone_bn_eval
        if freeze_backbone:
            freeze(backbone, bn_eval=backbone_bn_eval)

    def train(self, mode: bool = True) -> ClipModel:
        """``nn.Module.train``, except that a frozen backbone's BatchNorms stay in eval mode with ``bn_eval``.

        (HRNet does this itself; repeating it here keeps the rule for any other backbone.)
        """
        super().train(mode)
        if self.freeze_backbone and self.backbone_bn_eval:
            set_bn_eval(self.backbone)
        return self

    def encode(self, frames: Tensor):
        """Backbone features of independent frames: ``frames [N, 3, H, W]`` -> StageFeatures of ``[N, C_j, h, w]``.

        A frozen backbone runs without autograd (no activations kept for backward).
        """
        if frames.dim() != 4:
            raise ValueError(f"encode expects frames [N, 3, H, W], got {tuple(frames.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            return self.backbone(frames)

    def _check_frames(self, frames: int) -> None:
        if frames != self.num_frames:
            raise ValueError(f"this model takes clips of T = 2*delta + 1 = {self.num_frames} frames "
                             f"(delta={self.delta}), got T={frames}")

    def _check_clip(self, stage_features) -> None:
        batch, frames = stage_features[0].shape[:2]
        for j, features in enumerate(stage_features):
            if features.dim() != 5 or features.shape[:2] != (batch, frames):
                raise ValueError(f"decode expects stage features [B, T, C, h, w] with equal B and T; stage {j + 1} "
                                 f"is {tuple(features.shape)}")
        self._check_frames(frames)

    def forward(self, frames: Tensor) -> TDMIOutput:
        """``frames [B, T, 3, H, W]`` (key frame at index delta) -> :class:`TDMIOutput`."""
        if frames.dim() != 5:
            raise ValueError(f"forward expects frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        batch, num_frames = frames.shape[:2]
        self._check_frames(num_frames)  # before the expensive backbone
        stage_features = self.encode(frames.flatten(0, 1))
        return self.decode(stage_features._make(f.unflatten(0, (batch, num_frames)) for f in stage_features))


def head_outside_autocast(head: nn.Module, features: Tensor) -> Tensor:
    """``head(features)`` in the head's own dtype with autocast off: the heatmaps feed the losses, whose MI terms
    divide by a temperature of 0.05, so a bf16 head's rounding would reach them multiplied by 20. A 3x3 (or 1x1)
    conv on the last feature costs little next to the rest of the model."""
    with autocast_off(features.device.type):
        return head(features.to(head.weight.dtype))
