"""``tdmi prepare`` (tdmi.data.prepare) on small fake trees and on the real sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from records_helpers import write_json
from tdmi.cli import main
from tdmi.data.posetrack import load_sequences
from tdmi.data.prepare import LAYOUTS, prepare_dataset
from tdmi.errors import CommandError


def _pt18_sequence(root: Path, split: str, name: str, nframes: int, present: range | None = None) -> None:
    """A full-length PT18 annotation (every frame listed, frame 0 labelled) and the frame files in ``present``."""
    folder = f"images/{split}/{name}"
    images = [{"file_name": f"{folder}/{i:06d}.jpg", "id": 10**10 + i, "frame_id": 10**10 + i, "vid_id": name[:6],
               "nframes": nframes, "is_labeled": i == 0, "ignore_regions_x": [], "ignore_regions_y": []}
              for i in range(nframes)]
    keypoints = [0.0] * 51
    keypoints[:3] = [5, 5, 1]
    annotations = [{"image_id": 10**10, "bbox": [0, 0, 10, 10], "keypoints": keypoints, "track_id": 0}]
    write_json(root / "annotations" / split / f"{name}.json", {"images": images, "annotations": annotations})
    (root / folder).mkdir(parents=True, exist_ok=True)
    for i in present if present is not None else range(nframes):
        (root / folder / f"{i:06d}.jpg").write_bytes(b"jpg")


def test_complete_tree_is_usable(tmp_path, capsys):
    _pt18_sequence(tmp_path, "val", "000001_bonn_test", 4)
    _pt18_sequence(tmp_path, "val", "000002_mpii_test", 3)
    assert main(["prepare", "posetrack18", "--root", str(tmp_path), "--json-out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "val: 2 sequences (unknown version), 7 frame files expected, 0 missing" in out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("tdmi prepare posetrack18") and ": usable:" in summary
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["usable"] and report["problems"] == [] and report["splits"][0]["sequences"] == 2
    assert any("170 (v0.45), 74 (v0.2)" in w for w in report["warnings"])  # count warning, not a problem


def test_missing_frames_are_listed_as_ranges(tmp_path, capsys):
    _pt18_sequence(tmp_path, "val", "000001_bonn_test", 10, present=[0, 1, 5, 9])
    assert main(["prepare", "posetrack18", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "images/val/000001_bonn_test: 6 of 10 frame files missing (000002.jpg-000004.jpg, " \
           "000006.jpg-000008.jpg)" in out
    assert "NOT usable, 1 problem(s)" in out.strip().splitlines()[-1]


def test_version_is_named_when_the_count_matches(tmp_path, monkeypatch):
    monkeypatch.setitem(LAYOUTS["posetrack18"].known_counts, "val", {"v0.45": 3, "v0.2": 2})
    for k in range(2):
        _pt18_sequence(tmp_path, "val", f"00000{k}_bonn_test", 1)
    report = prepare_dataset("posetrack18", tmp_path)
    assert report.splits[0].version == "labels v0.2" and report.usable
    assert not any("known counts" in w for w in report.warnings)


def test_unreadable_annotation_is_a_problem_not_a_crash(tmp_path):
    _pt18_sequence(tmp_path, "val", "000001_bonn_test", 2)
    (tmp_path / "annotations" / "val" / "broken.json").write_text("{")
    report = prepare_dataset("posetrack18", tmp_path)
    assert not report.usable and report.splits[0].sequences == 1
    assert any("broken.json: not valid JSON" in p for p in report.problems)


def test_empty_root_and_bad_arguments(tmp_path):
    report = prepare_dataset("posetrack18", tmp_path)
    assert not report.usable and any("no readable sequences" in p for p in report.problems)
    with pytest.raises(CommandError, match="is not a folder"):
        prepare_dataset("posetrack18", tmp_path / "missing")
    assert main(["prepare", "posetrack18", "--root", str(tmp_path / "missing")]) == 2


def _pt17_mat(path: Path) -> None:
    import scipy.io

    point = np.zeros((1,), dtype=[("id", "O"), ("x", "O"), ("y", "O"), ("is_visible", "O")])
    point[0] = (13, 10.0, 20.0, 1)
    annopoints = np.zeros((1,), dtype=[("point", "O")])
    annopoints[0] = (point,)
    rect = np.zeros((1,), dtype=[(k, "O") for k in ("x1", "y1", "x2", "y2", "track_id", "annopoints")])
    rect[0] = (1.0, 2.0, 11.0, 12.0, 0, annopoints)
    frames = np.zeros((2,), dtype=[("image", "O"), ("annorect", "O")])
    for i in range(2):
        image = np.zeros((1,), dtype=[("name", "O")])
        image[0] = (f"images/bonn/000001_bonn/{i + 1:08d}.jpg",)
        frames[i] = (image, rect if i == 0 else np.zeros((0,), dtype=rect.dtype))
    scipy.io.savemat(str(path), {"annolist": frames})


def test_posetrack17_mat_is_converted_once_and_never_overwritten(tmp_path):
    folder = tmp_path / "annotations" / "val"
    folder.mkdir(parents=True)
    _pt17_mat(folder / "000001_bonn.mat")
    for i in (1, 2):
        (tmp_path / "images/bonn/000001_bonn").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"images/bonn/000001_bonn/{i:08d}.jpg").write_bytes(b"x")

    check_only = prepare_dataset("posetrack17", tmp_path, write=False)
    assert not (folder / "000001_bonn.json").exists() and check_only.converted == []

    report = prepare_dataset("posetrack17", tmp_path)
    target = folder / "000001_bonn.json"
    assert report.converted == [str(target)] and report.usable
    assert any("50 (PoseTrack17)" in w for w in report.warnings)
    [from_json] = load_sequences(target, dataset="posetrack17")
    [from_mat] = load_sequences(folder / "000001_bonn.mat")
    assert [f.file_name for f in from_json.frames] == [f.file_name for f in from_mat.frames]
    np.testing.assert_array_equal(from_json.frames[0].people[0].keypoints, from_mat.frames[0].people[0].keypoints)

    target.write_text(json.dumps({"annolist": []}))  # a user's own conversion must survive
    again = prepare_dataset("posetrack17", tmp_path)
    assert again.converted == [] and json.loads(target.read_text()) == {"annolist": []}
    assert any("left unchanged" in n for n in again.notes)


def test_posetrack21_layout(tmp_path):
    _pt18_sequence(tmp_path, "val", "000001_bonn_test", 2)
    (tmp_path / "annotations").rename(tmp_path / "posetrack_data")
    report = prepare_dataset("posetrack21", tmp_path)
    assert report.usable and [s.split for s in report.splits] == ["val"]
    assert prepare_dataset("posetrack18", tmp_path).usable is False  # PT18 layout expects annotations/


def test_hieve_tree(tmp_path, capsys):
    seq = tmp_path / "labels" / "train" / "track2" / "1"
    seq.mkdir(parents=True)
    (seq / "000000.xml").write_text("<annotation><filename>0.jpg</filename><object><name>P-1</name><bndbox>"
                                    "<xmin>0</xmin><ymin>0</ymin><xmax>5</xmax><ymax>9</ymax>"
                                    "<Nose>1,2,0</Nose></bndbox></object></annotation>")
    (tmp_path / "labels" / "train" / "1.txt").write_text("1,1,0,0,5,9,1,-1,-1,-1\n")
    (tmp_path / "README.txt").write_text("not a MOT file\n")
    assert main(["prepare", "hieve", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all-track xml: 1 sequences" in out and "track-1 txt: 1 sequences" in out
    (seq / "000001.xml").write_text("<annotation><object>")
    assert main(["prepare", "hieve", "--root", str(tmp_path)]) == 1
    assert "000001.xml: not valid XML" in capsys.readouterr().out


def test_real_sample_lists_missing_frames(posetrack18_sample, tmp_path, capsys):
    sequences = load_sequences(posetrack18_sample / "annotations" / "val")
    code = main(["prepare", "posetrack18", "--root", str(posetrack18_sample), "--json-out", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1 and not report["usable"]  # only frame 0 of each sequence ships with the sample
    checks = {c["name"]: c for c in report["splits"][0]["sequence_checks"]}
    for sequence in sequences:
        on_disk = sorted(p.name for p in (posetrack18_sample / "images/val" / sequence.name).glob("*.jpg"))
        check = checks[sequence.name]
        assert check["frames_on_disk"] == len(on_disk)
        assert check["missing_count"] == sequence.nframes - len(on_disk)
        assert f"{sequence.name}: {sequence.nframes - len(on_disk)} of {sequence.nframes} frame files missing" in out
    assert "3 sequences (unknown version)" in out
