"""Prediction files in the official per-sequence PoseTrack18 layout (read by poseval and by the PoseTrack21 kit).

Facts: ``docs/facts/posetrack-facts.md`` sections 7.1 (what poseval accepts), 7.2 (how DCPose writes), 9 (mmpose)
and 10 (PT21: equal image ids per position, ``scores`` per joint).

One file per GT sequence, named like the GT file, holding:

- ``images``: the GT file's ``images`` entries copied in GT order and count (id, file_name, frame_id, ...), so
  poseval's by-position frame matching and the PT21 kit's image-id check both hold;
- ``annotations``: one per predicted person with ``keypoints`` (51 numbers, 17-slot order, the third value of each
  triple = the joint score, which poseval reads as ``is_visible``), ``scores`` (the 17 joint scores that rank
  detections), ``score`` (the box score), ``track_id`` (unique within a frame, < 10000), ``image_id``,
  ``category_id`` 1 and ``id``;
- ``categories``: the GT's (or the standard 17-name person category).

Joint score = heatmap maximum x box score (DCPose/FAMI, docs/architecture.md "Predictions"). :class:`PersonPrediction`
takes
the two factors separately (``heatmap_scores`` and ``box_score``) and the writer multiplies them, so that no caller
can multiply twice or forget to. Frames without predictions get no annotations: DCPose's dummy person (one point
at (0, 0) with score -100) is an unmatched lowest-ranked detection that leaves AP unchanged, so it is left out.
A predicted (0, 0) point with joint score 0 would be dropped by poseval's converter; that only happens for
a zero score, which ranks last anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from tdmi.errors import DataFormatError
from tdmi.evaluation.posetrack_ap import MAX_TRACK_ID, read_json, write_json_atomic
from tdmi.keypoints import POSETRACK17

FrameKey = Union[str, int]
"""A frame is named by its GT ``file_name`` or its GT image ``id``."""

_DEFAULT_CATEGORIES = [{
    "supercategory": "person", "id": 1, "name": "person", "keypoints": list(POSETRACK17.names),
    "skeleton": [[a + 1, b + 1] for a, b in POSETRACK17.skeleton],
}]


@dataclass
class PersonPrediction:
    """One predicted person of one frame.

    Attributes:
        keypoints: ``[17, 2]`` image (x, y) in the 17-slot order.
        heatmap_scores: ``[17]`` raw heatmap maxima from the decoder.
        box_score: detection score of the person box (1.0 for GT boxes).
        track_id: track id, unique within the frame and < 10000; None = index of the person within its frame.
        box: ``[4]`` xywh of the person box the pose was estimated in (for trackers); not written.
    """

    keypoints: np.ndarray
    heatmap_scores: np.ndarray
    box_score: float = 1.0
    track_id: Optional[int] = None
    box: Optional[np.ndarray] = None

    @property
    def joint_scores(self) -> np.ndarray:
        """``[17]`` heatmap maximum x box score, the score poseval ranks."""
        return np.asarray(self.heatmap_scores, dtype=np.float64).reshape(-1) * float(self.box_score)


def _gt_files(gt: Union[str, os.PathLike]) -> list[Path]:
    path = Path(gt)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataFormatError(f"{path}: ground-truth file or folder not found")
    files = sorted(path.glob("*.json"))
    if not files:
        raise DataFormatError(f"{path}: no *.json ground-truth files")
    return files


def _images_of(data: dict, source: Path) -> list[dict]:
    """The GT frames as PoseTrack18 image entries (a PoseTrack17 ``annolist`` gets position ids)."""
    if "images" in data:
        images = data["images"]
        if not all(isinstance(im, dict) and "id" in im and "file_name" in im for im in images):
            raise DataFormatError(f"{source}: every entry of 'images' needs 'id' and 'file_name'")
        return [dict(im) for im in images]
    if "annolist" in data:
        try:
            return [{"file_name": entry["image"][0]["name"], "id": index} for index, entry in
                    enumerate(data["annolist"])]
        except (KeyError, IndexError, TypeError):
            raise DataFormatError(f"{source}: an annolist entry has no image name") from None
    raise DataFormatError(f"{source}: neither a PoseTrack18 ('images') nor a PoseTrack17 ('annolist') file")


def _annotation(person: PersonPrediction, image_id: int, index: int, source: str) -> dict:
    keypoints = np.asarray(person.keypoints, dtype=np.float64)
    scores = person.joint_scores
    if keypoints.shape != (17, 2) or scores.shape != (17,):
        raise DataFormatError(f"{source}: a person needs keypoints [17, 2] and heatmap_scores [17], got "
                              f"{tuple(keypoints.shape)} and {tuple(scores.shape)}")
    if not (np.isfinite(keypoints).all() and np.isfinite(scores).all()):
        raise DataFormatError(f"{source}: a person has non-finite keypoints or scores")
    triples = np.concatenate([keypoints, scores[:, None]], axis=1)
    return {
        "image_id": image_id,
        "track_id": int(person.track_id if person.track_id is not None else index),
        "keypoints": [float(v) for v in triples.reshape(-1)],
        "scores": [float(v) for v in scores],
        "score": float(person.box_score),
        "category_id": 1,
    }


def write_posetrack18_predictions(
    gt: Union[str, os.PathLike],
    predictions: Mapping[tuple[str, FrameKey], Sequence[PersonPrediction]],
    out_dir: Union[str, os.PathLike],
    strict: bool = True,
) -> list[Path]:
    """Write one prediction file per GT sequence.

    Args:
        gt: a GT folder (every ``*.json`` is a sequence) or one GT file.
        predictions: ``(sequence name, frame)`` -> persons, where the sequence name is the GT file stem
            (``003418_mpii_test``) and the frame is the GT image's ``file_name`` or ``id``.
        out_dir: output folder (created); files are written atomically, named like the GT files.
        strict: raise if a key names a sequence or frame that the GT does not have (a typo would otherwise
            silently score as all misses).

    Returns:
        the written paths, in GT file order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _gt_files(gt)
    used: set[tuple[str, FrameKey]] = set()
    payloads: list[tuple[Path, dict]] = []
    for gt_path in files:
        data = read_json(gt_path)
        sequence = gt_path.stem
        images = _images_of(data, gt_path)
        annotations = []
        for image in images:
            image_id = image["id"]
            people: Sequence[PersonPrediction] = ()
            for key in ((sequence, image["file_name"]), (sequence, image_id)):
                if key in predictions:
                    if people:
                        raise DataFormatError(f"{gt_path}: frame {image['file_name']!r} has predictions under both "
                                              f"its file_name and its id")
                    people = predictions[key]
                    used.add(key)
            frame_annotations = [_annotation(p, image_id, i, f"{sequence} frame {image['file_name']}")
                                 for i, p in enumerate(people)]
            track_ids = [a["track_id"] for a in frame_annotations]
            if len(set(track_ids)) != len(track_ids):
                raise DataFormatError(f"{sequence} frame {image['file_name']}: track ids {track_ids} are not unique")
            if any(t < 0 or t >= MAX_TRACK_ID for t in track_ids):
                raise DataFormatError(f"{sequence} frame {image['file_name']}: track ids must be in [0, 9999]")
            for i, ann in enumerate(frame_annotations):
                ann["id"] = len(annotations) + i
            annotations.extend(frame_annotations)
        payloads.append((gt_path, {"images": images, "annotations": annotations,
                                   "categories": data.get("categories") or _DEFAULT_CATEGORIES}))
    if strict:
        unknown = [key for key in predictions if key not in used]
        if unknown:
            raise DataFormatError(f"{len(unknown)} prediction key(s) match no GT frame, e.g. {unknown[0]!r}; keys are "
                                  f"(GT file stem, image file_name or id)")
    # Written only once every sequence is valid, so a failure leaves no partial set of files behind.
    return [write_json_atomic(out_dir / gt_path.name, payload, indent=None) for gt_path, payload in payloads]


POSETRACK18_CATEGORIES = _DEFAULT_CATEGORIES
"""The standard PoseTrack18 ``categories`` list (person, 17 keypoint names, 1-based skeleton), for files without GT."""


def posetrack18_annotation(person: PersonPrediction, image_id: int, index: int, source: str = "prediction") -> dict:
    """One PoseTrack18 prediction annotation (``keypoints``, ``scores``, ``score``, ``track_id``, ...) for writers that
    have no GT file to copy frames from (``tdmi infer``); the same rules as :func:`write_posetrack18_predictions`."""
    return _annotation(person, image_id, index, source)
