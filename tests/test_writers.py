"""PoseTrack18 prediction files: GT frame order and count, joint score = heatmap max x box score, and the
evaluator reading them back gives the same numbers as the in-memory predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posetrack_gen import make_gt_sequence, make_predictions, write_sequences
from tdmi.errors import DataFormatError
from tdmi.evaluation.posetrack_ap import evaluate_dirs, evaluate_sequences
from tdmi.evaluation.writers import PersonPrediction, write_posetrack18_predictions




def to_writer_input(name: str, pred: dict, rng: np.random.Generator) -> dict:
    out: dict = {}
    for ann in pred["annotations"]:
        kp = np.asarray(ann["keypoints"]).reshape(17, 3)
        box = float(rng.uniform(0.3, 1.0))
        joint = np.asarray(ann.get("scores", kp[:, 2]))
        out.setdefault((name, ann["image_id"]), []).append(
            PersonPrediction(keypoints=kp[:, :2], heatmap_scores=joint / box, box_score=box, track_id=ann["track_id"]))
    return out


def test_written_files_reproduce_in_memory_numbers(tmp_path: Path):
    rng = np.random.default_rng(7)
    gts = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=8, labeled_every=2) for i in range(1, 4)}
    gt_dir = write_sequences(tmp_path / "gt", gts)
    preds = {name: make_predictions(rng, gt, missing_scores_prob=0.0) for name, gt in gts.items()}
    writer_input: dict = {}
    for name, pred in preds.items():
        writer_input.update(to_writer_input(name, pred, rng))
    written = write_posetrack18_predictions(gt_dir, writer_input, tmp_path / "pred")
    assert sorted(p.name for p in written) == sorted(f"{n}.json" for n in gts)
    from_disk = evaluate_dirs(gt_dir, tmp_path / "pred")
    in_memory = evaluate_sequences(gts, preds)
    np.testing.assert_allclose(from_disk.per_joint_ap, in_memory.per_joint_ap, rtol=0, atol=1e-9)
    assert from_disk.table["Mean"] == pytest.approx(in_memory.table["Mean"], abs=1e-9)
    assert 0 < from_disk.table["Mean"] < 100
    data = json.loads((tmp_path / "pred" / written[0].name).read_text())
    gt0 = gts[written[0].stem]
    assert [im["id"] for im in data["images"]] == [im["id"] for im in gt0["images"]]  # GT order and count
    assert [im["file_name"] for im in data["images"]] == [im["file_name"] for im in gt0["images"]]


def test_joint_score_is_heatmap_max_times_box_score(tmp_path: Path):
    rng = np.random.default_rng(0)
    gt = make_gt_sequence(rng, 5, num_frames=3)
    gt_dir = write_sequences(tmp_path / "gt", {"000005_mpii_test": gt})
    first = gt["images"][0]
    person = PersonPrediction(keypoints=np.arange(34, dtype=float).reshape(17, 2), heatmap_scores=np.full(17, 0.8),
                              box_score=0.5)
    write_posetrack18_predictions(gt_dir, {("000005_mpii_test", first["file_name"]): [person, person]},
                                  tmp_path / "pred")
    data = json.loads((tmp_path / "pred" / "000005_mpii_test.json").read_text())
    anns = data["annotations"]
    assert len(anns) == 2 and [a["track_id"] for a in anns] == [0, 1]  # default: index within the frame
    assert anns[0]["scores"] == pytest.approx([0.4] * 17)
    assert anns[0]["keypoints"][:3] == pytest.approx([0.0, 1.0, 0.4])  # third value = joint score
    assert anns[0]["score"] == 0.5 and anns[0]["image_id"] == first["id"]
    assert data["categories"][0]["name"] == "person"
    # Frames without predictions stay empty (no DCPose dummy person).
    assert {a["image_id"] for a in anns} == {first["id"]}


def test_writer_rejects_bad_input(tmp_path: Path):
    rng = np.random.default_rng(1)
    gt_dir = write_sequences(tmp_path / "gt", {"000006_mpii_test": make_gt_sequence(rng, 6, num_frames=2)})
    person = PersonPrediction(np.zeros((17, 2)), np.ones(17), 1.0, track_id=3)
    key = ("000006_mpii_test", make_gt_sequence(np.random.default_rng(1), 6, num_frames=2)["images"][0]["id"])
    with pytest.raises(DataFormatError, match="not unique"):
        write_posetrack18_predictions(gt_dir, {key: [person, person]}, tmp_path / "pred")
    with pytest.raises(DataFormatError, match="match no GT frame"):
        write_posetrack18_predictions(gt_dir, {("000099_mpii_test", 0): [person]}, tmp_path / "pred")
    assert not (tmp_path / "pred" / "000006_mpii_test.json").exists()  # nothing half-written
    with pytest.raises(DataFormatError, match=r"\[17, 2\]"):
        write_posetrack18_predictions(gt_dir, {key: [PersonPrediction(np.zeros((15, 2)), np.ones(17))]},
                                      tmp_path / "pred")
    big = PersonPrediction(np.zeros((17, 2)), np.ones(17), 1.0, track_id=10000)
    with pytest.raises(DataFormatError, match="9999"):
        write_posetrack18_predictions(gt_dir, {key: [big]}, tmp_path / "pred")
