"""Gaussian heatmap targets and joint weights for the key frame (paper section 3.4, L_H).

Facts: ``docs/facts/posetrack-facts.md`` 5.4 (the HRNet/DCPose target generator) and 1.1 (optional joint weights).

For joint j at crop position (x, y) with flag v_j (already 0 for joints outside the crop):
- stride = input size / heatmap size per axis (4 for 288x384 -> 72x96);
- mu = (int(x / stride + 0.5), int(y / stride + 0.5)), ``int`` truncating toward zero as in the reference;
- the window is the (6 sigma + 1)^2 square of radius 3 sigma (integer) around mu. If it lies completely outside the
  heatmap, weight_j = 0. (The reference tests ``br < 0`` with an exclusive br, so a window ending exactly at the
  left/top edge keeps weight 1 with an empty map; here that case gets weight 0. It only arises for joints at
  x < -(3 sigma + 1) stride, which the out-of-crop rule has already given weight 0.)
- exp(-((u - mu_x)^2 + (w - mu_y)^2) / (2 sigma^2)) is written into the in-bounds part of the window only if
  weight_j > 0.5, peak exactly 1 at mu. All other pixels, and all pixels of weight-0 joints, are 0.
- optionally weight_j *= joint_weights[j] (DCPose's ``USE_DIFFERENT_JOINTS_WEIGHT``, off by default).

Shapes: joints ``[J, 3]`` (x, y, flag in input-crop pixels) -> heatmaps float32 ``[J, h, w]``, weights ``[J]``.
Sizes are given as ``[w, h]``. sigma 3 is the reference value at 96x72 and sigma 2 at 64x48.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

POSETRACK_JOINT_WEIGHTS: tuple[float, ...] = (
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5,
)
"""DCPose's per-joint loss weights for the 17-slot order (elbows/knees 1.2, wrists/ankles 1.5), facts 1.1."""


def gaussian_heatmaps(
    joints: np.ndarray, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 3.0,
    joint_weights: Optional[Sequence[float]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps and target weights for ``[J, 3]`` joints given in input-crop pixels.

    Args:
        joints: ``[J, 3]`` (x, y, flag); flag > 0 = labelled and inside the crop.
        input_size: crop size ``[w, h]`` (e.g. ``[288, 384]``).
        heatmap_size: heatmap size ``[w, h]`` (e.g. ``[72, 96]``).
        sigma: Gaussian standard deviation in heatmap pixels.
        joint_weights: optional ``[J]`` factors multiplied into the weights.

    Returns:
        (heatmaps float32 ``[J, h, w]``, target_weight float32 ``[J]``).
    """
    joints = np.asarray(joints, dtype=np.float64)
    mu, weight = _centres_and_weights(joints, input_size, heatmap_size, sigma)
    hm_w, hm_h = int(heatmap_size[0]), int(heatmap_size[1])
    radius = int(sigma * 3)

    dx = np.arange(hm_w)[None, :] - mu[:, 0:1]  # [J, w]
    dy = np.arange(hm_h)[None, :] - mu[:, 1:2]  # [J, h]
    in_window = (np.abs(dy)[:, :, None] <= radius) & (np.abs(dx)[:, None, :] <= radius)  # [J, h, w]
    squared = dx[:, None, :] ** 2 + dy[:, :, None] ** 2
    heatmaps = np.exp(-squared / (2.0 * sigma * sigma))
    heatmaps *= in_window & (weight > 0.5)[:, None, None]
    return heatmaps.astype(np.float32), _apply_joint_weights(weight, joint_weights)


def target_weights(
    joints: np.ndarray, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 3.0,
    joint_weights: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Only the float32 ``[J]`` target weights of :func:`gaussian_heatmaps` (when heatmaps are not needed)."""
    _, weight = _centres_and_weights(np.asarray(joints, dtype=np.float64), input_size, heatmap_size, sigma)
    return _apply_joint_weights(weight, joint_weights)


def _centres_and_weights(
    joints: np.ndarray, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Integer heatmap centres mu ``[J, 2]`` and 0/1 weights ``[J]`` (0 for unlabelled or fully-outside windows)."""
    if joints.ndim != 2 or joints.shape[1] < 3:
        raise ValueError(f"joints must be [J, 3] (x, y, flag), got shape {joints.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    hm_w, hm_h = int(heatmap_size[0]), int(heatmap_size[1])
    stride = np.array([input_size[0] / hm_w, input_size[1] / hm_h], dtype=np.float64)
    radius = int(sigma * 3)
    weight = (joints[:, 2] > 0).astype(np.float64)
    # Truncation toward zero, like Python's int() in the reference (np.trunc, not floor, for negative values).
    mu = np.trunc(joints[:, :2] / stride + 0.5).astype(np.int64)
    upper_left = mu - radius
    bottom_right = mu + radius + 1  # exclusive
    fully_outside = ((upper_left[:, 0] >= hm_w) | (upper_left[:, 1] >= hm_h)
                     | (bottom_right[:, 0] <= 0) | (bottom_right[:, 1] <= 0))
    weight[fully_outside] = 0.0
    return mu, weight


def _apply_joint_weights(weight: np.ndarray, joint_weights: Optional[Sequence[float]]) -> np.ndarray:
    if joint_weights is not None:
        factors = np.asarray(joint_weights, dtype=np.float64)
        if factors.shape != weight.shape:
            raise ValueError(f"joint_weights must have {len(weight)} entries, got shape {factors.shape}")
        weight = weight * factors
    return weight.astype(np.float32)
