"""Person-box files and the GT-box mode (tdmi.data.detections)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from records_helpers import write_json
from tdmi.data.detections import DEFAULT_SCORE_THRESHOLD, Detections, load_detections
from tdmi.data.posetrack import load_sequences
from tdmi.data.records import Frame
from tdmi.errors import DataFormatError


def _frame(file_name: str, image_id: int = 0) -> Frame:
    return Frame(file_name=file_name, frame_index=0, image_id=image_id)


def test_sample_detections_match_sample_frames(posetrack18_sample):
    ann = posetrack18_sample / "annotations"
    path = ann / "test_posetrack18_human_detections.json"
    records = json.loads(path.read_text())
    detections = load_detections(path)
    kept = [r for r in records if r["category_id"] == 1 and r["score"] >= DEFAULT_SCORE_THRESHOLD]
    assert 0 < len(detections) == len(kept) < len(records)
    for sequence in load_sequences(ann / "val"):
        for frame in sequence.frames:
            boxes = detections.for_frame(frame)
            expected = [r for r in kept if r["image_id"] == frame.image_id]
            assert len(boxes) == len(expected) > 0 and detections.covers(frame)
            for box, record in zip(boxes, expected):  # file order is kept
                np.testing.assert_allclose(box.bbox, record["bbox"], rtol=1e-6)
                assert box.score == pytest.approx(record["score"]) and box.num_labeled == 0
    assert load_detections(path, score_threshold=0.0).num_images == len({r["image_id"] for r in records})


def test_threshold_keeps_scores_at_or_above(tmp_path):
    path = write_json(tmp_path / "d.json", [
        {"image_id": 7, "bbox": [0, 0, 10, 20], "score": 0.2, "category_id": 1},
        {"image_id": 7, "bbox": [1, 1, 10, 20], "score": 0.19, "category_id": 1},
        {"image_id": 7, "bbox": [2, 2, 10, 20], "score": 0.9, "category_id": 2},  # not a person
        {"image_id": 8, "bbox": [3, 3, 10, 20], "score": 0.05, "category_id": 1},
    ])
    detections = load_detections(path)
    assert len(detections) == 1
    assert [b.score for b in detections.for_frame(_frame("a/000000.jpg", 7))] == [pytest.approx(0.2)]
    below = _frame("a/000001.jpg", 8)
    assert detections.for_frame(below) == [] and detections.covers(below)  # listed, every box below threshold
    assert not detections.covers(_frame("a/000002.jpg", 9))
    assert len(load_detections(path, score_threshold=0.0)) == 3


def test_dcpose_box_list_matches_by_path_suffix(tmp_path):
    path = write_json(tmp_path / "val_boxes.json", [
        {"image_name": "images/val/000342_mpii_test/000000.jpg", "bbox": [5, 6, -1, 8], "score": 0.7,
         "category_id": 1, "nframes": 3, "frame_id": 10003420000},
        {"image_name": "images/val/000342_mpii_test/000001.jpg", "bbox": [1, 2, 3, 4], "score": 0.5,
         "category_id": 1, "nframes": 3, "frame_id": 10003420001},
    ])
    detections = load_detections(path)
    exact = detections.for_frame(_frame("images/val/000342_mpii_test/000000.jpg", 123))
    np.testing.assert_array_equal(exact[0].bbox, [5, 6, -1, 8])  # raw: no clipping, no fixing
    shorter = detections.for_frame(_frame("val/000342_mpii_test/000001.jpg"))
    longer = detections.for_frame(_frame("/data/pt18/images/val/000342_mpii_test/000001.jpg"))
    assert [b.score for b in shorter] == [b.score for b in longer] == [0.5]
    assert detections.for_frame(_frame("images/val/000999_mpii_test/000001.jpg")) == []


def test_ambiguous_suffix_is_an_error(tmp_path):
    path = write_json(tmp_path / "boxes.json", [
        {"image_name": "a/images/s/000000.jpg", "bbox": [0, 0, 1, 1], "score": 1, "category_id": 1},
        {"image_name": "b/images/s/000000.jpg", "bbox": [0, 0, 1, 1], "score": 1, "category_id": 1},
    ])
    with pytest.raises(DataFormatError, match="matches several detection images"):
        load_detections(path).for_frame(_frame("c/images/s/000000.jpg"))


def test_returned_people_are_copies(tmp_path):
    path = write_json(tmp_path / "d.json", [{"image_id": 1, "bbox": [0, 0, 10, 10], "score": 1.0}])
    detections = load_detections(path)
    detections.for_frame(_frame("x/0.jpg", 1))[0].bbox[0] = 99
    assert detections.for_frame(_frame("x/0.jpg", 1))[0].bbox[0] == 0


def test_ground_truth_boxes(posetrack18_sample):
    sequences = load_sequences(posetrack18_sample / "annotations" / "val")
    detections = Detections.from_ground_truth(sequences)
    for sequence in sequences:
        for frame in sequence.frames:
            boxes = detections.for_frame(frame)
            labelled = [p for p in frame.people if p.num_labeled > 0]
            assert len(boxes) == len(labelled)
            for box, person in zip(boxes, labelled):
                np.testing.assert_array_equal(box.bbox, person.bbox)
                assert box.score == 1.0 and box.track_id == person.track_id and box.num_labeled == 0
    assert "ground truth" in detections.description


def test_ground_truth_boxes_skip_box_only_people():
    from tdmi.data.records import Person, Sequence

    labelled = np.zeros((17, 3), np.float32)
    labelled[0] = (5, 5, 1)
    people = [Person(keypoints=labelled, bbox=np.float32([0, 0, 9, 9]), track_id=1),
              Person(keypoints=np.zeros((17, 3), np.float32), bbox=np.float32([20, 0, 9, 9]), track_id=2)]
    frame = Frame("images/val/s/000000.jpg", 0, image_id=1, is_labeled=True, people=people)
    sequence = Sequence("s", [frame], 1)
    assert [b.track_id for b in Detections.from_ground_truth([sequence]).for_frame(frame)] == [1]
    assert [b.track_id for b in Detections.from_ground_truth([sequence], skip_unlabeled=False).for_frame(frame)] == [
        1, 2]


def test_missing_detection_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.json"):
        load_detections(tmp_path / "none.json")
