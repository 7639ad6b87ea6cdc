"""Helpers for the inference tests (imported as a plain module: pytest puts tests/ on sys.path): a tiny model, moving
people on synthetic frames, and a detector that returns given boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from tdmi.config import ExperimentConfig, load_config
from tdmi.inference.detectors import Detections
from tdmi.inference.sources import SourceFrame
from tdmi.models.tdmi import build_model

TINY_MODEL = ("model.input_size=[64, 64]", "model.heatmap_size=[16, 16]", "model.backbone.width=4",
              "model.tde.channels=8", "model.tde.deform_groups=4", "model.tde.blocks_per_stage=[1, 1, 1, 1]",
              "model.fusion_blocks=1")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine two OpenMP threads made these runs 20-50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(delta: int = 2, seed: int = 0) -> tuple[nn.Module, ExperimentConfig]:
    """A width-4 TDMI at 64x64 whose convolutions have Kaiming weights, so heatmaps are O(1) and argmaxes are not
    decided by rounding noise (the default head init gives maxima of ~1e-13)."""
    cfg = load_config(None, [*TINY_MODEL, f"model.delta={delta}"])
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval(), cfg


def moving_boxes(frames: int, people: int = 2, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """Per frame ``[people, 4]`` xywh boxes of people walking right (inside the frame)."""
    width, height = size
    out = []
    for t in range(frames):
        boxes = [[10 + 25 * p + 3 * t, 10 + 8 * p, 24 + 2 * p, 60 + 4 * p] for p in range(people)]
        out.append(np.asarray(boxes, np.float32))
    return out


def frames_with_people(boxes: Sequence[np.ndarray], size: tuple[int, int] = (160, 120),
                       seed: int = 0) -> list[np.ndarray]:
    """Noise frames with a filled rectangle per box, so that crops differ from frame to frame."""
    rng = np.random.default_rng(seed)
    width, height = size
    images = []
    for frame_boxes in boxes:
        image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        for i, (x, y, w, h) in enumerate(frame_boxes):
            colour = (60 + 60 * i, 200 - 40 * i, 120)
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
        images.append(image)
    return images


def source_frames(images: Sequence[np.ndarray]) -> list[SourceFrame]:
    return [SourceFrame(i, image, i / 30.0, f"{i:06d}.jpg") for i, image in enumerate(images)]


class ListDetector:
    """Returns ``boxes[frame_index]`` with score ``score``; counts calls."""

    description = "test boxes"

    def __init__(self, boxes: Sequence[np.ndarray], score: float = 0.9) -> None:
        self.boxes = list(boxes)
        self.score = score
        self.calls = 0

    def detect(self, frame_bgr: np.ndarray, frame_index: Optional[int] = None,
               frame_name: Optional[str] = None) -> Detections:
        self.calls += 1
        if frame_index is None or frame_index >= len(self.boxes) or len(self.boxes[frame_index]) == 0:
            return Detections.empty()
        boxes = np.asarray(self.boxes[frame_index], np.float32)
        return Detections(boxes, np.full(len(boxes), self.score, np.float32))


class EncodeCounter:
    """Wraps ``model.encode`` and records every encoded crop (a fingerprint of its pixels)."""

    def __init__(self, model: nn.Module) -> None:
        self.crops: list[bytes] = []
        self._encode = model.encode
        model.encode = self

    def __call__(self, frames: torch.Tensor):
        for crop in frames:
            self.crops.append(crop.numpy().round(4).tobytes())
        return self._encode(frames)


def write_frames(folder: Path, images: Sequence[np.ndarray], names: Optional[Sequence[str]] = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / (names[i] if names else f"{i:06d}.jpg")), image)
    return folder
