"""The PoseTrack21 kit's pose-tracking HOTA (tdmi.evaluation.pt21_hota): hand-computed cases that always run, and
parity with the kit (anDoer/PoseTrack21 ``eval/posetrack21``, which needs numpy < 1.24) when it is importable::

    PYTHONPATH=src:tests:<PoseTrack21>/eval/posetrack21 <python with numpy 1.23> -m pytest tests/test_pt21_hota.py
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from posetrack_gen import make_gt_sequence, make_predictions, write_sequences
from tdmi.evaluation.pt21_hota import RATIOS, evaluate_hota_dirs, evaluate_hota_sequences

HEAD = [0, 0, 20, 20]


def _person(track_id: int, x: float, y: float = 100.0) -> dict:
    keypoints = []
    for j in range(17):
        keypoints += [x + j, y + 3 * j, 1] if j not in (3, 4) else [0, 0, 0]
    return {"track_id": track_id, "keypoints": keypoints, "bbox_head": HEAD, "scores": [0.9] * 17,
            "category_id": 1}


def _sequence(frames: list[list[dict]]) -> dict:
    images, annotations = [], []
    for index, people in enumerate(frames):
        images.append({"id": 1000 + index, "file_name": f"images/val/seq/{index:06d}.jpg", "is_labeled": True,
                       "ignore_regions_x": [], "ignore_regions_y": []})
        annotations += [{**copy.deepcopy(p), "image_id": 1000 + index} for p in people]
    return {"images": images, "annotations": annotations}


def _hota(gt_frames, pred_frames, corrected=False):
    return evaluate_hota_sequences({"s": _sequence(gt_frames)}, {"s": _sequence(pred_frames)}, corrected=corrected)


def test_perfect_tracks_score_100():
    frames = [[_person(1, 100), _person(2, 300)] for _ in range(4)]
    table = _hota(frames, frames).table
    assert table == {name: pytest.approx(100.0) for name in RATIOS}


def test_one_identity_switch_halves_association():
    gt = [[_person(1, 100)] for _ in range(4)]
    pred = [[_person(7, 100)], [_person(7, 100)], [_person(8, 100)], [_person(8, 100)]]
    table = _hota(gt, pred).table
    # per joint: TPA 2 with each id, 4 GT joints, 2 per predicted id: AssA = (2 * 2/4 + 2 * 2/4) / 4 = 0.5
    assert table["DetA"] == pytest.approx(100.0) and table["AssA"] == pytest.approx(50.0)
    assert table["HOTA"] == pytest.approx(100 * np.sqrt(0.5))
    assert table["AssPr"] == pytest.approx(100.0) and table["AssRe"] == pytest.approx(50.0)


def test_localisation_lowers_the_score_by_alpha():
    gt = [[_person(1, 100)] for _ in range(3)]
    pred = [[_person(1, 104)] for _ in range(3)]  # 4 px off, head size 16.97: d = 0.2357, similarity 0.529
    result = _hota(gt, pred)
    similarity = 1 - (4 / (0.6 * np.hypot(20, 20))) / 0.5001
    # TP for the alphas up to the similarity, nothing beyond: DetA = the share of those alphas
    hit = (np.arange(0.05, 0.99, 0.05) <= similarity + 1e-12).mean()
    assert result.table["DetA"] == pytest.approx(100 * hit)
    # LocA is the TP similarity where there are TPs, and 1 (the kit's 1e-10 / 1e-10) at the alphas without any
    assert result.table["LocA"] == pytest.approx(100 * (hit * similarity + (1 - hit)), rel=1e-9)


def test_the_kits_empty_frame_defect_is_reproduced_and_can_be_corrected():
    gt = [[_person(1, 100)] for _ in range(4)]
    pred = [[_person(1, 100)] for _ in range(3)] + [[]]  # nothing predicted in the last frame
    kit, fixed = _hota(gt, pred), _hota(gt, pred, corrected=True)
    # the kit adds the whole sequence's GT joints (4 per joint) as FN for that frame, the corrected rule 1
    assert kit.table["DetA"] == pytest.approx(100 * 3 / 7) and fixed.table["DetA"] == pytest.approx(100 * 3 / 4)
    assert kit.counts["HOTA_FN"][0, 0] == 4 and fixed.counts["HOTA_FN"][0, 0] == 1


def test_large_track_ids_and_a_missing_sequence(tmp_path):
    frames = [[_person(10_000_001, 100)] for _ in range(3)]
    assert _hota(frames, [[_person(987_654_321, 100)] for _ in range(3)]).table["HOTA"] == pytest.approx(100.0)
    result = evaluate_hota_sequences({"a": _sequence(frames), "b": _sequence(frames)}, {"a": _sequence(frames)},
                                     allow_missing=True)
    assert result.table["DetA"] == pytest.approx(50.0)


# ------------------------------------------------------------------------------------------- kit parity

def _kit_ready(gt: dict) -> dict:
    """What the kit can read: labeled frames without people would crash it (TypeError), so they are unlabeled."""
    gt = copy.deepcopy(gt)
    with_people = {a["image_id"] for a in gt["annotations"]}
    for image in gt["images"]:
        image["is_labeled"] = bool(image["is_labeled"]) and image["id"] in with_people
    return gt


def _kit(gt_dir: Path, pred_dir: Path) -> dict:
    api = pytest.importorskip("posetrack21.api")
    evaluator = api.get_api(trackers_folder=str(pred_dir), gt_folder=str(gt_dir), eval_type="tracking",
                            num_parallel_cores=1, use_parallel=False)
    return evaluator.get_avg_results(evaluator.eval())


@pytest.mark.parametrize("seed", range(8))
def test_parity_with_the_posetrack21_kit(tmp_path: Path, seed: int, capsys):
    pytest.importorskip("posetrack21.api")
    rng = np.random.default_rng(3000 + seed)
    gts = {f"{i:06d}_mpii_test": _kit_ready(make_gt_sequence(rng, i, num_frames=int(rng.integers(3, 12)),
                                                             labeled_every=int(rng.integers(1, 3)),
                                                             ignore_prob=0.4)) for i in range(1, 5)}
    preds = {n: make_predictions(rng, g, miss_prob=float(rng.uniform(0, 0.4)), extra_people=float(rng.uniform(0, 2)),
                                 track_ids="follow", swap_prob=float(rng.uniform(0, 0.5))) for n, g in gts.items()}
    gt_dir, pred_dir = write_sequences(tmp_path / "gt", gts), write_sequences(tmp_path / "pred", preds)
    try:
        kit = _kit(gt_dir, pred_dir)
    except IndexError:
        pytest.skip("the kit crashes when every GT person of a labeled frame is in an ignore region")
    capsys.readouterr()
    ours = evaluate_hota_dirs(gt_dir, pred_dir)
    for name in RATIOS:
        np.testing.assert_allclose(ours.values[name].mean(axis=0), kit[name], rtol=0, atol=1e-12, err_msg=name)
