"""SynthTrack: procedural multi-person videos written in the PoseTrack18 layout.

SynthTrack stands in for PoseTrack on machines without the dataset: the tests, ``tdmi demo`` and the proof that
temporal modelling beats a single-frame HRNet all run on it. Every sequence is rendered from a small scene model:

- People are articulated 3D stick bodies with human proportions (head ~1/7.5 of the height, legs ~0.52) seen by an
  orthographic camera after a rotation about the vertical axis (the heading). Limbs are tapered capsules with
  cylinder-like shading, the torso a shaded polygon, the head an ellipse with hair and a face on the side it
  faces. Parts are painted far to near, so a turning person swaps which arm and leg is in front.
- Motion: walking and running gaits (thigh swing, knee flexion, opposite arm swing, ground contact gives the
  bob), turns (heading passes through the front or the back view and the walking direction reverses), people
  turning on the spot, and arm waves. Depth follows a ground-plane perspective: feet lower in the frame = nearer
  = taller.
- What temporal modelling must overcome: fast movers with motion blur (a blurred frame is the average of
  sub-frame renders spread over the exposure time), occlusion by moving boxes and poles and by other people,
  nearby distracting people, camera shake (the whole frame jitters, with occasional jerks), and a distant
  crowd that is not annotated and lies under an ignore polygon, as in PoseTrack.
- Backgrounds: value noise, stripes, tiles and bricks, gradients, static props (trees, windows, lamp posts).

Files (``posetrack-facts.md`` sections 1-2; every key of the real PoseTrack18 files is written, including the
mmpose copies' ``width``, ``height`` and ``mask_file``)::

    <out>/images/<split>/<seq>/%06d.jpg           every frame
    <out>/mask/<split>/<seq>/%06d.jpg             ignore-region masks (255 inside an ignore polygon)
    <out>/annotations/<split>/<seq>.json          per-sequence ground truth (images, annotations, categories)
    <out>/detections/<split>_boxes.json           noisy person boxes, COCO detection-result format
    <out>/synthtrack_<split>.json                 generation record (seed, options, counts)

Naming and ids: sequence ``i`` (0-based) is ``"%06d_bonn_<split>" % (i + 1)``; the token ``bonn`` gives T = 2
in the PoseTrack18 image-id formula id = T*10^10 + S*10^4 + F (facts 2.3), so frame F of sequence S has id
``20000000000 + S*10000 + F`` (F < 10^4). ``frame_id`` equals ``id``; annotation ``id`` = image id*100 + index
of the person in that frame.

Labelling rules (documented choices):

- Labelled frames follow PoseTrack18 val: a dense stretch of ``min(dense_labeled_frames, ceil(nframes/2))``
  central frames plus every ``labeled_every``-th frame (index % 4 == 0) elsewhere (:func:`labeled_frame_mask`).
  Only labelled frames carry annotations; ``images`` always lists all ``nframes`` frames.
- Flags are 0/1 only (as PT18). The ears (slots 3, 4) are always (0, 0, 0). A joint outside the image
  (x < 0, y < 0, x > W-1 or y > H-1) is (0, 0, 0). A joint hidden behind an object or another person keeps
  flag 1 (PoseTrack annotators label occluded joints they can infer) unless the person is mostly hidden:
  when fewer than half of the person's in-image joints are visible, its hidden joints become (0, 0, 0).
  A person is annotated in a frame only with at least 2 labelled joints. Crowd people are never annotated.
- ``bbox`` = labelled-keypoint extent enlarged 1.3x about its centre (exactly the PT18 rule, facts 2.1);
  ``bbox_head`` = integer box around the head ellipse; ``iscrowd`` is ``false`` and ``scores`` is ``[]`` as in
  the real files.

Extra keys (readers ignore unknown keys; poseval does too):

- ``images[i]["synthtrack"]``: per-frame difficulty tags ``{"motion_blur": bool, "blur_px": float,
  "camera_shake": [dx, dy], "occluded": bool, "hidden_joints": int, "object_occlusion": bool,
  "person_occlusion": bool}``. ``blur_px`` is the largest image displacement of an annotated joint (or of the
  camera) during the exposure; ``motion_blur`` is ``blur_px >= 3``. ``hidden_joints`` counts in-image joints of
  annotated people covered by an object or another person.
- ``annotations[k]["synthtrack"]``: ``{"visible": [17 x 0/1], "action": str}`` (visible = inside the image and
  not covered by anything else).
- top level ``"synthtrack"``: the sequence's scene summary (seed, people and their actions, occluders, crowd,
  exposure, shake amplitude).

Python API: :func:`generate_synthtrack` writes a set and returns a :class:`SynthSummary`; :func:`render_clip`
renders one sequence in memory (``images [T, H, W, 3]`` uint8 BGR, ``keypoints [T, P, 17, 3]``) without
touching the disk; :class:`SynthOptions` holds the difficulty knobs. Output is deterministic per seed (same
seed, options and size: byte-identical JSON and images).
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from tdmi.data.fileio import atomic_write_bytes
from tdmi.data.posetrack import POSETRACK18_SOURCE_IDS
from tdmi.errors import CommandError
from tdmi.keypoints import POSETRACK17

#: Token after the sequence number in SynthTrack sequence names; PoseTrack18's id formula maps it to T = 2.
SEQUENCE_TOKEN = "bonn"
SEQUENCE_TOKEN_ID = POSETRACK18_SOURCE_IDS[SEQUENCE_TOKEN]
#: Default frame size ``(W, H)``.
DEFAULT_SIZE = (480, 360)
#: Bumped whenever the same seed would render different content.
SYNTHTRACK_VERSION = 1

_NUM_JOINTS = POSETRACK17.num_joints
_EARS = (POSETRACK17.index("left_ear"), POSETRACK17.index("right_ear"))
_SCORED = tuple(j for j in range(_NUM_JOINTS) if j not in _EARS)
_SHAKE_MARGIN = 16  # background canvas margin, the largest camera-shake offset in pixels
_LIGHT = (-0.6, -0.8)  # light from the upper left, image coordinates
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9]+$")
_BLUR_TAG_PX = 3.0


# ---------------------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SynthOptions:
    """Difficulty and labelling knobs. Probabilities are per sequence unless stated."""

    people: tuple[int, int] = (1, 4)
    """Range (inclusive) of the number of main people per sequence (a distractor may add one)."""
    blur_probability: float = 0.35
    """A sequence gets a fast mover (runner or fast arm wave) and a long exposure, so frames are blurred."""
    occluder_probability: float = 0.5
    """A sequence gets 1-2 boxes or poles that cross in front of a person."""
    shake_probability: float = 0.3
    """A sequence is filmed by a shaking camera (global jitter with occasional jerks)."""
    distractor_probability: float = 0.5
    """An extra person walks or stands close to (and partly overlapping) another one."""
    crowd_probability: float = 0.3
    """A distant, unannotated crowd under an ignore polygon."""
    max_substeps: int = 8
    """Most sub-frame renders averaged into one blurred frame (one render per ~3 px of blur)."""
    dense_labeled_frames: int = 30
    """Length of the central stretch of labelled frames (capped at half the sequence)."""
    labeled_every: int = 4
    """Outside the central stretch, frames with index % labeled_every == 0 are labelled (1 = all frames)."""
    jpeg_quality: int = 92
    detection_miss_rate: float = 0.05
    """Base probability that a visible person gets no detection (rises with occlusion)."""
    detection_false_positives: float = 0.3
    """Mean number of false-positive boxes per frame."""
    detection_jitter: float = 0.05
    """Standard deviation of each detection box edge, as a fraction of the box size."""

    def __post_init__(self) -> None:
        lo, hi = self.people
        if not (1 <= lo <= hi <= 8):
            raise CommandError(f"SynthOptions.people must satisfy 1 <= min <= max <= 8, got {self.people}")
        for name in ("blur_probability", "occluder_probability", "shake_probability", "distractor_probability",
                     "crowd_probability", "detection_miss_rate", "detection_jitter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CommandError(f"SynthOptions.{name} must be in [0, 1], got {value}")
        if self.detection_false_positives < 0:
            raise CommandError(f"SynthOptions.detection_false_positives must be >= 0, got "
                               f"{self.detection_false_positives}")
        if self.max_substeps < 2 or self.dense_labeled_frames < 0 or self.labeled_every < 1:
            raise CommandError("SynthOptions: max_substeps >= 2, dense_labeled_frames >= 0 and labeled_every >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise CommandError(f"SynthOptions.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


@dataclass
class SynthSummary:
    """What :func:`generate_synthtrack` wrote."""

    out_dir: Path
    split: str
    sequences: list[str]
    annotation_dir: Path
    image_dir: Path
    detections_file: Path
    frames: int = 0
    labeled_frames: int = 0
    annotations: int = 0
    detections: int = 0
    blurred_frames: int = 0
    occluded_frames: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"synth: wrote {len(self.sequences)} sequences ({self.frames} frames, {self.labeled_frames} labelled, "
                f"{self.annotations} people, {self.detections} boxes; {self.blurred_frames} blurred and "
                f"{self.occluded_frames} occluded frames) to {self.out_dir} in {self.seconds:.1f} s")


@dataclass
class SynthClip:
    """One rendered sequence in memory. P = annotatable people (crowd excluded), T = frames.

    Attributes:
        images: uint8 ``[T, H, W, 3]``, BGR (OpenCV order), exactly what is JPEG-encoded on disk.
        positions: float64 ``[T, P, 17, 2]``: every joint's image position (also outside the image or hidden),
            rounded to 0.01 px as in the files.
        keypoints: float64 ``[T, P, 17, 3]``: x, y, flag after the labelling rules (flag-0 joints are 0, 0, 0).
        visible: bool ``[T, P, 17]``: inside the image and not covered by an object or another person.
        head_boxes: float64 ``[T, P, 4]`` head boxes ``[x, y, w, h]``.
        extents: float64 ``[T, P, 4]`` tight silhouette boxes ``[x, y, w, h]`` (unclipped).
        track_ids: ``[P]`` track id of each person.
        actions: ``[P]`` motion of each person (walk, run, wave, stand, spin).
        labeled: bool ``[T]``, the labelled-frame pattern.
        tags: per-frame difficulty tags (see the module docstring).
        ignore_regions: per frame, a list of float ``[K, 2]`` polygons.
        crowd_extents: per frame, the tight boxes ``[x, y, w, h]`` of the crowd people.
        scene: the scene summary written as the files' top-level ``synthtrack`` key.
    """

    images: np.ndarray
    positions: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    head_boxes: np.ndarray
    extents: np.ndarray
    track_ids: list[int]
    actions: list[str]
    labeled: np.ndarray
    tags: list[dict]
    ignore_regions: list[list[np.ndarray]]
    crowd_extents: list[np.ndarray]
    scene: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- public helpers


def labeled_frame_mask(nframes: int, dense: int = 30, every: int = 4) -> np.ndarray:
    """PoseTrack18-val-like labelled frames: a central dense stretch plus every ``every``-th frame elsewhere.

    The dense stretch has ``min(dense, ceil(nframes / 2))`` frames starting at ``(nframes - length) // 2``.
    Returns bool ``[nframes]``.
    """
    length = min(dense, (nframes + 1) // 2)
    start = (nframes - length) // 2
    index = np.arange(nframes)
    return ((index >= start) & (index < start + length)) | (index % every == 0)


def sequence_name(index: int, split: str) -> str:
    """Name of the ``index``-th (0-based) sequence, e.g. ``000001_bonn_val``."""
    return f"{index + 1:06d}_{SEQUENCE_TOKEN}_{split}"


def image_id(sequence_index: int, frame_index: int) -> int:
    """PoseTrack18 image id T*10^10 + S*10^4 + F of a SynthTrack frame (S = sequence_index + 1)."""
    return SEQUENCE_TOKEN_ID * 10**10 + (sequence_index + 1) * 10**4 + frame_index


def pt18_bbox(keypoints: np.ndarray) -> list[float]:
    """PoseTrack18 GT box of ``keypoints [17, 3]``: the labelled-joint extent enlarged 1.3x about its centre.

    Written out in float64 with the facts' exact expression (x1 = cx - 0.65 w), so that the numbers in the files
    satisfy the rule exactly (``posetrack.bbox_from_keypoints`` returns float32 for the readers).
    """
    labelled = keypoints[keypoints[:, 2] > 0]
    x_min, x_max = float(labelled[:, 0].min()), float(labelled[:, 0].max())
    y_min, y_max = float(labelled[:, 1].min()), float(labelled[:, 1].max())
    cx, cy = (x_min + x_max) / 2.0, (y_min + y_max) / 2.0
    w, h = x_max - x_min, y_max - y_min
    return [cx - 0.65 * w, cy - 0.65 * h, 1.3 * w, 1.3 * h]


def categories() -> list[dict]:
    """The ``categories`` list of PoseTrack18 files (skeleton 1-based)."""
    return [{
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(POSETRACK17.names),
        "skeleton": [[a + 1, b + 1] for a, b in POSETRACK17.skeleton],
    }]


# ---------------------------------------------------------------------------------------------------- scene model


def _bgr(hue: float, sat: float, val: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(float(hue) % 1.0, min(max(float(sat), 0.0), 1.0), min(max(float(val), 0.0), 1.0))
    return np.array([b * 255.0, g * 255.0, r * 255.0])


_SKIN_TONES = ((0.07, 0.35, 0.96), (0.07, 0.45, 0.85), (0.06, 0.55, 0.70), (0.06, 0.60, 0.52), (0.05, 0.55, 0.38),
               (0.08, 0.30, 0.92))
_HAIR_COLOURS = ((0.08, 0.6, 0.12), (0.07, 0.7, 0.30), (0.10, 0.6, 0.55), (0.12, 0.45, 0.80), (0.0, 0.0, 0.55),
                 (0.02, 0.7, 0.40))
_TROUSER_COLOURS = ((0.60, 0.55, 0.45), (0.62, 0.30, 0.20), (0.0, 0.0, 0.15), (0.11, 0.35, 0.62), (0.0, 0.0, 0.45),
                    (0.33, 0.35, 0.35))


@dataclass
class _Person:
    """Appearance, gait and precomputed trajectory of one person (body units: height 1, y up)."""

    entity_id: int
    track_id: int
    is_crowd: bool
    action: str
    size: float                 # height multiplier at a given ground depth
    width: float                # lateral body scale
    gait: tuple[float, float, float, float, float]   # thigh swing, knee flex, arm swing, elbow base, elbow swing
    lean: float
    wave_side: int              # +1 left arm waves, -1 right arm, 0 none
    wave_period: float
    colours: dict
    short_sleeves: bool
    shorts: bool
    grid: np.ndarray            # [G] fine time grid (frames)
    heading: np.ndarray         # [G] psi, 0 = facing the camera, +pi/2 = facing image right
    root_x: np.ndarray          # [G] image x of the pelvis
    ground_y: np.ndarray        # [G] image y of the feet
    phase: np.ndarray           # [G] gait phase (radians)


@dataclass
class _Occluder:
    entity_id: int
    kind: str                   # "pole" or "box"
    patch: np.ndarray           # float32 [h, w, 3]
    x_at: float                 # left edge at time t_at
    t_at: float
    vx: float
    ground_y: float


@dataclass
class _Scene:
    width: int
    height: int
    frames: int
    horizon: float
    persp: float                # person height in px per px of ground_y below the horizon
    background: np.ndarray      # uint8 [H + 2m, W + 2m, 3]
    noise: np.ndarray           # int16 [H + 32, W + 32, 3] sensor-noise tile
    people: list[_Person]       # annotatable people first (track ids 0..P-1), then the crowd
    occluders: list[_Occluder]
    exposure: float             # fraction of the frame interval the shutter is open
    shake_grid: np.ndarray      # [G] fine time grid
    shake: np.ndarray           # [G, 2] camera offset (px)
    summary: dict
    max_substeps: int = 8       # most sub-frame renders averaged into a blurred frame


def _time_grid(frames: int) -> np.ndarray:
    return np.arange(-2.0, frames + 2.0, 0.125)


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _height_px(scene: _Scene, person: _Person, ground_y: float) -> float:
    return max(scene.persp * (ground_y - scene.horizon), 4.0) * person.size


_GAITS = {
    # thigh swing, knee flex, arm swing, elbow base flex, elbow swing (radians)
    "walk": (0.42, 0.6, 0.38, 0.25, 0.35),
    "run": (0.75, 1.3, 0.80, 1.30, 0.25),
    "stand": (0.03, 0.05, 0.05, 0.15, 0.05),
    "spin": (0.10, 0.20, 0.08, 0.20, 0.08),
    "wave": (0.03, 0.05, 0.05, 0.20, 0.05),
}
_SPEED = {"walk": (0.022, 0.034), "run": (0.07, 0.10), "stand": (0.0, 0.0), "spin": (0.0, 0.0), "wave": (0.0, 0.0)}
# Gait frequency in radians per frame (a walking cycle of ~1.1 s at 25 fps; running ~0.7 s).
_CADENCE = {"walk": 2 * math.pi / 28, "run": 2 * math.pi / 17, "stand": 2 * math.pi / 70, "spin": 2 * math.pi / 40,
            "wave": 2 * math.pi / 70}


def _make_person(rng: np.random.Generator, scene: _Scene, entity_id: int, track_id: int, action: str,
                 ground_y: float, x_mid: float, hue: float, is_crowd: bool = False) -> _Person:
    frames = scene.frames
    grid = _time_grid(frames)
    size = float(rng.uniform(0.88, 1.1))
    colours = {
        "shirt": _bgr(hue, rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.95)),
        "trousers": _bgr(*_TROUSER_COLOURS[rng.integers(len(_TROUSER_COLOURS))]) * rng.uniform(0.85, 1.15),
        "skin": _bgr(*_SKIN_TONES[rng.integers(len(_SKIN_TONES))]),
        "hair": _bgr(*_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]),
        "shoes": _bgr(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.08, 0.35)),
    }
    if rng.uniform() < 0.25:  # some wear a second hue on the trousers
        colours["trousers"] = _bgr(hue + 0.5, rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.6))
    colours = {k: tuple(float(min(v, 255.0)) for v in c) for k, c in colours.items()}
    gait = _GAITS[action]
    wave_side = int(rng.choice([-1, 1])) if action == "wave" else 0
    wave_period = float(rng.uniform(10.0, 16.0))
    lean = float(rng.uniform(0.12, 0.22)) if action == "run" else float(rng.uniform(-0.03, 0.05))

    # Heading and velocity, integrated on the fine grid (Euler steps of 1/8 frame).
    g = len(grid)
    heading = np.zeros(g)
    if action in ("walk", "run"):
        start = float(rng.choice([-1.0, 1.0])) * math.pi / 2 + rng.normal(0.0, 0.3)
        heading[:] = start
        if action == "walk" and rng.uniform() < 0.4:
            # A turn: the heading sweeps pi through the front or the back view and the walker comes back.
            t_turn = rng.uniform(0.2, 0.7) * frames
            duration = rng.uniform(8.0, 16.0)
            sweep = float(rng.choice([-1.0, 1.0])) * math.pi
            heading = start + sweep * _smoothstep((grid - t_turn) / duration)
    elif action == "spin":
        heading = rng.uniform(-math.pi, math.pi) + float(rng.choice([-1.0, 1.0])) * rng.uniform(0.06, 0.12) * grid
    else:
        heading[:] = rng.uniform(-0.6, 0.6)
    speed_factor = rng.uniform(*_SPEED[action])
    x = np.zeros(g)
    gy = np.zeros(g)
    gy[0] = ground_y
    dt = grid[1] - grid[0]
    h0 = scene.persp * (ground_y - scene.horizon) * size
    for i in range(1, g):
        h = max(scene.persp * (gy[i - 1] - scene.horizon) * size, 4.0)
        v = speed_factor * h
        x[i] = x[i - 1] + v * math.sin(heading[i - 1]) * dt
        # Walking toward the camera moves the feet down the frame (foreshortened).
        gy[i] = gy[i - 1] + 0.3 * v * math.cos(heading[i - 1]) * dt * (h / max(h0, 1.0))
    x += x_mid - np.interp(frames / 2.0, grid, x)
    cadence = _CADENCE[action] * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0.0, 2 * math.pi) + cadence * grid
    return _Person(entity_id=entity_id, track_id=track_id, is_crowd=is_crowd, action=action, size=size,
                   width=float(rng.uniform(0.88, 1.15)), gait=gait, lean=lean, wave_side=wave_side,
                   wave_period=wave_period, colours=colours, short_sleeves=bool(rng.uniform() < 0.4),
                   shorts=bool(rng.uniform() < 0.2), grid=grid, heading=heading, root_x=x, ground_y=gy, phase=phase)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Smooth noise in [0, 1], float32 ``[h, w]``: random lattices upsampled bicubically, halving each octave."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    amplitude = 1.0
    for _ in range(octaves):
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        lattice = rng.random((gh, gw)).astype(np.float32)
        out += amplitude * cv2.resize(lattice, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amplitude
        amplitude *= 0.5
        cell = max(cell / 2.0, 2.0)
    return np.clip(out / total, 0.0, 1.0)


def _background(rng: np.random.Generator, w: int, h: int, horizon: int) -> np.ndarray:
    """Textured background ``[h, w, 3]`` uint8: an upper (sky/wall) and a lower (ground) region plus props."""
    img = np.zeros((h, w, 3), np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    upper_style = rng.choice(["sky", "stripes", "bricks", "noise"])
    lower_style = rng.choice(["tiles", "grass", "asphalt", "stripes"])
    c1, c2 = _bgr(rng.uniform(), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.95)), \
        _bgr(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.8))
    top = img[:horizon]
    if upper_style == "sky":
        sky_a, sky_b = _bgr(0.58, rng.uniform(0.3, 0.6), 0.95), _bgr(0.55, rng.uniform(0.05, 0.25), 0.98)
        u = rows[:horizon] / max(horizon, 1)
        top[:] = sky_a * (1 - u) + sky_b * u
        clouds = _value_noise(rng, horizon, w, 40.0, 4)[..., None]
        top[:] = top * (1 - 0.5 * np.clip(clouds * 2 - 1, 0, 1)) + 250 * 0.5 * np.clip(clouds * 2 - 1, 0, 1)
    elif upper_style == "stripes":
        xs = 0
        while xs < w:
            sw = int(rng.integers(6, 40))
            top[:, xs:xs + sw] = _bgr(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.35, 0.95))
            xs += sw
    elif upper_style == "bricks":
        bh, bw = int(rng.integers(8, 16)), int(rng.integers(20, 40))
        top[:] = c1 * 0.55
        for r, y0 in enumerate(range(0, horizon, bh)):
            offset = (bw // 2) * (r % 2)
            for x0 in range(-offset, w, bw):
                shade = rng.uniform(0.8, 1.1)
                top[y0 + 1:y0 + bh - 1, max(x0 + 1, 0):max(x0 + bw - 1, 0)] = c1 * shade
    else:
        n = _value_noise(rng, horizon, w, rng.uniform(10, 60), 4)[..., None]
        top[:] = c1 * (1 - n) + c2 * n
    if upper_style != "sky":  # windows, doors or posters on the wall
        for _ in range(int(rng.integers(1, 5))):
            ww, wh = int(rng.integers(20, 70)), int(rng.integers(20, max(21, horizon // 2)))
            x0, y0 = int(rng.integers(0, max(1, w - ww))), int(rng.integers(0, max(1, horizon - wh)))
            colour = _bgr(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.1, 0.9))
            cv2.rectangle(top, (x0, y0), (x0 + ww, y0 + wh), (colour * 0.6).tolist(), -1)
            cv2.rectangle(top, (x0 + 3, y0 + 3), (x0 + ww - 3, y0 + wh - 3), colour.tolist(), -1)
    else:  # trees on the horizon
        for _ in range(int(rng.integers(1, 6))):
            tx, r = int(rng.integers(0, w)), int(rng.integers(12, 40))
            trunk = _bgr(0.08, 0.6, rng.uniform(0.2, 0.4))
            cv2.rectangle(top, (tx - r // 6, horizon - r), (tx + r // 6, horizon), trunk.tolist(), -1)
            leaf = _bgr(rng.uniform(0.22, 0.38), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
            cv2.circle(top, (tx, horizon - r - r // 2), r, leaf.tolist(), -1, cv2.LINE_AA)

    ground = img[horizon:]
    gh = h - horizon
    base = _bgr(rng.uniform(), rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.75))
    if lower_style == "grass":
        base = _bgr(rng.uniform(0.2, 0.33), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6))
    n = _value_noise(rng, gh, w, rng.uniform(4, 20), 3)[..., None]
    ground[:] = base * (0.75 + 0.5 * n)
    if lower_style == "tiles":
        # Perspective tiles: rows get taller toward the camera, columns converge at a vanishing point.
        line = (base * 0.55).tolist()
        y, step = 0.0, 3.0
        while y < gh:
            cv2.line(ground, (0, int(y)), (w, int(y)), line, 1, cv2.LINE_AA)
            step *= 1.35
            y += step
        vx = rng.uniform(0.2, 0.8) * w
        for k in range(-12, 13):
            cv2.line(ground, (int(vx), 0), (int(vx + k * w / 5), gh), line, 1, cv2.LINE_AA)
    elif lower_style == "stripes":
        for y0 in range(0, gh, int(rng.integers(10, 30))):
            ground[y0:y0 + int(rng.integers(2, 8))] *= 0.8
    # Lamp posts and bollards: static limb-like distractors.
    for _ in range(int(rng.integers(0, 3))):
        px, top_y = int(rng.integers(0, w)), int(rng.integers(0, max(1, horizon - 10)))
        bottom = int(horizon + rng.uniform(0.05, 0.4) * gh)
        colour = _bgr(rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(0.15, 0.5))
        cv2.line(img, (px, top_y), (px, bottom), colour.tolist(), int(rng.integers(2, 6)), cv2.LINE_AA)
    # Uneven lighting over the frame.
    light = _value_noise(rng, h, w, max(w, h) / 2.0, 2)[..., None]
    img *= 0.8 + 0.4 * light
    return np.clip(img, 0, 255).astype(np.uint8)


def _occluder_patch(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    colour = _bgr(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.35, 0.9))
    if kind == "pole":
        u = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        profile = 0.45 + 0.6 * np.sqrt(np.clip(1 - (u + 0.35) ** 2, 0, 1))  # cylinder lit from the left
        patch = np.ones((h, w, 3), np.float32) * profile[None, :, None] * colour
    else:
        v = np.linspace(0.0, 1.0, h, dtype=np.float32)
        patch = np.ones((h, w, 3), np.float32) * (1.05 - 0.35 * v)[:, None, None] * colour
        lid = max(2, h // 6)
        patch[:lid] = colour * 1.25  # the top face catches the light
        texture = _value_noise(rng, h, w, 6.0, 2)[..., None]
        patch *= 0.85 + 0.3 * texture
        patch[:, :2] *= 0.6
        patch[:, -2:] *= 0.6
        patch[-2:] *= 0.6
    return np.clip(patch, 0, 255).astype(np.float32)


def _build_scene(seed: int, sequence_index: int, frames: int, size: tuple[int, int], options: SynthOptions) -> _Scene:
    rng = np.random.default_rng([seed, sequence_index, SYNTHTRACK_VERSION])
    width, height = size
    horizon = float(height * rng.uniform(0.28, 0.42))
    near_height = height * rng.uniform(0.55, 0.8)  # a person standing at the bottom edge
    persp = near_height / (height - horizon)
    m = _SHAKE_MARGIN
    background = _background(rng, width + 2 * m, height + 2 * m, int(horizon) + m)
    noise = rng.normal(0.0, rng.uniform(1.5, 4.0), (height + 32, width + 32, 3)).astype(np.int16)
    grid = _time_grid(frames)
    scene = _Scene(width=width, height=height, frames=frames, horizon=horizon, persp=persp, background=background,
                   noise=noise, people=[], occluders=[], exposure=0.0, shake_grid=grid,
                   shake=np.zeros((len(grid), 2)), summary={}, max_substeps=options.max_substeps)

    has_blur = rng.uniform() < options.blur_probability
    has_occluder = rng.uniform() < options.occluder_probability
    has_shake = rng.uniform() < options.shake_probability
    has_distractor = rng.uniform() < options.distractor_probability
    has_crowd = rng.uniform() < options.crowd_probability

    n_people = int(rng.integers(options.people[0], options.people[1] + 1))
    actions = list(rng.choice(["walk", "walk", "walk", "wave", "stand", "spin", "run"], size=n_people))
    if has_blur and "run" not in actions:
        actions[int(rng.integers(n_people))] = "run" if rng.uniform() < 0.7 else "wave"
    hue0 = rng.uniform()
    gy_near, gy_far = height + 0.15 * height, horizon + 0.45 * (height - horizon)
    people: list[_Person] = []
    for k, action in enumerate(actions):
        gy = rng.uniform(gy_far, gy_near)
        x_mid = rng.uniform(0.12, 0.88) * width
        people.append(_make_person(rng, scene, k + 1, k, action, gy, x_mid, hue0 + 0.618 * k))
    if has_distractor:
        anchor = people[int(rng.integers(len(people)))]
        gy = float(np.clip(anchor.ground_y[len(grid) // 2] + rng.uniform(-25, 25), gy_far, gy_near))
        h = persp * (gy - horizon)
        x_mid = float(np.interp(frames / 2.0, anchor.grid, anchor.root_x)) + rng.choice([-1, 1]) * rng.uniform(0.1,
                                                                                                              0.35) * h
        action = str(rng.choice(["walk", "stand", "wave"]))
        k = len(people)
        people.append(_make_person(rng, scene, k + 1, k, action, gy, x_mid, hue0 + 0.618 * k))
    for person in people:
        if person.action == "wave" and has_blur:
            person.wave_period = float(rng.uniform(5.0, 7.0))  # a fast wave blurs the forearm

    if has_blur:
        scene.exposure = float(rng.uniform(0.35, 0.7))  # shutter 1/70 to 1/35 s at 25 fps
    elif has_shake:
        scene.exposure = float(rng.uniform(0.15, 0.35))  # only the jerks blur
    if has_shake:
        amplitude = rng.uniform(1.5, 5.0)
        shake = np.zeros((len(grid), 2))
        for axis in range(2):
            for _ in range(3):
                freq, ph = rng.uniform(0.2, 1.2), rng.uniform(0, 2 * math.pi)
                shake[:, axis] += amplitude / 2 * np.sin(freq * grid + ph)
        for _ in range(max(1, frames // 10)):  # jerks: a fast step of several pixels and back
            t0 = rng.uniform(0, frames)
            step = rng.uniform(-1, 1, size=2) * rng.uniform(5, 10)
            bump = np.exp(-0.5 * ((grid - t0) / 0.8) ** 2)
            shake += bump[:, None] * step[None, :]
        scene.shake = np.clip(shake, -m, m)

    next_id = len(people) + 1
    if has_occluder:
        for _ in range(int(rng.integers(1, 3))):
            target = people[int(rng.integers(len(people)))]
            t_at = rng.uniform(0.25, 0.75) * frames
            gy = float(np.interp(t_at, target.grid, target.ground_y)) + rng.uniform(4, 30)
            h = persp * (gy - horizon)
            kind = "pole" if rng.uniform() < 0.5 else "box"
            if kind == "pole":
                ow, oh = int(max(6, rng.uniform(0.05, 0.12) * h)), int(gy + m + 10)
            else:
                ow, oh = int(max(10, rng.uniform(0.3, 0.7) * h)), int(max(8, rng.uniform(0.3, 0.65) * h))
            vx = 0.0 if rng.uniform() < 0.3 else float(rng.choice([-1, 1]) * rng.uniform(1.0, 5.0))
            x_at = float(np.interp(t_at, target.grid, target.root_x)) - ow / 2 + rng.uniform(-0.1, 0.1) * h
            scene.occluders.append(_Occluder(next_id, kind, _occluder_patch(rng, kind, ow, oh), x_at, t_at, vx, gy))
            next_id += 1
    crowd: list[_Person] = []
    if has_crowd:
        centre = rng.uniform(0.2, 0.8) * width
        spread = rng.uniform(0.08, 0.18) * width
        for _ in range(int(rng.integers(6, 13))):
            gy = horizon + rng.uniform(0.10, 0.22) * (height - horizon)
            action = str(rng.choice(["stand", "stand", "walk", "spin"]))
            person = _make_person(rng, scene, next_id, -1, action, gy, centre + rng.uniform(-1, 1) * spread,
                                  rng.uniform(), is_crowd=True)
            if action == "walk":  # crowd members mill about instead of leaving
                person.root_x = centre + (person.root_x - centre) * 0.3
            crowd.append(person)
            next_id += 1
    scene.people = people + crowd
    scene.summary = {
        "version": SYNTHTRACK_VERSION,
        "seed": seed,
        "sequence_index": sequence_index,
        "people": [{"track_id": p.track_id, "action": p.action} for p in people],
        "occluders": [o.kind for o in scene.occluders],
        "crowd": len(crowd),
        "exposure": round(scene.exposure, 3),
        "shake_px": round(float(np.abs(scene.shake).max()), 2),
    }
    return scene


# ------------------------------------------------------------------------------------------------------------ poses


@dataclass
class _Pose:
    """One person at one instant, in image pixels."""

    joints: np.ndarray          # [17, 2]
    parts: list                 # [(depth, order, primitives)]
    extent: np.ndarray          # [4] x, y, w, h of the silhouette
    head_box: np.ndarray        # [4]
    ground: tuple[float, float, float]  # shadow centre x, y and half width


def _body_points(person: _Person, phase: float, t: float) -> dict[str, tuple[float, float, float]]:
    """Body-frame 3D points (x = the person's left, y = up, z = forward; height 1), plain floats for speed."""
    thigh_swing, knee_flex, arm_swing, elbow_base, elbow_swing = person.gait
    wf = person.width
    pts: dict[str, tuple[float, float, float]] = {}
    for side, sign, offset in (("left", 1.0, 0.0), ("right", -1.0, math.pi)):
        ph = phase + offset
        a = thigh_swing * math.sin(ph)
        k = 0.06 + knee_flex * max(0.0, math.cos(ph + 0.4)) ** 2
        hx = sign * 0.085 * wf
        ky, kz = 0.52 - 0.245 * math.cos(a), 0.245 * math.sin(a)
        ay, az = ky - 0.24 * math.cos(a - k), kz + 0.24 * math.sin(a - k)
        pts[f"{side}_hip"], pts[f"{side}_knee"] = (hx, 0.52, 0.0), (hx, ky, kz)
        pts[f"{side}_ankle"], pts[f"{side}_toe"] = (hx, ay, az), (hx, ay - 0.025, az + 0.07)
    # Keep the lower foot on the ground: this is what makes the body bob.
    lift = 0.04 - min(pts["left_ankle"][1], pts["right_ankle"][1])
    pts = {n: (x, y + lift, z) for n, (x, y, z) in pts.items()}
    hip_y = 0.52 + lift

    upper: dict[str, tuple[float, float, float]] = {
        "head_center": (0.0, 0.935, 0.0),
        "nose": (0.0, 0.925, 0.055),
        "head_bottom": (0.0, 0.872, 0.01),
        "head_top": (0.0, 0.995, -0.005),
        "left_ear": (0.05, 0.93, 0.0),
        "right_ear": (-0.05, 0.93, 0.0),
        "neck": (0.0, 0.83, 0.0),
    }
    for side, sign, offset in (("left", 1.0, math.pi), ("right", -1.0, 0.0)):
        ph = phase + offset  # an arm swings with the opposite leg
        sx, sy, sz = sign * 0.12 * wf, 0.82, 0.0
        if person.wave_side == sign:
            raise_angle = 2.35
            ux, uy, uz = sign * math.sin(raise_angle), -math.cos(raise_angle), 0.15
            beta = 0.45 * math.sin(2 * math.pi * t / person.wave_period)
            fx, fy, fz = sign * math.sin(beta + 0.15), math.cos(beta + 0.15), 0.1
        else:
            b = arm_swing * math.sin(ph)
            abduct = 0.12
            e = elbow_base + elbow_swing * max(0.0, math.sin(ph))
            ux, uy, uz = sign * math.sin(abduct), -math.cos(abduct) * math.cos(b), math.cos(abduct) * math.sin(b)
            fx, fy, fz = sign * math.sin(abduct) * 0.5, -math.cos(b + e), math.sin(b + e)
        un, fn = math.sqrt(ux * ux + uy * uy + uz * uz), math.sqrt(fx * fx + fy * fy + fz * fz)
        ex, ey, ez = sx + 0.17 * ux / un, sy + 0.17 * uy / un, sz + 0.17 * uz / un
        wx, wy, wz = ex + 0.15 * fx / fn, ey + 0.15 * fy / fn, ez + 0.15 * fz / fn
        upper[f"{side}_shoulder"], upper[f"{side}_elbow"], upper[f"{side}_wrist"] = (sx, sy, sz), (ex, ey, ez), \
            (wx, wy, wz)
        upper[f"{side}_hand"] = (wx + 0.035 * fx / fn, wy + 0.035 * fy / fn, wz + 0.035 * fz / fn)
    # Lean the upper body about the horizontal axis through the pelvis (positive = forward).
    c, s = math.cos(person.lean), math.sin(person.lean)
    for n, (x, y, z) in upper.items():
        dy = y + lift - hip_y
        pts[n] = (x, hip_y + dy * c - z * s, z * c + dy * s)
    pts["pelvis"] = (0.0, hip_y, 0.0)
    return pts


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, colour: tuple) -> tuple:
    return ("capsule", float(p0[0]), float(p0[1]), float(p1[0]), float(p1[1]), float(r0), float(r1), colour)


