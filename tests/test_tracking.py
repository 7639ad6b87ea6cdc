"""IoU tracker and clip crop boxes: stable ids through gaps and crossings, dirty boxes, crowds, tube boxes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tdmi.inference.boxes import clip_boxes, iou_matrix, nms, sanitize_boxes
from tdmi.inference.tracking import (MAX_TRACK_ID, IoUTracker, Track, enlarge_box, key_frame_crop_box,
                                     track_sequence, tube_crop_box, tube_windows)

W, H = 640, 480


def test_iou_matrix_values_and_degenerate_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]], np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [50 / 150, 1.0, 0.0, 0.0], atol=1e-6)
    assert np.all(iou[1] == 0) and np.isfinite(iou).all()
    np.testing.assert_allclose(iou_matrix(b, a), iou.T)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5).tolist() == [1, 2]


def test_boxes_outside_the_frame_are_clipped_or_dropped():
    boxes = np.array([
        [-20, -20, 60, 60],      # partly outside: clipped to [0, 0, 40, 40]
        [700, 100, 50, 50],      # fully right of the frame: dropped
        [100, 100, -5, 30],      # negative width: dropped
        [np.nan, 0, 10, 10],     # not finite: dropped
        [600, 400, 100, 100],    # clipped to [600, 400, 40, 80]
    ], np.float32)
    kept_boxes, scores, kept = sanitize_boxes(boxes, np.arange(5, dtype=np.float32), W, H)
    assert kept.tolist() == [0, 4]
    np.testing.assert_allclose(kept_boxes, [[0, 0, 40, 40], [600, 400, 40, 80]])
    np.testing.assert_allclose(scores, [0, 4])
    np.testing.assert_allclose(clip_boxes(boxes[:1], W, H), [[0, 0, 40, 40]])


def _crossing_sequence(frames: int = 30, gap=range(0)):
    """Person A walks right, B walks left past A (same size, 5 px lower, 20 px per frame each); C stands still
    and is missed by the detector in the frames of ``gap``. Returns per frame (boxes, true identity per box)."""
    sequence = []
    rng = np.random.default_rng(0)
    for t in range(frames):
        boxes = [[20 + 20 * t, 100, 50, 120], [400 - 20 * t, 105, 50, 120]]
        who = ["A", "B"]
        if t not in gap:
            boxes.append([550, 300, 40, 100])
            who.append("C")
        order = rng.permutation(len(boxes))  # detection order must not matter
        sequence.append((np.array(boxes, np.float32)[order], [who[i] for i in order]))
    return sequence


def _identities(results, sequence):
    ids: dict[str, set] = {}
    for result, (_, who) in zip(results, sequence):
        assert len(set(result.track_ids.tolist())) == len(result.track_ids)  # unique per frame
        assert ((result.track_ids >= 0) & (result.track_ids < MAX_TRACK_ID)).all()
        for k, box_index in enumerate(result.kept):
            ids.setdefault(who[box_index], set()).add(int(result.track_ids[k]))
    return ids


def test_ids_stable_through_a_crossing_and_a_gap():
    sequence = _crossing_sequence(gap=range(10, 13))
    frames = [(t, boxes, np.ones(len(boxes))) for t, (boxes, _) in enumerate(sequence)]
    results, tracks = track_sequence(frames, size=(W, H), max_missed=5)
    ids = _identities(results, sequence)
    assert all(len(v) == 1 for v in ids.values()), ids  # one id per person over the whole sequence
    assert len({next(iter(v)) for v in ids.values()}) == 3
    # The two walkers really do overlap in the middle of the sequence.
    a, b = np.array([[20 + 20 * 9, 100, 50, 120]]), np.array([[400 - 20 * 9, 105, 50, 120]])
    assert iou_matrix(a, b)[0, 0] > 0.35
    c = tracks[next(iter(ids["C"]))]
    assert sorted(c.boxes) == [t for t in range(30) if t not in range(10, 13)]


def test_gap_longer_than_tolerance_starts_a_new_track():
    sequence = _crossing_sequence(gap=range(10, 13))
    frames = [(t, boxes, np.ones(len(boxes))) for t, (boxes, _) in enumerate(sequence)]
    results, _ = track_sequence(frames, size=(W, H), max_missed=2)
    ids = _identities(results, sequence)
    assert len(ids["C"]) == 2 and len(ids["A"]) == 1 and len(ids["B"]) == 1


def test_the_crossing_defeats_matching_on_the_last_box(monkeypatch):
    # Guard that the crossing test can fail: a tracker that matches each track's last box (no motion
    # prediction) swaps A and B where they cross, so the stable ids above come from the prediction.
    monkeypatch.setattr(Track, "predicted_box", lambda self, frame: self.boxes[self.last_frame].copy())
    sequence = _crossing_sequence()
    tracker = IoUTracker()
    results = [tracker.update(t, boxes, np.ones(len(boxes)), W, H) for t, (boxes, _) in enumerate(sequence)]
    ids = _identities(results, sequence)
    assert len(ids["A"]) > 1 or ids["A"] == ids["B"] or len(ids["B"]) > 1


def test_no_people_and_track_expiry():
    tracker = IoUTracker(max_missed=2)
    first = tracker.update(0, [[10, 10, 50, 100]], [0.9], W, H)
    assert first.track_ids.tolist() == [0]
    for t in (1, 2, 3):
        empty = tracker.update(t, np.zeros((0, 4)), np.zeros(0), W, H)
        assert empty.boxes.shape == (0, 4) and empty.track_ids.shape == (0,)
    assert tracker.live == []  # missed 3 > 2 frames: closed
    again = tracker.update(4, [[10, 10, 50, 100]], [0.9], W, H)
    assert again.track_ids.tolist() == [1]
    with pytest.raises(ValueError, match="increasing"):
        tracker.update(4, [], [], W, H)


def test_thousands_of_tiny_boxes_are_filtered_and_a_crowd_is_capped():
    rng = np.random.default_rng(1)
    tracker = IoUTracker(max_boxes=50)
    people = np.array([[100, 100, 40, 100], [300, 100, 40, 100], [500, 100, 40, 100]], np.float32)
    for t in range(20):
        tiny = np.concatenate([rng.uniform(0, 600, (5000, 2)), rng.uniform(0.5, 3.5, (5000, 2))], axis=1)
        boxes = np.concatenate([tiny, people + [2 * t, 0, 0, 0]]).astype(np.float32)
        result = tracker.update(t, boxes, rng.uniform(0, 1, len(boxes)), W, H)
        assert result.kept.tolist() == [5000, 5001, 5002]
    assert sorted(result.track_ids.tolist()) == [0, 1, 2]

    crowd = np.concatenate([rng.uniform(0, 440, (3000, 2)), np.full((3000, 2), 20.0)], axis=1)
    scores = rng.uniform(0, 1, 3000)
    with pytest.warns(UserWarning, match="3000 boxes in one frame; keeping the 50"):
        result = tracker.update(20, crowd, scores, W, H)
    assert len(result.boxes) == 50
    assert result.scores.min() >= np.sort(scores)[-50] - 1e-6  # the best-scoring 50


def test_ids_wrap_below_10000_and_stay_unique():
    tracker = IoUTracker()
    tracker._next_id = MAX_TRACK_ID - 2
    boxes = np.array([[i * 60.0, 0, 50, 100] for i in range(5)], np.float32)
    result = tracker.update(0, boxes, np.ones(5), W, H)
    assert sorted(result.track_ids.tolist()) == [0, 1, 2, MAX_TRACK_ID - 2, MAX_TRACK_ID - 1]


def _track_with(boxes_by_frame: dict[int, list[float]]) -> Track:
    track = Track(track_id=7)
    for f, b in boxes_by_frame.items():
        track.boxes[f] = np.asarray(b, np.float32)
        track.scores[f] = 1.0
    return track


def test_key_frame_box_is_the_own_box_enlarged_25_percent():
    np.testing.assert_allclose(enlarge_box(np.array([10, 20, 40, 80])), [5, 10, 50, 100])
    track = _track_with({0: [10, 20, 40, 80], 1: [20, 20, 40, 80], 4: [50, 20, 40, 80]})
    np.testing.assert_allclose(key_frame_crop_box(track, 1), [15, 10, 50, 100])
    np.testing.assert_allclose(track.box_at(2), [30, 20, 40, 80])  # interpolated inside the gap
    np.testing.assert_allclose(key_frame_crop_box(track, 2), [25, 10, 50, 100])
    with pytest.raises(KeyError, match="no box at frame 9"):
        key_frame_crop_box(track, 9)


def test_tube_box_covers_the_window_widened_by_delta():
    track = _track_with({f: [10.0 * f, 0, 40, 80] for f in range(10)})
    box = tube_crop_box(track, 3, 5, delta=2)
    # Frames 1..7 -> x from 10 to 70 + 40 = 110, y 0..80; enlarged 1.25 about the centre (60, 40).
    np.testing.assert_allclose(box, [60 - 62.5, 40 - 50, 125, 100])
    # Near the start the window is cut to the frames the track has.
    np.testing.assert_allclose(tube_crop_box(track, 0, 0, delta=2), enlarge_box(np.array([0, 0, 60, 80])))
    # Every enlarged per-frame box of the clip lies inside the tube box's un-enlarged union, so the crop is shared.
    for f in range(1, 8):
        x, y, w, h = track.boxes[f]
        assert box[0] <= x and x + w <= box[0] + box[2] and box[1] <= y and y + h <= box[1] + box[3]


def test_tube_windows_partition_the_track():
    track = _track_with({f: [0, 0, 40, 80] for f in [0, 1, 2, 3, 4, 5, 9, 10]})
    windows = tube_windows(track, window=4, delta=2)
    assert [(a, b) for a, b, _ in windows] == [(0, 3), (4, 5), (9, 10)]
    covered = [f for a, b, _ in windows for f in track.frames if a <= f <= b]
    assert covered == track.frames
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(tube_windows(track, window=100, delta=2)) == 1


def test_velocity_keeps_smoothing_when_the_pipeline_prunes_a_tracks_boxes():
    # The video pipeline prunes a track's old boxes (pipeline._release); a track left with one box must still be
    # treated as a continuing track (smoothed velocity), not as a new one whose velocity restarts from one step.
    def run(prune: bool) -> np.ndarray:
        tracker = IoUTracker(velocity_smoothing=0.5)
        for t, x in enumerate([0.0, 4.0, 8.0]):
            tracker.update(t, [[10 + x, 10, 40, 80]], [0.9])
        track = tracker.live[0]
        if prune:
            for frame in [f for f in track.boxes if f != track.last_frame]:
                del track.boxes[frame]
        tracker.update(3, [[10 + 20.0, 10, 40, 80]], [0.9])  # a step of 12 px after steps of 4
        return tracker.live[0].velocity

    np.testing.assert_allclose(run(prune=False), [8.0, 0, 0, 0])  # 0.5 * 12 + 0.5 * 4
    np.testing.assert_allclose(run(prune=True), run(prune=False))
