"""How fast each joint group moves on a PoseTrack-layout split: the articulated speed the per-joint gains of the
SynthTrack benchmark are read against (docs/results.md; the review's point that gains "do not follow motion").

Speed of a joint between two consecutive frames of one track: the displacement of the joint *relative to the hip
midpoint* (so the camera and the walk itself do not count), in % of the person's box height per frame. Pairs where
the joint or either hip is unlabelled in either frame are skipped. A group's speed is the mean over its joints'
pairs, in poseval's groups (Head, Shoulder, ..., Ankle). The hips are measured against their own midpoint, so theirs
is only the left-right swing: structurally small, which fixes the Hip group's rank in any correlation with speed.

    PYTHONPATH=src python scripts/synthtrack_joint_speed.py --gt runs/bench/data/annotations/val \\
        --out docs/results/runs/val_joint_speed.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def joint_speeds(sequences) -> dict:
    """``sequences`` (:func:`tdmi.data.posetrack.load_sequences`) -> per poseval group: mean speed and pair count."""
    from tdmi.keypoints import POSETRACK17, POSEVAL15_TO_POSETRACK17, POSEVAL_GROUPS

    left_hip, right_hip = POSETRACK17.index("left_hip"), POSETRACK17.index("right_hip")
    per_slot: dict[int, list[float]] = {slot: [] for slot in range(POSETRACK17.num_joints)}
    for sequence in sequences:
        tracks: dict[int, dict[int, object]] = {}
        for frame in sequence.frames:
            for person in frame.people:
                if person.track_id >= 0:
                    tracks.setdefault(person.track_id, {})[frame.frame_index] = person
        for by_frame in tracks.values():
            for index, person in by_frame.items():
                after = by_frame.get(index + 1)
                if after is None:
                    continue
                pair = np.stack([person.keypoints, after.keypoints])                  # [2, J, 3]
                if not (pair[:, [left_hip, right_hip], 2] > 0).all():
                    continue
                height = float(person.bbox[3] + after.bbox[3]) / 2
                if height <= 0:
                    continue
                relative = pair[:, :, :2] - pair[:, [left_hip, right_hip], :2].mean(axis=1, keepdims=True)
                moved = np.hypot(*(relative[1] - relative[0]).T) / height * 100.0   # [J]
                for slot in np.flatnonzero((pair[:, :, 2] > 0).all(axis=0)):
                    per_slot[int(slot)].append(float(moved[slot]))
    out = {}
    for group, poseval_ids in POSEVAL_GROUPS.items():
        values = [v for k in poseval_ids for v in per_slot[POSEVAL15_TO_POSETRACK17[k]]]
        out[group] = {"speed": float(np.mean(values)) if values else float("nan"), "pairs": len(values)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=Path, required=True, help="a folder of per-sequence annotation files")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args(argv)
    if not args.gt.is_dir():
        parser.error(f"--gt {args.gt}: not a folder of annotation files")
    from tdmi.atomic import atomic_write_json
    from tdmi.data.posetrack import load_sequences

    groups = joint_speeds(load_sequences(args.gt))
    atomic_write_json(args.out, {"gt": str(args.gt), "unit": "% of box height per frame, relative to the hip midpoint",
                                 "groups": groups}, indent=1)
    print("| " + " | ".join(groups) + " |\n" + "| --- " * len(groups) + "|\n| "
          + " | ".join(f"{v['speed']:.2f}" for v in groups.values()) + " |")
    print(f"synthtrack_joint_speed: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
