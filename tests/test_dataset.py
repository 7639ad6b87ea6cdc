"""PoseTrackClipDataset and collation (tdmi.data.dataset): docs/architecture.md "Contracts" (clip sample)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tdmi.config import AugmentConfig, ExperimentConfig
from tdmi.data.dataset import PoseTrackClipDataset, build_dataset, collate_clips
from tdmi.data.records import Frame, Person, Sequence
from tdmi.errors import CommandError, DataFormatError

INPUT = (48, 64)
HEATMAP = (12, 16)
WIDTH, HEIGHT = 120, 90
JOINT = (40.0, 30.0)  # the left wrist, on a white blob, off the box centre so that rotation and flip move it
BOX = [20.0, 10.0, 60.0, 70.0]


def person(joint=JOINT, box=BOX, labelled=(9,), score=1.0, track_id=3):
    keypoints = np.zeros((17, 3), dtype=np.float32)
    for j in labelled:
        keypoints[j] = (joint[0], joint[1], 1)
    return Person(keypoints=keypoints, bbox=np.array(box, dtype=np.float32), track_id=track_id, score=score)


def write_static_clip(folder: Path, n: int = 5, ext: str = ".png", skip: tuple[int, ...] = ()) -> Path:
    """n identical frames: black, with a 5x5 white square centred on JOINT (lossless PNG by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    x, y = int(JOINT[0]), int(JOINT[1])
    image[y - 2:y + 3, x - 2:x + 3] = 255
    image[5:10, 100:110] = (255, 0, 0)  # a blue patch, to see the BGR -> RGB swap
    for i in range(n):
        if i not in skip:
            cv2.imwrite(str(folder / f"{i:06d}{ext}"), image)
    return folder


def make_sequence(n=5, labelled=(0, 2, 4), people=None, ext=".png", size_known=True) -> Sequence:
    frames = []
    for i in range(n):
        frames.append(Frame(
            file_name=f"seq/{i:06d}{ext}", frame_index=i, image_id=1000 + i, is_labeled=i in labelled,
            people=list(people if people is not None else [person()]) if i in labelled else [],
            width=WIDTH if size_known else 0, height=HEIGHT if size_known else 0,
        ))
    return Sequence(name="seq", frames=frames, nframes=n, dataset="posetrack18")


def make_dataset(root, **kwargs) -> PoseTrackClipDataset:
    kwargs.setdefault("input_size", INPUT)
    kwargs.setdefault("heatmap_size", HEATMAP)
    kwargs.setdefault("sigma", 2.0)
    sequence = kwargs.pop("sequence", None) or make_sequence()
    return PoseTrackClipDataset([sequence], root, **kwargs)


@pytest.fixture
def clip_root(tmp_path) -> Path:
    write_static_clip(tmp_path / "seq")
    return tmp_path


STRONG = AugmentConfig(scale_factor=0.2, rotation_factor=30.0, rotation_prob=1.0, flip=True, half_body_prob=0.0)


def bright_centroid(frame: torch.Tensor) -> np.ndarray:
    """(x, y) centroid of the white blob in one normalised [3, H, W] crop."""
    brightness = frame.sum(0).numpy()
    mask = brightness > brightness.min() + 0.5 * (brightness.max() - brightness.min())
    mask &= frame[0].numpy() > 0.5  # white, not the blue patch (low red)
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_clip_sample_contract(clip_root):
    dataset = make_dataset(clip_root, mode="val")
    assert len(dataset) == 3  # one person in each labelled frame
    sample = dataset[1]
    assert sample["frames"].shape == (5, 3, 64, 48) and sample["frames"].dtype == torch.float32
    assert sample["heatmaps"].shape == (17, 16, 12) and sample["target_weight"].shape == (17,)
    meta = sample["meta"]
    assert meta["sequence"] == "seq" and meta["frame_index"] == 2 and meta["image"] == "seq/000002.png"
    assert meta["padded"] == [False] * 5 and meta["key_position"] == 2
    assert [Path(p).name for p in meta["frame_paths"]] == [f"{i:06d}.png" for i in range(5)]
    assert meta["track_id"] == 3 and meta["score"] == 1.0 and meta["person_index"] == 0 and meta["rotation"] == 0
    # GT box sanitised (x2 = x1 + w - 1): center (20 + 59/2, 10 + 69/2).
    np.testing.assert_allclose(meta["center"], [49.5, 44.5])
    assert meta["scale"].shape == (2,) and meta["center"].dtype == np.float32


def test_padding_at_sequence_ends_travels_in_meta(clip_root):
    dataset = make_dataset(clip_root, mode="val")
    first, last = dataset[0]["meta"], dataset[2]["meta"]
    assert first["padded"] == [True, True, False, False, False]
    assert [Path(p).name for p in first["frame_paths"]][:3] == ["000000.png"] * 3
    assert last["padded"] == [False, False, False, True, True]
    fami = make_dataset(clip_root, mode="val", padding="fami")[0]["meta"]
    assert [Path(p).name for p in fami["frame_paths"]] == ["000000.png"] * 3 + ["000001.png", "000002.png"]


def test_same_affine_for_every_frame_and_joint_lands_on_heatmap_peak(clip_root):
    dataset = make_dataset(clip_root, mode="train", augment=STRONG)
    flips = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            sample = dataset[index]
            frames, heatmaps, meta = sample["frames"], sample["heatmaps"], sample["meta"]
            assert meta["rotation"] != 0
            for t in range(frames.shape[0]):  # identical source frames -> identical crops
                assert torch.equal(frames[t], frames[meta["key_position"]])
            channel = 10 if meta["flipped"] else 9  # the flip moves the left wrist into the right wrist slot
            flips.add(meta["flipped"])
            assert sample["target_weight"][channel] == 1 and sample["target_weight"].sum() == 1
            peak = np.unravel_index(int(heatmaps[channel].argmax()), heatmaps[channel].shape)  # (v, u)
            blob = bright_centroid(frames[meta["key_position"]])
            np.testing.assert_allclose(blob / 4.0, [peak[1], peak[0]], atol=1.0)
    assert flips == {True, False}


def test_frames_are_rgb_and_normalised(clip_root):
    sample = make_dataset(clip_root, mode="val")[1]
    black = sample["frames"][2, :, 0, 0].numpy()
    np.testing.assert_allclose(black, [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-5)


def test_augmentation_is_reproducible_and_changes_with_epoch(clip_root):
    a = make_dataset(clip_root, mode="train", augment=STRONG, seed=5)
    b = make_dataset(clip_root, mode="train", augment=STRONG, seed=5)
    assert torch.equal(a[1]["frames"], b[1]["frames"])
    assert a[1]["meta"]["rotation"] == b[1]["meta"]["rotation"]
    b.set_epoch(1)
    assert any(a[i]["meta"]["rotation"] != b[i]["meta"]["rotation"] for i in range(len(a)))
    assert make_dataset(clip_root, mode="val", augment=STRONG)[1]["meta"]["rotation"] == 0  # never in val


def test_worker_count_does_not_change_samples(clip_root):
    dataset = make_dataset(clip_root, mode="train", augment=STRONG, key_frame_only=True)
    batches = []
    for workers in (0, 1):
        loader = DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collate_clips)
        batches.append([b["frames"] for b in loader])
    assert all(torch.equal(x, y) for x, y in zip(*batches))


def test_key_frame_only_and_no_heatmaps(clip_root):
    sample = make_dataset(clip_root, mode="val", key_frame_only=True, with_heatmaps=False)[0]
    assert sample["frames"].shape == (1, 3, 64, 48)
    assert "heatmaps" not in sample and sample["target_weight"][9] == 1
    assert sample["meta"]["padded"] == [False] and sample["meta"]["key_position"] == 0


def test_causal_clip_puts_key_frame_last(clip_root):
    sample = make_dataset(clip_root, mode="val", causal=True)[2]
    assert sample["meta"]["key_position"] == 4
    assert [Path(p).name for p in sample["meta"]["frame_paths"]] == [f"{i:06d}.png" for i in range(5)]


def test_collate_stacks_and_keeps_meta(clip_root):
    dataset = make_dataset(clip_root, mode="val")
    batch = collate_clips([dataset[0], dataset[1], dataset[2]])
    assert batch["frames"].shape == (3, 5, 3, 64, 48)
    assert batch["heatmaps"].shape == (3, 17, 16, 12) and batch["target_weight"].shape == (3, 17)
    meta = batch["meta"]
    assert meta["center"].shape == (3, 2) and meta["padded"].shape == (3, 5) and meta["padded"].dtype == bool
    assert meta["image"] == ["seq/000000.png", "seq/000002.png", "seq/000004.png"]
    assert len(meta["frame_paths"]) == 3 and len(meta["frame_paths"][0]) == 5
    np.testing.assert_array_equal(meta["frame_index"], [0, 2, 4])
    without = collate_clips([make_dataset(clip_root, mode="val", with_heatmaps=False)[0]])
    assert "heatmaps" not in without
    with pytest.raises(ValueError, match="empty"):
        collate_clips([])


# ---------------------------------------------------------------------------------------------------------------
# Which boxes become samples, and errors


def test_people_without_joints_and_boxes_outside_are_skipped(clip_root):
    people = [person(), person(labelled=()), person(box=[500, 10, 40, 40]), person(box=[10, 10, 0, 30])]
    dataset = make_dataset(clip_root, mode="train", sequence=make_sequence(people=people))
    assert len(dataset) == 3  # only the first person of each labelled frame
    assert dataset.skipped == {"no_labelled_joints": 3, "box_outside_image": 3, "empty_box": 3}


def test_box_partly_outside_is_clipped_not_skipped(clip_root):
    dataset = make_dataset(clip_root, mode="val", sequence=make_sequence(people=[person(box=[-40, -20, 100, 80])]))
    assert len(dataset) == 3
    np.testing.assert_allclose(dataset[0]["meta"]["center"], [49.5, 39.5])  # [0, 0, 99, 79]


class FakeDetections:
    def __init__(self, by_file: dict[str, list[Person]]):
        self.by_file = by_file

    def for_frame(self, frame: Frame) -> list[Person]:
        return self.by_file.get(frame.file_name, [])


def detection(box, score):
    return Person(keypoints=np.zeros((17, 3), np.float32), bbox=np.array(box, np.float32), score=score)


def test_detection_boxes_are_used_raw(clip_root):
    boxes = {"seq/000002.png": [detection([-40, -20, 100, 80], 0.9), detection([0, 0, 0, 10], 0.8),
                                detection([300, 300, 10, 10], 0.7), detection([10, 10, 20, 20], 0.5)],
             "seq/000001.png": [detection([10, 10, 20, 20], 0.5)]}
    dataset = make_dataset(clip_root, mode="test", detections=FakeDetections(boxes))
    assert len(dataset) == 2 and dataset.skipped["empty_box"] == 1 and dataset.skipped["box_outside_image"] == 1
    sample = dataset[0]
    np.testing.assert_allclose(sample["meta"]["center"], [10, 20])  # raw: no clipping
    assert sample["meta"]["score"] == pytest.approx(0.9) and sample["meta"]["person_index"] == 0
    assert dataset[1]["meta"]["person_index"] == 3
    assert sample["target_weight"].sum() == 0 and sample["heatmaps"].abs().sum() == 0
    every_frame = make_dataset(clip_root, mode="test", detections=FakeDetections(boxes), labeled_frames_only=False)
    assert len(every_frame) == 3
    with pytest.raises(CommandError, match="ground-truth"):
        make_dataset(clip_root, mode="train", detections=FakeDetections(boxes))


def test_missing_supporting_frame_names_the_file(tmp_path):
    write_static_clip(tmp_path / "seq", skip=(3,))
    dataset = make_dataset(tmp_path, mode="val")
    with pytest.raises(DataFormatError, match=r"seq/000003\.png: supporting frame not found"):
        dataset[1]
    padded = make_dataset(tmp_path, mode="val", missing_frames="pad")[1]
    assert padded["meta"]["padded"] == [False, False, False, True, True]


def test_undecodable_frame_names_the_file(clip_root):
    (clip_root / "seq" / "000001.png").write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match=r"000001\.png: cannot be decoded"):
        make_dataset(clip_root, mode="val")[0]


