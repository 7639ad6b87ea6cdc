"""Box -> (center, scale), the affine crop shared by every frame of a clip, augmentation, normalisation.

Facts: ``docs/facts/posetrack-facts.md`` 4.1 (box -> center/scale, GT-box sanitising), 5.1 (RGB, ImageNet
normalisation),
5.2 (the 3-point affine construction, INTER_LINEAR, black border, out-of-crop joint rule) and 5.3 (augmentation
distributions and order). The paper (section 4.1) crops every frame of the clip with the key frame's box; a clip's
frames therefore share ONE affine matrix, including flip, rotation and scale augmentation.

Coordinate conventions: image pixels, x right, y down; ``center`` ``[2]`` is (x, y) in the original frame;
``scale`` ``[2]`` is the box (w, h) in units of ``pixel_std`` = 200 px (after aspect fix and enlargement);
``output_size`` is (w, h) (e.g. ``[288, 384]``); crops are ``[T, H, W, 3]`` arrays, tensors ``[T, 3, H, W]``.

A horizontal flip is folded into the affine matrix (``M @ F`` with ``F: x -> width - 1 - x``) instead of flipping
the decoded images: with bilinear sampling both give the same crop (tested), and it saves one full-frame copy per
frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from tdmi.keypoints import JointSet

PIXEL_STD = 200.0
"""Box sizes are stored in units of 200 px (HRNet/DCPose ``pixel_std``)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HALF_BODY_ENLARGE = 1.5
"""Half-body boxes are enlarged 1.5x instead of the usual 1.25x (facts 5.3)."""


# --------------------------------------------------------------------------------------------------------------
# Boxes


