"""Streaming video inference: detect, track, crop clips, run TDMI with a per-frame feature cache, write poses.

Implements ``tdmi infer`` (``user-needs.md`` sections 9-11: "``video.mp4 -> poses.json + overlay.mp4``", boundary
padding, an online option, batching, an FPS report) on top of ``design.md``'s split of the model into
``encode(frames [N, 3, H, W]) -> StageFeatures`` and ``decode(StageFeatures of [B, T, C, h, w]) -> TDMIOutput``.

Clips and crops (paper section 4.1, ``model-facts.md`` (e)): the clip of key frame t is frames t-delta .. t+delta,
all cropped with ONE box (the person box enlarged 25% after the aspect fix, ``tdmi.data.transforms``). Three ways
to feed it, chosen by ``mode``:

- ``exact`` (the paper): each key frame's own box crops its T frames, so a frame is re-cropped and re-encoded for
  every key frame whose clip contains it (up to T times). Padded slots repeat the key frame's crop and are encoded
  once; every clip of a batch of people (and of a chunk of key frames) goes through the backbone together.
- ``tube`` (ours, the fast default): one crop box per track and window of up to ``window`` key frames: the union
  of the track's boxes at the window's key frames (``tracking.tube_crop_box`` with no widening: like the paper's
  key-frame box, the crop need not cover the person in the supporting frames), then the same aspect fix and 25%
  enlargement. Every frame crop of a window is shared by all key frames of that window, so
  each (track, frame, window) is encoded exactly once and its stage features are cached; only the delta frames at
  each window edge are encoded twice (once per window), i.e. at best (window + 2 delta) / window encodes per
  person-frame instead of T. A shared crop is looser than the paper's when the person moves, and a loose crop
  costs accuracy (measured: 4.5 mAP on SynthTrack with fixed 12-frame windows whose crop also covered the delta
  frames around them), so a window only grows while its crop stays within ``tube_scale_tolerance`` (scale) and
  ``tube_shift_tolerance`` (centre) of every one of its key frames' own crops; a one-key-frame window is exactly
  the paper's crop.
- ``naive`` (benchmark baseline only): the paper's crops, one ``model(clip [1, T, 3, H, W])`` per person and key
  frame, no batching and no reuse: T encodes per person-frame.

Padding at the sequence ends uses the rule the model was trained with (``data.padding`` of the checkpoint's
config, by default ``key_frame``: a missing neighbour is replaced by the key frame; ``tdmi.data.clips``).
A change of frame size (folders of mixed images) starts a new segment: clips never cross it (the neighbours
on the other side are padded), because box coordinates of differently sized frames do not line up. A gap in a
folder's numbering does NOT break a segment: neighbours are neighbours in the listing (``sources`` warns).

Online (``--online``, causal): the result of frame t is computed as soon as frame t arrives, from frames <= t only.
The model reads the key frame's feature at clip index delta (``TDMI.decode``: ``visual = clip[:, delta]``), so the
causal clip t-2delta..t with the key frame last would make it predict frame t-delta. Instead the online clip is
``t-delta .. t`` followed by delta copies of the key frame: exactly the clip the model sees for the LAST frame of a
sequence in training and offline inference (the same padding rule), so it stays in distribution and the online
result of frame t equals the offline result of the video cut after frame t (tested). The price: delta past frames
are used, not 2 delta. In online tube mode a window opens with the paper's crop of its first key frame and keeps
it; a key frame that the crop no longer fits (the tolerances above), or the ``window``-th key frame, opens a new
window.

Memory is bounded: frames are kept only while a pending key frame may need them (about window + 2 delta frames
offline, delta + 1 online), cached features only for the tracks of one group of the current chunk, and the
tracker's per-track history is pruned to the frames still in reach.

Boxes: the tracker's cleaned boxes (clipped to the frame; tiny, non-finite and all-outside ones dropped; at most
``max_boxes`` per frame, ``tracking.IoUTracker``) crop the people and are written as ``bbox``. Joint score =
heatmap maximum x box score (``evaluation.writers.PersonPrediction``).
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Optional

import numpy as np
import torch

from tdmi import __version__
from tdmi.config import ExperimentConfig, config_from_dict, flatten_dict, load_config, to_dict
from tdmi.data.clips import PADDING_RULES, window_offsets
from tdmi.data.fileio import atomic_write_json
from tdmi.data.transforms import (PIXEL_STD, box_to_center_scale, get_affine_transform, normalize_crops,
                                  warp_frames)
from tdmi.errors import CheckpointError, CommandError, DataFormatError, TdmiError
from tdmi.evaluation.decode import decode_heatmaps
from tdmi.evaluation.writers import POSETRACK18_CATEGORIES, PersonPrediction, posetrack18_annotation
from tdmi.inference.boxes import MAX_BOXES_PER_FRAME, MIN_BOX_SIDE
from tdmi.inference.detectors import PersonDetector
from tdmi.inference.sources import FrameSource, SourceFrame
from tdmi.inference.tracking import IoUTracker, Track, TrackedFrame, tube_crop_box
from tdmi.keypoints import POSETRACK17

MODES = ("tube", "exact", "naive")
"""``tube`` and ``exact`` are user choices (``tdmi infer --mode``); ``naive`` is the benchmark's baseline."""

DEFAULT_WINDOW = 12
"""Key frames per tube window. At delta 2: at most (12 + 4) / 12 = 1.33 encodes per person-frame (``benchmarks/
infer_speed.py`` measures speed and mAP against the window)."""