def test_frame_size_mismatch_is_an_error(clip_root):
    cv2.imwrite(str(clip_root / "seq" / "000001.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataFormatError, match="differs from the key frame"):
        make_dataset(clip_root, mode="val")[0]


def test_wrong_keypoint_count_is_an_error(clip_root):
    bad = Person(keypoints=np.ones((15, 3), np.float32), bbox=np.array(BOX, np.float32))
    with pytest.raises(DataFormatError, match=r"seq/000000\.png person 0 has keypoints of shape \(15, 3\)"):
        make_dataset(clip_root, sequence=make_sequence(people=[bad]))


def test_image_size_read_from_the_header_when_unknown(tmp_path):
    write_static_clip(tmp_path / "seq", ext=".jpg")
    sequence = make_sequence(ext=".jpg", size_known=False, people=[person(box=[60, 10, 200, 70])])
    dataset = make_dataset(tmp_path, mode="val", sequence=sequence)
    # Clipped to the 120 px wide image: [60, 10, 59, 69].
    np.testing.assert_allclose(dataset[0]["meta"]["center"], [89.5, 44.5])


def test_dataset_does_not_import_models():
    code = ("import sys, tdmi.data.dataset; bad = [m for m in sys.modules if m.startswith('tdmi.models')]; "
            "assert not bad, bad")
    src = Path(__file__).resolve().parents[1] / "src"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src)})


