"""Streaming inference (tdmi.inference.pipeline): feature reuse, equality with a direct forward, causality,
robustness, and ``tdmi infer`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import POSETRACK18_SAMPLE, require
from pipeline_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from pipeline_helpers import (EncodeCounter, ListDetector, frames_with_people, moving_boxes, source_frames,
                              tiny_model, write_frames)
from tdmi.cli import main
from tdmi.data.clips import window_offsets
from tdmi.data.transforms import box_to_center_scale, get_affine_transform, normalize_crops, warp_frames
from tdmi.errors import CheckpointError
from tdmi.errors import CommandError
from tdmi.evaluation.decode import decode_heatmaps
from tdmi.inference.infer_command import infer_source
from tdmi.inference.model_loading import LoadedModel, load_inference_model
from tdmi.inference.pipeline import PipelineOptions, VideoPoseEstimator

SIZE = (160, 120)
LOOSE = {"tube_scale_tolerance": 10.0, "tube_shift_tolerance": 10.0}
"""Tube tolerances that never split a window (the tests that count window edges)."""


def run(model, cfg, images, boxes, **options):
    """Run the estimator; returns ({position: FramePoses}, stats, emit order, fingerprints of the encoded crops)."""
    results, order = {}, []

    def emit(frame, image):
        results[frame.position] = frame
        order.append(frame.position)

    counter = EncodeCounter(model)
    try:
        estimator = VideoPoseEstimator(model, cfg, PipelineOptions(keep_heatmaps=True, **options))
        stats = estimator.run(source_frames(images), ListDetector(boxes), emit)
    finally:
        del model.encode
    return results, stats, order, counter.crops


@pytest.fixture(scope="module")
def scene():
    model, cfg = tiny_model(delta=2)
    boxes = moving_boxes(7, people=2, size=SIZE)
    return model, cfg, frames_with_people(boxes, SIZE), boxes


@pytest.fixture(scope="module")
def runs(scene):
    """Runs over the scene, each computed once per module: ``runs(mode=..., window=..., online=...)``."""
    cache = {}

    model, cfg, images, boxes = scene

    def get(frames=len(images), **options):
        key = (frames, *sorted(options.items()))
        if key not in cache:
            cache[key] = run(model, cfg, images[:frames], boxes[:frames], **options)
        return cache[key]

    return get


def assert_same_heatmaps(actual, expected):
    """Equal up to float rounding, which the deep random model amplifies to ~1e-3 of the largest value."""
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


def direct_heatmaps(model, cfg, images, box, key, nframes, delta, causal_padding=False):
    """The paper's clip for key frame ``key`` built by hand from the transforms, through ``model.forward``."""
    after = 0 if causal_padding else nframes - 1 - key
    offsets, _ = window_offsets(key, after, delta, "key_frame")
    input_size = tuple(cfg.model.input_size)
    center, scale = box_to_center_scale(box, input_size[0] / input_size[1], cfg.data.bbox_enlarge)
    matrix = get_affine_transform(center, scale, 0.0, input_size)
    clip = normalize_crops(warp_frames([images[key + o] for o in offsets], matrix, input_size))
    with torch.inference_mode():
        heatmaps = model(clip.unsqueeze(0)).heatmaps
    return heatmaps[0], center, scale


# ------------------------------------------------------------------------------------------------ feature reuse


def test_tube_mode_encodes_each_track_frame_once(scene, runs):
    _, _, images, _ = scene
    results, stats, _, crops = runs(mode="tube", window=len(images), **LOOSE)
    # One window spans the whole video: every (track, frame) crop goes through the backbone exactly once.
    assert len(crops) == 2 * len(images) == stats.encoded_crops
    assert len(set(crops)) == len(crops)
    assert stats.person_frames == 2 * len(images)
    assert {p.track_id for f in results.values() for p in f.people} == {0, 1}


