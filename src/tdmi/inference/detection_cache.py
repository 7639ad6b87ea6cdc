"""Detections cached per input, so a second ``tdmi infer`` with other pose settings does not detect again.

Detection costs more than pose estimation on CPU (HOG: about 0.4 s per 768x576 frame, twice the pose time on
vtest), and users rerun the same video with another checkpoint, mode or window. When ``infer`` runs an image
detector it writes what it found to ``<out>/<stem>.boxes.json`` (a ``tdmi-boxes`` file that ``--boxes`` and
``tdmi test --boxes`` also read). The next run into the same folder reuses it when the cache key matches:

- the input: its resolved path and, for every file it reads, the file's name, size and modification time
  (a re-encoded video or an edited frame folder is detected again);
- the detector: its description (name, thresholds, backend), so ``--detector`` changes are detected again.

Boxes are stored with every float32 digit, so a cached run gives exactly the poses of a fresh one.
``--redetect`` ignores the cache. A damaged or foreign file at the cache path is never trusted: the input is
detected again and the file replaced.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np

from tdmi.inference.detectors import BoxFileDetector, Detections, write_boxes_file

CACHE_SUFFIX = ".boxes.json"


def cache_path(out_dir: Path, stem: str) -> Path:
    return out_dir / f"{stem}{CACHE_SUFFIX}"


def input_fingerprint(spec: str) -> Optional[str]:
    """sha256 of the input's resolved path and each file's (name, size, mtime); None for a webcam or device."""
    path = Path(spec)
    if not path.exists():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    listing = [str(path.resolve())] + [[p.name, (st := p.stat()).st_size, st.st_mtime_ns] for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def cache_key(spec: str, detector_description: str) -> Optional[dict]:
    fingerprint = input_fingerprint(spec)
    return None if fingerprint is None else {"input": fingerprint, "detector": detector_description}


def load_cached_detector(path: Path, key: Optional[dict]) -> Optional[BoxFileDetector]:
    """The cached boxes at ``path`` as a detector when ``key`` matches the file's, else None."""
    if key is None or not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("cache_key")
    except (OSError, ValueError, AttributeError):
        return None
    if stored != key:
        return None
    try:
        # the detector already applied its own threshold: keep every box it returned
        return BoxFileDetector(path, score_threshold=0.0)
    except Exception:  # a damaged cache is a miss, never an error: the input is detected again
        return None


class RecordingDetector:
    """Wraps an image detector and keeps what it returns per frame, for :meth:`write`."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.description: str = detector.description
        self.frames: list[tuple[int, str, np.ndarray, np.ndarray]] = []

    def detect(self, frame_bgr: np.ndarray, frame_index: Optional[int] = None,
               frame_name: Optional[str] = None) -> Detections:
        found = self.detector.detect(frame_bgr, frame_index, frame_name)
        self.frames.append((len(self.frames) if frame_index is None else int(frame_index), frame_name or "",
                            found.boxes, found.scores))
        return found

    def write(self, path: Path, source: str, key: Optional[dict]) -> None:
        write_boxes_file(path, self.frames, source, exact=True,
                         extra={"cache_key": key, "detector": self.description})
