"""Rendered output of ``tdmi infer --render``: skeletons coloured per track, boxes and ids, an MP4 and a sheet.

Implements the overlay part of ``user-needs.md`` section 9 ("``video.mp4 -> poses.json + overlay.mp4``").
Poses are in the 17-slot PoseTrack order and drawn with ``keypoints.POSETRACK17_DRAW_SKELETON`` (the head
joints linked to the shoulders, never the unannotated ears). A joint is drawn only when its score reaches
``joint_threshold`` and a limb only when both ends are drawn. Every person keeps one colour per track id
across the video.

Writes are atomic (``docs/architecture.md``, house standards): the video goes to a hidden temporary file in the target
folder and is renamed when complete; an exception while writing removes the temporary file, so no partial
video is ever left under the final name. MP4 is H.264 (yuv420p, ``+faststart``), which browsers play, written by
the ffmpeg that the ``imageio-ffmpeg`` package ships (``pip install 'tdmi[video]'``; the dev extras include it).
Without it the writer falls back to OpenCV's ``mp4v`` (MPEG-4 part 2, which browsers refuse) and, where this
OpenCV build cannot write that either, to Motion-JPEG in an ``.avi``, and says so in :attr:`VideoWriter.note`.
"""

from __future__ import annotations

import colorsys
import errno
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from tdmi.atomic import current_umask
from tdmi.data.fileio import atomic_write_bytes
from tdmi.errors import CommandError
from tdmi.keypoints import POSETRACK17_DRAW_SKELETON

