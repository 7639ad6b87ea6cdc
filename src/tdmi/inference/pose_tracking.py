"""Track ids from poses: a pose-aware tracker, the IoU baseline over the same input, and pruning for MOTA.

poseval's MOTA (``docs/tracking-metrics.md``) is a per-joint tracking score, so a tracker that looks at the poses
it already has can do better than box IoU: two people who cross keep their boxes overlapping, but not their
skeletons. :class:`PoseTracker` associates each frame's people with live tracks by Hungarian assignment
(``scipy.optimize.linear_sum_assignment``) on a similarity that mixes

- box IoU between the track's constant-velocity prediction and the person's box, and
- OKS between the track's last pose (moved with the predicted box) and the person's pose, over joints both
  score above ``joint_threshold``, with PoseTrack's per-joint sigmas (:data:`POSETRACK_SIGMAS`, COCO's with
  head bottom/top in the eye slots, as mmpose's PoseTrack18 metadata) and the person's box area as scale.

A pair is linked only when the similarity reaches ``min_similarity``. A track that finds nobody survives
``max_missed`` frames, and it may pick a person up again anywhere its moved box and pose still agree
(re-identification across short gaps). A new track is *confirmed* after ``birth_hits`` matched frames; people
of tracks never confirmed are mostly false detections, and :func:`prune_for_tracking` drops them from the
tracking submission.

:func:`assign_track_ids` runs either tracker over one sequence, offline, in frame order. The IoU baseline is
:class:`tdmi.inference.tracking.IoUTracker` with ``tdmi infer``'s defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from tdmi.inference.boxes import iou_matrix

TrackerName = Literal["iou", "pose"]
TRACKERS: tuple[str, ...] = ("iou", "pose")

#: OKS sigmas of the 17 PoseTrack slots: COCO's, with head bottom/top in the eye slots (mmpose's PoseTrack18).
POSETRACK_SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                             0.107, 0.107, 0.087, 0.087, 0.089, 0.089])


@dataclass
class FramePeople:
    """The people of one frame, as a tracker sees them.

    Attributes:
        frame_index: position of the frame in its sequence (increasing).
        boxes: float ``[N, 4]`` xywh.
        keypoints: float ``[N, 17, 2]`` image coordinates.
        joint_scores: float ``[N, 17]`` (heatmap maximum x box score).
        box_scores: float ``[N]``.
    """

    frame_index: int
    boxes: np.ndarray
    keypoints: np.ndarray
    joint_scores: np.ndarray
    box_scores: np.ndarray


@dataclass
class _PoseTrack:
    track_id: int
    box: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    last_frame: int
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))


def oks_matrix(keypoints_a: np.ndarray, visible_a: np.ndarray, keypoints_b: np.ndarray, visible_b: np.ndarray,
               areas_b: np.ndarray) -> np.ndarray:
    """``[A, B]`` object keypoint similarity over joints visible in both (0 where none is), scaled by ``areas_b``."""
    d2 = ((keypoints_a[:, None] - keypoints_b[None]) ** 2).sum(-1)  # [A, B, 17]
    variance = (2 * POSETRACK_SIGMAS) ** 2
    similarity = np.exp(-d2 / (2 * np.maximum(areas_b, 1.0)[None, :, None] * variance))
    both = visible_a[:, None] & visible_b[None]
    count = both.sum(-1)
    return np.where(count > 0, (similarity * both).sum(-1) / np.maximum(count, 1), 0.0)


class PoseTracker:
    """Pose-aware tracker; feed :class:`FramePeople` in frame order. See the module docstring.

    Args:
        iou_weight: weight of box IoU in the similarity; OKS gets the rest (1 = the IoU tracker's cue only).
        min_similarity: smallest similarity that links a track and a person.
        birth_hits: matched frames after which a track counts as confirmed.
        max_missed: frames a track survives without a match.
        joint_threshold: joints scoring below this take no part in OKS.
        velocity_smoothing: weight of the newest box displacement in the velocity estimate.
    """

    def __init__(self, *, iou_weight: float = 0.5, min_similarity: float = 0.25, birth_hits: int = 2,
                 max_missed: int = 10, joint_threshold: float = 0.2, velocity_smoothing: float = 0.5) -> None:
        if not 0.0 <= iou_weight <= 1.0:
            raise ValueError(f"iou_weight must be in [0, 1], got {iou_weight}")
        self.iou_weight = iou_weight
        self.min_similarity = min_similarity
        self.birth_hits = birth_hits
        self.max_missed = max_missed
        self.joint_threshold = joint_threshold
        self.velocity_smoothing = velocity_smoothing
        self.live: list[_PoseTrack] = []
        self.hits: dict[int, int] = {}
        self._next_id = 0

    def confirmed(self, track_id: int) -> bool:
        return self.hits.get(track_id, 0) >= self.birth_hits

    def _similarity(self, frame: FramePeople) -> np.ndarray:
        steps = np.array([frame.frame_index - t.last_frame for t in self.live], np.float64)
        velocity = np.stack([t.velocity for t in self.live])
        predicted = np.stack([t.box for t in self.live]) + velocity * steps[:, None]
        predicted[:, 2:] = np.maximum(predicted[:, 2:], 1.0)
        iou = iou_matrix(predicted.astype(np.float32), frame.boxes.astype(np.float32))
        # each track's last pose, moved with its box centre
        shift = (predicted[:, :2] + predicted[:, 2:] / 2) - np.stack([t.box[:2] + t.box[2:] / 2 for t in self.live])
        track_keypoints = np.stack([t.keypoints for t in self.live]) + shift[:, None, :]
        track_visible = np.stack([t.visible for t in self.live])
        visible = frame.joint_scores >= self.joint_threshold
        areas = frame.boxes[:, 2] * frame.boxes[:, 3]
        oks = oks_matrix(track_keypoints, track_visible, frame.keypoints, visible, areas)
        return self.iou_weight * iou + (1.0 - self.iou_weight) * oks

    def update(self, frame: FramePeople) -> np.ndarray:
        """Track ids ``[N]`` of the frame's people (every person gets one; new people start new tracks)."""
        n = len(frame.boxes)
        ids = np.full(n, -1, np.int64)
        self.live = [t for t in self.live if frame.frame_index - t.last_frame <= self.max_missed + 1]
        matched: dict[int, int] = {}
        if self.live and n:
            similarity = self._similarity(frame)
            rows, cols = linear_sum_assignment(1.0 - similarity)
            matched = {int(c): int(r) for r, c in zip(rows, cols) if similarity[r, c] >= self.min_similarity}
        visible = frame.joint_scores >= self.joint_threshold
        for person in range(n):
            box = np.asarray(frame.boxes[person], np.float64)
            if person in matched:
                track = self.live[matched[person]]
                steps = max(1, frame.frame_index - track.last_frame)
                step = (box - track.box) / steps
                track.velocity = self.velocity_smoothing * step + (1 - self.velocity_smoothing) * track.velocity
                track.box, track.last_frame = box, frame.frame_index
                track.keypoints = np.asarray(frame.keypoints[person], np.float64)
                track.visible = visible[person]
                track.hits += 1
            else:
                track = _PoseTrack(self._next_id, box, np.asarray(frame.keypoints[person], np.float64),
                                   visible[person], frame.frame_index)
                self._next_id += 1
                self.live.append(track)
            self.hits[track.track_id] = track.hits
            ids[person] = track.track_id
        return ids


def assign_track_ids(frames: Sequence[FramePeople], tracker: TrackerName = "pose",
                     **options) -> tuple[list[np.ndarray], set[int]]:
    """Track ids of one sequence's people, frame by frame, and the set of confirmed ids.

    ``tracker``: ``pose`` (:class:`PoseTracker`, ``options`` are its arguments) or ``iou`` (the IoU tracker of
    ``tdmi infer``; every id counts as confirmed). Ids are below 10000 only while a sequence starts fewer tracks;
    :func:`prune_for_tracking` renumbers them densely in first-appearance order.
    """
    if tracker == "iou":
        from tdmi.inference.tracking import IoUTracker

        iou = IoUTracker(**options)
        out = []
        for frame in frames:
            ids = np.full(len(frame.boxes), -1, np.int64)
            tracked = iou.update(frame.frame_index, frame.boxes, frame.box_scores)
            ids[tracked.kept] = tracked.track_ids
            out.append(ids)
        return out, {int(i) for ids in out for i in ids if i >= 0}
    if tracker != "pose":
        raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, got {tracker!r}")
    pose = PoseTracker(**options)
    out = [pose.update(frame) for frame in frames]
    return out, {t for t in pose.hits if pose.confirmed(t)}


def prune_for_tracking(ids: Sequence[np.ndarray], confirmed: set[int], frames: Sequence[FramePeople],
                       joint_threshold: float, person_threshold: float = 0.0
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """What a PoseTrack tracking submission keeps: per frame ``(kept people [K] indices, joint mask [K, 17])``.

    poseval's MOTA counts every submitted joint whatever its score, so joints below ``joint_threshold`` are left
    out, as are people of unconfirmed tracks, people scoring below ``person_threshold`` (box score) and people
    left with no joint. Ids are then renumbered densely (0, 1, ... in order of first appearance).
    """
    out = []
    for frame_ids, frame in zip(ids, frames):
        keep = np.array([i >= 0 and int(i) in confirmed for i in frame_ids], bool).reshape(-1)
        keep &= np.asarray(frame.box_scores, np.float64).reshape(-1) >= person_threshold
        joints = np.asarray(frame.joint_scores, np.float64) >= joint_threshold
        keep &= joints.any(axis=1) if len(joints) else keep
        people = np.flatnonzero(keep)
        out.append((people, joints[people] if len(people) else np.zeros((0, 17), bool)))
    return out


def dense_ids(ids: Sequence[np.ndarray], kept: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Renumber the kept people's ids 0, 1, ... in order of first appearance (poseval wants ids < 10000)."""
    mapping: dict[object, int] = {}
    out = []
    for position, (frame_ids, people) in enumerate(zip(ids, kept)):
        # a person no track holds (-1: the IoU tracker dropped its box) gets an id of its own
        keys = [int(frame_ids[p]) if frame_ids[p] >= 0 else ("untracked", position, int(p)) for p in people]
        out.append(np.array([mapping.setdefault(k, len(mapping)) for k in keys], np.int64))
    return out
