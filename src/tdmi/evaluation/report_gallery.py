"""The gallery of the HTML report (:mod:`tdmi.evaluation.report`): the worst key frames, ground truth and prediction
drawn side by side on the frame's image, as JPEG bytes ready to embed.

    gallery = build_gallery(worst_frames(sequences, 12), image_root="data/synthtrack")
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from tdmi.evaluation.per_sequence import FrameScore
from tdmi.keypoints import POSETRACK17_DRAW_SKELETON, POSETRACK17_TO_POSEVAL15

GALLERY_SIZE = 12
"""Worst key frames shown."""
PANEL_SIZE = 360
"""Longer side of each drawn panel, pixels."""
LOW_SCORE = 0.2
"""Predicted joints scoring below this are drawn hollow (the render threshold of ``tdmi infer``)."""

#: The drawing skeleton of ``tdmi infer --render`` in poseval's joint order (head joints linked to the shoulders).
SKELETON15: tuple[tuple[int, int], ...] = tuple(
    (POSETRACK17_TO_POSEVAL15[a], POSETRACK17_TO_POSEVAL15[b]) for a, b in POSETRACK17_DRAW_SKELETON)


@dataclass
class GalleryItem:
    """One frame of the gallery: the two drawn panels (JPEG bytes) and what the caption says."""

    frame: FrameScore
    gt_jpeg: bytes
    pred_jpeg: bytes
    sequence_ap: float = float("nan")


@dataclass
class Gallery:
    items: list[GalleryItem] = field(default_factory=list)
    note: Optional[str] = None
    """One line shown instead of (or under) the frames: images missing, or no labelled frame."""


#: Skeleton colours per person (BGR): blue, yellow, magenta, cyan, purple, white; no green or red, which mark the
#: predicted joints that hit and miss.
PERSON_COLOURS: tuple[tuple[int, int, int], ...] = (
    (246, 130, 59), (21, 204, 250), (239, 70, 217), (238, 211, 34), (247, 85, 168), (245, 245, 245))


def _person_colour(index: int) -> tuple[int, int, int]:
    return PERSON_COLOURS[int(index) % len(PERSON_COLOURS)]


def crop_box(frame: FrameScore, width: int, height: int) -> tuple[int, int, int, int]:
    """``x0, y0, x1, y1``: the GT and predicted joints of the frame with a margin, inside the image."""
    points = [frame.gt_xy[frame.gt_present], frame.pred_xy[frame.pred_present]]
    xy = np.concatenate([p.reshape(-1, 2) for p in points])
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) == 0:
        return 0, 0, width, height
    xy = np.clip(xy, 0, [width - 1, height - 1])
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    margin = 0.12 * max(x1 - x0, y1 - y0) + 16
    side = max(x1 - x0, y1 - y0, 96.0)  # at least 96 px so a lone joint is not blown up
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = max(x1 - x0, side * 0.75) / 2 + margin
    half_h = max(y1 - y0, side * 0.75) / 2 + margin
    box = (int(max(0, cx - half_w)), int(max(0, cy - half_h)), int(min(width, cx + half_w + 1)),
           int(min(height, cy + half_h + 1)))
    return box if box[2] - box[0] >= 8 and box[3] - box[1] >= 8 else (0, 0, width, height)


def draw_frame_pair(image_bgr: np.ndarray, frame: FrameScore, size: int = PANEL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The ground truth (left) and the prediction (right) of ``frame`` on the same crop of ``image_bgr``.

    GT: each person's skeleton in its own colour. Prediction: skeletons in per-person colours; each joint green when
    poseval counts it as a hit, red otherwise, hollow when it scores below :data:`LOW_SCORE`.
    """
    import cv2

    height, width = image_bgr.shape[:2]
    x0, y0, x1, y1 = crop_box(frame, width, height)
    scale = size / max(x1 - x0, y1 - y0)
    crop = cv2.resize(image_bgr[y0:y1, x0:x1], (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)

    def to_pixels(xy: np.ndarray) -> np.ndarray:
        # far-off predictions stay drawable (OpenCV takes 32-bit coordinates); NaN rows are never drawn
        return np.clip(np.nan_to_num((xy - [x0, y0]) * scale), -10_000, 10_000).round().astype(np.int64)

    def skeleton(canvas, xy, present, colour):
        px = to_pixels(xy)
        for a, b in SKELETON15:
            if present[a] and present[b]:
                cv2.line(canvas, (int(px[a][0]), int(px[a][1])), (int(px[b][0]), int(px[b][1])), colour, 2, cv2.LINE_AA)
        return px

    gt_canvas, pred_canvas = crop.copy(), crop.copy()
    for n in range(len(frame.gt_xy)):
        present = frame.gt_present[n] & np.isfinite(frame.gt_xy[n]).all(axis=1)
        px = skeleton(gt_canvas, frame.gt_xy[n], present, _person_colour(n))
        for j in np.flatnonzero(present):
            cv2.circle(gt_canvas, (int(px[j][0]), int(px[j][1])), 4, _person_colour(n), -1, cv2.LINE_AA)
            cv2.circle(gt_canvas, (int(px[j][0]), int(px[j][1])), 4, (0, 0, 0), 1, cv2.LINE_AA)
    for n in range(len(frame.pred_xy)):
        present = frame.pred_present[n] & np.isfinite(frame.pred_xy[n]).all(axis=1)
        px = skeleton(pred_canvas, frame.pred_xy[n], present, _person_colour(n))
        for j in np.flatnonzero(present):
            colour = (60, 200, 60) if frame.pred_correct[n, j] else (40, 40, 235)
            centre = (int(px[j][0]), int(px[j][1]))
            low = -9999 < frame.pred_score[n, j] < LOW_SCORE
            cv2.circle(pred_canvas, centre, 4, colour, 2 if low else -1, cv2.LINE_AA)
            if not low:
                cv2.circle(pred_canvas, centre, 4, (0, 0, 0), 1, cv2.LINE_AA)
    return gt_canvas, pred_canvas


def _jpeg(image: np.ndarray, quality: int = 82) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def _image_path(root: Optional[Path], file_name: str) -> Optional[Path]:
    """Where a frame's image is: an absolute ``file_name`` as given, a relative one under ``root``; None for a
    relative one without a root (never looked up in the current folder)."""
    path = Path(file_name)
    if path.is_absolute():
        return path
    return root / path if root is not None else None


def _readable_file(path: Optional[Path]) -> bool:
    """``path.is_file()``, with a folder that may not be read (``PermissionError``) counting as no image."""
    try:
        return path is not None and path.is_file()
    except OSError:
        return False


def find_image_root(gt_dir: str | os.PathLike, file_names: Sequence[str], levels: int = 3) -> Optional[Path]:
    """The folder the GT's image ``file_name`` entries are relative to: ``gt_dir`` or one of its ``levels`` parents
    (``annotations/val`` sits two below the dataset root), the first under which one of ``file_names`` exists."""
    start = Path(gt_dir).absolute()
    for base in [start, *list(start.parents)[:levels]]:
        if any(_readable_file(base / name) for name in file_names[:5]):
            return base
    return None


def build_gallery(frames: Sequence[FrameScore], image_root: Optional[str | os.PathLike],
                  sequence_ap: Optional[Mapping[str, float]] = None, size: int = PANEL_SIZE) -> Gallery:
    """Draw ``frames`` whose images can be read under ``image_root``; a note says what could not be shown."""
    import cv2

    if not frames:
        return Gallery(note="No labelled frame with ground-truth joints: nothing to show.")
    root = Path(image_root) if image_root is not None else None
    items: list[GalleryItem] = []
    missing: list[Path | str] = []
    for frame in frames:
        path = _image_path(root, frame.file_name)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if _readable_file(path) else None
        if image is None:
            missing.append(path if path is not None else frame.file_name)
            continue
        gt, pred = draw_frame_pair(image, frame, size)
        items.append(GalleryItem(frame, _jpeg(gt), _jpeg(pred), float((sequence_ap or {}).get(frame.sequence,
                                                                                             math.nan))))
    note = None
    if not items and root is None:
        note = (f"No frame images: the {len(frames)} worst frames' files (e.g. {frames[0].file_name}) were not found "
                f"near the ground truth; give the dataset root (tdmi evaluate --image-root DIR).")
    elif not items:
        note = (f"No frame images: the {len(frames)} worst frames' files are not under {root} "
                f"(e.g. {missing[0]}), so the gallery is empty.")
    elif missing:
        note = (f"{len(missing)} of the {len(frames)} worst frames have no readable image (e.g. {missing[0]}); "
                f"not shown.")
    return Gallery(items, note)
