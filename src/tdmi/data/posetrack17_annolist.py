"""PoseTrack17's old ``annolist`` schema (facts 2.2): JSON from poseval's ``mat2json`` or the official ``.mat`` files
(read with :func:`scipy.io.loadmat`), 15 poseval joint ids mapped to the 17-slot order. Old-format people have no
body box; they get PoseTrack18's own rule, the labelled-keypoint extent enlarged 1.3x (:func:`bbox_from_keypoints`).
:func:`tdmi.data.posetrack.load_sequence_file` dispatches here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from tdmi.data.fileio import field_error
from tdmi.data.posetrack_fields import (FLAG_LABELED, FLAG_OCCLUDED, NUM_JOINTS, as_list, bbox_from_keypoints,
                                        parse_frame_index, posetrack18_image_id, scalar_field)
from tdmi.data.records import Frame, Person, Sequence
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSEVAL15_TO_POSETRACK17


def _old_format_person(rect: dict, src: str, where: str) -> Person:
    keypoints = np.zeros((NUM_JOINTS, 3), np.float32)
    joint_scores = np.zeros(NUM_JOINTS, np.float32)
    has_joint_scores = False
    annopoints = as_list(rect.get("annopoints"))
    points = as_list(annopoints[0].get("point")) if annopoints and isinstance(annopoints[0], dict) else []
    for k, point in enumerate(points):
        pwhere = f"{where}.annopoints[0].point[{k}]"
        if not isinstance(point, dict):
            raise field_error(src, pwhere, f"is {type(point).__name__}, expected an object")
        joint = scalar_field(point.get("id"), src, f"{pwhere}.id")
        if joint is None or joint != int(joint) or not 0 <= joint < len(POSEVAL15_TO_POSETRACK17):
            raise field_error(src, f"{pwhere}.id", f"is {point.get('id')!r}, expected a joint id 0..14")
        x, y = scalar_field(point.get("x"), src, f"{pwhere}.x"), scalar_field(point.get("y"), src, f"{pwhere}.y")
        if x is None or y is None:
            raise field_error(src, pwhere, "lacks x or y")
        visible = scalar_field(point.get("is_visible"), src, f"{pwhere}.is_visible")
        slot = POSEVAL15_TO_POSETRACK17[int(joint)]
        keypoints[slot] = (x, y, FLAG_OCCLUDED if visible == 0 else FLAG_LABELED)
        score = scalar_field(point.get("score"), src, f"{pwhere}.score")
        if score is not None:
            joint_scores[slot], has_joint_scores = score, True
    corners = [scalar_field(rect.get(key), src, f"{where}.{key}") for key in ("x1", "y1", "x2", "y2")]
    bbox_head = None
    if all(c is not None for c in corners):
        x1, y1, x2, y2 = corners
        bbox_head = np.array([x1, y1, x2 - x1, y2 - y1], np.float32)
    track_id = scalar_field(rect.get("track_id"), src, f"{where}.track_id")
    score = scalar_field(rect.get("score"), src, f"{where}.score")
    return Person(
        keypoints=keypoints,
        bbox=bbox_from_keypoints(keypoints),
        bbox_head=bbox_head,
        track_id=-1 if track_id is None else int(track_id),
        score=1.0 if score is None else score,
        joint_scores=joint_scores if has_joint_scores else None,
    )


def _old_format_ignore_regions(regions: Any, src: str, where: str) -> list[np.ndarray]:
    polygons = []
    for r, region in enumerate(as_list(regions)):
        if not isinstance(region, dict):
            raise field_error(src, f"{where}[{r}]", f"is {type(region).__name__}, expected an object with 'point'")
        points = []
        for k, point in enumerate(as_list(region.get("point"))):
            pwhere = f"{where}[{r}].point[{k}]"
            if not isinstance(point, dict):
                raise field_error(src, pwhere, f"is {type(point).__name__}, expected an object")
            x, y = scalar_field(point.get("x"), src, f"{pwhere}.x"), scalar_field(point.get("y"), src, f"{pwhere}.y")
            if x is None or y is None:
                raise field_error(src, pwhere, "lacks x or y")
            points.append((x, y))
        polygons.append(np.array(points, np.float64).reshape(-1, 2))
    return polygons


def _image_name(frame: dict, src: str, where: str) -> str:
    images = as_list(frame.get("image"))
    name = images[0].get("name") if images and isinstance(images[0], dict) else None
    if isinstance(name, list) and len(name) == 1:
        name = name[0]
    if not isinstance(name, str) or not name:
        raise field_error(src, f"{where}.image", "has no name")
    return name


def parse_annolist(annolist: Any, path: Path, dataset: Optional[str]) -> list[Sequence]:
    src = str(path)
    entries = as_list(annolist)
    frames = []
    used_ids: set[int] = set()
    for i, entry in enumerate(entries):
        where = f"annolist[{i}]"
        if not isinstance(entry, dict):
            raise field_error(src, where, f"is {type(entry).__name__}, expected an object")
        file_name = _image_name(entry, src, where)
        try:
            frame_index = parse_frame_index(file_name)
        except ValueError as err:
            raise field_error(src, f"{where}.image.name", str(err).replace("frame file name ", "")) from None
        people = []
        for k, rect in enumerate(as_list(entry.get("annorect"))):
            if not isinstance(rect, dict):
                raise field_error(src, f"{where}.annorect[{k}]", f"is {type(rect).__name__}, expected an object")
            people.append(_old_format_person(rect, src, f"{where}.annorect[{k}]"))
        labelled = scalar_field(entry.get("is_labeled"), src, f"{where}.is_labeled")
        # PT17 files carry no image ids; the PT18 formula keeps them unique and meaningful where the names allow,
        # otherwise the 1-based position in the file stands in (poseval's imgnum).
        try:
            image_id = posetrack18_image_id(file_name)
        except DataFormatError:
            image_id = i + 1
        if image_id in used_ids:
            image_id = i + 1
        used_ids.add(image_id)
        frames.append(Frame(
            file_name=file_name,
            frame_index=frame_index,
            image_id=image_id,
            is_labeled=bool(people) if labelled is None else bool(labelled),
            people=people,
            ignore_regions=_old_format_ignore_regions(entry.get("ignore_regions"), src, f"{where}.ignore_regions"),
            has_labeled_person=bool(people),
        ))
    return [Sequence(name=path.stem, frames=frames, nframes=len(frames), dataset=dataset or "posetrack17",
                     source=src, vid_id="")]


def _mat_to_python(value: Any) -> Any:
    """loadmat(squeeze_me=True, struct_as_record=False) objects -> dicts, lists and Python numbers."""
    from scipy.io.matlab import mat_struct

    if isinstance(value, mat_struct):
        return {name: _mat_to_python(getattr(value, name)) for name in value._fieldnames}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_mat_to_python(v) for v in value.reshape(-1)]
        if value.dtype.kind in "US":
            return str(value.item()) if value.size == 1 else [str(v) for v in value.reshape(-1)]
        return value.item() if value.ndim == 0 else value.reshape(-1).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_mat(path: Path, dataset: Optional[str]) -> list[Sequence]:
    import scipy.io

    try:
        contents = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise DataFormatError(f"{path}: MATLAB v7.3 (HDF5) file; save it as -v7 or convert it with poseval's "
                              f"mat2json") from None
    except Exception as err:  # scipy raises ValueError/TypeError/OSError variants for non-.mat content
        raise DataFormatError(f"{path}: not a readable MATLAB file ({err})") from None
    if "annolist" not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "nothing"
        raise DataFormatError(f"{path}: no 'annolist' variable (found: {found})")
    return parse_annolist(_mat_to_python(contents["annolist"]), path, dataset)
