"""Person detectors for ``tdmi infer``: box files, a built-in HOG people detector, torchvision models if present.

TDMI is top-down (``model-facts.md`` (e): boxes enlarged 25% crop the clip), so video inference needs person
boxes. Users ask for a built-in detector and for using precomputed boxes (``user-needs.md`` sections 7 and 9);
the published numbers use PoseWarper's precomputed boxes (``posetrack-facts.md`` section 4.2), so a box file
is the right choice whenever one exists. Every detector has one method::

    detect(frame_bgr [H, W, 3] uint8, frame_index=None, frame_name=None) -> Detections(boxes [N, 4], scores [N])

with boxes float32 ``[x, y, w, h]`` in frame pixels and scores float32 in (0, 1]. Image detectors ignore the
index and name; box files use them as keys. :func:`make_detector` picks one and returns a line for the CLI.

Detectors, best first:

- :class:`BoxFileDetector`: any box file :func:`tdmi.data.box_files.read_box_file` reads (COCO results,
  DCPose/PoseWarper lists, PoseTrack-style files, and the per-frame ``tdmi-boxes`` file our ``infer`` writes,
  :func:`write_boxes_file`), with the same defaults as ``tdmi test --boxes``. Records are keyed by file name
  (sequence folder and frame stem), by PoseTrack image id (sequence number and frame), or else by frame index.
- :class:`TorchvisionDetector`: a torchvision COCO detector, only when torchvision imports AND its weights
  file is already in the torch hub cache (``torch.hub.get_dir()/checkpoints``). Nothing is ever downloaded.
- :class:`HOGPeopleDetector`: Dalal & Triggs' HOG + linear SVM for upright people (CVPR 2005), the model
  OpenCV ships as ``HOGDescriptor.getDefaultPeopleDetector()``. It needs no download but it is WEAK: it misses
  small, occluded, sitting and non-upright people. Uses ``cv2.HOGDescriptor`` when the installed OpenCV has
  it (4.x) and otherwise a NumPy port of the same descriptor with the same SVM coefficients
  (``tdmi/weights/hog_people_svm.json``; OpenCV 5 moved HOG out of the main package). The port matches
  OpenCV 4.10's descriptor to 2e-4 (``tests/test_detectors.py``).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Protocol

import cv2
import numpy as np

from tdmi.data.box_files import DEFAULT_SCORE_THRESHOLD, read_box_file
from tdmi.data.fileio import atomic_write_json
from tdmi.errors import CommandError
from tdmi.inference.boxes import as_boxes, iou_matrix, nms

#: COCO category id of "person" (COCO results files and torchvision's COCO detectors).
PERSON_CATEGORY = 1

#: torchvision detectors tried by ``make_detector("auto")`` (best first) when their weights are cached locally.
TORCHVISION_DETECTORS = (
    "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "fasterrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn", "ssdlite320_mobilenet_v3_large",
)

DETECTOR_NAMES = ("auto", "hog") + TORCHVISION_DETECTORS


class Detections(NamedTuple):
    """Person boxes of one frame: ``boxes`` float32 ``[N, 4]`` xywh pixels, ``scores`` float32 ``[N]``."""

    boxes: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


class PersonDetector(Protocol):
    """What :func:`make_detector` returns."""

    description: str

    def detect(self, frame_bgr: np.ndarray, frame_index: Optional[int] = None,
               frame_name: Optional[str] = None) -> Detections:
        ...


# ------------------------------------------------------------------------------------------------------- box files


def _record_key(name: str) -> tuple[str, str]:
    """(sequence folder, frame stem) of a file name such as ``images/val/003418_mpii_test/000012.jpg``."""
    path = Path(name.replace("\\", "/"))
    return path.parent.name, path.stem


def _posetrack_image_name(image_id: int) -> Optional[str]:
    """``<sequence>/<frame>`` of a PoseTrack18 image id (T*10^10 + S*10^4 + F, ``posetrack-facts.md`` section 2),
    e.g. 10128340012 -> ``012834/000012``; None for ids too small to be one (then the id is the frame index)."""
    if image_id < 10**8:
        return None
    return f"{(image_id // 10**4) % 10**6:06d}/{image_id % 10**4:06d}"


class BoxFileDetector:
    """Boxes read from a box file, looked up by frame name (preferred) or frame index.

    The file is read by :func:`tdmi.data.box_files.read_box_file`, with the layouts, defaults and errors that
    ``tdmi test --boxes`` uses too. A video frame has no image id, so records are keyed here by (sequence
    folder, frame stem) when the file names the frame (a path, a PoseTrack image id, a ``tdmi-boxes`` name) and
    else by frame index (a small COCO ``image_id``, a ``tdmi-boxes`` index). Frames the file does not list have
    no people. Files that hold several sequences (PoseWarper's ``val_boxes.json``) need
    :meth:`select_sequence` with the folder name of the frames being processed.

    Args:
        path: the box file.
        score_threshold: boxes scoring below this are dropped (default 0.2, DCPose/FAMI's on PoseWarper's boxes).
    """

    def __init__(self, path: str | os.PathLike, score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> None:
        self.path = Path(path)
        self.score_threshold = score_threshold
        self._by_name: dict[tuple[str, str], list[tuple[np.ndarray, float]]] = {}
        self._by_index: dict[int, list[tuple[np.ndarray, float]]] = {}
        self.sequence: Optional[str] = None
        self.frames_seen = 0
        self.frames_matched = 0
        for record in read_box_file(self.path):
            name = record.image_name
            index = record.frame_index
            if name is None and record.image_id is not None:
                name = _posetrack_image_name(record.image_id)
                index = record.image_id if name is None else None
            # a frame is listed even when all of its boxes fall below the threshold: it has no people
            entries = self._by_name.setdefault(_record_key(name), []) if name is not None \
                else self._by_index.setdefault(int(index), [])
            if record.bbox is not None and record.score >= score_threshold:
                entries.append((record.bbox, record.score))
        self.sequences = sorted({seq for seq, _ in self._by_name})  # "" for names without a folder
        count = sum(len(v) for v in self._by_name.values()) + sum(len(v) for v in self._by_index.values())
        self.description = (f"boxes from {self.path.name} ({count} boxes, "
                            f"{len(self._by_name) + len(self._by_index)} frames, score >= {score_threshold:g})")

    def select_sequence(self, sequence: Optional[str]) -> None:
        """Restrict name look-ups to one sequence (needed when the file holds several).

        ``sequence`` is the folder or video name of the frames; a file keyed by PoseTrack image ids lists
        sequences by number (``012834``), which matches ``012834_mpii_test`` too.
        """
        if sequence is None or not self.sequences:
            self.sequence = None
            return
        stem = Path(sequence).stem
        candidates = [s for s in self.sequences if s in (sequence, stem, stem.split("_")[0])]
        if len(candidates) != 1:
            shown = ", ".join(self.sequences[:5]) + (" ..." if len(self.sequences) > 5 else "")
            raise CommandError(f"{self.path}: has no boxes for sequence {sequence!r}; it lists: {shown}")
        self.sequence = candidates[0]

    def detect(self, frame_bgr: np.ndarray, frame_index: Optional[int] = None,
               frame_name: Optional[str] = None) -> Detections:
        self.frames_seen += 1
        entries = None
        if frame_name is not None and self._by_name:
            sequence = self.sequence
            if sequence is None:
                if len(self.sequences) > 1:
                    raise CommandError(f"{self.path}: holds boxes of {len(self.sequences)} sequences; say which "
                                       f"one (BoxFileDetector.select_sequence)")
                sequence = self.sequences[0]
            entries = self._by_name.get((sequence, Path(frame_name).stem))
        if entries is None and frame_index is not None:
            entries = self._by_index.get(int(frame_index))
        if entries is None:
            return Detections.empty()
        self.frames_matched += 1
        if not entries:
            return Detections.empty()
        return Detections(np.asarray([e[0] for e in entries], np.float32), np.asarray([e[1] for e in entries],
                                                                                         np.float32))


def write_boxes_file(path: str | os.PathLike, frames: Iterable[tuple[int, str, np.ndarray, np.ndarray]],
                     source: str = "", *, exact: bool = False, extra: Optional[dict] = None) -> None:
    """Write per-frame boxes as a ``tdmi-boxes`` JSON file (atomically) that :class:`BoxFileDetector` reads.

    Args:
        frames: ``(index, name, boxes [N, 4] xywh, scores [N])`` per frame.
        source: name of the video or folder the frames came from (kept as the sequence name).
        exact: keep every float32 digit (a detection cache must give back exactly what the detector said);
            else boxes are rounded to 0.01 px and scores to 1e-4, which is plenty for a file people read.
        extra: more top-level fields (e.g. the cache's key); they never override the format fields.
    """
    def numbers(values: np.ndarray, decimals: int) -> list:
        values = np.asarray(values, np.float32)
        return values.astype(np.float64).tolist() if exact else np.round(values.astype(np.float64), decimals).tolist()

    doc = {**(extra or {}), "format": "tdmi-boxes", "version": 1, "source": source, "frames": [
        {"index": int(index), "name": name, "boxes": numbers(as_boxes(boxes), 2), "scores": numbers(scores, 4)}
        for index, name, boxes, scores in frames]}
    atomic_write_json(Path(path), doc)


# ------------------------------------------------------------------------------------------------------------ HOG

_CELL = 8
_NBINS = 9
_WINDOW_W, _WINDOW_H = 64, 128
_BLOCKS_X, _BLOCKS_Y = 7, 15  # 16x16 blocks at stride 8 in a 64x128 window


@lru_cache(maxsize=1)
def _hog_svm() -> tuple[np.ndarray, float]:
    """The people SVM as ``[blocks_y, blocks_x, 36]`` weights and a bias (see the JSON file's ``layout``)."""
    with resources.files("tdmi").joinpath("weights").joinpath("hog_people_svm.json").open("r", encoding="utf-8") as f:
        doc = json.load(f)
    weights = np.asarray(doc["weights"], np.float32).reshape(_BLOCKS_X, _BLOCKS_Y, 36).transpose(1, 0, 2)
    return np.ascontiguousarray(weights), float(doc["bias"])


_SQRT_LUT_ROW = np.sqrt(np.arange(256, dtype=np.float32)).reshape(1, 256)  # cv2.LUT's table shape
_GRADIENT_KERNEL = np.array([[-1.0, 0.0, 1.0]], np.float32)


@lru_cache(maxsize=1)
def _block_profile() -> np.ndarray:
    """``[8, 4]``: weight of pixel ``u`` of a tile for (cell 0, cell 1) when the tile is the first half of a
    block, then (cell 0, cell 1) when it is the second half. Along one axis a pixel at offset ``o`` in the
    16 px block votes for cell ``c`` with a bilinear ("tent") weight to the cell centre times a Gaussian of
    sigma 4 about the block centre (Dalal & Triggs; OpenCV's ``winSigma = (16 + 16) / 8``). Both factors are
    separable, so a block histogram is two small matrix products instead of a 16x16 loop.
    """
    offset = np.arange(16)
    tent = np.maximum(0.0, 1.0 - np.abs((offset + 0.5) / _CELL - 0.5 - np.arange(2)[:, None]))  # [cell, 16]
    profile = tent * np.exp(-((offset - 8.0) ** 2) / (2 * 4.0**2))
    return np.concatenate([profile[:, :_CELL], profile[:, _CELL:]], axis=0).T.astype(np.float32)


def hog_blocks(image_bgr: np.ndarray) -> np.ndarray:
    """Normalised HOG blocks of a whole image: uint8 ``[H, W, 3]`` -> float32 ``[H/8 - 1, W/8 - 1, 36]``.

    Block ``(by, bx)`` covers pixels ``[8 by, 8 by + 16) x [8 bx, 8 bx + 16)``; its 36 values are ordered
    (cell_x, cell_y, orientation bin). Steps: square-root gamma; centred [-1, 0, 1] gradients per channel,
    keeping the channel of largest magnitude; 9 unsigned orientation bins with linear vote interpolation;
    Gaussian-weighted bilinear votes into the 2x2 cells of each block; L2-Hys normalisation (clip 0.2).

    Speed (it runs on every pyramid level of every frame): the votes are scattered straight into the layout
    ``[row, tile_x, bin, pixel-in-tile]``, so that each spatial profile is ONE matrix product over all pixels
    instead of a stack of tiny ones, and the channel choice uses ``where`` instead of ``argmax`` + gather.
    """
    image = cv2.LUT(image_bgr, _SQRT_LUT_ROW)
    dx = cv2.filter2D(image, cv2.CV_32F, _GRADIENT_KERNEL, borderType=cv2.BORDER_REFLECT_101)
    dy = cv2.filter2D(image, cv2.CV_32F, _GRADIENT_KERNEL.T, borderType=cv2.BORDER_REFLECT_101)
    squared = dx * dx + dy * dy
    best_dx, best_dy, best = dx[..., 0], dy[..., 0], squared[..., 0]
    for c in (1, 2):  # the first channel wins ties, as argmax would
        larger = squared[..., c] > best
        best = np.where(larger, squared[..., c], best)
        best_dx = np.where(larger, dx[..., c], best_dx)
        best_dy = np.where(larger, dy[..., c], best_dy)
    magnitude, angle = cv2.cartToPolar(best_dx, best_dy)  # angle in [0, 2 pi): unsigned bins wrap modulo 9
    height, width = magnitude.shape
    tiles_y, tiles_x = height // _CELL, width // _CELL
    magnitude = magnitude[: tiles_y * _CELL, : tiles_x * _CELL]
    angle = angle[: tiles_y * _CELL, : tiles_x * _CELL] * np.float32(_NBINS / np.pi) - np.float32(0.5)
    lower = np.floor(angle)  # bin centres at 10, 30, ... degrees
    upper_vote = magnitude * (angle - lower)
    lower_vote = magnitude - upper_vote
    lower_bin = lower.astype(np.int32) % _NBINS
    upper_bin = lower_bin + 1
    upper_bin[upper_bin == _NBINS] = 0  # never equal to lower_bin, so the two scatters never collide
    row = np.arange(tiles_y * _CELL, dtype=np.int32)[:, None] * (tiles_x * _NBINS * _CELL)
    column = np.arange(tiles_x * _CELL, dtype=np.int32)
    base = row + (column // _CELL) * (_NBINS * _CELL) + column % _CELL  # [H, W] -> [row, tile_x, 0, u]
    votes = np.zeros(tiles_y * tiles_x * _CELL * _CELL * _NBINS, np.float32)
    votes[(base + lower_bin * _CELL).ravel()] = lower_vote.ravel()
    votes[(base + upper_bin * _CELL).ravel()] = upper_vote.ravel()

    profile = _block_profile()
    # Along x: every tile's share as the first and as the second half of a block, paired into blocks.
    along_x = (votes.reshape(-1, _CELL) @ profile).reshape(tiles_y * _CELL, tiles_x, _NBINS, 4)
    along_x = along_x[:, :-1, :, :2] + along_x[:, 1:, :, 2:]  # [H, blocks_x, 9, cell_x]
    blocks_x = tiles_x - 1
    # Along y: the same with the pixel rows of each tile last.
    along_y = np.ascontiguousarray(along_x.reshape(tiles_y, _CELL, blocks_x, _NBINS, 2).transpose(0, 2, 3, 4, 1))
    along_y = (along_y.reshape(-1, _CELL) @ profile).reshape(tiles_y, blocks_x, _NBINS, 2, 4)
    blocks = along_y[:-1, ..., :2] + along_y[1:, ..., 2:]  # [blocks_y, blocks_x, 9, cell_x, cell_y]
    blocks = blocks.transpose(0, 1, 3, 4, 2).reshape(tiles_y - 1, blocks_x, 36)
    blocks = blocks / (np.sqrt((blocks * blocks).sum(-1, keepdims=True)) + 36 * 0.1)
    blocks = np.minimum(blocks, 0.2)
    return blocks / (np.sqrt((blocks * blocks).sum(-1, keepdims=True)) + 1e-3)


def hog_window_descriptor(window_bgr: np.ndarray) -> np.ndarray:
    """HOG descriptor of one 64x128 window in OpenCV's layout: uint8 ``[128, 64, 3]`` -> float32 ``[3780]``."""
    if window_bgr.shape[:2] != (_WINDOW_H, _WINDOW_W):
        raise ValueError(f"a HOG window is {_WINDOW_W}x{_WINDOW_H}, got {window_bgr.shape[1]}x{window_bgr.shape[0]}")
    return hog_blocks(window_bgr).transpose(1, 0, 2).reshape(-1)


def _hog_svm_margins(image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SVM margin of every 64x128 window at an 8-pixel stride -> (margins [K], top-left corners [K, 2] x, y)."""
    blocks = hog_blocks(image_bgr)
    if blocks.shape[0] < _BLOCKS_Y or blocks.shape[1] < _BLOCKS_X:
        return np.zeros((0,), np.float32), np.zeros((0, 2), np.float32)
    weights, bias = _hog_svm()
    # Score of every block under every one of the 105 block slots of the window, then sum the shifted slots.
    per_slot = blocks @ weights.reshape(-1, 36).T  # [by, bx, 15 * 7]
    ny, nx = blocks.shape[0] - _BLOCKS_Y + 1, blocks.shape[1] - _BLOCKS_X + 1
    margins = np.full((ny, nx), bias, np.float32)
    for a in range(_BLOCKS_Y):
        for b in range(_BLOCKS_X):
            margins += per_slot[a:a + ny, b:b + nx, a * _BLOCKS_X + b]
    ys, xs = np.mgrid[0:margins.shape[0], 0:margins.shape[1]]
    corners = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * _CELL
    return margins.ravel().astype(np.float32), corners


class HOGPeopleDetector:
    """Dalal-Triggs HOG people detector, multi-scale, with NMS and scores in (0, 1). A WEAK detector.

    Args:
        hit_threshold: minimum SVM margin of a window (0 is the SVM's decision boundary).
        min_person_height: smallest person height (pixels) to find; the image is enlarged when this is below
            the ~96 px a person fills in the 128 px training window.
        scale_step: ratio between pyramid levels (smaller: slower, finds more sizes).
        nms_iou: windows overlapping a better one by more than this are merged into it; so are windows that
            nest with a better one (80% of the smaller inside the larger), the same person at another scale.
        min_support: a detection must be backed by at least this many raw windows (across positions and scales)
            with IoU > 0.5; isolated single-window hits are mostly background clutter.
        max_people: cap on detections per frame.
        backend: ``auto`` (OpenCV's HOGDescriptor when present, else NumPy), ``opencv`` or ``numpy``.

    Scores are ``sigmoid(2 * margin)``, so the decision boundary maps to 0.5 and a clear hit (margin 1.5)
    to 0.95. Boxes are the detection window shrunk to the person inside it (the training windows have a
    16 px margin above and below a ~96 px person).
    """

    def __init__(self, *, hit_threshold: float = 0.0, min_person_height: float = 80.0, scale_step: float = 1.1,
                 nms_iou: float = 0.4, min_support: int = 2, max_people: int = 50, backend: str = "auto") -> None:
        if backend not in ("auto", "opencv", "numpy"):
            raise CommandError(f"HOG backend must be auto, opencv or numpy, got {backend!r}")
        if scale_step <= 1.0:
            raise CommandError(f"HOG scale_step must be > 1, got {scale_step}")
        has_opencv_hog = hasattr(cv2, "HOGDescriptor")
        if backend == "opencv" and not has_opencv_hog:
            raise CommandError(f"this OpenCV ({cv2.__version__}) has no HOGDescriptor; use backend='numpy'")
        self.backend = "opencv" if backend == "opencv" or (backend == "auto" and has_opencv_hog) else "numpy"
        self.hit_threshold = hit_threshold
        self.upscale = max(1.0, 96.0 / float(min_person_height))
        self.scale_step = scale_step
        self.nms_iou = nms_iou
        self.min_support = min_support
        self.max_people = max_people
        self._opencv_hog = None
        if self.backend == "opencv":
            self._opencv_hog = cv2.HOGDescriptor()
            self._opencv_hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.description = (f"OpenCV HOG people detector ({self.backend} backend; weak: misses small, occluded and "
                            f"non-upright people; use --boxes with a stronger detector's output for evaluations)")

    def _raw_windows(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All windows above the hit threshold -> (boxes [K, 4] xywh in frame pixels, margins [K])."""
        height, width = frame_bgr.shape[:2]
        pad = _CELL  # windows may start one cell outside the frame, for people cut by the border
        if self._opencv_hog is not None:
            image = frame_bgr if self.upscale == 1.0 else cv2.resize(frame_bgr, None, fx=self.upscale,
                                                                     fy=self.upscale, interpolation=cv2.INTER_LINEAR)
            rects, weights = self._opencv_hog.detectMultiScale(image, hitThreshold=self.hit_threshold,
                                                               winStride=(_CELL, _CELL), padding=(pad, pad),
                                                               scale=self.scale_step, groupThreshold=0)
            boxes = np.asarray(rects, np.float32).reshape(-1, 4) / self.upscale
            return boxes, np.asarray(weights, np.float32).reshape(-1)
        all_boxes, all_margins = [], []
        factor = self.upscale
        while height * factor >= _WINDOW_H and width * factor >= _WINDOW_W:
            size = (int(round(width * factor)), int(round(height * factor)))
            scaled = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
            scaled = cv2.copyMakeBorder(scaled, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
            margins, corners = _hog_svm_margins(scaled)
            hit = margins >= self.hit_threshold
            if hit.any():
                xy = (corners[hit] - pad) / factor
                wh = np.broadcast_to(np.float32([_WINDOW_W, _WINDOW_H]) / factor, xy.shape)
                all_boxes.append(np.concatenate([xy, wh], axis=1))
                all_margins.append(margins[hit])
            factor /= self.scale_step
        if not all_boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        return np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_margins)

    def detect(self, frame_bgr: np.ndarray, frame_index: Optional[int] = None,
               frame_name: Optional[str] = None) -> Detections:
        if frame_bgr.ndim == 2:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
        elif frame_bgr.shape[2] == 4:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2BGR)
        windows, margins = self._raw_windows(np.ascontiguousarray(frame_bgr, dtype=np.uint8))
        if windows.shape[0] == 0:
            return Detections.empty()
        keep = nms(windows, margins, self.nms_iou, containment_threshold=0.8)
        cluster = iou_matrix(windows[keep], windows) > 0.5  # [kept, raw]: the windows backing each detection
        supported = cluster.sum(axis=1) >= self.min_support
        keep, cluster = keep[supported][: self.max_people], cluster[supported][: self.max_people]
        # The margin-weighted mean of a detection's windows is steadier from frame to frame than its best
        # window alone, which jumps between pyramid levels.
        weights = cluster * np.maximum(margins - self.hit_threshold, 1e-3)[None, :]
        boxes = (weights @ windows) / weights.sum(axis=1, keepdims=True)
        boxes[:, 0] += 0.15 * boxes[:, 2]
        boxes[:, 1] += 0.1 * boxes[:, 3]
        boxes[:, 2] *= 0.7
        boxes[:, 3] *= 0.8
        scores = 1.0 / (1.0 + np.exp(-2.0 * margins[keep]))
        return Detections(boxes.astype(np.float32), scores.astype(np.float32))


# ---------------------------------------------------------------------------------------------------- torchvision


def torchvision_weights_path(model_name: str) -> Optional[Path]:
    """Local path of the default COCO weights of a torchvision detector, or None when torchvision is not
    installed, does not know the model, or the file is not in the torch hub cache. Never downloads."""
    try:
        import torch
        import torchvision  # noqa: F401
        from torchvision.models import get_model_weights
    except Exception:  # torchvision missing or broken (e.g. built for another torch): treat as absent
        return None
    try:
        url = get_model_weights(model_name).DEFAULT.url
    except Exception:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return path if path.is_file() else None


class TorchvisionDetector:
    """A torchvision COCO detector built without weights and loaded from a local file (``weights_only``)."""

    def __init__(self, model_name: str, weights_path: Path, device: str = "cpu", score_threshold: float = 0.5,
                 max_people: int = 50) -> None:
        import torch
        from torchvision.models import get_model

        self.torch = torch
        self.device = torch.device(device)
        model = get_model(model_name, weights=None, weights_backbone=None)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(self.device)
        self.score_threshold = score_threshold
        self.max_people = max_people
        self.description = f"torchvision {model_name} (COCO person class, weights {weights_path.name}, " \
                           f"score >= {score_threshold:g})"

    def detect(self, frame_bgr: np.ndarray, frame_index: Optional[int] = None,
               frame_name: Optional[str] = None) -> Detections:
        torch = self.torch
        rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
        image = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float().div_(255.0)
        with torch.inference_mode():
            output = self.model([image])[0]
        labels = output["labels"].cpu().numpy()
        scores = output["scores"].float().cpu().numpy()
        xyxy = output["boxes"].float().cpu().numpy()
        keep = np.flatnonzero((labels == PERSON_CATEGORY) & (scores >= self.score_threshold))
        keep = keep[np.argsort(-scores[keep], kind="stable")][: self.max_people]
        boxes = xyxy[keep].copy()
        boxes[:, 2:] -= boxes[:, :2]
        return Detections(boxes.astype(np.float32), scores[keep].astype(np.float32))


# ----------------------------------------------------------------------------------------------------- selection


def make_detector(name: Optional[str], boxes_file: Optional[str], *, device: str = "cpu",
                  box_score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                  layout: str = "auto") -> tuple[PersonDetector, str]:
    """Choose a detector and say which, for the CLI to print.

    Args:
        name: None or ``auto`` (a box file if given, else the best torchvision detector whose weights are cached
            locally, else HOG), ``hog``, one of :data:`TORCHVISION_DETECTORS`, or a path to an ``.onnx`` person
            detector (:class:`tdmi.inference.onnx_detector.OnnxPersonDetector`).
        layout: the ONNX file's layout (``auto``, ``yolox``, ``rtmdet``, ``yolov8``).
        boxes_file: a box file (see :class:`BoxFileDetector`); excludes ``name``.
        device: device for torchvision detectors.
        box_score_threshold: drop box-file records scoring below this (``data.box_score_threshold``).

    Returns:
        ``(detector, description)``.
    """
    if boxes_file is not None:
        if name not in (None, "auto"):
            raise CommandError(f"give either a boxes file or a detector, not both (got --boxes {boxes_file} and "
                               f"--detector {name})")
        detector: PersonDetector = BoxFileDetector(boxes_file, score_threshold=box_score_threshold)
        return detector, detector.description
    name = name or "auto"
    if name.lower().endswith(".onnx"):
        from tdmi.inference.onnx_detector import OnnxPersonDetector

        detector = OnnxPersonDetector(name, layout=layout)
        return detector, detector.description
    if name not in DETECTOR_NAMES:
        raise CommandError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTOR_NAMES)}, or a path to "
                           f"an .onnx person detector (YOLOX, RTMDet, YOLOv8)")
    if name == "auto":
        for candidate in TORCHVISION_DETECTORS:
            weights = torchvision_weights_path(candidate)
            if weights is not None:
                detector = TorchvisionDetector(candidate, weights, device=device)
                return detector, detector.description
        detector = HOGPeopleDetector()
        return detector, detector.description + " [no torchvision detector with local weights found]"
    if name == "hog":
        detector = HOGPeopleDetector()
        return detector, detector.description
    weights = torchvision_weights_path(name)
    if weights is None:
        raise CommandError(f"detector {name!r} needs torchvision and its COCO weights already in the torch hub cache "
                           f"(tdmi never downloads); install torchvision and place the weights file under "
                           f"$TORCH_HOME/hub/checkpoints, or use --detector hog or --boxes FILE")
    detector = TorchvisionDetector(name, weights, device=device)
    return detector, detector.description
