"""Frame sources for ``tdmi infer``: video files, folders of frames, single images and webcams.

Implements the input side of the video-inference path (``user-needs.md`` section 9: "one command
``video.mp4 -> poses.json + overlay.mp4``"; ``docs/architecture.md``, ``inference/sources.py``). Every source yields
:class:`SourceFrame` records ``(index, image, timestamp, name)`` where ``image`` is a uint8 BGR array
``[H, W, 3]`` and carries a :class:`SourceInfo` (fps, frame count when known, size of the first frame).

Policies (all documented here because callers rely on them):

- **Order of a frame folder** is natural order on the file name (``frame2 < frame10``, case-insensitive);
  non-image files are ignored. Gaps in the numbering (``001, 002, 005``) are not an error: the frames are
  yielded in order and each gap is recorded in :attr:`SourceInfo.gaps` (and warned about once), so a caller
  can tell that neighbouring frames are not consecutive in time. Timestamps of numbered frames come from the
  number (``(number - first_number) / fps``), so gaps also show as jumps in time.
- **Indices** are positions in the listing (folder) or in decoding order (video): ``info.frame_names[index]``
  is always the frame's name. A frame that cannot be read is skipped, so its index never appears; the skip is
  recorded in :attr:`FrameSource.skipped` with the reason. A source with no readable frame at all raises
  :class:`~tdmi.errors.DataFormatError`.
- **Frame size**: by default (``size_policy="keep"``) each frame keeps its own size and all coordinates are
  pixels of that frame; size changes are recorded in :attr:`FrameSource.size_changes` and warned about once.
  With ``size_policy="first"`` every frame is resized to the first frame's size, so a whole clip shares one
  coordinate frame (coordinates then refer to the resized frames).
- **Broken video files**: a missing file is :class:`FileNotFoundError`; an empty (0-byte) file, a file
  OpenCV cannot open, or one with no decodable frame is :class:`~tdmi.errors.DataFormatError` naming the
  file. A truncated video yields the frames that decode and then stops; when the container announced more
  frames, :attr:`FrameSource.truncated` is true and a warning says how many were missing.
- **Frame rate**: from the container when it states one; otherwise (frame folders, some streams)
  :data:`DEFAULT_FPS` unless the caller passes ``fps``. :attr:`SourceInfo.fps_known` says which.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Union

import cv2
import numpy as np

from tdmi.errors import CommandError, DataFormatError

#: Frame rate assumed when neither the container nor the caller states one (PoseTrack videos are ~25-30 fps).
DEFAULT_FPS = 30.0

#: File name endings read as images (lower case). Anything else in a frame folder is ignored.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2")

#: File name endings of videos (lower case): a folder holding these and no images stands for its videos in ``tdmi
#: infer`` (``expand_inputs``). Other files are still opened as video when given one by one.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts")

SIZE_POLICIES = ("keep", "first")

SourceSpec = Union[str, os.PathLike, int]


class SourceFrame(NamedTuple):
    """One decoded frame.

    Attributes:
        index: position of the frame in the source (see the module docstring); stable across skips.
        image: uint8 BGR ``[H, W, 3]``.
        timestamp: seconds from the first frame.
        name: file name for folders and images, ``"%06d" % index`` for videos and webcams.
    """

    index: int
    image: np.ndarray
    timestamp: float
    name: str


@dataclass(frozen=True)
class FrameGap:
    """A hole in a folder's frame numbering: ``missing`` numbers lie between ``before`` and ``after``."""

    before: str
    after: str
    missing: int


@dataclass(frozen=True)
class SourceInfo:
    """What is known about a source before decoding it.

    Attributes:
        name: a display name (file or folder name, or ``webcam:N``).
        kind: ``video``, ``folder``, ``image`` or ``webcam``.
        fps: frames per second (container value or :data:`DEFAULT_FPS` / the caller's value).
        fps_known: the rate came from the container or the caller, not the default.
        frame_count: number of frames if known in advance (the container's claim for videos; may be wrong for
            truncated files), else None (webcams, some streams).
        width, height: size of the first frame in pixels.
        frame_names: names of the listed frames (folders and images; empty for videos and webcams).
        gaps: holes in a folder's numbering.
    """

    name: str
    kind: str
    fps: float
    fps_known: bool
    frame_count: Optional[int]
    width: int
    height: int
    frame_names: tuple[str, ...] = ()
    gaps: tuple[FrameGap, ...] = ()


def natural_key(name: str) -> tuple:
    """Sort key for natural order: digit runs compare as numbers, text case-insensitively (``f2 < f10``)."""
    # re.split with a capturing group alternates text, number, text, ... so types line up position by position.
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (name,)


