"""Rendering: skeletons per track with a joint threshold, atomic MP4 writing with an MJPG fallback, sheets."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tdmi.errors import CommandError
from tdmi.inference import render
from tdmi.inference.render import VideoWriter, contact_sheet, draw_people, track_colour, write_contact_sheet


def _count_frames(path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, size


def _frame(i: int, size=(96, 64)) -> np.ndarray:
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    cv2.rectangle(frame, (4 * i, 10), (4 * i + 20, 50), (0, 200, 255), -1)
    return frame


def test_track_colours_are_stable_and_distinct():
    assert track_colour(3) == track_colour(3)
    colours = np.array([track_colour(i) for i in range(8)], np.float64)
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + np.eye(8) * 1e9
    assert distances.min() > 60


def test_skeleton_respects_the_joint_threshold_and_does_not_touch_the_input():
    image = np.zeros((200, 200, 3), np.uint8)
    keypoints = np.zeros((1, 17, 2))
    keypoints[0, 5] = (60, 60)    # left shoulder
    keypoints[0, 7] = (60, 140)   # left elbow: limb 5-7 in the drawing skeleton
    keypoints[0, 6] = (140, 60)   # right shoulder, low score
    keypoints[0, 8] = (140, 140)  # right elbow: limb 6-8 must not be drawn
    scores = np.zeros((1, 17))
    scores[0, [5, 7, 8]] = 0.9
    scores[0, 6] = 0.1
    out = draw_people(image, None, [4], keypoints, scores, joint_threshold=0.2)
    assert image.max() == 0
    colour = np.array(track_colour(4))
    assert np.abs(out[60, 60].astype(int) - colour).max() < 40   # a drawn joint
    assert np.abs(out[100, 60].astype(int) - colour).max() < 40  # the middle of limb 5-7
    assert out[100, 140].max() == 0                                # limb 6-8 (shoulder below threshold)
    assert out[60, 140].max() == 0                                 # the low-score joint itself
    assert out[140, 140].max() > 0                                 # the elbow alone is still drawn
    # Boxes and ids: the box outline takes the track colour.
    boxed = draw_people(image, np.array([[20, 150, 100, 40]]), [4])
    assert np.abs(boxed[190, 70].astype(int) - colour).max() < 40
    with pytest.raises(ValueError, match="2 track ids"):
        draw_people(image, np.zeros((1, 4)), [1, 2])


def test_video_is_playable_and_written_atomically(tmp_path):
    target = tmp_path / "out" / "overlay.mp4"
    with VideoWriter(target, fps=10, size=(96, 64)) as writer:
        for i in range(12):
            writer.write(_frame(i))
        assert not target.exists()  # nothing under the final name until the file is complete
    assert writer.path == target and writer.codec == "h264" and writer.note == ""
    assert _count_frames(target) == (12, (96, 64))
    assert sorted(p.name for p in target.parent.iterdir()) == ["overlay.mp4"]
    # what a browser needs: H.264 in yuv420p (issue 25), as ffmpeg itself reads the file back
    import subprocess

    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(target)],
                           capture_output=True, text=True).stderr
    assert "Video: h264" in probe and "yuv420p" in probe


def test_odd_frame_sizes_are_padded_for_h264(tmp_path):
    with VideoWriter(tmp_path / "odd.mp4", fps=10, size=(95, 63)) as writer:
        for i in range(3):
            writer.write(_frame(i)[:63, :95])
    assert writer.codec == "h264" and _count_frames(writer.path) == (3, (96, 64))


def test_without_imageio_ffmpeg_mp4v_is_written_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(VideoWriter, "_open_h264", lambda self, final, fps: False)
    with VideoWriter(tmp_path / "v.mp4", fps=10, size=(96, 64)) as writer:
        writer.write(_frame(0))
    assert writer.codec == "mp4v" and "tdmi[video]" in writer.note and "browsers" in writer.note


def test_exception_mid_write_leaves_no_file(tmp_path):
    target = tmp_path / "overlay.mp4"
    with pytest.raises(RuntimeError, match="model failed"):
        with VideoWriter(target, fps=10, size=(96, 64)) as writer:
            for i in range(5):
                writer.write(_frame(i))
            raise RuntimeError("model failed")
    assert list(tmp_path.iterdir()) == []


def test_frames_of_another_size_are_resized_not_dropped(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", fps=5, size=(96, 64)) as writer:
        writer.write(_frame(0))
        writer.write(cv2.resize(_frame(1), (200, 120)))
        writer.write(np.zeros((64, 96), np.uint8))
    assert _count_frames(writer.path) == (3, (96, 64))


def test_falls_back_to_mjpg_avi_when_mp4v_is_unavailable(tmp_path, monkeypatch):
    real_writer = cv2.VideoWriter

    def without_mp4v(path, fourcc, fps, size):
        if fourcc == cv2.VideoWriter_fourcc(*"mp4v"):
            return real_writer()  # an unopened writer, as a build without the codec returns
        return real_writer(path, fourcc, fps, size)

    monkeypatch.setattr(render.cv2, "VideoWriter", without_mp4v)
    monkeypatch.setattr(VideoWriter, "_open_h264", lambda self, final, fps: False)
    with VideoWriter(tmp_path / "overlay.mp4", fps=10, size=(96, 64)) as writer:
        for i in range(4):
            writer.write(_frame(i))
    assert writer.codec == "MJPG" and writer.path == tmp_path / "overlay.avi"
    assert "Motion-JPEG" in writer.note
    assert _count_frames(writer.path) == (4, (96, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.avi"]


def test_empty_video_and_bad_arguments_are_command_errors(tmp_path):
    with pytest.raises(CommandError, match="no frames"):
        with VideoWriter(tmp_path / "v.mp4", fps=10, size=(96, 64)):
            pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CommandError, match="frame rate"):
        VideoWriter(tmp_path / "v.mp4", fps=0, size=(96, 64))


def test_contact_sheet_layout_and_png(tmp_path):
    frames = [_frame(i) for i in range(5)] + [np.full((100, 40, 3), 255, np.uint8)]  # one of another aspect
    sheet = contact_sheet(frames, [f"frame {i}" for i in range(6)], columns=3, tile_width=120)
    assert sheet.shape == (2 * 80, 3 * 120, 3)
    path = write_contact_sheet(tmp_path / "sheet.png", frames, columns=3, tile_width=120)
    assert cv2.imread(str(path)).shape == sheet.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]
    with pytest.raises(CommandError, match="cannot encode"):
        write_contact_sheet(tmp_path / "sheet.xyz", frames)


def test_real_ground_truth_poses_render_on_their_frame(posetrack18_sample, tmp_path):
    annotation = json.loads((posetrack18_sample / "annotations" / "val" / "012834_mpii_test.json").read_text())
    image_entry = next(i for i in annotation["images"] if i["file_name"].endswith("000000.jpg"))
    image = cv2.imread(str(posetrack18_sample / image_entry["file_name"]))
    people = [a for a in annotation["annotations"] if a["image_id"] == image_entry["id"] and "keypoints" in a]
    assert people
    keypoints = np.array([p["keypoints"] for p in people], np.float64).reshape(len(people), 17, 3)
    boxes = np.array([p["bbox"] for p in people], np.float64)
    out = draw_people(image, boxes, [p["track_id"] for p in people], keypoints[..., :2], keypoints[..., 2])
    changed = np.abs(out.astype(int) - image.astype(int)).max(axis=2) > 0
    labelled = keypoints[..., 2] > 0
    for x, y in keypoints[labelled][:, :2].round().astype(int):
        if 0 <= x < image.shape[1] and 0 <= y < image.shape[0]:
            assert changed[y, x]  # every labelled joint is drawn
    write_contact_sheet(tmp_path / "gt.png", [out], tile_width=960)
    assert cv2.imread(str(tmp_path / "gt.png")) is not None


def test_labels_scale_with_the_frame_and_scores_can_be_drawn():
    """Track labels are at least 12 px tall on a 320x240 frame (they were 7) and grow with the frame; --render-scores
    writes each joint's score beside it."""
    def label_height(height):
        image = np.zeros((height, int(height * 4 / 3), 3), np.uint8)
        drawn = draw_people(image, np.array([[10.0, height * 0.3, 60.0, 100.0]]), [7])
        colour = np.array(render.track_colour(7))
        rows = np.flatnonzero((np.abs(drawn.astype(int) - colour).max(axis=-1) < 10).any(axis=1))
        # the filled label box sits above the box's top edge
        return int((rows < int(height * 0.3)).sum())

    assert label_height(240) >= 12 and label_height(1080) > 2 * label_height(240)
    image = np.zeros((240, 320, 3), np.uint8)
    keypoints = np.full((1, 17, 2), np.nan)
    keypoints[0, 0] = (100, 120)
    scores = np.zeros((1, 17))
    scores[0, 0] = 0.87
    plain = draw_people(image, None, [0], keypoints, scores)
    with_scores = draw_people(image, None, [0], keypoints, scores, show_scores=True)
    changed = np.abs(with_scores.astype(int) - plain).max(axis=-1) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 20 and xs.min() > 100  # the number, to the right of the joint

