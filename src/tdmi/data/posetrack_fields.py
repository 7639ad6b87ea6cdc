"""PoseTrack names, ids, boxes and field checks shared by the annotation readers (:mod:`tdmi.data.posetrack`,
:mod:`tdmi.data.posetrack17_annolist`) and the writer (:mod:`tdmi.data.posetrack_writer`): frame numbering (facts 2.2),
PoseTrack18 image ids (facts 2.3), the GT box rule (facts 2.1) and the flags every reader gives a labelled joint.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Optional

import numpy as np

from tdmi.data.fileio import check_number, field_error
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSETRACK17

#: Dataset names a reader may be forced to (``synthtrack`` is read with the PoseTrack18 rules).
DATASETS: tuple[str, ...] = ("posetrack17", "posetrack18", "posetrack21", "synthtrack")

#: Flag of a labelled joint whose file flag is positive (PT18 labelled, PT21 visible, PT17 visible).
FLAG_LABELED: float = 1.0
#: Flag of a labelled joint whose file flag is 0 (PT21 occluded but annotated, PT17 ``is_visible`` 0).
FLAG_OCCLUDED: float = 0.5

NUM_JOINTS = POSETRACK17.num_joints
#: PoseTrack18 dataset token (after the first "_" of the sequence folder) -> the T of the image id.
POSETRACK18_SOURCE_IDS: dict[str, int] = {"mpii": 1, "bonn": 2, "mpiinew": 3}
#: PoseTrack18's GT boxes are the labelled-keypoint extent enlarged by this factor about its centre.
GT_BOX_ENLARGE = 1.3

_FRAME_NAME = re.compile(r"^(\d+)$")
_SEQUENCE_FOLDER = re.compile(r"^(\d{6})_([A-Za-z]+)")


# --------------------------------------------------------------------------------------------------- names and ids


def parse_frame_index(file_name: str) -> int:
    """The frame number in a frame file name, e.g. ``images/val/x/000017.jpg`` -> 17, ``00000001.jpg`` -> 1.

    Raises:
        ValueError: the file name (without extension) is not all digits.
    """
    stem = PurePosixPath(str(file_name).replace("\\", "/")).stem
    match = _FRAME_NAME.match(stem)
    if match is None:
        raise ValueError(f"frame file name {file_name!r} does not end in a frame number (e.g. 000017.jpg)")
    return int(match.group(1))


def frame_index_base(file_name: str) -> int:
    """Index of a sequence's first frame under the numbering its file names follow (facts 2.2, DCPose's rule).

    Six-digit names (``000000.jpg``) are PoseTrack18's 0-based frames -> 0. Any other digit count (PoseTrack17's
    renamed ``00000001.jpg`` frames, original PT17 names) is PoseTrack17's 1-based numbering -> 1.
    """
    parse_frame_index(file_name)
    stem = PurePosixPath(str(file_name).replace("\\", "/")).stem
    return 0 if len(stem) == 6 else 1


def posetrack18_image_id(file_name: str) -> int:
    """PoseTrack18 image id ``T*10^10 + S*10^4 + F`` of a frame path (facts 2.3, poseval's id rule).

    T is 1/2/3 for the mpii/bonn/mpiinew token after the first "_" of the sequence folder, S the folder's 6-digit
    sequence number and F the frame number in the file name (< 10^4).
    ``images/val/012834_mpii_test/000000.jpg`` -> 10128340000.

    Raises:
        DataFormatError: the path does not follow the PoseTrack naming.
    """
    path = PurePosixPath(str(file_name).replace("\\", "/"))
    match = _SEQUENCE_FOLDER.match(path.parent.name)
    if match is None:
        raise DataFormatError(f"{file_name}: sequence folder {path.parent.name!r} is not '<6 digits>_<source>...'")
    source = match.group(2).lower()
    if source not in POSETRACK18_SOURCE_IDS:
        raise DataFormatError(f"{file_name}: unknown source {source!r}; known: {', '.join(POSETRACK18_SOURCE_IDS)}")
    try:
        frame = parse_frame_index(file_name)
    except ValueError as err:
        raise DataFormatError(str(err)) from None
    if frame >= 10**4:
        raise DataFormatError(f"{file_name}: frame number {frame} does not fit a PoseTrack18 image id (< 10000)")
    return POSETRACK18_SOURCE_IDS[source] * 10**10 + int(match.group(1)) * 10**4 + frame


def posetrack18_image_id_parts(image_id: int) -> tuple[int, int, int]:
    """Split a PoseTrack18 image id into (T source id, S sequence number, F frame number)."""
    return image_id // 10**10, (image_id // 10**4) % 10**6, image_id % 10**4


def bbox_from_keypoints(keypoints: np.ndarray, enlarge: float = GT_BOX_ENLARGE) -> np.ndarray:
    """``[x, y, w, h]`` of the labelled-keypoint extent enlarged ``enlarge`` times about its centre (facts 2.1).

    Args:
        keypoints: ``[J, 3]`` (x, y, flag); joints with flag > 0 count.
    Returns:
        float32 ``[4]``; all zeros when no joint is labelled.
    """
    labelled = keypoints[:, 2] > 0
    if not labelled.any():
        return np.zeros(4, np.float32)
    xy = keypoints[labelled, :2].astype(np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    centre, size = (lo + hi) / 2, (hi - lo) * enlarge
    return np.array([*(centre - size / 2), *size], np.float32)


# --------------------------------------------------------------------------------------------------- field checks


def as_list(value: Any) -> list:
    """Old-format and .mat fields hold one item either bare or as a 1-element list; empty means absent."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else [value.item()]
    return [value]


def scalar_field(value: Any, src: str, where: str) -> Optional[float]:
    """A number stored bare or as ``[number]`` (old format); None when empty."""
    items = as_list(value)
    if not items:
        return None
    if len(items) != 1:
        raise field_error(src, where, f"has {len(items)} values, expected one")
    return check_number(items[0], src, where)
