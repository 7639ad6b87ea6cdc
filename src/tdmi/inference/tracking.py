"""IoU tracker that turns per-frame person boxes into person tubes with stable ids, and the crop boxes of clips.

Users want per-frame output with a stable ``track_id`` (``user-needs.md`` section 10: "an optional lightweight
tracker (IoU/OKS association)"); DCPose does no tracking at all. Association here is one Hungarian assignment
per frame (``scipy.optimize.linear_sum_assignment``) on ``1 - IoU`` between each live track's predicted box
(constant velocity from its last two observations) and the frame's detections:

- a pair is matched only when its IoU is at least ``min_iou``;
- a track that finds no detection survives ``max_missed`` frames (gap tolerance) and is then closed;
- an unmatched detection starts a new track;
- ids are ``0 <= id < 10000`` because poseval adds ``sequence_index * 10000`` to track ids
  (``docs/facts/posetrack-facts.md`` section 8), and are unique among live tracks (hence per frame). After id 9999 the
  counter wraps to the smallest id no live track holds, so ids of long-closed tracks may come back.

Boxes are cleaned first (:func:`tdmi.inference.boxes.sanitize_boxes`): clipped to the frame, degenerate and
tiny ones dropped, at most ``max_boxes`` kept (a warning says so). All IoUs are vectorised.

Crop boxes of a clip (``docs/facts/model-facts.md`` (e): "boxes are enlarged by 25%, and the same box crops every frame
of the clip I_{t-delta..t+delta}"):

- :func:`key_frame_crop_box` (exact mode): the key frame's own box enlarged 25%, used for all 2 delta + 1
  frames. Every key frame has its own box, so backbone features of a frame cannot be shared between key
  frames.
- :func:`tube_crop_box` / :func:`tube_windows` (tube mode): one box per track and window of key frames: the
  union of the track's boxes over the window widened by delta frames on each side, enlarged 25%. Every frame
  inside it is cropped once and its backbone features serve every key frame of the window. This is our
  speed-up, not the paper's protocol; the crop is looser than the paper's when the person moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from tdmi.inference.boxes import MAX_BOXES_PER_FRAME, MIN_BOX_SIDE, as_boxes, iou_matrix, sanitize_boxes

#: Track ids stay below this (poseval offsets track ids by ``sequence_index * 10000``).
MAX_TRACK_ID = 10_000

#: The paper's box enlargement before cropping (25%).
BOX_ENLARGE = 1.25


@dataclass
class Track:
    """One person tube: the boxes a track was matched to, by frame index.

    Attributes:
        track_id: the id written to prediction files.
        boxes: frame index -> float32 ``[4]`` xywh box of the matched detection.
        scores: frame index -> detection score.
        missed: frames since the last match (0 when matched in the latest frame).
        velocity: float32 ``[4]`` per-frame change of the box (x, y, w, h), for prediction across gaps.
        matches: detections matched so far (``boxes`` is pruned by the video pipeline, so its length is not it).
    """

    track_id: int
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    missed: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    matches: int = 1

    @property
    def first_frame(self) -> int:
        return min(self.boxes)

    @property
    def last_frame(self) -> int:
        return max(self.boxes)

    @property
    def frames(self) -> list[int]:
        return sorted(self.boxes)

    def predicted_box(self, frame_index: int) -> np.ndarray:
        """The last box moved by the velocity to ``frame_index`` (width and height kept positive)."""
        last = self.last_frame
        box = self.boxes[last] + self.velocity * (frame_index - last)
        box[2:] = np.maximum(box[2:], 1.0)
        return box

    def box_at(self, frame_index: int) -> Optional[np.ndarray]:
        """The box at ``frame_index``: observed, else linearly interpolated inside a gap, else None."""
        if frame_index in self.boxes:
            return self.boxes[frame_index]
        frames = self.frames
        if not frames or frame_index < frames[0] or frame_index > frames[-1]:
            return None
        after = next(f for f in frames if f > frame_index)
        before = max(f for f in frames if f < frame_index)
        share = (frame_index - before) / (after - before)
        return ((1 - share) * self.boxes[before] + share * self.boxes[after]).astype(np.float32)


@dataclass
class TrackedFrame:
    """The tracker's answer for one frame: the kept boxes with their track ids.

    Attributes:
        frame_index: the frame.
        boxes: float32 ``[K, 4]`` cleaned xywh boxes (clipped to the frame).
        scores: float32 ``[K]``.
        track_ids: int64 ``[K]``, unique, each in ``[0, 10000)``.
        kept: int64 ``[K]`` index of each kept box in the detections given to :meth:`IoUTracker.update`.
    """

    frame_index: int
    boxes: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray
    kept: np.ndarray


class IoUTracker:
    """Online IoU + Hungarian tracker; feed frames in increasing index order. See the module docstring.

    Args:
        min_iou: smallest IoU between a track's predicted box and a detection to link them.
        max_missed: frames a track survives without a match (gap tolerance K).
        min_box_side: detections smaller than this (pixels, after clipping) are dropped.
        max_boxes: at most this many detections per frame are kept (highest scores).
        velocity_smoothing: weight of the newest displacement in the velocity estimate (1 = last step only).
    """

    def __init__(self, *, min_iou: float = 0.3, max_missed: int = 5, min_box_side: float = MIN_BOX_SIDE,
                 max_boxes: int = MAX_BOXES_PER_FRAME, velocity_smoothing: float = 0.5) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.min_box_side = min_box_side
        self.max_boxes = max_boxes
        self.velocity_smoothing = velocity_smoothing
        self.live: list[Track] = []
        self.tracks: dict[int, Track] = {}  # every track ever started whose id was not reused since
        self._next_id = 0
        self._last_frame: Optional[int] = None

    def _new_id(self, taken: set[int]) -> int:
        """The next unused id; ``taken`` holds the ids of live tracks and is updated."""
        if self._next_id < MAX_TRACK_ID:
            self._next_id += 1
            new = self._next_id - 1
        else:
            new = next((i for i in range(MAX_TRACK_ID) if i not in taken), -1)
            if new < 0:
                raise RuntimeError(f"more than {MAX_TRACK_ID} people tracked at once")
        taken.add(new)
        return new

    def update(self, frame_index: int, boxes, scores, width: Optional[int] = None,
               height: Optional[int] = None) -> TrackedFrame:
        """Associate one frame's detections (``[N, 4]`` xywh, ``[N]`` scores) with the live tracks.

        ``width``/``height`` (the frame size) enable clipping; without them boxes are only checked for size.
        """
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frames must come in increasing order: got {frame_index} after {self._last_frame}")
        steps = 1 if self._last_frame is None else frame_index - self._last_frame
        self._last_frame = frame_index
        boxes = as_boxes(boxes)
        scores = np.asarray(scores, np.float32).reshape(-1)
        if width is None or height is None:
            big = np.float32(np.finfo(np.float32).max / 4)  # no clipping; keep only the size checks
            boxes, scores, kept = sanitize_boxes(boxes, scores, big, big, min_side=self.min_box_side,
                                                 max_boxes=self.max_boxes, source=f"frame {frame_index}")
        else:
            boxes, scores, kept = sanitize_boxes(boxes, scores, width, height, min_side=self.min_box_side,
                                                 max_boxes=self.max_boxes, source=f"frame {frame_index}")

        track_of = np.full(len(boxes), -1, np.int64)
        matched_tracks: set[int] = set()
        if self.live and len(boxes):
            predicted = np.stack([t.predicted_box(frame_index) for t in self.live])
            iou = iou_matrix(predicted, boxes)
            rows, cols = linear_sum_assignment(1.0 - iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.min_iou:
                    track_of[c] = r
                    matched_tracks.add(r)

        survivors = []
        for r, track in enumerate(self.live):
            if r in matched_tracks:
                continue
            track.missed += steps
            if track.missed <= self.max_missed:
                survivors.append(track)
        ids = np.empty(len(boxes), np.int64)
        taken = {t.track_id for t in self.live}
        for c in range(len(boxes)):
            if track_of[c] >= 0:
                track = self.live[track_of[c]]
                self._extend(track, frame_index, boxes[c], float(scores[c]))
            else:
                track = Track(track_id=self._new_id(taken))
                track.boxes[frame_index] = boxes[c].copy()
                track.scores[frame_index] = float(scores[c])
                self.tracks[track.track_id] = track
            survivors.append(track)
            ids[c] = track.track_id
        self.live = survivors
        return TrackedFrame(frame_index, boxes, scores, ids, kept)

    def _extend(self, track: Track, frame_index: int, box: np.ndarray, score: float) -> None:
        last = track.last_frame
        step = (box - track.boxes[last]) / max(frame_index - last, 1)
        if track.matches == 1:
            track.velocity = step.astype(np.float32)
        else:
            a = self.velocity_smoothing
            track.velocity = (a * step + (1 - a) * track.velocity).astype(np.float32)
        track.boxes[frame_index] = box.copy()
        track.scores[frame_index] = score
        track.matches += 1
        track.missed = 0


def track_sequence(frames: Iterable[tuple[int, np.ndarray, np.ndarray]], size: Optional[tuple[int, int]] = None,
                   **tracker_options) -> tuple[list[TrackedFrame], dict[int, Track]]:
    """Track a whole sequence: ``(frame_index, boxes [N, 4], scores [N])`` per frame -> per-frame results and
    the tracks by id. ``size`` is ``(width, height)`` for clipping; options go to :class:`IoUTracker`."""
    tracker = IoUTracker(**tracker_options)
    width, height = size if size is not None else (None, None)
    results = [tracker.update(index, boxes, scores, width, height) for index, boxes, scores in frames]
    return results, tracker.tracks


# ------------------------------------------------------------------------------------------------------ crop boxes


def enlarge_box(box: np.ndarray, factor: float = BOX_ENLARGE) -> np.ndarray:
    """Scale xywh box(es) ``[..., 4]`` about their centre by ``factor`` (1.25 = the paper's 25%)."""
    box = np.asarray(box, np.float32)
    centre = box[..., :2] + box[..., 2:] / 2
    size = box[..., 2:] * factor
    return np.concatenate([centre - size / 2, size], axis=-1).astype(np.float32)


def key_frame_crop_box(track: Track, key_frame: int, enlarge: float = BOX_ENLARGE) -> np.ndarray:
    """Exact mode (the paper): the key frame's own box, enlarged, crops all 2 delta + 1 frames of its clip."""
    box = track.box_at(key_frame)
    if box is None:
        raise KeyError(f"track {track.track_id} has no box at frame {key_frame} "
                       f"(it spans frames {track.first_frame}..{track.last_frame})")
    return enlarge_box(box, enlarge)


def tube_crop_box(track: Track, first_key_frame: int, last_key_frame: int, delta: int,
                  enlarge: float = BOX_ENLARGE) -> np.ndarray:
    """Tube mode: one box that crops every frame used by the key frames ``first..last`` of one track.

    The union of the track's boxes (observed, or interpolated inside gaps) over frames
    ``first_key_frame - delta .. last_key_frame + delta``, enlarged by ``enlarge`` about its centre. Frames the
    track does not cover (before it starts or after it ends) add nothing, so the box is the person's extent
    over the clips that use it: every crop shares it, and so can the per-frame backbone features.

    Returns:
        float32 ``[4]`` xywh (may extend beyond the frame; the crop pads).
    """
    if last_key_frame < first_key_frame:
        raise ValueError(f"empty key-frame window {first_key_frame}..{last_key_frame}")
    frames = range(max(first_key_frame - delta, track.first_frame), min(last_key_frame + delta, track.last_frame) + 1)
    boxes = [b for b in (track.box_at(f) for f in frames) if b is not None]
    if not boxes:
        raise KeyError(f"track {track.track_id} (frames {track.first_frame}..{track.last_frame}) has no box near "
                       f"key frames {first_key_frame}..{last_key_frame}")
    stacked = np.stack(boxes)
    x1, y1 = stacked[:, 0].min(), stacked[:, 1].min()
    x2, y2 = (stacked[:, 0] + stacked[:, 2]).max(), (stacked[:, 1] + stacked[:, 3]).max()
    return enlarge_box(np.array([x1, y1, x2 - x1, y2 - y1], np.float32), enlarge)


def tube_windows(track: Track, window: int, delta: int,
                 enlarge: float = BOX_ENLARGE) -> list[tuple[int, int, np.ndarray]]:
    """Split a track's observed key frames into windows of at most ``window`` consecutive frame indices.

    Returns:
        ``(first_key_frame, last_key_frame, crop_box [4])`` per window, in order; every frame the track was
        observed in is a key frame of exactly one window.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    result = []
    frames = track.frames
    start = 0
    while start < len(frames):
        end = start
        while end + 1 < len(frames) and frames[end + 1] - frames[start] < window:
            end += 1
        first, last = frames[start], frames[end]
        result.append((first, last, tube_crop_box(track, first, last, delta, enlarge)))
        start = end + 1
    return result
