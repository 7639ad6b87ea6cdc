"""Supporting-frame selection: which frame files form the clip around a key frame (paper section 3.1).

Facts: ``docs/facts/posetrack-facts.md`` sections 2.2 (frame numbering) and 3 (neighbour rules of DCPose, FAMI-Pose,
mmpose).

A clip for key frame ``t`` holds the frames ``t - delta .. t + delta`` (T = 2 delta + 1, key frame at position
``delta``). For online inference the *causal* window ``t - 2 delta .. t`` has the same length and puts the key frame
last (position ``2 delta``). Where a wanted neighbour lies beyond the sequence ends (or its file is missing and
``missing_frames="pad"``), a padding rule picks a replacement and the slot is flagged as padded:

- ``"key_frame"`` (default, ours): every missing neighbour is replaced by the key frame itself. This is DCPose's
  rule (an empty candidate list gives offset 0) applied to every slot, and the spirit of FAMI's training rule.
  Padded slots therefore carry no motion: the temporal difference to the key frame is zero there.
- ``"fami"``: FAMI-Pose's exact asymmetric rule (facts 3.2). The previous side lists its real frames farthest first
  and pads AFTER them with the key frame (``t = 1`` gives ``[t-1, t]``); the next side lists its real frames nearest
  first and pads with ``t + 1`` when at least one next frame exists, else with the key frame (``t = N-2`` gives
  ``[t+1, t+1]``). For delta > 2, "pads with t + 1" is applied literally (FAMI only ran delta = 2, its D = 3).
- ``"clamp"``: mmpose's rule: the index is clamped to the valid range, so the nearest real frame repeats.

The causal window has only a previous side; each rule applies to it as above (``fami``: real frames farthest first,
key-frame padding after them).

Frame numbering: PoseTrack18/21 files are ``%06d`` and 0-based; PoseTrack17 (DCPose's renamed frames and the
original tree) is ``%08d`` and 1-based. Valid indices are ``first .. first + nframes - 1``. A neighbour's file name is
the key frame's name with the index zero-padded to the key frame's digit count, in the same folder, with the same
extension.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from tdmi.errors import DataFormatError

PaddingRule = Literal["key_frame", "fami", "clamp"]
MissingFrames = Literal["error", "pad"]
PADDING_RULES: tuple[str, ...] = ("key_frame", "fami", "clamp")
MISSING_FRAME_POLICIES: tuple[str, ...] = ("error", "pad")

# Datasets whose frame files are numbered from 0 (PoseTrack18/21 "%06d"; SynthTrack writes the PoseTrack18 layout)
# and from 1 (PoseTrack17 "%08d"). Others fall back to DCPose's digit-count rule (facts 2.2).
_ZERO_BASED = ("posetrack18", "posetrack21", "synthtrack")
_ONE_BASED = ("posetrack17",)


@dataclass(frozen=True)
class ClipWindow:
    """Frame indices of one clip, in the dataset's own numbering.

    Attributes:
        indices: ``[T]`` frame index for each clip position (oldest first).
        padded: ``[T]`` True where the slot does not hold its wanted frame (replaced by the padding rule).
        key_position: position of the key frame in the clip (``delta``, or ``2 delta`` for the causal window).
    """

    indices: tuple[int, ...]
    padded: tuple[bool, ...]
    key_position: int


@dataclass(frozen=True)
class ClipFiles:
    """A :class:`ClipWindow` with the frame file of every slot.

    Attributes:
        window: the indices and padded flags.
        paths: ``[T]`` file path per clip position; padded slots repeat a real frame's path.
    """

    window: ClipWindow
    paths: tuple[str, ...]


def _check_choices(padding: str, delta: int) -> None:
    if padding not in PADDING_RULES:
        raise ValueError(f"padding={padding!r} is not allowed; choose one of: {', '.join(PADDING_RULES)}")
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")


def window_offsets(
    available_before: int, available_after: int, delta: int = 2, padding: PaddingRule = "key_frame",
    causal: bool = False,
) -> tuple[list[int], list[bool]]:
    """Offsets from the key frame for every clip slot, given how many real frames exist on each side.

    Args:
        available_before: real (existing, in-range) consecutive frames before the key frame.
        available_after: the same after the key frame (ignored for the causal window).
        delta: supporting frames per side; the clip has 2 delta + 1 slots.
        padding: ``key_frame``, ``fami`` or ``clamp`` (see the module docstring).
        causal: use ``-2 delta .. 0`` instead of ``-delta .. delta``.

    Returns:
        (offsets, padded), each of length 2 delta + 1, oldest slot first; the key frame's offset is 0.
    """
    _check_choices(padding, delta)
    before_span = 2 * delta if causal else delta
    after_span = 0 if causal else delta
    real_before = min(max(available_before, 0), before_span)
    real_after = min(max(available_after, 0), after_span)

    before: list[int]
    after: list[int]
    if padding == "fami":
        # Real previous frames farthest first, then key-frame padding (FAMI's list order, facts 3.2).
        before = [-k for k in range(real_before, 0, -1)] + [0] * (before_span - real_before)
        before_padded = [False] * real_before + [True] * (before_span - real_before)
        after_fill = 1 if real_after >= 1 else 0
        after = list(range(1, real_after + 1)) + [after_fill] * (after_span - real_after)
        after_padded = [False] * real_after + [True] * (after_span - real_after)
    else:
        before, before_padded = [], []
        for k in range(before_span, 0, -1):
            missing = k > real_before
            before.append((-real_before if padding == "clamp" else 0) if missing else -k)
            before_padded.append(missing)
        after, after_padded = [], []
        for k in range(1, after_span + 1):
            missing = k > real_after
            after.append((real_after if padding == "clamp" else 0) if missing else k)
            after_padded.append(missing)
    return before + [0] + after, before_padded + [False] + after_padded


def first_frame_index(dataset: str, digits: int) -> int:
    """Index of a sequence's first frame file: 0 for PoseTrack18/21 (``%06d``), 1 for PoseTrack17 (``%08d``).

    Unknown datasets follow DCPose's rule (facts 2.2): six digits mean 0-based, anything else 1-based.
    """
    if dataset in _ZERO_BASED:
        return 0
    if dataset in _ONE_BASED:
        return 1
    return 0 if digits == 6 else 1


def clip_window(
    key_index: int, nframes: int, delta: int = 2, padding: PaddingRule = "key_frame", first_index: int = 0,
    causal: bool = False,
) -> ClipWindow:
    """The clip around ``key_index`` in a sequence whose valid frames are ``first_index .. first_index + nframes - 1``.

    Examples (PoseTrack18, nframes 5): ``clip_window(0, 5)`` -> indices (0, 0, 0, 1, 2), padded
    (True, True, False, False, False); ``clip_window(1, 5, padding="fami")`` -> (0, 1, 1, 2, 3).
    """
    last_index = first_index + nframes - 1
    if nframes <= 0 or not first_index <= key_index <= last_index:
        raise ValueError(f"key frame {key_index} is outside the sequence's frames {first_index}..{last_index}")
    offsets, padded = window_offsets(key_index - first_index, last_index - key_index, delta, padding, causal)
    return ClipWindow(
        indices=tuple(key_index + o for o in offsets), padded=tuple(padded),
        key_position=2 * delta if causal else delta,
    )


def split_frame_name(path: str) -> tuple[str, int, int, str]:
    """``"images/val/s/000012.jpg"`` -> (``"images/val/s"``, 12, 6, ``".jpg"``): folder, index, digits, extension."""
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    if not stem.isdigit():
        raise DataFormatError(f"{path}: the frame file name is not a number, so its neighbour frames cannot be named")
    return folder, int(stem), len(stem), ext


def frame_path(key_path: str, index: int) -> str:
    """The file of frame ``index`` beside ``key_path``, zero-padded to the key frame's digit count."""
    folder, _, digits, ext = split_frame_name(key_path)
    return os.path.join(folder, f"{index:0{digits}d}{ext}")


