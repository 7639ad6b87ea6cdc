"""scripts/synthtrack_joint_speed.py: articulated joint speed relative to the hip midpoint, per poseval group."""

from __future__ import annotations

import json

import numpy as np
import pytest

from script_helpers import load_script
from tdmi.data.posetrack import save_sequences
from tdmi.data.records import Frame, Person, Sequence
from tdmi.keypoints import POSETRACK17


def _person(shift_x: float, wrist_x: float, height: float = 100.0, hips: bool = True) -> Person:
    """Every joint labelled at x = 10 + shift_x, except the left wrist at ``wrist_x`` + shift_x."""
    keypoints = np.zeros((POSETRACK17.num_joints, 3), np.float32)
    keypoints[:, 0], keypoints[:, 1], keypoints[:, 2] = 10 + shift_x, 50, 1
    keypoints[POSETRACK17.index("left_wrist"), 0] = wrist_x + shift_x
    if not hips:
        keypoints[POSETRACK17.index("left_hip")] = 0
    return Person(keypoints=keypoints, bbox=np.array([0, 0, 40, height], np.float32), track_id=0)


def _sequence(people: list[Person]) -> Sequence:
    frames = [Frame(file_name=f"images/val/000001_bonn/{i:06d}.jpg", frame_index=i, image_id=20000010000 + i,
                    is_labeled=True, people=[p]) for i, p in enumerate(people)]
    return Sequence(name="000001_bonn", frames=frames, nframes=len(frames))


def test_a_wrist_moving_against_the_hips_has_speed_and_a_walking_body_has_none():
    speeds = load_script("synthtrack_joint_speed").joint_speeds
    # the whole body walks 7 px per frame (no articulated motion); the left wrist also swings 4 px per frame
    groups = speeds([_sequence([_person(7 * i, 10 + 4 * i) for i in range(3)])])
    assert groups["Wrist"]["speed"] == pytest.approx((4.0 + 0.0) / 2)  # % of a 100 px box: left 4, right 0
    assert groups["Wrist"]["pairs"] == 4  # 2 frame pairs x 2 wrists
    assert groups["Ankle"]["speed"] == 0.0 and groups["Head"]["pairs"] == 6


def test_pairs_without_both_hips_or_a_box_are_skipped():
    speeds = load_script("synthtrack_joint_speed").joint_speeds
    groups = speeds([_sequence([_person(0, 10), _person(0, 20, hips=False), _person(0, 30, height=0.0)])])
    assert all(g["pairs"] == 0 for g in groups.values()) and np.isnan(groups["Wrist"]["speed"])


def test_the_script_reads_a_folder_and_refuses_a_missing_one(tmp_path, capsys):
    script = load_script("synthtrack_joint_speed")
    save_sequences([_sequence([_person(0, 10 + 2 * i) for i in range(2)])], tmp_path / "gt")
    assert script.main(["--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "speed.json")]) == 0
    assert json.loads((tmp_path / "speed.json").read_text())["groups"]["Wrist"]["speed"] == pytest.approx(1.0)
    with pytest.raises(SystemExit):
        script.main(["--gt", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.json")])
    assert "not a folder" in capsys.readouterr().err