# ---------------------------------------------------------------------------------------------------------------
# Real data


def test_real_five_frame_clip(posetrack18_sample):
    video = posetrack18_sample / "videos"
    frames = [Frame(file_name=f"000001_mpiinew_test/{i:06d}.jpg", frame_index=i, is_labeled=True,
                    people=[person(joint=(640.0, 300.0), box=[560.0, 150.0, 160.0, 400.0])]) for i in (0, 2)]
    sequence = Sequence(name="000001_mpiinew_test", frames=frames, nframes=5)
    dataset = PoseTrackClipDataset([sequence], video, mode="val", input_size=(96, 128), heatmap_size=(24, 32))
    first, middle = dataset[0], dataset[1]
    assert first["meta"]["padded"] == [True, True, False, False, False]
    assert middle["meta"]["padded"] == [False] * 5
    assert middle["frames"].shape == (5, 3, 128, 96)
    # Real consecutive frames differ, and the padded slots repeat the key frame's crop exactly.
    assert not torch.equal(middle["frames"][0], middle["frames"][4])
    assert torch.equal(first["frames"][0], first["frames"][2])
    assert first["target_weight"][9] == 1


def test_build_dataset_on_the_sample(posetrack18_sample):
    pytest.importorskip("tdmi.data.posetrack", reason="the PoseTrack readers (D1) have not landed yet")
    cfg = ExperimentConfig()
    cfg.data.dataset = "posetrack18"
    cfg.data.root = str(posetrack18_sample)
    cfg.data.val_annotations = "annotations/val"
    cfg.model.input_size = [96, 128]
    cfg.model.heatmap_size = [24, 32]
    dataset = build_dataset(cfg, "val")
    assert len(dataset) > 0
    # The sample has only frame 000000 of each sequence: its next neighbours are missing.
    with pytest.raises(DataFormatError, match="000001.jpg: supporting frame not found"):
        dataset[0]
    cfg.data.missing_frames = "pad"
    sample = build_dataset(cfg, "val")[0]
    assert sample["meta"]["padded"] == [True, True, False, True, True]
    detected = build_dataset(cfg, "test", boxes=str(posetrack18_sample / "annotations" /
                                                    "test_posetrack18_human_detections.json"))
    assert len(detected) > 0 and detected[0]["target_weight"].sum() == 0
    with pytest.raises(CommandError):
        build_dataset(cfg, "train", boxes="boxes.json")


