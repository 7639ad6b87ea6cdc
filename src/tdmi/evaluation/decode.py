"""Heatmaps -> image keypoints, exactly as the reference decoders (DCPose / FAMI-Pose / HRNet ``get_final_preds``).

Facts: ``docs/facts/posetrack-facts.md`` section 6 (decoding) and section 10 ("Decoding must keep ..."). The published
numbers of DCPose and FAMI-Pose (and so, presumably, TDMI) were produced with this decoder, so the default path keeps
every detail:

1. per joint, flat argmax over the ``[h, w]`` map, the FIRST maximum on ties; ``x = idx % w``, ``y = idx // w``;
   confidence = the raw maximum. A joint whose maximum is ``<= 0`` gets heatmap position (0, 0) (the reference masks
   the coordinate, not the score) and is then mapped like any other point, i.e. to the box corner, not to image (0, 0);
2. quarter-pixel refinement, only when ``1 < px < w-1`` AND ``1 < py < h-1`` (strict, both axes at once; mmpose's
   per-axis test differs): ``x += 0.25 * sign(hm[py, px+1] - hm[py, px-1])`` and likewise for y (sign(0) = 0);
3. inverse of the standard (non-UDP) crop affine without half-pixel correction:
   ``p_img = center + (p_hm - (w/2, h/2)) * (200 * scale_x / w)``. Only ``scale_x`` is used: the crop is isotropic.
   With a ``rotation`` (degrees, the same sign convention as the crop affine) the offset is rotated back first;
   the default (``rotation=None``) is the reference's rotation-free path.

Optional DARK decoding (``method="dark"``; Zhang et al., CVPR 2020, "Distribution-Aware Coordinate Representation
for Human Pose Estimation"; the authors' later code decodes with it): the argmax of step 1 is refined by one Newton
step on the logarithm of the Gaussian-modulated heatmap instead of the quarter shift, see :func:`dark_refine`.
The confidence stays the raw maximum of step 1.

Optional HRNet-style flip test (off by default; DCPose/FAMI never use it): :func:`fuse_flip_test` flips the heatmaps
of the mirrored crop back along the width, swaps left/right channels with ``POSETRACK17.flip_permutation()``,
shifts them one pixel right (column ``i`` takes column ``i-1``) and averages with the normal output.

Shapes: heatmaps ``[B, J, h, w]``, center ``[B, 2]`` and scale ``[B, 2]`` (pixel_std 200 units, as produced by the
box -> (center, scale) rule of facts section 4.1), rotation ``[B]`` degrees -> coords ``[B, J, 2]`` (x, y image
pixels), scores ``[B, J]``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from tdmi.keypoints import POSETRACK17

#: Box size unit of the (center, scale) convention: ``scale * PIXEL_STD`` is the box size in pixels.
PIXEL_STD = 200.0


def heatmap_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First-maximum argmax of each map.

    Args:
        heatmaps: ``[B, J, h, w]``.

    Returns:
        coords ``[B, J, 2]`` float (x, y) in heatmap pixels, set to (0, 0) where the maximum is ``<= 0``;
        maxvals ``[B, J]`` the raw maxima (kept even when ``<= 0``).
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be [B, J, h, w], got shape {tuple(heatmaps.shape)}")
    batch, joints, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch, joints, height * width)
    # torch.max / argmax return the first maximal index, the same tie rule as numpy's argmax in the reference.
    maxvals, flat_index = flat.max(dim=2)
    out_dtype = torch.promote_types(heatmaps.dtype, torch.float32)
    x = (flat_index % width).to(out_dtype)
    y = torch.div(flat_index, width, rounding_mode="floor").to(out_dtype)
    coords = torch.stack((x, y), dim=2)
    coords = coords * (maxvals > 0).unsqueeze(2).to(out_dtype)
    return coords, maxvals


def quarter_offset(heatmaps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The reference's quarter-pixel shift towards the higher neighbour.

    Args:
        heatmaps: ``[B, J, h, w]``.
        coords: ``[B, J, 2]`` integer-valued argmax positions from :func:`heatmap_argmax`.

    Returns:
        refined coords ``[B, J, 2]``. Only joints with ``1 < px < w-1`` AND ``1 < py < h-1`` move (strict test on
        both axes together, as in DCPose/FAMI/HRNet ``get_final_preds``).
    """
    batch, joints, height, width = heatmaps.shape
    px = torch.floor(coords[..., 0] + 0.5).long()
    py = torch.floor(coords[..., 1] + 0.5).long()
    interior = (px > 1) & (px < width - 1) & (py > 1) & (py < height - 1)
    # Clamp only so that the gathers stay in range; non-interior joints are masked out below.
    pxc = px.clamp(1, max(width - 2, 1))
    pyc = py.clamp(1, max(height - 2, 1))
    flat = heatmaps.reshape(batch, joints, height * width)

    def value_at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        index = (yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)).unsqueeze(2)
        return flat.gather(2, index).squeeze(2)

    dx = value_at(pyc, pxc + 1) - value_at(pyc, pxc - 1)
    dy = value_at(pyc + 1, pxc) - value_at(pyc - 1, pxc)
    shift = torch.stack((torch.sign(dx), torch.sign(dy)), dim=2).to(coords.dtype) * 0.25
    return coords + shift * interior.unsqueeze(2).to(coords.dtype)