def test_tube_windows_reencode_only_window_edges(scene, runs):
    _, cfg, images, _ = scene
    _, stats, _, crops = runs(mode="tube", window=3, **LOOSE)
    n, delta = len(images), cfg.model.delta
    # Windows [0,2], [3,5], [6,6]; each encodes its key frames plus up to delta frames per side, once per track.
    expected = sum(min(n - 1, b + delta) - max(0, a - delta) + 1 for a, b in ((0, 2), (3, 5), (6, 6))) * 2
    assert stats.encoded_crops == len(crops) == expected
    _, exact_stats, _, exact_crops = runs(mode="exact")
    assert stats.encoded_crops < exact_stats.encoded_crops == len(exact_crops)


def test_tube_windows_split_for_fast_movers_and_not_for_still_people(scene):
    model, cfg, images, _ = scene
    still = [np.array([[40, 20, 30, 80]], np.float32)] * len(images)
    fast = [np.array([[5 + 15 * t, 20, 30, 80]], np.float32) for t in range(len(images))]
    _, still_stats, _, _ = run(model, cfg, images, still, mode="tube", window=len(images))
    _, fast_stats, _, _ = run(model, cfg, images, fast, mode="tube", window=len(images))
    assert still_stats.encoded_crops == len(images)  # one window: every frame once
    # 15 px/frame is 20% of the 75 px crop: beyond the 10% shift tolerance, so windows split and edges re-encode.
    assert fast_stats.encoded_crops > len(images)


def test_a_person_too_fast_for_any_shared_crop_gets_the_paper_crop(scene):
    model, cfg, images, _ = scene
    fast = [np.array([[5 + 18 * t, 20, 30, 80]], np.float32) for t in range(len(images))]
    tube, _, _, _ = run(model, cfg, images, fast, mode="tube", window=len(images))
    exact, _, _, _ = run(model, cfg, images, fast, mode="exact")
    for position in range(len(images)):
        assert_same_heatmaps(tube[position].people[0].heatmaps, exact[position].people[0].heatmaps)


# --------------------------------------------------------------------------------------------- exact = direct


@pytest.mark.parametrize("key", [0, 3, 6])  # padded start, full clip, padded end
def test_exact_mode_equals_direct_forward_on_the_same_crops(scene, runs, key):
    model, cfg, images, boxes = scene
    results, _, _, _ = runs(mode="exact", window=4)
    person = results[key].people[1]
    expected, center, scale = direct_heatmaps(model, cfg, images, boxes[key][1], key, len(images), cfg.model.delta)
    assert_same_heatmaps(person.heatmaps, expected)
    coords, maxvals = decode_heatmaps(expected[None], torch.as_tensor(center)[None], torch.as_tensor(scale)[None])
    # Keypoints must agree wherever the heatmap maximum is not a near-tie that rounding could flip.
    top2 = expected.flatten(1).topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-2 * float(expected.abs().max())
    assert clear.sum() >= 8
    np.testing.assert_allclose(person.keypoints[clear.numpy()], coords[0][clear].numpy(), atol=1e-3)
    np.testing.assert_allclose(person.heatmap_scores, maxvals[0].numpy(), rtol=1e-3)


def test_naive_mode_equals_exact_mode(runs):
    exact, _, _, _ = runs(mode="exact")
    naive, stats, _, crops = runs(mode="naive")
    assert stats.encoded_crops == len(crops) == 5 * stats.person_frames
    for position, frame in exact.items():
        for a, b in zip(frame.people, naive[position].people):
            assert_same_heatmaps(a.heatmaps, b.heatmaps)