def _scaled(colour: tuple, gain: float) -> tuple:
    return (min(colour[0] * gain, 255.0), min(colour[1] * gain, 255.0), min(colour[2] * gain, 255.0))


def _pose(scene: _Scene, person: _Person, t: float, shake: np.ndarray) -> _Pose:
    psi = float(np.interp(t, person.grid, person.heading))
    root_x = float(np.interp(t, person.grid, person.root_x)) + shake[0]
    ground_y = float(np.interp(t, person.grid, person.ground_y))
    phase = float(np.interp(t, person.grid, person.phase))
    h = _height_px(scene, person, ground_y)
    ground_y += shake[1]
    pts = _body_points(person, phase, t)
    names = list(pts)
    c, s = math.cos(psi), math.sin(psi)
    img = np.array([(root_x + h * (x * c + z * s), ground_y - h * y) for x, y, z in pts.values()])
    P = {n: img[i] for i, n in enumerate(names)}
    D = {n: x * s - z * c for n, (x, y, z) in pts.items()}  # + = farther from the camera
    joints = img[[names.index(n) for n in POSETRACK17.names]]

    col = person.colours
    shirt, trousers, skin = col["shirt"], col["trousers"], col["skin"]
    parts: list = []

    def add(d: float, *prims) -> None:
        parts.append((d, len(parts), list(prims)))

    wf = person.width
    for side in ("left", "right"):
        leg_depth = (D[f"{side}_hip"] + D[f"{side}_knee"] + D[f"{side}_ankle"]) / 3
        lower = skin if person.shorts else trousers
        add(leg_depth,
            _capsule(P[f"{side}_ankle"], P[f"{side}_toe"], 0.024 * h, 0.02 * h, col["shoes"]),
            _capsule(P[f"{side}_knee"], P[f"{side}_ankle"], 0.042 * h, 0.03 * h, lower),
            _capsule(P[f"{side}_hip"], P[f"{side}_knee"], 0.058 * h * wf, 0.044 * h, trousers))
        arm_depth = (D[f"{side}_shoulder"] + D[f"{side}_elbow"] + D[f"{side}_wrist"]) / 3 - 0.03
        fore = skin if person.short_sleeves else shirt
        add(arm_depth,
            _capsule(P[f"{side}_shoulder"], P[f"{side}_elbow"], 0.04 * h * wf, 0.032 * h, shirt),
            _capsule(P[f"{side}_elbow"], P[f"{side}_wrist"], 0.03 * h, 0.024 * h, fore),
            ("circle", float(P[f"{side}_hand"][0]), float(P[f"{side}_hand"][1]), 0.026 * h, skin))
    # Torso: an elliptic cross-section, so its projected width shrinks in profile.
    shoulder_c = (P["left_shoulder"] + P["right_shoulder"]) / 2
    hip_c = (P["left_hip"] + P["right_hip"]) / 2
    axis = hip_c - shoulder_c
    length = max(float(np.linalg.norm(axis)), 1e-3)
    normal = np.array([-axis[1], axis[0]]) / length

    def half(a: float, b: float) -> float:
        return h * math.sqrt((a * wf * c) ** 2 + (b * s) ** 2)

    ws, ww, wh = half(0.135, 0.07), half(0.11, 0.065), half(0.11, 0.075)
    belt = shoulder_c + 0.78 * axis
    chest = [shoulder_c + normal * ws, shoulder_c + 0.5 * axis + normal * ww, belt + normal * ww,
             belt - normal * ww, shoulder_c + 0.5 * axis - normal * ww, shoulder_c - normal * ws]
    pelvis = [belt + normal * ww, hip_c + normal * wh + 0.06 * axis, hip_c - normal * wh + 0.06 * axis,
              belt - normal * ww]
    add(-0.01, _capsule(P["head_bottom"], P["neck"], 0.03 * h, 0.034 * h, skin))
    add(-0.02, ("poly", np.array(pelvis), trousers), ("poly", np.array(chest), shirt),
        *[("circle", float(p[0]), float(p[1]), 0.035 * h, shirt)
          for p in (shoulder_c + normal * (ws - 0.03 * h), shoulder_c - normal * (ws - 0.03 * h))])
    # Head: hair on the back of the skull, the face on the side the person faces (none from behind).
    centre = P["head_center"]
    rx, ry = h * 0.05 * (0.92 + 0.08 * abs(s)), h * 0.066
    head = [("ellipse", float(centre[0]), float(centre[1]), rx, ry, col["hair"])]
    frontness = c
    if frontness > -0.35:
        face_c = centre + np.array([0.22 * rx * s, 0.16 * ry])
        face_ax = (rx * (0.62 + 0.25 * max(frontness, 0.0)), ry * 0.8)
        head.append(("ellipse", float(face_c[0]), float(face_c[1]), *face_ax, skin))
        if h > 70 and frontness > 0.2:
            eye_y = centre[1] + 0.02 * ry
            for lateral in (-1, 1):
                ex = centre[0] + (lateral * 0.42 * c + 0.6 * s) * rx
                head.append(("dot", float(ex), float(eye_y), max(0.9, 0.08 * rx), _scaled(col["hair"], 0.4)))
    add(-0.06, *head)

    pts_all = img
    pad = 0.06 * h
    x0, y0 = pts_all[:, 0].min() - pad, min(pts_all[:, 1].min(), centre[1] - ry) - 1.0
    x1, y1 = pts_all[:, 0].max() + pad, pts_all[:, 1].max() + 0.03 * h
    extent = np.array([x0, y0, x1 - x0, y1 - y0])
    head_box = np.array([round(centre[0] - 0.06 * h), round(centre[1] - 0.072 * h), round(0.12 * h),
                         round(0.144 * h)], float)
    return _Pose(joints=joints, parts=parts, extent=extent, head_box=head_box,
                 ground=(root_x, ground_y, 0.17 * h * wf))


