"""``tdmi demo`` (tdmi.inference.demo): synthetic clip -> poses, video, contact sheet, mAP; and ``--video``."""

from __future__ import annotations

import json

import cv2
import numpy as np

from pipeline_helpers import frames_with_people, moving_boxes, one_torch_thread  # noqa: F401 (autouse fixture)
from tdmi.cli import main
from tdmi.evaluation.posetrack_ap import evaluate_dirs


def test_demo_writes_poses_video_sheet_and_scores_the_clip(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "8", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.out.splitlines()
    assert lines[-1].startswith("demo: Mean AP")
    assert any(line.split() == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"] for line in lines)
    if "RANDOM" in lines[0]:
        assert "WARNING: NO TRAINED CHECKPOINT" in captured.err

    sequence = "000001_bonn_val"
    poses = json.loads((out / f"{sequence}.json").read_text())
    assert len(poses["images"]) == 8 and poses["annotations"], "the synthetic detections hold people"
    assert all(len(a["keypoints"]) == 51 and 0 <= a["track_id"] < 10000 for a in poses["annotations"])
    assert (out / f"{sequence}.mp4").stat().st_size > 0
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 0

    # The GT-aligned prediction file lists every GT frame and the same people as the poses file.
    gt_dir = out / "synthtrack" / "annotations" / "val"
    gt = json.loads((gt_dir / f"{sequence}.json").read_text())
    predictions = json.loads((out / "predictions" / f"{sequence}.json").read_text())
    assert [im["id"] for im in predictions["images"]] == [im["id"] for im in gt["images"]]
    assert len(predictions["annotations"]) == len(poses["annotations"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["map"] == evaluate_dirs(gt_dir, out / "predictions").table
    assert metrics["throughput"]["person_frames"] == len(poses["annotations"])


def test_demo_on_a_video_renders_without_scoring(tmp_path, capsys):
    boxes = moving_boxes(6, people=1, size=(160, 128))
    video = tmp_path / "street.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 128))
    for image in frames_with_people(boxes, (160, 128)):
        writer.write(image)
    writer.release()
    out = tmp_path / "demo"
    assert main(["demo", "--video", str(video), "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "no mAP" in captured.out.splitlines()[-1]
    if "RANDOM" not in captured.err:  # the shipped model says it knows only synthetic people (issue 25)
        assert captured.out.count("trained on SynthTrack only") == 1
    doc = json.loads((out / "street.json").read_text())
    assert len(doc["images"]) == 6
    assert (out / "street.mp4").exists() and (out / "contact_sheet.png").exists()
    assert not (out / "predictions").exists()
    assert np.isfinite([a["score"] for a in doc["annotations"]]).all()
