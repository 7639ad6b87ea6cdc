"""Supporting-frame selection (tdmi.data.clips): docs/facts/posetrack-facts.md section 3 and its appendix examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdmi.data.clips import (
    PADDING_RULES, clip_files, clip_window, first_frame_index, frame_path, split_frame_name, window_offsets,
)
from tdmi.errors import DataFormatError

# ---------------------------------------------------------------------------------------------------------------
# Appendix examples


def supporting(window):
    """The window's supporting frames (key slot removed), in clip order."""
    return [i for pos, i in enumerate(window.indices) if pos != window.key_position]


@pytest.mark.parametrize("key, expected", [(0, [0, 0, 1, 2]), (1, [0, 1, 2, 3]), (2, [0, 1, 3, 4]),
                                           (3, [1, 2, 4, 4]), (4, [2, 3, 4, 4])])
def test_fami_rule_matches_appendix(key, expected):
    # FAMI D=3 (our delta 2), N=5, PT18 0-based: facts appendix.
    window = clip_window(key, 5, delta=2, padding="fami")
    assert supporting(window) == expected
    assert window.indices[window.key_position] == key


def test_fami_padding_is_asymmetric():
    # Previous side pads AFTER its real frame with the key frame; next side pads with t+1.
    assert clip_window(1, 5, padding="fami").padded == (False, True, False, False, False)
    assert clip_window(3, 5, padding="fami").padded == (False, False, False, False, True)
    assert clip_window(3, 5, padding="fami").indices == (1, 2, 3, 4, 4)


@pytest.mark.parametrize("key, expected", [(0, (0, 0, 1)), (4, (3, 4, 4)), (2, (1, 2, 3))])
def test_dcpose_like_rule_matches_appendix(key, expected):
    # DCPose DISTANCE 2 = one neighbour per side; at the ends the key frame itself is used.
    window = clip_window(key, 5, delta=1, padding="key_frame")
    assert window.indices == expected
    assert window.key_position == 1


# ---------------------------------------------------------------------------------------------------------------
# Each rule at the sequence ends


@pytest.mark.parametrize(
    "padding, key, indices, padded",
    [
        ("key_frame", 0, (0, 0, 0, 1, 2), (True, True, False, False, False)),
        ("key_frame", 1, (1, 0, 1, 2, 3), (True, False, False, False, False)),
        ("key_frame", 4, (2, 3, 4, 4, 4), (False, False, False, True, True)),
        ("clamp", 1, (0, 0, 1, 2, 3), (True, False, False, False, False)),
        ("clamp", 3, (1, 2, 3, 4, 4), (False, False, False, False, True)),
        ("clamp", 0, (0, 0, 0, 1, 2), (True, True, False, False, False)),
        ("fami", 4, (2, 3, 4, 4, 4), (False, False, False, True, True)),
    ],
)
def test_rules_at_sequence_ends(padding, key, indices, padded):
    window = clip_window(key, 5, delta=2, padding=padding)
    assert window.indices == indices
    assert window.padded == padded


def test_rules_agree_away_from_the_ends():
    # Far from the ends every rule gives t-2..t+2, unpadded.
    for rule in PADDING_RULES:
        window = clip_window(10, 100, padding=rule)
        assert window.indices == (8, 9, 10, 11, 12)
        assert not any(window.padded)


def test_single_frame_sequence_repeats_the_key_frame():
    for rule in PADDING_RULES:
        window = clip_window(0, 1, padding=rule)
        assert window.indices == (0, 0, 0, 0, 0)
        assert window.padded == (True, True, False, True, True)


def test_causal_window():
    window = clip_window(7, 10, delta=2, causal=True)
    assert window.indices == (3, 4, 5, 6, 7) and window.key_position == 4
    assert clip_window(1, 10, causal=True).indices == (1, 1, 1, 0, 1)
    assert clip_window(1, 10, causal=True, padding="clamp").indices == (0, 0, 0, 0, 1)
    assert clip_window(1, 10, causal=True, padding="fami").indices == (0, 1, 1, 1, 1)


def test_posetrack17_is_one_based():
    assert first_frame_index("posetrack17", 8) == 1
    assert first_frame_index("posetrack18", 6) == 0
    assert first_frame_index("posetrack21", 6) == 0
    # Unknown datasets: DCPose's digit-count rule.
    assert first_frame_index("hieve", 6) == 0 and first_frame_index("hieve", 8) == 1
    window = clip_window(1, 5, first_index=1)
    assert window.indices == (1, 1, 1, 2, 3)
    assert clip_window(5, 5, first_index=1).indices == (3, 4, 5, 5, 5)


def test_key_outside_sequence_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        clip_window(5, 5)
    with pytest.raises(ValueError, match="padding"):
        window_offsets(1, 1, padding="mirror")


