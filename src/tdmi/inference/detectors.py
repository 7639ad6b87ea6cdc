"""Person detectors for ``tdmi infer``: box files, a built-in HOG people detector, torchvision models if present.

TDMI is top-down (``docs/facts/model-facts.md`` (e): boxes enlarged 25% crop the clip), so video inference needs person
boxes. Users ask for a built-in detector and for using precomputed boxes (``user-needs.md`` sections 7 and 9);
the published numbers use PoseWarper's precomputed boxes (``docs/facts/posetrack-facts.md`` section 4.2), so a box file
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
  OpenCV 4.10's descriptor to 2e-4 (``tests/test_detectors.py``). It lives in :mod:`tdmi.inference.hog`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Protocol

import numpy as np

from tdmi.data.box_files import DEFAULT_SCORE_THRESHOLD, read_box_file
from tdmi.data.fileio import atomic_write_json
from tdmi.errors import CommandError
from tdmi.inference.boxes import Detections, as_boxes, iou_matrix, nms  # noqa: F401  (Detections: re-exported)
from tdmi.inference.hog import HOGPeopleDetector, hog_blocks, hog_window_descriptor  # noqa: F401  (re-exported)

#: COCO category id of "person" (COCO results files and torchvision's COCO detectors).
PERSON_CATEGORY = 1

#: torchvision detectors tried by ``make_detector("auto")`` (best first) when their weights are cached locally.
TORCHVISION_DETECTORS = (
    "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "fasterrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn", "ssdlite320_mobilenet_v3_large",
)

DETECTOR_NAMES = ("auto", "hog") + TORCHVISION_DETECTORS


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
    """``<sequence>/<frame>`` of a PoseTrack18 image id (T*10^10 + S*10^4 + F, ``docs/facts/posetrack-facts.md``
    section 2),
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
