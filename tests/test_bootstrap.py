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


def test_encoded_stats_round_trip_to_the_same_mean(folders):
    from tdmi.evaluation.bootstrap import decode_stats, encode_stats

    gt, good, _, _ = folders
    stats = sequence_stats(gt, good)
    encoded = encode_stats(stats)
    import json

    back = decode_stats(json.loads(json.dumps(encoded)))
    assert [s.name for s in back] == [s.name for s in stats]
    assert mean_ap(back) == pytest.approx(mean_ap(stats), abs=1e-6)
    for s, t in zip(stats, back):
        for j in range(len(s.hits)):
            np.testing.assert_array_equal(s.hits[j], t.hits[j])
            np.testing.assert_allclose(s.scores[j], t.scores[j], atol=2e-6)


def test_two_level_bootstrap_pairs_seeds_and_widens_with_seed_variance(folders):
    from tdmi.evaluation.bootstrap import two_level_bootstrap

    gt, good, bad, perfect = folders
    g, b, p = sequence_stats(gt, good), sequence_stats(gt, bad), sequence_stats(gt, perfect)
    same = two_level_bootstrap({0: g, 1: g}, {0: g, 1: g}, resamples=100)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0] and same["per_seed"] == {0: 0.0, 1: 0.0}
    steady = two_level_bootstrap({0: g, 1: g}, {0: b, 1: b}, resamples=300)
    # one arm's seeds disagree a lot (a perfect and a poor run): the seed level must widen the interval
    noisy = two_level_bootstrap({0: p, 1: b}, {0: b, 1: b}, resamples=300)
    assert steady["ci95"][0] > 0 and steady["per_seed"][0] == pytest.approx(steady["difference"])
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert noisy["ci95"][0] <= 0.0 + 1e-9 < noisy["ci95"][1] and width(noisy) > width(steady)
    unpaired = two_level_bootstrap({0: g}, {5: b, 6: b}, paired=False, resamples=100)
    assert unpaired["seeds_a"] == [0] and unpaired["seeds_b"] == [5, 6] and "per_seed" not in unpaired
    with pytest.raises(ValueError, match="share no seed"):
        two_level_bootstrap({0: g}, {1: b})


@pytest.mark.parametrize("method", ["matmul", "cumsum", "auto"])
def test_resampled_ap_equals_poseval_mean_on_the_expanded_sequences(folders, method):
    """The vectorised resample AP (weights per sequence) against the reference: concatenating the drawn sequences."""
    from tdmi.evaluation.bootstrap import ResampledAP, resample_counts

    gt, good, bad, perfect = folders
    rng = np.random.default_rng(3)
    for pred in (good, bad, perfect):
        stats = sequence_stats(gt, pred)
        counts = resample_counts(rng, 40, len(stats))
        counts[0] = 1  # the full set
        counts[1] = 0
        counts[1, 2] = 3  # one sequence drawn three times
        fast = ResampledAP(stats, method=method).mean_ap(counts, chunk=7)
        for row, value in zip(counts, fast):
            indices = [i for i, c in enumerate(row) for _ in range(c)]
            assert value == pytest.approx(mean_ap(stats, indices), abs=1e-9)
        assert fast[0] == pytest.approx(mean_ap(stats), abs=1e-12)  # the full set: poseval's own ranking
    with pytest.raises(ValueError, match="counts must be"):
        ResampledAP(stats, method=method).mean_ap(np.ones((2, len(stats) + 1)))
    with pytest.raises(ValueError, match="method must be"):
        ResampledAP(stats, method="blas")


