"""Bit-for-bit parity with the official poseval on randomized prediction sets.

Runs only when ``poseval`` (the Python 3 package, svenkreiss/poseval or leonid-pishchulin/poseval >= Oct 2020) is
importable in the test interpreter; it is not on PyPI and not a dependency of tdmi. For example::

    pip install git+https://github.com/svenkreiss/poseval.git      # or PYTHONPATH=<checkout of poseval>
    python -m pytest -q tests/test_poseval_parity.py

Every AP, precision and recall value (15 joints + total) and every group must be EQUAL (not close): we sort the
same score array with the same ``argsort`` call, so even score ties break identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posetrack_gen import gt_as_predictions, make_gt_sequence, make_predictions, to_annolist, write_sequences
from tdmi.evaluation.posetrack_ap import TABLE_KEYS, evaluate_dirs

eval_helpers = pytest.importorskip("poseval.eval_helpers")
evaluate_ap = pytest.importorskip("poseval.evaluateAP")


def official(gt_dir: Path, pred_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    # poseval joins PRED_DIR + file name without a separator: keep the trailing "/".
    gt_frames, pr_frames = eval_helpers.load_data_dir(["", f"{gt_dir}/", f"{pred_dir}/"])
    with np.errstate(all="ignore"):
        ap, pre, rec = evaluate_ap.evaluateAP(gt_frames, pr_frames, None, False, False)
    return ap[:, 0], pre[:, 0], rec[:, 0], eval_helpers.getCum(ap)


def assert_identical(gt_dir: Path, pred_dir: Path) -> float:
    ap, pre, rec, cum = official(gt_dir, pred_dir)
    with np.errstate(all="ignore"):
        ours = evaluate_dirs(gt_dir, pred_dir)
    assert np.array_equal(np.append(ours.per_joint_ap, ours.table["Mean"]), ap, equal_nan=True)
    assert np.array_equal(np.append(ours.per_joint_precision, ours.mean_precision), pre, equal_nan=True)
    assert np.array_equal(np.append(ours.per_joint_recall, ours.mean_recall), rec, equal_nan=True)
    assert np.array_equal(np.array([ours.table[k] for k in TABLE_KEYS]), np.array(cum, dtype=float), equal_nan=True)
    return ours.table["Mean"]


@pytest.mark.parametrize("seed", range(6))
def test_parity_on_real_sample_with_perturbed_predictions(posetrack18_sample: Path, tmp_path: Path, seed: int):
    gt_dir = posetrack18_sample / "annotations" / "val"
    rng = np.random.default_rng(seed)
    preds = {p.stem: make_predictions(rng, json.loads(p.read_text()), tie_scores=bool(seed % 2),
                                      extra_people=float(rng.uniform(0, 3)), width=1920, height=1080)
             for p in gt_dir.glob("*.json")}
    if seed % 3 == 2:
        preds = {n: to_annolist(p, rng, dummy=True) for n, p in preds.items()}
    assert_identical(gt_dir, write_sequences(tmp_path / "pred", preds))


def test_parity_unannotated_joint_predictions(posetrack18_sample: Path, tmp_path: Path):
    gt_dir = posetrack18_sample / "annotations" / "val"
    for score in (2.0, 0.5):
        preds = {p.stem: gt_as_predictions(json.loads(p.read_text()), unlabeled_score=score)
                 for p in gt_dir.glob("*.json")}
        mean = assert_identical(gt_dir, write_sequences(tmp_path / f"pred{score}", preds))
        assert (mean == 100.0) == (score == 0.5)


@pytest.mark.parametrize("seed", range(12))
def test_parity_on_synthetic_sequences(tmp_path: Path, seed: int):
    rng = np.random.default_rng(1000 + seed)
    gts = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=10, labeled_every=int(rng.integers(1, 3)),
                                                  ignore_prob=0.5) for i in range(1, 6)}
    if seed % 4 == 3:  # a joint the GT never labels: NaN AP, excluded from the Mean
        for gt in gts.values():
            for ann in gt["annotations"]:
                ann["keypoints"][6:9] = [0, 0, 0]  # head_top
    preds = {n: make_predictions(rng, g, tie_scores=bool(seed % 2), miss_prob=float(rng.uniform(0, 0.4)),
                                 extra_people=float(rng.uniform(0, 2))) for n, g in gts.items()}
    if seed % 3 == 1:
        preds = {n: to_annolist(p, rng, dummy=True) for n, p in preds.items()}
    if seed % 3 == 2:
        gts = {n: to_annolist(g) for n, g in gts.items()}
    assert_identical(write_sequences(tmp_path / "gt", gts), write_sequences(tmp_path / "pred", preds))
