"""A PoseTrack18-schema writer for :class:`tdmi.data.records.Sequence` records (the inverse of
:func:`tdmi.data.posetrack.load_sequences` for PT18/PT21 files; facts 2.1), with atomic writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tdmi.data.fileio import atomic_write_json
from tdmi.data.posetrack_fields import FLAG_LABELED
from tdmi.data.records import Sequence
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSETRACK17


def _flat_keypoints(keypoints: np.ndarray) -> list[float]:
    flat = []
    for x, y, flag in keypoints.astype(np.float64):
        flat.extend((x, y, 1.0 if flag >= FLAG_LABELED else 0.0))
    return flat


def sequence_to_posetrack18_json(sequence: Sequence) -> dict:
    """A Sequence in the PoseTrack18 per-sequence schema (plus PT21's ``has_labeled_person`` and ``person_id``
    when ``sequence.dataset == "posetrack21"``). Reading the result back gives equal records.

    Flags are written back in the files' convention: :data:`FLAG_LABELED` -> 1, ``FLAG_OCCLUDED`` (0.5) -> 0 with
    the coordinates kept (so an occluded joint exactly at (0, 0) cannot survive a PT18 round trip). Annotation ids
    are ``image_id * 100 + position`` as in the official files.

    Raises:
        DataFormatError: two frames share an image id (the schema links people to frames by id).
    """
    is_pt21 = sequence.dataset == "posetrack21"
    images, annotations, seen = [], [], set()
    for frame in sequence.frames:
        if frame.image_id in seen:
            raise DataFormatError(f"sequence {sequence.name}: image id {frame.image_id} is used by two frames")
        seen.add(frame.image_id)
        image: dict[str, Any] = {
            "file_name": frame.file_name,
            "id": frame.image_id,
            "frame_id": frame.image_id,
            "vid_id": sequence.vid_id,
            "nframes": sequence.nframes,
            "is_labeled": frame.is_labeled,
            "ignore_regions_x": [[float(v) for v in polygon[:, 0]] for polygon in frame.ignore_regions],
            "ignore_regions_y": [[float(v) for v in polygon[:, 1]] for polygon in frame.ignore_regions],
        }
        if is_pt21:
            image["has_labeled_person"] = frame.has_labeled_person
        if frame.width or frame.height:
            image["width"], image["height"] = frame.width, frame.height
        images.append(image)
        for k, person in enumerate(frame.people):
            annotation: dict[str, Any] = {
                "id": frame.image_id * 100 + k,
                "image_id": frame.image_id,
                "category_id": 1,
                "track_id": person.track_id,
                "bbox": [float(v) for v in person.bbox],
                "keypoints": _flat_keypoints(person.keypoints),
                "scores": [] if person.joint_scores is None else [float(v) for v in person.joint_scores],
                "num_keypoints": person.num_labeled,
                "iscrowd": False,
            }
            if person.bbox_head is not None:
                annotation["bbox_head"] = [float(v) for v in person.bbox_head]
            if is_pt21:
                annotation["person_id"] = person.person_id
            if person.score != 1.0:
                annotation["score"] = float(person.score)
            annotations.append(annotation)
    category = {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(POSETRACK17.names),
        "skeleton": [[a + 1, b + 1] for a, b in POSETRACK17.skeleton],
    }
    return {"images": images, "annotations": annotations, "categories": [category]}


def save_sequences(sequences: Iterable[Sequence], out_dir: str | Path) -> list[Path]:
    """Write each sequence to ``out_dir/<name>.json`` in the PoseTrack18 schema (atomic writes).

    Returns:
        The written paths, in input order.
    Raises:
        DataFormatError: two sequences share a name.
    """
    out_dir = Path(out_dir)
    sequences = list(sequences)
    names = [s.name for s in sequences]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataFormatError(f"{out_dir}: several sequences are named {', '.join(duplicates)}")
    written = []
    for sequence in sequences:
        target = out_dir / f"{sequence.name}.json"
        atomic_write_json(target, sequence_to_posetrack18_json(sequence))
        written.append(target)
    return written
