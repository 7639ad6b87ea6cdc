"""`tdmi infer` caches an image detector's boxes per input and reuses them (tdmi.inference.detection_cache)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pipeline_helpers import ListDetector, frames_with_people, moving_boxes, one_torch_thread, tiny_model, write_frames
from tdmi.inference.detection_cache import CACHE_SUFFIX, cache_key, input_fingerprint
from tdmi.inference.infer_command import infer_source
from tdmi.inference.model_loading import LoadedModel
from tdmi.inference.records import PipelineOptions

one_torch_thread = one_torch_thread  # the fixture, used by every test here
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path):
    model, cfg = tiny_model()
    boxes = [b + np.float32(0.123456) for b in moving_boxes(5)]  # digits a rounded file would lose
    folder = write_frames(tmp_path / "clip", frames_with_people(boxes))
    return LoadedModel(model, cfg, "tiny", True, None), folder, boxes


def _run(loaded, folder, out, detector, **kwargs):
    return infer_source(str(folder), out, loaded, detector, detector.description, PipelineOptions(),
                        torch.device("cpu"), progress=False, **kwargs)


def _annotations(outcome):
    return json.loads(outcome.json_path.read_text())["annotations"]


def test_second_run_reuses_the_boxes_and_gives_identical_poses(tmp_path, setup):
    loaded, folder, boxes = setup
    out = tmp_path / "out"
    first_detector, second_detector = ListDetector(boxes), ListDetector(boxes)
    first = _run(loaded, folder, out, first_detector)
    cache = out / f"clip{CACHE_SUFFIX}"
    assert first_detector.calls == 5 and cache.is_file()
    second = _run(loaded, folder, out, second_detector)
    assert second_detector.calls == 0
    assert any("boxes reused from" in note for note in second.notes)
    assert _annotations(first) == _annotations(second)  # exact: the cache keeps every float32 digit
    third_detector = ListDetector(boxes)
    _run(loaded, folder, out, third_detector, reuse_detections=False)  # --redetect
    assert third_detector.calls == 5


def test_another_detector_or_a_changed_input_detects_again(tmp_path, setup):
    loaded, folder, boxes = setup
    out = tmp_path / "out"
    _run(loaded, folder, out, ListDetector(boxes))
    other = ListDetector(boxes)
    other.description = "test boxes, threshold 0.5"
    _run(loaded, folder, out, other)
    assert other.calls == 5
    frame = sorted(folder.iterdir())[2]
    stat = frame.stat()
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited frame
    again = ListDetector(boxes)
    again.description = other.description
    _run(loaded, folder, out, again)
    assert again.calls == 5


def test_a_damaged_cache_is_a_miss_and_is_replaced(tmp_path, setup):
    loaded, folder, boxes = setup
    out = tmp_path / "out"
    _run(loaded, folder, out, ListDetector(boxes))
    cache = out / f"clip{CACHE_SUFFIX}"
    doc = json.loads(cache.read_text())
    doc["frames"][0]["boxes"] = [[1, 2, 3]]  # keeps its key, but is no longer a valid box file
    cache.write_text(json.dumps(doc))
    detector = ListDetector(boxes)
    _run(loaded, folder, out, detector)
    assert detector.calls == 5
    assert json.loads(cache.read_text())["frames"][0]["boxes"] != [[1, 2, 3]]
    cache.write_text("{not json")
    detector = ListDetector(boxes)
    _run(loaded, folder, out, detector)
    assert detector.calls == 5


def test_fingerprint_follows_files_and_ignores_nothing_else(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "000000.jpg").write_bytes(b"a")
    before = input_fingerprint(str(folder))
    assert before == input_fingerprint(str(folder))
    (folder / "000001.jpg").write_bytes(b"b")
    assert input_fingerprint(str(folder)) != before
    assert input_fingerprint(str(tmp_path / "missing.mp4")) is None and cache_key("0", "hog") is None


def test_infer_writes_the_pose_trackers_ids_which_bridge_a_gap(tmp_path):
    model, cfg = tiny_model()
    boxes = [np.float32([[20 + 4 * t, 20, 40, 90]]) for t in range(16)]
    images = frames_with_people(boxes)
    for t in range(4, 11):
        boxes[t] = np.zeros((0, 4), np.float32)  # the detector misses the person for 7 frames
    folder = write_frames(tmp_path / "gap", images)
    loaded = LoadedModel(model, cfg, "tiny", True, None)
    ids = {}
    for tracker in ("iou", "pose"):
        outcome = infer_source(str(folder), tmp_path / tracker, loaded, ListDetector(boxes), "test boxes",
                               PipelineOptions(tracker=tracker), torch.device("cpu"), progress=False)
        document = json.loads(outcome.json_path.read_text())
        ids[tracker] = {a["track_id"] for a in document["annotations"]}
        assert document["tdmi"]["tracker"] == tracker
    assert len(ids["iou"]) == 2  # its 5-frame gap tolerance loses the person
    assert len(ids["pose"]) == 1
