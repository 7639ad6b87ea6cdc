"""Box, affine, augmentation and normalisation math (tdmi.data.transforms): docs/facts/posetrack-facts.md 4.1,
5.1-5.3."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdmi.data.transforms import (
    AugmentParams, affine_points, box_overlaps_image, box_to_center_scale, clip_joints, clip_matrix, flip_joints,
    get_affine_transform, half_body_box, normalize_crops, sample_augmentation, sanitize_gt_box, transform_joints,
    warp_frames,
)
from tdmi.keypoints import POSETRACK17

OUTPUT = (288, 384)
ASPECT = 288 / 384

# ---------------------------------------------------------------------------------------------------------------
# Boxes


def test_box_to_center_scale_appendix():
    center, scale = box_to_center_scale([100, 50, 60, 200], ASPECT)
    np.testing.assert_allclose(center, [130, 150])
    np.testing.assert_allclose(scale, [0.9375, 1.25])


def test_wide_box_grows_in_height():
    center, scale = box_to_center_scale([0, 0, 300, 100], ASPECT, enlarge=1.0)
    np.testing.assert_allclose(center, [150, 50])
    np.testing.assert_allclose(scale, [1.5, 2.0])


@pytest.mark.parametrize("box", [[10, 10, 0, 50], [10, 10, 50, 0], [10, 10, -5, 20], [0, 0, float("nan"), 10]])
def test_box_without_area_is_a_clear_error(box):
    with pytest.raises(ValueError, match="no area"):
        box_to_center_scale(box, ASPECT)


def test_sanitize_gt_box_follows_dcpose():
    # Inside: ~1 px narrower (x2 = x1 + w - 1).
    np.testing.assert_allclose(sanitize_gt_box([10, 20, 100, 50], 640, 480), [10, 20, 99, 49])
    # Exceeding the image (PT18 GT boxes can): clipped to [0, W-1] x [0, H-1]. The reference measures x2 from the
    # CLIPPED x1 (x2 = x1 + w - 1), so a box sticking out at the top keeps its full height: y2 = 0 + 99.
    np.testing.assert_allclose(sanitize_gt_box([-30, -10, 700, 100], 640, 480), [0, 0, 639, 99])
    # Entirely outside or without area: nothing remains.
    assert sanitize_gt_box([700, 10, 50, 50], 640, 480) is None
    assert sanitize_gt_box([10, 10, 0, 50], 640, 480) is None
    assert sanitize_gt_box([10, 10, 1, 50], 640, 480) is None  # w - 1 = 0 -> zero area


def test_box_overlaps_image():
    assert box_overlaps_image([-10, -10, 20, 20], 100, 100)
    assert not box_overlaps_image([-30, 10, 20, 20], 100, 100)
    assert not box_overlaps_image([100, 10, 20, 20], 100, 100)
    assert not box_overlaps_image([10, 10, 0, 20], 100, 100)


# ---------------------------------------------------------------------------------------------------------------
# Affine

finite = dict(allow_nan=False, allow_infinity=False)
centers = st.tuples(st.floats(-500, 2500, **finite), st.floats(-500, 1500, **finite))
scales = st.floats(0.05, 10.0, **finite)
rotations = st.floats(-180, 180, **finite)


@settings(max_examples=60, deadline=None)
@given(center=centers, scale=scales, rot=rotations)
def test_center_maps_to_crop_center(center, scale, rot):
    matrix = get_affine_transform(center, [scale, scale / ASPECT], rot, OUTPUT)
    mapped = affine_points(np.array([center]), matrix)[0]
    np.testing.assert_allclose(mapped, [144, 192], atol=1e-2)


@settings(max_examples=60, deadline=None)
@given(center=centers, scale=scales, rot=rotations,
       points=st.lists(st.tuples(st.floats(-100, 400, **finite), st.floats(-100, 500, **finite)), min_size=1,
                       max_size=5))
def test_affine_then_inverse_is_identity(center, scale, rot, points):
    forward = get_affine_transform(center, [scale, scale / ASPECT], rot, OUTPUT)
    inverse = get_affine_transform(center, [scale, scale / ASPECT], rot, OUTPUT, inv=True)
    crop_points = np.array(points, dtype=np.float64)
    back = affine_points(affine_points(crop_points, inverse), forward)
    # float32 construction: tolerance relative to the crop size.
    np.testing.assert_allclose(back, crop_points, atol=2e-2)


@settings(max_examples=40, deadline=None)
@given(center=centers, scale=scales, rot=rotations)
def test_crop_is_isotropic_with_factor_output_width_over_box_width(center, scale, rot):
    matrix = get_affine_transform(center, [scale, 123.0], rot, OUTPUT)  # scale_y is ignored
    linear = matrix[:, :2]
    factor = OUTPUT[0] / (scale * 200)
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) * factor ** 2, rtol=1e-3, atol=1e-4 * factor ** 2)
    assert np.linalg.det(linear) > 0  # no mirroring without a flip


def test_box_corners_map_to_crop_corners():
    center, scale = box_to_center_scale([100, 50, 60, 200], ASPECT)
    matrix = get_affine_transform(center, scale, 0, OUTPUT)
    half = scale * 200 / 2
    corners = np.array([center - half, center + half])
    np.testing.assert_allclose(affine_points(corners, matrix), [[0, 0], [288, 384]], atol=1e-3)


def test_heatmap_to_image_factor_appendix():
    center, scale = box_to_center_scale([100, 50, 60, 200], ASPECT)
    inverse = get_affine_transform(center, scale, 0, (72, 96), inv=True)
    np.testing.assert_allclose(inverse[0, 0], 200 * 0.9375 / 72, rtol=1e-6)
    np.testing.assert_allclose(affine_points(np.array([[36, 48]]), inverse), [[130, 150]], atol=1e-4)


def test_positive_rotation_turns_content_counter_clockwise():
    matrix = get_affine_transform([100, 100], [1.0, 1.0], 90, (200, 200))
    # A point right of the center ends up above the crop center.
    np.testing.assert_allclose(affine_points(np.array([[150, 100]]), matrix), [[100, 50]], atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Flip


def random_joints(rng, n=17, width=640, height=480):
    joints = np.zeros((n, 3))
    joints[:, 0] = rng.uniform(0, width - 1, n)
    joints[:, 1] = rng.uniform(0, height - 1, n)
    joints[:, 2] = rng.random(n) > 0.3
    joints[~(joints[:, 2] > 0), :2] = 0
    return joints


def test_flip_twice_is_identity_for_coordinates_and_order():
    joints = random_joints(np.random.default_rng(0))
    perm = POSETRACK17.flip_permutation()
    once = flip_joints(joints, 640, perm)
    np.testing.assert_allclose(flip_joints(once, 640, perm), joints)
    # One flip: the left wrist slot (9) holds the mirrored right wrist (10), head joints stay in place.
    if joints[10, 2] > 0:
        np.testing.assert_allclose(once[9], [639 - joints[10, 0], joints[10, 1], 1])
    np.testing.assert_allclose(once[2, 1], joints[2, 1])
    assert (once[~(once[:, 2] > 0), :2] == 0).all()


def test_flip_folded_into_the_matrix_equals_flipping_the_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    params = AugmentParams(center=np.array([35.0, 28.0]), scale=np.array([0.2, 0.2 / 0.75]), rotation=20.0, flip=True)
    out = (24, 32)
    folded = warp_frames([image], clip_matrix(params, out, 80), out)[0]
    flipped_center = np.array([80 - 1 - 35.0, 28.0])
    reference = cv2.warpAffine(cv2.flip(image, 1), get_affine_transform(flipped_center, params.scale, 20.0, out), out,
                               flags=cv2.INTER_LINEAR)
    assert np.abs(folded.astype(int) - reference.astype(int)).max() <= 1


def test_clip_joints_with_flip_equals_flipping_the_joints_first():
    rng = np.random.default_rng(2)
    joints = random_joints(rng, width=80, height=60)
    perm = POSETRACK17.flip_permutation()
    params = AugmentParams(center=np.array([40.0, 30.0]), scale=np.array([0.4, 0.4 / 0.75]), rotation=-30.0, flip=True)
    out = (24, 32)
    ours = clip_joints(joints, params, clip_matrix(params, out, 80), out, 80, perm, mask_outside=False)
    flipped_matrix = get_affine_transform([80 - 1 - 40.0, 30.0], params.scale, -30.0, out)
    reference = transform_joints(flip_joints(joints, 80, perm), flipped_matrix, out, mask_outside=False)
    np.testing.assert_allclose(ours, reference, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Out-of-crop rule


def test_out_of_crop_rule_is_strict():
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    joints = np.array([[288, 384, 1], [288.01, 10, 1], [-0.01, 10, 1], [10, 384.5, 1], [0, 0, 1], [5, 5, 0]])
    out = transform_joints(joints, identity, (288, 384))
    np.testing.assert_array_equal(out[:, 2], [1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(out[5], [0, 0, 0])  # unlabelled joints come back as zeros
    assert (transform_joints(joints, identity, (288, 384), mask_outside=False)[:4, 2] == 1).all()


# ---------------------------------------------------------------------------------------------------------------
# Augmentation


def labelled_person(n_labelled=17):
    joints = np.zeros((17, 3))
    joints[:, 0] = np.linspace(100, 200, 17)
    joints[:, 1] = np.linspace(50, 450, 17)
    joints[:n_labelled, 2] = 1
    return joints


def draw(seed, **kwargs):
    defaults = dict(joint_set=POSETRACK17, aspect_ratio=ASPECT, half_body_prob=0.0)
    defaults.update(kwargs)
    return sample_augmentation(np.random.default_rng(seed), labelled_person(), np.array([150.0, 250.0]),
                               np.array([1.0, 4 / 3]), **defaults)


def test_augmentation_is_reproducible_per_seed():
    a, b, c = draw(7, half_body_prob=0.5), draw(7, half_body_prob=0.5), draw(8, half_body_prob=0.5)
    assert (a.rotation, a.flip, a.half_body) == (b.rotation, b.flip, b.half_body)
    np.testing.assert_array_equal(a.scale, b.scale)
    assert not np.array_equal(a.scale, c.scale) or a.rotation != c.rotation


def test_augmentation_follows_the_reference_distributions():
    draws = [draw(seed) for seed in range(1500)]
    factors = np.array([d.scale[0] / 1.0 for d in draws])
    rotations = np.array([d.rotation for d in draws])
    flips = np.array([d.flip for d in draws])
    assert factors.min() >= 0.65 - 1e-9 and factors.max() <= 1.35 + 1e-9
    clipped = (factors == 0.65) | (factors == 1.35)
    assert 0.27 < clipped.mean() < 0.37  # the clip acts beyond one sigma: P(|N(0,1)| > 1) = 0.317
    assert np.abs(rotations).max() <= 90
    assert 0.55 < (rotations != 0).mean() < 0.65
    assert 0.45 < flips.mean() < 0.55
    assert 30 < np.abs(rotations[rotations != 0]).mean() < 40  # E|N(0,45)| ~ 35.9 before clipping


def test_augmentation_off_switches():
    d = draw(3, scale_factor=0.0, rotation_prob=0.0, flip=False)
    assert d.rotation == 0 and not d.flip
    np.testing.assert_allclose(d.scale, [1.0, 4 / 3])


def test_half_body_only_with_enough_joints():
    few = [sample_augmentation(np.random.default_rng(s), labelled_person(8), np.array([150.0, 250.0]),
                               np.array([1.0, 4 / 3]), joint_set=POSETRACK17, aspect_ratio=ASPECT,
                               half_body_prob=1.0) for s in range(20)]
    assert not any(d.half_body for d in few)  # needs MORE than 8 labelled joints
    many = [draw(s, half_body_prob=1.0) for s in range(200)]
    assert all(d.half_body for d in many)


def test_half_body_box_upper_body():
    joints = labelled_person()
    # half_body_box's first draw picks the side: upper when N(0,1) < 0.5.
    seed = next(s for s in range(100) if np.random.default_rng(s).standard_normal() < 0.5)
    center, scale = half_body_box(joints, POSETRACK17, ASPECT, np.random.default_rng(seed))
    upper = joints[:11, :2]
    np.testing.assert_allclose(center, upper.mean(axis=0))
    w, h = upper.max(axis=0) - upper.min(axis=0)
    w = max(w, h * ASPECT)
    h = max(h, w / ASPECT)
    np.testing.assert_allclose(scale, np.array([w, h]) / 200 * 1.5)


# ---------------------------------------------------------------------------------------------------------------
# Warp and normalisation


def test_warp_uses_black_border_and_one_matrix_for_all_frames():
    image = np.full((20, 30, 3), 200, dtype=np.uint8)
    matrix = get_affine_transform([15, 10], [0.3, 0.4], 0, (12, 16))  # 60 px wide box on a 30 px image
    crops = warp_frames([image, image.copy(), image], matrix, (12, 16))
    assert crops.shape == (3, 16, 12, 3)
    assert (crops[0] == crops[1]).all() and (crops[0] == crops[2]).all()
    assert crops[0, 0, 0].tolist() == [0, 0, 0] and crops[0, 8, 6].tolist() == [200, 200, 200]


def test_normalize_converts_bgr_to_normalised_rgb():
    crops = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    crops[..., 0] = 255  # blue in BGR
    tensor = normalize_crops(crops)
    assert tensor.shape == (2, 3, 4, 5) and tensor.dtype.__str__() == "torch.float32"
    expected = [(0 - 0.485) / 0.229, (0 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    np.testing.assert_allclose(tensor[1, :, 2, 3].numpy(), expected, rtol=1e-6)


def test_rotation_matrix_angle_matches_the_parameter():
    matrix = get_affine_transform([0, 0], [1, 1], 30, (200, 200))
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    assert angle == pytest.approx(-30, abs=1e-4)
