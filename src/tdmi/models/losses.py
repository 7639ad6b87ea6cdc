"""Heatmap regression loss L_H (paper eq. 14) with per-joint target weights.

docs/facts/posetrack-facts.md 5.5: DCPose and FAMI-Pose compute, for each joint j, the mean over (batch, h*w) of
``((pred - gt) * weight_j)^2`` and average over joints; HRNet's loss is the same times 0.5. The factor matters for
TDMI because L = L_H + alpha * L_MI: halving L_H doubles alpha's effective weight. Our default is 1.0
(DCPose/FAMI, whose numbers TDMI compares against); ``factor=0.5`` reproduces HRNet.

The loss lives here rather than in ``mi_loss.py`` because it is used on its own (the HRNet baseline, the
auxiliary motion head of the MI objective).
"""

from __future__ import annotations

from torch import Tensor, nn


class JointsMSELoss(nn.Module):
    """``factor * mean over (B, J, h, w) of ((pred - target) * weight)^2``.

    Summing per-joint pixel means and dividing by J is the same as one mean over (B, J, h, w), since every joint
    has the same number of pixels. Joints with weight 0 (unannotated, e.g. PoseTrack's ear slots) still count in
    the denominator, as in all three reference implementations.

    Args:
        factor: 1.0 = DCPose / FAMI-Pose (default); 0.5 = HRNet.
    """

    def __init__(self, factor: float = 1.0):
        super().__init__()
        self.factor = float(factor)

    def forward(self, pred: Tensor, target: Tensor, target_weight: Tensor) -> Tensor:
        """pred, target ``[B, J, h, w]``; target_weight ``[B, J]`` or ``[B, J, 1]`` -> scalar (float32)."""
        B, J = pred.shape[:2]
        if target.shape != pred.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != prediction shape {tuple(pred.shape)}")
        weight = target_weight.reshape(B, J, 1, 1).float()
        # float32 so that fp16 predictions do not lose the small squared errors of a near-converged model
        return self.factor * ((pred.float() - target.float()) * weight).pow(2).mean()
