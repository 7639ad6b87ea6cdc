"""Streaming video inference: detect, track, crop clips, run TDMI with a per-frame feature cache, write poses.

Implements ``tdmi infer`` (``user-needs.md`` sections 9-11: "``video.mp4 -> poses.json + overlay.mp4``", boundary
padding, an online option, batching, an FPS report) on top of ``docs/architecture.md``'s split of the model into
``encode(frames [N, 3, H, W]) -> StageFeatures`` and ``decode(StageFeatures of [B, T, C, h, w]) -> TDMIOutput``.

Clips and crops (paper section 4.1, ``docs/facts/model-facts.md`` (e)): the clip of key frame t is frames t-delta ..
t+delta,
all cropped with ONE box (the person box enlarged 25% after the aspect fix, ``tdmi.data.transforms``). Four ways
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
- ``warp`` (ours): each person-frame is encoded once, in the track's own (paper) crop of that frame, and a key
  frame's clip takes its supporting frames' cached features resampled from their crops into the key frame's crop
  (``feature_warp``: a scale and shift per axis). The key frame's own features are exact, and one encode per
  track-frame is needed however the person moves: a person-frame once, and a frame where the track has no box
  (a tracking gap: the interpolated box; up to delta frames before a track starts or after it ends: the nearest
  box) once too, which is why the measured rate is 1.1-1.5 encodes per person-frame, not 1. The supporting
  features only approximate the paper's (CNN features of a shifted crop are not exactly shifted features, least of
  all near the border).
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
offline, delta + 1 online), cached features only for the tracks of one group of the current chunk (in warp
mode also the last 2 delta frames of every track, copied out of their encode batch, which the next chunk reuses),
and the tracker's per-track history is pruned to the frames still in reach.

Boxes: the tracker's cleaned boxes (clipped to the frame; tiny, non-finite and all-outside ones dropped; at most
``max_boxes`` per frame, ``tracking.IoUTracker``) crop the people and are written as ``bbox``. Joint score =
heatmap maximum x box score (``evaluation.writers.PersonPrediction``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from tdmi.config import ExperimentConfig
from tdmi.data.clips import window_offsets
from tdmi.data.transforms import (PIXEL_STD, box_to_center_scale, get_affine_transform, normalize_crops,
                                  warp_frames)
from tdmi.errors import CommandError
from tdmi.evaluation.decode import decode_heatmaps
from tdmi.inference.detectors import PersonDetector
from tdmi.inference.feature_warp import own_crops, resample_slots
from tdmi.inference.sources import SourceFrame
from tdmi.inference.tracking import IoUTracker, Track, TrackedFrame, tube_crop_box
from tdmi.keypoints import POSETRACK17
from tdmi.precision import autocast_for
from tdmi.inference.model_loading import (  # noqa: F401  (re-exported: these names were this module's API)
    DEMO_CHECKPOINT, FALLBACK_MODEL_OVERRIDES, RANDOM_INIT_BANNER, SHIPPED_MODEL_NOTE, LoadedModel,
    load_inference_model, resolve_device, shipped_checkpoint)
from tdmi.inference.records import (  # noqa: F401  (re-exported)
    DEFAULT_WINDOW, MAX_NOTES, MODES, FramePoses, PersonPose, PipelineOptions, RunStats)


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
    """One (person, key frame) clip: which crop, and which buffered frame fills each of its T slots.

    ``sources`` (``warp`` mode): per slot, the crop whose cached features fill it; a slot whose source is not
    ``crop`` is resampled from that crop into ``crop`` (``feature_warp``). None: every slot uses ``crop``.
    """

    key_position: int
    person: int
    crop: tuple
    slots: list[int]
    sources: Optional[list[tuple]] = None

    def source(self, slot: int) -> tuple:
        return self.crop if self.sources is None else self.sources[slot]


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
        self.decode_method = self.options.decode or cfg.test.decode
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
        # (crop, position) -> stage features, kept across calls online and in warp mode (see _keeps_features)
        self._feature_cache: dict[tuple, tuple] = {}
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
            self._feature_cache.clear()  # device memory, and frames: nothing of a run outlives it
            self._buffer.clear()
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
        if self._feature_cache:
            for key in [k for k in self._feature_cache if k[-1] < keep_from]:
                del self._feature_cache[key]
        live = {t.track_id for t in self._tracker.live}
        for track_id in [t for t in self._online_windows if t not in live]:
            del self._online_windows[track_id]
        for track_id, track in list(self._tracker.tracks.items()):
            # A closed track can no longer be matched; a live one needs its last box for the velocity model.
            if track_id not in live and track.last_frame < keep_from:
                del self._tracker.tracks[track_id]
                continue
            # The latest box before keep_from stays too: it anchors the interpolation across a gap that reaches into
            # the kept frames (else a gap frame's box, and its warp-mode crop, would depend on where a chunk ends).
            earlier = sorted(p for p in track.boxes if p < keep_from)
            for position in earlier[:-1]:
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
                sources = None
                if mode == "tube" and self.options.online:
                    crop = self._online_crop(self._tracker.tracks[track_id], key, box, crops)
                elif mode == "tube":
                    crop = window_of[(track_id, key)]
                else:
                    crop = ("key", track_id, key)
                    crops[crop] = self._center_scale(box)
                    if mode == "warp":
                        sources = own_crops(self._tracker.tracks[track_id], key, slots, crops, self._center_scale)
                jobs.append(_ClipJob(key, person, crop, slots, sources))
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
                    self._run_group(group, crops, results, keys[-1])
                    group = []
            if group:
                self._run_group(group, crops, results, keys[-1])
        self.stats.pose_seconds += time.perf_counter() - t0
        for key in keys:
            frame = self._buffer[key]
            people = [results[(key, person)] for person in range(len(frame.tracked.track_ids))]
            self.stats.person_frames += len(people)
            size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
            self._emit(FramePoses(key, frame.index, frame.name, size, people), frame.image)

    def _keeps_features(self) -> bool:
        """Whether features outlive a group: online (the next frame's clip reuses them) and in warp mode, whose
        crops do not depend on the chunk, so the next chunk's first clips reuse the features of its last 2 delta
        frames."""
        return self.options.online or self.options.mode == "warp"

    def _run_group(self, jobs: list[_ClipJob], crops: dict, results: dict, last_key: int) -> None:
        """Encode every (crop, frame) the jobs need once, then decode their clips from those features."""
        cache = self._feature_cache if self._keeps_features() else {}
        needed: dict[tuple, None] = {}
        for job in jobs:
            for slot, position in enumerate(job.slots):
                key = (job.source(slot), position)
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
            with autocast_for(self.device.type, self.options.amp):
                features = self.model.encode(torch.stack([t for _, t in part]).to(self.device))
            self.stats.encoded_crops += len(part)
            for i, (key, _) in enumerate(part):
                cache[key] = tuple(f[i] for f in features)
        if pending:
            self._features_type = type(features)  # StageFeatures; decode may also be fed from the online cache
        for start in range(0, len(jobs), self.options.decode_batch):
            part = jobs[start:start + self.options.decode_batch]
            stages = self._clip_features(part, cache, crops)
            features = self._features_type._make(stages) if hasattr(self._features_type, "_make") else tuple(stages)
            with autocast_for(self.device.type, self.options.amp):
                heatmaps = self.model.decode(features).heatmaps
            self.stats.decoded_clips += len(part)
            self._decode_jobs(part, heatmaps, crops, results)
        if self._keeps_features() and not self.options.online:
            # A group holds all of its tracks' key frames of the chunk: only the frames the next chunk's clips
            # can reach are still needed (memory stays at one group plus 2 delta frames per track).
            for key in needed:
                if key[-1] < last_key + 1 - self.delta:
                    del cache[key]
                else:  # a copy: a view would keep its whole encode batch alive until the next chunk
                    cache[key] = tuple(stage.clone() for stage in cache[key])

    def _clip_features(self, jobs: list[_ClipJob], cache: dict, crops: dict) -> list[torch.Tensor]:
        """Per stage, the jobs' clips ``[B, T, C, h, w]`` from the cached features (warp mode: resampled where a
        slot comes from another crop)."""
        slot_features = [[cache[(job.source(s), p)] for s, p in enumerate(job.slots)] for job in jobs]
        if self.options.mode == "warp":
            self._warp_slots(jobs, crops, slot_features)
        return [torch.stack([torch.stack([features[stage] for features in clip]) for clip in slot_features])
                for stage in range(len(slot_features[0][0]))]

    def _warp_slots(self, jobs: list[_ClipJob], crops: dict, slot_features: list[list[tuple]]) -> None:
        """Resample, in ``slot_features``, every slot filled from another crop into its clip's crop."""
        def differs(a: tuple, b: tuple) -> bool:
            # a still person's crops are the same box: its slots are exact as they are
            return a != b and not all(np.array_equal(x, y) for x, y in zip(crops[a], crops[b]))

        moved = {(i, s): (crops[job.crop], crops[job.source(s)]) for i, job in enumerate(jobs)
                 for s in range(len(job.slots)) if differs(job.source(s), job.crop)}
        resample_slots(slot_features, moved)
        self.stats.warped_slots += len(moved)

    def _decode_jobs(self, jobs: list[_ClipJob], heatmaps: torch.Tensor, crops: dict, results: dict) -> None:
        # decoded where the heatmaps are: only keypoints and scores travel back to the CPU
        heatmaps = heatmaps.float()
        center = torch.as_tensor(np.stack([crops[job.crop][0] for job in jobs]), dtype=torch.float64)
        scale = torch.as_tensor(np.stack([crops[job.crop][1] for job in jobs]), dtype=torch.float64)
        coords, maxvals = decode_heatmaps(heatmaps, center.to(heatmaps.device), scale.to(heatmaps.device),
                                          method=self.decode_method, dark_sigma=self.cfg.data.sigma)
        coords, maxvals = coords.cpu(), maxvals.cpu()
        for i, job in enumerate(jobs):
            tracked = self._buffer[job.key_position].tracked
            results[(job.key_position, job.person)] = PersonPose(
                track_id=int(tracked.track_ids[job.person]), box=tracked.boxes[job.person].copy(),
                box_score=float(tracked.scores[job.person]), keypoints=coords[i].numpy().astype(np.float32),
                heatmap_scores=maxvals[i].numpy().astype(np.float32),
                heatmaps=heatmaps[i].cpu().clone() if self.options.keep_heatmaps else None)