def _available(key_path: str, key_index: int, step: int, wanted: int, bound: int) -> int:
    """Consecutive existing frame files from the key frame in direction ``step`` (at most ``wanted``, within bound)."""
    count = 0
    while count < wanted:
        index = key_index + step * (count + 1)
        if (step < 0 and index < bound) or (step > 0 and index > bound):
            break
        if not os.path.exists(frame_path(key_path, index)):
            break
        count += 1
    return count


def clip_files(
    key_path: str | Path, nframes: Optional[int], delta: int = 2, padding: PaddingRule = "key_frame",
    dataset: str = "posetrack18", missing_frames: MissingFrames = "error", causal: bool = False,
) -> ClipFiles:
    """Resolve the frame files of the clip around the key frame file ``key_path``.

    Args:
        key_path: path of the key frame's image (its name must be the frame number, e.g. ``000012.jpg``).
        nframes: frames in the whole video; None or 0 = unknown: then the first missing file on each side is taken
            as the sequence end (under either ``missing_frames`` policy, since the two cannot be told apart).
        delta, padding, causal: see :func:`window_offsets`.
        dataset: decides 0- or 1-based numbering (:func:`first_frame_index`).
        missing_frames: ``error``: a wanted in-range neighbour whose file does not exist raises DataFormatError
            naming the file; ``pad``: the clip ends at the first missing file, as if the sequence ended there.

    Raises:
        DataFormatError: the key frame file is missing, or a neighbour is missing with ``missing_frames="error"``.
    """
    _check_choices(padding, delta)
    if missing_frames not in MISSING_FRAME_POLICIES:
        raise ValueError(
            f"missing_frames={missing_frames!r} is not allowed; choose one of: {', '.join(MISSING_FRAME_POLICIES)}"
        )
    key_path = str(key_path)
    _, key_index, digits, _ = split_frame_name(key_path)
    first = first_frame_index(dataset, digits)
    known_length = nframes is not None and nframes > 0
    last = first + nframes - 1 if known_length else key_index + delta
    if not first <= key_index <= last:
        raise DataFormatError(f"{key_path}: frame {key_index} is outside the sequence's frames {first}..{last} "
                              f"(nframes={nframes}, {dataset} numbering starts at {first})")
    if not os.path.exists(key_path):
        raise DataFormatError(f"{key_path}: key frame image not found")

    before_span = 2 * delta if causal else delta
    after_span = 0 if causal else delta
    in_range_before = min(key_index - first, before_span)
    in_range_after = min(last - key_index, after_span)
    if missing_frames == "pad" or not known_length:
        before = _available(key_path, key_index, -1, in_range_before, first)
        after = _available(key_path, key_index, +1, in_range_after, last)
    else:
        before, after = in_range_before, in_range_after
    offsets, padded = window_offsets(before, after, delta, padding, causal)
    indices = tuple(key_index + o for o in offsets)
    paths = tuple(key_path if o == 0 else frame_path(key_path, i) for o, i in zip(offsets, indices))
    if missing_frames == "error":
        for path in paths:
            if not os.path.exists(path):
                raise DataFormatError(
                    f"{path}: supporting frame not found (key frame {key_path}, nframes={nframes}); "
                    f"set data.missing_frames=pad to pad the clip instead"
                )
    window = ClipWindow(indices=indices, padded=tuple(padded), key_position=before_span)
    return ClipFiles(window=window, paths=paths)
