"""Write a copy of SynthTrack ground truth in which only the hard key frames are evaluated.

    python scripts/synthtrack_hard_subset.py data/annotations/val hard_gt/
    tdmi evaluate --gt hard_gt/ --pred runs/tdmi/test/predictions

A labelled frame is "hard" when SynthTrack tagged it as motion-blurred or with an occluded person (the difficulties
the paper says temporal modelling must overcome). poseval evaluates only frames whose ground truth has people, so
removing the annotations of every other frame restricts the mAP to the hard frames while the prediction files stay
valid (same frames, same order).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def is_hard(image: dict) -> bool:
    tags = image.get("synthtrack") or {}
    return bool(tags.get("motion_blur") or tags.get("occluded"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gt_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    kept = total = 0
    for path in sorted(args.gt_dir.glob("*.json")):
        data = json.loads(path.read_text())
        hard = {image["id"] for image in data["images"] if is_hard(image)}
        labelled = {a["image_id"] for a in data["annotations"]}
        total += len(labelled)
        kept += len(labelled & hard)
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in hard]
        (args.out_dir / path.name).write_text(json.dumps(data))
    print(f"{kept} of {total} labelled frames are blurred or occluded; wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