MAX_NOTES = 10
"""Warnings of one input kept in its JSON and printed (the rest are counted)."""

DEMO_CHECKPOINT = "tdmi_demo.safetensors"
"""File name of the shipped demo model in ``tdmi/weights`` (trained on SynthTrack; absent in a bare checkout)."""

FALLBACK_MODEL_OVERRIDES = (
    "model.input_size=[96, 128]", "model.heatmap_size=[24, 32]", "model.backbone.width=8",
    "model.tde.channels=16", "model.tde.deform_groups=4",
)
"""The small model (``configs/tdmi_w8_synth_128x96.yaml``'s) built with random weights when no checkpoint exists;
written as overrides because ``configs/`` is not part of an installed package."""


# --------------------------------------------------------------------------------------------------------- records


@dataclass
class PipelineOptions:
    """How :class:`VideoPoseEstimator` runs.

    Attributes:
        mode: ``tube``, ``exact`` or ``naive`` (see the module docstring).
        online: causal clips; each frame's result is ready when the frame arrives.
        window: key frames per tube window (offline: also the chunk of key frames processed together).
        encode_batch: frame crops per ``model.encode`` call.
        decode_batch: clips per ``model.decode`` call.
        padding: padding rule at sequence ends; None = the checkpoint config's ``data.padding``.
        min_iou, max_missed: tracker association threshold and gap tolerance (``tracking.IoUTracker``).
        max_boxes: most people kept per frame (highest box scores).
        min_box_side: boxes narrower or lower than this (pixels, after clipping) are dropped.
        tube_scale_tolerance: a tube window's shared crop may be at most this much larger than a key frame's own
            crop (0.1 = 10%); otherwise the window is split.
        tube_shift_tolerance: ... and its centre at most this fraction of the crop size away from the key box's.
        keep_heatmaps: keep each person's heatmaps ``[J, h, w]`` in the results (tests, debugging).
    """

    mode: str = "tube"
    online: bool = False
    window: int = DEFAULT_WINDOW
    encode_batch: int = 32
    decode_batch: int = 16
    padding: Optional[str] = None
    min_iou: float = 0.3
    max_missed: int = 5
    max_boxes: int = MAX_BOXES_PER_FRAME
    min_box_side: float = MIN_BOX_SIDE
    tube_scale_tolerance: float = 0.1
    tube_shift_tolerance: float = 0.1
    keep_heatmaps: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CommandError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.window < 1:
            raise CommandError(f"the tube window must be >= 1 key frame, got {self.window}")
        if self.encode_batch < 1 or self.decode_batch < 1:
            raise CommandError("encode_batch and decode_batch must be >= 1")
        if self.padding is not None and self.padding not in PADDING_RULES:
            raise CommandError(f"padding must be one of {', '.join(PADDING_RULES)}, got {self.padding!r}")


@dataclass
class PersonPose:
    """One person's pose in one frame (image pixels of that frame).

    Attributes:
        track_id: tracker id, unique within the frame, in [0, 10000).
        box: float32 ``[4]`` xywh, the tracker's cleaned detection box.
        box_score: detection score.
        keypoints: float32 ``[17, 2]`` (x, y) in the 17-slot PoseTrack order.
        heatmap_scores: float32 ``[17]`` raw heatmap maxima.
        heatmaps: ``[17, h, w]`` when :attr:`PipelineOptions.keep_heatmaps`, else None.
    """

    track_id: int
    box: np.ndarray
    box_score: float
    keypoints: np.ndarray
    heatmap_scores: np.ndarray
    heatmaps: Optional[torch.Tensor] = None

    def prediction(self) -> PersonPrediction:
        """As the writers' record (joint score = heatmap maximum x box score)."""
        return PersonPrediction(keypoints=self.keypoints, heatmap_scores=self.heatmap_scores,
                                box_score=self.box_score, track_id=self.track_id)


@dataclass
class FramePoses:
    """The result for one decoded frame.

    Attributes:
        position: 0-based position among the decoded frames (clip neighbours are neighbouring positions).
        index: the frame's index in its source (``SourceFrame.index``; differs from position after skipped frames).
        name: the source's frame name.
        size: ``(width, height)``.
        people: one :class:`PersonPose` per tracked person.
    """

    position: int
    index: int
    name: str
    size: tuple[int, int]
    people: list[PersonPose] = field(default_factory=list)


@dataclass
class RunStats:
    """Counts and timings of one :meth:`VideoPoseEstimator.run`.

    ``pose_seconds`` covers cropping, encoding, decoding and heatmap decoding (not detection, tracking, reading or
    writing); ``person_frames`` counts (person, frame) results; ``encoded_crops`` counts frames through the backbone.
    """

    frames: int = 0
    person_frames: int = 0
    encoded_crops: int = 0
    decoded_clips: int = 0
    segments: int = 0
    pose_seconds: float = 0.0
    detect_seconds: float = 0.0
    track_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def person_frames_per_second(self) -> float:
        return self.person_frames / self.pose_seconds if self.pose_seconds > 0 else 0.0

    @property
    def encodes_per_person_frame(self) -> float:
        return self.encoded_crops / self.person_frames if self.person_frames else 0.0

    def to_json(self) -> dict:
        return {"frames": self.frames, "person_frames": self.person_frames, "encoded_crops": self.encoded_crops,
                "decoded_clips": self.decoded_clips, "segments": self.segments,
                "pose_seconds": round(self.pose_seconds, 4), "detect_seconds": round(self.detect_seconds, 4),
                "track_seconds": round(self.track_seconds, 4), "wall_seconds": round(self.wall_seconds, 4),
                "person_frames_per_second": round(self.person_frames_per_second, 3),
                "encodes_per_person_frame": round(self.encodes_per_person_frame, 4)}


