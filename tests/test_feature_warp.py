"""The ``warp`` inference mode: each person-frame encoded once in its own crop, supporting features resampled into
the key frame's crop (``tdmi.inference.feature_warp``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from pipeline_helpers import EncodeCounter, ListDetector, frames_with_people, moving_boxes, source_frames, tiny_model
from tdmi.data.transforms import box_to_center_scale
from tdmi.inference.feature_warp import crop_to_crop, sampling_grids, warp_features
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


def test_warped_support_features_equal_the_key_frame_crops_own():
    _, cfg = tiny_model(delta=2)
    size = (240, 160)
    # a person walking right and growing: every crop differs in centre and scale, all inside the frame
    boxes = [np.array([[90 + 2 * t, 40 + t, 30 + t, 50 + t]], np.float32) for t in range(6)]
    images = _ramp_frames(len(boxes), size)
    recorded = {}
    for mode in ("exact", "warp"):
        model = CoordinateModel(cfg.model.num_joints)
        _, stats, _ = run(model, cfg, images, boxes, mode=mode)
        recorded[mode] = (model.clips, stats)
    (exact, _), (warp, stats) = recorded["exact"], recorded["warp"]
    assert stats.encoded_crops == len(images) and stats.warped_slots > 0
    assert len(exact) == len(warp) == len(images)
    # Per clip: [T, 3, h, w] per stage; the cv2 crops round to uint8 levels, i.e. 1/(255 * 0.229) ~ 0.02 here.
    # The crops move by under 4 image px (1 feature px) over a clip: 2 feature px from the border the key crop's
    # points lie inside every supporting crop (nearer the border the supporting crop's border value is repeated).
    for exact_clip, warp_clip in zip(exact, warp):
        for a, b in zip(exact_clip, warp_clip):
            torch.testing.assert_close(b[..., 2:-2, 2:-2], a[..., 2:-2, 2:-2], atol=0.05, rtol=0)
            assert (b - a).abs().max() < 1.0


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


@pytest.mark.parametrize("online", [False, True])
def test_warp_mode_runs_online_and_offline_with_the_same_key_crops(online):
    model, cfg = tiny_model(delta=2)
    boxes = moving_boxes(6, people=1, size=SIZE)
    images = frames_with_people(boxes, SIZE)
    results, stats, _ = run(model, cfg, images, boxes, mode="warp", online=online)
    assert stats.encoded_crops == len(images)
    center, scale = box_to_center_scale(boxes[4][0], 1.0, cfg.data.bbox_enlarge)
    assert results[4].people[0].keypoints.shape == (17, 2)
    # the keypoints of each frame lie in (or near) that frame's own crop, not a shared one
    half = scale[0] * 200 / 2
    assert (np.abs(results[4].people[0].keypoints - center) <= half * 1.01).all()
