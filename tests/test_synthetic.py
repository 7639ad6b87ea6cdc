"""SynthTrack (``tdmi.data.synthetic``): PoseTrack18 schema, labelling rules, determinism, difficulty, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from tdmi.cli import main
from tdmi.data import synthetic
from tdmi.data.synthetic import drawing, options, poses, scene as scene_model
from tdmi.data.synthetic import (SynthOptions, generate_synthtrack, image_id, labeled_frame_mask, pt18_bbox,
                                 render_clip)
from tdmi.errors import CommandError
from tdmi.keypoints import POSETRACK17

SIZE = (192, 144)
SEQUENCES = 6
FRAMES = 12

# Keys every PoseTrack18 per-sequence file has (docs/facts/posetrack-facts.md 2.1; mmpose's copies add
# width/height/mask_file).
REQUIRED_TOP = {"images", "annotations", "categories"}
REQUIRED_IMAGE = {"has_no_densepose", "is_labeled", "file_name", "nframes", "frame_id", "vid_id", "ignore_regions_y",
                  "ignore_regions_x", "id", "width", "height", "mask_file"}
REQUIRED_ANNOTATION = {"bbox_head", "keypoints", "track_id", "image_id", "bbox", "scores", "category_id", "id",
                       "iscrowd", "num_keypoints"}
EXTRA = {"synthtrack"}


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthtrack")
    generate_synthtrack(out, sequences=SEQUENCES, frames=FRAMES, seed=0, split="val", size=SIZE, progress=False)
    return out


def _docs(root: Path, split: str = "val") -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((root / "annotations" / split).glob("*.json"))}


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        generate_synthtrack(out, sequences=2, frames=5, seed=7, size=(160, 120), progress=False)
    files_a, files_b = _all_files(a), _all_files(b)
    assert files_a.keys() == files_b.keys()
    assert any(name.endswith(".jpg") for name in files_a)
    for name in files_a:
        assert files_a[name] == files_b[name], name


def test_different_seeds_give_different_people_and_backgrounds(tmp_path):
    generate_synthtrack(tmp_path / "s1", sequences=2, frames=3, seed=1, size=(160, 120), progress=False)
    generate_synthtrack(tmp_path / "s2", sequences=2, frames=3, seed=2, size=(160, 120), progress=False)
    for name in ("000001_bonn_val", "000002_bonn_val"):
        img1 = cv2.imread(str(tmp_path / "s1" / "images" / "val" / name / "000000.jpg")).astype(np.float32)
        img2 = cv2.imread(str(tmp_path / "s2" / "images" / "val" / name / "000000.jpg")).astype(np.float32)
        assert np.abs(img1 - img2).mean() > 10.0
        ann1 = (tmp_path / "s1" / "annotations" / "val" / f"{name}.json").read_bytes()
        ann2 = (tmp_path / "s2" / "annotations" / "val" / f"{name}.json").read_bytes()
        assert ann1 != ann2


def test_render_clip_is_what_the_files_hold(synth_set):
    clip = render_clip(frames=FRAMES, seed=0, size=SIZE, sequence_index=1)
    doc = _docs(synth_set)["000002_bonn_val"]
    assert clip.images.shape == (FRAMES, SIZE[1], SIZE[0], 3) and clip.images.dtype == np.uint8
    by_image = {}
    for ann in doc["annotations"]:
        by_image.setdefault(ann["image_id"], {})[ann["track_id"]] = ann
    for f in range(FRAMES):
        anns = by_image.get(image_id(1, f), {})
        for p, track in enumerate(clip.track_ids):
            if track in anns:
                np.testing.assert_array_equal(np.array(anns[track]["keypoints"]).reshape(17, 3), clip.keypoints[f, p])
    stored = cv2.imread(str(synth_set / "images" / "val" / "000002_bonn_val" / "000003.jpg")).astype(np.float32)
    assert np.abs(stored - clip.images[3]).mean() < 4.0  # the same frame up to JPEG loss


# ----------------------------------------------------------------------------------------------------- schema


def _check_required_keys(doc: dict) -> None:
    assert set(doc) == REQUIRED_TOP | EXTRA
    for image in doc["images"]:
        assert set(image) == REQUIRED_IMAGE | EXTRA
    assert doc["annotations"], "a sequence without people"
    for ann in doc["annotations"]:
        assert set(ann) == REQUIRED_ANNOTATION | EXTRA


def test_files_have_every_required_key(synth_set):
    docs = _docs(synth_set)
    assert len(docs) == SEQUENCES
    for doc in docs.values():
        _check_required_keys(doc)
        assert doc["categories"] == synthetic.categories()


def test_schema_equals_real_posetrack18_sample(synth_set, posetrack18_sample):
    real = json.loads((posetrack18_sample / "annotations" / "val" / "009473_mpii_test.json").read_text())
    ours = next(iter(_docs(synth_set).values()))
    assert set(ours) - EXTRA == set(real)
    assert set(ours["images"][0]) - EXTRA == set(real["images"][0])
    assert set(ours["annotations"][0]) - EXTRA == set(real["annotations"][0])
    assert ours["categories"] == real["categories"]
    # Same JSON types, key by key.
    for mine, theirs in ((ours["images"][0], real["images"][0]), (ours["annotations"][0], real["annotations"][0])):
        for key, value in theirs.items():
            assert type(mine[key]) is type(value), key


def test_ids_names_and_frame_list(synth_set):
    for name, doc in _docs(synth_set).items():
        s = int(name[:6])
        assert name == f"{s:06d}_bonn_val"
        images = doc["images"]
        assert len(images) == FRAMES
        for f, image in enumerate(images):
            assert image["nframes"] == len(images)
            assert image["file_name"] == f"images/val/{name}/{f:06d}.jpg"
            assert (synth_set / image["file_name"]).is_file()
            assert (synth_set / image["mask_file"]).is_file()
            assert image["id"] == image["frame_id"] == 2 * 10**10 + s * 10**4 + f
            assert image["vid_id"] == name[:6]
            assert (image["width"], image["height"]) == SIZE
        ids = [ann["id"] for ann in doc["annotations"]]
        assert len(set(ids)) == len(ids)
        for ann in doc["annotations"]:
            assert ann["id"] // 100 == ann["image_id"]
            assert ann["category_id"] == 1 and ann["iscrowd"] is False and ann["scores"] == []


def test_pt18_bbox_rule_holds_exactly(synth_set):
    count = 0
    for doc in _docs(synth_set).values():
        for ann in doc["annotations"]:
            kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
            xs, ys = kps[kps[:, 2] > 0, 0], kps[kps[:, 2] > 0, 1]
            w, h = xs.max() - xs.min(), ys.max() - ys.min()
            expected = [(xs.min() + xs.max()) / 2 - 0.65 * w, (ys.min() + ys.max()) / 2 - 0.65 * h, 1.3 * w, 1.3 * h]
            assert ann["bbox"] == expected
            count += 1
    assert count > 50


def test_pt18_bbox_matches_the_real_file(posetrack18_sample):
    real = json.loads((posetrack18_sample / "annotations" / "val" / "012834_mpii_test.json").read_text())
    for ann in real["annotations"]:
        kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        np.testing.assert_allclose(pt18_bbox(kps), ann["bbox"], atol=1e-3)


def test_keypoint_flags_and_positions(synth_set):
    w, h = SIZE
    ears = [POSETRACK17.index("left_ear"), POSETRACK17.index("right_ear")]
    for doc in _docs(synth_set).values():
        for ann in doc["annotations"]:
            kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
            assert set(np.unique(kps[:, 2])) <= {0.0, 1.0}
            assert (kps[ears] == 0).all()
            labelled = kps[:, 2] > 0
            assert ann["num_keypoints"] == labelled.sum() >= 2
            assert (kps[~labelled] == 0).all()
            assert (kps[labelled, 0] >= 0).all() and (kps[labelled, 0] <= w - 1).all()
            assert (kps[labelled, 1] >= 0).all() and (kps[labelled, 1] <= h - 1).all()
            # The head box holds the labelled head joints (PCKh normalises by it).
            hx, hy, hw, hh = ann["bbox_head"]
            for j in (POSETRACK17.index("nose"), POSETRACK17.index("head_top")):
                if labelled[j]:
                    assert hx - 1 <= kps[j, 0] <= hx + hw + 1 and hy - 1 <= kps[j, 1] <= hy + hh + 1


def test_labelled_frame_pattern(synth_set):
    mask = labeled_frame_mask(150)
    dense = np.flatnonzero(mask & (np.arange(150) % 4 != 0))
    assert mask[60:90].all() and mask.sum() == 30 + len([i for i in range(150) if i % 4 == 0 and not 60 <= i < 90])
    assert dense.min() >= 60 and dense.max() < 90
    assert labeled_frame_mask(12).tolist() == [i % 4 == 0 or 3 <= i < 9 for i in range(12)]
    for doc in _docs(synth_set).values():
        labelled = [image["is_labeled"] for image in doc["images"]]
        assert labelled == labeled_frame_mask(FRAMES).tolist()
        labelled_ids = {image["id"] for image in doc["images"] if image["is_labeled"]}
        assert {ann["image_id"] for ann in doc["annotations"]} <= labelled_ids


def test_occlusion_rule_keeps_inferable_joints():
    clip = render_clip(frames=10, seed=3, size=SIZE, options=SynthOptions(occluder_probability=1.0))
    inside = ((clip.positions[..., 0] >= 0) & (clip.positions[..., 0] <= SIZE[0] - 1) &
              (clip.positions[..., 1] >= 0) & (clip.positions[..., 1] <= SIZE[1] - 1))
    labelled = clip.keypoints[..., 2] > 0
    assert not (labelled & ~inside).any()
    assert not (clip.visible & ~inside).any()
    hidden = inside & ~clip.visible
    hidden[..., list(options._EARS)] = False
    assert hidden.any(), "an occluder that hides nothing"
    # Hidden joints of people that are still mostly visible stay labelled (annotators infer them).
    scored = [j for j in range(17) if j not in options._EARS]
    mostly_visible = clip.visible[..., scored].sum(-1) * 2 >= inside[..., scored].sum(-1)
    assert (labelled[hidden & mostly_visible[..., None]]).all()
    assert (labelled[hidden & mostly_visible[..., None]]).size > 0


# ------------------------------------------------------------------------------------------- difficulty tags


def test_typical_set_has_blurred_and_occluded_key_frames(synth_set):
    tags = [image["synthtrack"] for doc in _docs(synth_set).values() for image in doc["images"] if image["is_labeled"]]
    assert any(t["motion_blur"] for t in tags) and not all(t["motion_blur"] for t in tags)
    assert any(t["occluded"] for t in tags) and not all(t["occluded"] for t in tags)
    assert any(t["object_occlusion"] for t in tags) and any(t["person_occlusion"] for t in tags)
    assert any(t["camera_shake"] != [0, 0] for t in tags)


@pytest.mark.parametrize("seed, blur_probability", [(5, 1.0), (0, 0.0)])  # a fast mover, then a still camera
def test_blur_tag_means_the_frame_is_blurred(seed, blur_probability):
    frames = 6
    options = SynthOptions(blur_probability=blur_probability, shake_probability=0.0)
    clip = render_clip(frames=frames, seed=seed, size=SIZE, options=options)
    scene = scene_model._build_scene(seed, 0, frames, SIZE, options)
    blur = [t["blur_px"] for t in clip.tags]
    assert max(blur) > 6 if blur_probability else max(blur) < 1.5
    for f in range(frames):
        sharp = drawing._render(scene, float(f), with_ids=False)[0].astype(np.float32)
        changed = (np.abs(sharp - clip.images[f]).max(axis=-1) > 40).sum()
        # Sensor noise alone stays within a few grey levels; a blurred mover changes many pixels a lot.
        if blur[f] > 6:
            assert clip.tags[f]["motion_blur"] and changed > 20, (f, blur[f], changed)
        elif blur[f] < 1.5:
            assert not clip.tags[f]["motion_blur"] and changed == 0, (f, blur[f], changed)


def test_turning_swaps_left_and_right():
    scene = scene_model._build_scene(0, 0, 60, SIZE, SynthOptions())
    rng = np.random.default_rng(0)
    person = scene_model._make_person(rng, scene, 1, 0, "spin", scene.height * 0.9, SIZE[0] / 2, 0.3)
    left, right = POSETRACK17.index("left_shoulder"), POSETRACK17.index("right_shoulder")
    signs = {np.sign(poses._pose(scene, person, t, np.zeros(2)).joints[left, 0] -
                     poses._pose(scene, person, t, np.zeros(2)).joints[right, 0]) for t in range(60)}
    assert {-1.0, 1.0} <= signs


def test_walking_swings_the_legs():
    scene = scene_model._build_scene(0, 0, 40, SIZE, SynthOptions())
    person = scene_model._make_person(np.random.default_rng(1), scene, 1, 0, "walk", scene.height * 0.9, SIZE[0] / 2,
                                    0.3)
    la, ra = POSETRACK17.index("left_ankle"), POSETRACK17.index("right_ankle")
    gap = [poses._pose(scene, person, t, np.zeros(2)).joints for t in np.arange(0, 40, 0.5)]
    stride = np.array([j[la, 0] - j[ra, 0] for j in gap])
    assert stride.max() > 5 and stride.min() < -5  # the feet overtake each other
    hip_x = np.array([j[POSETRACK17.index("left_hip"), 0] for j in gap])
    assert abs(hip_x[-1] - hip_x[0]) > 20  # and the person gets somewhere


def test_crowd_lies_under_an_ignore_polygon(tmp_path):
    generate_synthtrack(tmp_path, sequences=1, frames=2, seed=0, size=SIZE, progress=False,
                        options=SynthOptions(crowd_probability=1.0))
    doc = next(iter(_docs(tmp_path).values()))
    assert doc["synthtrack"]["crowd"] > 0
    image = doc["images"][0]
    assert len(image["ignore_regions_x"]) == 1 and len(image["ignore_regions_x"][0]) >= 3
    assert len(image["ignore_regions_x"][0]) == len(image["ignore_regions_y"][0])
    mask = cv2.imread(str(tmp_path / image["mask_file"]), cv2.IMREAD_GRAYSCALE)
    x, y = np.mean(image["ignore_regions_x"][0]), np.mean(image["ignore_regions_y"][0])
    assert mask[int(y), int(x)] > 200 and (mask < 50).mean() > 0.3


# ------------------------------------------------------------------------------------------------- detections


def test_detections_are_noisy_coco_results(synth_set):
    boxes = json.loads((synth_set / "detections" / "val_boxes.json").read_text())
    docs = _docs(synth_set)
    image_ids = {image["id"] for doc in docs.values() for image in doc["images"]}
    assert boxes
    for box in boxes:
        assert set(box) == {"image_id", "bbox", "score", "category_id"}
        assert box["image_id"] in image_ids and box["category_id"] == 1
        assert 0.2 < box["score"] < 1.0
        x, y, w, h = box["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= SIZE[0] and y + h <= SIZE[1]
    # Noisy: some GT people have no box with IoU > 0.5 (misses) and some boxes match no GT (false positives).
    gt: dict[int, list] = {}
    for doc in docs.values():
        for ann in doc["annotations"]:
            kps = np.array(ann["keypoints"]).reshape(17, 3)
            gt.setdefault(ann["image_id"], []).append(kps[kps[:, 2] > 0, :2])
    det: dict[int, list] = {}
    for box in boxes:
        det.setdefault(box["image_id"], []).append(box["bbox"])

    def covers(b, joints) -> float:
        x, y, w, h = b
        inside = (joints[:, 0] >= x) & (joints[:, 0] <= x + w) & (joints[:, 1] >= y) & (joints[:, 1] <= y + h)
        return inside.mean()

    matched = [max((covers(b, j) for b in det.get(i, [])), default=0.0) for i, people in gt.items() for j in people]
    assert np.mean(np.array(matched) > 0.7) > 0.6  # most people are found
    lonely = [b for i, bs in det.items() for b in bs if all(covers(b, j) < 0.2 for j in gt.get(i, []))]
    assert lonely  # false positives exist
    assert (np.array(matched) < 0.3).any()  # and misses


# -------------------------------------------------------------------------------------------------- writing, CLI


def test_refuses_to_mix_with_other_sequence_files(tmp_path):
    generate_synthtrack(tmp_path, sequences=2, frames=2, seed=0, size=(96, 96), progress=False)
    generate_synthtrack(tmp_path, sequences=2, frames=2, seed=1, size=(96, 96), progress=False)  # overwrite is fine
    with pytest.raises(CommandError, match="other sequence file"):
        generate_synthtrack(tmp_path, sequences=1, frames=2, seed=0, size=(96, 96), progress=False)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("kwargs", [{"frames": 0}, {"frames": 10**4}, {"split": "my_split"}, {"seed": -1},
                                    {"size": (10, 10)}])
def test_bad_arguments_raise(tmp_path, kwargs):
    with pytest.raises(CommandError):
        generate_synthtrack(tmp_path, **{"sequences": 1, "frames": 2, "size": (96, 96), "progress": False, **kwargs})


def test_bad_options_raise():
    with pytest.raises(CommandError):
        SynthOptions(blur_probability=1.5)
    with pytest.raises(CommandError):
        SynthOptions(people=(3, 2))


def test_cli_synth_writes_a_set_and_prints_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--sequences", "2", "--frames", "3", "--seed", "4", "--split", "train",
                 "--size", "128", "96"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("synth: wrote 2 sequences (6 frames")
    assert sorted(p.name for p in (out / "annotations" / "train").iterdir()) == ["000001_bonn_train.json",
                                                                                   "000002_bonn_train.json"]
    assert (out / "detections" / "train_boxes.json").is_file()
    record = json.loads((out / "synthtrack_train.json").read_text())
    assert record["seed"] == 4 and record["size"] == [128, 96]
    image = cv2.imread(str(out / "images" / "train" / "000002_bonn_train" / "000002.jpg"))
    assert image.shape == (96, 128, 3)


def test_cli_synth_bad_argument_is_a_one_line_error(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--frames", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tdmi synth: error:") and "--frames" in err and "\n" not in err


def test_people_are_in_the_frames(synth_set):
    # The annotated joints sit on the rendered people: pixels around labelled, visible joints of people who move
    # differ from the sequence's median background far more often than random pixels do.
    checked = 0
    for name, doc in list(_docs(synth_set).items())[:3]:
        frames = np.stack([cv2.imread(str(synth_set / image["file_name"])).astype(np.float32)
                           for image in doc["images"]])
        background = np.median(frames, axis=0)
        on_people, total = 0, 0
        for ann in doc["annotations"]:
            if ann["synthtrack"]["action"] not in ("walk", "run"):
                continue  # a person who stays in place is part of the median "background"
            f = int(ann["image_id"] % 10**4)
            kps = np.array(ann["keypoints"]).reshape(17, 3)
            visible = np.array(ann["synthtrack"]["visible"], bool) & (kps[:, 2] > 0)
            for x, y in kps[visible, :2]:
                total += 1
                on_people += np.abs(frames[f, int(y), int(x)] - background[int(y), int(x)]).max() > 25
        assert total == 0 or on_people / total > 0.5, name
        assert math.isfinite(background.mean())
        checked += total
    assert checked > 0


def test_the_posetrack_readers_load_synthtrack(synth_set):
    from tdmi.data.detections import load_detections
    from tdmi.data.posetrack import load_sequences, posetrack18_image_id

    sequences = load_sequences(synth_set / "annotations" / "val")
    docs = _docs(synth_set)
    assert [s.name for s in sequences] == list(docs)
    detections = load_detections(synth_set / "detections" / "val_boxes.json")
    boxes = json.loads((synth_set / "detections" / "val_boxes.json").read_text())
    assert len(detections) == len(boxes)
    for sequence in sequences:
        doc = docs[sequence.name]
        assert sequence.nframes == FRAMES and len(sequence.frames) == FRAMES
        assert sum(len(frame.people) for frame in sequence.frames) == len(doc["annotations"])
        for frame in sequence.frames:
            assert frame.image_id == posetrack18_image_id(frame.file_name)
            for person in frame.people:
                labelled = person.keypoints[:, 2] > 0
                assert 2 <= labelled.sum() and not labelled[list(options._EARS)].any()
        expected = sum(1 for b in boxes if b["image_id"] in {f.image_id for f in sequence.frames})
        assert sum(len(detections.for_frame(frame)) for frame in sequence.frames) == expected
