"""Paired sequence bootstrap: the full-set value is poseval's Mean, intervals are paired and cover the truth."""

from __future__ import annotations

import numpy as np
import pytest

from posetrack_gen import gt_as_predictions, make_gt_sequence, make_predictions, sequence_name, write_sequences
from tdmi.evaluation.bootstrap import mean_ap, paired_bootstrap, sequence_stats
from tdmi.evaluation.posetrack_ap import evaluate_dirs


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bootstrap")
    rng = np.random.default_rng(0)
    gt = {sequence_name(i): make_gt_sequence(rng, i, num_frames=6) for i in range(8)}
    good = {name: make_predictions(rng, data, miss_prob=0.05) for name, data in gt.items()}
    bad = {name: make_predictions(rng, data, miss_prob=0.5) for name, data in gt.items()}
    return (write_sequences(root / "gt", gt), write_sequences(root / "good", good), write_sequences(root / "bad", bad),
            write_sequences(root / "perfect", {n: gt_as_predictions(d) for n, d in gt.items()}))


def test_full_set_mean_equals_the_evaluator(folders):
    gt, good, bad, perfect = folders
    for pred in (good, bad, perfect):
        assert mean_ap(sequence_stats(gt, pred)) == pytest.approx(evaluate_dirs(gt, pred).mean_ap, abs=1e-9)


def test_paired_bootstrap_orders_and_brackets(folders):
    gt, good, bad, _ = folders
    a, b = [sequence_stats(gt, good)], [sequence_stats(gt, bad)]
    result = paired_bootstrap(a, b, resamples=200)
    assert result["difference"] > 0 and result["ci95"][0] <= result["difference"] <= result["ci95"][1]
    assert result["ci95"][0] > 0 and result["p_not_positive"] == 0.0
    same = paired_bootstrap(a, a, resamples=50)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0]  # paired: identical models never differ
    with pytest.raises(ValueError, match="same sequences"):
        paired_bootstrap(a, [b[0][:-1]], resamples=10)