def test_bf16_autocast_reaches_the_model_and_keeps_the_heatmaps_float32(runs):
    exact, _, _, _ = runs(mode="exact")
    mixed, _, _, _ = runs(mode="exact", amp="bf16")
    changed = False
    for position, frame in exact.items():
        for a, b in zip(frame.people, mixed[position].people):
            assert b.heatmaps.dtype == torch.float32 and b.keypoints.dtype == np.float32
            torch.testing.assert_close(b.heatmaps, a.heatmaps, rtol=0.1, atol=0.05 * float(a.heatmaps.abs().max()))
            changed = changed or not torch.equal(a.heatmaps, b.heatmaps)
    assert changed  # the model did run in bf16
    with pytest.raises(CommandError, match="amp"):
        PipelineOptions(amp="fp8")


def test_tube_mode_differs_from_exact_when_people_move(runs):
    # The tube crop is the union over the window: a different (looser) crop, so different heatmaps.
    exact, _, _, _ = runs(mode="exact")
    tube, _, _, _ = runs(mode="tube", window=7, **LOOSE)
    # (At frame 3, the middle of the straight walk, both boxes have the same centre and size; frame 1 does not.)
    assert not torch.allclose(exact[1].people[0].heatmaps, tube[1].people[0].heatmaps, rtol=1e-2)


# ------------------------------------------------------------------------------------------------------ online


def test_online_never_reads_future_frames(scene):
    model, cfg, images, boxes = scene
    yielded = []

    def frames():
        for frame in source_frames(images[:4]):
            yielded.append(frame.index)
            yield frame

    seen_at_emit = {}
    estimator = VideoPoseEstimator(model, cfg, PipelineOptions(mode="tube", online=True))
    estimator.run(frames(), ListDetector(boxes), lambda f, _: seen_at_emit.setdefault(f.position, len(yielded)))
    # Frame t's result exists before frame t + 1 has been read.
    assert seen_at_emit == {t: t + 1 for t in range(4)}


@pytest.mark.parametrize("key", [2])
def test_online_result_equals_offline_result_of_the_video_cut_after_the_frame(scene, runs, key):
    model, cfg, images, boxes = scene
    # The online run sees frames after the key frame too; an offline run that ends at the key frame does not.
    online, _, _, _ = runs(frames=key + 2, mode="exact", online=True)
    cut, _, _, _ = runs(frames=key + 1, mode="exact")
    for a, b in zip(online[key].people, cut[key].people):
        assert_same_heatmaps(a.heatmaps, b.heatmaps)
    # ... which is the key frame at clip index delta with the future slots padded by the key frame.
    expected, _, _ = direct_heatmaps(model, cfg, images, boxes[key][0], key, len(images), cfg.model.delta,
                                     causal_padding=True)
    assert_same_heatmaps(online[key].people[0].heatmaps, expected)


def test_online_tube_reuses_features(runs):
    _, tube, _, _ = runs(frames=5, mode="tube", online=True)
    _, exact, _, _ = runs(frames=5, mode="exact", online=True)
    assert tube.encoded_crops < exact.encoded_crops


def test_results_are_emitted_in_frame_order_once_each(scene, runs):
    _, _, images, _ = scene
    _, _, order, _ = runs(mode="tube", window=3)
    assert order == list(range(len(images)))


# -------------------------------------------------------------------------------------------------- robustness


def test_frame_size_change_starts_a_new_segment(scene):
    model, cfg, images, boxes = scene
    small = [image[:96, :128].copy() for image in images[4:]]
    mixed = images[:4] + small
    results, stats, _, _ = run(model, cfg, mixed, boxes, mode="exact")
    assert stats.segments == 2
    assert results[5].size == (128, 96)
    # The first frame of the second segment is padded as if the video started there.
    alone, _, _, _ = run(model, cfg, small, boxes[4:], mode="exact")
    for a, b in zip(results[4].people, alone[0].people):
        assert_same_heatmaps(a.heatmaps, b.heatmaps)


