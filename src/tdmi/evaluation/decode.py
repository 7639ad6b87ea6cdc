"""Heatmaps -> image keypoints, exactly as the reference decoders (DCPose / FAMI-Pose / HRNet ``get_final_preds``).

Facts: ``shared/docs/posetrack-facts.md`` section 6 (decoding) and section 10 ("Decoding must keep ..."). The published
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
        raise ValueError(f"flip permutation has {perm.numel()} entries, heatmaps have {flipped_heatmaps.shape[1]} joints")
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
        quarter_shift: the quarter-pixel refinement (always on in DCPose/FAMI).

    Returns:
        coords ``[B, J, 2]`` (x, y) image pixels and scores ``[B, J]`` = raw heatmap maxima.
    """
    if flipped_heatmaps is not None:
        heatmaps = fuse_flip_test(heatmaps, flipped_heatmaps, flip_permutation, shift=shift_flipped)
    height, width = heatmaps.shape[-2:]
    coords, maxvals = heatmap_argmax(heatmaps)
    if quarter_shift:
        coords = quarter_offset(heatmaps, coords)
    return heatmap_to_image(coords, center, scale, (width, height), rotation=rotation), maxvals
