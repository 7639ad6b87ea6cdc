"""The GT-free tracking proxies of scripts/vtest_tracking.py, on hand-built tracks with known events."""


import pytest

from script_helpers import load_script

@pytest.fixture(scope="module")
def vt():
    return load_script("vtest_tracking")


def walker(x0, frames, step=2.0, y=100.0, w=40.0, h=100.0):
    """A person walking right: frame -> xywh box."""
    return {f: [x0 + step * f, y, w, h] for f in frames}


def test_clean_tracks_have_no_fragment_and_no_swap(vt):
    # two people side by side (boxes touch, never overlap much), tracked the whole clip
    tracks = {0: walker(0, range(20)), 1: walker(45, range(20))}
    result = vt.proxies(tracks, 20)
    assert (result["tracks"], result["fragments"], result["swaps"], result["short_tracks"]) == (2, 0, 0, 0)
    assert result["mean_length"] == result["median_length"] == 20
    assert result["tracks_per_person_frame"] == pytest.approx(2 / 40)


def test_one_fragment_is_found_and_unrelated_births_are_not(vt):
    tracks = {
        0: walker(0, range(0, 5)),  # ends at frame 4 ...
        1: walker(0, range(8, 30)),  # ... the same person, re-labelled at frame 8: a fragment
        2: walker(400, range(9, 30)),  # born soon after, but far away: not a continuation
        3: walker(300, range(0, 3)),  # ends at frame 2 ...
        4: walker(300, range(14, 30)),  # ... born 12 frames later, beyond the 10-frame window: no fragment
        5: walker(600, range(0, 30)),  # runs to the last frame: never "ends"
    }
    events = vt.fragment_events(tracks, 30)
    assert [(e["ended"], e["born"]) for e in events] == [(0, 1)]
    assert events[0]["end_frame"] == 4 and events[0]["birth_frame"] == 8
    assert vt.proxies(tracks, 30)["fragments"] == 1
    assert vt.proxies(tracks, 30)["short_tracks"] == 1  # track 3 (3 boxes); track 0 has 5, which is not short
    # the window is a parameter: widened to 12 frames, track 4 continues track 3 as well
    assert [(e["ended"], e["born"]) for e in vt.fragment_events(tracks, 30, max_gap=12)] == [(3, 4), (0, 1)]


def test_a_newborn_continues_at_most_one_ended_track(vt):
    tracks = {0: walker(0, range(0, 5)), 1: walker(5, range(0, 5)), 2: walker(2, range(7, 20))}
    events = vt.fragment_events(tracks, 20)
    assert len(events) == 1 and events[0]["born"] == 2


def test_a_centre_distance_below_half_the_height_counts_without_overlap(vt):
    # last box and first box do not overlap (IoU 0) but the centres are 45 px apart, < 100 / 2
    tracks = {0: {0: [0, 0, 40, 100], 1: [0, 0, 40, 100]}, 1: {3: [45, 0, 40, 100], 4: [45, 0, 40, 100]}}
    assert vt.box_iou(tracks[0][1], tracks[1][3]) == 0.0
    assert len(vt.fragment_events(tracks, 10)) == 1
    tracks[1] = {3: [60, 0, 40, 100]}  # 60 px: too far
    assert vt.fragment_events(tracks, 10) == []


def test_one_mutual_swap_is_one_event(vt):
    a, b = walker(0, range(10)), walker(200, range(10))
    # from frame 5 on the ids are exchanged: track 0 carries b's boxes and track 1 a's
    tracks = {0: {f: (a[f] if f < 5 else b[f]) for f in range(10)},
              1: {f: (b[f] if f < 5 else a[f]) for f in range(10)}}
    events = vt.swap_events(tracks)
    assert [(e["frame"], e["after_gap"]) for e in events] == [(5, False)]
    assert {events[0]["track"], events[0]["other"]} == {0, 1}
    assert events[0]["iou_other"] > 0.5 and events[0]["iou_own"] == 0.0
    assert vt.proxies(tracks, 10)["swaps"] == 1
    # the same ids without the exchange: nothing
    assert vt.swap_events({0: a, 1: b}) == []


def test_a_takeover_after_a_gap_is_a_swap_after_a_gap(vt):
    a, b = walker(0, range(10)), walker(200, range(10))
    # track 0 is lost after frame 3 and comes back at frame 6 on b's spot; b is tracked throughout as track 1
    tracks = {0: {**{f: a[f] for f in range(4)}, **{f: b[f] for f in range(6, 10)}}, 1: b}
    events = vt.swap_events(tracks)
    assert [(e["frame"], e["previous_frame"], e["track"], e["other"], e["after_gap"]) for e in events] == \
        [(6, 3, 0, 1, True)]
    result = vt.proxies(tracks, 10)
    assert (result["swaps"], result["swaps_after_gap"]) == (1, 1)


def test_close_neighbours_walking_in_step_are_no_swap(vt):
    # each box overlaps its own previous box most
    tracks = {0: walker(0, range(10), step=1.0), 1: walker(10, range(10), step=1.0)}
    assert vt.box_iou(tracks[0][1], tracks[1][0]) > 0.5
    assert vt.swap_events(tracks) == []
    # a fast walker (8 px a frame) whose box lands nearer its neighbour's previous box than its own, but by less
    # than the 0.2 margin (IoU 0.82 with the neighbour's, 0.67 with its own): no swap
    tracks = {0: walker(0, range(2), step=8.0), 1: walker(12, range(2), step=8.0)}
    own, other = vt.box_iou(tracks[0][1], tracks[0][0]), vt.box_iou(tracks[0][1], tracks[1][0])
    assert own + 0.2 > other > own
    assert vt.swap_events(tracks) == []
    # with a 0.1 margin the same boxes would be a swap: the margin is what rules it out
    assert len(vt.swap_events(tracks, margin=0.1)) == 1
    # a jump that lands only loosely on another track's previous box (IoU 0.38 <= 0.5, own 0): no swap
    tracks = {0: {0: [0, 0, 40, 100], 1: [100, 0, 40, 100]}, 1: {0: [118, 0, 40, 100], 1: [300, 0, 40, 100]}}
    assert 0.3 < vt.box_iou(tracks[0][1], tracks[1][0]) <= 0.5
    assert vt.swap_events(tracks) == []


def test_tracks_from_frames_and_duplicates(vt):
    frames = [[(3, [0, 0, 1, 1]), (7, [5, 5, 1, 1])], [], [(3, [1, 0, 1, 1])]]
    assert vt.tracks_from_frames(frames) == {3: {0: [0, 0, 1, 1], 2: [1, 0, 1, 1]}, 7: {0: [5, 5, 1, 1]}}
    with pytest.raises(ValueError, match="twice"):
        vt.tracks_from_frames([[(1, [0, 0, 1, 1]), (1, [2, 2, 1, 1])]])
