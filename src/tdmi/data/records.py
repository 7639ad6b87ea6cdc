"""Plain records every dataset reader produces: :class:`Sequence` -> :class:`Frame` -> :class:`Person`.

Readers (``posetrack.py``, ``hieve.py``, ``synthetic/`` through the PoseTrack18 layout) turn files into these;
everything downstream (clip sampling, the Dataset, writers) reads only these. Coordinates are image pixels of
the original frame, x to the right and y down, joints in the 17-slot PoseTrack order (``keypoints.POSETRACK17``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Person:
    """One annotated (or detected) person in one frame.

    Attributes:
        keypoints: float32 ``[J, 3]``: x, y, flag. flag > 0 means the joint is labelled; unlabelled joints are
            (0, 0, 0). For detections this is all zeros.
        bbox: ``[x, y, w, h]`` in pixels (PoseTrack18 GT boxes are the keypoint extent x1.3 and may exceed the
            image).
        bbox_head: ``[x, y, w, h]`` head box (for PCKh), or None when the file has none.
        track_id: identity within the sequence (-1 when unknown).
        person_id: PoseTrack21 identity across videos (-1 when absent).
        score: box score (1.0 for ground truth).
        joint_scores: float32 ``[J]`` per-joint scores (predictions only), else None.
    """

    keypoints: np.ndarray
    bbox: np.ndarray
    bbox_head: Optional[np.ndarray] = None
    track_id: int = -1
    person_id: int = -1
    score: float = 1.0
    joint_scores: Optional[np.ndarray] = None

    @property
    def num_labeled(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())


@dataclass
class Frame:
    """One frame of a sequence as listed in its annotation file.

    Attributes:
        file_name: image path relative to the dataset's image root (e.g. ``images/val/003418_mpii_test/000000.jpg``).
        frame_index: the frame number parsed from the file name, in the dataset's own numbering (PoseTrack18:
            0-based ``%06d``; PoseTrack17 renamed frames: 1-based ``%08d``).
        image_id: the file's image id (PoseTrack18: T*10^10 + S*10^4 + F).
        is_labeled: the frame carries pose annotations.
        people: annotated people (empty for unlabelled frames).
        ignore_regions: polygons, each a float ``[K, 2]`` array of (x, y) points.
        has_labeled_person: PoseTrack21 flag (frame has boxes, with or without keypoints).
        width, height: image size when the file states it, else 0.
    """

    file_name: str
    frame_index: int
    image_id: int = 0
    is_labeled: bool = False
    people: list[Person] = field(default_factory=list)
    ignore_regions: list[np.ndarray] = field(default_factory=list)
    has_labeled_person: bool = False
    width: int = 0
    height: int = 0


@dataclass
class Sequence:
    """One video: its frames in file order and how its frame files are numbered.

    Attributes:
        name: sequence name, e.g. ``003418_mpii_test``.
        frames: frames in the order of the annotation file.
        nframes: number of frames in the whole video (``nframes`` in PoseTrack files).
        dataset: ``posetrack17``, ``posetrack18``, ``posetrack21``, ``hieve`` or ``synthtrack``.
        source: the file the sequence was read from.
        vid_id: the files' ``vid_id`` string when present.
    """

    name: str
    frames: list[Frame]
    nframes: int
    dataset: str = "posetrack18"
    source: str = ""
    vid_id: str = ""

    @property
    def labeled_frames(self) -> list[Frame]:
        return [f for f in self.frames if f.is_labeled]