@pytest.mark.parametrize("method", ["matmul", "cumsum"])
def test_resampled_ap_handles_joints_without_hits_or_detections(method):
    """A joint no sequence detects, one detected but never hit, and one whose GT only some sequences hold."""
    from tdmi.evaluation.bootstrap import NUM_JOINTS, ResampledAP, SequenceStats, resample_counts

    rng = np.random.default_rng(5)
    stats = []
    for i in range(4):
        scores, hits = [], []
        for j in range(NUM_JOINTS):
            size = 0 if j == 0 else int(rng.integers(1, 6))
            scores.append(rng.random(size))
            hits.append(np.zeros(size, bool) if j == 1 else rng.random(size) < 0.6)
        hits[2] &= i == 0
        num_gt = np.array([h.sum() + rng.integers(0, 3) for h in hits], np.float64)  # never fewer GT than hits
        num_gt[2] = max(3.0, hits[2].sum()) if i == 0 else 0.0  # joint 2's GT lives in sequence 0 only
        stats.append(SequenceStats(name=f"s{i}", scores=scores, hits=hits, num_gt=num_gt))
    counts = resample_counts(rng, 60, len(stats))
    fast = ResampledAP(stats, method=method).mean_ap(counts, chunk=16)
    for row, value in zip(counts, fast):
        indices = [i for i, c in enumerate(row) for _ in range(c)]
        assert value == pytest.approx(mean_ap(stats, indices), abs=1e-9, nan_ok=True)
    assert (counts[:, 0] == 0).any()  # some resamples lack joint 2's GT: its NaN must be excluded as poseval does


def test_resample_counts_draw_n_with_replacement():
    from tdmi.evaluation.bootstrap import resample_counts

    counts = resample_counts(np.random.default_rng(0), 500, 7)
    assert counts.shape == (500, 7) and (counts.sum(axis=1) == 7).all()
    assert abs(counts.mean() - 1.0) < 0.05 and (counts == 0).any() and (counts >= 3).any()


def test_contrast_cache_reuses_runs_and_changes_nothing(folders):
    from tdmi.evaluation.bootstrap import two_level_contrast

    gt, good, bad, _ = folders
    g, b = sequence_stats(gt, good), sequence_stats(gt, bad)
    cache: dict = {}
    first = two_level_contrast([(1.0, {0: g, 1: b}), (-1.0, {0: b, 1: b})], resamples=200, cache=cache)
    assert len(cache) == 2  # two distinct runs (b is one object)
    again = two_level_contrast([(1.0, {0: g, 1: b}), (-1.0, {0: b, 1: b})], resamples=200, cache=cache)
    fresh = two_level_contrast([(1.0, {0: g, 1: b}), (-1.0, {0: b, 1: b})], resamples=200)
    assert first == again == fresh and len(cache) == 2


def test_map_loss_ci_script_includes_run_variance_with_several_runs(tmp_path):
    """``scripts/map_loss_ci.py --runs``: the two-level interval over repeated runs, each run's loss beside it; one run
    says it has no run-to-run variance."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    rng = np.random.default_rng(3)
    cache = tmp_path / "cache"
    gt = {sequence_name(i): make_gt_sequence(rng, i, num_frames=5) for i in range(5)}
    write_sequences(cache / "synth_5x5" / "annotations" / "val", gt)
    modes = ("naive", "tube", "warp", "tube-online", "warp-online")
    runs = []
    for run, miss in enumerate((0.05, 0.3)):  # two runs of very different quality: run variance is large
        root = tmp_path / f"run{run}"
        for mode in modes:
            extra = 0.0 if mode == "naive" else 0.1
            write_sequences(root / mode, {n: make_predictions(rng, d, miss_prob=miss + extra) for n, d in gt.items()})
        runs.append(root)

    def run_script(*extra):
        out = tmp_path / f"ci{len(extra)}.json"
        done = subprocess.run([sys.executable, str(repo / "scripts" / "map_loss_ci.py"), "--cache-dir", str(cache),
                               "--sequences", "5", "--frames", "5", "--resamples", "200", "--json-out", str(out),
                               *extra], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(out.read_text()), done.stdout

    both, printed = run_script("--runs", *map(str, runs))
    assert both["run_variance"] is True and "two-level bootstrap over 2 runs" in printed
    assert set(both["loss"]["tube"]["per_seed"]) == {"0", "1"}
    single, printed = run_script("--runs", str(runs[0]))
    assert single["run_variance"] is False and "no run-to-run variance" in printed
    bad = subprocess.run([sys.executable, str(repo / "scripts" / "map_loss_ci.py"), "--cache-dir", str(cache),
                          "--sequences", "5", "--frames", "5", "--runs", str(tmp_path)], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "no prediction folder for naive" in bad.stderr
