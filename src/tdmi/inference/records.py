"""What video inference produces and how it is asked: options, per-person and per-frame poses, run statistics.

Plain records shared by the estimator (:mod:`tdmi.inference.pipeline`), the command that writes files
(:mod:`tdmi.inference.infer_command`) and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from tdmi.evaluation.decode import DECODE_METHODS
from tdmi.data.clips import PADDING_RULES
from tdmi.errors import CommandError
from tdmi.evaluation.writers import PersonPrediction
from tdmi.inference.boxes import MAX_BOXES_PER_FRAME, MIN_BOX_SIDE
from tdmi.precision import AMP_CHOICES

MODES = ("tube", "exact", "warp", "naive")
"""``tube``, ``warp`` and ``exact`` are user choices (``tdmi infer --mode``); ``naive`` is the benchmark's baseline."""

DEFAULT_WINDOW = 12
"""Key frames per tube window. At delta 2: at most (12 + 4) / 12 = 1.33 encodes per person-frame (``benchmarks/
infer_speed.py`` measures speed and mAP against the window)."""

MAX_NOTES = 10
"""Warnings of one input kept in its JSON and printed (the rest are counted)."""


# --------------------------------------------------------------------------------------------------------- records


@dataclass
class PipelineOptions:
    """How :class:`VideoPoseEstimator` runs.

    Attributes:
        mode: ``tube``, ``warp``, ``exact`` or ``naive`` (see the module docstring).
        online: causal clips; each frame's result is ready when the frame arrives.
        window: key frames per tube window (offline: also the chunk of key frames processed together).
        encode_batch: frame crops per ``model.encode`` call.
        decode_batch: clips per ``model.decode`` call.
        padding: padding rule at sequence ends; None = the checkpoint config's ``data.padding``.
        min_iou, max_missed: tracker association threshold and gap tolerance (``tracking.IoUTracker``).
        max_boxes: most people kept per frame (highest box scores).
        min_box_side: boxes narrower or lower than this (pixels, after clipping) are dropped.
        tube_scale_tolerance: a tube window's shared crop may be at most this much larger than a key frame's own
            crop (0.1 = 10%); otherwise the window is split.
        tube_shift_tolerance: ... and its centre at most this fraction of the crop size away from the key box's.
        keep_heatmaps: keep each person's heatmaps ``[J, h, w]`` in the results (tests, debugging).
        tracker: which track ids ``tdmi infer`` writes: ``pose`` (the pose-aware tracker of
            ``tdmi.inference.pose_tracking``, run on the estimated poses in frame order) or ``iou`` (the IoU
            tracker's, which also decides the tube crops either way).
        amp: autocast of the model's encode and decode: ``none``, ``bf16`` or ``fp16``. The heatmap head and
            the decoding of keypoints stay float32 either way.
        decode: heatmap decoding, ``argmax`` or ``dark`` (``evaluation.decode``); None = the checkpoint config's
            ``test.decode``.
    """

    mode: str = "tube"
    online: bool = False
    window: int = DEFAULT_WINDOW
    encode_batch: int = 32
    decode_batch: int = 16
    padding: Optional[str] = None
    min_iou: float = 0.3
    max_missed: int = 5
    max_boxes: int = MAX_BOXES_PER_FRAME
    min_box_side: float = MIN_BOX_SIDE
    tube_scale_tolerance: float = 0.1
    tube_shift_tolerance: float = 0.1
    keep_heatmaps: bool = False
    tracker: str = "iou"
    amp: str = "none"
    decode: Optional[str] = None

    def __post_init__(self) -> None:
        if self.decode is not None and self.decode not in DECODE_METHODS:
            raise CommandError(f"decode must be one of {', '.join(DECODE_METHODS)}, got {self.decode!r}")
        if self.amp not in AMP_CHOICES:
            raise CommandError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")
        if self.mode not in MODES:
            raise CommandError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.window < 1:
            raise CommandError(f"the tube window must be >= 1 key frame, got {self.window}")
        if self.encode_batch < 1 or self.decode_batch < 1:
            raise CommandError("encode_batch and decode_batch must be >= 1")
        if self.tracker not in ("iou", "pose"):
            raise CommandError(f"tracker must be iou or pose, got {self.tracker!r}")
        if self.padding is not None and self.padding not in PADDING_RULES:
            raise CommandError(f"padding must be one of {', '.join(PADDING_RULES)}, got {self.padding!r}")


@dataclass
class PersonPose:
    """One person's pose in one frame (image pixels of that frame).

    Attributes:
        track_id: tracker id, unique within the frame, in [0, 10000).
        box: float32 ``[4]`` xywh, the tracker's cleaned detection box.
        box_score: detection score.
        keypoints: float32 ``[17, 2]`` (x, y) in the 17-slot PoseTrack order.
        heatmap_scores: float32 ``[17]`` raw heatmap maxima.
        heatmaps: ``[17, h, w]`` when :attr:`PipelineOptions.keep_heatmaps`, else None.
    """

    track_id: int
    box: np.ndarray
    box_score: float
    keypoints: np.ndarray
    heatmap_scores: np.ndarray
    heatmaps: Optional[torch.Tensor] = None

    def prediction(self) -> PersonPrediction:
        """As the writers' record (joint score = heatmap maximum x box score)."""
        return PersonPrediction(keypoints=self.keypoints, heatmap_scores=self.heatmap_scores,
                                box_score=self.box_score, track_id=self.track_id)


@dataclass
class FramePoses:
    """The result for one decoded frame.

    Attributes:
        position: 0-based position among the decoded frames (clip neighbours are neighbouring positions).
        index: the frame's index in its source (``SourceFrame.index``; differs from position after skipped frames).
        name: the source's frame name.
        size: ``(width, height)``.
        people: one :class:`PersonPose` per tracked person.
    """

    position: int
    index: int
    name: str
    size: tuple[int, int]
    people: list[PersonPose] = field(default_factory=list)


@dataclass
class RunStats:
    """Counts and timings of one :meth:`VideoPoseEstimator.run`.

    ``pose_seconds`` covers cropping, encoding, decoding and heatmap decoding (not detection, tracking, reading or
    writing); ``person_frames`` counts (person, frame) results; ``encoded_crops`` counts frames through the backbone;
    ``warped_slots`` counts clip slots resampled from another crop (``warp`` mode).
    """

    frames: int = 0
    person_frames: int = 0
    encoded_crops: int = 0
    decoded_clips: int = 0
    warped_slots: int = 0
    segments: int = 0
    pose_seconds: float = 0.0
    detect_seconds: float = 0.0
    track_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def person_frames_per_second(self) -> float:
        return self.person_frames / self.pose_seconds if self.pose_seconds > 0 else 0.0

    @property
    def encodes_per_person_frame(self) -> float:
        return self.encoded_crops / self.person_frames if self.person_frames else 0.0

    def to_json(self) -> dict:
        return {"frames": self.frames, "person_frames": self.person_frames, "encoded_crops": self.encoded_crops,
                "decoded_clips": self.decoded_clips, "warped_slots": self.warped_slots, "segments": self.segments,
                "pose_seconds": round(self.pose_seconds, 4), "detect_seconds": round(self.detect_seconds, 4),
                "track_seconds": round(self.track_seconds, 4), "wall_seconds": round(self.wall_seconds, 4),
                "person_frames_per_second": round(self.person_frames_per_second, 3),
                "encodes_per_person_frame": round(self.encodes_per_person_frame, 4)}
