"""Move cached stage features from one person crop into another: the ``warp`` inference mode's resampling.

In the paper every frame of key frame t's clip is cropped with t's box. The ``warp`` mode encodes each
person-frame once, in its own box's crop, and builds a supporting frame's features for key frame t by resampling
that frame's cached features at the points where t's crop lies in it. Crops are axis-aligned boxes with no rotation
at inference, so the map between two crops is a scale and a shift per axis, the same at every stage (all stages are
at the heatmap resolution ``[h, w]``, ``tdmi.models.hrnet``).

Coordinates: feature pixel ``(i, j)`` of a crop is the point the decoder reads it as, ``get_affine_transform(center,
scale, 0, (w, h), inv=True) @ (j, i, 1)`` in image pixels (``tdmi.evaluation.decode``). Bilinear sampling with
``align_corners=True`` reads feature pixels at exactly those integer coordinates. Points of the key crop that fall
outside the supporting crop take the nearest border feature (``padding_mode='border'``): a zero there would be read
by the TDE as a large feature difference, i.e. as motion.

What it approximates: a CNN feature of the same image point seen in a slightly shifted or scaled crop. The
difference is largest near the crop border (where the receptive fields see zero padding) and grows with the scale
ratio; ``benchmarks/infer_speed.py`` measures its mAP cost against the paper's crops.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tdmi.data.transforms import get_affine_transform
from tdmi.inference.tracking import Track

Crop = tuple[np.ndarray, np.ndarray]
"""(center [2], scale [2]) of a crop box, as ``box_to_center_scale`` gives them."""


def own_crops(track: Track, key: int, slots: Sequence[int], crops: dict, center_scale: Callable[[np.ndarray], Crop]
              ) -> list[tuple]:
    """The crop of each slot of key frame ``key``'s clip: the track's own (paper) crop of that slot's frame, so that
    each frame is encoded once and shared by every key frame whose clip holds it.

    Args:
        track: the clip's person.
        slots: the clip's buffer positions (padded slots repeat ``key``).
        crops: crop name -> :data:`Crop`; the new crops are added to it.
        center_scale: box ``[4]`` xywh -> its crop (the pipeline's aspect fix and enlargement).

    Returns:
        One crop name per slot. A frame with a box: ``("key", track_id, position)``. In a tracking gap, the crop of
        the box interpolated across it; before the track's first box or after its last, the nearest box's:
        ``("near", track_id, position, *box)``, named by the box too because a later frame of a live track can
        change the nearest box.
    """
    sources = []
    for position in slots:
        if position == key:
            sources.append(("key", track.track_id, key))
            continue
        box = track.box_at(position)
        if box is not None and position in track.boxes:
            crop = ("key", track.track_id, position)
        else:
            if box is None:
                box = track.boxes[min(track.boxes, key=lambda frame: abs(frame - position))]
            crop = ("near", track.track_id, position, *np.round(box, 3).tolist())
        if crop not in crops:
            crops[crop] = center_scale(box)
        sources.append(crop)
    return sources


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])


def crop_to_crop(target: Crop, source: Crop, feature_size: tuple[int, int]) -> np.ndarray:
    """3x3 matrix taking feature pixels ``(x, y, 1)`` of the ``target`` crop to feature pixels of ``source``.

    ``feature_size`` is ``(w, h)``.
    """
    to_image = _homogeneous(get_affine_transform(target[0], target[1], 0.0, feature_size, inv=True))
    to_source = _homogeneous(get_affine_transform(source[0], source[1], 0.0, feature_size))
    return to_source @ to_image


def sampling_grids(pairs: Sequence[tuple[Crop, Crop]], feature_size: tuple[int, int],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """grid_sample grids ``[N, h, w, 2]`` (normalised x, y) for N (target crop, source crop) pairs.

    Sampling a source crop's features ``[N, C, h, w]`` with them gives the features on the target crop's pixels.
    """
    w, h = feature_size
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])  # [3, h*w]
    grids = np.empty((len(pairs), h, w, 2), dtype=np.float32)
    # align_corners=True: pixel 0 -> -1, pixel size-1 -> +1 (on a 1-pixel axis every value reads pixel 0)
    norm = np.array([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    for n, (target, source) in enumerate(pairs):
        mapped = (crop_to_crop(target, source, feature_size) @ points)[:2]  # [2, h*w] source pixels
        grids[n] = (mapped.T * norm - 1.0).reshape(h, w, 2)
    return torch.from_numpy(grids).to(device)


def warp_features(features: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Resample ``features [N, C, h, w]`` of the source crops onto the target crops: ``[N, C, h, w]``.

    Sampled in at least float32 (a half-precision grid would misplace points by a tenth of a pixel).
    """
    dtype = torch.promote_types(features.dtype, torch.float32)
    warped = F.grid_sample(features.to(dtype), grids.to(features.device, dtype), mode="bilinear",
                           padding_mode="border", align_corners=True)
    return warped.to(features.dtype)


def resample_slots(slot_features: list[list[tuple[torch.Tensor, ...]]],
                   moved: dict[tuple[int, int], tuple[Crop, Crop]]) -> None:
    """Resample clip slots in place, all of them in one ``grid_sample``.

    Args:
        slot_features: per clip, per slot, the stage features ``(C_j, h, w)`` tensors of that slot.
        moved: ``(clip, slot) -> (target crop, source crop)`` for each slot whose features were computed in the
            source crop and are wanted in the target (its clip's) crop.
    """
    if not moved:
        return
    first = slot_features[next(iter(moved))[0]][next(iter(moved))[1]]
    height, width = first[0].shape[-2:]
    if any(stage.shape[-2:] != (height, width) for stage in first):
        # HRNet's stage features share one resolution (docs/architecture.md); one grid per slot relies on it
        raise ValueError("warp mode needs every stage feature at one resolution, got "
                         f"{[tuple(stage.shape[-2:]) for stage in first]}; use --mode tube or exact")
    grids = sampling_grids(list(moved.values()), (int(width), int(height)), first[0].device)
    channels = [stage.shape[0] for stage in first]
    # the stages' channels side by side: the grids are the same at every stage
    warped = warp_features(torch.stack([torch.cat(slot_features[i][s]) for i, s in moved]), grids)
    for (i, s), features in zip(moved, warped):
        slot_features[i][s] = tuple(torch.split(features, channels))
