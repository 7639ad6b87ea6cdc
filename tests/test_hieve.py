"""HiEve readers, joint maps and the submission zip (tdmi.data.hieve), on tiny fixtures written here."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tdmi.data.hieve import (
    HIEVE_JOINT_TAGS,
    SUBMISSION_FORMAT,
    hieve14_to_posetrack17,
    load_hieve,
    load_hieve_mot,
    posetrack17_to_hieve14,
    read_hieve_submission,
    write_hieve_submission,
)
from tdmi.data.posetrack import FLAG_LABELED, FLAG_OCCLUDED
from tdmi.errors import DataFormatError
from tdmi.keypoints import HIEVE14, POSETRACK17


def _object_xml(name: str, box: tuple[int, int, int, int], joints: dict[str, str]) -> str:
    joint_xml = "".join(f"<{tag}>{value}</{tag}>" for tag, value in joints.items())
    xmin, ymin, xmax, ymax = box
    return (f"<object><name>{name}</name><action>standing-alone</action><pose>unspecified</pose>"
            f"<truncated>0</truncated><difficult>0</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax>{joint_xml}</bndbox></object>")


def _frame_xml(frame: int, objects: list[str]) -> str:
    return (f"<annotation><folder>hm_in_fighting1</folder><filename>{frame}.jpg</filename>"
            f"<path>D:\\hm_in_fighting1\\{frame}.jpg</path><source><database>Unknown</database></source>"
            f"<size><width>1920</width><height>1080</height><depth>3</depth></size><segmented>0</segmented>"
            f"{''.join(objects)}</annotation>")


def _all_joints(x0: int) -> dict[str, str]:
    """All 14 tags, joint i at (x0 + i, 100 + i); flags: Nose visible, Chest invisible, Left-ankle not annotated."""
    joints = {tag: f"{x0 + i},{100 + i},0" for i, tag in enumerate(HIEVE_JOINT_TAGS)}
    joints["Chest"] = f"{x0 + 1},101,1"
    joints["Left-ankle"] = "0,0,-1"
    return joints


@pytest.fixture
def hieve_tree(tmp_path: Path) -> Path:
    seq = tmp_path / "hieve" / "7"
    seq.mkdir(parents=True)
    (seq / "000000.xml").write_text(_frame_xml(0, [_object_xml("P-1", (10, 20, 110, 320), _all_joints(10)),
                                                   _object_xml("P-12", (500, 20, 600, 320), {"Nose": "550,40,0"})]))
    (seq / "000001.xml").write_text(_frame_xml(1, [_object_xml("P-1", (12, 20, 112, 320), _all_joints(12))]))
    (seq / "000002.xml").write_text(_frame_xml(2, []))
    return tmp_path / "hieve"


def test_xml_sequence_in_posetrack_slots(hieve_tree):
    [sequence] = load_hieve(hieve_tree)
    assert (sequence.name, sequence.dataset, sequence.nframes) == ("7", "hieve", 3)
    assert [f.frame_index for f in sequence.frames] == [0, 1, 2]
    first = sequence.frames[0]
    assert first.file_name == "7/0.jpg" and (first.width, first.height) == (1920, 1080) and first.is_labeled
    assert sequence.frames[2].people == [] and not sequence.frames[2].has_labeled_person
    person, other = first.people
    assert (person.track_id, other.track_id) == (1, 12)
    np.testing.assert_array_equal(person.bbox, [10, 20, 100, 300])
    for i, tag in enumerate(HIEVE_JOINT_TAGS):
        slot = POSETRACK17.index({"chest": "head_bottom"}.get(HIEVE14.names[i], HIEVE14.names[i]))
        if tag == "Left-ankle":
            np.testing.assert_array_equal(person.keypoints[slot], [0, 0, 0])
        else:
            flag = FLAG_OCCLUDED if tag == "Chest" else FLAG_LABELED
            np.testing.assert_array_equal(person.keypoints[slot], [10 + i, 100 + i, flag], err_msg=tag)
    assert person.keypoints[[POSETRACK17.index("head_top"), 3, 4], 2].sum() == 0
    assert person.num_labeled == 13 and other.num_labeled == 1


def test_joint_tags_match_loosely(tmp_path):
    seq = tmp_path / "s"
    seq.mkdir()
    (seq / "000000.xml").write_text(_frame_xml(0, [_object_xml("P-3", (0, 0, 10, 10), {
        "R-shoulder": "5,6,0", "RightElbow": "7,8,0", "left_wrist": "1,2,1"})]))
    [person] = load_hieve(seq)[0].frames[0].people
    assert person.keypoints[POSETRACK17.index("right_shoulder")].tolist() == [5, 6, FLAG_LABELED]
    assert person.keypoints[POSETRACK17.index("right_elbow")].tolist() == [7, 8, FLAG_LABELED]
    assert person.keypoints[POSETRACK17.index("left_wrist")].tolist() == [1, 2, FLAG_OCCLUDED]


def test_joint_maps_invert_on_hieve_joints():
    rng = np.random.default_rng(0)
    joints = rng.uniform(1, 100, size=(4, 14, 3)).astype(np.float32)
    np.testing.assert_array_equal(posetrack17_to_hieve14(hieve14_to_posetrack17(joints)), joints)


def test_mid_shoulder_chest():
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[POSETRACK17.index("left_shoulder")] = (10, 20, 0.8)
    keypoints[POSETRACK17.index("right_shoulder")] = (30, 40, 0.6)
    keypoints[POSETRACK17.index("head_bottom")] = (99, 99, 0.9)
    chest = HIEVE14.index("chest")
    assert posetrack17_to_hieve14(keypoints)[chest].tolist() == pytest.approx([99, 99, 0.9])
    assert posetrack17_to_hieve14(keypoints, chest="mid_shoulder")[chest].tolist() == pytest.approx([20, 30, 0.6])
    keypoints[POSETRACK17.index("right_shoulder")] = 0
    assert posetrack17_to_hieve14(keypoints, chest="mid_shoulder")[chest].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="mid_shoulder"):
        posetrack17_to_hieve14(keypoints, chest="neck")


def test_mot_txt(tmp_path):
    path = tmp_path / "5.txt"
    path.write_text("1,3,10,20,30,40,1,-1,-1,-1\n1,4,50,60,70,80,0,-1,-1,-1\n\n3,3,11,21,30,40,1,-1,-1,-1\n")
    sequence = load_hieve_mot(path)
    assert sequence.name == "5" and sequence.nframes == 3
    assert [(f.frame_index, [p.track_id for p in f.people]) for f in sequence.frames] == [(1, [3]), (3, [3])]
    np.testing.assert_array_equal(sequence.frames[0].people[0].bbox, [10, 20, 30, 40])
    assert [len(f.people) for f in load_hieve_mot(path, keep_ignored=True).frames] == [2, 1]
    assert [s.name for s in load_hieve(tmp_path)] == ["5"]


def test_submission_zip_layout_and_content(hieve_tree, tmp_path):
    [sequence] = load_hieve(hieve_tree)
    person = sequence.frames[0].people[0]
    person.joint_scores = np.linspace(0.1, 0.9, 17).astype(np.float32)
    zip_path = write_hieve_submission(tmp_path / "out" / "submission.zip", {"20": sequence, "21": sequence})
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["20.json", "21.json"]  # archive root, named after the sequences
    results = read_hieve_submission(zip_path)
    document = results["20"]
    assert document["format"] == SUBMISSION_FORMAT and document["joints"] == list(HIEVE_JOINT_TAGS)
    assert [f["frame"] for f in document["frames"]] == [0, 1, 2]
    written = np.array(document["frames"][0]["people"][0]["keypoints"])
    expected = posetrack17_to_hieve14(np.column_stack([person.keypoints[:, :2], person.joint_scores]))
    np.testing.assert_allclose(written, expected, rtol=1e-6)
    assert document["frames"][0]["people"][0]["track_id"] == 1
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_submission_rejects_bad_names(hieve_tree, tmp_path):
    [sequence] = load_hieve(hieve_tree)
    with pytest.raises(ValueError, match="archive root"):
        write_hieve_submission(tmp_path / "s.zip", {"a/b": sequence})
    with pytest.raises(ValueError, match="no sequences"):
        write_hieve_submission(tmp_path / "s.zip", {})
    assert not (tmp_path / "s.zip").exists()


@pytest.mark.parametrize("content, message", [
    (_frame_xml(0, [_object_xml("P-1", (0, 0, 1, 1), {"Nose": "1,2"})]), r"object\[0\]\.Nose is '1,2', expected"),
    (_frame_xml(0, [_object_xml("P-1", (0, 0, 1, 1), {"Nose": "1,2,3"})]), r"Nose has flag 3, expected 0, 1 or -1"),
    (_frame_xml(0, ["<object><name>P-1</name></object>"]), r"object\[0\] has no bndbox"),
    (_frame_xml(0, [_object_xml("P-1", (0, 0, "x", 1), {})]), r"object\[0\]\.bndbox\.xmax is 'x'"),
    ("<annotation><object>", r"not valid XML"),
    ("<video/>", r"root element is <video>"),
])
def test_malformed_xml(tmp_path, content, message):
    (tmp_path / "000000.xml").write_text(content)
    with pytest.raises(DataFormatError, match=message) as error:
        load_hieve(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / '000000.xml'}: ")


def test_malformed_mot_and_paths(tmp_path):
    (tmp_path / "1.txt").write_text("1,2,3\n")
    with pytest.raises(DataFormatError, match=r"1\.txt:1: 3 values"):
        load_hieve(tmp_path / "1.txt")
    (tmp_path / "1.txt").write_text("1,2,3,4,5,six,1,-1,-1,-1\n")
    with pytest.raises(DataFormatError, match=r"1\.txt:1: 'six' is not a number"):
        load_hieve(tmp_path / "1.txt")
    (tmp_path / "1.txt").unlink()
    with pytest.raises(DataFormatError, match="no HiEve annotations"):
        load_hieve(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_hieve(tmp_path / "missing")
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(DataFormatError, match="not a zip file"):
        read_hieve_submission(tmp_path / "bad.zip")