def test_boxes_outside_the_frame_are_clipped_or_dropped(scene):
    model, cfg, images, _ = scene
    boxes = [np.array([[-500, -500, 40, 40], [140, 60, 80, 80], [20, 20, 30, 60]], np.float32)] * 3
    results, _, _, _ = run(model, cfg, images[:3], boxes, mode="tube")
    for frame in results.values():
        assert len(frame.people) == 2  # the box entirely outside is gone
        for person in frame.people:
            x, y, w, h = person.box
            assert x >= 0 and y >= 0 and x + w <= SIZE[0] + 1e-3 and y + h <= SIZE[1] + 1e-3
            assert np.isfinite(person.keypoints).all()


def test_thousands_of_tiny_boxes_are_dropped_and_crowds_capped(scene):
    model, cfg, images, _ = scene
    rng = np.random.default_rng(0)
    tiny = np.concatenate([rng.uniform(0, 150, (3000, 2)), np.full((3000, 2), 2.0)], axis=1).astype(np.float32)
    crowd = np.concatenate([rng.uniform(0, 120, (500, 2)), np.full((500, 2), 12.0)], axis=1).astype(np.float32)
    with pytest.warns(UserWarning, match="keeping the 3 highest-scoring"):
        results, _, _, _ = run(model, cfg, images[:2], [np.concatenate([tiny, crowd])] * 2, mode="tube", max_boxes=3)
    assert [len(f.people) for f in results.values()] == [3, 3]


def test_no_people_gives_frames_without_annotations(tmp_path, scene):
    model, cfg, images, _ = scene
    folder = write_frames(tmp_path / "empty_scene", images[:3])
    loaded = LoadedModel(model, cfg, "tiny", True, None)
    outcome = infer_source(str(folder), tmp_path / "out", loaded, ListDetector([]), "none", PipelineOptions(),
                           torch.device("cpu"), progress=False)
    doc = json.loads(outcome.json_path.read_text())
    assert len(doc["images"]) == 3 and doc["annotations"] == []
    assert any("no person" in note for note in doc["tdmi"]["notes"])


def test_folder_with_gaps_keeps_listing_order_and_records_the_gap(tmp_path, scene):
    model, cfg, images, boxes = scene
    folder = write_frames(tmp_path / "gappy", images[:3], names=["000000.jpg", "000001.jpg", "000007.jpg"])
    loaded = LoadedModel(model, cfg, "tiny", True, None)
    with pytest.warns(UserWarning, match="gap"):
        outcome = infer_source(str(folder), tmp_path / "out", loaded, ListDetector(boxes), "test",
                               PipelineOptions(mode="exact"), torch.device("cpu"), progress=False)
    doc = json.loads(outcome.json_path.read_text())
    assert [im["file_name"] for im in doc["images"]] == ["gappy/000000.jpg", "gappy/000001.jpg", "gappy/000007.jpg"]
    assert doc["tdmi"]["gaps"] == [{"before": "000001.jpg", "after": "000007.jpg", "missing": 5}]
    assert len(doc["annotations"]) == 6


def _cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured


def test_zero_length_and_garbage_videos_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    for path, words in ((empty, "empty"), (garbage, "cannot open")):
        code, captured = _cli(["infer", str(path), "--out", str(tmp_path / "out"), "--detector", "hog"], capsys)
        assert code == 2
        assert words in captured.err and str(path.name) in captured.err
    assert not any((tmp_path / "out").glob("*.json"))


def test_truncated_video_keeps_decoded_frames_and_earlier_outputs_stay_valid(tmp_path, capsys, scene):
    import cv2

    _, _, images, boxes = scene
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    for image in images:
        writer.write(image)
    writer.release()
    truncated = tmp_path / "cut.avi"
    data = video.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    box_file = tmp_path / "boxes.json"
    box_file.write_text(json.dumps([{"image_id": i, "bbox": b.tolist(), "score": 0.9, "category_id": 1}
                                    for i, frame in enumerate(boxes) for b in frame]))
    out = tmp_path / "out"
    code, captured = _cli(["infer", str(video), str(truncated), str(tmp_path / "missing.mp4"), "--boxes",
                           str(box_file), "--out", str(out)], capsys)
    assert code == 1  # one input failed, the others were written
    assert "missing.mp4" in captured.err
    full = json.loads((out / "clip.json").read_text())
    assert len(full["images"]) == len(images)
    cut_file = out / "cut.json"
    if cut_file.exists():  # OpenCV either decodes a prefix (then the file lists it) or refuses the file
        cut = json.loads(cut_file.read_text())
        assert 0 < len(cut["images"]) <= len(images)
    else:
        assert "cut.avi" in captured.err


