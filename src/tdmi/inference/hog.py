"""The built-in HOG people detector: Dalal & Triggs' HOG + linear SVM (CVPR 2005), in NumPy and OpenCV.

The model is the one OpenCV ships as ``HOGDescriptor.getDefaultPeopleDetector()`` (its coefficients in
``tdmi/weights/hog_people_svm.json``; OpenCV 5 moved HOG out of the main package). :class:`HOGPeopleDetector` uses
``cv2.HOGDescriptor`` when the installed OpenCV has it (4.x) and otherwise the NumPy port below, whose descriptor
matches OpenCV 4.10's to 2e-4 (``tests/test_detectors.py``). It needs no download but it is WEAK: it misses
small, occluded, sitting and non-upright people. ``benchmarks/hog_speed.py`` measures the port against its
earlier version.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Optional

import cv2
import numpy as np

from tdmi.errors import CommandError
from tdmi.inference.boxes import Detections, iou_matrix, nms

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
    return _read_only(np.ascontiguousarray(weights)), float(doc["bias"])


def _read_only(array: np.ndarray) -> np.ndarray:
    """Cached arrays are shared by every call: an accidental in-place write raises instead of corrupting them."""
    array.flags.writeable = False
    return array


_SQRT_LUT_ROW = np.sqrt(np.arange(256, dtype=np.float32)).reshape(1, 256)  # cv2.LUT's table shape
#: Pixels per band of :func:`hog_blocks`. A band's working set (~25 floats per pixel, ~6 MB) then stays in the
#: last-level cache and malloc hands the same memory back band after band. Whole-image temporaries (tens of MB per
#: pyramid level) cost more than the arithmetic: the version of commit 7deceb1 took ~50k page faults and 0.1 s of
#: system time per 768x576 frame. Measured on one core: 64k is fastest, 32k and 128k are a few % slower.
_BAND_PIXELS = 1 << 16
#: Vote slots per pixel row: slot ``s`` holds bin ``s - 1`` for bins -1..9, so that a pixel's lower bin (-1..8,
#: once its angle is folded into [-0.5, 8.5)) and upper bin (one more) are plain index arithmetic; slots 0 and
#: 10 are added to bins 8 and 0 after the vertical profile, where the planes are half as big.
_SLOTS = _NBINS + 2


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
    return _read_only(np.concatenate([profile[:, :_CELL], profile[:, _CELL:]], axis=0).T.astype(np.float32))


@lru_cache(maxsize=64)
def _vote_positions(tile_rows: int, width: int) -> np.ndarray:
    """int32 ``[8 n, width]``: the flat position of pixel ``(y, x)`` of a band of ``n`` tile rows in the band's
    vote planes ``[slot, y % 8, y // 8, x]``, in slot 1; a vote for bin ``k`` adds ``k`` plane sizes."""
    y = np.arange(tile_rows * _CELL)
    rows = (y % _CELL) * tile_rows + y // _CELL
    return _read_only((_CELL * tile_rows * width + rows[:, None] * width + np.arange(width)).astype(np.int32))


def _band_gradients(band_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[r + 2, W, 3]`` (one extra row above and below) -> float32 ``(dx, dy)`` ``[r, W]`` of the channel of
    largest gradient magnitude (the first wins ties, as argmax would), on square-root gamma, by centred
    [-1, 0, 1] differences (0 in the first and last column, as BORDER_REFLECT_101 gives).

    One colour plane at a time (cv2.split): every operation then runs on contiguous memory. The masked copies
    are cv2.copyTo, ~30x faster than np.copyto(where=) and ~10x faster than np.where (measured, 64k pixels).
    """
    best = best_dx = best_dy = None
    planes = cv2.split(band_bgr)[:3]  # B, G, R: an alpha plane is not an image channel
    for c, channel in enumerate(planes):
        root = cv2.LUT(channel, _SQRT_LUT_ROW)
        dy = root[2:] - root[:-2]
        dx = np.empty_like(dy)
        # One difference over the flattened rows; the values it gets wrong (across row ends) are the edge columns.
        flat = root[1:-1].reshape(-1)
        np.subtract(flat[2:], flat[:-2], out=dx.reshape(-1)[1:-1])
        dx[:, 0] = dx[:, -1] = 0.0
        squared = dx * dx
        squared += dy * dy
        if c == 0:
            best, best_dx, best_dy = squared, dx, dy
            continue
        larger = cv2.compare(squared, best, cv2.CMP_GT)
        cv2.copyTo(dx, larger, best_dx)
        cv2.copyTo(dy, larger, best_dy)
        if c < len(planes) - 1:  # the last plane's comparison needs no update of the running maximum
            np.maximum(best, squared, out=best)
    return best_dx, best_dy


def _scatter_band_votes(image_bgr: np.ndarray, first_tile_row: int, tile_rows: int, width: int,
                        votes: np.ndarray) -> None:
    """Orientation votes of ``tile_rows`` tile rows from ``first_tile_row`` into ``votes``: zeroed float32, flat
    ``[_SLOTS, 8, tile_rows, width]`` (slot, pixel row in its tile, tile row, pixel column); ``width`` is the
    image width cut to whole tiles. Each pixel has its own place in every slot and its two votes go to
    different slots, so both scatters are plain assignments (no accumulation)."""
    height = image_bgr.shape[0]
    top, bottom = first_tile_row * _CELL - 1, (first_tile_row + tile_rows) * _CELL + 1  # dy needs one more row
    if top >= 0 and bottom <= height:
        band = image_bgr[top:bottom]
    else:  # BORDER_REFLECT_101 at the top and bottom of the image
        rows = np.abs(np.arange(top, bottom))
        band = image_bgr[np.where(rows >= height, 2 * height - 2 - rows, rows)]
    dx, dy = _band_gradients(band)
    magnitude, angle = cv2.cartToPolar(dx[:, :width], dy[:, :width])  # angle in [0, 2 pi)
    angle *= np.float32(_NBINS / np.pi)
    angle -= np.float32(0.5)  # bin centres at 10, 30, ... degrees: bin k covers [k, k + 1)
    # Unsigned bins: fold [8.5, 17.5) down by 9 bins. That subtraction is exact (Sterbenz), so the shares and
    # bins below are bit-identical to floor(angle) modulo 9.
    angle -= (angle >= np.float32(_NBINS - 0.5)) * np.float32(_NBINS)
    lower = np.floor(angle)  # -1 .. 8
    angle -= lower
    upper_vote = magnitude * angle
    magnitude -= upper_vote  # the lower bin's share
    plane = _CELL * tile_rows * width
    index = lower.astype(np.int32)  # int32 arithmetic is cheaper; intp indexes fastest
    index *= plane
    index += _vote_positions(tile_rows, width)
    index = index.astype(np.intp).reshape(-1)
    votes[index] = magnitude.reshape(-1)
    index += plane
    votes[index] = upper_vote.reshape(-1)


def _hog_block_features(image_bgr: np.ndarray) -> np.ndarray:
    """Normalised HOG blocks, features first: uint8 ``[H, W, 3]`` -> float32 ``[36, H/8 - 1, W/8 - 1]``.

    Row ``(cell_x, cell_y, bin)`` of the 36, the layout of OpenCV's descriptor and of the SVM weights, so the
    SVM of all blocks is one matrix product. See :func:`hog_blocks` for the steps and the speed choices.
    """
    height, width = image_bgr.shape[:2]
    tiles_y, tiles_x = height // _CELL, width // _CELL
    blocks_y, blocks_x = tiles_y - 1, tiles_x - 1
    if blocks_y < 1 or blocks_x < 1:
        return np.zeros((4 * _NBINS, max(blocks_y, 0), max(blocks_x, 0)), np.float32)
    cut = tiles_x * _CELL
    band = max(1, min(tiles_y, _BAND_PIXELS // (_CELL * width)))  # tile rows per band
    profile = _block_profile()
    votes = np.empty(_SLOTS * _CELL * band * cut, np.float32)
    # Vertical profiles [slot, role, tile row, x] of the band's tile rows, after the previous band's last one.
    along_y = np.empty((_SLOTS, 4, band + 1, cut), np.float32)
    along_y_rows = along_y.reshape(_SLOTS, 4, (band + 1) * cut)  # a view: along_y is contiguous
    pairs_buffer = np.empty(2 * _NBINS * band * cut, np.float32)
    features = np.empty((2, 2, _NBINS, blocks_y, blocks_x), np.float32)  # [cell_x, cell_y, bin, by, bx]
    for t0 in range(0, tiles_y, band):
        n = min(band, tiles_y - t0)
        band_votes = votes[: _SLOTS * _CELL * n * cut]
        band_votes.fill(0.0)
        _scatter_band_votes(image_bgr, t0, n, cut, band_votes)
        # Along y, one small matrix product per slot: each tile row's share as the first half (cells 0, 1) and
        # as the second half (cells 0, 1) of a block, written straight after the carried row (the output slice
        # is contiguous within each (slot, role), as BLAS needs).
        np.matmul(profile.T, band_votes.reshape(_SLOTS, _CELL, n * cut), out=along_y_rows[:, :, cut:(n + 1) * cut])
        new = along_y[:, :, 1:n + 1]
        new[_NBINS] += new[0]  # bin -1 is bin 8
        new[1] += new[_NBINS + 1]  # bin 9 is bin 0
        # Blocks whose two tile rows are both known: the previous band's last tile row pairs with this one's first.
        skip = 1 if t0 == 0 else 0
        rows = n - skip
        bins = along_y[1:_NBINS + 1]
        pairs = pairs_buffer[: 2 * _NBINS * rows * cut].reshape(2, _NBINS, rows, cut)  # [cell_y, bin, by, x]
        np.add(bins[:, :2, skip:n], bins[:, 2:, skip + 1:n + 1], out=pairs.transpose(1, 0, 2, 3))
        # Along x: the same profile over the 8 pixels of each tile (the transposed product keeps x last).
        along_x = (profile.T @ pairs.reshape(-1, _CELL).T).reshape(4, 2, _NBINS, rows, tiles_x)
        block_rows = slice(t0 - 1 + skip, t0 + n - 1)
        for cell_x in range(2):
            np.add(along_x[cell_x, ..., :-1], along_x[2 + cell_x, ..., 1:], out=features[cell_x, :, :, block_rows])
        along_y[:, :, 0] = along_y[:, :, n]  # the carried row
    blocks = features.reshape(4 * _NBINS, blocks_y, blocks_x)
    # L2-Hys: L2 normalisation, clip at 0.2, normalise again (OpenCV's epsilon and 1e-3).
    blocks /= np.sqrt(np.einsum("fyx,fyx->yx", blocks, blocks)) + np.float32(4 * _NBINS * 0.1)
    np.minimum(blocks, np.float32(0.2), out=blocks)
    blocks /= np.sqrt(np.einsum("fyx,fyx->yx", blocks, blocks)) + np.float32(1e-3)
    return blocks


def hog_blocks(image_bgr: np.ndarray) -> np.ndarray:
    """Normalised HOG blocks of a whole image: uint8 ``[H, W, 3]`` -> float32 ``[H/8 - 1, W/8 - 1, 36]``.

    Block ``(by, bx)`` covers pixels ``[8 by, 8 by + 16) x [8 bx, 8 bx + 16)``; its 36 values are ordered
    (cell_x, cell_y, orientation bin). Steps: square-root gamma; centred [-1, 0, 1] gradients per channel,
    keeping the channel of largest magnitude; 9 unsigned orientation bins with linear vote interpolation;
    Gaussian-weighted bilinear votes into the 2x2 cells of each block; L2-Hys normalisation (clip 0.2).

    Speed (it runs on every pyramid level of every frame; ~4x faster per level than the whole-image version of
    commit 7deceb1, see ``benchmarks/hog_speed.py``): the image is done in bands of ~64k pixels
    (``_BAND_PIXELS``) so that the per-pixel temporaries stay in cache instead of being page-faulted in. Per
    band, each pixel's two votes are scattered straight into vote planes ``[slot, pixel row in tile, tile row,
    x]``, so that the vertical profile is one matrix product per slot over whole planes and the horizontal one
    is one more over the (~5x smaller) result; every step reads contiguous memory, and the channel choice uses
    cv2's masked copy. The values match that version to ~2e-7 (float32 sums in another order).
    """
    return np.ascontiguousarray(_hog_block_features(image_bgr).transpose(1, 2, 0))


def hog_window_descriptor(window_bgr: np.ndarray) -> np.ndarray:
    """HOG descriptor of one 64x128 window in OpenCV's layout: uint8 ``[128, 64, 3]`` -> float32 ``[3780]``."""
    if window_bgr.shape[:2] != (_WINDOW_H, _WINDOW_W):
        raise ValueError(f"a HOG window is {_WINDOW_W}x{_WINDOW_H}, got {window_bgr.shape[1]}x{window_bgr.shape[0]}")
    return _hog_block_features(window_bgr).transpose(2, 1, 0).reshape(-1)


def _hog_svm_margins(image_bgr: np.ndarray) -> np.ndarray:
    """SVM margin of every 64x128 window at an 8-pixel stride: float32 ``[rows, cols]``, window ``(i, j)`` with
    its top-left corner at pixel ``(x, y) = (8 j, 8 i)``; ``[0, 0]`` when the image is smaller than a window.

    The window at block ``(y, x)`` scores ``bias + sum over slots (a, b) of w[a, b] . block[y + a, x + b]``. One
    matrix product gives every block's score in all 105 slots, as planes ``[slot, by * bx]`` (rows of length
    ``L``, a zeroed tail after the ``by * bx`` scores); the shifted slot planes are then summed by ONE reduction
    over a strided view instead of 105 separate adds: plane ``s = 7 a + b`` shifted by ``a * bx + b`` starts at
    ``s * L + a * bx + b = a (7 L + bx) + b (L + 1)``, linear in (a, b).
    """
    blocks = _hog_block_features(image_bgr)
    _, blocks_y, blocks_x = blocks.shape
    if blocks_y < _BLOCKS_Y or blocks_x < _BLOCKS_X:
        return np.zeros((0, 0), np.float32)
    weights, bias = _hog_svm()
    ny, nx = blocks_y - _BLOCKS_Y + 1, blocks_x - _BLOCKS_X + 1
    size = blocks_y * blocks_x
    row = size + _BLOCKS_X  # a zeroed tail per slot plane: the last window row reads up to 6 values past its end
    scores = np.empty((_BLOCKS_Y * _BLOCKS_X, row), np.float32)
    scores[:, size:] = 0.0
    np.matmul(weights.reshape(-1, 4 * _NBINS), blocks.reshape(4 * _NBINS, size), out=scores[:, :size])
    item = scores.itemsize
    shifted = np.lib.stride_tricks.as_strided(
        scores, (_BLOCKS_Y, _BLOCKS_X, ny * blocks_x),
        ((_BLOCKS_X * row + blocks_x) * item, (row + 1) * item, item), writeable=False)
    margins = shifted.sum(axis=(0, 1)).reshape(ny, blocks_x)[:, :nx]  # columns past nx wrap into the next row
    return margins + np.float32(bias)


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
            margins = _hog_svm_margins(scaled)
            rows, cols = np.nonzero(margins >= self.hit_threshold)  # row-major, as the windows are numbered
            if rows.size:
                corners = np.stack([cols, rows], axis=1).astype(np.float32) * _CELL
                xy = (corners - pad) / factor
                wh = np.broadcast_to(np.float32([_WINDOW_W, _WINDOW_H]) / factor, xy.shape)
                all_boxes.append(np.concatenate([xy, wh], axis=1))
                all_margins.append(margins[rows, cols])
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
