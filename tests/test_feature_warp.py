"""The ``warp`` inference mode: each person-frame encoded once in its own crop, supporting features resampled into
the key frame's crop (``tdmi.inference.feature_warp``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from pipeline_helpers import EncodeCounter, ListDetector, frames_with_people, moving_boxes, source_frames, tiny_model
from tdmi.data.transforms import box_to_center_scale, get_affine_transform
from tdmi.inference.feature_warp import crop_to_crop, resample_slots, sampling_grids, warp_features
from tdmi.inference.pipeline import PipelineOptions, VideoPoseEstimator

SIZE = (160, 120)


def run(model, cfg, images, boxes, **options):
    results = {}
    counter = EncodeCounter(model)
    try:
        estimator = VideoPoseEstimator(model, cfg, PipelineOptions(keep_heatmaps=True, **options))
        stats = estimator.run(source_frames(images), ListDetector(boxes),
                              lambda frame, _: results.setdefault(frame.position, frame))
    finally:
        del model.encode
    return results, stats, counter.crops


# ------------------------------------------------------------------------------------------------ the geometry


def test_a_shifted_crop_reads_the_same_features_shifted():
    # Crops 200 px wide mapped onto 20 feature pixels: 10 image px per feature px. A target crop 30 image px to
    # the right of the source starts 3 feature columns further right in it.
    source = (np.array([100.0, 80.0]), np.array([1.0, 1.0]))
    target = (np.array([130.0, 80.0]), np.array([1.0, 1.0]))
    matrix = crop_to_crop(target, source, (20, 20))
    np.testing.assert_allclose(matrix[:2] @ [0, 0, 1], [3.0, 0.0], atol=1e-4)
    features = torch.randn(1, 5, 20, 20, dtype=torch.float64)
    warped = warp_features(features, sampling_grids([(target, source)], (20, 20)).double())
    torch.testing.assert_close(warped[..., :17], features[..., 3:], atol=1e-5, rtol=0)
    # beyond the source crop's edge the border column repeats (no zeros that would read as motion)
    torch.testing.assert_close(warped[..., 17:], features[..., 19:].expand(-1, -1, -1, 3), atol=1e-5, rtol=0)


def test_a_crop_warped_onto_itself_is_unchanged_and_a_larger_crop_maps_inside():
    crop = (np.array([50.0, 60.0]), np.array([0.7, 0.7]))
    features = torch.randn(2, 3, 16, 12)
    same = warp_features(features, sampling_grids([(crop, crop)] * 2, (12, 16)))
    torch.testing.assert_close(same, features, atol=1e-5, rtol=0)
    # A source crop twice the target's size around the same centre: the target fills its middle half, around the
    # crop centre, which is feature pixel (w/2, h/2) = (6, 8) in both (get_affine_transform's convention).
    larger = (crop[0], crop[1] * 2)
    corners = crop_to_crop(crop, larger, (12, 16)) @ np.array([[0, 11], [0, 15], [1, 1]], dtype=np.float64)
    np.testing.assert_allclose(corners[:2].T, [[3.0, 4.0], [8.5, 11.5]], atol=1e-4)


# ----------------------------------------------------------------------------------------- through the pipeline


class CoordinateModel(torch.nn.Module):
    """Stands in for TDMI: ``encode`` keeps every 4th input pixel (input pixel 4j is heatmap pixel j, the decoder's
    convention), ``decode`` records the clips it is given and returns empty heatmaps. On frames whose pixel values
    are linear in the image coordinates, a supporting frame's features are then linear functions of the image point,
    which bilinear resampling reproduces exactly: warped features must equal the key frame crop's own."""

    def __init__(self, joints: int):
        super().__init__()
        self.joints = joints
        self.clips: list[list[torch.Tensor]] = []

    def encode(self, frames: torch.Tensor):
        return tuple(frames[:, :, ::4, ::4].clone() for _ in range(4))

    def decode(self, stage_features):
        self.clips.extend([[stage[i] for stage in stage_features] for i in range(stage_features[0].shape[0])])
        b, _, _, h, w = stage_features[0].shape
        return SimpleNamespace(heatmaps=torch.zeros(b, self.joints, h, w))


