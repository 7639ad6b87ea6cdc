"""Vectorised person-box utilities shared by the detectors and the tracker.

Boxes are float32 ``[N, 4]`` arrays of ``[x, y, w, h]`` in pixels of the frame they belong to (x to the right,
y down), the convention of PoseTrack and COCO result files (``docs/facts/posetrack-facts.md`` section 4). Every function
here is vectorised with NumPy so that thousands of boxes per frame stay cheap (no Python loop over pairs).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import numpy as np

#: Default cap on the number of boxes kept per frame (highest scores first). A top-down pose model runs once
#: per box, so more people than this per frame is almost always detector noise; callers may raise it.
MAX_BOXES_PER_FRAME = 100

#: Default minimum side length (pixels) of a kept box; smaller ones cannot be posed at 288x384 input anyway.
MIN_BOX_SIDE = 4.0


class Detections(NamedTuple):
    """Person boxes of one frame: ``boxes`` float32 ``[N, 4]`` xywh pixels, ``scores`` float32 ``[N]``."""

    boxes: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


def as_boxes(boxes) -> np.ndarray:
    """Any ``[N, 4]``-shaped array-like (or empty list) as float32 ``[N, 4]``."""
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, 4), np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x, y, w, h), got {array.shape}")
    return array


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair: ``[N, 4]`` x ``[M, 4]`` xywh -> float32 ``[N, M]`` in [0, 1]."""
    a = as_boxes(boxes_a)
    b = as_boxes(boxes_b)
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[None, :, 0], b[None, :, 1]
    bx2, by2 = bx1 + b[None, :, 2], by1 + b[None, :, 3]
    inter_w = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    inter_h = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = inter_w * inter_h
    area_a = np.clip(a[:, 2:3], 0, None) * np.clip(a[:, 3:4], 0, None)
    area_b = np.clip(b[None, :, 2], 0, None) * np.clip(b[None, :, 3], 0, None)
    union = area_a + area_b - inter
    # Degenerate pairs (both areas zero) have IoU 0, not NaN.
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip xywh boxes to the image ``[0, width] x [0, height]``; boxes fully outside get zero size."""
    b = as_boxes(boxes).copy()
    x1 = np.clip(b[:, 0], 0, width)
    y1 = np.clip(b[:, 1], 0, height)
    x2 = np.clip(b[:, 0] + b[:, 2], 0, width)
    y2 = np.clip(b[:, 1] + b[:, 3], 0, height)
    return np.stack([x1, y1, np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)], axis=1).astype(np.float32)


def intersection_over_smaller(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection area over the smaller box's area for every pair: ``[N, 4]`` x ``[M, 4]`` -> ``[N, M]``.

    1 when one box lies inside the other, whatever their sizes (IoU is small for nested boxes).
    """
    a = as_boxes(boxes_a)
    b = as_boxes(boxes_b)
    inter_w = np.clip(np.minimum(a[:, 0:1] + a[:, 2:3], b[None, :, 0] + b[None, :, 2])
                      - np.maximum(a[:, 0:1], b[None, :, 0]), 0, None)
    inter_h = np.clip(np.minimum(a[:, 1:2] + a[:, 3:4], b[None, :, 1] + b[None, :, 3])
                      - np.maximum(a[:, 1:2], b[None, :, 1]), 0, None)
    smaller = np.minimum(a[:, 2:3] * a[:, 3:4], b[None, :, 2] * b[None, :, 3])
    return np.where(smaller > 0, inter_w * inter_h / np.maximum(smaller, 1e-12), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        containment_threshold: Optional[float] = None) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    A box is suppressed by a better one when their IoU exceeds ``iou_threshold`` or, if given, when their
    :func:`intersection_over_smaller` exceeds ``containment_threshold`` (nested duplicates at another scale).
    One vectorised row per kept box, so the cost is O(kept x N) rather than O(N^2) Python work.
    """
    b = as_boxes(boxes)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        suppressed = iou_matrix(b[best:best + 1], b[rest])[0] > iou_threshold
        if containment_threshold is not None:
            suppressed |= intersection_over_smaller(b[best:best + 1], b[rest])[0] > containment_threshold
        order = rest[~suppressed]
    return np.asarray(keep, dtype=np.int64)


def sanitize_boxes(boxes: np.ndarray, scores: np.ndarray, width: int, height: int, *,
                   min_side: float = MIN_BOX_SIDE, max_boxes: int = MAX_BOXES_PER_FRAME,
                   source: str = "detections") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to the frame, drop non-finite, degenerate and tiny ones, keep at most ``max_boxes``.

    Args:
        boxes: ``[N, 4]`` xywh; scores: ``[N]``.
        width, height: frame size in pixels.
        min_side: boxes whose clipped width or height is below this are dropped.
        max_boxes: cap on the number kept (highest scores win); exceeding it warns, naming ``source``.

    Returns:
        ``(boxes [K, 4] float32, scores [K] float32, kept [K] int64)`` where ``kept`` indexes the input.
    """
    b = as_boxes(boxes)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if s.shape[0] != b.shape[0]:
        raise ValueError(f"{source}: {b.shape[0]} boxes but {s.shape[0]} scores")
    finite = np.isfinite(b).all(axis=1) & np.isfinite(s)
    clipped = clip_boxes(np.where(finite[:, None], b, 0), width, height)
    valid = finite & (clipped[:, 2] >= min_side) & (clipped[:, 3] >= min_side)
    kept = np.flatnonzero(valid)
    if kept.size > max_boxes:
        warnings.warn(f"{source}: {kept.size} boxes in one frame; keeping the {max_boxes} highest-scoring "
                      f"(raise max_boxes to keep more)", stacklevel=2)
        kept = kept[np.argsort(-s[kept], kind="stable")[:max_boxes]]
        kept.sort()
    return clipped[kept], s[kept], kept
