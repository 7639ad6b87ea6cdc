"""SynthTrack version 2: per-entity random streams, counterfactual variants, per-person difficulty fields (issue 23)."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from tdmi.data.synthetic import SynthOptions, generate_counterfactual, render_clip
from tdmi.data.synthetic import drawing
from tdmi.data.synthetic.frames import _num_annotatable
from tdmi.data.synthetic.scene import _build_scene

SIZE = (192, 144)
FRAMES = 12


def _digest(version_kwargs: dict, **options) -> str:
    h = hashlib.sha256()
    for sequence in range(3):
        clip = render_clip(frames=6, seed=11, size=(160, 128), options=SynthOptions(**options, **version_kwargs),
                           sequence_index=sequence)
        for array in (clip.images, clip.keypoints, clip.visible.astype(np.uint8), clip.head_boxes):
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def test_version_1_renders_the_frames_of_the_sets_scored_before_version_2():
    """Digests of images, labels and visibility rendered by the single-stream generator of commit 7f01b2f: the
    shipped demo models' validation numbers are reproducible with ``SynthOptions(version=1)``."""
    everything = dict(blur_probability=1, occluder_probability=1, shake_probability=1, distractor_probability=1,
                      crowd_probability=1)
    assert _digest({"version": 1}) == "f4776c3ce35bdc4b"
    assert _digest({"version": 1}, **everything) == "0da134a095e4b538"
    assert _digest({}) != "f4776c3ce35bdc4b"  # version 2 draws from other streams


def _variants(sequence: int = 0, seed: int = 21):
    return {v: render_clip(FRAMES, seed, SIZE, sequence_index=sequence, variant=v)
            for v in ("clean", "distractor", "background")}


def _distractor_reach(seed: int, sequence: int, frame: int) -> np.ndarray:
    """Pixels the distractor can touch on ``frame``: its silhouette's box over the exposure (where it is hidden, the
    edges of whoever is in front blend with it instead of the background), its shadow, and an anti-aliasing margin
    (bool ``[H, W]``)."""
    scene = _build_scene(seed, sequence, FRAMES, SIZE, SynthOptions(), "distractor")
    distractor = next(p for p in scene.people if not p.annotated)
    reach = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    half = max(scene.exposure, 0.1) / 2
    for t in np.linspace(frame - half, frame + half, 9):
        _, _, poses = drawing._render(scene, float(t), with_ids=False)
        x, y, w, h = poses[scene.people.index(distractor)].extent
        cv2.rectangle(reach, (int(x) - 1, int(y) - 1), (int(x + w) + 2, int(y + h) + 2), 1, -1)
        gx, gy, half_width = poses[scene.people.index(distractor)].ground  # its shadow (drawing._draw_shadow)
        hh = max(1.0, half_width * 0.18)
        cv2.rectangle(reach, (int(gx - half_width) - 3, int(gy - hh) - 3), (int(gx + half_width) + 4,
                                                                              int(gy + hh) + 4), 1, -1)
    return cv2.dilate(reach, np.ones((9, 9), np.uint8)).astype(bool)


@pytest.mark.parametrize("sequence", [0, 1, 2])
def test_a_distractor_changes_no_pixel_outside_its_reach(sequence):
    clips = _variants(sequence)
    moved = 0
    for f in range(FRAMES):
        reach = _distractor_reach(21, sequence, f)
        differs = np.abs(clips["clean"].images[f].astype(int) - clips["distractor"].images[f]).max(axis=-1) > 0
        assert not (differs & ~reach).any(), f"frame {f}: {int((differs & ~reach).sum())} pixels changed outside"
        moved += int(differs.sum())
    assert moved > 0  # the distractor is really there


