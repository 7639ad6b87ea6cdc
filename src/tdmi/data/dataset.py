"""The clip dataset: records -> clip tensors, heatmap targets and meta (docs/architecture.md "Contracts", clip sample).

Composes ``clips`` (which frame files), ``images`` (decoding), ``transforms`` (box -> center/scale, one affine crop
for all frames, augmentation, normalisation) and ``targets`` (heatmaps of the key frame). Facts:
``docs/facts/posetrack-facts.md`` sections 3, 4 and 5; the paper's section 4.1 (clip t-2..t+2, key frame's box for all
frames).

One sample is one person box in one key frame:

- ``frames``: float32 ``[T, 3, H, W]``, ImageNet-normalised RGB, T = 2 delta + 1 (key frame at ``delta``; at
  ``2 delta`` for the causal window) or T = 1 with ``key_frame_only``.
- ``heatmaps``: float32 ``[J, h, w]`` (absent with ``with_heatmaps=False``); ``target_weight``: float32 ``[J]``.
- ``meta``: ``image`` (key frame file as in the annotations), ``image_id``, ``frame_paths`` ``[T]``, ``sequence``,
  ``frame_index``, ``center`` ``[2]`` and ``scale`` ``[2]`` (the crop actually used, in the original unflipped
  image), ``rotation`` (degrees), ``flipped``, ``score`` (box score), ``track_id``, ``person_index`` (position of
  the box in its frame's person list), ``padded`` ``[T]`` bools, ``key_position``.

Which boxes become samples:

- ``train`` and GT-box ``val``/``test``: people of labelled frames with at least one labelled joint; their box is
  sanitised (clipped to the image, facts 4.1). Skipped, and counted in ``skipped``: people without labelled joints
  (``no_labelled_joints``), boxes with zero or negative size (``empty_box``) and boxes with nothing left inside the
  image (``box_outside_image``).
- detection ``val``/``test``: every detection of the chosen frames (labelled frames only by default: poseval
  scores nothing else), used raw (no clipping). Boxes with zero or negative size (``empty_box``) or entirely
  outside the image (``box_outside_image``) are skipped and counted.

Randomness: each sample draws its augmentation from ``np.random.default_rng([seed, epoch, index])``, so a sample is
the same for a given seed and epoch whatever the number of DataLoader workers. Call :meth:`set_epoch` each epoch
(with ``persistent_workers=True`` the workers keep the epoch they were started with).

Workers: the pipeline needs no ``worker_init_fn``. Do not call ``cv2.setNumThreads`` inside a forked worker after the
parent process has used OpenCV: that call waited forever on the parent's (absent) thread pool in our benchmark runs
(OpenCV 5.0, Linux fork).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tdmi.config import AugmentConfig, ExperimentConfig
from tdmi.data.clips import MissingFrames, PaddingRule, clip_files
from tdmi.data.images import read_image, read_image_size
from tdmi.data.records import Frame, Person
from tdmi.data.records import Sequence as VideoSequence
from tdmi.data.targets import POSETRACK_JOINT_WEIGHTS, gaussian_heatmaps, target_weights
from tdmi.data.transforms import (
    AugmentParams, box_overlaps_image, box_to_center_scale, clip_joints, clip_matrix, crops_to_uint8, normalize_crops,
    sample_augmentation, sanitize_gt_box, warp_frames,
)
from tdmi.errors import CommandError, DataFormatError
from tdmi.keypoints import POSETRACK17, JointSet
from tdmi.threads import available_cores

Mode = Literal["train", "val", "test"]
MODES: tuple[str, ...] = ("train", "val", "test")
SUPPORT_SOURCES: tuple[str, ...] = ("own_sequence", "other_sequence")


class PersonBoxes(Protocol):
    """Anything that lists the person boxes of a frame, e.g. ``tdmi.data.detections.Detections``."""

    def for_frame(self, frame: Frame) -> list[Person]:
        """The boxes of ``frame`` as :class:`Person` records (keypoints all zero, ``score`` = box score)."""
        ...


@dataclass(frozen=True)
class ClipEntry:
    """One sample: a person box in a key frame.

    Attributes:
        sequence: index into the dataset's sequences.
        frame: index into that sequence's frames.
        person_index: position of the person in the frame's person (or detection) list.
        person: the record (keypoints ``[J, 3]`` in image pixels, box, score, track id).
        center, scale: ``[2]`` each, from the (sanitised) box.
    """

    sequence: int
    frame: int
    person_index: int
    person: Person
    center: np.ndarray
    scale: np.ndarray


class PoseTrackClipDataset(Dataset):
    """Clips of PoseTrack-style records for TDMI (and T = 1 crops for the single-frame baseline).

    Args:
        sequences: records from a reader (``tdmi.data.posetrack.load_sequences``).
        image_root: folder the frames' ``file_name`` entries are relative to.
        mode: ``train`` (augmentation when ``augment`` is given and enabled), ``val`` or ``test`` (never augmented).
        detections: person boxes with ``for_frame(frame) -> list[Person]`` (``tdmi.data.detections``); None = GT
            boxes. Not allowed in ``train`` mode.
        input_size, heatmap_size: ``[w, h]``.
        sigma: Gaussian sigma of the targets in heatmap pixels.
        delta: supporting frames per side; ``padding``, ``missing_frames``, ``causal``: see ``tdmi.data.clips``.
        key_frame_only: return only the key frame (T = 1), for the single-frame HRNet baseline.
        with_heatmaps: build ``heatmaps`` (False skips them, e.g. for inference; ``target_weight`` stays).
        augment: augmentation settings for ``train`` mode; None = none.
        bbox_enlarge: box enlargement before cropping.
        joint_set: the joint order of the records (flip pairs and half-body split come from it).
        joint_weights: optional ``[J]`` loss weights multiplied into ``target_weight``.
        labeled_frames_only: with detections, use only labelled frames (poseval evaluates nothing else).
        mask_outside: zero the weight of joints that fall outside the crop (DCPose/FAMI; HRNet does not).
        seed: base seed of the per-sample random generators.
        uint8_frames: return ``frames`` as uint8 RGB for :func:`tdmi.data.transforms.normalize_frames` on the
            device (a quarter of the bytes through the loader and to the GPU) instead of normalised float32.
        support_from: ``own_sequence``, or ``other_sequence`` (val/test only): the supporting frames come from the
            next sequence (frames at the same offsets around its labelled frame nearest the key frame's index), a
            test-time control with motion that has nothing to do with the key person (``test.support_from``).
    """

    def __init__(
        self, sequences: Sequence[VideoSequence], image_root: str | Path, *, mode: Mode = "train",
        detections: Optional[PersonBoxes] = None, input_size: Sequence[int] = (288, 384),
        heatmap_size: Sequence[int] = (72, 96),
        sigma: float = 3.0, delta: int = 2, padding: PaddingRule = "key_frame", missing_frames: MissingFrames = "error",
        causal: bool = False, key_frame_only: bool = False, with_heatmaps: bool = True,
        augment: Optional[AugmentConfig] = None, bbox_enlarge: float = 1.25, joint_set: JointSet = POSETRACK17,
        joint_weights: Optional[Sequence[float]] = None, labeled_frames_only: bool = True, mask_outside: bool = True,
        seed: int = 0, uint8_frames: bool = False, support_from: str = "own_sequence",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not allowed; choose one of: {', '.join(MODES)}")
        if support_from not in SUPPORT_SOURCES or (support_from != "own_sequence" and mode == "train"):
            raise ValueError(f"support_from={support_from!r}: choose one of {', '.join(SUPPORT_SOURCES)} "
                             "(other_sequence is a test-time control, not for training)")
        self.support_from = support_from
        if mode == "train" and detections is not None:
            raise CommandError("training uses ground-truth boxes; detections are only for val/test")
        self.sequences = list(sequences)
        self.image_root = Path(image_root)
        self.mode = mode
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.delta = int(delta)
        self.padding = padding
        self.missing_frames = missing_frames
        self.causal = causal
        self.key_frame_only = key_frame_only
        self.with_heatmaps = with_heatmaps
        self.uint8_frames = bool(uint8_frames)
        self.augment = augment if (mode == "train" and augment is not None and augment.enabled) else None
        self.bbox_enlarge = float(bbox_enlarge)
        self.joint_set = joint_set
        self.flip_perm = joint_set.flip_permutation()
        self.joint_weights = None if joint_weights is None else np.asarray(joint_weights, dtype=np.float64)
        self.mask_outside = mask_outside
        self.seed = int(seed)
        self.epoch = 0
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.skipped: dict[str, int] = {"no_labelled_joints": 0, "box_outside_image": 0, "empty_box": 0}
        self.entries: list[ClipEntry] = self._build_index(detections, labeled_frames_only)

    # ----------------------------------------------------------------------------------------------------------
    # Index

    def _build_index(self, detections: Optional[PersonBoxes], labeled_frames_only: bool) -> list[ClipEntry]:
        entries: list[ClipEntry] = []
        num_joints = self.joint_set.num_joints
        for s, sequence in enumerate(self.sequences):
            for f, frame in enumerate(sequence.frames):
                if detections is None:
                    if not frame.is_labeled:
                        continue
                    people = frame.people
                else:
                    if labeled_frames_only and not frame.is_labeled:
                        continue
                    people = detections.for_frame(frame)
                if not people:
                    continue
                width, height = self._frame_size(frame)
                for p, person in enumerate(people):
                    keypoints = np.asarray(person.keypoints)
                    if keypoints.shape != (num_joints, 3):
                        raise DataFormatError(
                            f"{sequence.source or sequence.name}: {frame.file_name} person {p} has keypoints of shape "
                            f"{keypoints.shape}, expected ({num_joints}, 3) for joint set {self.joint_set.name}"
                        )
                    if detections is None:
                        if person.num_labeled == 0:
                            self.skipped["no_labelled_joints"] += 1
                            continue
                        if not _has_area(person.bbox):
                            self.skipped["empty_box"] += 1
                            continue
                        box = sanitize_gt_box(person.bbox, width, height)
                        if box is None:
                            self.skipped["box_outside_image"] += 1
                            continue
                    else:
                        box = np.asarray(person.bbox, dtype=np.float64)
                        if not _has_area(box):
                            self.skipped["empty_box"] += 1
                            continue
                        if not box_overlaps_image(box, width, height):
                            self.skipped["box_outside_image"] += 1
                            continue
                    center, scale = box_to_center_scale(box, self.aspect_ratio, self.bbox_enlarge)
                    entries.append(ClipEntry(s, f, p, person, center, scale))
        return entries

    def _frame_size(self, frame: Frame) -> tuple[int, int]:
        if frame.width > 0 and frame.height > 0:
            return frame.width, frame.height
        # Official PoseTrack18 files do not state the size; read it from the image header (no decoding).
        return read_image_size(self.image_root / frame.file_name)

    # ----------------------------------------------------------------------------------------------------------
    # Samples

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentation draws (samples are reproducible per (seed, epoch, index))."""
        self.epoch = int(epoch)

    @property
    def num_frames(self) -> int:
        return 1 if self.key_frame_only else 2 * self.delta + 1

    def frame_paths(self, index: int) -> tuple[tuple[str, ...], tuple[bool, ...], int]:
        """(frame files ``[T]``, padded flags ``[T]``, key position) of sample ``index``."""
        entry = self.entries[index]
        sequence = self.sequences[entry.sequence]
        key_path = str(self.image_root / sequence.frames[entry.frame].file_name)
        if self.key_frame_only:
            return (key_path,), (False,), 0
        clip = clip_files(key_path, sequence.nframes, self.delta, self.padding, sequence.dataset,
                          self.missing_frames, self.causal)
        if self.support_from == "other_sequence" and len(self.sequences) > 1:
            other = self.sequences[(entry.sequence + 1) % len(self.sequences)]
            index = sequence.frames[entry.frame].frame_index
            nearest = min(other.frames, key=lambda f: abs(f.frame_index - index))
            donor = clip_files(str(self.image_root / nearest.file_name), other.nframes, self.delta, self.padding,
                               other.dataset, self.missing_frames, self.causal)
            paths = tuple(key_path if i == clip.window.key_position else path for i, path in enumerate(donor.paths))
            return paths, donor.window.padded, clip.window.key_position
        return clip.paths, clip.window.padded, clip.window.key_position

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        sequence = self.sequences[entry.sequence]
        frame = sequence.frames[entry.frame]
        paths, padded, key_position = self.frame_paths(index)

        # Decode each distinct file once; padded slots share the array (and so are warped once).
        decoded: dict[str, np.ndarray] = {}
        for path in paths:
            if path not in decoded:
                decoded[path] = read_image(path)
        images = [decoded[path] for path in paths]
        key_image = images[key_position]
        for path, image in zip(paths, images):
            if image.shape != key_image.shape:
                raise DataFormatError(f"{path}: frame size {image.shape[1]}x{image.shape[0]} differs from the key "
                                      f"frame {paths[key_position]} ({key_image.shape[1]}x{key_image.shape[0]})")
        image_width = key_image.shape[1]

        keypoints = np.asarray(entry.person.keypoints, dtype=np.float64)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            params = sample_augmentation(
                rng, keypoints, entry.center, entry.scale, joint_set=self.joint_set, aspect_ratio=self.aspect_ratio,
                scale_factor=self.augment.scale_factor, rotation_factor=self.augment.rotation_factor,
                rotation_prob=self.augment.rotation_prob, flip=self.augment.flip,
                half_body_prob=self.augment.half_body_prob, half_body_min_joints=self.augment.half_body_min_joints,
            )
        else:
            params = AugmentParams(center=entry.center, scale=entry.scale)

        matrix = clip_matrix(params, self.input_size, image_width)
        crops = warp_frames(images, matrix, self.input_size)
        frames = crops_to_uint8(crops) if self.uint8_frames else normalize_crops(crops)
        joints = clip_joints(keypoints, params, matrix, self.input_size, image_width, self.flip_perm,
                             self.mask_outside)

        sample: dict[str, Any] = {"frames": frames}
        if self.with_heatmaps:
            heatmaps, weight = gaussian_heatmaps(joints, self.input_size, self.heatmap_size, self.sigma,
                                                 self.joint_weights)
            sample["heatmaps"] = torch.from_numpy(heatmaps)
        else:
            weight = target_weights(joints, self.input_size, self.heatmap_size, self.sigma, self.joint_weights)
        sample["target_weight"] = torch.from_numpy(weight)
        sample["meta"] = {
            "image": frame.file_name,
            "image_id": frame.image_id,
            "frame_paths": list(paths),
            "sequence": sequence.name,
            "frame_index": frame.frame_index,
            "center": params.center.astype(np.float32),
            "scale": params.scale.astype(np.float32),
            "rotation": float(params.rotation),
            "flipped": bool(params.flip),
            "score": float(entry.person.score),
            "bbox": np.asarray(entry.person.bbox, np.float32),
            "track_id": int(entry.person.track_id),
            "person_index": entry.person_index,
            "padded": list(padded),
            "key_position": key_position,
        }
        return sample


def _has_area(bbox: Sequence[float]) -> bool:
    box = np.asarray(bbox, dtype=np.float64)
    return box.shape == (4,) and bool(np.all(np.isfinite(box))) and box[2] > 0 and box[3] > 0


def collate_clips(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples: ``frames`` ``[B, T, 3, H, W]``, ``heatmaps`` ``[B, J, h, w]``, ``target_weight`` ``[B, J]``.

    ``meta`` becomes a dict of batched values: numbers and fixed-size arrays as numpy arrays (``center`` ``[B, 2]``,
    ``padded`` ``[B, T]`` bool, ``score`` ``[B]``, ...), strings and path lists as Python lists.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {"frames": torch.stack([s["frames"] for s in samples])}
    for key in ("heatmaps", "target_weight"):
        if key in samples[0]:
            batch[key] = torch.stack([s[key] for s in samples])
    meta: dict[str, Any] = {}
    for key, first in samples[0]["meta"].items():
        values = [s["meta"][key] for s in samples]
        if isinstance(first, str) or key == "frame_paths":
            meta[key] = values
        else:
            meta[key] = np.asarray(values)
    batch["meta"] = meta
    return batch


def check_annotations_exist(cfg: ExperimentConfig, annotations: Path, split: str) -> None:
    """Raise a :class:`CommandError` naming ``annotations`` (and, for SynthTrack, the command that makes it)."""
    if annotations.exists():
        return
    hint = ""
    if cfg.data.dataset == "synthtrack":
        name = annotations.name if annotations.parent.name == "annotations" else split
        hint = (f"; SynthTrack is generated, not downloaded: tdmi synth --out {cfg.data.root} --split {name} "
                "(--sequences/--frames/--seed as in docs/results.md)")
    elif cfg.data.dataset.startswith("posetrack") or cfg.data.dataset == "hieve":
        hint = f"; docs/data.md says how to obtain {cfg.data.dataset} and `tdmi prepare` checks the tree"
    raise CommandError(f"annotation path not found: {annotations} (data.root={cfg.data.root}){hint}")


def under_root(cfg: ExperimentConfig, path: str | os.PathLike) -> Path:
    """A path of ``cfg.data`` (annotations, images, boxes) as the dataset reads it: relative to ``data.root`` unless
    absolute."""
    return Path(path) if Path(path).is_absolute() else Path(cfg.data.root) / path


def build_dataset(cfg: ExperimentConfig, split: Mode, boxes: Optional[str] = None,
                  uint8_frames: bool = False) -> PoseTrackClipDataset:
    """The dataset of ``split`` as an experiment config describes it.

    Paths in ``cfg.data`` are relative to ``cfg.data.root`` unless absolute. Boxes: ``train`` always uses GT; ``val``
    uses ``boxes`` or ``cfg.data.val_boxes``; ``test`` uses ``boxes`` or ``cfg.test.boxes``; ``"gt"`` means
    ground-truth boxes, anything else is a detection file (a ``boxes`` argument is taken as given, relative to the
    working directory; config values relative to the root). ``test`` reads the validation annotations (PoseTrack's
    test labels are not public), as DCPose does. ``model.arch == "hrnet"`` gives key-frame-only samples.
    ``uint8_frames``: see :class:`PoseTrackClipDataset` (the engines pass :func:`frames_as_uint8`).
    """
    from tdmi.data.detections import load_detections
    from tdmi.data.posetrack import load_sequences

    if split not in MODES:
        raise CommandError(f"split={split!r} is not allowed; choose one of: {', '.join(MODES)}")
    data = cfg.data
    if cfg.model.num_joints != POSETRACK17.num_joints:
        raise CommandError(f"model.num_joints={cfg.model.num_joints}, but the dataset's records use the "
                           f"{POSETRACK17.num_joints}-slot PoseTrack order")
    if split == "train":
        if boxes not in (None, "gt"):
            raise CommandError(f"boxes={boxes!r}: training uses ground-truth boxes; detections are for val/test")
        box_file: Optional[Path] = None
    else:
        configured = data.val_boxes if split == "val" else cfg.test.boxes
        chosen = boxes if boxes is not None else configured
        box_file = None if chosen == "gt" else (Path(chosen) if boxes is not None else under_root(cfg, chosen))

    annotations = under_root(cfg, data.train_annotations if split == "train" else data.val_annotations)
    try:
        sequences = load_sequences(annotations, dataset=data.dataset)
    except FileNotFoundError:
        check_annotations_exist(cfg, annotations, split)  # the path itself is missing: say how to get it
        raise
    detections = None if box_file is None else load_detections(box_file, score_threshold=data.box_score_threshold)
    return PoseTrackClipDataset(
        sequences, under_root(cfg, data.image_root), mode=split, detections=detections,
        input_size=cfg.model.input_size, heatmap_size=cfg.model.heatmap_size, sigma=data.sigma,
        delta=cfg.model.delta, padding=data.padding, missing_frames=data.missing_frames,
        key_frame_only=cfg.model.arch == "hrnet", augment=data.augment if split == "train" else None,
        bbox_enlarge=data.bbox_enlarge, joint_weights=POSETRACK_JOINT_WEIGHTS if data.joint_weights else None,
        seed=cfg.train.seed, uint8_frames=uint8_frames,
        support_from=cfg.test.support_from if split != "train" else "own_sequence",
    )


def frames_as_uint8(cfg: ExperimentConfig, device: torch.device) -> bool:
    """``data.uint8_frames``, with None (the default) meaning: on for CUDA runs, off elsewhere (on the CPU the
    dataset's numpy normalisation is the faster place)."""
    setting = cfg.data.uint8_frames
    return device.type == "cuda" if setting is None else bool(setting)


def loader_workers(cfg: ExperimentConfig) -> int:
    """``data.workers``, with None (the default) meaning: the cores this process may use, shared with the other
    processes of its node (torchrun's ``LOCAL_WORLD_SIZE``), less one for the process itself, at most 16."""
    if cfg.data.workers is not None:
        return max(0, int(cfg.data.workers))
    cores = available_cores()
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(0, min(16, cores // per_node - 1))