def _frame_number(name: str) -> Optional[tuple[str, int, str]]:
    """(text before, number, text after) of the last digit run of the stem, or None when it has no digits."""
    stem, suffix = os.path.splitext(name)
    match = re.search(r"(\d+)(?!.*\d)", stem)
    if match is None:
        return None
    return stem[: match.start()], int(match.group(1)), stem[match.end():] + suffix.lower()


def find_gaps(names: list[str]) -> list[FrameGap]:
    """Holes in the numbering of naturally sorted frame names; names of different patterns are not compared."""
    gaps = []
    previous: dict[tuple[str, str], tuple[int, str]] = {}
    for name in names:
        parsed = _frame_number(name)
        if parsed is None:
            continue
        prefix, number, rest = parsed
        key = (prefix, rest)
        if key in previous:
            last_number, last_name = previous[key]
            if number - last_number > 1:
                gaps.append(FrameGap(before=last_name, after=name, missing=number - last_number - 1))
        previous[key] = (number, name)
    return gaps


class FrameSource:
    """Base of every source: iterate it for :class:`SourceFrame` records; use it as a context manager.

    After (or during) iteration, :attr:`skipped` lists ``(index, name, reason)`` of frames that could not be
    read, :attr:`size_changes` lists ``(index, (w, h))`` where the size differed from the previous frame, and
    :attr:`truncated` says whether a video ended before the frame count its container announced.
    """

    def __init__(self, info: SourceInfo, size_policy: str) -> None:
        if size_policy not in SIZE_POLICIES:
            raise CommandError(f"size_policy must be one of {', '.join(SIZE_POLICIES)}, got {size_policy!r}")
        self.info = info
        self.size_policy = size_policy
        self.skipped: list[tuple[int, str, str]] = []
        self.size_changes: list[tuple[int, tuple[int, int]]] = []
        self.truncated = False
        self.decoded = 0
        self._last_size = (info.width, info.height)

    def __iter__(self) -> Iterator[SourceFrame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder (no-op for folders)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        if self.info.frame_count is None:
            raise TypeError(f"{self.info.name}: the number of frames is not known in advance")
        return self.info.frame_count

    def _conform(self, index: int, image: np.ndarray) -> np.ndarray:
        """Apply the size policy; record (and warn once about) size changes."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        height, width = image.shape[:2]
        if (width, height) != self._last_size:
            if not self.size_changes:
                action = ("resized to the first frame's size" if self.size_policy == "first"
                          else "each frame keeps its own size")
                warnings.warn(f"{self.info.name}: frame {index} is {width}x{height}, the previous one was "
                              f"{self._last_size[0]}x{self._last_size[1]}; {action}", stacklevel=3)
            self.size_changes.append((index, (width, height)))
            self._last_size = (width, height)
        if self.size_policy == "first" and (width, height) != (self.info.width, self.info.height):
            image = cv2.resize(image, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)
        self.decoded += 1
        return image


def _read_image(path: Path) -> Optional[np.ndarray]:
    """``cv2.imread`` that returns None instead of raising on files OpenCV cannot parse."""
    try:
        return cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        return None


class ImageFolderSource(FrameSource):
    """The image files of one folder (or one image file) in natural order. See the module docstring."""

    def __init__(self, paths: list[Path], name: str, kind: str, fps: Optional[float], size_policy: str) -> None:
        self.paths = paths
        names = [p.name for p in paths]
        first = None
        for path in paths:  # the first readable image fixes the reference size
            first = _read_image(path)
            if first is not None:
                break
        if first is None:
            raise DataFormatError(f"{name}: none of its {len(paths)} image file(s) could be read as an image")
        gaps = tuple(find_gaps(names))
        if gaps:
            shown = ", ".join(f"{g.missing} missing between {g.before} and {g.after}" for g in gaps[:3])
            more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
            warnings.warn(f"{name}: frame numbering has {len(gaps)} gap(s): {shown}{more}", stacklevel=3)
        info = SourceInfo(name=name, kind=kind, fps=float(fps or DEFAULT_FPS), fps_known=fps is not None,
                          frame_count=len(paths), width=first.shape[1], height=first.shape[0],
                          frame_names=tuple(names), gaps=gaps)
        super().__init__(info, size_policy)
        numbers = [_frame_number(n) for n in names]
        # Time follows the numbering when every frame is numbered, so gaps show up as jumps in time.
        if all(n is not None for n in numbers) and len({(n[0], n[2]) for n in numbers}) == 1:
            self._frame_numbers = [n[1] - numbers[0][1] for n in numbers]
        else:
            self._frame_numbers = list(range(len(names)))

    def __iter__(self) -> Iterator[SourceFrame]:
        for index, path in enumerate(self.paths):
            image = _read_image(path)
            if image is None or image.size == 0:
                reason = "not readable as an image (corrupt or unsupported format)"
                if not self.skipped:
                    warnings.warn(f"{self.info.name}: skipping {path.name}: {reason}", stacklevel=2)
                self.skipped.append((index, path.name, reason))
                continue
            yield SourceFrame(index, self._conform(index, image), self._frame_numbers[index] / self.info.fps,
                              path.name)


class CaptureSource(FrameSource):
    """A ``cv2.VideoCapture`` (video file or webcam). See the module docstring for truncated files."""

    def __init__(self, capture: "cv2.VideoCapture", name: str, kind: str, fps: Optional[float],
                 size_policy: str) -> None:
        self.capture = capture
        container_fps = capture.get(cv2.CAP_PROP_FPS)
        fps_known = fps is not None or (math.isfinite(container_fps) and 0 < container_fps < 1000)
        rate = float(fps) if fps is not None else (container_fps if fps_known else DEFAULT_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == "video" else 0
        ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            raise DataFormatError(f"{name}: opened, but no frame could be decoded (corrupt, truncated before the "
                                  f"first frame, or a codec OpenCV lacks)")
        self._first: Optional[np.ndarray] = first
        self._first_msec = capture.get(cv2.CAP_PROP_POS_MSEC)
        info = SourceInfo(name=name, kind=kind, fps=rate, fps_known=fps_known, frame_count=count if count > 0 else None,
                          width=first.shape[1], height=first.shape[0])
        super().__init__(info, size_policy)
        self._started = False

    def __iter__(self) -> Iterator[SourceFrame]:
        if self._started:
            raise CommandError(f"{self.info.name}: a video or webcam source can be iterated only once; open it again")
        self._started = True
        start = time.monotonic()
        index = 0
        image = self._first
        self._first = None
        while image is not None:
            yield SourceFrame(index, self._conform(index, image), self._timestamp(index, start), f"{index:06d}")
            index += 1
            try:
                ok, image = self.capture.read()
            except cv2.error:  # some builds raise on damaged packets instead of returning False
                ok, image = False, None
            if not ok:
                image = None
        expected = self.info.frame_count
        if expected is not None and index < expected:
            self.truncated = True
            warnings.warn(f"{self.info.name}: decoded {index} of the {expected} frames the file announces "
                          f"(truncated or damaged); continuing with the frames that decoded", stacklevel=2)
        self.close()

    def _timestamp(self, index: int, start: float) -> float:
        if self.info.kind == "webcam":
            return time.monotonic() - start
        # The decoder's clock is right for variable-rate files; it reads 0 on some containers, then count frames.
        msec = self.capture.get(cv2.CAP_PROP_POS_MSEC) if index else self._first_msec
        if index and msec > 0:
            return (msec - self._first_msec) / 1000.0
        return index / self.info.fps

    def close(self) -> None:
        self.capture.release()


def _open_video(path: Path, fps: Optional[float], size_policy: str) -> CaptureSource:
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the video file is empty (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataFormatError(f"{path}: OpenCV cannot open this file as a video (not a video, corrupt, truncated "
                              f"before its index, or a container/codec this OpenCV build lacks)")
    return CaptureSource(capture, path.name, "video", fps, size_policy)


def open_webcam(device: int, fps: Optional[float] = None, size_policy: str = "keep") -> CaptureSource:
    """Open webcam ``device`` (0 is the default camera)."""
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        raise CommandError(f"webcam {device} could not be opened (no camera with that index, or it is busy)")
    return CaptureSource(capture, f"webcam:{device}", "webcam", fps, size_policy)


def open_source(spec: SourceSpec, *, fps: Optional[float] = None, size_policy: str = "keep") -> FrameSource:
    """Open a video file, a folder of frames, a single image, or a webcam (an int, or a string of digits).

    Args:
        spec: path of a video file / image / folder, or a webcam index.
        fps: frame rate to use instead of the container's (required to be > 0 when given).
        size_policy: ``keep`` (each frame keeps its own size) or ``first`` (resize to the first frame's size).

    Raises:
        FileNotFoundError: the path does not exist.
        DataFormatError: the file or folder holds nothing decodable (the message names it and the problem).
        CommandError: bad arguments, or a webcam that cannot be opened.
    """
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise CommandError(f"fps must be a positive number, got {fps}")
    if size_policy not in SIZE_POLICIES:
        raise CommandError(f"size_policy must be one of {', '.join(SIZE_POLICIES)}, got {size_policy!r}")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit() and not Path(spec).exists()):
        return open_webcam(int(spec), fps, size_policy)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        images = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                        key=lambda p: natural_key(p.name))
        if not images:
            raise DataFormatError(f"{path}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES[:5])}, ...)")
        return ImageFolderSource(images, path.name, "folder", fps, size_policy)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource([path], path.name, "image", fps, size_policy)
    return _open_video(path, fps, size_policy)
