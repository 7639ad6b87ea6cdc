"""HOG people detector speed (NumPy backend): the current implementation against the one of commit 7deceb1, per frame.

The default ``HOGPeopleDetector().detect(frame)`` on real frames of the street video ``vtest.avi`` (768x576,
``../shared/data/video``; a synthetic frame when it is absent, and the output says so). The baseline, measured in
the same run, is the implementation as of commit 7deceb1, frozen below (``reference_hog_blocks``,
``reference_hog_svm_margins``, ``reference_raw_windows``); NMS and scoring are shared, so any difference comes from
the HOG pyramid. Target (issue #10, point 3): at least 3x less CPU time per frame on one thread, same detections.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/hog_speed.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/hog_speed.py --frames 50 --rounds 3
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/hog_speed.py --video clip.mp4 --out bench-results/hog_clip.json

How it measures, for shared machines: one thread everywhere (OpenCV via ``cv2.setNumThreads``; NumPy's BLAS reads
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` at import, so they are set to 1 here unless already set). Every round
runs both implementations on all frames, alternating which goes first; each is reported by the min and the median
over rounds of its mean seconds per frame, as process CPU time (steadiest when other jobs run: it leaves out the time
spent waiting for a core) and wall time. The pyramid's resizes alone (identical in both, and not sped up) are timed
the same way, to show how much of the time is left that this work cannot touch.

Detections: per frame, both must find the same number of people; the table gives the largest box and score
differences, and how many reference boxes have a current box at IoU >= 0.5. The raw windows (before NMS) are
compared too: same count, largest margin difference.

Prints a table and writes JSON (default bench-results/hog_speed.json, written atomically; ``--out`` to change).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads OpenBLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tdmi.data.fileio import atomic_write_json  # noqa: E402
from tdmi.inference import hog  # noqa: E402
from tdmi.inference.boxes import iou_matrix  # noqa: E402
from tdmi.inference.boxes import Detections  # noqa: E402
from tdmi.inference.hog import HOGPeopleDetector  # noqa: E402

VTEST = ROOT.parent / "shared" / "data" / "video" / "vtest.avi"
TARGET = 3.0

# ------------------------------------------------------------------------ the implementation as of commit 7deceb1
# Frozen copy of the NumPy HOG path of src/tdmi/inference/detectors.py at commit 7deceb1 (whole-image passes, votes
# scattered into [row, tile_x, bin, pixel] by fancy indexing, 105 shifted adds for the SVM), so that the speed-up
# is measured within one run. Only the SVM weights (data, not code) come from the package.

REFERENCE_CELL, REFERENCE_NBINS = 8, 9
REFERENCE_WINDOW_W, REFERENCE_WINDOW_H = 64, 128
REFERENCE_BLOCKS_X, REFERENCE_BLOCKS_Y = 7, 15
REFERENCE_SQRT_LUT_ROW = np.sqrt(np.arange(256, dtype=np.float32)).reshape(1, 256)
REFERENCE_GRADIENT_KERNEL = np.array([[-1.0, 0.0, 1.0]], np.float32)


def reference_block_profile() -> np.ndarray:
    """``[8, 4]`` tent-times-Gaussian weights of a tile's pixels for its block's cells (7deceb1)."""
    offset = np.arange(16)
    tent = np.maximum(0.0, 1.0 - np.abs((offset + 0.5) / REFERENCE_CELL - 0.5 - np.arange(2)[:, None]))
    profile = tent * np.exp(-((offset - 8.0) ** 2) / (2 * 4.0**2))
    return np.concatenate([profile[:, :REFERENCE_CELL], profile[:, REFERENCE_CELL:]], axis=0).T.astype(np.float32)


REFERENCE_PROFILE = reference_block_profile()


def reference_hog_blocks(image_bgr: np.ndarray) -> np.ndarray:
    """``hog_blocks`` as of commit 7deceb1: uint8 ``[H, W, 3]`` -> float32 ``[H/8 - 1, W/8 - 1, 36]``."""
    cell, nbins = REFERENCE_CELL, REFERENCE_NBINS
    image = cv2.LUT(image_bgr, REFERENCE_SQRT_LUT_ROW)
    dx = cv2.filter2D(image, cv2.CV_32F, REFERENCE_GRADIENT_KERNEL, borderType=cv2.BORDER_REFLECT_101)
    dy = cv2.filter2D(image, cv2.CV_32F, REFERENCE_GRADIENT_KERNEL.T, borderType=cv2.BORDER_REFLECT_101)
    squared = dx * dx + dy * dy
    best_dx, best_dy, best = dx[..., 0], dy[..., 0], squared[..., 0]
    for c in (1, 2):
        larger = squared[..., c] > best
        best = np.where(larger, squared[..., c], best)
        best_dx = np.where(larger, dx[..., c], best_dx)
        best_dy = np.where(larger, dy[..., c], best_dy)
    magnitude, angle = cv2.cartToPolar(best_dx, best_dy)
    height, width = magnitude.shape
    tiles_y, tiles_x = height // cell, width // cell
    magnitude = magnitude[: tiles_y * cell, : tiles_x * cell]
    angle = angle[: tiles_y * cell, : tiles_x * cell] * np.float32(nbins / np.pi) - np.float32(0.5)
    lower = np.floor(angle)
    upper_vote = magnitude * (angle - lower)
    lower_vote = magnitude - upper_vote
    lower_bin = lower.astype(np.int32) % nbins
    upper_bin = lower_bin + 1
    upper_bin[upper_bin == nbins] = 0
    row = np.arange(tiles_y * cell, dtype=np.int32)[:, None] * (tiles_x * nbins * cell)
    column = np.arange(tiles_x * cell, dtype=np.int32)
    base = row + (column // cell) * (nbins * cell) + column % cell
    votes = np.zeros(tiles_y * tiles_x * cell * cell * nbins, np.float32)
    votes[(base + lower_bin * cell).ravel()] = lower_vote.ravel()
    votes[(base + upper_bin * cell).ravel()] = upper_vote.ravel()
    profile = REFERENCE_PROFILE
    along_x = (votes.reshape(-1, cell) @ profile).reshape(tiles_y * cell, tiles_x, nbins, 4)
    along_x = along_x[:, :-1, :, :2] + along_x[:, 1:, :, 2:]
    blocks_x = tiles_x - 1
    along_y = np.ascontiguousarray(along_x.reshape(tiles_y, cell, blocks_x, nbins, 2).transpose(0, 2, 3, 4, 1))
    along_y = (along_y.reshape(-1, cell) @ profile).reshape(tiles_y, blocks_x, nbins, 2, 4)
    blocks = along_y[:-1, ..., :2] + along_y[1:, ..., 2:]
    blocks = blocks.transpose(0, 1, 3, 4, 2).reshape(tiles_y - 1, blocks_x, 36)
    blocks = blocks / (np.sqrt((blocks * blocks).sum(-1, keepdims=True)) + 36 * 0.1)
    blocks = np.minimum(blocks, 0.2)
    return blocks / (np.sqrt((blocks * blocks).sum(-1, keepdims=True)) + 1e-3)


def reference_hog_svm_margins(image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_hog_svm_margins`` as of commit 7deceb1 -> (margins [K], top-left corners [K, 2] x, y)."""
    blocks = reference_hog_blocks(image_bgr)
    if blocks.shape[0] < REFERENCE_BLOCKS_Y or blocks.shape[1] < REFERENCE_BLOCKS_X:
        return np.zeros((0,), np.float32), np.zeros((0, 2), np.float32)
    weights, bias = hog._hog_svm()
    per_slot = blocks @ weights.reshape(-1, 36).T
    ny, nx = blocks.shape[0] - REFERENCE_BLOCKS_Y + 1, blocks.shape[1] - REFERENCE_BLOCKS_X + 1
    margins = np.full((ny, nx), bias, np.float32)
    for a in range(REFERENCE_BLOCKS_Y):
        for b in range(REFERENCE_BLOCKS_X):
            margins += per_slot[a:a + ny, b:b + nx, a * REFERENCE_BLOCKS_X + b]
    ys, xs = np.mgrid[0:margins.shape[0], 0:margins.shape[1]]
    corners = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * REFERENCE_CELL
    return margins.ravel().astype(np.float32), corners