@given(
    before=st.integers(0, 10), after=st.integers(0, 10), delta=st.integers(0, 4),
    padding=st.sampled_from(PADDING_RULES), causal=st.booleans(),
)
def test_offsets_stay_inside_the_available_frames(before, after, delta, padding, causal):
    offsets, padded = window_offsets(before, after, delta, padding, causal)
    key_position = 2 * delta if causal else delta
    assert len(offsets) == len(padded) == 2 * delta + 1
    assert offsets[key_position] == 0 and not padded[key_position]
    usable_after = 0 if causal else after
    assert all(-before <= o <= usable_after for o in offsets)
    wanted = [pos - key_position for pos in range(2 * delta + 1)]
    for o, w, p in zip(offsets, wanted, padded):
        if padding != "fami":  # fami reorders real previous frames, so only the other rules keep slots
            assert p == (o != w)
        if not p:
            assert o != 0 or w == 0
    # The number of real slots never depends on the rule.
    real = min(before, 2 * delta if causal else delta) + min(usable_after, 0 if causal else delta)
    assert sum(not p for p in padded) == real + 1


# ---------------------------------------------------------------------------------------------------------------
# File names


def test_frame_path_keeps_digits_folder_and_extension():
    assert frame_path("images/val/s/000012.jpg", 9) == "images/val/s/000009.jpg"
    assert frame_path("x/00000003.png", 12) == "x/00000012.png"
    assert split_frame_name("a/b/000120.jpg") == ("a/b", 120, 6, ".jpg")


def test_non_numeric_frame_name_is_an_error_naming_the_file():
    with pytest.raises(DataFormatError, match="frame_a.jpg"):
        split_frame_name("seq/frame_a.jpg")


def make_frames(folder, indices, digits=6):
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        (folder / f"{i:0{digits}d}.jpg").write_bytes(b"")
    return folder


def test_clip_files_resolves_paths(tmp_path):
    seq = make_frames(tmp_path / "seq", range(5))
    clip = clip_files(seq / "000000.jpg", nframes=5)
    names = [p.rsplit("/", 1)[1] for p in clip.paths]
    assert names == ["000000.jpg", "000000.jpg", "000000.jpg", "000001.jpg", "000002.jpg"]
    assert clip.window.padded == (True, True, False, False, False)


def test_clip_files_posetrack17_numbering(tmp_path):
    seq = make_frames(tmp_path / "seq", range(1, 6), digits=8)
    clip = clip_files(seq / "00000001.jpg", nframes=5, dataset="posetrack17")
    assert clip.window.indices == (1, 1, 1, 2, 3)
    with pytest.raises(DataFormatError, match="00000000.jpg: frame 0 is outside"):
        clip_files(seq / "00000000.jpg", nframes=5, dataset="posetrack17")


def test_missing_supporting_frame_error_names_the_file(tmp_path):
    seq = make_frames(tmp_path / "seq", [0, 1, 2, 4])
    with pytest.raises(DataFormatError, match=r"seq/000003\.jpg: supporting frame not found"):
        clip_files(seq / "000002.jpg", nframes=5)


def test_missing_supporting_frame_pads_when_asked(tmp_path):
    seq = make_frames(tmp_path / "seq", [0, 1, 2, 4])
    clip = clip_files(seq / "000002.jpg", nframes=5, missing_frames="pad")
    # Frame 3 is missing, so the sequence is treated as ending at 2 (frame 4 is not reached past the gap).
    assert clip.window.indices == (0, 1, 2, 2, 2)
    assert clip.window.padded == (False, False, False, True, True)
    clamp = clip_files(seq / "000002.jpg", nframes=5, missing_frames="pad", padding="clamp")
    assert clamp.window.indices == (0, 1, 2, 2, 2)


def test_missing_key_frame_is_an_error(tmp_path):
    seq = make_frames(tmp_path / "seq", [0, 1])
    with pytest.raises(DataFormatError, match=r"000003\.jpg: key frame image not found"):
        clip_files(seq / "000003.jpg", nframes=5, missing_frames="pad")


def test_unknown_length_ends_at_the_last_file(tmp_path):
    seq = make_frames(tmp_path / "seq", range(3))
    clip = clip_files(seq / "000001.jpg", nframes=None)
    assert clip.window.indices == (1, 0, 1, 2, 1)
    assert clip.window.padded == (True, False, False, False, True)


def test_nframes_bounds_the_clip_even_if_more_files_exist(tmp_path):
    seq = make_frames(tmp_path / "seq", range(10))
    clip = clip_files(seq / "000004.jpg", nframes=5)
    assert clip.window.indices == (2, 3, 4, 4, 4)
