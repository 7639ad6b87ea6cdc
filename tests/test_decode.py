"""Heatmap decoding: the reference rules of docs/facts/posetrack-facts.md section 6 and the appendix numeric check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tdmi.evaluation.decode import (
    dark_kernel_size, dark_refine, decode_heatmaps, flip_back, fuse_flip_test, gaussian_modulation, heatmap_argmax,
    heatmap_to_image, quarter_offset,
)
from tdmi.keypoints import POSETRACK17

W, H = 72, 96  # heatmap size of the 288x384 input


def box_to_center_scale(x: float, y: float, w: float, h: float, aspect: float = 0.75) -> tuple[list, list]:
    """facts 4.1 (written out here so the test does not depend on the data package)."""
    center = [x + w / 2, y + h / 2]
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = aspect * h
    return center, [w / 200 * 1.25, h / 200 * 1.25]


def gaussian(cx: float, cy: float, sigma: float = 2.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


def test_appendix_box_maps_heatmap_centre_to_box_centre():
    center, scale = box_to_center_scale(100, 50, 60, 200)
    assert center == [130, 150] and scale == pytest.approx([0.9375, 1.25])
    hm = gaussian(36, 48).reshape(1, 1, H, W)
    coords, scores = decode_heatmaps(hm, torch.tensor([center]), torch.tensor([scale]))
    assert coords[0, 0].tolist() == pytest.approx([130.0, 150.0], abs=1e-5)
    assert scores[0, 0].item() == pytest.approx(1.0)
    # One heatmap pixel is 200 * 0.9375 / 72 = 2.604 image pixels on both axes (isotropic crop).
    moved = heatmap_to_image(torch.tensor([[[37.0, 49.0]]]), torch.tensor([center]), torch.tensor([scale]), (W, H))
    assert (moved[0, 0] - torch.tensor([130.0, 150.0])).tolist() == pytest.approx([200 * 0.9375 / 72] * 2, abs=1e-4)


def test_gaussian_target_round_trip_within_quantisation():
    rng = np.random.default_rng(0)
    center, scale = box_to_center_scale(200, 100, 150, 300)
    pixels_per_cell = 200 * scale[0] / W
    for _ in range(20):
        true_hm = rng.uniform([5, 5], [W - 5, H - 5])
        # The training target (facts 5.4): Gaussian with its peak on the integer cell int(x + 0.5).
        mu = np.floor(true_hm + 0.5)
        hm = gaussian(float(mu[0]), float(mu[1]), sigma=3.0).reshape(1, 1, H, W)
        coords, _ = decode_heatmaps(hm, torch.tensor([center]), torch.tensor([scale]))
        true_img = np.asarray(center) + (true_hm - [W / 2, H / 2]) * pixels_per_cell
        assert np.abs(coords[0, 0].numpy() - true_img).max() <= 0.5 * pixels_per_cell + 1e-4


def test_quarter_shift_moves_towards_higher_neighbour():
    hm = gaussian(30.3, 40.0).reshape(1, 1, H, W)  # true peak right of cell 30, centred on row 40
    coords, _ = heatmap_argmax(hm)
    assert coords[0, 0].tolist() == [30.0, 40.0]
    refined = quarter_offset(hm, coords)
    assert refined[0, 0].tolist() == [30.25, 40.0]  # sign(0) = 0 on the symmetric axis


def test_quarter_shift_needs_strict_interior_on_both_axes():
    hm = torch.zeros(1, 3, H, W)
    hm[0, 0, 40, 1], hm[0, 0, 40, 2] = 1.0, 0.5  # x = 1: not interior (1 < px is strict)
    hm[0, 1, 40, 2], hm[0, 1, 40, 3] = 1.0, 0.5  # x = 2: interior, shifts right
    hm[0, 2, 1, 30], hm[0, 2, 1, 31] = 1.0, 0.5  # y = 1: the x shift is also off (one test for both axes)
    coords, _ = heatmap_argmax(hm)
    refined = quarter_offset(hm, coords)
    assert refined[0, 0].tolist() == [1.0, 40.0]
    assert refined[0, 1].tolist() == [2.25, 40.0]
    assert refined[0, 2].tolist() == [30.0, 1.0]


def test_first_argmax_on_ties_and_nonpositive_maps():
    hm = torch.zeros(2, 2, H, W)
    hm[0, 0, 10, 50] = 0.7
    hm[0, 0, 20, 5] = 0.7  # a later row: the first maximum in row-major order (10, 50) wins
    hm[1, 1] = -0.1  # maximum <= 0: position (0, 0), score kept
    coords, maxvals = heatmap_argmax(hm)
    assert coords[0, 0].tolist() == [50.0, 10.0]
    assert coords[1, 1].tolist() == [0.0, 0.0]
    assert maxvals[1, 1].item() == pytest.approx(-0.1)
    assert coords[0, 1].tolist() == [0.0, 0.0] and maxvals[0, 1].item() == 0.0
    center, scale = torch.tensor([[130.0, 150.0]] * 2), torch.tensor([[0.9375, 1.25]] * 2)
    image, scores = decode_heatmaps(hm, center, scale)
    # (0, 0) in the heatmap maps to the crop corner, exactly as the reference (it masks before the affine).
    assert image[1, 1].tolist() == pytest.approx([130 - 36 * 2.6041667, 150 - 48 * 2.6041667], abs=1e-3)
    assert image.shape == (2, 2, 2) and scores.shape == (2, 2)


def test_rotation_inverse_matches_the_crop_affine():
    cv2 = pytest.importorskip("cv2")
    center, scale, rot = np.array([300.0, 200.0]), np.array([1.2, 1.6]), 30.0
    # Forward crop affine of facts 5.2 (input 288x384), built with cv2 from the three point pairs.
    src_w, dst_w = scale[0] * 200, 288
    r = math.radians(rot)
    src_dir = np.array([0 * math.cos(r) - (-0.5 * src_w) * math.sin(r), 0 * math.sin(r) + (-0.5 * src_w) * math.cos(r)])
    dst = np.array([[144, 192], [144, 192 - 0.5 * dst_w]], dtype=np.float32)
    src = np.array([center, center + src_dir], dtype=np.float32)
    perp = lambda a, b: b + np.array([-(a - b)[1], (a - b)[0]])  # noqa: E731
    src3 = np.vstack([src, perp(src[0], src[1])]).astype(np.float32)
    dst3 = np.vstack([dst, perp(dst[0], dst[1])]).astype(np.float32)
    forward = cv2.getAffineTransform(src3, dst3)
    image_point = np.array([320.0, 150.0])
    input_point = forward @ np.append(image_point, 1.0)
    hm_point = torch.from_numpy(input_point / 4.0).reshape(1, 1, 2)  # 288x384 input -> 72x96 heatmap
    back = heatmap_to_image(hm_point, torch.from_numpy(center[None]), torch.from_numpy(scale[None]), (W, H),
                            rotation=torch.tensor([rot]))
    assert back[0, 0].tolist() == pytest.approx(image_point.tolist(), abs=0.05)


def test_flip_back_undoes_a_mirrored_output():
    perm = POSETRACK17.flip_permutation()
    hm = torch.rand(2, 17, H, W)
    mirrored = hm[:, perm].flip(3)  # what a mirror-equivariant model predicts for the flipped crop
    assert torch.equal(flip_back(mirrored, perm, shift=False), hm)
    shifted = flip_back(mirrored, perm, shift=True)
    assert torch.equal(shifted[..., 1:], hm[..., :-1]) and torch.equal(shifted[..., 0], hm[..., 0])
    fused = fuse_flip_test(hm, mirrored, shift=False)
    assert torch.allclose(fused, hm)
    # The switch is off by default: decoding without flipped maps ignores the flip path entirely.
    center, scale = torch.tensor([[100.0, 100.0]] * 2), torch.tensor([[1.0, 1.333]] * 2)
    plain = decode_heatmaps(hm, center, scale)
    flipped = decode_heatmaps(hm, center, scale, flipped_heatmaps=mirrored, shift_flipped=False)
    assert torch.allclose(plain[0], flipped[0]) and torch.allclose(plain[1], flipped[1])


# ---------------------------------------------------------------------------------------------------------------------
# DARK (distribution-aware sub-pixel decoding, issue 22)


def _gaussian_batch(count: int, sigma: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` maps with sub-pixel centres well inside the map, ``[1, count, H, W]``, and the centres
    ``[count, 2]``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=g) * torch.tensor([W - 12.0, H - 12.0]) + 6.0
    maps = torch.stack([gaussian(float(x), float(y), sigma) for x, y in centres])
    return maps[None], centres


@pytest.mark.parametrize("sigma", [2.0, 3.0])
def test_dark_recovers_sub_pixel_centres_far_better_than_the_quarter_shift(sigma):
    maps, centres = _gaussian_batch(64, sigma)
    coords, _ = heatmap_argmax(maps)
    quarter = (quarter_offset(maps, coords)[0] - centres).norm(dim=1)
    dark = (dark_refine(maps, coords, dark_kernel_size(sigma))[0] - centres).norm(dim=1)
    # argmax + quarter shift errs by up to ~0.35 px (mean ~0.18); DARK recovers a Gaussian's centre almost exactly
    # (a centre within a kernel radius of the border, where the modulation sees zeros, still errs by < 0.05 px)
    assert quarter.mean() > 0.1
    assert dark.mean() < 0.05 * quarter.mean() and dark.max() < 0.1, (dark.mean(), quarter.mean())


def test_dark_kernel_matches_the_papers_two_settings():
    assert dark_kernel_size(2.0) == 11 and dark_kernel_size(3.0) == 17 and dark_kernel_size(1.5) % 2 == 1


def test_dark_modulation_keeps_each_maps_maximum_and_its_scores_are_the_raw_maxima():
    maps, _ = _gaussian_batch(4, 3.0)
    maps = maps * torch.tensor([1.0, 0.5, 2.0, 0.8]).view(1, 4, 1, 1) + 0.01 * torch.rand_like(maps)
    modulated = gaussian_modulation(maps, 17)
    torch.testing.assert_close(modulated.amax(dim=(2, 3)), maps.amax(dim=(2, 3)))
    center, scale = torch.tensor([[100.0, 100.0]]), torch.tensor([[1.0, 1.0]])
    _, scores_dark = decode_heatmaps(maps, center, scale, method="dark", dark_sigma=3.0)
    _, scores_argmax = decode_heatmaps(maps, center, scale)
    assert torch.equal(scores_dark, scores_argmax)


def test_dark_leaves_border_and_empty_maps_where_argmax_puts_them():
    maps = torch.zeros(1, 3, H, W)
    maps[0, 0] = gaussian(0.7, 40.3)      # maximum on the border column: no room for the stencil
    maps[0, 1] = gaussian(30.2, H - 1.6)  # one row from the bottom
    # channel 2 is all zeros: argmax's (0, 0) rule
    coords, _ = heatmap_argmax(maps)
    torch.testing.assert_close(dark_refine(maps, coords, 17, guard=False), coords)
    # with the guard, joints DARK cannot refine get the default decoder's quarter shift
    torch.testing.assert_close(dark_refine(maps, coords, 17), quarter_offset(maps, coords))


def test_dark_guard_keeps_a_newton_step_from_leaving_the_maximums_pixel():
    """A one-pixel spike on a Gaussian's flank holds the argmax; after the modulation the log-map there is the flank,
    not a top, and DARK as published steps most of the way to the Gaussian's centre."""
    maps = gaussian(30.0, 40.0, 2.0)
    maps[40, 34] = 1.2
    maps = maps.reshape(1, 1, H, W)
    coords, _ = heatmap_argmax(maps)
    published = dark_refine(maps, coords, 11, guard=False)
    guarded = dark_refine(maps, coords, 11)
    assert (published - coords).abs().max() > 1.0  # the unguarded step leaves the pixel
    assert (guarded - coords).abs().max() <= 1.0