# ---------------------------------------------------------------------------------------------------------------
# build_dataset: config -> readers -> dataset (the readers replaced by recorders, so this runs without D1's modules)


class RecordingReaders:
    def __init__(self, sequence: Sequence, boxes: dict[str, list[Person]]):
        self.sequence, self.boxes, self.calls = sequence, boxes, []

    def load_sequences(self, path, dataset=None):
        self.calls.append(("sequences", Path(path), dataset))
        return [self.sequence]

    def load_detections(self, path, score_threshold=0.2):
        self.calls.append(("detections", Path(path), score_threshold))
        return FakeDetections(self.boxes)


@pytest.fixture
def readers(clip_root, monkeypatch) -> RecordingReaders:
    import types

    recorder = RecordingReaders(make_sequence(), {"seq/000002.png": [detection([10, 10, 20, 20], 0.5)]})
    posetrack = types.ModuleType("tdmi.data.posetrack")
    posetrack.load_sequences = recorder.load_sequences
    detections = types.ModuleType("tdmi.data.detections")
    detections.load_detections = recorder.load_detections
    monkeypatch.setitem(sys.modules, "tdmi.data.posetrack", posetrack)
    monkeypatch.setitem(sys.modules, "tdmi.data.detections", detections)
    return recorder


def small_config(root: Path) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data.root = str(root)
    cfg.data.dataset = "posetrack18"
    cfg.model.input_size, cfg.model.heatmap_size = list(INPUT), list(HEATMAP)
    return cfg


