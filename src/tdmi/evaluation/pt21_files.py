"""Reading PoseTrack21 files the way the PoseTrack21 kit (``eval_type='pose_estim'``) reads them.

Facts: ``docs/facts/posetrack-facts.md`` section 10 and ``docs/facts/tracking-eval-facts.md``. Frames are the GT
``is_labeled`` frames, a joint is present iff ``x > 0 and y > 0``, ignore regions zero points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from tdmi.errors import DataFormatError
from tdmi.evaluation.posetrack_files import (HEAD_SIZE_FACTOR, MISSING_SCORE, _PT21_SLOTS, _build_polygons,
                                             _check_track_ids, _inside_any, _number_array, _People,
                                             _polygon_arrays, malformed_file)


# ---------------------------------------------------------------------------------------- PoseTrack21 reading


@dataclass
class _Pt21File:
    source: str
    image_ids: list
    is_labeled: np.ndarray  # [F] (GT only)
    frame: np.ndarray  # [N]
    keypoints: np.ndarray  # [N, 15, 3] x, y, score (preds) or flag (GT), PT21 order
    head_size: np.ndarray  # [N]
    ignore_regions: dict[int, list[np.ndarray]]
    track_id: Optional[np.ndarray] = None  # [N] float64
    file_names: list[str] = field(default_factory=list)  # [F] each image's file_name (its position without one)


def _read_pt21_file(data: dict, source: str, is_gt: bool) -> _Pt21File:
    if not isinstance(data, dict):
        raise DataFormatError(f"{source}: the top level is {type(data).__name__}, expected an object")
    with malformed_file(source):
        return _read_pt21_checked(data, source, is_gt)


def _read_pt21_checked(data: dict, source: str, is_gt: bool) -> _Pt21File:
    images = data.get("images")
    if not isinstance(images, list):
        raise DataFormatError(f"{source}: 'images' must be a list (the PoseTrack21 protocol reads PoseTrack18-style "
                              f"files)")
    annotations = data.get("annotations", [])
    try:
        image_ids = [im["id"] for im in images]
    except (KeyError, TypeError):
        raise DataFormatError(f"{source}: every entry of 'images' needs an 'id'") from None
    position = {}
    for i, image_id in enumerate(image_ids):
        if image_id in position:
            raise DataFormatError(f"{source}: image id {image_id} appears twice")
        position[image_id] = i
    labeled = np.zeros(len(images), dtype=bool)
    ignore: dict[int, list[np.ndarray]] = {}
    if is_gt:
        for i, image in enumerate(images):
            if "is_labeled" not in image:
                raise DataFormatError(f"{source}: images[{i}] has no 'is_labeled' (needed by the PoseTrack21 protocol)")
            labeled[i] = bool(image["is_labeled"])
            polygons = _polygon_arrays(image.get("ignore_regions_x", []), image.get("ignore_regions_y", []), source)
            if polygons:
                ignore[i] = polygons
    frames = []
    for index, ann in enumerate(annotations):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in position:
            raise DataFormatError(f"{source}: annotations[{index}].image_id {image_id!r} is not in 'images'")
        frames.append(position[image_id])
    # The kit groups persons by image in annotation order: a stable sort by frame gives the same order.
    order = np.argsort(np.asarray(frames, dtype=np.int64), kind="stable")
    people = [annotations[i] for i in order]
    frame = np.asarray(frames, dtype=np.int64)[order] if frames else np.zeros(0, np.int64)
    keypoints = _number_array([p.get("keypoints") for p in people], 51, "annotations.keypoints", source)
    keypoints = keypoints.reshape(-1, 17, 3)[:, _PT21_SLOTS]
    head_size = np.full(len(people), np.nan)
    track_ids = []
    if is_gt:
        for row, person in enumerate(people):
            box = person.get("bbox_head")
            if box is not None and len(box) == 4:
                x, y, w, h = (float(v) for v in box)
                dx, dy = (x + w) - x, (y + h) - y
                head_size[row] = HEAD_SIZE_FACTOR * np.sqrt(dx * dx + dy * dy)
    else:
        scores = []
        for row, person in enumerate(people):
            s = person.get("scores")
            scores.append([MISSING_SCORE] * 17 if s is None else s)
        keypoints[:, :, 2] = _number_array(scores, 17, "annotations.scores", source).reshape(-1, 17)[:, _PT21_SLOTS]
    for person in people:
        if "track_id" not in person:
            raise DataFormatError(f"{source}: an annotation has no track_id")
        track_ids.append(person["track_id"])
    names = [str(images[i].get("file_name", i)) for i in range(len(images))]
    # the kit has no 10000 limit (PT21 track ids are large integers); ids must still be unique within a frame
    _check_track_ids(track_ids, list(frame), names, source, unique=True, max_id=None)
    return _Pt21File(source, image_ids, labeled, frame, keypoints, head_size, ignore,
                     np.asarray([float(t) for t in track_ids], np.float64), names)


def _prepare_pt21(gt: _Pt21File, pred: _Pt21File) -> tuple[_People, _People, list[str]]:
    if len(pred.image_ids) != len(gt.image_ids):
        raise DataFormatError(f"{pred.source}: # prediction frames {len(pred.image_ids)} <> # GT frames "
                              f"{len(gt.image_ids)} (GT file {gt.source})")
    evaluated = np.flatnonzero(gt.is_labeled)
    for i in evaluated:
        if pred.image_ids[i] != gt.image_ids[i]:
            raise DataFormatError(f"{pred.source}: images[{i}].id is {pred.image_ids[i]!r} but the GT has "
                                  f"{gt.image_ids[i]!r}; the PoseTrack21 protocol needs equal ids at each position")
    new_index = np.full(len(gt.image_ids), -1, dtype=np.int64)
    new_index[evaluated] = np.arange(len(evaluated))
    region_polygons = {frame: _build_polygons(polygons) for frame, polygons in gt.ignore_regions.items()
                       if new_index[frame] >= 0}

    def clean(f: _Pt21File, is_gt: bool) -> _People:
        keep = new_index[f.frame] >= 0 if len(f.frame) else np.zeros(0, bool)
        kp = f.keypoints.copy()
        for frame, polygons in region_polygons.items():
            rows = np.flatnonzero(keep & (f.frame == frame))
            if not len(rows):
                continue
            inside = _inside_any(kp[rows, :, :2].reshape(-1, 2), polygons).reshape(len(rows), -1)
            all_inside = inside.all(axis=1)
            kp[rows] = np.where(inside[..., None], 0.0, kp[rows])
            invalid = ((kp[rows, :, 0] <= 0) & (kp[rows, :, 1] <= 0)).all(axis=1)
            keep[rows[all_inside | invalid]] = False
        sel = np.flatnonzero(keep)
        kp = kp[sel]
        present = (kp[:, :, 0] > 0) & (kp[:, :, 1] > 0)
        track_id = f.track_id[sel] if f.track_id is not None else None
        return _People(new_index[f.frame[sel]], kp[:, :, :2], present, kp[:, :, 2], f.head_size[sel], track_id)

    return clean(gt, True), clean(pred, False), [str(i) for i in evaluated]
