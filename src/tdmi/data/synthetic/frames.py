"""SynthTrack per frame: motion blur, occlusion and visibility, labels and difficulty tags; ``render_clip``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import cv2
import numpy as np

from tdmi.data.synthetic.drawing import _render, _shake_at
from tdmi.data.synthetic.options import (_BLUR_TAG_PX, _NUM_JOINTS, _SCORED, _SPLIT_NAME, DEFAULT_SIZE, SynthClip,
                                         SynthOptions, labeled_frame_mask)
from tdmi.data.synthetic.poses import _pose
from tdmi.data.synthetic.scene import _build_scene, _Scene
from tdmi.errors import CommandError


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
    person_fields: list[dict]   # [P] per annotated person: own blur, hidden joints, speed, distractor in crop


def _num_annotatable(scene: _Scene) -> int:
    """The annotated people come first in ``scene.people`` (then unannotated distractors, then the crowd)."""
    return sum(1 for p in scene.people if p.annotated and not p.is_crowd)


CROP_ASPECT, CROP_ENLARGE = 0.75, 1.25
"""The crop a top-down model sees around a person (w / h of the network input, the paper's 25% enlargement)."""


def _crop_box(extent: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]`` of the enlarged, aspect-fixed crop around a silhouette box ``[x, y, w, h]``."""
    x, y, w, h = extent
    if w > CROP_ASPECT * h:
        h = w / CROP_ASPECT
    else:
        w = CROP_ASPECT * h
    cx, cy = extent[0] + extent[2] / 2, extent[1] + extent[3] / 2
    half_w, half_h = w * CROP_ENLARGE / 2, h * CROP_ENLARGE / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


def _person_fields(scene: _Scene, frame: int, poses: list, own_blur: np.ndarray, hidden: np.ndarray) -> list[dict]:
    """Per annotated person, its own difficulty on this frame (``annotations[k]["synthtrack"]``): ``blur_px`` (the
    largest displacement of its in-image joints during the exposure), ``hidden_joints`` (its in-image joints
    covered by something), ``speed`` (mean joint speed in % of its height per frame, camera motion excluded) and
    ``distractor_in_crop`` (another person, of any kind, has at least 3 joints inside its crop)."""
    fields = []
    still = np.zeros(2)
    for i, person in enumerate(scene.people[:len(own_blur)]):
        before = _pose(scene, person, frame - 1.0, still).joints[list(_SCORED)]
        after = _pose(scene, person, frame + 1.0, still).joints[list(_SCORED)]
        height = max(float(poses[i].extent[3]), 1.0)
        speed = float(np.hypot(*(after - before).T).mean() / 2.0 / height * 100.0)
        x0, y0, x1, y1 = _crop_box(poses[i].extent)
        crowded = False
        for k, (other, pose) in enumerate(zip(scene.people, poses)):
            if k == i:
                continue
            joints = pose.joints[list(_SCORED)]
            inside = (joints[:, 0] >= x0) & (joints[:, 0] <= x1) & (joints[:, 1] >= y0) & (joints[:, 1] <= y1)
            if inside.sum() >= 3:
                crowded = True
                break
        fields.append({"blur_px": round(float(own_blur[i]), 2), "hidden_joints": int(hidden[i]),
                       "speed": round(speed, 3), "distractor_in_crop": crowded})
    return fields


def _render_frame(scene: _Scene, frame: int, frame_rng: np.random.Generator) -> _FrameResult:
    w, h = scene.width, scene.height
    n_main = _num_annotatable(scene)
    image, idmap, poses = _render(scene, float(frame), with_ids=True)
    assert idmap is not None
    # Motion blur: how far do joints (and the camera) travel while the shutter is open?
    blur_px = 0.0
    own_blur = np.zeros(n_main)
    if scene.exposure > 0:
        half = scene.exposure / 2
        a = [_pose(scene, p, frame - half, _shake_at(scene, frame - half)).joints for p in scene.people[:n_main]]
        b = [_pose(scene, p, frame + half, _shake_at(scene, frame + half)).joints for p in scene.people[:n_main]]
        for i, (ja, jb) in enumerate(zip(a, b)):
            centre = (ja + jb) / 2  # only joints in the frame count: a runner leaving the image blurs nothing
            inside = (centre[:, 0] >= 0) & (centre[:, 0] <= w - 1) & (centre[:, 1] >= 0) & (centre[:, 1] <= h - 1)
            if inside.any():
                own_blur[i] = float(np.hypot(*(jb - ja)[inside].T).max())
                blur_px = max(blur_px, own_blur[i])
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
    hidden_per_person = np.zeros(n_main, int)
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
                hidden_per_person[i] += 1
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
        crowd_extents=np.array(crowd).reshape(-1, 4), ignore_regions=ignore, tags=tags,
        person_fields=_person_fields(scene, frame, poses, own_blur, hidden_per_person))


def _iter_frames(seed: int, sequence_index: int, frames: int, size: tuple[int, int],
                 options: SynthOptions, variant: Optional[str] = None) -> tuple[_Scene, Iterator[_FrameResult]]:
    scene = _build_scene(seed, sequence_index, frames, size, options, variant)

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
                options: Optional[SynthOptions] = None, sequence_index: int = 0,
                variant: Optional[str] = None) -> SynthClip:
    """Render one SynthTrack sequence in memory, without touching the disk.

    The clip is the same sequence that :func:`generate_synthtrack` writes as sequence ``sequence_index`` with the
    same seed, size and options (the files hold the JPEG-compressed images); with ``variant``, the counterfactual
    variant of it that :func:`generate_counterfactual` writes (its labels before the clean scene's replace them).
    """
    options = options or SynthOptions()
    _validate(frames, size, seed)
    scene, results = _iter_frames(seed, sequence_index, frames, tuple(size), options, variant)
    rows = list(results)
    return SynthClip(
        images=np.stack([r.image for r in rows]),
        positions=np.stack([r.positions for r in rows]),
        keypoints=np.stack([r.keypoints for r in rows]),
        visible=np.stack([r.visible for r in rows]),
        head_boxes=np.stack([r.head_boxes for r in rows]),
        extents=np.stack([r.extents for r in rows]),
        track_ids=[p.track_id for p in scene.people[:_num_annotatable(scene)]],
        actions=[p.action for p in scene.people[:_num_annotatable(scene)]],
        labeled=labeled_frame_mask(frames, options.dense_labeled_frames, options.labeled_every),
        tags=[r.tags for r in rows],
        ignore_regions=[r.ignore_regions for r in rows],
        crowd_extents=[r.crowd_extents for r in rows],
        scene=scene.summary,
    )