def test_build_dataset_train_uses_gt_boxes_and_augmentation(clip_root, readers):
    cfg = small_config(clip_root)
    cfg.data.sigma = 2.0
    cfg.train.seed = 11
    dataset = build_dataset(cfg, "train")
    assert readers.calls == [("sequences", clip_root / "annotations/train", "posetrack18")]
    assert dataset.mode == "train" and dataset.augment is cfg.data.augment and dataset.seed == 11
    assert len(dataset) == 3 and dataset[0]["frames"].shape == (5, 3, 64, 48)
    with pytest.raises(CommandError, match="ground-truth"):
        build_dataset(cfg, "train", boxes="boxes.json")


def test_build_dataset_val_and_test_boxes(clip_root, readers):
    cfg = small_config(clip_root)
    cfg.data.val_boxes = "boxes/val.json"
    cfg.data.box_score_threshold = 0.4
    val = build_dataset(cfg, "val")
    assert readers.calls[-1] == ("detections", clip_root / "boxes/val.json", 0.4)
    assert readers.calls[-2] == ("sequences", clip_root / "annotations/val", "posetrack18")
    assert len(val) == 1 and val.augment is None
    test_gt = build_dataset(cfg, "test")  # test.boxes defaults to "gt"
    assert len(test_gt) == 3 and readers.calls[-1][0] == "sequences"
    build_dataset(cfg, "test", boxes="given.json")  # an argument is taken as given, not under the root
    assert readers.calls[-1] == ("detections", Path("given.json"), 0.4)


def test_build_dataset_model_options(clip_root, readers):
    cfg = small_config(clip_root)
    cfg.model.arch = "hrnet"
    cfg.data.joint_weights = True
    sample = build_dataset(cfg, "val")[0]
    assert sample["frames"].shape[0] == 1  # the single-frame baseline gets key frames only
    assert sample["target_weight"][9] == pytest.approx(1.5)
    cfg.model.num_joints = 15
    with pytest.raises(CommandError, match="num_joints"):
        build_dataset(cfg, "val")
    with pytest.raises(CommandError, match="split"):
        build_dataset(small_config(clip_root), "dev")


