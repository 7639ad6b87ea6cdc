"""Frame sources: natural order, gaps, unreadable and resized frames, broken videos, real sample videos."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from tdmi.errors import CommandError, DataFormatError
from tdmi.inference.sources import FrameGap, find_gaps, natural_key, open_source


def _write_frames(folder: Path, names: list[str], size=(40, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        # The grey level encodes the listing order we expect, so the test can check the order of what it reads.
        cv2.imwrite(str(folder / name), np.full((size[1], size[0], 3), 10 * (k + 1), np.uint8))


def _write_video(path: Path, frames: int, codec: str = "MJPG", size=(64, 48), fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 8 * i, np.uint8))
    writer.release()
    return path


def test_natural_key_orders_numbers_by_value_and_ignores_case():
    names = ["frame10.jpg", "frame2.jpg", "Frame1.png", "frame002b.jpg", "a.jpg"]
    assert sorted(names, key=natural_key) == ["a.jpg", "Frame1.png", "frame2.jpg", "frame002b.jpg", "frame10.jpg"]


def test_find_gaps_compares_only_names_of_one_pattern():
    names = ["img_1.jpg", "img_2.jpg", "img_5.jpg", "other_9.jpg", "img_6.jpg", "img_10.jpg"]
    assert find_gaps(names) == [FrameGap("img_2.jpg", "img_5.jpg", 2), FrameGap("img_6.jpg", "img_10.jpg", 3)]
    assert find_gaps(["1.png", "2.png", "3.png"]) == []


def test_folder_natural_order_gaps_and_timestamps(tmp_path):
    names = ["f1.png", "f2.png", "f5.png", "f10.png"]
    _write_frames(tmp_path / "seq", names)
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")
    with pytest.warns(UserWarning, match="gap"):
        source = open_source(tmp_path / "seq", fps=5.0)
    assert source.info.kind == "folder"
    assert source.info.frame_names == tuple(names)
    assert source.info.gaps == (FrameGap("f2.png", "f5.png", 2), FrameGap("f5.png", "f10.png", 4))
    frames = list(source)
    assert [f.name for f in frames] == names
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 30, 40]
    # Time follows the numbering, so the gaps show as jumps: numbers 1, 2, 5, 10 at 5 fps.
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.2, 0.8, 1.8])
    assert source.info.fps_known and source.info.frame_count == 4


def test_unreadable_image_in_folder_is_skipped_and_recorded(tmp_path):
    _write_frames(tmp_path, ["000.jpg", "001.jpg", "003.jpg"])
    (tmp_path / "002.jpg").write_bytes(b"this is not a jpeg")
    with pytest.warns(UserWarning):  # the gap-free numbering gives no warning; the broken file does
        source = open_source(tmp_path)
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3]
    assert [f.name for f in frames] == ["000.jpg", "001.jpg", "003.jpg"]
    assert [(i, name) for i, name, _ in source.skipped] == [(2, "002.jpg")]


def test_folder_without_readable_images_is_a_data_format_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(DataFormatError, match="none of its 2 image"):
        open_source(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(DataFormatError, match="no image files"):
        open_source(empty)


def test_changing_frame_sizes_keep_or_resize(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(folder / "1.png"), np.zeros((60, 80, 3), np.uint8))
    cv2.imwrite(str(folder / "2.png"), np.zeros((60, 80), np.uint8))  # grey frames come back as BGR

    with pytest.warns(UserWarning, match="own size"):
        keep = open_source(folder)
        shapes = [f.image.shape for f in keep]
    assert shapes == [(30, 40, 3), (60, 80, 3), (60, 80, 3)]
    assert keep.size_changes == [(1, (80, 60))]

    with pytest.warns(UserWarning, match="resized"):
        first = open_source(folder, size_policy="first")
        shapes = [f.image.shape for f in first]
    assert shapes == [(30, 40, 3)] * 3


def test_video_file_frames_metadata_and_order(tmp_path):
    path = _write_video(tmp_path / "clip.avi", frames=12, fps=10.0)
    with open_source(path) as source:
        assert (source.info.kind, source.info.width, source.info.height) == ("video", 64, 48)
        assert source.info.fps == pytest.approx(10.0)
        assert source.info.frame_count == 12
        frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert [f.name for f in frames][:2] == ["000000", "000001"]
    levels = [float(f.image.mean()) for f in frames]
    assert levels == sorted(levels) and levels[-1] - levels[0] > 60  # decoded in order
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(12)], abs=1e-3)
    assert not source.truncated
    with pytest.raises(CommandError, match="only once"):
        list(source)


def test_zero_length_garbage_and_missing_videos_give_clear_errors(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty"):
        open_source(tmp_path / "empty.mp4")
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(DataFormatError, match="cannot open"):
        open_source(tmp_path / "garbage.mp4")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing.mp4")


def test_truncated_video_yields_what_decodes_and_says_so(tmp_path):
    path = _write_video(tmp_path / "full.avi", frames=30)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = open_source(cut)
        frames = list(source)
    assert 0 < len(frames) < 30
    assert source.truncated
    assert any(f"decoded {len(frames)} of the 30 frames" in str(w.message) for w in caught)
    # An MP4 cut short loses its index (written last) and cannot be opened at all: an error, not a traceback.
    mp4 = _write_video(tmp_path / "full.mp4", frames=10, codec="mp4v")
    (tmp_path / "cut.mp4").write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="cut.mp4"):
        open_source(tmp_path / "cut.mp4")


def test_bad_arguments_and_missing_webcam():
    with pytest.raises(CommandError, match="fps"):
        open_source(".", fps=0)
    with pytest.raises(CommandError, match="size_policy"):
        open_source(".", size_policy="stretch")
    with pytest.raises(CommandError, match="webcam 97"):
        open_source(97)


def test_single_image_file(tmp_path):
    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((10, 12, 3), np.uint8))
    frames = list(open_source(tmp_path / "one.png"))
    assert len(frames) == 1 and frames[0].image.shape == (10, 12, 3) and frames[0].name == "one.png"


def test_real_street_video(video_dir):
    with open_source(video_dir / "vtest.avi") as source:
        assert (source.info.width, source.info.height) == (768, 576)
        assert source.info.frame_count == 795
        first = []
        for frame in source:
            first.append(frame)
            if len(first) == 5:
                break
    assert [f.image.shape for f in first] == [(576, 768, 3)] * 5
    assert first[-1].timestamp == pytest.approx(4 / source.info.fps, abs=1e-3)


def test_posetrack_sample_video_and_folder_agree(posetrack18_sample):
    folder = posetrack18_sample / "videos" / "000001_mpiinew_test"
    video_frames = list(open_source(folder / "000001_mpiinew_test.mp4"))
    folder_frames = list(open_source(folder))
    assert [f.name for f in folder_frames] == [f"{i:06d}.jpg" for i in range(5)]
    assert len(video_frames) == len(folder_frames) == 5
    for a, b in zip(video_frames, folder_frames):
        assert a.image.shape == b.image.shape == (720, 1280, 3)
        # Same scene through two lossy codecs: close, not equal.
        assert np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).mean() < 12
