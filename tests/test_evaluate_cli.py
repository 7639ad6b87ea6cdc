"""``tdmi evaluate``: the printed table, the JSON file and one-line errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from posetrack_gen import gt_as_predictions, make_gt_sequence, make_predictions, write_sequences
from tdmi.cli import main
from tdmi.evaluation.posetrack_ap import TABLE_KEYS, evaluate_dirs


def make_dirs(tmp_path: Path, perfect: bool = False) -> tuple[Path, Path]:
    rng = np.random.default_rng(11)
    gts = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=6) for i in range(1, 3)}
    preds = {n: gt_as_predictions(g) if perfect else make_predictions(rng, g) for n, g in gts.items()}
    return write_sequences(tmp_path / "gt", gts), write_sequences(tmp_path / "pred", preds)


def test_evaluate_prints_table_and_writes_json(tmp_path: Path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path)
    out = tmp_path / "out" / "metrics.json"
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[1].split()
    assert header == list(TABLE_KEYS)
    data = json.loads(out.read_text())
    assert [k for k in data if k in TABLE_KEYS] == list(TABLE_KEYS)
    assert set(data) == set(TABLE_KEYS) | {"per_joint", "meta"}
    expected = evaluate_dirs(gt_dir, pred_dir)
    assert data["Mean"] == expected.table["Mean"]  # full precision in the file
    assert f"{expected.table['Mean']:.1f}" in printed.splitlines()[2]
    assert data["meta"]["protocol"] == "poseval" and data["meta"]["sequences"] == 2
    assert data["meta"]["frames_evaluated"] == expected.num_frames
    assert len(data["per_joint"]["ap"]) == 15
    assert printed.strip().splitlines()[-1].startswith("evaluate: Mean AP")


def test_evaluate_pt21_protocol(tmp_path: Path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path, perfect=True)
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--protocol", "pt21"]) == 0
    printed = capsys.readouterr().out
    assert "pt21 protocol" in printed and "100.0" in printed


def test_evaluate_errors_name_the_file(tmp_path: Path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path)
    victim = sorted(pred_dir.glob("*.json"))[0]
    data = json.loads(victim.read_text())
    data["images"] = data["images"][:-1]
    victim.write_text(json.dumps(data))
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it only the progress bar
    assert last.startswith("tdmi evaluate: error: ") and str(victim) in last
    assert "# prediction frames 5 <> # GT frames 6" in last
    victim.unlink()
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    assert str(victim) in capsys.readouterr().err
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--allow-missing"]) == 0
    assert victim.stem in capsys.readouterr().out


def test_malformed_fields_are_one_line_errors_naming_file_and_field(tmp_path: Path, capsys):
    gt_dir, pred_dir = make_dirs(tmp_path)
    victim = sorted(pred_dir.glob("*.json"))[0]
    pristine = victim.read_text()
    gt_pristine = (gt_dir / victim.name).read_text()
    for field, value in (("scores", ["x"] * 17), ("scores", 0.5), ("bbox_head", ["a", 1, 2, 3])):
        data = json.loads(pristine)
        target = data["annotations"][0]
        target[field] = value
        if field == "bbox_head":  # head boxes are read from the ground truth
            gt_file = gt_dir / victim.name
            gt = json.loads(gt_file.read_text())
            gt["annotations"][0]["bbox_head"] = value
            gt_file.write_text(json.dumps(gt))
            victim.write_text(pristine)
        else:
            victim.write_text(json.dumps(data))
        assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("tdmi evaluate: error: ") and f"{field} must be a list of numbers" in last
    (gt_dir / victim.name).write_text(gt_pristine)  # files are read and checked one sequence at a time
    (tmp_path / "gt" / "folder.json").mkdir()
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    assert "folder.json: cannot be read" in capsys.readouterr().err