def test_flip_test_and_dark_compose():
    """The flip-test fusion happens before decoding, so DARK refines the fused map's maximum."""
    sigma = 3.0
    maps, centres = _gaussian_batch(17, sigma, seed=1)
    # a perfect model: the mirrored crop's output is the mirrored targets
    mirrored = torch.stack([gaussian(W - 1 - float(x), float(y), sigma) for x, y in centres])
    mirrored = mirrored[torch.as_tensor(POSETRACK17.flip_permutation())][None]
    center, scale = torch.tensor([[W / 2 * 4.0, H / 2 * 4.0]]), torch.tensor([[W * 4.0 / 200, H * 4.0 / 200]])
    fused = fuse_flip_test(maps, mirrored, shift=False)
    torch.testing.assert_close(fused, maps, atol=1e-5, rtol=0)
    coords, _ = decode_heatmaps(maps, center, scale, flipped_heatmaps=mirrored, shift_flipped=False, method="dark")
    expected = heatmap_to_image(centres[None], center, scale, (W, H))
    assert (coords - expected).norm(dim=-1).max() < 0.1  # image pixels (4 per heatmap cell)
    argmax_coords, _ = decode_heatmaps(maps, center, scale, flipped_heatmaps=mirrored, shift_flipped=False)
    assert (argmax_coords - expected).norm(dim=-1).mean() > 5 * (coords - expected).norm(dim=-1).mean()


def test_unknown_decode_method_is_an_error():
    with pytest.raises(ValueError, match="decode method 'soft'"):
        decode_heatmaps(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2), torch.ones(1, 2), method="soft")