# ----------------------------------------------------------------------------------------------------- models


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    from tdmi.config import to_dict
    from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint

    model, cfg = tiny_model(delta=1)
    meta = checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                               heatmap_size=cfg.model.heatmap_size, delta=1)
    path = save_checkpoint(tmp_path / "tiny", model.state_dict(), meta)
    loaded = load_inference_model(str(path))
    assert not loaded.random_init and loaded.config.model.delta == 1
    reloaded = loaded.model.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded[name], tensor)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_inference_model(str(path), overrides=["model.backbone.width=8"])


def test_without_checkpoint_the_small_model_is_random_and_said_so(tmp_path, capsys, monkeypatch):
    import tdmi.inference.model_loading as model_loading

    monkeypatch.setattr(model_loading, "shipped_checkpoint", lambda: None)
    loaded = load_inference_model(None)
    assert loaded.random_init and "RANDOM" in loaded.description
    assert loaded.config.model.backbone.width == 8 and loaded.config.model.input_size == [96, 128]


def test_random_init_skips_the_shipped_checkpoint_for_a_configs_layout():
    """benchmarks/infer_speed.py --random-init: today's layout with random weights, even where a checkpoint is
    shipped."""
    loaded = load_inference_model(None, "tdmi_w8_synth_128x96", device="cpu", random_init=True)
    assert loaded.random_init and loaded.checkpoint is None
    assert loaded.config.model.tde.stage1_feature == "transition" and loaded.model.backbone.stage_channels[0] == 8
    legacy = load_inference_model(None, "tdmi_w8_synth_128x96", ["model.tde.stage1_feature=layer1"], random_init=True)
    assert legacy.random_init and legacy.model.backbone.stage_channels[0] == 256
    with pytest.raises(ValueError, match="random_init"):
        load_inference_model("x.safetensors", random_init=True)


# --------------------------------------------------------------------------------------------- end to end (CLI)


def test_infer_cli_on_the_real_sample_folder_and_video(tmp_path, capsys):
    folder = require(POSETRACK18_SAMPLE / "videos" / "000001_mpiinew_test")
    video = require(folder / "000001_mpiinew_test.mp4")
    boxes = tmp_path / "boxes.json"  # a fixed box: HOG on 1280x720 frames would dominate the test's time
    boxes.write_text(json.dumps([{"image_id": i, "bbox": [500, 200, 150, 400], "score": 0.8, "category_id": 1}
                                 for i in range(5)]))
    out = tmp_path / "out"
    code, captured = _cli(["infer", str(folder), str(video), "--boxes", str(boxes), "--out", str(out), "--render",
                           "--mode", "exact"], capsys)
    assert code == 0, captured.err
    assert "RANDOM" in captured.err or "from tdmi_demo" in captured.out
    if "from tdmi_demo" in captured.out:  # the shipped model says, once, that it knows only synthetic people
        assert captured.out.count("trained on SynthTrack only") == 1
    assert "person-frames/s" in captured.out.splitlines()[-1]
    for stem in ("000001_mpiinew_test", "000001_mpiinew_test_2"):
        doc = json.loads((out / f"{stem}.json").read_text())
        assert len(doc["images"]) == 5 and len(doc["annotations"]) == 5
        annotation = doc["annotations"][0]
        assert len(annotation["keypoints"]) == 51 and len(annotation["scores"]) == 17
        assert annotation["bbox"] == [500.0, 200.0, 150.0, 400.0] and annotation["track_id"] == 0
        assert (out / f"{stem}.mp4").stat().st_size > 0
    folder_doc = json.loads((out / "000001_mpiinew_test.json").read_text())
    assert folder_doc["images"][0]["file_name"] == "000001_mpiinew_test/000000.jpg"
    assert folder_doc["images"][0]["id"] == 30000010000  # PoseTrack18 id of mpiinew sequence 1, frame 0