# ----------------------------------------------------------------------------------------------------------- model


class LoadedModel(NamedTuple):
    """A model ready for inference and what the user must be told about it."""

    model: torch.nn.Module
    config: ExperimentConfig
    description: str
    random_init: bool
    checkpoint: Optional[Path]
    notes: tuple[str, ...] | list[str] = ()
    """One-line facts the user should see (e.g. what a foreign checkpoint's joint slots mean)."""


def resolve_device(name: Optional[str]) -> torch.device:
    """``None`` -> cuda when available, else cpu; ``cuda`` without a GPU is a :class:`CommandError`."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: this torch has no usable CUDA device; use --device cpu")
    return device


def shipped_checkpoint() -> Optional[Path]:
    """The demo checkpoint inside the installed package (``tdmi/weights/tdmi_demo.safetensors``), if present."""
    try:
        path = Path(str(resources.files("tdmi") / "weights" / DEMO_CHECKPOINT))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


SHIPPED_MODEL_NOTE = ("note: the shipped demo model was trained on SynthTrack only (synthetic people); on real "
                      "video its poses are not meaningful (Mean AP 3.2 on the real PoseTrack18 sample). For real "
                      "poses pass --checkpoint with a TDMI trained on real data (tdmi train, README).")
"""Printed by `tdmi infer` when it runs the shipped demo model."""

RANDOM_INIT_BANNER = "\n".join([
    "!" * 100,
    "!!  WARNING: NO TRAINED CHECKPOINT. The model has RANDOMLY INITIALISED weights, so every pose below is",
    "!!  MEANINGLESS (the pipeline, files and speed are real). Pass --checkpoint FILE with trained weights",
    f"!!  (or install a tdmi that ships tdmi/weights/{DEMO_CHECKPOINT}).",
    "!" * 100,
])


def load_inference_model(checkpoint: Optional[str], config_path: Optional[str] = None,
                         overrides: Iterable[str] = (), device: torch.device | str = "cpu") -> LoadedModel:
    """Build the model for inference, in eval mode on ``device``.

    Order: ``checkpoint`` (its sidecar's config, or ``config_path`` when given; a foreign HRNet ``.pth`` becomes the
    single-frame HRNet, :mod:`tdmi.models.foreign_hrnet`); else the shipped demo checkpoint;
    else a randomly initialised model from ``config_path`` or, without one, the small W8 128x96 model
    (:data:`FALLBACK_MODEL_OVERRIDES`), with ``random_init`` set so that callers print :data:`RANDOM_INIT_BANNER`.

    Raises:
        CheckpointError: missing or unreadable files, or weights that do not fit the config's model.
    """
    from tdmi.models.checkpoints import load_checkpoint
    from tdmi.models.foreign_hrnet import is_foreign_checkpoint, load_foreign_hrnet
    from tdmi.models.tdmi import build_model

    path = Path(checkpoint) if checkpoint else shipped_checkpoint()
    if path is None:
        cfg = load_config(config_path, list(overrides) if config_path else [*FALLBACK_MODEL_OVERRIDES, *overrides])
        torch.manual_seed(0)  # the same random model every run, so outputs are reproducible
        model = build_model(cfg.model)
        description = (f"{cfg.model.arch} HRNet-W{cfg.model.backbone.width} {cfg.model.input_size[0]}x"
                       f"{cfg.model.input_size[1]} delta={cfg.model.delta}, RANDOM weights (no checkpoint)")
        return LoadedModel(model.to(device).eval(), cfg, description, True, None)
    if is_foreign_checkpoint(path):  # an official/mmpose/DCPose HRNet file: the single-frame HRNet it holds
        foreign = load_foreign_hrnet(path, config_path, overrides, device)
        return LoadedModel(foreign.model, foreign.cfg, foreign.description, False, path, foreign.notes)
    state, metadata = load_checkpoint(path)
    if config_path:
        cfg = load_config(config_path, list(overrides))
    else:
        raw = metadata.get("config")
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: the sidecar holds no 'config'; pass --config with the model's config")
        cfg = config_from_dict(raw, where=f"{path} sidecar")
        if overrides:
            cfg = load_config(None, [*_as_overrides(cfg), *overrides])
    model = build_model(cfg.model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]}{shapes})" for keys, what, shapes in (
            (missing, "missing", ""), (unexpected, "unexpected", ""),
            (wrong, "with another shape", f": file {tuple(state[wrong[0]].shape)}, model "
                                          f"{tuple(expected[wrong[0]].shape)}" if wrong else "")) if keys]
        raise CheckpointError(f"{path}: weights do not fit the config's model ({cfg.model.arch}, width "
                              f"{cfg.model.backbone.width}): {'; '.join(parts)}")
    model.load_state_dict(state)
    description = (f"{cfg.model.arch} HRNet-W{cfg.model.backbone.width} {cfg.model.input_size[0]}x"
                   f"{cfg.model.input_size[1]} delta={cfg.model.delta} from {path.name}")
    return LoadedModel(model.to(device).eval(), cfg, description, False, path)


def _as_overrides(cfg: ExperimentConfig) -> list[str]:
    """A resolved config as ``a.b=value`` overrides (values as JSON, which YAML parses back)."""
    import json

    return [f"{key}={json.dumps(value)}" for key, value in flatten_dict(to_dict(cfg)).items()]


# ------------------------------------------------------------------------------------------------------- estimator


@dataclass
class _BufferedFrame:
    position: int
    index: int
    name: str
    image: np.ndarray
    segment: int
    tracked: TrackedFrame


@dataclass
class _ClipJob:
    """One (person, key frame) clip: which crop, and which buffered frame fills each of its T slots."""

    key_position: int
    person: int
    crop: tuple
    slots: list[int]


@dataclass
class _OnlineWindow:
    number: int
    center: np.ndarray
    scale: np.ndarray
    key_frames: int = 0


class VideoPoseEstimator:
    """Run a TDMI-family model over a stream of frames with tracking and a feature cache (module docstring).

    Args:
        model: from :func:`load_inference_model` (``encode``/``decode``/``forward``; 17 heatmap channels).
        cfg: the model's experiment config (input size, delta, box enlargement, padding rule).
        options: :class:`PipelineOptions`.
        device: where the model lives; crops are built on the CPU and moved there.
    """

    def __init__(self, model: torch.nn.Module, cfg: ExperimentConfig, options: Optional[PipelineOptions] = None,
                 device: torch.device | str = "cpu") -> None:
        self.model = model
        self.cfg = cfg
        self.options = options or PipelineOptions()
        self.device = torch.device(device)
        self.delta = int(cfg.model.delta)
        self.num_frames = 2 * self.delta + 1
        self.input_size = (int(cfg.model.input_size[0]), int(cfg.model.input_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.enlarge = float(cfg.data.bbox_enlarge)
        self.padding = self.options.padding or cfg.data.padding
        if cfg.model.num_joints != POSETRACK17.num_joints:
            raise CommandError(f"the model predicts {cfg.model.num_joints} joints; video inference writes the "
                               f"{POSETRACK17.num_joints}-slot PoseTrack order")

    # ------------------------------------------------------------------------------------------------- public

    def run(self, frames: Iterable[SourceFrame], detector: PersonDetector,
            emit: Callable[[FramePoses, np.ndarray], None], *, progress: bool = False,
            total: Optional[int] = None, description: str = "infer") -> RunStats:
        """Process ``frames`` in order; call ``emit(frame_poses, image_bgr)`` once per frame, in frame order.

        Offline, a frame is emitted once the frames its chunk of key frames needs have arrived (a lag of about
        window + delta frames); online, before the next frame is read.
        """
        from tqdm import tqdm

        self.stats = RunStats()
        self._tracker = IoUTracker(min_iou=self.options.min_iou, max_missed=self.options.max_missed,
                                   min_box_side=self.options.min_box_side, max_boxes=self.options.max_boxes)
        self._buffer: dict[int, _BufferedFrame] = {}
        self._segment_start: dict[int, int] = {}
        self._segment_last: dict[int, int] = {}
        self._next_key = 0
        self._online_windows: dict[int, _OnlineWindow] = {}
        self._online_cache: dict[tuple, tuple] = {}
        self._window_counter = 0
        self._features_type: type = tuple
        start = time.perf_counter()
        bar = tqdm(total=total, desc=description, unit="frame", disable=not progress, file=sys.stderr)

        def emit_and_count(frame_poses: FramePoses, image: np.ndarray) -> None:
            # the bar counts finished frames: offline, poses come about window + delta frames after the read,
            # and a bar of frames read would reach 100% while the last windows are still being estimated
            emit(frame_poses, image)
            bar.update(1)

        self._emit = emit_and_count
        last_size: Optional[tuple[int, int]] = None
        segment = -1
        position = -1
        try:
            with torch.inference_mode():
                for frame in frames:
                    position += 1
                    image = frame.image
                    size = (int(image.shape[1]), int(image.shape[0]))
                    if size != last_size:
                        segment += 1
                        self._segment_start[segment] = position
                        last_size = size
                    self._segment_last[segment] = position
                    t0 = time.perf_counter()
                    detections = detector.detect(image, frame.index, frame.name)
                    t1 = time.perf_counter()
                    tracked = self._tracker.update(position, detections.boxes, detections.scores, size[0], size[1])
                    self.stats.detect_seconds += t1 - t0
                    self.stats.track_seconds += time.perf_counter() - t1
                    self._buffer[position] = _BufferedFrame(position, frame.index, frame.name, image, segment,
                                                            tracked)
                    self.stats.frames += 1
                    if self.options.online:
                        self._process([position])
                        self._release(position + 1)
                    else:
                        self._process_ready(position, final=False)
                if not self.options.online:
                    self._process_ready(position, final=True)
        finally:
            bar.close()
        self.stats.segments = segment + 1
        self.stats.wall_seconds = time.perf_counter() - start
        return self.stats

    # ---------------------------------------------------------------------------------------------- scheduling

    def _process_ready(self, last_position: int, final: bool) -> None:
        """Offline: process every chunk of ``window`` key frames whose clips are complete."""
        window = self.options.window
        while self._next_key <= last_position:
            chunk_end = min(self._next_key + window - 1, last_position)
            if not final and last_position < self._next_key + window - 1 + self.delta:
                return
            chunk = list(range(self._next_key, chunk_end + 1))
            self._process(chunk)
            self._next_key = chunk_end + 1
            self._release(self._next_key)

    def _release(self, next_key: int) -> None:
        """Drop frames, cached features and tracker history that no key frame >= ``next_key`` can use."""
        keep_from = next_key - self.delta
        for position in [p for p in self._buffer if p < keep_from]:
            del self._buffer[position]
        if self._online_cache:
            for key in [k for k in self._online_cache if k[-1] < keep_from]:
                del self._online_cache[key]
        live = {t.track_id for t in self._tracker.live}
        for track_id in [t for t in self._online_windows if t not in live]:
            del self._online_windows[track_id]
        for track_id, track in list(self._tracker.tracks.items()):
            # A closed track can no longer be matched; a live one needs its last box for the velocity model.
            if track_id not in live and track.last_frame < keep_from:
                del self._tracker.tracks[track_id]
                continue
            for position in [p for p in track.boxes if p < keep_from and p != track.last_frame]:
                del track.boxes[position]
                track.scores.pop(position, None)

    def _slots(self, key: int) -> tuple[list[int], list[bool]]:
        """Buffer positions filling the T slots of key frame ``key`` (padding inside the key frame's segment)."""
        segment = self._buffer[key].segment
        before = key - self._segment_start[segment]
        after = 0 if self.options.online else self._segment_last[segment] - key
        offsets, padded = window_offsets(before, after, self.delta, self.padding, causal=False)
        return [key + o for o in offsets], padded

    # ------------------------------------------------------------------------------------------------ crops

    def _center_scale(self, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return box_to_center_scale(box, self.aspect_ratio, self.enlarge)

    def _fits(self, crop: tuple[np.ndarray, np.ndarray], box: np.ndarray) -> bool:
        """Whether a shared crop is close to ``box``'s own (paper) crop: at most ``tube_scale_tolerance`` larger and
        its centre at most ``tube_shift_tolerance`` of the crop size away, so the person still fills the input."""
        center, scale = crop
        own_center, own_scale = self._center_scale(box)
        if scale[0] > own_scale[0] * (1.0 + self.options.tube_scale_tolerance):
            return False
        shift = np.abs(center - own_center) / (scale * PIXEL_STD)
        return bool((shift <= self.options.tube_shift_tolerance).all())

    def _plan(self, keys: list[int]) -> tuple[list[_ClipJob], dict[tuple, tuple[np.ndarray, np.ndarray]]]:
        """Clip jobs of the key frames ``keys`` and the (center, scale) of every crop they use."""
        jobs: list[_ClipJob] = []
        crops: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        mode = self.options.mode
        window_of: dict[tuple[int, int], tuple] = {}
        if mode == "tube" and not self.options.online:
            # Per (track, segment): its key frames in this chunk, split greedily into windows whose shared crop
            # still fits every key frame's own box (_fits); fast movers get short windows, still people long ones.
            spans: dict[tuple[int, int], list[int]] = {}
            for key in keys:
                frame = self._buffer[key]
                for track_id in frame.tracked.track_ids:
                    spans.setdefault((int(track_id), frame.segment), []).append(key)
            for (track_id, segment), span in spans.items():
                track = self._tracker.tracks[track_id]
                start = 0
                while start < len(span):
                    end = start
                    crop_params = self._center_scale(track.boxes[span[start]])
                    while end + 1 < len(span):
                        wider = self._center_scale(tube_crop_box(track, span[start], span[end + 1], 0, 1.0))
                        if not all(self._fits(wider, track.boxes[k]) for k in span[start:end + 2]):
                            break
                        end, crop_params = end + 1, wider
                    self._window_counter += 1
                    crop = ("tube", track_id, self._window_counter)
                    crops[crop] = crop_params
                    for key in span[start:end + 1]:
                        window_of[(track_id, key)] = crop
                    start = end + 1
        for key in keys:
            frame = self._buffer[key]
            slots, _ = self._slots(key)
            for person, track_id in enumerate(frame.tracked.track_ids):
                track_id = int(track_id)
                box = frame.tracked.boxes[person]
                if mode == "tube" and self.options.online:
                    crop = self._online_crop(self._tracker.tracks[track_id], key, box, crops)
                elif mode == "tube":
                    crop = window_of[(track_id, key)]
                else:
                    crop = ("key", track_id, key)
                    crops[crop] = self._center_scale(box)
                jobs.append(_ClipJob(key, person, crop, slots))
        return jobs, crops

    def _online_crop(self, track: Track, key: int, box: np.ndarray, crops: dict) -> tuple:
        """Online tube: keep the track's window while its crop fits the key frame's box (and it is young)."""
        window = self._online_windows.get(track.track_id)
        if window is not None and (window.key_frames >= self.options.window
                                   or not self._fits((window.center, window.scale), box)):
            window = None
        if window is None:
            center, scale = self._center_scale(box)  # the window opens with the paper's crop of this key frame
            self._window_counter += 1
            window = _OnlineWindow(self._window_counter, center, scale)
            self._online_windows[track.track_id] = window
        window.key_frames += 1
        crop = ("tube", track.track_id, window.number)
        crops[crop] = (window.center, window.scale)
        return crop

    def _crop_tensor(self, crop_params: tuple[np.ndarray, np.ndarray], positions: list[int]) -> torch.Tensor:
        """ImageNet-normalised crops ``[len(positions), 3, H, W]`` of buffered frames with one crop box."""
        center, scale = crop_params
        matrix = get_affine_transform(center, scale, 0.0, self.input_size)
        images = [self._buffer[p].image for p in positions]
        return normalize_crops(warp_frames(images, matrix, self.input_size))

    # --------------------------------------------------------------------------------------------- processing

    def _process(self, keys: list[int]) -> None:
        t0 = time.perf_counter()
        jobs, crops = self._plan(keys)
        results: dict[tuple[int, int], tuple] = {}
        if self.options.mode == "naive":
            for job in jobs:
                clip = self._crop_tensor(crops[job.crop], job.slots).unsqueeze(0).to(self.device)
                heatmaps = self.model(clip).heatmaps
                self.stats.encoded_crops += self.num_frames
                self.stats.decoded_clips += 1
                self._decode_jobs([job], heatmaps, crops, results)
        else:
            # Tracks in groups, so that the cached features of one group at a time are alive.
            by_track: dict[int, list[_ClipJob]] = {}
            for job in jobs:
                by_track.setdefault(job.crop[1], []).append(job)
            group: list[_ClipJob] = []
            for track_jobs in by_track.values():
                group.extend(track_jobs)
                if len(group) >= self.options.decode_batch * 2:
                    self._run_group(group, crops, results)
                    group = []
            if group:
                self._run_group(group, crops, results)
        self.stats.pose_seconds += time.perf_counter() - t0
        for key in keys:
            frame = self._buffer[key]
            people = [results[(key, person)] for person in range(len(frame.tracked.track_ids))]
            self.stats.person_frames += len(people)
            size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
            self._emit(FramePoses(key, frame.index, frame.name, size, people), frame.image)

    def _run_group(self, jobs: list[_ClipJob], crops: dict, results: dict) -> None:
        """Encode every (crop, frame) the jobs need once, then decode their clips from those features."""
        cache = self._online_cache if self.options.online else {}
        needed: dict[tuple, None] = {}
        for job in jobs:
            for position in job.slots:
                key = (job.crop, position)
                if key not in cache:
                    needed[key] = None
        by_crop: dict[tuple, list[int]] = {}
        for crop, position in needed:
            by_crop.setdefault(crop, []).append(position)
        pending: list[tuple[tuple, torch.Tensor]] = []
        for crop, positions in by_crop.items():
            tensor = self._crop_tensor(crops[crop], positions)
            pending.extend(((crop, p), tensor[i]) for i, p in enumerate(positions))
        batch = self.options.encode_batch
        for start in range(0, len(pending), batch):
            part = pending[start:start + batch]
            features = self.model.encode(torch.stack([t for _, t in part]).to(self.device))
            self.stats.encoded_crops += len(part)
            for i, (key, _) in enumerate(part):
                cache[key] = tuple(f[i] for f in features)
        if pending:
            self._features_type = type(features)  # StageFeatures; decode may also be fed from the online cache
        for start in range(0, len(jobs), self.options.decode_batch):
            part = jobs[start:start + self.options.decode_batch]
            stages = []
            for stage in range(len(cache[(part[0].crop, part[0].slots[0])])):
                stages.append(torch.stack([torch.stack([cache[(job.crop, p)][stage] for p in job.slots])
                                           for job in part]))
            features = self._features_type._make(stages) if hasattr(self._features_type, "_make") else tuple(stages)
            heatmaps = self.model.decode(features).heatmaps
            self.stats.decoded_clips += len(part)
            self._decode_jobs(part, heatmaps, crops, results)

    def _decode_jobs(self, jobs: list[_ClipJob], heatmaps: torch.Tensor, crops: dict, results: dict) -> None:
        heatmaps = heatmaps.float().cpu()
        center = torch.as_tensor(np.stack([crops[job.crop][0] for job in jobs]), dtype=torch.float64)
        scale = torch.as_tensor(np.stack([crops[job.crop][1] for job in jobs]), dtype=torch.float64)
        coords, maxvals = decode_heatmaps(heatmaps, center, scale)
        for i, job in enumerate(jobs):
            tracked = self._buffer[job.key_position].tracked
            results[(job.key_position, job.person)] = PersonPose(
                track_id=int(tracked.track_ids[job.person]), box=tracked.boxes[job.person].copy(),
                box_score=float(tracked.scores[job.person]), keypoints=coords[i].numpy().astype(np.float32),
                heatmap_scores=maxvals[i].numpy().astype(np.float32),
                heatmaps=heatmaps[i].clone() if self.options.keep_heatmaps else None)


# ----------------------------------------------------------------------------------------------------------- files


def _image_ids(source_stem: str, frames: list[FramePoses]) -> list[int]:
    """PoseTrack18 ids when every frame name follows the PoseTrack layout (so files line up with GT), else the
    frames' source indices."""
    from tdmi.data.posetrack import posetrack18_image_id

    try:
        ids = [posetrack18_image_id(f"{source_stem}/{Path(f.name).stem}.jpg") for f in frames]
    except (DataFormatError, ValueError):
        return [f.index for f in frames]
    return ids if len(set(ids)) == len(ids) else [f.index for f in frames]


def poses_document(frames: list[FramePoses], source_stem: str, kind: str, meta: dict) -> dict:
    """The PoseTrack18-style JSON of one input: ``images`` (one per decoded frame, in order), ``annotations`` (17-slot
    ``keypoints`` whose third value is the joint score, ``scores``, ``track_id``, ``bbox``, ``score``),
    ``categories``, and run information under ``"tdmi"`` (poseval ignores unknown keys)."""
    ids = _image_ids(source_stem, frames)
    images, annotations = [], []
    for frame, image_id in zip(frames, ids):
        file_name = f"{source_stem}/{frame.name}" if kind != "video" else f"{source_stem}/{frame.index:06d}.jpg"
        images.append({"id": image_id, "file_name": file_name, "frame_id": image_id, "frame_index": frame.index,
                       "nframes": len(frames), "width": frame.size[0], "height": frame.size[1]})
        for person in frame.people:
            annotation = posetrack18_annotation(person.prediction(), image_id, len(annotations),
                                                f"{source_stem} frame {frame.name}")
            annotation["bbox"] = [round(float(v), 2) for v in person.box]
            annotation["id"] = len(annotations)
            annotations.append(annotation)
    return {"images": images, "annotations": annotations, "categories": POSETRACK18_CATEGORIES, "tdmi": meta}


@dataclass
class InferOutcome:
    """What :func:`infer_source` wrote and measured."""

    json_path: Path
    video_path: Optional[Path]
    stats: RunStats
    people: int
    tracks: int
    notes: list[str] = field(default_factory=list)
    frames: list[FramePoses] = field(default_factory=list)


def _output_stem(spec: str, taken: set[str]) -> str:
    path = Path(spec)
    stem = path.name if path.is_dir() else path.stem
    stem = stem or "input"
    candidate, number = stem, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}_{number}"
    taken.add(candidate)
    return candidate


def infer_source(spec: str, out_dir: Path, loaded: LoadedModel, detector, detector_description: str,
                 options: PipelineOptions, device: torch.device, *, render: bool = False,
                 output_stem: Optional[str] = None, progress: bool = True,
                 reuse_detections: bool = True) -> InferOutcome:
    """Run one video / frame folder / image and write ``<out>/<stem>.json`` (and ``<stem>.mp4`` with ``render``).

    Files are written atomically when the input is finished; an error leaves earlier files as they were and no
    partial file of this input. An image detector's boxes are cached in ``<out>/<stem>.boxes.json`` and reused by
    the next run on the same input with the same detector (:mod:`tdmi.inference.detection_cache`), unless
    ``reuse_detections`` is False.

    Raises:
        FileNotFoundError, DataFormatError: the input cannot be read (messages name it).
    """
    from tdmi.inference.detection_cache import RecordingDetector, cache_key, cache_path, load_cached_detector
    from tdmi.inference.detectors import BoxFileDetector
    from tdmi.inference.render import VideoWriter, draw_people
    from tdmi.inference.sources import open_source

    source: FrameSource = open_source(spec)
    stem = output_stem or _output_stem(spec, set())
    box_file = detector if isinstance(detector, BoxFileDetector) else None
    if box_file is not None:
        if len(box_file.sequences) > 1:
            box_file.select_sequence(source.info.name)
        box_file.frames_seen = box_file.frames_matched = 0  # counted per input
    recorder, cache_file, key, cache_note = None, None, None, None
    if box_file is None and source.info.kind != "webcam":
        cache_file = cache_path(out_dir, stem)
        key = cache_key(spec, detector_description)
        cached = load_cached_detector(cache_file, key) if reuse_detections else None
        if cached is not None:
            detector = cached
            cache_note = (f"{source.info.name}: boxes reused from {cache_file} (same input, same detector); "
                          f"--redetect runs the detector again")
        elif key is not None:
            detector = recorder = RecordingDetector(detector)
    estimator = VideoPoseEstimator(loaded.model, loaded.config, options, device)
    collected: list[FramePoses] = []
    try:
        writer = VideoWriter(out_dir / f"{stem}.mp4", source.info.fps, (source.info.width, source.info.height)) \
            if render else None
    except BaseException:
        source.close()  # the writer could not start: release the decoder before reporting
        raise

    def emit(frame: FramePoses, image: np.ndarray) -> None:
        for person in frame.people:
            person.heatmaps = None  # never keep maps of a whole video
        collected.append(frame)
        if writer is not None:
            people = frame.people
            writer.write(draw_people(
                image, np.stack([p.box for p in people]) if people else None, [p.track_id for p in people],
                np.stack([p.keypoints for p in people]) if people else None,
                np.stack([p.heatmap_scores for p in people]) if people else None))

    try:
        with source, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = estimator.run(source, detector, emit, progress=progress, total=source.info.frame_count,
                                  description=f"infer {source.info.name}")
        video_path = writer.close() if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if recorder is not None:
        recorder.write(cache_file, source.info.name, key)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    if cache_note is not None:
        notes.insert(0, cache_note)
    if len(notes) > MAX_NOTES:  # e.g. a box cap hit in every frame: the first ones tell the story
        notes = notes[:MAX_NOTES] + [f"... and {len(notes) - MAX_NOTES} more warnings like these"]
    if writer is not None and writer.note:
        notes.append(writer.note)
    people = sum(len(f.people) for f in collected)
    tracks = len({p.track_id for f in collected for p in f.people})
    if box_file is not None and box_file.frames_seen and box_file.frames_matched == 0:
        notes.append(f"{source.info.name}: the boxes file has no entry for any of its {box_file.frames_seen} frames "
                     "(frame names or indices do not match); no poses were estimated")
    if people == 0:
        notes.append(f"{source.info.name}: no person was detected in any frame; the JSON lists the frames with no "
                     f"annotations")
    meta = {
        "tdmi_version": __version__, "source": str(spec), "source_kind": source.info.kind, "fps": source.info.fps,
        "model": loaded.description, "checkpoint": str(loaded.checkpoint) if loaded.checkpoint else None,
        "random_init": loaded.random_init, "detector": detector_description, "mode": options.mode,
        "online": options.online, "window": options.window, "delta": int(loaded.config.model.delta),
        "padding": options.padding or loaded.config.data.padding, "device": str(device),
        "throughput": stats.to_json(),
        "skipped_frames": [{"index": i, "name": n, "reason": r} for i, n, r in source.skipped],
        "size_changes": [{"index": i, "size": list(s)} for i, s in source.size_changes],
        "gaps": [{"before": g.before, "after": g.after, "missing": g.missing} for g in source.info.gaps],
        "truncated": source.truncated, "notes": notes,
    }
    json_path = out_dir / f"{stem}.json"
    atomic_write_json(json_path, poses_document(collected, Path(source.info.name).stem if source.info.kind == "video"
                                                else source.info.name, source.info.kind, meta))
    return InferOutcome(json_path, video_path, stats, people, tracks, notes, collected)


def infer_command(args) -> int:
    """``tdmi infer INPUT... [--checkpoint FILE] [--config FILE] [--boxes FILE | --detector NAME] [--out DIR]
    [--render] [--online] [--mode tube|exact] [--window N] [--device cpu|cuda]``."""
    from tdmi.inference.detectors import HOGPeopleDetector, make_detector
    from tdmi.inference.sources import open_source

    # Inputs first: a missing or undecodable input is said once, before a model or detector is loaded and before
    # anything is written.
    failures: list[str] = []
    inputs = []
    for spec in args.inputs:
        try:
            with open_source(spec):
                inputs.append(spec)
        except (TdmiError, FileNotFoundError) as err:
            failures.append(_input_error(spec, err))
    if not inputs:
        raise CommandError(failures[0] if len(failures) == 1 else
                           f"none of the {len(failures)} inputs can be read: {'; '.join(failures)}")
    for failure in failures:
        print(f"tdmi infer: error: {failure} (skipped)", file=sys.stderr)

    device = resolve_device(args.device)
    loaded = load_inference_model(args.checkpoint, args.config, args.overrides, device)
    if loaded.random_init:
        print(RANDOM_INIT_BANNER, file=sys.stderr)
    detector, detector_description = make_detector(args.detector, args.boxes, device=str(device),
                                                   box_score_threshold=loaded.config.data.box_score_threshold,
                                                   layout=getattr(args, "detector_layout", "auto"))
    print(f"model: {loaded.description}")
    for note in loaded.notes:
        print(f"note: {note}")
    shipped = shipped_checkpoint()
    if shipped is not None and loaded.checkpoint is not None and Path(loaded.checkpoint).resolve() == shipped.resolve():
        print(SHIPPED_MODEL_NOTE)
    print(f"detector: {detector_description}")
    if isinstance(detector, HOGPeopleDetector):
        print("note: the HOG detector is weak (upright, unoccluded, large people only); poses can only be as good "
              "as the boxes. Pass --boxes FILE with a stronger detector's output when you have one.")
    options = PipelineOptions(mode=args.mode, online=args.online, window=getattr(args, "window", DEFAULT_WINDOW))
    print(f"mode: {options.mode}{' (online, causal clips)' if options.online else ''}, delta="
          f"{loaded.config.model.delta}, window={options.window}, device={device}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    outcomes: list[InferOutcome] = []
    for spec in inputs:
        try:
            outcome = infer_source(spec, out_dir, loaded, detector, detector_description, options, device,
                                   render=args.render, output_stem=_output_stem(spec, taken),
                                   reuse_detections=not getattr(args, "redetect", False))
        except (TdmiError, FileNotFoundError) as err:
            failures.append(_input_error(spec, err))
            print(f"tdmi infer: error: {failures[-1]}", file=sys.stderr)
            continue
        outcomes.append(outcome)
        for note in outcome.notes:
            print(f"note: {note}", file=sys.stderr)
        s = outcome.stats
        print(f"{spec}: {s.frames} frames, {outcome.people} person-frames in {outcome.tracks} tracks, "
              f"{s.person_frames_per_second:.1f} person-frames/s (pose), {s.encodes_per_person_frame:.2f} "
              f"backbone encodes per person-frame -> {outcome.json_path}"
              + (f" and {outcome.video_path}" if outcome.video_path else ""))
    frames = sum(o.stats.frames for o in outcomes)
    person_frames = sum(o.stats.person_frames for o in outcomes)
    pose_seconds = sum(o.stats.pose_seconds for o in outcomes)
    encodes = sum(o.stats.encoded_crops for o in outcomes)
    rate = person_frames / pose_seconds if pose_seconds > 0 else 0.0
    per = encodes / person_frames if person_frames else 0.0
    failed = f", {len(failures)} failed" if failures else ""
    print(f"infer: {len(outcomes)} of {len(args.inputs)} inputs done{failed}, {frames} frames, {person_frames} "
          f"person-frames, {rate:.1f} person-frames/s, {per:.2f} encodes/person-frame ({options.mode}"
          f"{', online' if options.online else ''}){' [RANDOM WEIGHTS]' if loaded.random_init else ''}; "
          f"wrote {out_dir}")
    if failures and not outcomes:
        return 2  # every failure has been printed once already
    return 1 if failures else 0


def _input_error(spec, err: BaseException) -> str:
    """The error's text, led by the input once (most messages already start with the path)."""
    text = str(err)
    return text if text.startswith(str(spec)) else f"{spec}: {text}"