def reference_raw_windows(detector: HOGPeopleDetector, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``HOGPeopleDetector._raw_windows`` (NumPy backend) as of commit 7deceb1 -> (boxes [K, 4], margins [K])."""
    height, width = frame_bgr.shape[:2]
    pad = REFERENCE_CELL
    all_boxes, all_margins = [], []
    factor = detector.upscale
    while height * factor >= REFERENCE_WINDOW_H and width * factor >= REFERENCE_WINDOW_W:
        size = (int(round(width * factor)), int(round(height * factor)))
        scaled = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        scaled = cv2.copyMakeBorder(scaled, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        margins, corners = reference_hog_svm_margins(scaled)
        hit = margins >= detector.hit_threshold
        if hit.any():
            xy = (corners[hit] - pad) / factor
            wh = np.broadcast_to(np.float32([REFERENCE_WINDOW_W, REFERENCE_WINDOW_H]) / factor, xy.shape)
            all_boxes.append(np.concatenate([xy, wh], axis=1))
            all_margins.append(margins[hit])
        factor /= detector.scale_step
    if not all_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_margins)


class ReferenceHOGPeopleDetector(HOGPeopleDetector):
    """The detector with the raw windows of commit 7deceb1 (NMS, support and scoring are the current, shared code)."""

    def _raw_windows(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return reference_raw_windows(self, frame_bgr)


# -------------------------------------------------------------------------------------------------- measurement


def pyramid_resizes(detector: HOGPeopleDetector) -> Callable[[np.ndarray], None]:
    """The resizes and padding of the detector's pyramid alone (the same calls in both implementations)."""
    def run(frame_bgr: np.ndarray) -> None:
        height, width = frame_bgr.shape[:2]
        factor = detector.upscale
        while height * factor >= REFERENCE_WINDOW_H and width * factor >= REFERENCE_WINDOW_W:
            size = (int(round(width * factor)), int(round(height * factor)))
            scaled = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
            cv2.copyMakeBorder(scaled, 8, 8, 8, 8, cv2.BORDER_REFLECT_101)
            factor /= detector.scale_step
    return run


def read_frames(video: Path, count: int) -> tuple[list[np.ndarray], str]:
    """The first ``count`` frames of ``video``, or one synthetic frame repeated when it cannot be read."""
    frames = []
    if video.is_file():
        capture = cv2.VideoCapture(str(video))
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
    if frames:
        return frames, f"{video.name}: first {len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]}"
    # Smooth colour gradients plus noise and a few dark upright bars: something for every stage to work on.
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:576, 0:768]
    base = 128 + 60 * np.sin(x / 37.0 + y / 53.0)[..., None] * np.array([1.0, 0.7, -0.5])
    frame = np.clip(base + rng.normal(0, 12, (576, 768, 3)), 0, 255)
    for left in (100, 340, 560):
        frame[200:420, left:left + 40] *= 0.3
    frame = frame.astype(np.uint8)
    return [frame] * count, f"SYNTHETIC 768x576 frame ({video} not found): speed only, detections say little"