def test_missing_synthtrack_data_names_the_command_that_makes_it(tmp_path):
    from tdmi.config import load_config
    from tdmi.data.dataset import build_dataset
    from tdmi.errors import CommandError

    cfg = load_config(None, [f"data.root={tmp_path / 'none'}", "data.dataset=synthtrack"])
    with pytest.raises(CommandError, match=r"annotations/val .*tdmi synth --out .*none --split val"):
        build_dataset(cfg, "val")
    cfg = load_config(None, [f"data.root={tmp_path / 'none'}"])
    with pytest.raises(CommandError, match="docs/data.md"):
        build_dataset(cfg, "train")


def test_uint8_frames_normalised_on_the_device_are_the_same_bits(clip_root):
    from tdmi.data.transforms import normalize_frames

    floats = make_dataset(clip_root, mode="train", augment=STRONG, seed=3)
    uint8 = make_dataset(clip_root, mode="train", augment=STRONG, seed=3, uint8_frames=True)
    for index in range(len(floats)):
        raw = uint8[index]["frames"]
        assert raw.dtype == torch.uint8 and raw.shape == floats[index]["frames"].shape
        assert torch.equal(normalize_frames(raw), floats[index]["frames"])
    batch = collate_clips([uint8[0], uint8[1]])
    assert torch.equal(normalize_frames(batch["frames"]), torch.stack([floats[0]["frames"], floats[1]["frames"]]))
    normalised = floats[0]["frames"]
    assert normalize_frames(normalised) is normalised  # float input is already normalised


def test_loader_workers_and_uint8_defaults(monkeypatch):
    from tdmi.config import ExperimentConfig
    from tdmi.data import dataset as dataset_module

    cfg = ExperimentConfig()
    assert cfg.data.workers is None and cfg.data.uint8_frames is None
    monkeypatch.setattr(dataset_module, "available_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert dataset_module.loader_workers(cfg) == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert dataset_module.loader_workers(cfg) == 3  # 16 cores shared by 4 GPU processes, one core each for them
    monkeypatch.setattr(dataset_module, "available_cores", lambda: 1)
    assert dataset_module.loader_workers(cfg) == 0
    cfg.data.workers = 2
    assert dataset_module.loader_workers(cfg) == 2
    assert not dataset_module.frames_as_uint8(cfg, torch.device("cpu"))
    assert dataset_module.frames_as_uint8(cfg, torch.device("cuda"))
    cfg.data.uint8_frames = True
    assert dataset_module.frames_as_uint8(cfg, torch.device("cpu"))


def test_supporting_frames_from_another_sequence_keep_the_key_frame(tmp_path):
    """``test.support_from: other_sequence`` (issue 23's test-time control): every slot but the key frame's comes from
    the next sequence, at the same offsets."""
    from dataclasses import replace

    write_static_clip(tmp_path / "seq")
    write_static_clip(tmp_path / "other")
    own = make_sequence()
    other = replace(make_sequence(), name="other",
                    frames=[replace(f, file_name=f.file_name.replace("seq/", "other/")) for f in own.frames])
    dataset = PoseTrackClipDataset([own, other], tmp_path, mode="val", input_size=INPUT, heatmap_size=HEATMAP,
                                   sigma=2.0, support_from="other_sequence")
    plain = PoseTrackClipDataset([own, other], tmp_path, mode="val", input_size=INPUT, heatmap_size=HEATMAP,
                                 sigma=2.0)
    for index in range(len(dataset)):
        paths, _, key = dataset.frame_paths(index)
        own_paths, _, own_key = plain.frame_paths(index)
        assert key == own_key and paths[key] == own_paths[key]
        mine, theirs = ("seq/", "other/") if "/seq/" in own_paths[key] else ("other/", "seq/")
        assert all(theirs in p for i, p in enumerate(paths) if i != key)
        assert [p.replace(theirs, mine) for p in paths] == list(own_paths)  # same offsets, other sequence
    with pytest.raises(ValueError, match="test-time control"):
        PoseTrackClipDataset([own], tmp_path, mode="train", support_from="other_sequence")
