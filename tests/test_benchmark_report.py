"""scripts/synthtrack_benchmark_report.py: the benchmark's report is computed from committed per-run files alone."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from posetrack_gen import make_gt_sequence, make_predictions, sequence_name, write_sequences
from script_helpers import load_script
from tdmi.evaluation.bootstrap import encode_stats, mean_ap, sequence_stats



def _script():
    return load_script("synthtrack_benchmark_report")


GROUPS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
SPEEDS = (0.1, 0.3, 0.7, 1.4, 0.2, 0.9, 2.0)  # % height per frame, as on the real val


def joint_aps(arm: str, seed: int) -> dict[str, float]:
    """Per-group APs: tdmi gains over static grow with the group's speed (and by seed 1 one more point each)."""
    return {g: 50.0 + (10 * v + seed if arm == "tdmi" else 0.0) for g, v in zip(GROUPS, SPEEDS)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Fake result files: tdmi predicts better than static on val and loses nothing to a distractor."""
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    gt = {sequence_name(i): make_gt_sequence(rng, i, num_frames=5) for i in range(6)}
    gt_dir = write_sequences(root / "gt", gt)

    def stats(miss: float, name: str):
        pred = {n: make_predictions(rng, d, miss_prob=miss) for n, d in gt.items()}
        return sequence_stats(gt_dir, write_sequences(root / name, pred))

    folder = root / "runs"
    for arm, val_miss, distracted_miss in (("tdmi", 0.05, None), ("static", 0.4, 0.8)):
        for seed in (0, 1):
            val, clean = stats(val_miss, f"{arm}{seed}v"), stats(val_miss, f"{arm}{seed}c")
            # tdmi ignores the distractor (the same predictions), static loses most of its joints to it
            distracted = clean if distracted_miss is None else stats(distracted_miss, f"{arm}{seed}d")
            # as in the real sets: each variant's sequences carry its split's name and come in their folder's order
            clean = [replace(s, name=f"{s.name}_cfclean") for s in clean]
            distracted = [replace(s, name=f"{s.name}_cfdistractor") for s in reversed(distracted)]
            if arm == "tdmi":  # supporting frames replaced by the key frame at test time: static's quality
                substituted = stats(0.4, f"{arm}{seed}s")
                extra = {"substitutions": {"key_frame": {"table": {"Mean": mean_ap(substituted)},
                                                         "stats": encode_stats(substituted)}}}
            else:
                extra = {}
            record = {"arm": arm, "seed": seed, "trainable_parameters": 1000, "macs_per_person": 2e9, **extra,
                      "train_cpu_seconds": 3600.0, "epochs_from_steps": 8.0,
                      "val": {"table": {"Mean": mean_ap(val), **joint_aps(arm, seed)}, "stats": encode_stats(val),
                              "subsets": {"blurred": {"Mean": 50.0}, "none": {"Mean": 70.0}}},
                      "counterfactual": {v: {"table": {"Mean": mean_ap(s)}, "stats": encode_stats(s)}
                                         for v, s in (("clean", clean), ("distractor", distracted))}}
            out = folder / arm / f"seed{seed}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record))
    return folder


def test_report_compares_paired_arms_and_waits_for_missing_ones(runs, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert _script().main(["--runs", str(runs), "--resamples", "200", "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| concat | (not run yet) |" in printed and "differences vs raw frames | tdmi - concat | (waiting" in printed
    report = json.loads(out.read_text())
    temporal = report["comparisons"]["tdmi - static"]
    assert temporal["value"] > 0 and temporal["ci95"][0] < temporal["value"] < temporal["ci95"][1]
    assert set(temporal["per_seed"]) == {"0", "1"} and all(v > 0 for v in temporal["per_seed"].values())
    assert report["arms"]["tdmi"]["seeds"] == [0, 1] and report["arms"]["static"]["train_cpu_hours"] == [1.0, 1.0]
    drop = report["drop_comparisons"]["distractor"]["tdmi - static"]
    assert drop["value"] < 0  # tdmi's drop is the smaller one
    assert "clean -> background: tdmi vs static | (waiting for runs)" in printed  # no background variant in these
    # the test-time substitution: tdmi's supporting frames replaced by its key frame lose what time gave
    assert "supporting frames from another sequence | (waiting for runs)" in printed
    substituted = report["substitutions"]["key_frame"]
    assert substituted["tdmi_minus_this"]["value"] > 0 and set(substituted["val_mean_ap"]) == {"0", "1"}


def test_report_reads_per_joint_gains_against_joint_speed(runs, tmp_path, capsys):
    out = tmp_path / "report.json"
    script = _script()
    assert script.main(["--runs", str(runs), "--resamples", "100", "--json-out", str(out)]) == 0
    assert "| tdmi - static | +1.5 |" in capsys.readouterr().out  # 10 * 0.1 + mean of seeds 0, 1
    assert json.loads(out.read_text())["per_joint"]["differences"]["tdmi - static"]["rank_correlation_with_speed"] \
        is None  # no speed file committed yet
    speed = {"groups": {g: {"speed": v, "pairs": 10} for g, v in zip(GROUPS, SPEEDS)}}
    (runs / "val_joint_speed.json").write_text(json.dumps(speed))
    try:
        assert script.main(["--runs", str(runs), "--resamples", "100", "--json-out", str(out)]) == 0
    finally:
        (runs / "val_joint_speed.json").unlink()
    printed = capsys.readouterr().out
    assert "| articulated speed (% height / frame) | 0.10 | 0.30 |" in printed
    row = json.loads(out.read_text())["per_joint"]["differences"]["tdmi - static"]
    assert row["seeds"] == [0, 1] and row["rank_correlation_with_speed"] == pytest.approx(1.0)
    assert row["difference"]["Ankle"] == pytest.approx(20.5) and "| tdmi - concat | (waiting for runs) |" in printed


def test_spearman_reads_ranks():
    spearman = _script().spearman
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, -5]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert spearman([1, float("nan"), 3], [1, 2, 3]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_report_refuses_a_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _script().main(["--runs", str(tmp_path / "nothing")])
    assert "no per-run result folder" in capsys.readouterr().err
