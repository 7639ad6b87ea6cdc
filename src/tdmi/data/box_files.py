"""The one reader of person-box files, used by ``tdmi test --boxes`` and ``tdmi infer --boxes`` alike.

A box file says where people are; the pose model does the rest (top-down, ``docs/facts/model-facts.md`` (e)). Four
layouts
are read, decided by the top level of the JSON (``docs/facts/posetrack-facts.md`` 4.2 and 10 for the first two):

- a list of COCO detection results, ``{image_id, bbox [x, y, w, h], score, category_id}`` (mmpose's
  ``test_posetrack18_human_detections.json``);
- a list of DCPose / PoseWarper records, the same with ``image_name`` (a frame path) instead of ``image_id``
  (``val_boxes.json``); ``file_name`` is accepted as a synonym;
- a PoseTrack-style file, ``{"images": [{id, file_name}], "annotations": [{image_id, bbox, ...}]}`` (ground
  truth used as boxes): each annotation's image id is resolved to its file name;
- a ``tdmi-boxes`` file as ``tdmi infer`` writes it (``{"format": "tdmi-boxes", "source", "frames": [{index,
  name, boxes, scores}]}``), where a frame with an empty box list is listed as "no people here".

The rules are the same for every layout and every command:

- a record without ``category_id`` is a person; other categories are skipped (COCO's person is 1);
- a record without ``score`` scores :data:`MISSING_SCORE` (1.0): hand-made lists and ground truth have none;
- boxes scoring below the threshold are dropped, :data:`DEFAULT_SCORE_THRESHOLD` (0.2, DCPose/FAMI's
  ``IMAGE_THRE`` on PoseWarper's boxes) unless the config (``data.box_score_threshold``) says otherwise;
- there is no NMS and no clipping: boxes are used raw, as the published numbers were produced;
- every coordinate and score must be a finite number; any other content is an error that names the file and
  the record (``val_boxes.json: [12].bbox has 3 numbers, expected 4``).

This module only reads; how records are matched to frames is the consumer's business, since a dataset frame
has an image id and a path (:mod:`tdmi.data.detections`) and a video frame has an index and a name
(:class:`tdmi.inference.detectors.BoxFileDetector`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from tdmi.data.fileio import check_int, check_list, check_number, check_numbers, field_error, read_json
from tdmi.errors import DataFormatError

#: DCPose/FAMI's IMAGE_THRE for PoseWarper's boxes; ``data.box_score_threshold`` defaults to it.
DEFAULT_SCORE_THRESHOLD = 0.2
#: The score of a record that has none (a hand-made box list, ground-truth boxes).
MISSING_SCORE = 1.0
#: COCO category id of "person".
PERSON_CATEGORY_ID = 1


@dataclass(frozen=True)
class BoxRecord:
    """One person box of a box file, and the frame it belongs to (as far as the file says).

    Attributes:
        bbox: float32 ``[4]`` ``[x, y, w, h]`` in frame pixels; None for a frame listed with no boxes.
        score: the detector's confidence (:data:`MISSING_SCORE` when the file has none).
        image_id: the record's integer image id (COCO results, PoseTrack-style files), else None.
        image_name: the frame's path or file name, else None (``tdmi-boxes``: ``<source>/<name>``).
        frame_index: the 0-based frame index (``tdmi-boxes`` files), else None.
    """

    bbox: Optional[np.ndarray]
    score: float
    image_id: Optional[int] = None
    image_name: Optional[str] = None
    frame_index: Optional[int] = None


def _image_id(value: Any, src: str, where: str) -> int:
    if isinstance(value, str) and value.isdigit():  # some exporters write ids as strings
        return int(value)
    return check_int(value, src, where)


def _name(value: Any, src: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise field_error(src, where, f"is {value!r}, expected a frame path")
    return value


def _box(record: dict, src: str, where: str) -> tuple[np.ndarray, float]:
    if "bbox" not in record:
        raise field_error(src, where, "has no bbox")
    bbox = check_numbers(record["bbox"], src, f"{where}.bbox", 4, "4 ([x, y, w, h])").astype(np.float32)
    score = check_number(record["score"], src, f"{where}.score") if "score" in record else MISSING_SCORE
    return bbox, score


def _is_person(record: dict, src: str, where: str) -> bool:
    return check_int(record.get("category_id", PERSON_CATEGORY_ID), src, f"{where}.category_id") \
        == PERSON_CATEGORY_ID


def _detection_list(records: list, src: str) -> list[BoxRecord]:
    out = []
    for i, record in enumerate(records):
        where = f"[{i}]"
        if not isinstance(record, dict):
            raise field_error(src, where, f"is {type(record).__name__}, expected an object with a bbox")
        name_key = "image_name" if "image_name" in record else "file_name" if "file_name" in record else None
        if name_key is None and "image_id" not in record:
            raise field_error(src, where, "has neither image_id (COCO results) nor image_name (DCPose boxes)")
        image_name = _name(record[name_key], src, f"{where}.{name_key}") if name_key else None
        # DCPose records carry an image id too (frame_id), but their path is the key DCPose itself uses
        image_id = _image_id(record["image_id"], src, f"{where}.image_id") \
            if "image_id" in record and image_name is None else None
        bbox, score = _box(record, src, where)
        if _is_person(record, src, where):
            out.append(BoxRecord(bbox, score, image_id=image_id, image_name=image_name))
    return out


def _posetrack_style(data: dict, src: str) -> list[BoxRecord]:
    names = {}
    for i, image in enumerate(check_list(data.get("images", []), src, "images")):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise field_error(src, f"images[{i}]", "needs 'id' and 'file_name'")
        names[_image_id(image["id"], src, f"images[{i}].id")] = _name(image["file_name"], src,
                                                                        f"images[{i}].file_name")
    out = [BoxRecord(None, MISSING_SCORE, image_id=image_id, image_name=name) for image_id, name in names.items()]
    for i, record in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(record, dict):
            raise field_error(src, where, f"is {type(record).__name__}, expected an object with a bbox")
        if "image_id" not in record:
            raise field_error(src, where, "has no image_id")
        image_id = _image_id(record["image_id"], src, f"{where}.image_id")
        bbox, score = _box(record, src, where)
        if _is_person(record, src, where):
            out.append(BoxRecord(bbox, score, image_id=image_id, image_name=names.get(image_id)))
    return out


def _tdmi_boxes(data: dict, src: str) -> list[BoxRecord]:
    source = data.get("source") or ""
    if not isinstance(source, str):
        raise field_error(src, "source", f"is {source!r}, expected the name of the video or folder")
    out = []
    for i, frame in enumerate(check_list(data.get("frames", []), src, "frames")):
        where = f"frames[{i}]"
        if not isinstance(frame, dict) or "boxes" not in frame:
            raise field_error(src, where, "expected an object with 'boxes'")
        boxes = check_list(frame["boxes"], src, f"{where}.boxes")
        scores = check_list(frame["scores"], src, f"{where}.scores") if "scores" in frame \
            else [MISSING_SCORE] * len(boxes)
        if len(scores) != len(boxes):
            raise field_error(src, where, f"has {len(boxes)} boxes but {len(scores)} scores")
        name = _name(frame["name"], src, f"{where}.name") if frame.get("name") else None
        index = check_int(frame["index"], src, f"{where}.index") if "index" in frame else None
        if name is None and index is None:
            raise field_error(src, where, "needs a 'name' or an integer 'index'")
        image_name = None if name is None else f"{source}/{name}" if source else name
        out.append(BoxRecord(None, MISSING_SCORE, image_name=image_name, frame_index=index))
        for j, (bbox, score) in enumerate(zip(boxes, scores)):
            out.append(BoxRecord(
                check_numbers(bbox, src, f"{where}.boxes[{j}]", 4, "4 ([x, y, w, h])").astype(np.float32),
                check_number(score, src, f"{where}.scores[{j}]"), image_name=image_name, frame_index=index))
    return out


def read_box_file(path: Union[str, Path]) -> list[BoxRecord]:
    """Every person box of a box file (in file order, which poseval's tie-breaking depends on), unthresholded.

    Records with ``bbox`` None say that a frame is listed (a ``tdmi-boxes`` frame with no people, or an image
    of a PoseTrack-style file), so that "no people here" differs from "the file knows nothing of this frame".

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not JSON, not one of the layouts above, or a malformed record (the message names the
            file and the record).
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder; --boxes takes one JSON box file (COCO detection results, "
                              "a DCPose/PoseWarper list or a PoseTrack-style file)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such box file")
    src = str(path)
    data = read_json(path)
    if isinstance(data, list):
        return _detection_list(data, src)
    if isinstance(data, dict) and data.get("format") == "tdmi-boxes":
        return _tdmi_boxes(data, src)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        return _posetrack_style(data, src)
    raise DataFormatError(
        f"{src}: not a box file tdmi reads; expected a JSON list of COCO results or DCPose/PoseWarper records "
        f"(image_id or image_name, bbox, score), a PoseTrack-style file with 'images' and 'annotations', or a "
        f"tdmi-boxes file")
