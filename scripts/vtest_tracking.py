"""Pose-aware tracker vs the IoU tracker on the real street video vtest.avi, by GT-free proxies (issue 12, point 3).

Protocol (fixed before the first run): vtest.avi (768x576, 10 fps, many walkers) has no ground truth, so MOTA and
ID switches cannot be counted. `tdmi infer --detector hog` runs twice on the same frames, once per tracker
(`--tracker iou`, then `--tracker pose`). The second run reuses the first run's detection cache
(OUT/<stem>.boxes.json), so both trackers see identical boxes. The poses are identical too: `tdmi infer` always
crops with its IoU tracker's tubes, and `--tracker pose` only relabels the ids written (inference/records.py). The
script checks both (same boxes and keypoints in both JSONs). Proxies, per tracker, over every written person:
- tracks: distinct track ids; tracks per person-frame; track length = frames in which the track has a box (mean,
  median); short tracks = tracks with fewer than 5 boxes.
- fragments: a track ends at frame e (before the last frame) and a track born at frame b, e < b <= e + 10, has a
  first box that overlaps the ended track's last box (IoU > 0.3, or centre distance < half the last box's height):
  the same person likely re-labelled. Ended tracks are taken in order of end frame, each takes the earliest such
  newborn (ties: highest IoU), and a newborn continues at most one ended track.
- swaps: at frame t, track i's box overlaps the box of a different track j in the frame of i's previous
  observation p (p = t - 1, or the frame before a gap) clearly better than i's own box at p: IoU with j's > 0.5
  and > IoU with its own + 0.2. Counted once per frame t and unordered pair {i, j} (a mutual swap is 1 event);
  after-gap events are also reported apart, because re-identification across gaps is where a pose tracker can
  link the wrong person.
These are proxies, not MOTA: a fragment may be two people, a swap may be a person walking into a box that just
left. Target (issue 12): the pose tracker's swaps at most half the IoU tracker's.

    OMP_NUM_THREADS=1 python scripts/vtest_tracking.py --threads 1
    # -> runs/vtest_tracking/{iou,pose}/vtest.json, docs/results/vtest_tracking.json and the table printed

--frames N runs on the first N frames only (written losslessly to OUT/frames_N as PNGs); --skip-infer rescores
the JSONs of an earlier run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tdmi.atomic import atomic_write_json  # noqa: E402

TRACKERS = ("iou", "pose")
SHORT_TRACK = 5  # boxes: a track with fewer is "short"
FRAGMENT_GAP = 10  # frames: a newborn within this many frames of a track's end may be its continuation
FRAGMENT_IOU = 0.3
SWAP_IOU = 0.5
SWAP_MARGIN = 0.2

# A track: track id -> {frame position: xywh box}. Frames are positions 0 .. num_frames - 1.
Tracks = Mapping[int, Mapping[int, Sequence[float]]]


# ------------------------------------------------------------------------------------------------- proxy counting


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xywh boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    inter = max(w, 0.0) * max(h, 0.0)
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _centre_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2))


def tracks_from_frames(frames: Iterable[Iterable[tuple[int, Sequence[float]]]]) -> dict[int, dict[int, list]]:
    """``[(track_id, box), ...]`` per frame, in frame order -> :data:`Tracks`."""
    tracks: dict[int, dict[int, list]] = {}
    for position, people in enumerate(frames):
        for track_id, box in people:
            if position in tracks.setdefault(int(track_id), {}):
                raise ValueError(f"track {track_id} appears twice in frame {position}")
            tracks[int(track_id)][position] = [float(v) for v in box]
    return tracks


def track_length_stats(tracks: Tracks) -> dict:
    lengths = np.array([len(boxes) for boxes in tracks.values()], np.int64)
    person_frames = int(lengths.sum())
    return {"tracks": len(lengths), "person_frames": person_frames,
            "tracks_per_person_frame": len(lengths) / person_frames if person_frames else 0.0,
            "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
            "median_length": float(np.median(lengths)) if len(lengths) else 0.0,
            "short_tracks": int((lengths < SHORT_TRACK).sum())}


def fragment_events(tracks: Tracks, num_frames: int, max_gap: int = FRAGMENT_GAP,
                    min_iou: float = FRAGMENT_IOU) -> list[dict]:
    """Ended tracks continued by a nearby newborn (the protocol's fragments), one dict per event."""
    spans = {t: (min(boxes), max(boxes)) for t, boxes in tracks.items() if boxes}
    ended = sorted((t for t, (_, last) in spans.items() if last < num_frames - 1), key=lambda t: (spans[t][1], t))
    claimed: set[int] = set()
    events = []
    for old in ended:
        end = spans[old][1]
        last_box = tracks[old][end]
        best = None
        for new, (first, _) in spans.items():
            if new == old or new in claimed or not end < first <= end + max_gap:
                continue
            first_box = tracks[new][first]
            iou = box_iou(last_box, first_box)
            if iou > min_iou or _centre_distance(last_box, first_box) < last_box[3] / 2:
                candidate = (first, -iou, new)
                best = candidate if best is None or candidate < best else best
        if best is not None:
            claimed.add(best[2])
            events.append({"ended": old, "end_frame": end, "born": best[2], "birth_frame": best[0],
                           "iou": -best[1]})
    return events


def swap_events(tracks: Tracks, min_iou: float = SWAP_IOU, margin: float = SWAP_MARGIN) -> list[dict]:
    """The protocol's identity-swap events: one dict per (frame, unordered pair of tracks)."""
    by_frame: dict[int, dict[int, Sequence[float]]] = {}
    for track_id, boxes in tracks.items():
        for position, box in boxes.items():
            by_frame.setdefault(position, {})[track_id] = box
    seen: set[tuple[int, int, int]] = set()
    events = []
    for track_id, boxes in tracks.items():
        frames = sorted(boxes)
        for previous, position in zip(frames, frames[1:]):
            box = boxes[position]
            own = box_iou(box, boxes[previous])
            for other, other_box in by_frame[previous].items():
                if other == track_id:
                    continue
                iou = box_iou(box, other_box)
                pair = (position, min(track_id, other), max(track_id, other))
                if iou > min_iou and iou > own + margin and pair not in seen:
                    seen.add(pair)
                    events.append({"frame": position, "previous_frame": previous, "track": track_id,
                                   "other": other, "iou_other": iou, "iou_own": own,
                                   "after_gap": position - previous > 1})
    return sorted(events, key=lambda e: (e["frame"], e["track"], e["other"]))


def proxies(tracks: Tracks, num_frames: int) -> dict:
    fragments = fragment_events(tracks, num_frames)
    swaps = swap_events(tracks)
    return {**track_length_stats(tracks), "fragments": len(fragments), "swaps": len(swaps),
            "swaps_after_gap": sum(e["after_gap"] for e in swaps), "fragment_events": fragments,
            "swap_events": swaps}


# --------------------------------------------------------------------------------------------------- running infer


def _read_run(path: Path) -> tuple[list[list[tuple[int, list]]], np.ndarray, dict]:
    """Per frame ``[(track_id, box)]``, all keypoints (for the same-poses check) and the run's meta."""
    data = json.loads(path.read_text(encoding="utf-8"))
    position = {image["id"]: i for i, image in enumerate(data["images"])}
    frames: list[list[tuple[int, list]]] = [[] for _ in data["images"]]
    for annotation in data["annotations"]:
        frames[position[annotation["image_id"]]].append((int(annotation["track_id"]), annotation["bbox"]))
    keypoints = np.array([a["keypoints"] for a in data["annotations"]], np.float64).reshape(-1, 51)
    return frames, keypoints, data["tdmi"]


def _write_frames(video: Path, count: int, folder: Path) -> None:
    import cv2

    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    for i in range(count):
        ok, image = capture.read()
        if not ok:
            raise SystemExit(f"{video} has only {i} frames, asked for {count}")
        cv2.imwrite(str(folder / f"{i:06d}.png"), image)
    capture.release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default=str(ROOT.parent / "shared/data/video/vtest.avi"))
    parser.add_argument("--frames", type=int, default=0, help="first N frames only (default: all)")
    parser.add_argument("--detector", default="hog")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--out", default="runs/vtest_tracking")
    parser.add_argument("--json-out", default=str(ROOT / "docs/results/vtest_tracking.json"))
    parser.add_argument("--skip-infer", action="store_true", help="rescore the JSONs already in OUT")
    args = parser.parse_args()
    out = Path(args.out)
    video = Path(args.video)
    if args.frames > 0:
        source = out / f"frames_{args.frames}"
        _write_frames(video, args.frames, source)
        stem = source.name
    else:
        source, stem = video, video.stem
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    commands, wall = {}, {}
    for tracker in TRACKERS:
        folder = out / tracker
        commands[tracker] = [sys.executable, "-m", "tdmi", "infer", str(source), "--detector", args.detector,
                             "--tracker", tracker, "--out", str(folder), "--threads", str(args.threads)]
        if args.skip_infer:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if tracker != TRACKERS[0]:  # identical boxes: hand the first run's detection cache to this one
            shutil.copy2(out / TRACKERS[0] / f"{stem}.boxes.json", folder / f"{stem}.boxes.json")
        print(" ".join(commands[tracker]), file=sys.stderr)
        start = time.perf_counter()
        subprocess.run(commands[tracker], check=True, env=env, cwd=ROOT)
        wall[tracker] = time.perf_counter() - start
    runs = {t: _read_run(out / t / f"{stem}.json") for t in TRACKERS}
    (iou_frames, iou_kp, _), (pose_frames, pose_kp, pose_meta) = runs["iou"], runs["pose"]
    same_boxes = [[b for _, b in f] for f in iou_frames] == [[b for _, b in f] for f in pose_frames]
    same_poses = iou_kp.shape == pose_kp.shape and bool(np.array_equal(iou_kp, pose_kp))
    reused = any("boxes reused" in note for note in pose_meta["notes"])
    if not (same_boxes and same_poses):
        print(f"warning: the two runs differ (same boxes {same_boxes}, same poses {same_poses})", file=sys.stderr)
    num_frames = len(iou_frames)
    report: dict = {
        "protocol": __doc__.split("\n\n")[1], "command": " ".join(["python", *sys.argv]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=ROOT).stdout.strip(),
        "input": str(source), "frames": num_frames, "detector": runs["iou"][2]["detector"],
        "model": runs["iou"][2]["model"], "mode": runs["iou"][2]["mode"], "window": runs["iou"][2]["window"],
        "threads": args.threads, "infer_commands": {t: " ".join(c[1:]) for t, c in commands.items()},
        "wall_seconds": wall or None, "throughput": {t: runs[t][2]["throughput"] for t in TRACKERS},
        "same_boxes": same_boxes, "same_poses": same_poses, "pose_run_reused_boxes": reused,
        "settings": {"short_track": SHORT_TRACK, "fragment_gap": FRAGMENT_GAP, "fragment_iou": FRAGMENT_IOU,
                     "swap_iou": SWAP_IOU, "swap_margin": SWAP_MARGIN,
                     "iou_tracker": "min_iou 0.3, max_missed 5 (tdmi infer defaults)",
                     "pose_tracker": "PoseTracker defaults: iou_weight 0.5, min_similarity 0.25, max_missed 10, "
                                     "joint_threshold 0.2"},
        "trackers": {}}
    print(f"{num_frames} frames, {sum(len(f) for f in iou_frames)} person-frames; same boxes {same_boxes}, "
          f"same poses {same_poses}")
    print("| tracker | tracks | tracks / person-frame | mean length | median length | short tracks (< 5) | fragments "
          "| swaps (after a gap) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for tracker in TRACKERS:
        frames = runs[tracker][0]
        result = proxies(tracks_from_frames(frames), num_frames)
        report["trackers"][tracker] = result
        print(f"| {tracker} | {result['tracks']} | {result['tracks_per_person_frame']:.3f} | "
              f"{result['mean_length']:.1f} | {result['median_length']:g} | {result['short_tracks']} | "
              f"{result['fragments']} | {result['swaps']} ({result['swaps_after_gap']}) |")
    iou, pose = report["trackers"]["iou"], report["trackers"]["pose"]
    ratios = {k: pose[k] / iou[k] if iou[k] else None for k in ("swaps", "fragments", "tracks", "short_tracks")}
    report["pose_over_iou"] = ratios
    print("pose / iou: " + ", ".join(f"{k} " + ("n/a" if v is None else f"x{v:.2f}") for k, v in ratios.items())
          + ("; wall " + ", ".join(f"{t} {s:.0f} s" for t, s in wall.items()) if wall else ""))
    atomic_write_json(Path(args.json_out), report, indent=2)
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
