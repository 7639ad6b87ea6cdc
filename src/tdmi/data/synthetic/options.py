"""SynthTrack's constants, difficulty options, generation records and PoseTrack18 naming helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tdmi.data.posetrack import POSETRACK18_SOURCE_IDS
from tdmi.errors import CommandError
from tdmi.keypoints import POSETRACK17

#: Token after the sequence number in SynthTrack sequence names; PoseTrack18's id formula maps it to T = 2.
SEQUENCE_TOKEN = "bonn"
SEQUENCE_TOKEN_ID = POSETRACK18_SOURCE_IDS[SEQUENCE_TOKEN]
#: Default frame size ``(W, H)``.
DEFAULT_SIZE = (480, 360)
#: Bumped whenever the same seed would render different content. Version 2 (2026-12-06): every entity draws from
#: its own random stream (counterfactual variants) and annotations carry per-person difficulty fields; version 1
#: (``SynthOptions(version=1)``) still renders the frames the shipped demo models were scored on.
SYNTHTRACK_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)

_NUM_JOINTS = POSETRACK17.num_joints
_EARS = (POSETRACK17.index("left_ear"), POSETRACK17.index("right_ear"))
_SCORED = tuple(j for j in range(_NUM_JOINTS) if j not in _EARS)
_SHAKE_MARGIN = 16  # background canvas margin, the largest camera-shake offset in pixels
_LIGHT = (-0.6, -0.8)  # light from the upper left, image coordinates
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9]+$")
_BLUR_TAG_PX = 3.0



@dataclass(frozen=True)
class SynthOptions:
    """Difficulty and labelling knobs. Probabilities are per sequence unless stated."""

    people: tuple[int, int] = (1, 4)
    """Range (inclusive) of the number of main people per sequence (a distractor may add one)."""
    blur_probability: float = 0.35
    """A sequence gets a fast mover (runner or fast arm wave) and a long exposure, so frames are blurred."""
    occluder_probability: float = 0.5
    """A sequence gets 1-2 boxes or poles that cross in front of a person."""
    shake_probability: float = 0.3
    """A sequence is filmed by a shaking camera (global jitter with occasional jerks)."""
    distractor_probability: float = 0.5
    """An extra person walks or stands close to (and partly overlapping) another one."""
    crowd_probability: float = 0.3
    """A distant, unannotated crowd under an ignore polygon."""
    max_substeps: int = 8
    """Most sub-frame renders averaged into one blurred frame (one render per ~3 px of blur)."""
    dense_labeled_frames: int = 30
    """Length of the central stretch of labelled frames (capped at half the sequence)."""
    labeled_every: int = 4
    """Outside the central stretch, frames with index % labeled_every == 0 are labelled (1 = all frames)."""
    jpeg_quality: int = 92
    detection_miss_rate: float = 0.05
    """Base probability that a visible person gets no detection (rises with occlusion)."""
    detection_false_positives: float = 0.3
    """Mean number of false-positive boxes per frame."""
    detection_jitter: float = 0.05
    """Standard deviation of each detection box edge, as a fraction of the box size."""
    version: int = SYNTHTRACK_VERSION
    """Generator version: 2 (per-entity random streams) or 1 (one stream; the frames of earlier sets)."""

    def __post_init__(self) -> None:
        lo, hi = self.people
        if not (1 <= lo <= hi <= 8):
            raise CommandError(f"SynthOptions.people must satisfy 1 <= min <= max <= 8, got {self.people}")
        for name in ("blur_probability", "occluder_probability", "shake_probability", "distractor_probability",
                     "crowd_probability", "detection_miss_rate", "detection_jitter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CommandError(f"SynthOptions.{name} must be in [0, 1], got {value}")
        if self.detection_false_positives < 0:
            raise CommandError(f"SynthOptions.detection_false_positives must be >= 0, got "
                               f"{self.detection_false_positives}")
        if self.max_substeps < 2 or self.dense_labeled_frames < 0 or self.labeled_every < 1:
            raise CommandError("SynthOptions: max_substeps >= 2, dense_labeled_frames >= 0 and labeled_every >= 1")
        if self.version not in SUPPORTED_VERSIONS:
            raise CommandError(f"SynthOptions.version must be one of {SUPPORTED_VERSIONS}, got {self.version}")
        if not 1 <= self.jpeg_quality <= 100:
            raise CommandError(f"SynthOptions.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


@dataclass
class SynthSummary:
    """What :func:`generate_synthtrack` wrote."""

    out_dir: Path
    split: str
    sequences: list[str]
    annotation_dir: Path
    image_dir: Path
    detections_file: Path
    frames: int = 0
    labeled_frames: int = 0
    annotations: int = 0
    detections: int = 0
    blurred_frames: int = 0
    occluded_frames: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"synth: wrote {len(self.sequences)} sequences ({self.frames} frames, {self.labeled_frames} labelled, "
                f"{self.annotations} people, {self.detections} boxes; {self.blurred_frames} blurred and "
                f"{self.occluded_frames} occluded frames) to {self.out_dir} in {self.seconds:.1f} s")


@dataclass
class SynthClip:
    """One rendered sequence in memory. P = annotatable people (crowd excluded), T = frames.

    Attributes:
        images: uint8 ``[T, H, W, 3]``, BGR (OpenCV order), exactly what is JPEG-encoded on disk.
        positions: float64 ``[T, P, 17, 2]``: every joint's image position (also outside the image or hidden),
            rounded to 0.01 px as in the files.
        keypoints: float64 ``[T, P, 17, 3]``: x, y, flag after the labelling rules (flag-0 joints are 0, 0, 0).
        visible: bool ``[T, P, 17]``: inside the image and not covered by an object or another person.
        head_boxes: float64 ``[T, P, 4]`` head boxes ``[x, y, w, h]``.
        extents: float64 ``[T, P, 4]`` tight silhouette boxes ``[x, y, w, h]`` (unclipped).
        track_ids: ``[P]`` track id of each person.
        actions: ``[P]`` motion of each person (walk, run, wave, stand, spin).
        labeled: bool ``[T]``, the labelled-frame pattern.
        tags: per-frame difficulty tags (see the module docstring).
        ignore_regions: per frame, a list of float ``[K, 2]`` polygons.
        crowd_extents: per frame, the tight boxes ``[x, y, w, h]`` of the crowd people.
        scene: the scene summary written as the files' top-level ``synthtrack`` key.
    """

    images: np.ndarray
    positions: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    head_boxes: np.ndarray
    extents: np.ndarray
    track_ids: list[int]
    actions: list[str]
    labeled: np.ndarray
    tags: list[dict]
    ignore_regions: list[list[np.ndarray]]
    crowd_extents: list[np.ndarray]
    scene: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- public helpers


def labeled_frame_mask(nframes: int, dense: int = 30, every: int = 4) -> np.ndarray:
    """PoseTrack18-val-like labelled frames: a central dense stretch plus every ``every``-th frame elsewhere.

    The dense stretch has ``min(dense, ceil(nframes / 2))`` frames starting at ``(nframes - length) // 2``.
    Returns bool ``[nframes]``.
    """
    length = min(dense, (nframes + 1) // 2)
    start = (nframes - length) // 2
    index = np.arange(nframes)
    return ((index >= start) & (index < start + length)) | (index % every == 0)


def sequence_name(index: int, split: str) -> str:
    """Name of the ``index``-th (0-based) sequence, e.g. ``000001_bonn_val``."""
    return f"{index + 1:06d}_{SEQUENCE_TOKEN}_{split}"


def image_id(sequence_index: int, frame_index: int) -> int:
    """PoseTrack18 image id T*10^10 + S*10^4 + F of a SynthTrack frame (S = sequence_index + 1)."""
    return SEQUENCE_TOKEN_ID * 10**10 + (sequence_index + 1) * 10**4 + frame_index


def pt18_bbox(keypoints: np.ndarray) -> list[float]:
    """PoseTrack18 GT box of ``keypoints [17, 3]``: the labelled-joint extent enlarged 1.3x about its centre.

    Written out in float64 with the facts' exact expression (x1 = cx - 0.65 w), so that the numbers in the files
    satisfy the rule exactly (``posetrack.bbox_from_keypoints`` returns float32 for the readers).
    """
    labelled = keypoints[keypoints[:, 2] > 0]
    x_min, x_max = float(labelled[:, 0].min()), float(labelled[:, 0].max())
    y_min, y_max = float(labelled[:, 1].min()), float(labelled[:, 1].max())
    cx, cy = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0
    w, h = x_max - x_min, y_max - y_min
    return [cx - 0.65 * w, cy - 0.65 * h, 1.3 * w, 1.3 * h]


def categories() -> list[dict]:
    """The ``categories`` list of PoseTrack18 files (skeleton 1-based)."""
    return [{
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(POSETRACK17.names),
        "skeleton": [[a + 1, b + 1] for a, b in POSETRACK17.skeleton],
    }]


