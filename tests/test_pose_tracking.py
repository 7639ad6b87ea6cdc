"""The pose-aware tracker, the IoU baseline over the same input, pruning, and `tdmi test --track`."""

from __future__ import annotations

import numpy as np
import pytest

from tdmi.data.records import Frame, Sequence
from tdmi.engine.test_tracking import TrackingSettings, track_split
from tdmi.evaluation.writers import PersonPrediction
from tdmi.inference.pose_tracking import FramePeople, assign_track_ids, dense_ids, oks_matrix, prune_for_tracking


def _pose(x: float, y: float, arms_up: bool) -> np.ndarray:
    """A 17-joint skeleton in a 60x160 box at (x, y); ``arms_up`` moves elbows and wrists above the head."""
    kp = np.array([[30, 10], [30, 25], [30, 0], [25, 8], [35, 8], [15, 35], [45, 35], [10, 60], [50, 60],
                   [8, 85], [52, 85], [20, 90], [40, 90], [20, 125], [40, 125], [20, 158], [40, 158]], float)
    if arms_up:
        kp[7:11, 1] = [5, 5, -20, -20]
    return kp + [x, y]


def _frame(index: int, people: list[tuple[float, float, bool]], scores: float = 0.9) -> FramePeople:
    boxes = np.array([[x, y, 60, 160] for x, y, _ in people], float).reshape(-1, 4)
    keypoints = np.stack([_pose(*p) for p in people]) if people else np.zeros((0, 17, 2))
    return FramePeople(index, boxes, keypoints, np.full((len(people), 17), scores), np.full(len(people), 0.9))


def test_oks_is_one_for_identical_poses_and_small_for_other_poses():
    a, b = _pose(0, 0, False)[None], _pose(0, 0, True)[None]
    visible = np.ones((1, 17), bool)
    assert oks_matrix(a, visible, a, visible, np.array([60 * 160.0]))[0, 0] == pytest.approx(1.0)
    assert oks_matrix(a, visible, b, visible, np.array([60 * 160.0]))[0, 0] < 0.8
    assert oks_matrix(a, ~visible, a, visible, np.array([1.0]))[0, 0] == 0.0  # no common joint


def test_pose_keeps_ids_where_boxes_cannot_tell_people_apart():
    # two people in the same place (one behind the other), listed in a different order every frame
    frames = []
    for t in range(8):
        people = [(100.0, 50.0, False), (100.0, 50.0, True)]
        frames.append(_frame(t, people if t % 2 == 0 else people[::-1]))
    arms_up_id = []
    for tracker in ("iou", "pose"):
        ids, _ = assign_track_ids(frames, tracker)
        arms_up_id.append([int(frame_ids[0 if t % 2 else 1]) for t, frame_ids in enumerate(ids)])
    assert len(set(arms_up_id[1])) == 1  # the pose tracker follows the raised arms
    assert len(set(arms_up_id[0])) > 1  # the IoU tracker swaps them


def test_a_short_gap_is_bridged_and_a_one_frame_false_positive_is_not_confirmed():
    frames = [_frame(t, [(100.0 + 3 * t, 50.0, False)]) for t in range(4)]
    frames += [_frame(t, []) for t in range(4, 11)]  # occluded for 7 frames
    frames += [_frame(t, [(100.0 + 3 * t, 50.0, False)] + ([(600.0, 50.0, True)] if t == 12 else []))
               for t in range(11, 15)]
    ids, confirmed = assign_track_ids(frames, "pose")
    person = {int(i[0]) for i in ids if len(i)}
    assert len(person) == 1  # re-identified after the gap (the IoU tracker's 5-frame limit would lose it)
    iou_ids, _ = assign_track_ids(frames, "iou")
    assert len({int(i[0]) for i in iou_ids if len(i)}) == 2
    ghost = int(ids[12][1])
    assert ghost not in confirmed and person <= confirmed
    pruned = prune_for_tracking(ids, confirmed, frames, joint_threshold=0.5)
    assert [len(people) for people, _ in pruned][11:] == [1, 1, 1, 1]


def test_pruning_drops_low_joints_and_dense_ids_stay_unique():
    frame = _frame(0, [(0.0, 0.0, False), (300.0, 0.0, False)])
    frame.joint_scores[0, :5] = 0.1
    ids = [np.array([7, -1])]
    (people, joints), = prune_for_tracking(ids, {7}, [frame], joint_threshold=0.3)
    assert people.tolist() == [0] and joints[0, :5].sum() == 0 and joints[0, 5:].all()
    assert dense_ids([np.array([5, -1, -1])], [np.arange(3)])[0].tolist() == [0, 1, 2]


def test_track_split_gives_every_prediction_an_id_and_prunes_the_submission():
    frames = [Frame(f"images/val/s/{t:06d}.jpg", t, image_id=t, is_labeled=True) for t in range(5)]
    sequence = Sequence("s", frames, 5)
    predictions = {}
    for t in range(5):
        people = []
        for x, arms in ((100.0 + 4 * t, False), (400.0 - 4 * t, True)):
            scores = np.full(17, 0.9)
            scores[15:] = 0.05  # ankles unsure
            people.append(PersonPrediction(_pose(x, 50.0, arms), scores, 1.0, None, np.array([x, 50, 60, 160.0])))
        predictions[("s", frames[t].file_name)] = people
    tracked, submission = track_split(predictions, [sequence], TrackingSettings("pose", joint_threshold=0.4))
    for t in range(5):
        key = ("s", frames[t].file_name)
        assert [p.track_id for p in tracked[key]] == [0, 1]
        assert [p.track_id for p in submission[key]] == [0, 1]
        assert np.all(submission[key][0].keypoints[15:] == 0) and np.all(submission[key][0].heatmap_scores[15:] == 0)
        assert np.all(tracked[key][0].keypoints[15:] != 0)  # the mAP file keeps every joint