def test_infer_cli_on_a_synthtrack_folder_writes_evaluable_files(tmp_path, capsys):
    from tdmi.data.synthetic import generate_synthtrack
    from tdmi.evaluation.posetrack_ap import evaluate_dirs

    summary = generate_synthtrack(tmp_path / "synth", sequences=1, frames=6, size=(160, 128), progress=False)
    folder = summary.image_dir / summary.sequences[0]
    out = tmp_path / "out"
    code, captured = _cli(["infer", str(folder), "--boxes", str(summary.detections_file), "--out", str(out),
                           "--online"], capsys)
    assert code == 0, captured.err
    result = evaluate_dirs(summary.annotation_dir, out)
    assert result.num_frames > 0 and np.isfinite(result.table["Mean"])


def test_a_boxes_file_that_matches_no_frame_is_reported(tmp_path, scene):
    from tdmi.inference.detectors import BoxFileDetector, write_boxes_file

    model, cfg, images, _ = scene
    folder = write_frames(tmp_path / "scene", images[:3])
    boxes_file = tmp_path / "other.json"
    write_boxes_file(boxes_file, [(i + 100, f"elsewhere_{i:06d}", np.array([[10, 10, 40, 80]], np.float32),
                                   np.array([0.9])) for i in range(3)], source="elsewhere")
    loaded = LoadedModel(model, cfg, "tiny", True, None)
    outcome = infer_source(str(folder), tmp_path / "out", loaded, BoxFileDetector(boxes_file), "boxes file",
                           PipelineOptions(), torch.device("cpu"), progress=False)
    notes = json.loads(outcome.json_path.read_text())["tdmi"]["notes"]
    assert any("has no entry for any of its 3 frames" in note for note in notes)


def test_infer_checks_inputs_first_says_each_error_once_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    empty = tmp_path / "empty"
    empty.mkdir()
    for inputs in ([str(tmp_path / "missing.mp4")], [str(fake)], [str(empty), str(tmp_path / "missing.mp4")]):
        code, captured = _cli(["infer", *inputs, "--out", str(out)], capsys)
        assert code == 2
        errors = [line for line in captured.err.splitlines() if "error:" in line]
        assert len(errors) == 1, captured.err
        for spec in inputs:
            assert errors[0].count(spec) == 1  # named once, not doubled
        assert "model:" not in captured.out  # nothing loaded before the inputs were checked
        assert not out.exists()


def test_the_progress_bar_counts_finished_frames_not_frames_read(scene, monkeypatch):
    import tqdm as tqdm_module

    model, cfg, images, boxes = scene
    events: list[str] = []

    class RecordingBar:
        def __init__(self, *args, **kwargs):
            self.n = 0

        def update(self, count=1):
            self.n += count
            events.append("update")

        def close(self):
            events.append("close")

    monkeypatch.setattr(tqdm_module, "tqdm", RecordingBar)
    estimator = VideoPoseEstimator(model, cfg, PipelineOptions(mode="tube", window=3), torch.device("cpu"))
    estimator.run(source_frames(images), ListDetector(boxes), lambda frame, image: events.append("emit"),
                  progress=True, total=len(images))
    # every update follows an emit: the bar reaches 100% with the last finished frame, not the last frame read
    assert events == ["emit", "update"] * len(images) + ["close"]