# -------------------------------------------------------------------------------------------------------- drawing

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fill_capsule(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, r0: float, r1: float, colour,
                  line_type: int) -> None:
    """A tapered capsule: the quad between the two end discs plus the discs (fixed-point, 1/16 px)."""
    X0, Y0, X1, Y1 = x0 * _ONE, y0 * _ONE, x1 * _ONE, y1 * _ONE
    R0, R1 = r0 * _ONE, r1 * _ONE
    length = math.hypot(X1 - X0, Y1 - Y0)
    if length > 1e-2:
        nx, ny = -(Y1 - Y0) / length, (X1 - X0) / length
        quad = np.array([[X0 + nx * R0, Y0 + ny * R0], [X1 + nx * R1, Y1 + ny * R1], [X1 - nx * R1, Y1 - ny * R1],
                         [X0 - nx * R0, Y0 - ny * R0]], np.int32)
        cv2.fillConvexPoly(img, quad, colour, line_type, _SHIFT)
    cv2.circle(img, (int(X0), int(Y0)), int(R0), colour, -1, line_type, _SHIFT)
    cv2.circle(img, (int(X1), int(Y1)), int(R1), colour, -1, line_type, _SHIFT)


def _draw_primitive(img: np.ndarray, idmap: Optional[np.ndarray], prim: tuple, entity_id: int, shaded: bool) -> None:
    kind = prim[0]
    aa = cv2.LINE_AA
    if kind == "capsule":
        _, x0, y0, x1, y1, r0, r1, c = prim
        if shaded and max(r0, r1) >= 2.5:
            # Cylinder shading: dark rim, mid body shifted toward the light, narrow highlight.
            length = max(math.hypot(x1 - x0, y1 - y0), 1e-3)
            nx, ny = -(y1 - y0) / length, (x1 - x0) / length
            if nx * _LIGHT[0] + ny * _LIGHT[1] < 0:
                nx, ny = -nx, -ny
            _fill_capsule(img, x0, y0, x1, y1, r0, r1, _scaled(c, 0.62), aa)
            for offset, radius, gain in ((0.2, 0.72, 0.9), (0.42, 0.3, 1.12)):
                _fill_capsule(img, x0 + nx * offset * r0, y0 + ny * offset * r0, x1 + nx * offset * r1,
                              y1 + ny * offset * r1, radius * r0, radius * r1, _scaled(c, gain), aa)
        else:
            _fill_capsule(img, x0, y0, x1, y1, r0, r1, _scaled(c, 0.85), aa)
        if idmap is not None:
            _fill_capsule(idmap, x0, y0, x1, y1, r0, r1, entity_id, cv2.LINE_8)
    elif kind == "poly":
        _, pts, c = prim
        fixed = np.round(pts * _ONE).astype(np.int32)
        cv2.fillPoly(img, [fixed], _scaled(c, 0.74 if shaded else 0.85), aa, _SHIFT)
        if shaded:
            centre = pts.mean(axis=0)
            size = float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])) / 2
            for shrink, gain, shift in ((0.82, 0.86, 0.05), (0.55, 0.97, 0.1)):
                inner = centre + (pts - centre) * shrink + np.array(_LIGHT) * (shift * size)
                cv2.fillPoly(img, [np.round(inner * _ONE).astype(np.int32)], _scaled(c, gain), aa, _SHIFT)
        if idmap is not None:
            cv2.fillPoly(idmap, [fixed], entity_id, cv2.LINE_8, _SHIFT)
    elif kind in ("circle", "dot"):
        _, x, y, r, c = prim
        centre, radius = (int(x * _ONE), int(y * _ONE)), max(1, int(r * _ONE))
        cv2.circle(img, centre, radius, _scaled(c, 0.9 if kind == "circle" else 1.0), -1, aa, _SHIFT)
        if idmap is not None and kind == "circle":
            cv2.circle(idmap, centre, radius, entity_id, -1, cv2.LINE_8, _SHIFT)
    elif kind == "ellipse":
        _, x, y, ax, ay, c = prim
        centre, axes = (int(x * _ONE), int(y * _ONE)), (max(1, int(ax * _ONE)), max(1, int(ay * _ONE)))
        cv2.ellipse(img, centre, axes, 0, 0, 360, _scaled(c, 0.8), -1, aa, _SHIFT)
        if shaded and ax > 3:
            highlight = (int((x + _LIGHT[0] * ax * 0.25) * _ONE), int((y + _LIGHT[1] * ay * 0.25) * _ONE))
            cv2.ellipse(img, highlight, (int(axes[0] * 0.6), int(axes[1] * 0.6)), 0, 0, 360, _scaled(c, 1.0), -1, aa,
                        _SHIFT)
        if idmap is not None:
            cv2.ellipse(idmap, centre, axes, 0, 0, 360, entity_id, -1, cv2.LINE_8, _SHIFT)