def sanitize_gt_box(bbox: Sequence[float], image_width: int, image_height: int) -> Optional[np.ndarray]:
    """Clip a ground-truth ``[x, y, w, h]`` box to the image as DCPose does (facts 4.1); None if nothing remains.

    x1 = max(0, x), y1 = max(0, y), x2 = min(W-1, x1 + max(0, w-1)), y2 = min(H-1, y1 + max(0, h-1)); the box kept
    is ``[x1, y1, x2 - x1, y2 - y1]`` (about 1 px narrower than the input) if its area is positive. Detection boxes
    are used raw and never pass through here.
    """
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None
    x1 = max(0.0, x)
    y1 = max(0.0, y)
    x2 = min(image_width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(image_height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 < x1 or y2 < y1 or (x2 - x1) * (y2 - y1) <= 0:
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float64)


def fix_aspect(width: float, height: float, aspect_ratio: float) -> tuple[float, float]:
    """Grow the shorter side so that width / height == aspect_ratio (= input w / input h)."""
    if width > aspect_ratio * height:
        height = width / aspect_ratio
    elif width < aspect_ratio * height:
        width = height * aspect_ratio
    return width, height


def box_to_center_scale(
    bbox: Sequence[float], aspect_ratio: float, enlarge: float = 1.25, pixel_std: float = PIXEL_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """``[x, y, w, h]`` -> (center ``[2]``, scale ``[2]``) with aspect fix and enlargement (facts 4.1).

    ``box_to_center_scale([100, 50, 60, 200], 0.75)`` -> center (130, 150), scale (0.9375, 1.25).

    Raises:
        ValueError: the box has a non-positive width or height or non-finite numbers (the crop would be empty).
    """
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"box {list(bbox)} has no area: width and height must be positive and finite")
    if aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    w, h = fix_aspect(w, h, aspect_ratio)
    scale = np.array([w / pixel_std, h / pixel_std], dtype=np.float64) * enlarge
    return center, scale


# --------------------------------------------------------------------------------------------------------------
# Affine


def _rotate(point: np.ndarray, radians: float) -> np.ndarray:
    sin, cos = math.sin(radians), math.cos(radians)
    return np.array([point[0] * cos - point[1] * sin, point[0] * sin + point[1] * cos], dtype=np.float32)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point that makes (a, b, c) a right angle at b: b + perp(a - b), perp(d) = (-d_y, d_x)."""
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(
    center: Sequence[float], scale: Sequence[float], rot: float, output_size: Sequence[int], inv: bool = False,
    shift: Sequence[float] = (0.0, 0.0), pixel_std: float = PIXEL_STD,
) -> np.ndarray:
    """2x3 matrix mapping image pixels to crop pixels (or back with ``inv=True``) (facts 5.2).

    The box of width ``scale[0] * 200`` around ``center`` maps to ``output_size`` (w, h) with ``center`` at the
    crop center (w/2, h/2). A positive ``rot`` (degrees) turns the image content counter-clockwise as seen on
    screen (rot = 90: image points right of the center land above the crop center). Only ``scale[0]`` is used: the
    crop is isotropic and its height follows from the output aspect ratio. Built from three point pairs in float32
    like the reference, so that decoded coordinates match published numbers.
    """
    scale_px = np.asarray(scale, dtype=np.float32) * np.float32(pixel_std)
    src_w = float(scale_px[0])
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rot_rad = math.pi * float(rot) / 180.0
    src_dir = _rotate(np.array([0.0, src_w * -0.5], dtype=np.float32), rot_rad)
    dst_dir = np.array([0.0, dst_w * -0.5], dtype=np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = np.asarray(center, dtype=np.float32) + scale_px * np.asarray(shift, dtype=np.float32)
    src[1] = src[0] + src_dir
    src[2] = _third_point(src[0], src[1])
    dst[0] = (dst_w * 0.5, dst_h * 0.5)
    dst[1] = dst[0] + dst_dir
    dst[2] = _third_point(dst[0], dst[1])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def flip_matrix(image_width: int) -> np.ndarray:
    """3x3 homogeneous horizontal flip of an image of that width: x -> width - 1 - x (facts 5.3)."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def compose_flip(matrix: np.ndarray, image_width: int) -> np.ndarray:
    """``matrix`` (2x3, for the flipped image) applied to the unflipped image: ``matrix @ flip``."""
    return matrix @ flip_matrix(image_width)


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map ``[N, 2]`` points with a 2x3 affine matrix; returns float64 ``[N, 2]``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T.astype(np.float64) + matrix[:, 2].astype(np.float64)


def warp_frames(frames: Sequence[np.ndarray], matrix: np.ndarray, output_size: Sequence[int]) -> np.ndarray:
    """Crop every frame with the same matrix: ``[H_img, W_img, 3]`` each -> uint8 ``[T, H, W, 3]``.

    cv2.warpAffine with INTER_LINEAR and a constant black border (facts 5.2). Frames that are the same array
    object (padded slots) are warped once.
    """
    out_w, out_h = int(output_size[0]), int(output_size[1])
    crops = np.empty((len(frames), out_h, out_w, 3), dtype=np.uint8)
    done: dict[int, int] = {}
    for i, frame in enumerate(frames):
        if id(frame) in done:
            crops[i] = crops[done[id(frame)]]
            continue
        cv2.warpAffine(frame, matrix, (out_w, out_h), dst=crops[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        done[id(frame)] = i
    return crops


def _normalisation() -> tuple[np.ndarray, np.ndarray]:
    """Per-RGB-channel ``gain`` and ``bias`` with (x / 255 - mean) / std = x * gain + bias, in float32."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def normalize_crops(crops: np.ndarray) -> torch.Tensor:
    """uint8 BGR ``[T, H, W, 3]`` -> float32 RGB ImageNet-normalised ``[T, 3, H, W]`` (facts 5.1).

    (x / 255 - mean) / std is computed as one multiply-add per channel in numpy, which reads BGR and writes RGB in
    the same pass. (The same arithmetic as torch ops was 5-20x slower in a DataLoader's main process, where
    torch's intra-op threads compete for the cores.)
    """
    gain, bias = _normalisation()
    frames, height, width = crops.shape[:3]
    out = np.empty((frames, 3, height, width), dtype=np.float32)
    for rgb_channel in range(3):
        np.multiply(crops[..., 2 - rgb_channel], gain[rgb_channel], out=out[:, rgb_channel], casting="unsafe")
        out[:, rgb_channel] += bias[rgb_channel]
    return torch.from_numpy(out)


def crops_to_uint8(crops: np.ndarray) -> torch.Tensor:
    """uint8 BGR ``[T, H, W, 3]`` -> uint8 RGB ``[T, 3, H, W]``, for :func:`normalize_frames` on the device.

    A quarter of the float32 crop's bytes through the loader's shared memory and the host-to-GPU copy.
    """
    return torch.from_numpy(np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2)))


def channels_last_frames(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, 3, H, W]`` with the 3 colour values innermost, so every ``[N, 3, H, W]`` view the model takes of it
    (``flatten(0, 1)``, the key frame) is channels-last without a copy."""
    return frames.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[..., 3, H, W]`` (from :func:`crops_to_uint8`) -> float32 ImageNet-normalised, on the tensor's
    device, with :func:`normalize_crops`'s arithmetic (so the values are the same bits); float input is returned
    as it is (already normalised by the dataset)."""
    if frames.dtype != torch.uint8:
        return frames
    gain, bias = _normalisation_on(frames.device)
    return frames.to(torch.float32).mul_(gain).add_(bias)


_NORMALISATION_ON: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _normalisation_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``gain`` and ``bias`` as ``[3, 1, 1]`` tensors on ``device``, copied there once (not once per batch: each
    host-to-device copy of a pageable tensor waits for the GPU)."""
    if device not in _NORMALISATION_ON:
        _NORMALISATION_ON[device] = tuple(torch.from_numpy(v).to(device).view(3, 1, 1) for v in _normalisation())
    return _NORMALISATION_ON[device]


# --------------------------------------------------------------------------------------------------------------
# Joints


def flip_joints(keypoints: np.ndarray, image_width: int, flip_perm: Sequence[int]) -> np.ndarray:
    """Mirror ``[J, 3]`` (x, y, flag) joints: x -> width - 1 - x, swap left/right slots, unlabelled -> (0, 0, 0).

    Applying it twice returns the input (for labelled joints; unlabelled ones stay zero).
    """
    flipped = np.array(keypoints, dtype=np.float64, copy=True)
    flipped[:, 0] = image_width - 1.0 - flipped[:, 0]
    flipped = flipped[list(flip_perm)]
    flipped[:, :2] *= (flipped[:, 2:3] > 0)
    return flipped


def transform_joints(
    keypoints: np.ndarray, matrix: np.ndarray, output_size: Sequence[int], mask_outside: bool = True,
) -> np.ndarray:
    """Map labelled ``[J, 3]`` joints into the crop; zero the flag of joints outside it (facts 5.2).

    The out-of-crop rule is DCPose's: a flag becomes 0 if x < 0, y < 0, x > W or y > H (strict, so x == W stays).
    Unlabelled joints come back as (0, 0, 0).
    """
    joints = np.zeros((len(keypoints), 3), dtype=np.float64)
    labelled = np.asarray(keypoints)[:, 2] > 0
    joints[labelled, :2] = affine_points(np.asarray(keypoints)[labelled, :2], matrix)
    joints[labelled, 2] = np.minimum(np.asarray(keypoints)[labelled, 2], 1.0)
    if mask_outside:
        w, h = float(output_size[0]), float(output_size[1])
        outside = (joints[:, 0] < 0) | (joints[:, 1] < 0) | (joints[:, 0] > w) | (joints[:, 1] > h)
        joints[outside, 2] = 0.0
    return joints


# --------------------------------------------------------------------------------------------------------------
# Augmentation


@dataclass(frozen=True)
class AugmentParams:
    """How one clip is augmented (the same for all of its frames).

    Attributes:
        center: ``[2]`` crop center in the ORIGINAL (unflipped) image.
        scale: ``[2]`` crop size / 200 after half-body and scale augmentation.
        rotation: degrees.
        flip: mirror horizontally (frames and joints, with left/right swap).
        half_body: the half-body box replaced the person box.
    """

    center: np.ndarray
    scale: np.ndarray
    rotation: float = 0.0
    flip: bool = False
    half_body: bool = False


def half_body_box(
    keypoints: np.ndarray, joint_set: JointSet, aspect_ratio: float, rng: np.random.Generator,
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Center/scale around the upper or lower body's labelled joints (facts 5.3 step 1); None if not possible.

    The upper body is chosen when N(0,1) < 0.5 (P ~ 0.69, the reference's quirk) and it has more than 2 labelled
    joints; else the lower body if it has more than 2; else the upper body. Needs at least 2 chosen joints and a
    non-degenerate extent. The box is aspect-fixed and enlarged 1.5x.
    """
    labelled = keypoints[:, 2] > 0
    upper = [j for j in joint_set.upper_body if labelled[j]]
    lower = [j for j in joint_set.lower_body if labelled[j]]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    points = keypoints[chosen, :2].astype(np.float64)
    top_left, bottom_right = points.min(axis=0), points.max(axis=0)
    w, h = bottom_right - top_left
    if w <= 0 and h <= 0:
        return None
    w, h = fix_aspect(float(w), float(h), aspect_ratio)
    center = points.mean(axis=0)
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD]) * HALF_BODY_ENLARGE
    return center, scale


def sample_augmentation(
    rng: np.random.Generator, keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, *, joint_set: JointSet,
    aspect_ratio: float, scale_factor: float = 0.35, rotation_factor: float = 45.0, rotation_prob: float = 0.6,
    flip: bool = True, half_body_prob: float = 0.3, half_body_min_joints: int = 8,
) -> AugmentParams:
    """Draw one clip's augmentation in the reference order: half body, scale, rotation, flip (facts 5.3).

    Args:
        rng: the sample's own generator (reproducible per seed, independent of DataLoader workers).
        keypoints: ``[J, 3]`` joints of the person in the original image (flag > 0 = labelled).
        center, scale: the person box as from :func:`box_to_center_scale`.
        scale_factor: scale *= clip(N(0,1) * sf + 1, 1 - sf, 1 + sf).
        rotation_factor: with probability ``rotation_prob``, rotation = clip(N(0,1) * rf, -2 rf, 2 rf); else 0.
        flip: flip with probability 0.5 when True.
        half_body_prob, half_body_min_joints: half body is tried with this probability when more than
            ``half_body_min_joints`` joints are labelled.
    """
    center = np.asarray(center, dtype=np.float64).copy()
    scale = np.asarray(scale, dtype=np.float64).copy()
    half_body = False
    if int((keypoints[:, 2] > 0).sum()) > half_body_min_joints and rng.random() < half_body_prob:
        box = half_body_box(keypoints, joint_set, aspect_ratio, rng)
        if box is not None:
            center, scale = box
            half_body = True
    scale = scale * float(np.clip(rng.standard_normal() * scale_factor + 1.0, 1.0 - scale_factor, 1.0 + scale_factor))
    rotation = 0.0
    if rng.random() <= rotation_prob:
        limit = 2.0 * rotation_factor
        rotation = float(np.clip(rng.standard_normal() * rotation_factor, -limit, limit))
    do_flip = bool(flip and rng.random() <= 0.5)
    return AugmentParams(center=center, scale=scale, rotation=rotation, flip=do_flip, half_body=half_body)


def clip_matrix(params: AugmentParams, output_size: Sequence[int], image_width: int) -> np.ndarray:
    """The one 2x3 matrix (original image -> crop) for every frame of the clip, flip folded in."""
    if not params.flip:
        return get_affine_transform(params.center, params.scale, params.rotation, output_size)
    # The reference flips the images, mirrors the center (x -> width - 1 - x), then crops the flipped images.
    flipped_center = np.array([image_width - 1.0 - params.center[0], params.center[1]])
    matrix = get_affine_transform(flipped_center, params.scale, params.rotation, output_size)
    return compose_flip(matrix, image_width)


def clip_joints(
    keypoints: np.ndarray, params: AugmentParams, matrix: np.ndarray, output_size: Sequence[int], image_width: int,
    flip_perm: Sequence[int], mask_outside: bool = True,
) -> np.ndarray:
    """The key frame's ``[J, 3]`` joints in crop pixels, after flip (with left/right swap) and out-of-crop masking.

    ``matrix`` is :func:`clip_matrix`'s (it already contains the mirroring). The result equals flipping the joints
    with :func:`flip_joints` and mapping them with the matrix built for the flipped image (tested).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if params.flip:
        # Swap the left/right slots (coordinates and flags) as the reference does; x stays in the original image
        # because the matrix already mirrors it.
        keypoints = keypoints[list(flip_perm)]
    return transform_joints(keypoints, matrix, output_size, mask_outside)


def box_overlaps_image(bbox: Sequence[float], image_width: int, image_height: int) -> bool:
    """True if an ``[x, y, w, h]`` box with positive size overlaps the image (a crop of it is not all black)."""
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return False
    return x < image_width and y < image_height and x + w > 0 and y + h > 0
