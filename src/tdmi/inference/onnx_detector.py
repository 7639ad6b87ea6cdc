"""Person detectors from user-supplied ONNX files (YOLOX, RTMDet, YOLOv8 exports), run with onnxruntime.

``tdmi infer clip.mp4 --detector yolox_m.onnx`` uses any such file; nothing is downloaded. The three layouts
in use (the exports rtmlib and ultralytics ship), with the preprocessing each model was trained with:

- ``yolox``: outputs mmdeploy end2end ``dets [1, N, 5]`` + ``labels [1, N]`` (boxes x1 y1 x2 y2 score), or the
  official decoded ``[1, A, 5 + C]`` (cx cy w h, objectness x class score, then NMS). Letterbox to the input size,
  image at the top left, pad 114; BGR 0-255, no normalisation.
- ``rtmdet``: outputs mmdeploy end2end ``dets [1, N, 5]`` + ``labels [1, N]`` (x1 y1 x2 y2 score). The same
  letterbox; BGR minus mean (103.53, 116.28, 123.675) over std (57.375, 57.12, 58.395).
- ``yolov8``: output ``[1, 4 + C, A]`` (or transposed): cx cy w h and class scores (no objectness), then NMS.
  Letterbox centred, pad 114; RGB / 255.

``layout="auto"`` reads it from the outputs: two outputs (dets, labels) are end2end. Their normalisation is
``rtmdet`` when the file name says so, else ``yolox``. A single output with 84 rows or columns is ``yolov8``
and one with 85 is ``yolox`` (COCO's 80 classes); anything else needs ``layout``. Only class 0 (COCO's person)
is kept. The input size comes from the model's input shape, or ``input_size`` (default 640x640) when it is
dynamic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from tdmi.errors import CommandError
from tdmi.inference.boxes import nms

LAYOUTS = ("auto", "yolox", "rtmdet", "yolov8")
RTMDET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
RTMDET_STD = np.array([57.375, 57.12, 58.395], np.float32)
PAD_VALUE = 114


def letterbox(image_bgr: np.ndarray, size: tuple[int, int], centred: bool) -> tuple[np.ndarray, float, np.ndarray]:
    """Resize keeping the aspect ratio into ``size`` (w, h), padded with 114: ``(image, scale, offset [2])``."""
    width, height = size
    scale = min(width / image_bgr.shape[1], height / image_bgr.shape[0])
    new_w, new_h = int(round(image_bgr.shape[1] * scale)), int(round(image_bgr.shape[0] * scale))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    offset = np.array([(width - new_w) // 2, (height - new_h) // 2] if centred else [0, 0], np.float32)
    canvas[int(offset[1]):int(offset[1]) + new_h, int(offset[0]):int(offset[0]) + new_w] = resized
    return canvas, scale, offset


class OnnxPersonDetector:
    """A person detector from an ONNX file; see the module docstring for the layouts.

    Args:
        path: the ``.onnx`` file.
        layout: ``auto``, ``yolox``, ``rtmdet`` or ``yolov8``.
        score_threshold: detections scoring below this are dropped.
        nms_iou: IoU above which the raw layouts' overlapping boxes are merged (end2end files did NMS already).
        input_size: ``(w, h)`` when the model's input shape is dynamic.
        threads: onnxruntime intra-op threads (0 = its default).
    """

    def __init__(self, path: str | Path, layout: str = "auto", score_threshold: float = 0.3, nms_iou: float = 0.45,
                 input_size: tuple[int, int] = (640, 640), threads: int = 0) -> None:
        self.path = Path(path)
        if layout not in LAYOUTS:
            raise CommandError(f"--detector-layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
        if not self.path.is_file():
            raise CommandError(f"{self.path}: no such ONNX detector file")
        try:
            import onnxruntime
        except ImportError:
            raise CommandError(f"{self.path}: ONNX detectors need onnxruntime: pip install 'tdmi[onnx]'") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise CommandError(f"{self.path}: onnxruntime cannot load it ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''})") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        static = len(shape) == 4 and all(isinstance(v, int) for v in shape[2:])
        self.input_size = (int(shape[3]), int(shape[2])) if static else tuple(input_size)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.layout, self.end2end = self._resolve_layout(layout)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.description = (f"ONNX {self.layout}{' end2end' if self.end2end else ''} person detector "
                            f"{self.path.name} ({self.input_size[0]}x{self.input_size[1]}, score >= "
                            f"{score_threshold:g})")

    def _resolve_layout(self, layout: str) -> tuple[str, bool]:
        outputs = self.session.get_outputs()
        end2end = len(outputs) >= 2 and len(outputs[0].shape) == 3 and outputs[0].shape[-1] == 5
        if end2end:
            if layout == "yolov8":
                raise CommandError(f"{self.path}: has end2end outputs (dets, labels), not YOLOv8's single output")
            if layout == "auto":
                layout = "rtmdet" if "rtmdet" in self.path.name.lower() else "yolox"
            return layout, True
        if len(outputs) != 1 or len(outputs[0].shape) != 3:
            raise CommandError(f"{self.path}: outputs {[list(o.shape) for o in outputs]} match no known layout; "
                               f"expected end2end (dets [1, N, 5], labels [1, N]) or one [1, ., .] tensor")
        dims = outputs[0].shape[1:]
        if layout == "auto":
            if 84 in dims:
                layout = "yolov8"
            elif 85 in dims:
                layout = "yolox"
            else:
                raise CommandError(f"{self.path}: cannot tell the layout from output shape {list(outputs[0].shape)}; "
                                   f"pass --detector-layout yolox or yolov8")
        if layout == "rtmdet":
            raise CommandError(f"{self.path}: rtmdet files are end2end exports (dets, labels)")
        # which axis holds the box + class values: the one of COCO's width (84 / 85), else the shorter one
        width = 84 if layout == "yolov8" else 85
        self._features_first = dims[0] == width or (dims[1] != width and isinstance(dims[0], int)
                                                    and isinstance(dims[1], int) and dims[0] < dims[1])
        return layout, False

    def _input(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        image, scale, offset = letterbox(frame_bgr, self.input_size, centred=self.layout == "yolov8")
        if self.layout == "yolov8":
            blob = image[:, :, ::-1].astype(np.float32) / 255.0
        elif self.layout == "rtmdet":
            blob = (image.astype(np.float32) - RTMDET_MEAN) / RTMDET_STD
        else:
            blob = image.astype(np.float32)
        return np.ascontiguousarray(blob.transpose(2, 0, 1)[None]), scale, offset

    def _raw(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (x1 y1 x2 y2, input pixels) and scores of a single-output layout."""
        rows = output[0].T if self._features_first else output[0]  # -> [A, values]
        if self.layout == "yolov8":
            centre, size, scores = rows[:, :2], rows[:, 2:4], rows[:, 4]
        else:
            centre, size, scores = rows[:, :2], rows[:, 2:4], rows[:, 4] * rows[:, 5]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        keep = scores >= self.score_threshold
        boxes, scores = boxes[keep], scores[keep]
        if len(boxes):
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float32)
            kept = nms(xywh, scores.astype(np.float32), self.nms_iou)
            boxes, scores = boxes[kept], scores[kept]
        return boxes, scores

    def detect(self, frame_bgr: np.ndarray, frame_index: Optional[int] = None, frame_name: Optional[str] = None):
        from tdmi.inference.boxes import Detections

        blob, scale, offset = self._input(np.ascontiguousarray(frame_bgr[:, :, :3]))
        results = self.session.run(None, {self.input_name: blob})
        if self.end2end:
            dets, labels = np.asarray(results[0])[0], np.asarray(results[1]).reshape(-1)
            person = (labels == 0) & (dets[:, 4] >= self.score_threshold)
            boxes, scores = dets[person, :4], dets[person, 4]
        else:
            boxes, scores = self._raw(np.asarray(results[0]))
        boxes = (boxes.reshape(-1, 2, 2) - offset) / scale  # back to frame pixels
        height, width = frame_bgr.shape[:2]
        boxes[..., 0] = np.clip(boxes[..., 0], 0, width)
        boxes[..., 1] = np.clip(boxes[..., 1], 0, height)
        xywh = np.concatenate([boxes[:, 0], boxes[:, 1] - boxes[:, 0]], axis=1).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        return Detections(xywh[order].reshape(-1, 4), scores[order].astype(np.float32))
