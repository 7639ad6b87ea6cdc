"""ONNX person detectors (tdmi.inference.onnx_detector): tiny models this test exports itself, one per layout."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tdmi.errors import CommandError  # noqa: E402
from tdmi.inference.detectors import make_detector  # noqa: E402
from tdmi.inference.onnx_detector import OnnxPersonDetector  # noqa: E402

SIZE = 160  # model input 160x160; frames are 320x320 (scale 0.5, no padding) or 320x240 (padding)


def _export(module: nn.Module, path: Path, outputs: list[str]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=outputs)
    return path


def _channel0_score(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """A score that reveals the preprocessing: (mean of input channel 0 + a) / b."""
    return (x[:, 0].mean(dim=(1, 2)) + a) / b


class YoloV8Like(nn.Module):
    """[1, 84, 4] rows cx cy w h + 80 class scores: a person, its duplicate, a weak person, a car."""

    def forward(self, x):
        boxes = torch.tensor([[40.0, 50.0, 20.0, 40.0], [41.0, 51.0, 20.0, 40.0], [100.0, 100.0, 20.0, 20.0],
                              [120.0, 40.0, 30.0, 20.0]])
        classes = torch.zeros(4, 80)
        classes[0, 0] = 1.0
        classes[1, 0] = 0.8
        classes[2, 0] = 0.1
        classes[3, 2] = 0.95  # a car
        rows = torch.cat([boxes, classes], dim=1)
        rows = rows * torch.ones_like(x[:, :1, :1, :1]).reshape(1, 1)  # keep the graph input-dependent
        rows = rows.clone()
        rows[0, 4] = _channel0_score(x, 0.0, 1.0)[0]  # RGB / 255: the red of the frame
        return rows.T.unsqueeze(0)


class YoloxDecoded(nn.Module):
    """[1, 3, 85] rows cx cy w h obj + 80 class scores."""

    def forward(self, x):
        rows = torch.zeros(3, 85)
        rows[0, :5] = torch.tensor([40.0, 50.0, 20.0, 40.0, 0.9])
        rows[0, 5] = 1.0
        rows[1, :5] = torch.tensor([40.5, 50.5, 20.0, 40.0, 0.8])  # a duplicate
        rows[1, 5] = 1.0
        rows[2, :5] = torch.tensor([100.0, 100.0, 30.0, 30.0, 0.9])
        rows[2, 6] = 1.0  # a bicycle
        return (rows + 0 * x.mean()).unsqueeze(0)


class End2End(nn.Module):
    """mmdeploy end2end: dets [1, 2, 5] (x1 y1 x2 y2 score) and labels [1, 2]."""

    def forward(self, x):
        score = _channel0_score(x, 3.0, 5.0)  # rtmdet: (B - 103.53) / 57.375
        dets = torch.stack([torch.cat([torch.tensor([30.0, 30.0, 50.0, 70.0]), score]),
                            torch.tensor([0.0, 0.0, 10.0, 10.0, 0.99])]).unsqueeze(0)
        labels = torch.tensor([[0, 5]], dtype=torch.int64)
        return dets, labels


def _frame(width: int, height: int, bgr=(200, 0, 200)) -> np.ndarray:
    return np.full((height, width, 3), bgr, np.uint8)


def test_yolov8_layout_rgb_over_255_nms_and_classes(tmp_path):
    path = _export(YoloV8Like(), tmp_path / "yolov8n.onnx", ["output0"])
    detector = OnnxPersonDetector(path)
    assert detector.layout == "yolov8" and not detector.end2end and detector.input_size == (160, 160)
    found = detector.detect(_frame(320, 320, bgr=(0, 0, 204)))  # red 204 -> channel 0 = 0.8
    np.testing.assert_allclose(found.scores, [0.8], atol=1e-4)  # duplicate merged, weak and car dropped
    np.testing.assert_allclose(found.boxes, [[60.0, 60.0, 40.0, 80.0]], atol=1e-4)  # (cx-w/2, cy-h/2) x 2


def test_yolox_decoded_layout_with_a_letterbox_at_the_top_left(tmp_path):
    detector = OnnxPersonDetector(_export(YoloxDecoded(), tmp_path / "yolox_s.onnx", ["output"]))
    assert detector.layout == "yolox"
    found = detector.detect(_frame(320, 240))  # scale 0.5; the image fills the top of the input
    np.testing.assert_allclose(found.scores, [0.9], atol=1e-6)
    np.testing.assert_allclose(found.boxes, [[60.0, 60.0, 40.0, 80.0]], atol=1e-4)


def test_end2end_rtmdet_normalisation_and_label_filter(tmp_path):
    path = _export(End2End(), tmp_path / "rtmdet_m_person.onnx", ["dets", "labels"])
    detector = OnnxPersonDetector(path)
    assert (detector.layout, detector.end2end) == ("rtmdet", True)
    found = detector.detect(_frame(320, 320, bgr=(200, 0, 0)))
    expected = ((200 - 103.53) / 57.375 + 3) / 5
    np.testing.assert_allclose(found.scores, [expected], rtol=1e-4)  # the label-5 box is not a person
    np.testing.assert_allclose(found.boxes, [[60.0, 60.0, 40.0, 80.0]], atol=1e-4)
    as_yolox = OnnxPersonDetector(path, layout="yolox")  # BGR 0-255: channel 0 = 200
    np.testing.assert_allclose(as_yolox.detect(_frame(320, 320, bgr=(200, 0, 0))).scores, [(200 + 3) / 5], rtol=1e-5)


def test_make_detector_takes_an_onnx_path_and_names_problems(tmp_path):
    path = _export(YoloxDecoded(), tmp_path / "yolox_s.onnx", ["output"])
    detector, text = make_detector(str(path), None)
    assert isinstance(detector, OnnxPersonDetector) and "yolox_s.onnx" in text
    with pytest.raises(CommandError, match="no such ONNX detector file"):
        make_detector(str(tmp_path / "missing.onnx"), None)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(CommandError, match="onnxruntime cannot load it"):
        make_detector(str(broken), None)
    with pytest.raises(CommandError, match="end2end exports"):
        OnnxPersonDetector(path, layout="rtmdet")
