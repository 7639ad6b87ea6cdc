"""Data pipeline throughput: clip samples per second with 0, 1 and 2 DataLoader workers (384x288, delta = 2),
for float32 frames normalised in the dataset and for uint8 frames (``data.uint8_frames``, normalised on the device).

Uses the real 5-frame sequence ``../shared/data/posetrack18_sample/videos/000001_mpiinew_test`` (1280x720 JPEGs)
when present, else synthesises 1280x720 JPEG frames into a temporary folder. Every frame of the sequence is a
labelled key frame with one person (a tall box in the image centre), so samples include boundary padding as in real
sequences. Ratios are against the 0-worker run measured in the same invocation.

    PYTHONPATH=src python benchmarks/data_speed.py --samples 60 --json-out bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from tdmi.config import AugmentConfig
from tdmi.data.dataset import PoseTrackClipDataset, collate_clips
from tdmi.data.records import Frame, Person, Sequence

SAMPLE_VIDEO = Path(__file__).resolve().parents[1].parent / "shared/data/posetrack18_sample/videos/000001_mpiinew_test"


def synthesise_frames(folder: Path, n: int = 5, width: int = 1280, height: int = 720) -> None:
    """Textured 1280x720 JPEGs (random noise compresses like real photos: worst case for decoding)."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), np.roll(base, 4 * i, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 90])


def build_sequence(folder: Path) -> Sequence:
    image = cv2.imread(str(folder / "000000.jpg"))
    height, width = image.shape[:2]
    files = sorted(p.name for p in folder.glob("*.jpg"))
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, 0] = width / 2 + np.linspace(-60, 60, 17)
    keypoints[:, 1] = np.linspace(height * 0.2, height * 0.8, 17)
    keypoints[:, 2] = 1
    keypoints[3:5] = 0  # PoseTrack ears are never labelled
    box = np.array([width / 2 - 100, height * 0.15, 200, height * 0.7], dtype=np.float32)
    frames = [
        Frame(file_name=name, frame_index=int(Path(name).stem), is_labeled=True, width=width, height=height,
              people=[Person(keypoints=keypoints, bbox=box, track_id=0)])
        for name in files
    ]
    return Sequence(name=folder.name, frames=frames, nframes=len(frames))


def measure(dataset: PoseTrackClipDataset, workers: int, samples: int, batch_size: int) -> dict:
    # Index list repeating the dataset until `samples`, so every worker count does the same work.
    indices = [i % len(dataset) for i in range(samples)]
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_clips)
    start = time.perf_counter()
    first_batch = None
    count = 0
    for batch in loader:
        if first_batch is None:
            first_batch = time.perf_counter() - start
        count += batch["frames"].shape[0]
    elapsed = time.perf_counter() - start
    return {"workers": workers, "frames": "uint8" if dataset.uint8_frames else "float32", "samples": count,
            "seconds": elapsed, "samples_per_s": count / elapsed, "first_batch_s": first_batch,
            "frame_bytes_per_clip": int(dataset[0]["frames"].numel() * dataset[0]["frames"].element_size())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60, help="clip samples per worker setting")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mode", choices=["train", "val"], default="train", help="train = with augmentation")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if SAMPLE_VIDEO.is_dir() and any(SAMPLE_VIDEO.glob("*.jpg")):
            folder, source = SAMPLE_VIDEO, "posetrack18_sample/videos/000001_mpiinew_test (real, 1280x720)"
        else:
            folder, source = Path(tmp) / "synthetic_seq", "synthesised 1280x720 JPEGs"
            folder.mkdir()
            synthesise_frames(folder)
        sequence = build_sequence(folder)
        dataset = PoseTrackClipDataset(
            [sequence], folder, mode=args.mode, input_size=(288, 384), heatmap_size=(72, 96), sigma=3.0, delta=2,
            augment=AugmentConfig() if args.mode == "train" else None,
        )
        dataset[0]  # warm up imports and OpenCV
        rows = []
        for uint8 in (False, True):
            dataset.uint8_frames = uint8
            rows += [measure(dataset, w, args.samples, args.batch_size) for w in args.workers]

    baseline = rows[0]["samples_per_s"]
    for row in rows:
        row["ratio_vs_first"] = row["samples_per_s"] / baseline
    print(f"data pipeline: {source}, mode={args.mode}, 384x288, delta=2 (T=5), batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'frames':>7} {'workers':>7} {'samples':>7} {'seconds':>8} {'samples/s':>10} {'x first':>8} "
          f"{'MB/clip':>8}")
    for row in rows:
        print(f"{row['frames']:>7} {row['workers']:>7} {row['samples']:>7} {row['seconds']:>8.2f} "
              f"{row['samples_per_s']:>10.1f} {row['ratio_vs_first']:>8.2f} {row['frame_bytes_per_clip'] / 1e6:>8.2f}")
    if args.json_out is not None:
        result = {"benchmark": "data_speed", "source": source, "mode": args.mode, "input_size": [288, 384],
                  "delta": 2, "batch_size": args.batch_size, "cpu_count": os.cpu_count(),
                  "machine": platform.machine(), "torch": torch.__version__, "opencv": cv2.__version__, "rows": rows}
        tmp_path = args.json_out.with_name(args.json_out.name + ".tmp")
        tmp_path.write_text(json.dumps(result, indent=2))
        os.replace(tmp_path, args.json_out)
    best = max(rows, key=lambda r: r["samples_per_s"])
    print(f"best: {best['samples_per_s']:.1f} samples/s with {best['workers']} workers, {best['frames']} frames")


if __name__ == "__main__":
    main()