def _ramp_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs, ys, 255 - ys], axis=-1).astype(np.uint8)  # exact integers on 240 x 160
    return [image.copy() for _ in range(count)]


def _inside_support(key_crop, support_crop, input_size: tuple[int, int], feature_size: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` bool: the key crop's feature pixels whose image point lies inside the support crop's feature grid
    (where bilinear resampling of a linear ramp is exact). Built from the crop affines alone, not feature_warp."""
    (width, height), (w, h) = input_size, feature_size
    ys, xs = np.mgrid[0:h, 0:w]
    points = np.stack([4.0 * xs.ravel(), 4.0 * ys.ravel(), np.ones(h * w)])  # feature pixel j = input pixel 4j
    to_image = get_affine_transform(*key_crop, 0.0, (width, height), inv=True)
    to_support = get_affine_transform(*support_crop, 0.0, (width, height))
    u, v = to_support @ np.vstack([to_image @ points, np.ones(h * w)]) / 4.0
    return ((u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)).reshape(h, w)


@pytest.mark.parametrize("window", [12, 3])
def test_warped_support_features_equal_the_key_frame_crops_own(window):
    _, cfg = tiny_model(delta=2)
    size = (240, 160)
    # Two people walking and growing fast (their crops change by 6-12% in scale and 3-5 image px in centre per
    # frame), all crops inside the frame; window 3 splits the run into chunks that hand features over.
    boxes = [np.array([[70 + 3 * t, 30 + 2 * t, 30 + 4 * t, 50 + 6 * t],
                       [160 - t, 40 - t, 24 + 2 * t, 40 + 4 * t]], np.float32) for t in range(7)]
    images = _ramp_frames(len(boxes), size)
    recorded = {}
    for mode in ("exact", "warp"):
        model = CoordinateModel(cfg.model.num_joints)
        _, stats, _ = run(model, cfg, images, boxes, mode=mode, window=window)
        recorded[mode] = (model.clips, stats)
    (exact, _), (warp, stats) = recorded["exact"], recorded["warp"]
    assert stats.encoded_crops == 2 * len(images) and stats.warped_slots > 0
    assert len(exact) == len(warp) == 2 * len(images)
    input_size = (cfg.model.input_size[0], cfg.model.input_size[1])
    delta = cfg.model.delta
    # the clips come person by person within each chunk, in the same order in both modes
    order = [(key, person) for start in range(0, len(images), window)
             for person in range(2) for key in range(start, min(start + window, len(images)))]
    checked = 0
    for (key, person), exact_clip, warp_clip in zip(order, exact, warp):
        height, width = exact_clip[0].shape[-2:]
        key_crop = box_to_center_scale(boxes[key][person], input_size[0] / input_size[1], cfg.data.bbox_enlarge)
        for slot in range(2 * delta + 1):
            position = min(max(key - delta + slot, 0), len(images) - 1)
            if position == key - delta + slot:
                support = box_to_center_scale(boxes[position][person], input_size[0] / input_size[1],
                                              cfg.data.bbox_enlarge)
            else:  # a padded slot repeats the key frame
                support = key_crop
            inside = torch.from_numpy(_inside_support(key_crop, support, input_size, (int(width), int(height))))
            checked += int(inside.sum())
            for a, b in zip(exact_clip, warp_clip):
                # uint8 crops: each side rounds by up to half a level, 0.5 / (255 * 0.224) ~ 0.009
                torch.testing.assert_close(b[slot][:, inside], a[slot][:, inside], atol=0.025, rtol=0)
    assert checked > 0.6 * len(exact) * (2 * delta + 1) * int(height) * int(width)


def test_warp_mode_encodes_each_track_frame_once_even_across_gaps():
    model, cfg = tiny_model(delta=2)
    boxes = moving_boxes(7, people=2, size=SIZE)
    images = frames_with_people(boxes, SIZE)
    _, stats, crops = run(model, cfg, images, boxes, mode="warp")
    assert stats.encoded_crops == len(crops) == 2 * len(images) == stats.person_frames
    assert len(set(crops)) == len(crops)
    # Person 0 missing in frame 3 (the tracker bridges the gap): frames 1, 2, 4 and 5 read frame 3 in the crop of
    # the interpolated box, encoded once. Person 1 first appears in frame 2: frames 0 and 1 are read in the crop
    # of its first box, also once.
    gapped = [b if t != 3 else b[1:] for t, b in enumerate(boxes)]
    gapped[0], gapped[1] = gapped[0][:1], gapped[1][:1]
    _, gap_stats, gap_crops = run(model, cfg, images, gapped, mode="warp")
    assert gap_stats.person_frames == 2 * len(images) - 3
    assert gap_stats.encoded_crops == len(set(gap_crops)) == 2 * len(images)
    # Chunks of 3 key frames: the next chunk reuses the features of the last frames, nothing is encoded twice.
    _, chunked, chunked_crops = run(model, cfg, images, boxes, mode="warp", window=3)
    assert chunked.encoded_crops == len(set(chunked_crops)) == 2 * len(images)


def test_warp_mode_equals_exact_mode_for_a_still_person():
    model, cfg = tiny_model(delta=2)
    still = [np.array([[40, 20, 30, 80]], np.float32)] * 6
    images = frames_with_people(still, SIZE)
    warp, stats, _ = run(model, cfg, images, still, mode="warp")
    exact, _, _ = run(model, cfg, images, still, mode="exact")
    assert stats.warped_slots == 0 and stats.encoded_crops == len(images)
    for position in range(len(images)):
        expected = exact[position].people[0].heatmaps
        # equal up to float rounding (other batches), which the deep random model amplifies (test_pipeline)
        torch.testing.assert_close(warp[position].people[0].heatmaps, expected, rtol=1e-3,
                                   atol=1e-3 * float(expected.abs().max()))


def test_online_warp_equals_offline_warp_of_the_video_cut_after_the_frame_across_a_gap():
    model, cfg = tiny_model(delta=2)
    boxes = moving_boxes(12, people=1, size=SIZE)
    images = frames_with_people(boxes, SIZE)
    gapped = [b if t not in (4, 5, 6) else b[:0] for t, b in enumerate(boxes)]  # the tracker bridges the gap
    online, stats, crops = run(model, cfg, images, gapped, mode="warp", online=True)
    # Frame 4 is in no online clip (keys 0-3 read up to themselves, key 7 from frame 5 on); frames 5 and 6 are read
    # in the crop of the box interpolated between frames 3 and 7 by keys 7 and 8 alike, encoded once: the box
    # before the gap must outlive the frames the pipeline releases.
    assert stats.person_frames == 9
    assert stats.encoded_crops == len(set(crops)) == 11
    for key in (3, 7, 8, 11):
        cut, _, _ = run(model, cfg, images[:key + 1], gapped[:key + 1], mode="warp")
        expected = cut[key].people[0].heatmaps
        torch.testing.assert_close(online[key].people[0].heatmaps, expected, rtol=1e-3,
                                   atol=1e-3 * float(expected.abs().max()))
    # the keypoints of each frame lie in (or near) that frame's own crop, not a shared one
    center, scale = box_to_center_scale(boxes[8][0], 1.0, cfg.data.bbox_enlarge)
    assert (np.abs(online[8].people[0].keypoints - center) <= scale[0] * 200 / 2 * 1.01).all()


def test_resampling_stages_of_different_resolutions_is_refused_clearly():
    crop = (np.array([50.0, 60.0]), np.array([0.7, 0.7]))
    other = (np.array([55.0, 60.0]), np.array([0.7, 0.7]))
    slots = [[(torch.zeros(4, 16, 12), torch.zeros(8, 8, 6))]]
    with pytest.raises(ValueError, match="one resolution"):
        resample_slots(slots, {(0, 0): (crop, other)})
