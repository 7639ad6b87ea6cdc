"""One box-file reader for `tdmi test --boxes` and `tdmi infer --boxes` (tdmi.data.box_files): same layouts,
same defaults, same errors from both consumers."""

from __future__ import annotations

import numpy as np
import pytest

from records_helpers import write_json
from tdmi.data.box_files import DEFAULT_SCORE_THRESHOLD, MISSING_SCORE, read_box_file
from tdmi.data.detections import load_detections
from tdmi.data.records import Frame
from tdmi.errors import DataFormatError
from tdmi.inference.detectors import BoxFileDetector, make_detector, write_boxes_file

FRAME = np.zeros((8, 8, 3), np.uint8)


def _frame(file_name: str, image_id: int = 0) -> Frame:
    return Frame(file_name=file_name, frame_index=0, image_id=image_id)


def test_both_consumers_share_the_default_threshold_and_missing_score(tmp_path):
    path = write_json(tmp_path / "b.json", [
        {"image_name": "images/val/s/000000.jpg", "bbox": [0, 0, 10, 20], "score": 0.1},   # below 0.2
        {"image_name": "images/val/s/000000.jpg", "bbox": [1, 1, 10, 20], "score": 0.3},
        {"image_name": "images/val/s/000000.jpg", "bbox": [2, 2, 10, 20]},                 # no score: 1.0
    ])
    assert DEFAULT_SCORE_THRESHOLD == 0.2 and MISSING_SCORE == 1.0
    test_boxes = load_detections(path).for_frame(_frame("images/val/s/000000.jpg"))
    infer_boxes = BoxFileDetector(path).detect(FRAME, 0, "000000.jpg")
    made, _ = make_detector(None, str(path))
    assert [p.score for p in test_boxes] == pytest.approx([0.3, 1.0])
    np.testing.assert_allclose(infer_boxes.scores, [0.3, 1.0])
    np.testing.assert_allclose(made.detect(FRAME, 0, "000000.jpg").scores, [0.3, 1.0])
    np.testing.assert_allclose(np.stack([p.bbox for p in test_boxes]), infer_boxes.boxes)


def test_a_box_file_written_by_infer_feeds_tdmi_test(tmp_path):
    out = tmp_path / "boxes.json"
    write_boxes_file(out, [(0, "000000.jpg", np.float32([[1, 2, 3, 4]]), np.float32([0.9])),
                           (1, "000001.jpg", np.zeros((0, 4), np.float32), np.zeros(0))], source="012834_mpii_test")
    detections = load_detections(out)
    first = detections.for_frame(_frame("images/val/012834_mpii_test/000000.jpg"))
    np.testing.assert_allclose(first[0].bbox, [1, 2, 3, 4])
    empty = _frame("images/val/012834_mpii_test/000001.jpg")
    assert detections.covers(empty) and detections.for_frame(empty) == []  # listed: nobody there
    assert not detections.covers(_frame("images/val/012834_mpii_test/000002.jpg"))


def test_posetrack_style_file_is_read_by_both(tmp_path):
    path = write_json(tmp_path / "gt.json", {
        "images": [{"id": 10128340003, "file_name": "images/val/012834_mpii_test/000003.jpg"}],
        "annotations": [{"image_id": 10128340003, "bbox": [4, 5, 6, 7], "track_id": 0, "category_id": 1}]})
    people = load_detections(path).for_frame(_frame("images/val/012834_mpii_test/000003.jpg", 10128340003))
    assert [p.score for p in people] == [1.0]
    np.testing.assert_allclose(BoxFileDetector(path).detect(FRAME, 3, "000003.jpg").boxes, [[4, 5, 6, 7]])


def test_index_only_box_file_is_refused_by_test_with_a_reason(tmp_path):
    path = write_json(tmp_path / "video.json", {"format": "tdmi-boxes", "frames": [
        {"index": 0, "boxes": [[1, 2, 3, 4]], "scores": [0.9]}]})
    np.testing.assert_allclose(BoxFileDetector(path).detect(FRAME, 0).boxes, [[1, 2, 3, 4]])
    with pytest.raises(DataFormatError, match=r"video\.json: frame 0 is known by its index only"):
        load_detections(path)


def test_records_come_back_in_file_order_with_listed_frames(tmp_path):
    path = write_json(tmp_path / "d.json", [
        {"image_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5, "category_id": 1},
        {"image_id": 3, "bbox": [0, 0, 2, 2], "score": 0.5, "category_id": 2},  # not a person
        {"image_id": "4", "bbox": [0, 0, 3, 3], "score": 0.9}])
    records = read_box_file(path)
    assert [(r.image_id, r.bbox[2]) for r in records] == [(3, 1.0), (4, 3.0)]


MALFORMED = [
    ("{not json", "not valid JSON"),
    ('{"something": 1}', "not a box file tdmi reads"),
    ('[{"bbox": [0, 0, 1, 1], "score": 1}]', r"\[0\] has neither image_id"),
    ('[{"image_id": 1, "score": 1}]', r"\[0\] has no bbox"),
    ('[{"image_id": 0, "bbox": [1, 2, 3]}]', r"\[0\]\.bbox has 3 numbers, expected 4 \(\[x, y, w, h\]\)"),
    ('[{"image_id": 0, "bbox": [1, 2, 3, "a"]}]', r"\[0\]\.bbox\[3\] is 'a', expected a number"),
    ('[{"image_id": 0, "bbox": [1, 2, 3, NaN]}]', r"\[0\]\.bbox\[3\] is nan, expected a finite number"),
    ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}]', r"\[0\]\.score is 'high', expected a number"),
    ('[{"image_name": 5, "bbox": [0, 0, 1, 1], "score": 1}]', r"\[0\]\.image_name is 5, expected a frame path"),
    ('[{"image_id": 1.5, "bbox": [0, 0, 1, 1]}]', r"\[0\]\.image_id is 1\.5, expected an integer"),
    ('[7]', r"\[0\] is int, expected an object with a bbox"),
    ('{"annotations": [{"bbox": [0, 0, 1, 1]}]}', r"annotations\[0\] has no image_id"),
    ('{"annotations": [], "images": [{"id": 1}]}', r"images\[0\] needs 'id' and 'file_name'"),
    ('{"format": "tdmi-boxes", "frames": [{"index": 0, "boxes": [[1, 2, 3, 4]], "scores": []}]}',
     r"frames\[0\] has 1 boxes but 0 scores"),
    ('{"format": "tdmi-boxes", "frames": [{"boxes": []}]}', r"frames\[0\] needs a 'name' or an integer 'index'"),
    ('{"format": "tdmi-boxes", "frames": [{"index": 0, "boxes": [[1, 2]], "scores": [1]}]}',
     r"frames\[0\]\.boxes\[0\] has 2 numbers"),
]


@pytest.mark.parametrize("content, message", MALFORMED)
def test_malformed_box_files_give_one_message_to_both_commands(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    messages = []
    for read in (load_detections, BoxFileDetector):
        with pytest.raises(DataFormatError, match=message) as err:
            read(path)
        assert str(path) in str(err.value)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_missing_box_file_names_it(tmp_path):
    for read in (load_detections, BoxFileDetector):
        with pytest.raises(FileNotFoundError, match=r"none\.json: no such box file"):
            read(tmp_path / "none.json")