@pytest.mark.parametrize("sequence", [0, 1, 2])
def test_a_moving_background_leaves_the_key_person_as_it_was(sequence):
    from tdmi.data.synthetic.options import _SHAKE_MARGIN as m

    clips = _variants(sequence)
    scene = _build_scene(21, sequence, FRAMES, SIZE, SynthOptions(), "clean")
    person_pixels = person_differing = background_changed = 0
    for f in range(FRAMES):
        if clips["clean"].tags[f]["blur_px"] >= 1.5:
            continue  # a blurred frame averages the person with the background around it
        image, idmap, _ = drawing._render(scene, float(f), with_ids=True)
        still = scene.background[m:m + SIZE[1], m:m + SIZE[0]]
        covered = (np.abs(image.astype(int) - still).max(axis=-1) > 0) & (idmap == scene.people[0].entity_id)
        person = cv2.erode(covered.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        difference = np.abs(clips["clean"].images[f].astype(int) - clips["background"].images[f]).max(axis=-1)
        # anti-aliased part edges blend with the background through sub-pixel gaps: a few pixels, a few levels
        assert difference[person].max(initial=0) <= 8
        person_pixels += int(person.sum())
        person_differing += int((difference[person] > 0).sum())
        background_changed += int((difference[~covered] > 8).sum())
    assert person_pixels > 0 and person_differing <= 0.01 * person_pixels
    assert background_changed > 0


def test_variants_share_the_key_persons_motion_and_are_deterministic():
    clips = _variants(1)
    for v in ("distractor", "background"):
        np.testing.assert_array_equal(clips[v].positions, clips["clean"].positions)
        assert clips[v].track_ids == clips["clean"].track_ids == [0]
    again = render_clip(FRAMES, 21, SIZE, sequence_index=1, variant="distractor")
    np.testing.assert_array_equal(again.images, clips["distractor"].images)


def test_toggling_one_entity_leaves_the_others_in_version_2():
    """The distractor, crowd and occluders draw from their own streams: switching the crowd on does not move the
    people (in version 1 it reshuffled everything drawn after it)."""
    base = dict(blur_probability=0, occluder_probability=0, shake_probability=0, distractor_probability=0)
    without = _build_scene(5, 0, FRAMES, SIZE, SynthOptions(**base, crowd_probability=0))
    with_crowd = _build_scene(5, 0, FRAMES, SIZE, SynthOptions(**base, crowd_probability=1))
    n = _num_annotatable(without)
    assert n == _num_annotatable(with_crowd) and len(with_crowd.people) > n
    for a, b in zip(without.people[:n], with_crowd.people[:n]):
        np.testing.assert_array_equal(a.root_x, b.root_x)
        assert a.colours == b.colours
    np.testing.assert_array_equal(without.background, with_crowd.background)


def test_counterfactual_sets_on_disk_share_labels_and_record_per_person_difficulty(tmp_path):
    generate_counterfactual(tmp_path, sequences=2, frames=FRAMES, seed=21, size=SIZE, progress=False)
    docs = {v: [json.loads((tmp_path / "annotations" / f"cf{v}" / f"00000{s}_bonn_cf{v}.json").read_text())
                for s in (1, 2)] for v in ("clean", "distractor", "background")}
    crowded = {}
    for v, files in docs.items():
        for doc, clean in zip(files, docs["clean"]):
            assert [a["keypoints"] for a in doc["annotations"]] == [a["keypoints"] for a in clean["annotations"]]
            for ann in doc["annotations"]:
                fields = ann["synthtrack"]
                assert set(fields) >= {"visible", "action", "blur_px", "hidden_joints", "speed", "distractor_in_crop"}
                assert fields["blur_px"] >= 0 and fields["speed"] >= 0 and 0 <= fields["hidden_joints"] <= 15
        crowded[v] = sum(a["synthtrack"]["distractor_in_crop"] for doc in files for a in doc["annotations"])
    assert crowded["clean"] == crowded["background"] == 0
    assert crowded["distractor"] > 0
    record = json.loads((tmp_path / "synthtrack_cfdistractor.json").read_text())
    assert record["variant"] == "distractor" and record["version"] == 2


def test_hidden_joints_count_the_persons_own_covered_joints():
    clip = render_clip(FRAMES, 3, SIZE, options=SynthOptions(occluder_probability=1, distractor_probability=1))
    scene = _build_scene(3, 0, FRAMES, SIZE, SynthOptions(occluder_probability=1, distractor_probability=1))
    assert _num_annotatable(scene) == clip.keypoints.shape[1]


def test_a_variant_needs_version_2():
    with pytest.raises(ValueError, match="version >= 2"):
        _build_scene(0, 0, FRAMES, SIZE, SynthOptions(version=1), "clean")
    with pytest.raises(ValueError, match="variant 'blurred'"):
        _build_scene(0, 0, FRAMES, SIZE, SynthOptions(), "blurred")


def test_cli_writes_the_counterfactual_sets_and_the_older_generator(tmp_path, capsys):
    from tdmi.cli import main

    assert main(["synth", "--out", str(tmp_path / "cf"), "--counterfactual", "--sequences", "1", "--frames", "6",
                 "--size", "160", "128"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("synth: wrote 1 sequences") for line in lines)
    assert {p.name for p in (tmp_path / "cf" / "annotations").iterdir()} == {"cfclean", "cfdistractor",
                                                                           "cfbackground"}
    assert main(["synth", "--out", str(tmp_path / "v1"), "--sequences", "1", "--frames", "3", "--size", "160", "128",
                 "--generator-version", "1"]) == 0
    record = json.loads((tmp_path / "v1" / "synthtrack_val.json").read_text())
    assert record["version"] == 1 and record["options"]["version"] == 1
    assert main(["synth", "--out", str(tmp_path / "x"), "--counterfactual", "--generator-version", "1"]) == 2
    assert "--counterfactual needs SynthTrack version 2" in capsys.readouterr().err
