"""scripts/ship_benchmark_demo.py: the shipping rule, and its refusals before any scoring or packaging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_helpers import load_script

@pytest.fixture(scope="module")
def ship():
    return load_script("ship_benchmark_demo")


def test_the_best_dev_seed_is_chosen_and_near_ties_go_to_the_lower_seed(ship):
    assert ship.choose_seed({0: 57.1, 1: 58.4, 2: 58.0}) == 1
    assert ship.choose_seed({0: 58.36, 1: 58.4, 2: 58.0}) == 0  # 0.04 below the best: a tie
    assert ship.choose_seed({0: 50.0, 1: 50.05}) == 1  # exactly 0.05 is not a tie, whatever the float rounding
    assert ship.choose_seed({3: 50.0}) == 3
    with pytest.raises(ValueError):
        ship.choose_seed({})


def bench(tmp_path: Path, seeds: list[int], with_runs: bool = True,
          baselines: tuple[int, ...] = (0, 1, 2, 3, 4, 5)) -> tuple[Path, Path]:
    work, results = tmp_path / "work", tmp_path / "results"
    for split in ("dev", "val"):
        (work / "data" / "annotations" / split).mkdir(parents=True)
    for seed in seeds:
        (results / "tdmi").mkdir(parents=True, exist_ok=True)
        (results / "tdmi" / f"seed{seed}.json").write_text("{}")
        if with_runs:
            for arm in ("tdmi", "baseline") if seed in baselines else ("tdmi",):
                (work / arm / f"seed_{seed}").mkdir(parents=True)
                (work / arm / f"seed_{seed}" / "last.safetensors").write_bytes(b"")
    return work, results


def refusal(ship, capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        ship.main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_it_refuses_before_any_work_until_every_seed_is_in(ship, tmp_path, capsys, monkeypatch):
    work, results = bench(tmp_path, [0, 1])
    monkeypatch.setattr(ship, "tdmi_test", lambda *a: pytest.fail("scored despite the refusal"))
    line = refusal(ship, capsys, ["--work", str(work), "--results", str(results)])
    assert "only TDMI seeds [0, 1] of [0, 1, 2, 3, 4, 5] are finished" in line and "--partial" in line
    assert not (results / "demo_choice.json").exists()


def test_it_names_a_missing_data_split_and_a_missing_run(ship, tmp_path, capsys):
    work, results = bench(tmp_path, [0], with_runs=False)
    line = refusal(ship, capsys, ["--work", str(work), "--results", str(results), "--partial"])
    assert "no last.safetensors for seed(s) [0]" in line
    (work / "data" / "annotations" / "dev").rmdir()
    line = refusal(ship, capsys, ["--work", str(work), "--results", str(results), "--partial"])
    assert str(work / "data" / "annotations" / "dev") in line and "dev annotations not found" in line


def test_dev_scores_are_kept_and_the_choice_recorded(ship, tmp_path, monkeypatch):
    work, results = bench(tmp_path, [0, 1, 2])
    means = {0: 55.0, 1: 57.5, 2: 57.0}
    calls = []

    def fake_test(weights, data, annotations, out):
        seed = int(Path(weights).parent.name.split("_")[1])
        calls.append((seed, annotations))
        return {k: means[seed] for k in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")}

    monkeypatch.setattr(ship, "tdmi_test", fake_test)
    argv = ["--work", str(work), "--results", str(results), "--dev-only"]
    assert ship.main(argv) == 0
    choice = json.loads((results / "demo_choice.json").read_text())
    assert choice["chosen"] == 1 and choice["seeds_compared"] == [0, 1, 2]
    assert calls == [(0, "annotations/dev"), (1, "annotations/dev"), (2, "annotations/dev")]
    assert ship.main(argv) == 0 and len(calls) == 3  # the committed dev tables are reused, not rescored


def fake_scores(means: dict[int, float], calls: list):
    def fake_test(weights, data, annotations, out):
        seed = int(Path(weights).parent.name.split("_")[1]) if "seed_" in str(weights) else -1
        calls.append((Path(weights).name if seed < 0 else seed, annotations))
        value = means.get(seed, 40.0)
        return {k: value for k in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")}
    return fake_test


def test_a_winning_seed_without_a_baseline_run_stops_before_packaging(ship, tmp_path, monkeypatch):
    """The benchmark trains baselines for seeds 0-2 only: seed 4 best on dev must be said, with nothing shipped."""
    work, results = bench(tmp_path, [0, 1, 2, 3, 4, 5], baselines=(0, 1, 2))
    weights = tmp_path / "weights"
    weights.mkdir()
    calls: list = []
    monkeypatch.setattr(ship, "tdmi_test", fake_scores({4: 60.0}, calls))
    monkeypatch.setattr(ship, "package", lambda *a, **k: pytest.fail("packaged without the baseline"))
    with pytest.raises(SystemExit, match="baseline/seed_4/last.safetensors: the chosen seed's baseline run is missing"):
        ship.main(["--work", str(work), "--results", str(results), "--weights-dir", str(weights)])
    assert not any(weights.iterdir())


def test_the_pair_lands_together_or_not_at_all(ship, tmp_path, monkeypatch):
    work, results = bench(tmp_path, [0, 1])
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "tdmi_demo.safetensors").write_text("old")
    calls: list = []
    monkeypatch.setattr(ship, "tdmi_test", fake_scores({0: 55.0, 1: 57.0}, calls))
    packaged: list = []

    def fake_package(checkpoint, out, note, results_file=None):
        packaged.append((Path(checkpoint).parent.parent.name, Path(out).name, results_file is not None))
        if results_file is not None and "hrnet_baseline" in Path(out).name and fail:
            raise SystemExit("packaging failed")
        Path(out).write_text(f"new {checkpoint}")
        Path(out).with_suffix(".json").write_text("{}")

    monkeypatch.setattr(ship, "package", fake_package)
    argv = ["--work", str(work), "--results", str(results), "--weights-dir", str(weights), "--partial"]
    fail = True
    with pytest.raises(SystemExit, match="packaging failed"):
        ship.main(argv)
    assert sorted(p.name for p in weights.iterdir()) == ["tdmi_demo.safetensors"]  # untouched, no staging left
    assert (weights / "tdmi_demo.safetensors").read_text() == "old"
    fail = False
    packaged.clear()
    assert ship.main(argv) == 0
    assert sorted(p.name for p in weights.iterdir()) == ["hrnet_baseline_demo.json", "hrnet_baseline_demo.safetensors",
                                                         "tdmi_demo.json", "tdmi_demo.safetensors"]
    assert "seed_1" in (weights / "tdmi_demo.safetensors").read_text()  # the best on dev
    assert "baseline/seed_1" in (weights / "hrnet_baseline_demo.safetensors").read_text()
    # each packaged once rounded (to be scored on val), then with its val table
    assert [p for p in packaged if p[2]] == [("tdmi", "tdmi_demo.safetensors", True),
                                            ("baseline", "hrnet_baseline_demo.safetensors", True)]
    assert ("tdmi_demo.safetensors", "annotations/val") in calls
