"""Gaussian heatmap targets (tdmi.data.targets): docs/facts/posetrack-facts.md 5.4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tdmi.data.targets import POSETRACK_JOINT_WEIGHTS, gaussian_heatmaps, target_weights
from tdmi.data.transforms import AugmentParams, box_to_center_scale, clip_joints, clip_matrix
from tdmi.evaluation.decode import decode_heatmaps

INPUT = (288, 384)
HEATMAP = (72, 96)


def loop_reference(joints, input_size, heatmap_size, sigma):
    """Straight per-joint, per-pixel transcription of facts 5.4 (slow; for comparison only)."""
    hm_w, hm_h = heatmap_size
    stride_x, stride_y = input_size[0] / hm_w, input_size[1] / hm_h
    radius = int(3 * sigma)
    maps = np.zeros((len(joints), hm_h, hm_w), dtype=np.float32)
    weights = np.zeros(len(joints), dtype=np.float32)
    for j, (x, y, flag) in enumerate(joints):
        weight = 1.0 if flag > 0 else 0.0
        mx, my = int(x / stride_x + 0.5), int(y / stride_y + 0.5)
        if mx - radius >= hm_w or my - radius >= hm_h or mx + radius + 1 <= 0 or my + radius + 1 <= 0:
            weight = 0.0
        weights[j] = weight
        if weight > 0.5:
            for v in range(max(0, my - radius), min(hm_h, my + radius + 1)):
                for u in range(max(0, mx - radius), min(hm_w, mx + radius + 1)):
                    maps[j, v, u] = math.exp(-((u - mx) ** 2 + (v - my) ** 2) / (2 * sigma ** 2))
    return maps, weights


def test_peak_at_rounded_joint_position():
    joints = np.array([[50.0, 60.0, 1.0], [143.9, 200.1, 1.0]])
    maps, weights = gaussian_heatmaps(joints, INPUT, HEATMAP, sigma=3)
    assert maps.shape == (2, 96, 72) and maps.dtype == np.float32
    # mu = (int(50/4 + 0.5), int(60/4 + 0.5)) = (13, 15); (int(36.475), int(50.525)) = (36, 50)
    assert maps[0, 15, 13] == 1.0 and maps[1, 50, 36] == 1.0
    assert np.unravel_index(maps[0].argmax(), maps[0].shape) == (15, 13)
    np.testing.assert_array_equal(weights, [1, 1])
    # Radius 3 sigma = 9: a 19x19 window, zero outside it.
    assert (maps[0] > 0).sum() == 19 * 19
    assert maps[0, 15, 13 + 9] == pytest.approx(math.exp(-81 / 18)) and maps[0, 15, 13 + 10] == 0


def test_centre_uses_truncation_toward_zero():
    # x = -3: -3/4 + 0.5 = -0.25 -> int() gives 0 (floor would give -1).
    maps, weights = gaussian_heatmaps(np.array([[-3.0, 40.0, 1.0]]), INPUT, HEATMAP)
    assert weights[0] == 1 and maps[0, 10, 0] == 1.0


def test_window_fully_outside_gets_weight_zero():
    # x = 328 -> mu_x = 82, window starts at 73 >= 72: fully outside.
    maps, weights = gaussian_heatmaps(np.array([[328.0, 40.0, 1.0], [320.0, 40.0, 1.0]]), INPUT, HEATMAP)
    assert weights[0] == 0 and not maps[0].any()
    # x = 320 -> mu_x = 80, window reaches column 71: partly inside, weight 1, only the in-bounds part written.
    assert weights[1] == 1
    assert maps[1, 10, 71] == pytest.approx(math.exp(-81 / 18)) and maps[1, 10, :71].max() == 0


def test_unlabelled_joint_has_empty_map_and_zero_weight():
    maps, weights = gaussian_heatmaps(np.array([[100.0, 100.0, 0.0], [100.0, 100.0, 1.0]]), INPUT, HEATMAP)
    assert weights[0] == 0 and not maps[0].any() and maps[1].any()


def test_sigma_2_at_64x48():
    maps, weights = gaussian_heatmaps(np.array([[96.0, 128.0, 1.0]]), (192, 256), (48, 64), sigma=2)
    assert maps.shape == (1, 64, 48)
    assert maps[0, 32, 24] == 1.0 and (maps[0] > 0).sum() == 13 * 13


def test_joint_weights_multiply_after_the_write_test():
    joints = np.tile([[100.0, 100.0, 1.0]], (17, 1))
    joints[0, 2] = 0
    maps, weights = gaussian_heatmaps(joints, INPUT, HEATMAP, joint_weights=POSETRACK_JOINT_WEIGHTS)
    expected = np.array(POSETRACK_JOINT_WEIGHTS, dtype=np.float32)
    expected[0] = 0
    np.testing.assert_allclose(weights, expected)
    assert maps[9].max() == 1.0  # the map itself is not scaled
    with pytest.raises(ValueError, match="joint_weights"):
        gaussian_heatmaps(joints, INPUT, HEATMAP, joint_weights=[1.0, 2.0])


def test_target_weights_alone_equal_the_heatmap_weights():
    rng = np.random.default_rng(0)
    joints = np.column_stack([rng.uniform(-60, 350, 30), rng.uniform(-60, 450, 30), rng.random(30) > 0.2])
    _, weights = gaussian_heatmaps(joints, INPUT, HEATMAP)
    np.testing.assert_array_equal(target_weights(joints, INPUT, HEATMAP), weights)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\[J, 3\]"):
        gaussian_heatmaps(np.zeros((17, 2)), INPUT, HEATMAP)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(np.zeros((17, 3)), INPUT, HEATMAP, sigma=0)


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.floats(-80, 370, allow_nan=False), st.floats(-80, 470, allow_nan=False), st.sampled_from([0, 1])),
        min_size=1, max_size=6,
    ),
    sigma=st.sampled_from([2, 3]),
)
def test_vectorised_equals_loop_reference(points, sigma):
    joints = np.array(points, dtype=np.float64)
    maps, weights = gaussian_heatmaps(joints, INPUT, HEATMAP, sigma=sigma)
    ref_maps, ref_weights = loop_reference(joints, INPUT, HEATMAP, sigma)
    np.testing.assert_array_equal(weights, ref_weights)
    np.testing.assert_allclose(maps, ref_maps, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Round trip with the decoder (evaluation.decode): image joints -> crop -> targets -> decode -> image joints


@settings(max_examples=30, deadline=None)
@given(rot=st.floats(-60, 60, allow_nan=False), box_w=st.floats(80, 600), seed=st.integers(0, 1000))
# A joint whose nearest heatmap cell is one column past the right edge: its target is kept (weight 1, the
# reference's rule: part of the Gaussian overlaps the map), but its peak is not on the map (found by CI, issue 21).
@example(rot=-25.0, box_w=80.0, seed=289)
def test_targets_decode_back_to_the_image_joints(rot, box_w, seed):
    rng = np.random.default_rng(seed)
    box = [rng.uniform(0, 500), rng.uniform(0, 300), box_w, box_w * rng.uniform(1.0, 2.5)]
    center, scale = box_to_center_scale(box, 288 / 384)
    joints = np.zeros((17, 3))
    joints[:, 0] = rng.uniform(box[0], box[0] + box[2], 17)
    joints[:, 1] = rng.uniform(box[1], box[1] + box[3], 17)
    joints[:, 2] = 1
    params = AugmentParams(center=center, scale=scale, rotation=rot)
    crop_joints = clip_joints(joints, params, clip_matrix(params, INPUT, 1000), INPUT, 1000, list(range(17)))
    maps, weights = gaussian_heatmaps(crop_joints, INPUT, HEATMAP)
    coords, scores = decode_heatmaps(torch.from_numpy(maps)[None], torch.tensor(center[None]),
                                     torch.tensor(scale[None]), rotation=torch.tensor([rot]))
    # The target's peak is the joint's nearest heatmap cell (the reference's int(x / stride + 0.5)). Rotation can
    # put that cell just outside the map while part of the Gaussian still overlaps it; the target is then kept
    # (weight 1), but the map holds only the Gaussian's flank, so no exact round trip is possible for that joint.
    stride = INPUT[0] / HEATMAP[0]
    peak = np.floor(crop_joints[:, :2] / stride + 0.5)
    peak_on_map = (peak[:, 0] >= 0) & (peak[:, 0] < HEATMAP[0]) & (peak[:, 1] >= 0) & (peak[:, 1] < HEATMAP[1])
    exact = (weights > 0) & peak_on_map
    # The target peak sits on the nearest heatmap cell (within half a cell per axis) and decoding adds a quarter
    # cell shift toward the higher neighbour: the error stays below 0.75 cell per axis.
    cell = 200 * scale[0] / HEATMAP[0]
    error = np.linalg.norm(coords[0].numpy()[exact] - joints[exact, :2], axis=1)
    assert (error <= 0.75 * math.sqrt(2) * cell + 1e-3).all()
    assert (scores[0].numpy()[exact] == 1).all()
    # Kept joints whose peak is off the map: the decoded maximum is the flank on the border, below the peak.
    flank = (weights > 0) & ~peak_on_map
    assert (scores[0].numpy()[flank] < 1).all()
    assert (scores[0].numpy()[flank] > 0).all()