def _draw_shadow(img: np.ndarray, x: float, y: float, half_width: float) -> None:
    hh = max(1.0, half_width * 0.18)
    x0, x1 = int(max(0, x - half_width - 2)), int(min(img.shape[1], x + half_width + 3))
    y0, y1 = int(max(0, y - hh - 2)), int(min(img.shape[0], y + hh + 3))
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    dark = roi.copy()
    cv2.ellipse(dark, (int((x - x0) * _ONE), int((y - y0) * _ONE)), (int(half_width * _ONE), int(hh * _ONE)), 0, 0, 360,
                (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
    cv2.addWeighted(roi, 0.6, dark, 0.4, 0.0, dst=roi)


def _shake_at(scene: _Scene, t: float) -> np.ndarray:
    return np.array([round(float(np.interp(t, scene.shake_grid, scene.shake[:, a]))) for a in range(2)], float)


def _occluder_x(occ: _Occluder, t: float) -> float:
    return occ.x_at + occ.vx * (t - occ.t_at)


def _render(scene: _Scene, t: float, with_ids: bool) -> tuple[np.ndarray, Optional[np.ndarray], list[_Pose]]:
    """Render the scene at time ``t`` (frames). Returns BGR image, entity-id map (or None), poses of the people."""
    w, h, m = scene.width, scene.height, _SHAKE_MARGIN
    shake = _shake_at(scene, t)
    dx, dy = int(shake[0]), int(shake[1])
    img = scene.background[m - dy:m - dy + h, m - dx:m - dx + w].copy()
    idmap = np.zeros((h, w), np.uint8) if with_ids else None
    poses = [_pose(scene, p, t, shake) for p in scene.people]
    # Painter's order: farther ground contact (smaller y) first.
    items: list[tuple[float, int, object]] = []
    for person, pose in zip(scene.people, poses):
        items.append((pose.ground[1], person.entity_id, (person, pose)))
    for occ in scene.occluders:
        items.append((occ.ground_y + shake[1], occ.entity_id, occ))
    items.sort(key=lambda item: (item[0], item[1]))
    for _, entity_id, obj in items:
        if isinstance(obj, _Occluder):
            ph, pw = obj.patch.shape[:2]
            x0 = int(round(_occluder_x(obj, t) + shake[0]))
            y0 = int(round(obj.ground_y + shake[1])) - ph
            xa, xb, ya, yb = max(x0, 0), min(x0 + pw, w), max(y0, 0), min(y0 + ph, h)
            if xa < xb and ya < yb:
                img[ya:yb, xa:xb] = obj.patch[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.uint8)
                if idmap is not None:
                    idmap[ya:yb, xa:xb] = entity_id
            continue
        person, pose = obj
        if not person.is_crowd:
            _draw_shadow(img, *pose.ground)
        shaded = not person.is_crowd
        for _, _, prims in sorted(pose.parts, key=lambda part: (-part[0], part[1])):
            for prim in prims:
                _draw_primitive(img, idmap, prim, entity_id, shaded)
    return img, idmap, poses


# ------------------------------------------------------------------------------------------------------ per frame


@dataclass
class _FrameResult:
    image: np.ndarray
    positions: np.ndarray       # [P, 17, 2]
    keypoints: np.ndarray       # [P, 17, 3]
    visible: np.ndarray         # [P, 17]
    head_boxes: np.ndarray      # [P, 4]
    extents: np.ndarray         # [P, 4]
    crowd_extents: np.ndarray   # [C, 4]
    ignore_regions: list[np.ndarray]
    tags: dict


def _num_annotatable(scene: _Scene) -> int:
    return sum(1 for p in scene.people if not p.is_crowd)


def _render_frame(scene: _Scene, frame: int, frame_rng: np.random.Generator) -> _FrameResult:
    w, h = scene.width, scene.height
    n_main = _num_annotatable(scene)
    image, idmap, poses = _render(scene, float(frame), with_ids=True)
    assert idmap is not None
    # Motion blur: how far do joints (and the camera) travel while the shutter is open?
    blur_px = 0.0
    if scene.exposure > 0:
        half = scene.exposure / 2
        a = [_pose(scene, p, frame - half, _shake_at(scene, frame - half)).joints for p in scene.people[:n_main]]
        b = [_pose(scene, p, frame + half, _shake_at(scene, frame + half)).joints for p in scene.people[:n_main]]
        for ja, jb in zip(a, b):
            centre = (ja + jb) / 2  # only joints in the frame count: a runner leaving the image blurs nothing
            inside = (centre[:, 0] >= 0) & (centre[:, 0] <= w - 1) & (centre[:, 1] >= 0) & (centre[:, 1] <= h - 1)
            if inside.any():
                blur_px = max(blur_px, float(np.hypot(*(jb - ja)[inside].T).max()))
        blur_px = max(blur_px, float(np.hypot(*(_shake_at(scene, frame + half) - _shake_at(scene, frame - half)))))
    if blur_px >= 1.5:
        steps = min(max(3, math.ceil(blur_px / 3.0) + 1), scene.max_substeps)
        acc = np.zeros(image.shape, np.float32)
        for k in range(steps):
            tau = frame + scene.exposure * (k / (steps - 1) - 0.5)
            acc += _render(scene, tau, with_ids=False)[0]
        image = acc / steps
    ox, oy = int(frame_rng.integers(0, 32)), int(frame_rng.integers(0, 32))
    noisy = image.astype(np.int16) + scene.noise[oy:oy + h, ox:ox + w]
    image = np.clip(noisy, 0, 255).astype(np.uint8)

    positions = np.round(np.stack([p.joints for p in poses[:n_main]]), 2) if n_main else np.zeros((0, 17, 2))
    visible = np.zeros((n_main, _NUM_JOINTS), bool)
    keypoints = np.zeros((n_main, _NUM_JOINTS, 3))
    hidden_count, by_object, by_person = 0, False, False
    kind_of = {o.entity_id: "object" for o in scene.occluders}
    for i, person in enumerate(scene.people[:n_main]):
        inside = np.zeros(_NUM_JOINTS, bool)
        for j in _SCORED:
            x, y = positions[i, j]
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                continue
            inside[j] = True
            xi, yi = int(round(x)), int(round(y))
            window = idmap[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2]
            if (window == person.entity_id).any():
                visible[i, j] = True
            else:
                hidden_count += 1
                cover = int(idmap[yi, xi])
                if kind_of.get(cover) == "object":
                    by_object = True
                elif cover:
                    by_person = True
        labelled = inside.copy()
        if visible[i].sum() * 2 < inside.sum():
            labelled &= visible[i]  # mostly hidden: the annotator cannot infer the hidden joints
        if labelled.sum() >= 2:
            keypoints[i, labelled, :2] = positions[i, labelled]
            keypoints[i, labelled, 2] = 1.0
    ignore: list[np.ndarray] = []
    crowd = [pose.extent for person, pose in zip(scene.people, poses) if person.is_crowd]
    if crowd:
        corners = np.concatenate([[[x - 4, y - 4], [x + bw + 4, y - 4], [x + bw + 4, y + bh + 4], [x - 4, y + bh + 4]]
                                  for x, y, bw, bh in crowd]).astype(np.float32)
        hull = cv2.convexHull(corners)[:, 0, :]
        hull[:, 0] = np.clip(hull[:, 0], 0, w - 1)
        hull[:, 1] = np.clip(hull[:, 1], 0, h - 1)
        ignore.append(np.round(hull).astype(np.float64))
    shake = _shake_at(scene, float(frame))
    tags = {
        "motion_blur": bool(blur_px >= _BLUR_TAG_PX),
        "blur_px": round(blur_px, 2),
        "camera_shake": [int(shake[0]), int(shake[1])],
        "occluded": bool(hidden_count > 0),
        "hidden_joints": int(hidden_count),
        "object_occlusion": by_object,
        "person_occlusion": by_person,
    }
    return _FrameResult(
        image=image, positions=positions, keypoints=keypoints, visible=visible,
        head_boxes=np.stack([p.head_box for p in poses[:n_main]]) if n_main else np.zeros((0, 4)),
        extents=np.stack([p.extent for p in poses[:n_main]]) if n_main else np.zeros((0, 4)),
        crowd_extents=np.array(crowd).reshape(-1, 4), ignore_regions=ignore, tags=tags)


def _iter_frames(seed: int, sequence_index: int, frames: int, size: tuple[int, int],
                 options: SynthOptions) -> tuple[_Scene, Iterator[_FrameResult]]:
    scene = _build_scene(seed, sequence_index, frames, size, options)

    def generate() -> Iterator[_FrameResult]:
        for frame in range(frames):
            yield _render_frame(scene, frame, np.random.default_rng([seed, sequence_index, frame, 1]))

    return scene, generate()


def _validate(frames: int, size: tuple[int, int], seed: int, split: str = "val", sequences: int = 1) -> None:
    if not 1 <= frames < 10**4:
        raise CommandError(f"--frames must be in [1, 9999] (PoseTrack18 ids keep F < 10^4), got {frames}")
    if not 1 <= sequences < 10**6:
        raise CommandError(f"--sequences must be in [1, 999999], got {sequences}")
    if len(size) != 2 or not (64 <= size[0] <= 4096 and 64 <= size[1] <= 4096):
        raise CommandError(f"--size W H must be two numbers in [64, 4096], got {list(size)}")
    if seed < 0:
        raise CommandError(f"--seed must be >= 0, got {seed}")
    if not _SPLIT_NAME.match(split):
        raise CommandError(f"--split must be letters and digits only (it is part of file names), got {split!r}")


def render_clip(frames: int = 8, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE,
                options: Optional[SynthOptions] = None, sequence_index: int = 0) -> SynthClip:
    """Render one SynthTrack sequence in memory, without touching the disk.

    The clip is the same sequence that :func:`generate_synthtrack` writes as sequence ``sequence_index`` with the
    same seed, size and options (the files hold the JPEG-compressed images).
    """
    options = options or SynthOptions()
    _validate(frames, size, seed)
    scene, results = _iter_frames(seed, sequence_index, frames, tuple(size), options)
    rows = list(results)
    return SynthClip(
        images=np.stack([r.image for r in rows]),
        positions=np.stack([r.positions for r in rows]),
        keypoints=np.stack([r.keypoints for r in rows]),
        visible=np.stack([r.visible for r in rows]),
        head_boxes=np.stack([r.head_boxes for r in rows]),
        extents=np.stack([r.extents for r in rows]),
        track_ids=[p.track_id for p in scene.people if not p.is_crowd],
        actions=[p.action for p in scene.people if not p.is_crowd],
        labeled=labeled_frame_mask(frames, options.dense_labeled_frames, options.labeled_every),
        tags=[r.tags for r in rows],
        ignore_regions=[r.ignore_regions for r in rows],
        crowd_extents=[r.crowd_extents for r in rows],
        scene=scene.summary,
    )


# ------------------------------------------------------------------------------------------------------- writing


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CommandError("OpenCV could not encode a JPEG frame")
    return buf.tobytes()


def _detections(frame: _FrameResult, img_id: int, size: tuple[int, int], rng: np.random.Generator,
                options: SynthOptions) -> list[dict]:
    """Noisy person boxes from the true silhouettes: jitter, misses (more when occluded), false positives."""
    w, h = size
    boxes: list[tuple[list[float], float]] = []

    def clipped(x: float, y: float, bw: float, bh: float) -> Optional[list[float]]:
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, w - 1.0), min(y + bh, h - 1.0)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        return [x0, y0, x1 - x0, y1 - y0]

    for i in range(len(frame.extents)):
        seen = frame.visible[i, list(_SCORED)].mean()
        # Draw every random number whatever the outcome, so one person's fate does not shift the others'.
        miss, jitter, score_noise = rng.uniform(), rng.normal(0.0, options.detection_jitter, 4), rng.normal(0, 0.06)
        if seen == 0 or miss < options.detection_miss_rate + 0.7 * (1.0 - seen) ** 2:
            continue
        x, y, bw, bh = frame.extents[i]
        box = clipped(x + jitter[0] * bw, y + jitter[1] * bh, bw * (1 + jitter[2]), bh * (1 + jitter[3]))
        if box is not None:
            boxes.append((box, float(np.clip(0.55 + 0.42 * seen + score_noise, 0.21, 0.995))))
    for x, y, bw, bh in frame.crowd_extents:
        if rng.uniform() < 0.3:
            box = clipped(x, y, bw, bh)
            if box is not None:
                boxes.append((box, float(rng.uniform(0.21, 0.5))))
    for _ in range(int(rng.poisson(options.detection_false_positives))):
        bh = float(rng.uniform(0.1, 0.5) * h)
        bw = bh * float(rng.uniform(0.3, 0.6))
        box = clipped(float(rng.uniform(-0.1, 0.95) * w), float(rng.uniform(0.0, 0.8) * h), bw, bh)
        if box is not None:
            boxes.append((box, float(rng.uniform(0.21, 0.55))))
    return [{"image_id": img_id, "bbox": [round(v, 2) for v in box], "score": round(score, 4), "category_id": 1}
            for box, score in boxes]


def _sequence_json(name: str, split: str, sequence_index: int, frames: int, size: tuple[int, int],
                   rows: list[_FrameResult], labeled: np.ndarray, track_ids: list[int], actions: list[str],
                   scene_summary: dict) -> dict:
    w, h = size
    images, annotations = [], []
    for f, row in enumerate(rows):
        img_id = image_id(sequence_index, f)
        images.append({
            "has_no_densepose": True,
            "is_labeled": bool(labeled[f]),
            "file_name": f"images/{split}/{name}/{f:06d}.jpg",
            "nframes": frames,
            "frame_id": img_id,
            "vid_id": name[:6],
            "ignore_regions_y": [[int(v) for v in poly[:, 1]] for poly in row.ignore_regions],
            "ignore_regions_x": [[int(v) for v in poly[:, 0]] for poly in row.ignore_regions],
            "id": img_id,
            "width": w,
            "height": h,
            "mask_file": f"mask/{split}/{name}/{f:06d}.jpg",
            "synthtrack": row.tags,
        })
        if not labeled[f]:
            continue
        index = 0
        for i in range(len(row.keypoints)):
            kps = row.keypoints[i]
            if (kps[:, 2] > 0).sum() < 2:
                continue
            flat = [float(v) if k % 3 != 2 else int(v) for k, v in enumerate(kps.reshape(-1).tolist())]
            annotations.append({
                "bbox_head": [int(v) for v in row.head_boxes[i]],
                "keypoints": flat,
                "track_id": track_ids[i],
                "image_id": img_id,
                "bbox": pt18_bbox(kps),
                "scores": [],
                "category_id": 1,
                "id": img_id * 100 + index,
                "iscrowd": False,
                "num_keypoints": int((kps[:, 2] > 0).sum()),
                "synthtrack": {"visible": [int(v) for v in row.visible[i]], "action": actions[i]},
            })
            index += 1
    return {"categories": categories(), "images": images, "annotations": annotations, "synthtrack": scene_summary}


def generate_synthtrack(out_dir: str | os.PathLike, sequences: int = 10, frames: int = 30, seed: int = 0,
                        split: str = "val", size: tuple[int, int] = DEFAULT_SIZE,
                        options: Optional[SynthOptions] = None, progress: bool = True) -> SynthSummary:
    """Write a SynthTrack set in the PoseTrack18 layout under ``out_dir`` (see the module docstring).

    Every file is written atomically (temporary file, then rename). Refuses to write into an annotation folder
    that holds other sequence files, so readers never mix two generations.
    """
    from tqdm import tqdm

    options = options or SynthOptions()
    size = (int(size[0]), int(size[1]))
    _validate(frames, size, seed, split, sequences)
    start = time.perf_counter()
    out = Path(out_dir)
    names = [sequence_name(i, split) for i in range(sequences)]
    annotation_dir = out / "annotations" / split
    if annotation_dir.is_dir():
        stale = sorted(p.name for p in annotation_dir.glob("*.json") if p.stem not in set(names))
        if stale:
            raise CommandError(f"{annotation_dir}: already holds {len(stale)} other sequence file(s) "
                               f"(e.g. {stale[0]}); write to an empty --out or delete them first")
    summary = SynthSummary(out_dir=out, split=split, sequences=names, annotation_dir=annotation_dir,
                           image_dir=out / "images" / split, detections_file=out / "detections" / f"{split}_boxes.json")
    labeled = labeled_frame_mask(frames, options.dense_labeled_frames, options.labeled_every)
    detections: list[dict] = []
    for s in tqdm(range(sequences), desc=f"synth {split}", unit="seq", disable=not progress):
        name = names[s]
        scene, results = _iter_frames(seed, s, frames, size, options)
        det_rng = np.random.default_rng([seed, s, 2])
        rows: list[_FrameResult] = []
        for f, row in enumerate(results):
            atomic_write_bytes(summary.image_dir / name / f"{f:06d}.jpg", _encode_jpeg(row.image, options.jpeg_quality))
            mask = np.zeros((size[1], size[0]), np.uint8)
            for poly in row.ignore_regions:
                cv2.fillPoly(mask, [poly.astype(np.int32)], 255)
            atomic_write_bytes(out / "mask" / split / name / f"{f:06d}.jpg", _encode_jpeg(mask, 90))
            detections.extend(_detections(row, image_id(s, f), size, det_rng, options))
            row.image = np.empty(0, np.uint8)  # keep only the labels in memory
            rows.append(row)
        track_ids = [p.track_id for p in scene.people if not p.is_crowd]
        actions = [p.action for p in scene.people if not p.is_crowd]
        doc = _sequence_json(name, split, s, frames, size, rows, labeled, track_ids, actions, scene.summary)
        atomic_write_bytes(annotation_dir / f"{name}.json", json.dumps(doc).encode())
        summary.frames += frames
        summary.labeled_frames += int(labeled.sum())
        summary.annotations += len(doc["annotations"])
        summary.blurred_frames += sum(r.tags["motion_blur"] for r in rows)
        summary.occluded_frames += sum(r.tags["occluded"] for r in rows)
    atomic_write_bytes(summary.detections_file, json.dumps(detections).encode())
    summary.detections = len(detections)
    record = {"version": SYNTHTRACK_VERSION, "seed": seed, "split": split, "sequences": sequences, "frames": frames,
              "size": list(size), "options": asdict(options), "sequence_names": names,
              "counts": {"frames": summary.frames, "labeled_frames": summary.labeled_frames,
                         "annotations": summary.annotations, "detections": summary.detections,
                         "blurred_frames": summary.blurred_frames, "occluded_frames": summary.occluded_frames}}
    atomic_write_bytes(out / f"synthtrack_{split}.json", json.dumps(record, indent=1).encode())
    summary.seconds = time.perf_counter() - start
    return summary


def synth_command(args) -> int:
    """``tdmi synth``: generate a set and print a one-line summary."""
    size = tuple(args.size) if args.size else DEFAULT_SIZE
    summary = generate_synthtrack(args.out, sequences=args.sequences, frames=args.frames, seed=args.seed,
                                  split=args.split, size=size)
    print(summary.line())
    return 0
