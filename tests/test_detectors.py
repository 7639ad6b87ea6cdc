"""Person detectors: box files of every supported layout, the HOG detector (NumPy port and OpenCV), selection."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from tdmi.errors import CommandError
from tdmi.inference import detectors, hog
from tdmi.inference.boxes import iou_matrix
from tdmi.inference.detectors import (BoxFileDetector, HOGPeopleDetector, hog_window_descriptor, make_detector,
                                      write_boxes_file)
from tdmi.inference.sources import open_source

DATA = Path(__file__).parent / "data"
FRAME = np.zeros((48, 64, 3), np.uint8)


def _reference_window() -> np.ndarray:
    """The window whose OpenCV 4.10 HOG descriptor is stored in ``data/hog_opencv410_window.npy``."""
    y, x = np.mgrid[0:128, 0:64]
    rng = np.random.default_rng(0)
    base = 128 + 90 * np.sin(x / 5.0 + y / 9.0)[..., None] * np.array([1.0, 0.6, -0.8])
    return np.clip(base + rng.normal(0, 25, (128, 64, 3)), 0, 255).astype(np.uint8)


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------------------- HOG


def test_numpy_hog_descriptor_matches_opencv_410():
    reference = np.load(DATA / "hog_opencv410_window.npy")
    ours = hog_window_descriptor(_reference_window())
    assert ours.shape == reference.shape == (3780,)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.skipif(not hasattr(cv2, "HOGDescriptor"), reason="this OpenCV has no HOGDescriptor (OpenCV 5)")
def test_numpy_hog_descriptor_matches_installed_opencv():
    rng = np.random.default_rng(3)
    window = cv2.GaussianBlur(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8), (5, 5), 1.5)
    np.testing.assert_allclose(hog_window_descriptor(window), cv2.HOGDescriptor().compute(window).ravel(),
                               atol=1e-4)


def test_hog_finds_nobody_in_flat_or_smooth_images():
    detector = HOGPeopleDetector(backend="numpy")
    flat = np.full((240, 320, 3), 90, np.uint8)
    ramp = np.repeat(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], 240, axis=0).repeat(3, axis=2)
    for image in (flat, ramp):
        boxes, scores = detector.detect(image)
        assert boxes.shape == (0, 4) and scores.shape == (0,)
    tiny = np.zeros((50, 30, 3), np.uint8)  # smaller than one detection window
    assert detector.detect(tiny).boxes.shape == (0, 4)


def test_hog_finds_people_in_the_street_video(video_dir):
    detector = HOGPeopleDetector(backend="numpy")
    per_frame = []
    with open_source(video_dir / "vtest.avi") as source:
        for frame in source:
            per_frame.append(detector.detect(frame.image))
            if frame.index >= 4:  # five frames, to stay fast
                break
    height, width = 576, 768
    for boxes, scores in per_frame:
        assert len(boxes) >= 2  # the street has 5-10 walkers in these frames; HOG is weak but sees some
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        assert ((scores > 0) & (scores < 1)).all()
        assert (boxes[:, 0] > -20).all() and (boxes[:, 0] + boxes[:, 2] < width + 20).all()
        assert (boxes[:, 1] > -20).all() and (boxes[:, 1] + boxes[:, 3] < height + 20).all()
        # Upright walkers: taller than wide, 60-400 px tall in a 576 px frame.
        assert (boxes[:, 3] > boxes[:, 2]).all() and (boxes[:, 3] > 60).all() and (boxes[:, 3] < 400).all()
    # People move little from one frame to the next: most detections reappear where they were, once each
    # (no nested duplicates of one person at two pyramid scales).
    for (a, _), (b, _) in zip(per_frame, per_frame[1:]):
        assert (iou_matrix(a, b).max(axis=1) > 0.5).mean() >= 0.6
    for boxes, _ in per_frame:
        overlap = iou_matrix(boxes, boxes) - np.eye(len(boxes))
        assert overlap.max() < 0.4


@pytest.mark.skipif(not hasattr(cv2, "HOGDescriptor"), reason="this OpenCV has no HOGDescriptor (OpenCV 5)")
def test_opencv_and_numpy_backends_agree(video_dir):
    with open_source(video_dir / "vtest.avi") as source:
        image = next(iter(source)).image
    a = HOGPeopleDetector(backend="numpy").detect(image)
    b = HOGPeopleDetector(backend="opencv").detect(image)
    assert len(a.boxes) and len(b.boxes)
    assert (iou_matrix(b.boxes, a.boxes).max(axis=1) > 0.5).mean() >= 0.6


def _straightforward_hog_blocks(image_bgr: np.ndarray) -> np.ndarray:
    """Dalal-Triggs blocks ``[H/8 - 1, W/8 - 1, 36]`` the slow, obvious way: whole-image gradients, then one block
    at a time, every pixel voting into its 2 orientation bins of each of the 4 cells (float64 sums)."""
    root = np.sqrt(image_bgr.astype(np.float32))
    padded = np.pad(root, ((1, 1), (1, 1), (0, 0)), mode="reflect")  # = BORDER_REFLECT_101
    dx = padded[1:-1, 2:] - padded[1:-1, :-2]
    dy = padded[2:, 1:-1] - padded[:-2, 1:-1]
    channel = np.argmax(dx * dx + dy * dy, axis=2)[..., None]  # the first channel wins ties
    gx = np.ascontiguousarray(np.take_along_axis(dx, channel, axis=2)[..., 0])
    gy = np.ascontiguousarray(np.take_along_axis(dy, channel, axis=2)[..., 0])
    magnitude, angle = cv2.cartToPolar(gx, gy)
    position = angle * np.float32(9 / np.pi) - np.float32(0.5)  # bin centres at 10, 30, ... degrees
    lower = np.floor(position)
    share = (position - lower).astype(np.float64)
    lower = lower.astype(np.int64) % 9
    offset = np.arange(16)
    # Weight of pixel offset o in a 16 px block for cell c: tent to the cell centre (3.5 + 8 c) times a Gaussian
    # of sigma 4 about the block centre.
    weight = (np.maximum(0.0, 1.0 - np.abs(offset - (3.5 + 8 * np.arange(2))[:, None]) / 8)
              * np.exp(-((offset - 8.0) ** 2) / 32.0))
    blocks = np.zeros((image_bgr.shape[0] // 8 - 1, image_bgr.shape[1] // 8 - 1, 36))
    for by in range(blocks.shape[0]):
        for bx in range(blocks.shape[1]):
            rows, cols = slice(8 * by, 8 * by + 16), slice(8 * bx, 8 * bx + 16)
            m, s, k = magnitude[rows, cols].astype(np.float64), share[rows, cols], lower[rows, cols]
            hist = np.zeros((2, 2, 9))  # [cell_x, cell_y, bin]
            for cx in range(2):
                for cy in range(2):
                    w = m * np.outer(weight[cy], weight[cx])
                    np.add.at(hist[cx, cy], k, w * (1 - s))
                    np.add.at(hist[cx, cy], (k + 1) % 9, w * s)
            v = hist.ravel()
            v = np.minimum(v / (np.sqrt((v * v).sum()) + 3.6), 0.2)
            blocks[by, bx] = v / (np.sqrt((v * v).sum()) + 1e-3)
    return blocks


def _straightforward_margins(blocks: np.ndarray) -> np.ndarray:
    """SVM margin of every 64x128 window, one window at a time: its descriptor in OpenCV's layout (block
    columns outermost) dotted with the SVM's coefficients as stored."""
    weights, bias = hog._hog_svm()  # [15, 7, 36]
    coefficients = weights.transpose(1, 0, 2).reshape(-1).astype(np.float64)
    margins = np.zeros((blocks.shape[0] - 14, blocks.shape[1] - 6))
    for i in range(margins.shape[0]):
        for j in range(margins.shape[1]):
            margins[i, j] = blocks[i:i + 15, j:j + 7].transpose(1, 0, 2).reshape(-1) @ coefficients + bias
    return margins


