"""poseval's AP rules (docs/facts/posetrack-facts.md section 8) and the PoseTrack21 protocol (section 10), on
hand-built cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from posetrack_gen import gt_as_predictions, make_gt_sequence, make_predictions, to_annolist, write_sequences
from tdmi.errors import DataFormatError
from tdmi.evaluation.posetrack_ap import TABLE_KEYS, evaluate_dirs, evaluate_sequences, list_sequence_files
from tdmi.keypoints import POSETRACK17, POSETRACK17_TO_POSEVAL15, POSEVAL15

SEQ = "000001_mpii_test"
HEAD_TOP, NOSE, LEFT_ANKLE = 2, 0, 15  # 17-slot indices
ALL_BUT_EARS = [s for s in range(17) if s not in (3, 4)]


def ap_of(result, slot: int) -> float:
    return float(result.per_joint_ap[POSETRACK17_TO_POSEVAL15[slot]])


def person(x0: float, y0: float, labeled=ALL_BUT_EARS, head=(0.0, 0.0, 30.0, 40.0)) -> np.ndarray:
    """A GT pose: 17 points spread around (x0, y0), flag 1 on ``labeled`` slots, (0, 0, 0) elsewhere."""
    kp = np.zeros((17, 3))
    for s in labeled:
        kp[s] = (x0 + 10 * s, y0 + 7 * s, 1)
    return kp


def gt_file(frames: list[list[np.ndarray]], ignore: dict[int, list] | None = None, labeled=None) -> dict:
    """PoseTrack18 GT with one image per entry of ``frames`` (a list of person keypoint arrays)."""
    images, annotations = [], []
    for k, people in enumerate(frames):
        image_id = 10000010000 + k
        image = {"file_name": f"images/val/{SEQ}/{k:06d}.jpg", "id": image_id,
                 "is_labeled": bool(people) if labeled is None else labeled[k]}
        if ignore and k in ignore:
            image["ignore_regions_x"] = [[x for x, _ in poly] for poly in ignore[k]]
            image["ignore_regions_y"] = [[y for _, y in poly] for poly in ignore[k]]
        images.append(image)
        for i, kp in enumerate(people):
            annotations.append({"image_id": image_id, "track_id": i, "keypoints": kp.reshape(-1).tolist(),
                                "bbox_head": [kp[0, 0], kp[0, 1], 30.0, 40.0], "scores": []})
    return {"images": images, "annotations": annotations,
            "categories": [{"name": "person", "keypoints": list(POSETRACK17.names)}]}


def pred_file(gt: dict, frames: list[list[tuple[np.ndarray, np.ndarray]]]) -> dict:
    """Predictions: per frame a list of (xy [17, 2], scores [17]); score 0 at (0, 0) means 'not submitted'."""
    annotations = []
    for image, people in zip(gt["images"], frames):
        for i, (xy, scores) in enumerate(people):
            kp = np.concatenate([xy, np.asarray(scores, dtype=float)[:, None]], axis=1)
            annotations.append({"image_id": image["id"], "track_id": i, "keypoints": kp.reshape(-1).tolist(),
                                "scores": list(map(float, scores))})
    return {"images": [dict(im) for im in gt["images"]], "annotations": annotations}


def evaluate(gt: dict, pred: dict, protocol: str = "poseval"):
    return evaluate_sequences({SEQ: gt}, {SEQ: pred}, protocol=protocol)


def scores(value: float = 0.9) -> np.ndarray:
    return np.full(17, value)


# --------------------------------------------------------------------------------------------- GT against itself


def test_real_sample_gt_scored_against_itself_is_100(posetrack18_sample: Path):
    gt_dir = posetrack18_sample / "annotations" / "val"
    gt = {p.stem: json.loads(p.read_text()) for p in sorted(gt_dir.glob("*.json"))}
    preds = {name: gt_as_predictions(data) for name, data in gt.items()}
    for protocol in ("poseval", "pt21"):
        result = evaluate_sequences(gt, preds, protocol=protocol)
        assert all(result.table[k] == 100.0 for k in TABLE_KEYS), (protocol, result.table)
        assert np.all(result.per_joint_ap == 100.0)
    assert result.num_frames == 3 and result.num_sequences == 3
    # Old-format (DCPose-style, 15 ids) predictions with the dummy person on empty frames: still 100.
    old = {name: to_annolist(p, dummy=True) for name, p in preds.items()}
    assert evaluate_sequences(gt, old).table["Mean"] == 100.0


def test_real_sample_unannotated_joint_predictions(posetrack18_sample: Path):
    """facts 8 verification: far-away predictions for unannotated joints hurt only when they outrank the TPs."""
    gt_dir = posetrack18_sample / "annotations" / "val"
    gt = {p.stem: json.loads(p.read_text()) for p in sorted(gt_dir.glob("*.json"))}
    high = evaluate_sequences(gt, {n: gt_as_predictions(d, unlabeled_score=2.0) for n, d in gt.items()})
    low = evaluate_sequences(gt, {n: gt_as_predictions(d, unlabeled_score=0.5) for n, d in gt.items()})
    assert low.table["Mean"] == 100.0
    assert high.table["Mean"] < 100.0
    assert 50.0 < np.nanmin(high.per_joint_ap) < 100.0 and np.nanmax(high.per_joint_ap) == 100.0


def test_small_synthetic_gt_against_itself_is_100():
    rng = np.random.default_rng(3)
    gt = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=8, labeled_every=2) for i in range(1, 4)}
    result = evaluate_sequences(gt, {n: gt_as_predictions(d) for n, d in gt.items()})
    assert result.table["Mean"] == 100.0
    assert result.num_gt_joints.sum() > 0


# ------------------------------------------------------------------------------------------------ matching rules


def test_joint_gt_does_not_label_is_a_false_positive():
    a = person(0, 0, labeled=[s for s in ALL_BUT_EARS if s != HEAD_TOP])
    b = person(500, 500)
    gt = gt_file([[a, b]])
    for fp_score, expected in ((0.95, 50.0), (0.3, 100.0)):
        a_scores, b_scores = scores(0.9), scores(0.9)
        a_scores[HEAD_TOP] = fp_score
        b_scores[HEAD_TOP] = 0.5
        a_xy = a[:, :2].copy()
        a_xy[HEAD_TOP] = (1000, 1000)
        result = evaluate(gt, pred_file(gt, [[(a_xy, a_scores), (b[:, :2], b_scores)]]))
        # head_top detections: A's (FP) and B's (TP), one GT: the FP ranked first halves the precision.
        assert ap_of(result, HEAD_TOP) == pytest.approx(expected)
        assert result.num_gt_joints[POSETRACK17_TO_POSEVAL15[HEAD_TOP]] == 1


def test_prediction_inside_ignore_region_is_removed():
    gt_person = person(0, 0)
    region = [(1000, 1000), (1400, 1000), (1400, 1400), (1000, 1400)]
    gt_plain, gt_ignored = gt_file([[gt_person]]), gt_file([[gt_person]], ignore={0: [region]})
    stray = person(1100, 1100)[:, :2]  # all its points lie inside the region
    frames = [[(stray, scores(0.99)), (gt_person[:, :2], scores(0.5))]]
    assert evaluate(gt_plain, pred_file(gt_plain, frames)).table["Mean"] == pytest.approx(50.0)
    ignored = evaluate(gt_ignored, pred_file(gt_ignored, frames))
    assert ignored.table["Mean"] == 100.0 and ignored.num_predicted_people == 1


def test_gt_points_inside_ignore_region_leave_ngt():
    gt_person = person(0, 0)
    # A small triangle around the nose (0, 0) only; the point on the boundary rule: strictly inside.
    region = [(-5, -5), (5, -5), (0, 5)]
    gt = gt_file([[gt_person]], ignore={0: [region]})
    result = evaluate(gt, pred_file(gt, [[(gt_person[:, :2], scores())]]))
    nose = POSETRACK17_TO_POSEVAL15[NOSE]
    assert result.num_gt_joints[nose] == 0 and result.num_detections[nose] == 0
    assert result.per_joint_ap[nose] == 0.0  # no predictions left -> 0, counted in the Mean
    assert result.table["Mean"] == pytest.approx(14 * 100 / 15)


def test_assignment_ties_go_to_the_first_prediction():
    g = person(0, 0)
    gt = gt_file([[g]])
    low, high = scores(0.5), scores(0.9)
    # Two identical predictions on the same GT: the first in the file wins, the other is a false positive.
    first_low = evaluate(gt, pred_file(gt, [[(g[:, :2], low), (g[:, :2], high)]]))
    first_high = evaluate(gt, pred_file(gt, [[(g[:, :2], high), (g[:, :2], low)]]))
    assert first_low.table["Mean"] == pytest.approx(50.0)  # FP (0.9) ranked above the TP (0.5)
    assert first_high.table["Mean"] == 100.0


def test_prediction_that_loses_its_best_gt_does_not_fall_back():
    g1, g2 = person(0, 0), person(0, 0)
    # Move half of g2's joints far away: a prediction on g1's spot matches g1 fully and g2 half.
    g2[ALL_BUT_EARS[:8], :2] += 300
    gt = gt_file([[g1, g2]])
    p1 = g1[:, :2]
    p2 = g1[:, :2].copy()
    p2[ALL_BUT_EARS[-1]] += 300  # 14/15 on g1, 7/15 on g2
    result = evaluate(gt, pred_file(gt, [[(p1, scores(0.9)), (p2, scores(0.8))]]))
    # p2's best GT is g1 (taken by p1); it never falls back to g2, so all its joints are false positives.
    # Joints that p2 would have matched on g2 therefore have AP 50 (TP at 0.9, FP at 0.8, nGT 2: P=1 R=.5 then .5).
    j = POSETRACK17_TO_POSEVAL15[ALL_BUT_EARS[-2]]
    assert result.per_joint_ap[j] == pytest.approx(50.0)
    assert result.num_gt_joints[j] == 2


def test_joint_without_predictions_is_zero_and_counted():
    g = person(0, 0)
    gt = gt_file([[g]])
    xy, sc = g[:, :2].copy(), scores()
    xy[LEFT_ANKLE], sc[LEFT_ANKLE] = 0, 0  # (0, 0, 0) is "not submitted"
    result = evaluate(gt, pred_file(gt, [[(xy, sc)]]))
    assert ap_of(result, LEFT_ANKLE) == 0.0
    assert result.table["Ankle"] == 50.0
    assert result.table["Mean"] == pytest.approx(14 * 100 / 15)


def test_joint_without_gt_is_nan_and_excluded():
    g = person(0, 0, labeled=[s for s in ALL_BUT_EARS if s != HEAD_TOP])
    gt = gt_file([[g]])
    xy = g[:, :2].copy()
    xy[HEAD_TOP] = (50, 50)
    with np.errstate(all="ignore"):
        result = evaluate(gt, pred_file(gt, [[(xy, scores())]]))
    assert math.isnan(ap_of(result, HEAD_TOP))
    assert math.isnan(result.table["Head"])  # groups use a plain mean
    assert result.table["Mean"] == 100.0  # the Mean skips NaN joints
    assert result.to_json_dict()["Head"] is None


def test_mean_weights_head_three_fifteenths():
    g = person(0, 0)
    gt = gt_file([[g]])
    xy, sc = g[:, :2].copy(), scores()
    xy[NOSE], sc[NOSE] = 0, 0
    result = evaluate(gt, pred_file(gt, [[(xy, sc)]]))
    t = result.table
    assert t["Head"] == pytest.approx(200 / 3)
    others = sum(t[k] for k in ("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"))
    assert t["Mean"] == pytest.approx((3 * t["Head"] + 2 * others) / 15)
    assert t["Mean"] != pytest.approx(np.mean([t[k] for k in TABLE_KEYS[:7]]))


def test_only_frames_with_gt_people_are_evaluated():
    g = person(10, 10)  # PT21 ignores points at x <= 0 or y <= 0
    gt = gt_file([[g], [], [g]], labeled=[True, True, False])  # frame 1 labelled but empty
    stray = (person(700, 700)[:, :2], scores(0.99))
    frames = [[(g[:, :2], scores(0.5))], [stray], [(g[:, :2], scores(0.5)), stray]]
    result = evaluate(gt, pred_file(gt, frames))
    assert result.num_frames == 2  # poseval: frames whose GT has people, is_labeled is not consulted
    # Frame 2's stray counts (ranked first: P = 0, 1/2, 2/3 at R = 0, 1/2, 1 -> AP 2/3), frame 1's does not.
    assert result.table["Mean"] == pytest.approx(200 / 3)
    pt21 = evaluate(gt, pred_file(gt, frames), protocol="pt21")
    assert pt21.num_frames == 2  # PT21: is_labeled frames (0 and 1); frame 1 has no GT -> its stray is a FP
    assert pt21.table["Mean"] == pytest.approx(50.0)


def test_missing_joint_scores_rank_last():
    g = person(0, 0)
    gt = gt_file([[g, person(400, 0)]])
    pred = pred_file(gt, [[(g[:, :2], scores(0.5)), (person(900, 900)[:, :2], scores(0.9))]])
    del pred["annotations"][1]["scores"]  # -9999: the false positive now ranks below the true positive
    assert evaluate(gt, pred).table["Mean"] == pytest.approx(50.0)


# ------------------------------------------------------------------------------------------------- PT21 protocol


def test_pt21_presence_is_positive_coordinates():
    g = person(10, 10)
    gt = gt_file([[g]])
    xy = g[:, :2].copy()
    xy[NOSE] = (-5.0, 40.0)  # poseval: a (false positive) point; PT21: not a detection at all
    sc = scores(0.5)
    sc[NOSE] = 0.99
    assert evaluate(gt, pred_file(gt, [[(xy, sc)]]), "pt21").per_joint_ap[POSETRACK17_TO_POSEVAL15[NOSE]] == 0.0
    assert evaluate(gt, pred_file(gt, [[(xy, sc)]]), "poseval").table["Mean"] < 100.0


def test_pt21_joint_without_gt_counts_as_zero():
    g = person(10, 10, labeled=[s for s in ALL_BUT_EARS if s != HEAD_TOP])
    gt = gt_file([[g]])
    xy = g[:, :2].copy()
    xy[HEAD_TOP] = (50, 50)
    result = evaluate(gt, pred_file(gt, [[(xy, scores())]]), "pt21")
    assert ap_of(result, HEAD_TOP) == 0.0  # recall uses max(nGT, 1): AP 0, included
    assert result.table["Mean"] == pytest.approx(14 * 100 / 15)


def test_pt21_requires_equal_image_ids():
    gt = gt_file([[person(10, 10)]])
    pred = pred_file(gt, [[(person(10, 10)[:, :2], scores())]])
    pred["images"][0]["id"] += 1
    pred["annotations"][0]["image_id"] += 1
    with pytest.raises(DataFormatError, match="equal ids"):
        evaluate(gt, pred, "pt21")


# -------------------------------------------------------------------------------------------------------- errors


def test_frame_count_mismatch_names_the_file(tmp_path: Path):
    gt = gt_file([[person(0, 0)]])
    pred = pred_file(gt, [[]])
    pred["images"].append({"file_name": f"images/val/{SEQ}/000001.jpg", "id": 10000010001})
    (tmp_path / "gt").mkdir(), (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / f"{SEQ}.json").write_text(json.dumps(gt))
    (tmp_path / "pred" / f"{SEQ}.json").write_text(json.dumps(pred))
    with pytest.raises(DataFormatError, match=r"# prediction frames 2 <> # GT frames 1") as err:
        evaluate_dirs(tmp_path / "gt", tmp_path / "pred")
    assert str(tmp_path / "pred" / f"{SEQ}.json") in str(err.value)


def test_missing_prediction_file_and_allow_missing(tmp_path: Path):
    gt = gt_file([[person(0, 0)]])
    (tmp_path / "gt").mkdir(), (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / f"{SEQ}.json").write_text(json.dumps(gt))
    other = "000002_mpii_test"
    (tmp_path / "gt" / f"{other}.json").write_text(json.dumps(gt))
    (tmp_path / "pred" / f"{other}.json").write_text(json.dumps(gt_as_predictions(gt)))
    with pytest.raises(DataFormatError, match=f"{SEQ}.json"):
        evaluate_dirs(tmp_path / "gt", tmp_path / "pred")
    result = evaluate_dirs(tmp_path / "gt", tmp_path / "pred", allow_missing=True)
    assert result.missing_predictions == [SEQ]
    # The missing sequence's 15 GT joints are all misses: every joint has recall 1/2 at precision 1.
    assert result.table["Mean"] == pytest.approx(50.0)


def test_malformed_files_are_named(tmp_path: Path):
    (tmp_path / "gt").mkdir(), (tmp_path / "pred").mkdir()
    gt = gt_file([[person(0, 0)]])
    (tmp_path / "gt" / f"{SEQ}.json").write_text(json.dumps(gt))
    (tmp_path / "pred" / f"{SEQ}.json").write_text("{ not json")
    with pytest.raises(DataFormatError, match="not valid JSON") as err:
        evaluate_dirs(tmp_path / "gt", tmp_path / "pred")
    assert f"{SEQ}.json" in str(err.value)
    pred = gt_as_predictions(gt)
    pred["annotations"][0]["keypoints"] = pred["annotations"][0]["keypoints"][:48]
    with pytest.raises(DataFormatError, match="48 numbers, expected 51"):
        evaluate(gt, pred)


def test_track_id_rules():
    gt = gt_file([[person(0, 0), person(300, 0)]])
    pred = gt_as_predictions(gt)
    pred["annotations"][1]["track_id"] = pred["annotations"][0]["track_id"]
    with pytest.raises(DataFormatError, match="unique within a frame"):
        evaluate(gt, pred)
    pred["annotations"][1]["track_id"] = 10000
    with pytest.raises(DataFormatError, match="10000"):
        evaluate(gt, pred)
    # the PoseTrack21 kit has no such limit: its track ids are large integers (uniqueness still holds)
    pred["annotations"][1]["track_id"] = 1
    small_ids = evaluate(gt, pred, protocol="pt21").table["Mean"]
    gt["annotations"][0]["track_id"], gt["annotations"][1]["track_id"] = 1_200_345, 1_200_346
    pred["annotations"][0]["track_id"] = 123_456_789
    assert evaluate(gt, pred, protocol="pt21").table["Mean"] == small_ids
    pred["annotations"][1]["track_id"] = 123_456_789
    with pytest.raises(DataFormatError, match="unique within a frame"):
        evaluate(gt, pred, protocol="pt21")


def test_unknown_protocol_is_rejected():
    gt = gt_file([[person(0, 0)]])
    with pytest.raises(ValueError, match="poseval, pt21"):
        evaluate(gt, gt, protocol="coco")
    assert POSEVAL15.num_joints == 15


def test_reader_processes_give_the_serial_numbers_and_the_same_first_error(tmp_path: Path):
    rng = np.random.default_rng(7)
    gts = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=8, labeled_every=2) for i in range(1, 41)}
    preds = {name: make_predictions(rng, gt, missing_scores_prob=0.2) for name, gt in gts.items()}
    for data in list(preds.values())[::5]:  # people without scores or head boxes take the per-person reader
        data["annotations"][0].pop("scores", None)
        data["annotations"][-1]["bbox_head"] = None
    gt_dir, pred_dir = write_sequences(tmp_path / "gt", gts), write_sequences(tmp_path / "pred", preds)
    for protocol in ("poseval", "pt21"):
        serial = evaluate_dirs(gt_dir, pred_dir, protocol=protocol, workers=1)
        for workers in (2, 3):
            parallel = evaluate_dirs(gt_dir, pred_dir, protocol=protocol, workers=workers)
            np.testing.assert_array_equal(parallel.per_joint_ap, serial.per_joint_ap)
            assert parallel.table == serial.table and parallel.sequences == serial.sequences
    assert serial.table == evaluate_sequences(gts, preds, protocol="pt21").table
    names = list_sequence_files(gt_dir)
    (pred_dir / names[25].name).write_text("{ broken")
    (pred_dir / names[31].name).unlink()
    errors = []
    for workers in (1, 3):
        with pytest.raises(DataFormatError) as err:
            evaluate_dirs(gt_dir, pred_dir, workers=workers)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and names[25].name in errors[0] and "not valid JSON" in errors[0]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        evaluate_dirs(gt_dir, pred_dir, workers=0)


def test_one_call_reading_of_scores_and_head_boxes_equals_the_per_person_reader(monkeypatch):
    from tdmi.evaluation import posetrack_files

    rng = np.random.default_rng(5)
    gt = make_gt_sequence(rng, 1, num_frames=10, labeled_every=1)
    pred = make_predictions(rng, gt, missing_scores_prob=0.0)
    # the common files: every predicted person with 17 scores, every GT person with a head box
    assert all(len(a["scores"]) == 17 for a in pred["annotations"])
    assert all(a.get("bbox_head") is not None for a in gt["annotations"])
    fast = {name: posetrack_files._read_poseval_file(data, name, is_gt=name == "gt")
            for name, data in (("gt", gt), ("pred", pred))}
    calls = []
    monkeypatch.setattr(posetrack_files, "_uniform_rows", lambda rows, width: calls.append(width))
    slow = {name: posetrack_files._read_poseval_file(data, name, is_gt=name == "gt")
            for name, data in (("gt", gt), ("pred", pred))}
    assert calls  # the per-person reader really ran
    for name in fast:
        for field in ("head", "score", "xy", "owner", "joint", "track_id"):
            np.testing.assert_array_equal(getattr(fast[name], field), getattr(slow[name], field), err_msg=field)