def time_rounds(steps: dict[str, Callable[[np.ndarray], object]], frames: list[np.ndarray], rounds: int
                ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list]]:
    """Per round, mean CPU and wall seconds per frame of every step over all frames; the outputs of round one."""
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    wall: dict[str, list[float]] = {name: [] for name in steps}
    outputs: dict[str, list] = {}
    names = list(steps)
    for step in steps.values():  # warm-up: caches, lazily built tables
        step(frames[0])
    for index in range(rounds):
        for name in (names if index % 2 == 0 else names[::-1]):
            results = []
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            for frame in frames:
                results.append(steps[name](frame))
            wall[name].append((time.perf_counter() - wall_start) / len(frames))
            cpu[name].append((time.process_time() - cpu_start) / len(frames))
            outputs.setdefault(name, results)
    return cpu, wall, outputs


def compare_detections(reference: list[Detections], current: list[Detections]) -> dict:
    """Same people per frame? Largest box/score differences where the counts agree; matches at IoU >= 0.5."""
    box_diff = score_diff = 0.0
    count_mismatch = matched = total = 0
    for ref, cur in zip(reference, current):
        total += len(ref.boxes)
        if len(ref.boxes) and len(cur.boxes):
            matched += int((iou_matrix(ref.boxes, cur.boxes).max(axis=1) >= 0.5).sum())
        if ref.boxes.shape != cur.boxes.shape:
            count_mismatch += 1
            continue
        if len(ref.boxes):
            box_diff = max(box_diff, float(np.abs(ref.boxes - cur.boxes).max()))
            score_diff = max(score_diff, float(np.abs(ref.scores - cur.scores).max()))
    return {"frames": len(reference), "reference_boxes": total, "current_boxes": sum(len(c.boxes) for c in current),
            "frames_with_other_count": count_mismatch, "max_box_diff_px": box_diff, "max_score_diff": score_diff,
            "matched_at_iou_0.5": matched, "match_rate": matched / total if total else 1.0}


