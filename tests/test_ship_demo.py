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
    assert ship.choose_seed({3: 50.0}) == 3
    with pytest.raises(ValueError):
        ship.choose_seed({})


def bench(tmp_path: Path, seeds: list[int], with_runs: bool = True) -> tuple[Path, Path]:
    work, results = tmp_path / "work", tmp_path / "results"
    for split in ("dev", "val"):
        (work / "data" / "annotations" / split).mkdir(parents=True)
    for seed in seeds:
        (results / "tdmi").mkdir(parents=True, exist_ok=True)
        (results / "tdmi" / f"seed{seed}.json").write_text("{}")
        if with_runs:
            for arm in ("tdmi", "baseline"):
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