DECODE_METHODS = ("argmax", "dark", "dark_published")


def dark_kernel_size(sigma: float) -> int:
    """Width of DARK's modulation kernel for target heatmaps of Gaussian ``sigma``: 6 sigma - 1, made odd.

    This gives the kernels of the DARK paper's two standard settings (11 at sigma 2 / 64x48, 17 at sigma 3 / 96x72).
    """
    size = max(3, int(round(6 * sigma - 1)))
    return size if size % 2 else size + 1


def gaussian_modulation(heatmaps: Tensor, kernel_size: int) -> Tensor:
    """DARK's distribution modulation: blur each map with a Gaussian, then rescale it to its original maximum.

    The blur uses OpenCV's sigma for a ``kernel_size`` kernel (``0.3 * ((k - 1) / 2 - 1) + 0.8``) and zeros outside
    the map (a border only spreads mass inward). Shapes: ``[B, J, h, w] -> [B, J, h, w]`` float32.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"the DARK kernel size must be odd and positive, got {kernel_size}")
    batch, joints, height, width = heatmaps.shape
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    radius = kernel_size // 2
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=heatmaps.device)
    kernel_1d = torch.exp(-taps.square() / (2 * sigma * sigma))
    kernel_1d = kernel_1d / kernel_1d.sum()
    maps = heatmaps.float().reshape(batch * joints, 1, height, width)
    # separable: along x, then along y
    blurred = torch.nn.functional.conv2d(maps, kernel_1d.view(1, 1, 1, -1), padding=(0, radius))
    blurred = torch.nn.functional.conv2d(blurred, kernel_1d.view(1, 1, -1, 1), padding=(radius, 0))
    original_max = maps.amax(dim=(2, 3), keepdim=True)
    blurred_max = blurred.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(blurred_max > 0, original_max / blurred_max.clamp_min(1e-30), torch.ones_like(blurred_max))
    return (blurred * scale).reshape(batch, joints, height, width)


def dark_refine(heatmaps: Tensor, coords: Tensor, kernel_size: int, guard: bool = True) -> Tensor:
    """Sub-pixel refinement of argmax positions by DARK's second-order Taylor expansion.

    The modulated map is clamped to ``>= 1e-10`` and its logarithm taken: for a Gaussian heatmap the logarithm is a
    quadratic, so one Newton step ``x - H^-1 g`` from the integer maximum lands on the centre. Gradient ``g`` and
    Hessian ``H`` are central differences (second derivatives over two-pixel spans). A joint moves only when the
    stencil fits (``1 < px < w - 2`` and ``1 < py < h - 2``) and ``det H != 0`` (DARK's rules).

    ``guard`` (ours, on by default) also requires what the expansion assumes: that the argmax is a maximum of the
    log-map (``H`` negative definite) and that the step stays within one heatmap pixel per axis (a Gaussian's centre
    is within half a pixel of its argmax). Elsewhere, on flat, clipped or multimodal maps, a Newton step on the
    clamped logarithm can throw a joint several pixels away (measured on the shipped W8 SynthTrack models: 5-12% of
    joints moved more than a pixel, some by 4-7), and such joints get the quarter-pixel shift of the default decoder
    instead. ``guard=False`` is DARK exactly as published.

    Args:
        heatmaps: ``[B, J, h, w]`` (after any flip-test fusion).
        coords: ``[B, J, 2]`` integer-valued argmax positions from :func:`heatmap_argmax`.
        kernel_size: the modulation kernel (:func:`dark_kernel_size`).
        guard: the safeguard above.

    Returns:
        refined coords ``[B, J, 2]`` in ``coords.dtype``.
    """
    batch, joints, height, width = heatmaps.shape
    log_maps = gaussian_modulation(heatmaps, kernel_size).clamp_min(1e-10).log()
    flat = log_maps.reshape(batch, joints, height * width)
    px = torch.floor(coords[..., 0] + 0.5).long()
    py = torch.floor(coords[..., 1] + 0.5).long()
    inside = (px > 1) & (px < width - 2) & (py > 1) & (py < height - 2)

    def at(dy: int, dx: int) -> Tensor:
        index = ((py + dy).clamp(0, height - 1) * width + (px + dx).clamp(0, width - 1)).unsqueeze(2)
        return flat.gather(2, index).squeeze(2).double()

    centre = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    hyy = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    usable = inside & (det != 0)
    safe_det = torch.where(usable, det, torch.ones_like(det))
    # -H^-1 g with H^-1 = [[hyy, -hxy], [-hxy, hxx]] / det
    step_x = -(hyy * gx - hxy * gy) / safe_det
    step_y = -(hxx * gy - hxy * gx) / safe_det
    step = torch.stack((step_x, step_y), dim=2)
    if not guard:
        return (coords.double() + step * usable.unsqueeze(2)).to(coords.dtype)
    trusted = usable & (hxx < 0) & (det > 0) & (step.abs() <= 1.0).all(dim=2)
    fallback = quarter_offset(heatmaps, coords).double()
    refined = torch.where(trusted.unsqueeze(2), coords.double() + step, fallback)
    return refined.to(coords.dtype)


def heatmap_to_image(
    coords: torch.Tensor,
    center: torch.Tensor,
    scale: torch.Tensor,
    heatmap_size: tuple[int, int],
    rotation: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Map heatmap positions back to the image with the inverse of the standard crop affine.

    Args:
        coords: ``[B, J, 2]`` heatmap (x, y).
        center: ``[B, 2]`` box centre in image pixels.
        scale: ``[B, 2]`` box size / 200; only ``scale[:, 0]`` is used (isotropic crop).
        heatmap_size: ``(w, h)`` of the heatmaps.
        rotation: optional ``[B]`` crop rotation in degrees (same convention as the crop affine of facts 5.2).

    Returns:
        ``[B, J, 2]`` image (x, y), computed in float64 and returned in ``coords.dtype`` (at least float32).
    """
    width, height = heatmap_size
    out_dtype = torch.promote_types(coords.dtype, torch.float32)
    c = torch.as_tensor(center, dtype=torch.float64, device=coords.device).reshape(-1, 1, 2)
    s = torch.as_tensor(scale, dtype=torch.float64, device=coords.device).reshape(-1, 2)
    pixels_per_cell = (s[:, 0] * PIXEL_STD / width).reshape(-1, 1, 1)
    half = torch.tensor([width * 0.5, height * 0.5], dtype=torch.float64, device=coords.device)
    offset = (coords.to(torch.float64) - half) * pixels_per_cell
    if rotation is not None:
        # The crop maps the rotated box direction R(r)(0, -1) to the crop's up axis; undo it with R(r).
        r = torch.as_tensor(rotation, dtype=torch.float64, device=coords.device).reshape(-1, 1) * (math.pi / 180.0)
        cos, sin = torch.cos(r), torch.sin(r)
        ox, oy = offset[..., 0], offset[..., 1]
        offset = torch.stack((ox * cos - oy * sin, ox * sin + oy * cos), dim=2)
    return (c + offset).to(out_dtype)


def flip_back(flipped_heatmaps: torch.Tensor, flip_permutation: Sequence[int], shift: bool = True) -> torch.Tensor:
    """Undo a horizontal flip on heatmaps predicted for a mirrored crop (HRNet flip test).

    Args:
        flipped_heatmaps: ``[B, J, h, w]`` output for the mirrored input.
        flip_permutation: ``perm`` with ``joints_flipped = joints[perm]`` (e.g. ``POSETRACK17.flip_permutation()``).
        shift: shift one pixel right (column ``i`` takes column ``i-1``; column 0 keeps its value), HRNet's
            ``SHIFT_HEATMAP`` that compensates the flip's half-pixel misalignment.

    Returns:
        ``[B, J, h, w]`` heatmaps aligned with the unflipped crop.
    """
    perm = torch.as_tensor(list(flip_permutation), dtype=torch.long, device=flipped_heatmaps.device)
    if perm.numel() != flipped_heatmaps.shape[1]:
        raise ValueError(f"flip permutation has {perm.numel()} entries, heatmaps have {flipped_heatmaps.shape[1]} "
                         "joints")
    restored = flipped_heatmaps.flip(3).index_select(1, perm)
    if shift:
        restored = torch.cat((restored[..., :1], restored[..., :-1]), dim=3)
    return restored


def fuse_flip_test(
    heatmaps: torch.Tensor,
    flipped_heatmaps: torch.Tensor,
    flip_permutation: Optional[Sequence[int]] = None,
    shift: bool = True,
) -> torch.Tensor:
    """Average the normal output with the flipped-back output of the mirrored crop. Both ``[B, J, h, w]``."""
    perm = POSETRACK17.flip_permutation() if flip_permutation is None else flip_permutation
    return (heatmaps + flip_back(flipped_heatmaps, perm, shift=shift)) * 0.5


def decode_heatmaps(
    heatmaps: torch.Tensor,
    center: torch.Tensor,
    scale: torch.Tensor,
    rotation: Optional[torch.Tensor] = None,
    flipped_heatmaps: Optional[torch.Tensor] = None,
    flip_permutation: Optional[Sequence[int]] = None,
    shift_flipped: bool = True,
    quarter_shift: bool = True,
    method: str = "argmax",
    dark_sigma: float = 3.0,
    dark_guard: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch of heatmaps to image keypoints and confidences (the reference ``get_final_preds``).

    Args:
        heatmaps: ``[B, J, h, w]`` raw (un-normalised) model output.
        center: ``[B, 2]`` box centres (image pixels).
        scale: ``[B, 2]`` box scales (size / 200, already padded and aspect-fixed).
        rotation: optional ``[B]`` degrees; None (default) is the reference's rotation-free inverse.
        flipped_heatmaps: optional ``[B, J, h, w]`` output for the mirrored crops; when given, the flip test is on.
        flip_permutation: channel permutation for the flip test (default ``POSETRACK17.flip_permutation()``).
        shift_flipped: HRNet's one-pixel shift of the flipped-back maps.
        quarter_shift: the quarter-pixel refinement (always on in DCPose/FAMI; ``method="argmax"`` only).
        method: ``"argmax"`` (the reference decoder above), ``"dark"`` (:func:`dark_refine` with its guard in place
            of the quarter shift) or ``"dark_published"`` (DARK without the guard).
        dark_sigma: sigma of the training targets (``data.sigma``), which sets DARK's modulation kernel.
        dark_guard: :func:`dark_refine`'s safeguard (False: DARK exactly as published).

    Returns:
        coords ``[B, J, 2]`` (x, y) image pixels and scores ``[B, J]`` = raw heatmap maxima.
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"decode method {method!r}; choose one of {', '.join(DECODE_METHODS)}")
    if flipped_heatmaps is not None:
        heatmaps = fuse_flip_test(heatmaps, flipped_heatmaps, flip_permutation, shift=shift_flipped)
    height, width = heatmaps.shape[-2:]
    coords, maxvals = heatmap_argmax(heatmaps)
    if method in ("dark", "dark_published"):
        coords = dark_refine(heatmaps, coords, dark_kernel_size(dark_sigma), guard=dark_guard and method == "dark")
    elif quarter_shift:
        coords = quarter_offset(heatmaps, coords)
    return heatmap_to_image(coords, center, scale, (width, height), rotation=rotation), maxvals