def compare_raw_windows(reference: HOGPeopleDetector, current: HOGPeopleDetector, frames: list[np.ndarray]) -> dict:
    """Raw windows above the hit threshold, before NMS: same count per frame, largest box/margin differences."""
    mismatch, box_diff, margin_diff, windows = 0, 0.0, 0.0, 0
    for frame in frames:
        ref_boxes, ref_margins = reference._raw_windows(frame)
        cur_boxes, cur_margins = current._raw_windows(frame)
        windows += len(ref_margins)
        if ref_boxes.shape != cur_boxes.shape:
            mismatch += 1
            continue
        if len(ref_margins):
            box_diff = max(box_diff, float(np.abs(ref_boxes - cur_boxes).max()))
            margin_diff = max(margin_diff, float(np.abs(ref_margins - cur_margins).max()))
    return {"reference_windows": windows, "frames_with_other_count": mismatch, "max_box_diff_px": box_diff,
            "max_margin_diff": margin_diff}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VTEST, help="video to read frames from (default: vtest.avi)")
    parser.add_argument("--frames", type=int, default=20, help="frames per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (both implementations each)")
    parser.add_argument("--cv-threads", type=int, default=1, help="cv2.setNumThreads (default 1: one thread)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "hog_speed.json")
    args = parser.parse_args()
    if args.frames < 1 or args.rounds < 1:
        parser.error("--frames and --rounds must be >= 1")

    cv2.setNumThreads(args.cv_threads)
    frames, source = read_frames(args.video, args.frames)
    current = HOGPeopleDetector(backend="numpy")
    reference = ReferenceHOGPeopleDetector(backend="numpy")
    steps = {"reference (7deceb1)": reference.detect, "current": current.detect,
             "pyramid resizes only": pyramid_resizes(current)}
    cpu, wall, outputs = time_rounds(steps, frames, args.rounds)

    rows = {}
    for name in steps:
        rows[name] = {"cpu_min_s": min(cpu[name]), "cpu_median_s": statistics.median(cpu[name]),
                      "wall_min_s": min(wall[name]), "wall_median_s": statistics.median(wall[name])}
    base = rows["reference (7deceb1)"]
    for row in rows.values():
        row["speedup_cpu_min"] = base["cpu_min_s"] / row["cpu_min_s"]
        row["speedup_cpu_median"] = base["cpu_median_s"] / row["cpu_median_s"]
        row["speedup_wall_min"] = base["wall_min_s"] / row["wall_min_s"]
    detections = compare_detections(outputs["reference (7deceb1)"], outputs["current"])
    raw = compare_raw_windows(reference, current, frames)

    threads = (f"cv2 threads={cv2.getNumThreads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
               f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"{source}; {args.rounds} interleaved rounds; {threads}")
    print(f"{'implementation':<24}{'cpu min s/f':>13}{'cpu med s/f':>13}{'wall min s/f':>14}{'x ref (cpu min)':>17}"
          f"{'x ref (cpu med)':>17}")
    for name, row in rows.items():
        print(f"{name:<24}{row['cpu_min_s']:>13.4f}{row['cpu_median_s']:>13.4f}{row['wall_min_s']:>14.4f}"
              f"{row['speedup_cpu_min']:>17.2f}{row['speedup_cpu_median']:>17.2f}")
    resize_share = rows["pyramid resizes only"]["cpu_min_s"] / rows["current"]["cpu_min_s"]
    print(f"the pyramid's resizes are {resize_share:.0%} of the current implementation's CPU time")
    print(f"detections over {detections['frames']} frames: reference {detections['reference_boxes']}, current "
          f"{detections['current_boxes']}; frames with another count: {detections['frames_with_other_count']}; "
          f"max |box diff| {detections['max_box_diff_px']:.2e} px, "
          f"max |score diff| {detections['max_score_diff']:.2e}; "
          f"matched at IoU 0.5: {detections['matched_at_iou_0.5']}/{detections['reference_boxes']}")
    print(f"raw windows (before NMS): reference {raw['reference_windows']}, frames with another count: "
          f"{raw['frames_with_other_count']}; max |box diff| {raw['max_box_diff_px']:.2e} px, max |margin diff| "
          f"{raw['max_margin_diff']:.2e}")

    speedup = rows["current"]["speedup_cpu_min"]
    same = detections["frames_with_other_count"] == 0 and detections["max_box_diff_px"] <= 1e-3
    payload = {"source": source, "frames": len(frames), "rounds": args.rounds, "threads": threads,
               "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
               "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "rows": rows,
               "speedup_cpu_min": speedup, "target": TARGET, "resize_share_of_current": resize_share,
               "detections": detections, "raw_windows": raw, "same_detections": same}
    atomic_write_json(args.out, payload, indent=2)
    print(f"hog_speed: current {speedup:.2f}x faster than 7deceb1 by min CPU time (target >= {TARGET:g}); "
          f"same detections: {same}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
