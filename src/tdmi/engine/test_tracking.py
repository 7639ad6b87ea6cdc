"""``tdmi test --track``: track ids for a split's predictions, the pruned tracking submission, and its MOTA.

Predictions come out of :func:`tdmi.engine.test.predict_split` frame by frame with no identity (detection boxes
carry none; GT boxes carry the GT's, which a tracker evaluation must not use). This module runs a tracker over
each sequence in frame order (:mod:`tdmi.inference.pose_tracking`), gives every prediction its track id (the mAP
file keeps every joint), and builds the tracking submission the way PoseTrack entries do: joints scoring below a
threshold, people of unconfirmed tracks and people below a box-score threshold are left out, because poseval's
MOTA counts every submitted joint (``docs/tracking-metrics.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from tdmi.data.records import Sequence as DataSequence
from tdmi.evaluation.writers import PersonPrediction
from tdmi.inference.pose_tracking import FramePeople, assign_track_ids, dense_ids, prune_for_tracking

Key = tuple[str, str]


@dataclass(frozen=True)
class TrackingSettings:
    """How ``tdmi test --track`` makes the tracking submission (``test.track*`` in the config)."""

    tracker: str = "pose"
    joint_threshold: float = 0.4
    person_threshold: float = 0.0

    def to_json(self) -> dict:
        return {"tracker": self.tracker, "joint_threshold": self.joint_threshold,
                "person_threshold": self.person_threshold}


def _frame_people(index: int, people: Sequence[PersonPrediction]) -> FramePeople:
    if not people:
        empty = np.zeros((0, 17))
        return FramePeople(index, np.zeros((0, 4)), np.zeros((0, 17, 2)), empty, np.zeros(0))
    missing = [p for p in people if p.box is None]
    if missing:
        raise ValueError("tracking needs each prediction's person box (PersonPrediction.box)")
    return FramePeople(index, np.stack([np.asarray(p.box, np.float64) for p in people]),
                       np.stack([np.asarray(p.keypoints, np.float64) for p in people]),
                       np.stack([p.joint_scores for p in people]), np.array([p.box_score for p in people]))


Poses = dict[Key, list[PersonPrediction]]


def track_split(predictions: Mapping[Key, list[PersonPrediction]], sequences: Iterable[DataSequence],
                settings: TrackingSettings) -> tuple[Poses, Poses]:
    """``(all predictions with track ids, the pruned tracking submission)``, both keyed like ``predictions``.

    Every sequence is tracked on its own, over its frames in order; frames without predictions count as frames
    where nobody was seen (tracks age through them).
    """
    tracked: dict[Key, list[PersonPrediction]] = {}
    submission: dict[Key, list[PersonPrediction]] = {}
    for sequence in sequences:
        keys = [(sequence.name, frame.file_name) for frame in sequence.frames]
        frames = [_frame_people(position, predictions.get(key, [])) for position, key in enumerate(keys)]
        ids, confirmed = assign_track_ids(frames, settings.tracker)
        every = [np.arange(len(frame.boxes)) for frame in frames]
        for key, frame_ids in zip(keys, dense_ids(ids, every)):
            if key in predictions:
                tracked[key] = [replace(p, track_id=int(t)) for p, t in zip(predictions[key], frame_ids)]
        pruned = prune_for_tracking(ids, confirmed, frames, settings.joint_threshold, settings.person_threshold)
        kept_ids = dense_ids(ids, [people for people, _ in pruned])
        for key, (people, joints), frame_ids in zip(keys, pruned, kept_ids):
            if key not in predictions:
                continue
            out = []
            for person, mask, track_id in zip(people, joints, frame_ids):
                source = predictions[key][person]
                keypoints = np.where(mask[:, None], source.keypoints, 0.0)
                scores = np.where(mask, source.heatmap_scores, 0.0)  # (0, 0, 0): not submitted
                out.append(replace(source, keypoints=keypoints, heatmap_scores=scores, track_id=int(track_id)))
            submission[key] = out
    return tracked, submission