#: Joints scoring below this are not drawn (DCPose/HRNet visualisations use 0.2 on heatmap maxima).
JOINT_SCORE_THRESHOLD = 0.2


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A bright BGR colour for a track id; consecutive ids get far-apart hues (golden-ratio steps)."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_people(image_bgr: np.ndarray, boxes: Optional[np.ndarray] = None, track_ids: Optional[Sequence[int]] = None,
                keypoints: Optional[np.ndarray] = None, joint_scores: Optional[np.ndarray] = None, *,
                joint_threshold: float = JOINT_SCORE_THRESHOLD,
                skeleton: Sequence[tuple[int, int]] = POSETRACK17_DRAW_SKELETON,
                show_scores: bool = False) -> np.ndarray:
    """Draw people on a copy of a frame.

    Args:
        image_bgr: uint8 ``[H, W, 3]``.
        boxes: float ``[N, 4]`` xywh, or None.
        track_ids: ``[N]`` ids (colours and labels); None numbers people 0..N-1.
        keypoints: float ``[N, J, 2]`` (or ``[N, J, 3]``, the third column ignored) image pixels, or None.
        joint_scores: float ``[N, J]``; None draws every joint.
        joint_threshold: joints scoring below this are skipped.
        skeleton: limbs as (joint, joint) pairs.
        show_scores: write each drawn joint's score beside it (``tdmi infer --render-scores``).

    Returns:
        uint8 ``[H, W, 3]``, a new array.
    """
    canvas = np.ascontiguousarray(image_bgr).copy()
    count = len(boxes) if boxes is not None else (len(keypoints) if keypoints is not None else 0)
    ids = list(range(count)) if track_ids is None else [int(t) for t in track_ids]
    if len(ids) != count:
        raise ValueError(f"{count} people but {len(ids)} track ids")
    scale = max(canvas.shape[:2]) / 1000.0  # line widths follow the frame size, so 4K frames stay legible
    thickness = max(1, int(round(2 * scale)))
    radius = max(2, int(round(4 * scale)))
    # labels: about 3.5% of the frame height, never under 12 px (Hershey simplex is ~22 px tall at scale 1)
    label_px = max(12.0, 0.035 * canvas.shape[0])
    font_scale, font_thickness = label_px / 22.0, max(1, int(round(label_px / 18.0)))
    for n in range(count):
        colour = track_colour(ids[n])
        if keypoints is not None:
            points = np.asarray(keypoints[n], np.float64)[:, :2]
            visible = np.isfinite(points).all(axis=1)
            if joint_scores is not None:
                visible &= np.asarray(joint_scores[n]) >= joint_threshold
            pixels = np.where(visible[:, None], points, 0).round().astype(np.int64)
            for a, b in skeleton:
                if a < len(points) and b < len(points) and visible[a] and visible[b]:
                    cv2.line(canvas, tuple(map(int, pixels[a])), tuple(map(int, pixels[b])), colour, thickness,
                             cv2.LINE_AA)
            for j in np.flatnonzero(visible):
                cv2.circle(canvas, tuple(map(int, pixels[j])), radius, colour, -1, cv2.LINE_AA)
                cv2.circle(canvas, tuple(map(int, pixels[j])), radius, (0, 0, 0), 1, cv2.LINE_AA)
                if show_scores and joint_scores is not None:
                    at = (int(pixels[j][0]) + radius + 1, int(pixels[j][1]) - radius)
                    text = f"{float(joint_scores[n][j]):.2f}"
                    small = font_scale * 0.7
                    cv2.putText(canvas, text, at, cv2.FONT_HERSHEY_SIMPLEX, small, (0, 0, 0), font_thickness + 2,
                                cv2.LINE_AA)  # a dark outline keeps the number readable on any background
                    cv2.putText(canvas, text, at, cv2.FONT_HERSHEY_SIMPLEX, small, colour, font_thickness,
                                cv2.LINE_AA)
        if boxes is not None:
            x, y, w, h = (float(v) for v in boxes[n])
            if not all(np.isfinite([x, y, w, h])):
                continue
            top_left, bottom_right = (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h)))
            cv2.rectangle(canvas, top_left, bottom_right, colour, thickness)
            label = str(ids[n])
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
            ty = max(top_left[1], th + base + 2)
            cv2.rectangle(canvas, (top_left[0], ty - th - base - 2), (top_left[0] + tw + 4, ty), colour, -1)
            cv2.putText(canvas, label, (top_left[0] + 2, ty - base - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        (0, 0, 0), font_thickness, cv2.LINE_AA)
    return canvas


def _has_frames(path: str | os.PathLike) -> bool:
    """Whether a finished video file opens and yields its first frame."""
    capture = cv2.VideoCapture(str(path))
    try:
        return bool(capture.isOpened() and capture.read()[0])
    finally:
        capture.release()


class VideoWriter:
    """Atomic video writer: frames go to a temporary file that becomes ``path`` only on a clean :meth:`close`.

    Use as a context manager; an exception inside the ``with`` block deletes the temporary file. Frames whose
    size differs from ``size`` are resized to it (OpenCV would silently drop them).

    Args:
        path: the wanted output (``.mp4``); with the MJPG fallback the suffix becomes ``.avi``.
        fps: frames per second (must be > 0).
        size: ``(width, height)`` of the video.

    Attributes:
        path: the final file written (suffix may differ from the argument, see above).
        codec: ``h264``, ``mp4v`` or ``MJPG``.
        note: a sentence for the user when the fallback was taken, else "".
        frames_written: count.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]) -> None:
        if not fps > 0:
            raise CommandError(f"{path}: video frame rate must be > 0, got {fps}")
        width, height = int(size[0]), int(size[1])
        if width < 2 or height < 2:
            raise CommandError(f"{path}: video size must be at least 2x2, got {width}x{height}")
        wanted = Path(path)
        wanted.parent.mkdir(parents=True, exist_ok=True)
        self.size = (width, height)
        self.frames_written = 0
        self.note = ""
        self._writer = None
        self._ffmpeg = None
        if wanted.suffix == ".mp4" and self._open_h264(wanted, fps):
            return
        for codec, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
            final = wanted if codec == "mp4v" else wanted.with_suffix(suffix)
            # The temporary name keeps the real suffix: OpenCV picks the container from it.
            fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{suffix}", dir=final.parent)
            os.close(fd)
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*codec), float(fps), self.size)
            if writer.isOpened():
                self._writer, self._tmp, self.path, self.codec = writer, tmp, final, codec
                break
            writer.release()
            os.unlink(tmp)
            self.note = (f"this OpenCV build cannot write MPEG-4 ({codec}); wrote Motion-JPEG to {final.name} "
                         f"instead")
        if self._writer is None:
            raise CommandError(f"{wanted}: this OpenCV build can write neither MP4 (mp4v) nor MJPG AVI video")
        if self.codec == "mp4v":
            self.note = (f"{self.path.name} is MPEG-4 part 2 (mp4v), which browsers do not play; "
                         "pip install 'tdmi[video]' for H.264")

    def _open_h264(self, final: Path, fps: float) -> bool:
        """Start ffmpeg (imageio-ffmpeg's) writing H.264 into a temporary file; False where it is unavailable."""
        try:
            import imageio_ffmpeg
        except ImportError:
            return False
        # yuv420p needs even sides: frames are padded by one pixel where a side is odd
        self._even = (self.size[0] + self.size[0] % 2, self.size[1] + self.size[1] % 2)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".partial.mp4", dir=final.parent)
        os.close(fd)
        try:
            writer = imageio_ffmpeg.write_frames(
                tmp, self._even, fps=float(fps), codec="libx264", pix_fmt_in="bgr24", pix_fmt_out="yuv420p",
                quality=None, bitrate=None, macro_block_size=1, ffmpeg_log_level="error",
                output_params=["-crf", "20", "-preset", "veryfast", "-movflags", "+faststart"])
            writer.send(None)  # start the ffmpeg process
        except Exception:  # no ffmpeg binary for this platform, or no libx264 in it: use OpenCV's codecs
            if os.path.exists(tmp):
                os.unlink(tmp)
            return False
        self._ffmpeg, self._tmp, self.path, self.codec = writer, tmp, final, "h264"
        return True

    def write(self, frame_bgr: np.ndarray) -> None:
        if self._writer is None and self._ffmpeg is None:
            raise CommandError(f"{self.path}: the video writer is already closed")
        if frame_bgr.ndim == 2:
            frame_bgr = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            frame_bgr = cv2.resize(frame_bgr, self.size, interpolation=cv2.INTER_AREA)
        frame = np.ascontiguousarray(frame_bgr, dtype=np.uint8)
        if self._ffmpeg is not None:
            if self._even != self.size:
                frame = cv2.copyMakeBorder(frame, 0, self._even[1] - self.size[1], 0, self._even[0] - self.size[0],
                                           cv2.BORDER_REPLICATE)
            self._ffmpeg.send(frame.tobytes())
        else:
            self._writer.write(frame)
        self.frames_written += 1

    def _release(self) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.close()  # flushes and waits for ffmpeg to finish the file
            self._ffmpeg = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def close(self) -> Path:
        """Finish the file and move it to :attr:`path`; returns that path.

        Raises:
            OSError: the file could not be finished (a full disk), or the finished file holds no readable frame (an
                encoder that ran out of space while finishing it does not always say so); the temporary file is
                removed and nothing appears under :attr:`path`.
        """
        if self._writer is not None or self._ffmpeg is not None:
            try:
                self._release()
                if self.frames_written == 0:
                    os.unlink(self._tmp)
                    raise CommandError(f"{self.path}: no frames were written; no video was created")
                if not _has_frames(self._tmp):
                    raise OSError(errno.EIO, "the finished file holds no readable frame (was the disk full?)")
                os.chmod(self._tmp, 0o666 & ~current_umask())  # mkstemp made it 0600
                os.replace(self._tmp, self.path)
            except OSError:
                self._remove_temporary()
                raise
        return self.path

    def _remove_temporary(self) -> None:
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def abort(self) -> None:
        """Drop the temporary file; nothing appears under :attr:`path` (also after a failed :meth:`close`)."""
        if self._writer is not None or self._ffmpeg is not None:
            try:
                self._release()
            except Exception:  # an ffmpeg that already failed: the file goes anyway
                pass
        self._remove_temporary()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_image(path: str | os.PathLike, image_bgr: np.ndarray) -> Path:
    """Write an image atomically (format from the suffix, e.g. ``.png``)."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix, image_bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise CommandError(f"{path}: OpenCV cannot encode images as {path.suffix!r}")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def contact_sheet(frames: Sequence[np.ndarray], labels: Optional[Sequence[str]] = None, *, columns: int = 3,
                  tile_width: int = 480) -> np.ndarray:
    """Tile frames into one image (each scaled to ``tile_width``, keeping its aspect; labelled top-left).

    Returns:
        uint8 ``[rows * tile_height, columns * tile_width, 3]``; tile height follows the first frame's aspect.
    """
    if not frames:
        raise ValueError("a contact sheet needs at least one frame")
    columns = max(1, min(columns, len(frames)))
    first_h, first_w = frames[0].shape[:2]
    tile_height = max(1, int(round(tile_width * first_h / first_w)))
    rows = (len(frames) + columns - 1) // columns
    sheet = np.zeros((rows * tile_height, columns * tile_width, 3), np.uint8)
    for i, frame in enumerate(frames):
        h, w = frame.shape[:2]
        factor = min(tile_width / w, tile_height / h)  # frames of another aspect are letterboxed in their tile
        tile = cv2.resize(frame, (max(1, int(w * factor)), max(1, int(h * factor))), interpolation=cv2.INTER_AREA)
        if tile.ndim == 2:
            tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)
        r, c = divmod(i, columns)
        y0, x0 = r * tile_height, c * tile_width
        sheet[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]] = tile
        if labels is not None:
            text = str(labels[i])
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            cv2.rectangle(sheet, (x0, y0), (x0 + min(tw + 8, tile_width), y0 + th + base + 6), (0, 0, 0), -1)
            cv2.putText(sheet, text, (x0 + 4, y0 + th + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return sheet


def write_contact_sheet(path: str | os.PathLike, frames: Sequence[np.ndarray], labels: Optional[Sequence[str]] = None,
                        *, columns: int = 3, tile_width: int = 480) -> Path:
    """:func:`contact_sheet` written atomically as an image (PNG by suffix)."""
    return write_image(path, contact_sheet(frames, labels, columns=columns, tile_width=tile_width))
