"""Test helpers for comparing data records (dataclass ``==`` cannot compare numpy arrays) and writing fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tdmi.data.records import Frame, Person, Sequence


def _assert_optional_array(a: Optional[np.ndarray], b: Optional[np.ndarray], what: str) -> None:
    assert (a is None) == (b is None), f"{what}: {a} vs {b}"
    if a is not None:
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=0, atol=1e-4,
                                   err_msg=what)


def assert_people_equal(a: Person, b: Person, what: str = "person") -> None:
    np.testing.assert_array_equal(a.keypoints, b.keypoints, err_msg=f"{what}.keypoints")
    _assert_optional_array(a.bbox, b.bbox, f"{what}.bbox")
    _assert_optional_array(a.bbox_head, b.bbox_head, f"{what}.bbox_head")
    _assert_optional_array(a.joint_scores, b.joint_scores, f"{what}.joint_scores")
    assert (a.track_id, a.person_id, a.score) == (b.track_id, b.person_id, b.score), what


def assert_frames_equal(a: Frame, b: Frame, what: str = "frame") -> None:
    assert (a.file_name, a.frame_index, a.image_id, a.is_labeled, a.has_labeled_person, a.width, a.height) == (
        b.file_name, b.frame_index, b.image_id, b.is_labeled, b.has_labeled_person, b.width, b.height), what
    assert len(a.ignore_regions) == len(b.ignore_regions), f"{what}.ignore_regions"
    for k, (pa, pb) in enumerate(zip(a.ignore_regions, b.ignore_regions)):
        np.testing.assert_allclose(pa, pb, err_msg=f"{what}.ignore_regions[{k}]")
    assert len(a.people) == len(b.people), f"{what}.people: {len(a.people)} vs {len(b.people)}"
    for k, (pa, pb) in enumerate(zip(a.people, b.people)):
        assert_people_equal(pa, pb, f"{what}.people[{k}]")


def assert_sequences_equal(a: Sequence, b: Sequence, compare_name: bool = True) -> None:
    """Every field except ``source`` (where the records were read from)."""
    if compare_name:
        assert a.name == b.name
    assert (a.nframes, a.dataset, a.vid_id) == (b.nframes, b.dataset, b.vid_id), a.name
    assert len(a.frames) == len(b.frames), a.name
    for k, (fa, fb) in enumerate(zip(a.frames, b.frames)):
        assert_frames_equal(fa, fb, f"{a.name}.frames[{k}]")


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path
