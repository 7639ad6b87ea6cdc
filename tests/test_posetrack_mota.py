"""poseval's tracking metrics (tdmi.evaluation.posetrack_mota): hand-computed cases that always run, and parity
with the official poseval (+ motmetrics 1.4.0) when it is importable, e.g.::

    pip install motmetrics==1.4.0 pandas
    PYTHONPATH=<checkout of poseval> python -m pytest tests/test_posetrack_mota.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from posetrack_gen import make_gt_sequence, make_predictions, to_annolist, write_sequences
from tdmi.evaluation.posetrack_mota import evaluate_tracking_dirs, evaluate_tracking_sequences

# --------------------------------------------------------------------------------------- hand-computed cases

HEAD = [0, 0, 20, 20]  # head size 0.6 * hypot(20, 20) = 16.97; a match needs distance <= 8.49 px


def _person(track_id: int, x: float, y: float = 100.0, joints: int = 17) -> dict:
    keypoints = []
    for j in range(17):
        keypoints += [x + j, y + 3 * j, 1] if j < joints and j not in (3, 4) else [0, 0, 0]
    return {"track_id": track_id, "keypoints": keypoints, "bbox_head": HEAD, "scores": [0.9] * 17,
            "image_id": None, "category_id": 1}


def _sequence(frames: list[list[dict]], ignore: dict[int, list] | None = None) -> dict:
    images, annotations = [], []
    for index, people in enumerate(frames):
        image = {"id": 1000 + index, "file_name": f"images/val/seq/{index:06d}.jpg", "frame_id": 1000 + index,
                 "vid_id": "seq", "nframes": len(frames), "is_labeled": True}
        if ignore and index in ignore:
            image["ignore_regions_x"] = [[p[0] for p in ignore[index]]]
            image["ignore_regions_y"] = [[p[1] for p in ignore[index]]]
        images.append(image)
        for person in people:
            annotations.append({**copy.deepcopy(person), "image_id": 1000 + index})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": [
                "nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                "right_knee", "left_ankle", "right_ankle"]}]}


def _evaluate(gt_frames, pred_frames, ignore=None):
    return evaluate_tracking_sequences({"seq": _sequence(gt_frames, ignore)}, {"seq": _sequence(pred_frames)})


def _total(result, metric="MOTA"):
    return result.table[metric]["Total"]


def test_perfect_tracks_score_mota_100_and_the_last_frame_is_not_counted():
    frames = [[_person(1, 100), _person(2, 300)] for _ in range(5)]
    result = _evaluate(frames, frames)
    assert _total(result) == 100.0 and _total(result, "Precision") == 100.0 and _total(result, "Recall") == 100.0
    assert _total(result, "MOTP") == 100.0  # all distances 0
    assert result.num_frames == 4 and int(result.counts["objects"][0]) == 8  # 2 people x 4 frames (last dropped)


def test_one_identity_switch_costs_one_per_joint():
    gt = [[_person(1, 100), _person(2, 300)] for _ in range(5)]
    pred = [[_person(7, 100), _person(8, 300)] for _ in range(2)] + [[_person(8, 100), _person(7, 300)]
                                                                     for _ in range(3)]
    result = _evaluate(gt, pred)
    assert int(result.counts["switches"][0]) == 2  # both objects change partner once (frame 2)
    assert _total(result) == pytest.approx(100 * (1 - 2 / 8))
    assert _total(result, "Recall") == 100.0  # a switch is still a detection


def test_a_fragmented_track_is_a_switch_after_a_gap():
    gt = [[_person(1, 100)] for _ in range(6)]
    pred = [[_person(5, 100)], [_person(5, 100)], [], [_person(6, 100)], [_person(6, 100)], [_person(6, 100)]]
    result = _evaluate(gt, pred)
    counts = {k: int(v[0]) for k, v in result.counts.items() if k != "sum_distance"}
    # frames 0-4 count: frame 2 has no prediction (a fake miss and a fake FP), frame 3 re-identifies as a switch
    assert counts == {"objects": 5, "matches": 3, "switches": 1, "misses": 1, "false_positives": 1}
    assert _total(result) == pytest.approx(100 * (1 - 3 / 5))


def test_false_positives_and_misses():
    gt = [[_person(1, 100), _person(2, 300)] for _ in range(4)]
    pred = [[_person(1, 100), _person(9, 600)] for _ in range(4)]  # person 2 missed, a far-away FP
    result = _evaluate(gt, pred)
    assert _total(result) == pytest.approx(100 * (1 - (3 + 3) / 6))
    assert _total(result, "Precision") == pytest.approx(50.0) and _total(result, "Recall") == pytest.approx(50.0)


def test_a_frame_without_people_costs_one_miss_and_one_fp_whatever_the_crowd():
    gt = [[_person(1, 100), _person(2, 300), _person(3, 500)], [_person(1, 100)], [_person(1, 100)]]
    pred = [[], [_person(1, 100)], [_person(1, 100)]]
    result = _evaluate(gt, pred)
    counts = {k: int(v[0]) for k, v in result.counts.items() if k != "sum_distance"}
    assert counts == {"objects": 2, "matches": 1, "switches": 0, "misses": 1, "false_positives": 1}


def test_people_inside_ignore_regions_are_not_counted():
    box = [(450, 0), (700, 0), (700, 400), (450, 400)]
    gt = [[_person(1, 100), _person(2, 500)] for _ in range(4)]
    pred = [[_person(1, 100), _person(4, 520)] for _ in range(4)]  # the second is inside the region
    result = _evaluate(gt, pred, ignore={i: box for i in range(4)})
    assert _total(result) == 100.0 and int(result.counts["objects"][0]) == 3


def test_a_single_frame_sequence_is_skipped_with_a_note_not_a_crash():
    result = evaluate_tracking_sequences({"a": _sequence([[_person(1, 100)]]), "b": _sequence([[_person(1, 1)]] * 3)},
                                         {"a": _sequence([[_person(1, 100)]]), "b": _sequence([[_person(1, 1)]] * 3)})
    assert result.num_sequences == 1 and any("single evaluated frame" in n for n in result.notes)


def test_group_values_are_plain_means_of_their_joints():
    gt = [[_person(1, 100)] for _ in range(4)]
    pred = [[_person(1, 100, joints=9)] for _ in range(4)]  # slots 0-8: no wrists, hips, knees, ankles
    result = _evaluate(gt, pred)
    table = result.table["MOTA"]
    assert table["Wrist"] == table["Hip"] == table["Knee"] == table["Ankle"] == 0.0
    assert table["Head"] == table["Shoulder"] == table["Elbow"] == 100.0
    assert table["Total"] == pytest.approx(100 * 7 / 15)  # poseval's 15 joints: 7 perfect, 8 all missed


# --------------------------------------------------------------------------------------- official parity

def _tracked_predictions(rng: np.random.Generator, gt: dict, swap_prob: float, miss_prob: float,
                         extra: float) -> dict:
    """Predictions that follow the GT tracks under their own ids, with swaps, misses, noise and extras."""
    return make_predictions(rng, gt, miss_prob=miss_prob, extra_people=extra, width=1000, height=1000,
                            track_ids="follow", swap_prob=swap_prob)


def _official(gt_dir: Path, pred_dir: Path) -> dict:
    eval_helpers = pytest.importorskip("poseval.eval_helpers")
    evaluate_tracking = pytest.importorskip("poseval.evaluateTracking")
    gt_frames, pr_frames = eval_helpers.load_data_dir(["", f"{gt_dir}/", f"{pred_dir}/"])
    with np.errstate(all="ignore"):
        return evaluate_tracking.evaluateTracking(gt_frames, pr_frames, str(gt_dir), False, False)


@pytest.mark.parametrize("seed", range(10))
def test_parity_with_poseval_on_synthetic_tracks(tmp_path: Path, seed: int, capsys):
    pytest.importorskip("poseval.evaluateTracking")
    rng = np.random.default_rng(2000 + seed)
    gts = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=int(rng.integers(5, 14)),
                                                  labeled_every=int(rng.integers(1, 3)), ignore_prob=0.4)
           for i in range(1, 6)}
    preds = {n: _tracked_predictions(rng, g, swap_prob=float(rng.uniform(0, 0.5)),
                                     miss_prob=float(rng.uniform(0, 0.4)), extra=float(rng.uniform(0, 1.5)))
             for n, g in gts.items()}
    if seed % 3 == 1:
        preds = {n: to_annolist(p, rng, dummy=True) for n, p in preds.items()}
    if seed % 3 == 2:
        gts = {n: to_annolist(g) for n, g in gts.items()}
    gt_dir, pred_dir = write_sequences(tmp_path / "gt", gts), write_sequences(tmp_path / "pred", preds)
    try:
        official = _official(gt_dir, pred_dir)
    except IndexError:
        pytest.skip("poseval crashes on a sequence with a single evaluated frame (we skip such sequences)")
    ours = evaluate_tracking_dirs(gt_dir, pred_dir)
    capsys.readouterr()
    for key, values in (("mota", ours.mota), ("pre", ours.precision), ("rec", ours.recall)):
        assert np.array_equal(values, official[key][0], equal_nan=True), key
    np.testing.assert_allclose(ours.motp, official["motp"][0], rtol=0, atol=1e-9)  # sums in another order


def test_real_sample_sequences_of_one_frame_are_skipped_where_poseval_crashes(posetrack18_sample: Path,
                                                                            tmp_path: Path, capsys):
    gt_dir = posetrack18_sample / "annotations" / "val"  # each file holds one labeled frame
    rng = np.random.default_rng(7)
    preds = {p.stem: _tracked_predictions(rng, json.loads(p.read_text()), 0.2, 0.2, 1.0) for p in gt_dir.glob("*.json")}
    pred_dir = write_sequences(tmp_path / "pred", preds)
    ours = evaluate_tracking_dirs(gt_dir, pred_dir)
    assert ours.num_sequences == 0 and len(ours.notes) == 3 and np.isnan(ours.mota).all()
    try:
        import poseval.evaluateTracking  # noqa: F401
    except ImportError:
        return
    with pytest.raises(IndexError):
        _official(gt_dir, pred_dir)
    capsys.readouterr()


def test_evaluate_track_cli_writes_the_tracking_table(tmp_path: Path, capsys):
    from tdmi.cli import main

    frames = [[_person(1, 100), _person(2, 300)] for _ in range(5)]
    switched = [[_person(7, 100), _person(8, 300)] for _ in range(2)] + [[_person(8, 100), _person(7, 300)]] * 3
    gt_dir = write_sequences(tmp_path / "gt", {"seq": _sequence(frames)})
    pred_dir = write_sequences(tmp_path / "pred", {"seq": _sequence(switched)})
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--track", "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MOTA" in printed and "MOTA 75.0" in printed.splitlines()[-1]
    tracking = json.loads(out.read_text())["tracking"]
    assert tracking["MOTA"]["Total"] == pytest.approx(75.0) and tracking["Recall"]["Head"] == pytest.approx(100.0)
    assert set(tracking["MOTA"]) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total"}
    assert tracking["counts"]["switches"]["nose"] == 2
    for image in json.loads((gt_dir / "seq.json").read_text())["images"]:
        assert image["is_labeled"]  # so the PT21 protocol evaluates every frame
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--track", "--protocol", "pt21",
                 "--json-out", str(out)]) == 0
    hota = json.loads(out.read_text())["tracking"]
    assert hota["protocol"] == "pt21" and hota["DetA"] == pytest.approx(100.0) and hota["AssA"] < 100.0