def _colourful_image(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour waves of different phase per channel (so the strongest channel varies) plus noise."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    waves = np.stack([np.sin(x / (4.0 + c) + y / (7.0 - c) + 2 * c) for c in range(3)], axis=2)
    return np.clip(128 + 80 * waves + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("band_pixels", [1, 4 * 8 * 107, None])  # 1 or 4 tile rows per band, or all at once
@pytest.mark.parametrize("shape", [(171, 107), (160, 96)])  # cut to whole tiles, or not; odd tile-row counts
def test_banded_hog_matches_a_straightforward_reference(monkeypatch, band_pixels, shape):
    image = _colourful_image(*shape, seed=shape[0])
    if band_pixels is not None:  # bands of a few tile rows exercise the carried row and the edge reflection
        monkeypatch.setattr(hog, "_BAND_PIXELS", band_pixels)
    reference = _straightforward_hog_blocks(image)
    np.testing.assert_allclose(hog.hog_blocks(image), reference, atol=2e-6)
    margins = hog._hog_svm_margins(image)
    assert margins.shape == (shape[0] // 8 - 15, shape[1] // 8 - 7) and margins.dtype == np.float32
    np.testing.assert_allclose(margins, _straightforward_margins(reference), atol=2e-5)


def test_hog_channel_ties_go_to_the_first_channel():
    # Blue varies along x only, green the same way along y only: on the diagonal both have the same gradient
    # magnitude at right angles, and blue (the first channel, as argmax and OpenCV pick) must win.
    profile = np.random.default_rng(2).integers(0, 256, 64).astype(np.uint8)
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0] = profile[None, :]
    image[..., 1] = profile[:, None]
    np.testing.assert_allclose(hog.hog_blocks(image), _straightforward_hog_blocks(image), atol=2e-6)


def test_hog_margins_of_a_single_window_use_its_descriptor():
    window = _reference_window()
    weights, bias = hog._hog_svm()
    expected = hog_window_descriptor(window) @ weights.transpose(1, 0, 2).reshape(-1) + bias
    margins = hog._hog_svm_margins(window)
    assert margins.shape == (1, 1)
    np.testing.assert_allclose(margins[0, 0], expected, atol=1e-5)
    assert hog._hog_svm_margins(window[:120]).shape == (0, 0)  # smaller than a window


def test_hog_raw_windows_match_the_reference_on_every_pyramid_level():
    frame = _colourful_image(150, 90, seed=5)
    detector = HOGPeopleDetector(backend="numpy")
    levels = []
    factor = detector.upscale
    while 150 * factor >= 128 and 90 * factor >= 64:  # the pyramid of _raw_windows, one level at a time
        size = (int(round(90 * factor)), int(round(150 * factor)))
        level = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        level = cv2.copyMakeBorder(level, 8, 8, 8, 8, cv2.BORDER_REFLECT_101)
        levels.append((factor, _straightforward_margins(_straightforward_hog_blocks(level))))
        factor /= detector.scale_step
    # No person here (margins ~ -3): a threshold halfway between the two middle margins keeps about half of the
    # windows, none of them on the fence.
    middle = np.sort(np.concatenate([margins.ravel() for _, margins in levels]))
    middle = middle[len(middle) // 2 - 1:len(middle) // 2 + 1]
    assert middle[1] - middle[0] > 1e-4
    detector.hit_threshold = float(middle.mean())
    expected_boxes, expected_margins = [], []
    for factor, margins in levels:
        for i, j in zip(*np.nonzero(margins >= detector.hit_threshold)):  # window (i, j): top-left (8 j, 8 i) - pad
            expected_boxes.append([(8 * j - 8) / factor, (8 * i - 8) / factor, 64 / factor, 128 / factor])
            expected_margins.append(margins[i, j])
    boxes, margins = detector._raw_windows(frame)
    assert len(levels) == 4 and boxes.shape == (len(expected_boxes), 4) and len(expected_boxes) > 50
    np.testing.assert_allclose(boxes, expected_boxes, atol=1e-4)
    np.testing.assert_allclose(margins, expected_margins, atol=2e-5)


# ------------------------------------------------------------------------------------------------------ box files


def test_coco_results_by_frame_index_with_category_and_score_filter(tmp_path):
    path = _write_json(tmp_path / "dets.json", [
        {"image_id": 0, "bbox": [1, 2, 30, 60], "score": 0.9, "category_id": 1},
        {"image_id": 0, "bbox": [5, 5, 10, 10], "score": 0.9, "category_id": 3},  # a car: ignored
        {"image_id": 2, "bbox": [10, 20, 30, 60], "score": 0.1, "category_id": 1},
        {"image_id": 2, "bbox": [11, 21, 31, 61], "score": 0.5, "category_id": 1},
    ])
    detector = BoxFileDetector(path, score_threshold=0.2)
    boxes, scores = detector.detect(FRAME, frame_index=0, frame_name="000000")
    np.testing.assert_allclose(boxes, [[1, 2, 30, 60]])
    np.testing.assert_allclose(scores, [0.9])
    assert detector.detect(FRAME, frame_index=1).boxes.shape == (0, 4)
    np.testing.assert_allclose(detector.detect(FRAME, frame_index=2).boxes, [[11, 21, 31, 61]])
    assert (detector.frames_seen, detector.frames_matched) == (3, 2)


def test_posewarper_list_with_several_sequences_needs_a_sequence(tmp_path):
    path = _write_json(tmp_path / "val_boxes.json", [
        {"image_name": "images/val/003418_mpii_test/000000.jpg", "bbox": [1, 1, 10, 20], "score": 0.8,
         "category_id": 1, "nframes": 10, "frame_id": 10034180000},
        {"image_name": "images/val/009473_mpii_test/000000.jpg", "bbox": [2, 2, 10, 20], "score": 0.7,
         "category_id": 1, "nframes": 10, "frame_id": 10094730000},
    ])
    detector = BoxFileDetector(path)
    assert detector.sequences == ["003418_mpii_test", "009473_mpii_test"]
    with pytest.raises(CommandError, match="2 sequences"):
        detector.detect(FRAME, 0, "000000.jpg")
    detector.select_sequence("009473_mpii_test")
    np.testing.assert_allclose(detector.detect(FRAME, 0, "000000.jpg").boxes, [[2, 2, 10, 20]])
    with pytest.raises(CommandError, match="no boxes for sequence 'street'"):
        detector.select_sequence("street")


def test_real_posetrack_detections_are_keyed_by_sequence_and_frame(posetrack18_sample):
    path = posetrack18_sample / "annotations" / "test_posetrack18_human_detections.json"
    records = json.loads(path.read_text())
    detector = BoxFileDetector(path)
    assert detector.sequences == ["003418", "009473", "012834"]
    detector.select_sequence("012834_mpii_test")
    boxes, scores = detector.detect(FRAME, 0, "000000.jpg")
    expected = [r for r in records if r["image_id"] == 10128340000 and r["category_id"] == 1 and r["score"] >= 0.2]
    assert len(boxes) == len(expected) > 0  # the default threshold is tdmi test's: 0.2
    np.testing.assert_allclose(boxes[0], expected[0]["bbox"], rtol=1e-6)
    np.testing.assert_allclose(scores, [r["score"] for r in expected], rtol=1e-6)


def test_posetrack_style_file_maps_image_ids_to_file_names(tmp_path):
    path = _write_json(tmp_path / "seq.json", {
        "images": [{"id": 7, "file_name": "images/val/seq/000003.jpg"}],
        "annotations": [{"image_id": 7, "bbox": [4, 5, 6, 7], "track_id": 0, "category_id": 1}],
    })
    detector = BoxFileDetector(path)
    boxes, scores = detector.detect(FRAME, 3, "000003.jpg")
    np.testing.assert_allclose(boxes, [[4, 5, 6, 7]])
    np.testing.assert_allclose(scores, [1.0])  # ground-truth boxes score 1


def test_tdmi_boxes_round_trip_is_atomic(tmp_path):
    frames = [(0, "000000", np.array([[1, 2, 3, 4]], np.float32), np.array([0.5])),
              (1, "000001", np.zeros((0, 4), np.float32), np.zeros(0)),
              (2, "000002", np.array([[5, 6, 7, 8], [9, 10, 11, 12]], np.float32), np.array([0.9, 0.8]))]
    out = tmp_path / "out" / "boxes.json"
    write_boxes_file(out, frames, source="street.mp4")
    assert sorted(p.name for p in out.parent.iterdir()) == ["boxes.json"]
    detector = BoxFileDetector(out)
    for index, name, boxes, scores in frames:
        got = detector.detect(FRAME, index, name)
        np.testing.assert_allclose(got.boxes, boxes.reshape(-1, 4))
        np.testing.assert_allclose(got.scores, scores, atol=1e-4)
    assert detector.frames_matched == 3  # the empty frame is known, not missing


# ------------------------------------------------------------------------------------------------------ selection


def test_make_detector_choices(tmp_path, monkeypatch):
    monkeypatch.setattr(detectors, "torchvision_weights_path", lambda name: None)
    boxes = _write_json(tmp_path / "b.json", [{"image_id": 0, "bbox": [0, 0, 5, 5], "score": 1.0}])
    detector, text = make_detector(None, str(boxes))
    assert isinstance(detector, BoxFileDetector) and "b.json" in text
    detector, text = make_detector(None, None)
    assert isinstance(detector, HOGPeopleDetector) and "weak" in text and "no torchvision" in text
    assert isinstance(make_detector("hog", None)[0], HOGPeopleDetector)
    with pytest.raises(CommandError, match="either a boxes file or a detector"):
        make_detector("hog", str(boxes))
    with pytest.raises(CommandError, match="unknown detector 'yolo'; choose one of: auto, hog"):
        make_detector("yolo", None)
    with pytest.raises(CommandError, match="never downloads"):
        make_detector("fasterrcnn_resnet50_fpn_v2", None)


def test_torchvision_detector_used_only_with_local_weights(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    # A stand-in torchvision: the real one is not a dependency. It checks that we look for the weights file in
    # the hub cache, load it with weights_only, and keep only confident "person" boxes as xywh.
    fake = types.ModuleType("torchvision")
    fake_models = types.ModuleType("torchvision.models")

    class TinyDetector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            return [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 120.0], [0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 9.0, 9.0]]),
                     "labels": torch.tensor([1, 3, 1]), "scores": torch.tensor([0.9, 0.99, 0.2]) + self.bias}]

    weights = types.SimpleNamespace(DEFAULT=types.SimpleNamespace(url="https://example.invalid/tiny-123.pth"))
    fake_models.get_model_weights = lambda name: weights
    fake_models.get_model = lambda name, weights=None, weights_backbone=None: TinyDetector()
    fake.models = fake_models
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.models", fake_models)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    assert detectors.torchvision_weights_path("fasterrcnn_resnet50_fpn_v2") is None  # not cached: not used
    assert isinstance(make_detector(None, None)[0], HOGPeopleDetector)

    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(TinyDetector().state_dict(), cache / "tiny-123.pth")
    detector, text = make_detector(None, None)
    assert isinstance(detector, detectors.TorchvisionDetector) and "tiny-123.pth" in text
    boxes, scores = detector.detect(np.zeros((200, 100, 3), np.uint8))
    np.testing.assert_allclose(boxes, [[10, 20, 40, 100]])
    np.testing.assert_allclose(scores, [0.9])


def test_hog_blocks_ignore_an_alpha_plane():
    rng = np.random.default_rng(5)
    bgr = cv2.GaussianBlur((rng.random((64, 48, 3)) * 255).astype(np.uint8), (5, 5), 1.5)
    alpha = (rng.random((64, 48, 1)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(hog.hog_blocks(np.concatenate([bgr, alpha], axis=2)), hog.hog_blocks(bgr))
