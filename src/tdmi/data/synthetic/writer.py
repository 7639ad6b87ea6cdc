"""SynthTrack on disk: JPEG frames, masks, per-sequence PoseTrack18 JSON, detections; ``tdmi synth``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from tdmi.data.fileio import atomic_write_bytes
from tdmi.data.synthetic.frames import _FrameResult, _iter_frames, _num_annotatable, _validate
from tdmi.data.synthetic.options import (_SCORED, DEFAULT_SIZE, SynthOptions, SynthSummary,
                                         categories, image_id, labeled_frame_mask, pt18_bbox, sequence_name)
from tdmi.errors import CommandError


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CommandError("OpenCV could not encode a JPEG frame")
    return buf.tobytes()


def _detections(frame: _FrameResult, img_id: int, size: tuple[int, int], rng: np.random.Generator,
                options: SynthOptions) -> list[dict]:
    """Noisy person boxes from the true silhouettes: jitter, misses (more when occluded), false positives."""
    w, h = size
    boxes: list[tuple[list[float], float]] = []

    def clipped(x: float, y: float, bw: float, bh: float) -> Optional[list[float]]:
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, w - 1.0), min(y + bh, h - 1.0)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        return [x0, y0, x1 - x0, y1 - y0]

    for i in range(len(frame.extents)):
        seen = frame.visible[i, list(_SCORED)].mean()
        # Draw every random number whatever the outcome, so one person's fate does not shift the others'.
        miss, jitter, score_noise = rng.uniform(), rng.normal(0.0, options.detection_jitter, 4), rng.normal(0, 0.06)
        if seen == 0 or miss < options.detection_miss_rate + 0.7 * (1.0 - seen) ** 2:
            continue
        x, y, bw, bh = frame.extents[i]
        box = clipped(x + jitter[0] * bw, y + jitter[1] * bh, bw * (1 + jitter[2]), bh * (1 + jitter[3]))
        if box is not None:
            boxes.append((box, float(np.clip(0.55 + 0.42 * seen + score_noise, 0.21, 0.995))))
    for x, y, bw, bh in frame.crowd_extents:
        if rng.uniform() < 0.3:
            box = clipped(x, y, bw, bh)
            if box is not None:
                boxes.append((box, float(rng.uniform(0.21, 0.5))))
    for _ in range(int(rng.poisson(options.detection_false_positives))):
        bh = float(rng.uniform(0.1, 0.5) * h)
        bw = bh * float(rng.uniform(0.3, 0.6))
        box = clipped(float(rng.uniform(-0.1, 0.95) * w), float(rng.uniform(0.0, 0.8) * h), bw, bh)
        if box is not None:
            boxes.append((box, float(rng.uniform(0.21, 0.55))))
    return [{"image_id": img_id, "bbox": [round(v, 2) for v in box], "score": round(score, 4), "category_id": 1}
            for box, score in boxes]


def _sequence_json(name: str, split: str, sequence_index: int, frames: int, size: tuple[int, int],
                   rows: list[_FrameResult], labeled: np.ndarray, track_ids: list[int], actions: list[str],
                   scene_summary: dict) -> dict:
    w, h = size
    images, annotations = [], []
    for f, row in enumerate(rows):
        img_id = image_id(sequence_index, f)
        images.append({
            "has_no_densepose": True,
            "is_labeled": bool(labeled[f]),
            "file_name": f"images/{split}/{name}/{f:06d}.jpg",
            "nframes": frames,
            "frame_id": img_id,
            "vid_id": name[:6],
            "ignore_regions_y": [[int(v) for v in poly[:, 1]] for poly in row.ignore_regions],
            "ignore_regions_x": [[int(v) for v in poly[:, 0]] for poly in row.ignore_regions],
            "id": img_id,
            "width": w,
            "height": h,
            "mask_file": f"mask/{split}/{name}/{f:06d}.jpg",
            "synthtrack": row.tags,
        })
        if not labeled[f]:
            continue
        index = 0
        for i in range(len(row.keypoints)):
            kps = row.keypoints[i]
            if (kps[:, 2] > 0).sum() < 2:
                continue
            flat = [float(v) if k % 3 != 2 else int(v) for k, v in enumerate(kps.reshape(-1).tolist())]
            annotations.append({
                "bbox_head": [int(v) for v in row.head_boxes[i]],
                "keypoints": flat,
                "track_id": track_ids[i],
                "image_id": img_id,
                "bbox": pt18_bbox(kps),
                "scores": [],
                "category_id": 1,
                "id": img_id * 100 + index,
                "iscrowd": False,
                "num_keypoints": int((kps[:, 2] > 0).sum()),
                "synthtrack": {"visible": [int(v) for v in row.visible[i]], "action": actions[i],
                               **row.person_fields[i]},
            })
            index += 1
    return {"categories": categories(), "images": images, "annotations": annotations, "synthtrack": scene_summary}


def _write_sequence(out: Path, split: str, s: int, name: str, scene, results, size: tuple[int, int],
                    labeled: np.ndarray, options: SynthOptions, seed: int, summary: SynthSummary,
                    detections: list[dict], labels: Optional[list[_FrameResult]] = None) -> list[_FrameResult]:
    """Write one sequence's frames, masks and annotation file; add its boxes to ``detections`` and its counts to
    ``summary``. ``labels``: frames whose keypoint labels replace the rendered ones (a counterfactual variant is
    labelled as its clean scene). Returns the frame results (images dropped)."""
    det_rng = np.random.default_rng([seed, s, 2])
    rows: list[_FrameResult] = []
    for f, row in enumerate(results):
        atomic_write_bytes(summary.image_dir / name / f"{f:06d}.jpg", _encode_jpeg(row.image, options.jpeg_quality))
        mask = np.zeros((size[1], size[0]), np.uint8)
        for poly in row.ignore_regions:
            cv2.fillPoly(mask, [poly.astype(np.int32)], 255)
        atomic_write_bytes(out / "mask" / split / name / f"{f:06d}.jpg", _encode_jpeg(mask, 90))
        if labels is not None:
            row.keypoints, row.head_boxes = labels[f].keypoints, labels[f].head_boxes
        detections.extend(_detections(row, image_id(s, f), size, det_rng, options))
        row.image = np.empty(0, np.uint8)  # keep only the labels in memory
        rows.append(row)
    annotated = scene.people[:_num_annotatable(scene)]
    track_ids = [p.track_id for p in annotated]
    actions = [p.action for p in annotated]
    doc = _sequence_json(name, split, s, len(rows), size, rows, labeled, track_ids, actions, scene.summary)
    atomic_write_bytes(summary.annotation_dir / f"{name}.json", json.dumps(doc).encode())
    summary.frames += len(rows)
    summary.labeled_frames += int(labeled.sum())
    summary.annotations += len(doc["annotations"])
    summary.blurred_frames += sum(r.tags["motion_blur"] for r in rows)
    summary.occluded_frames += sum(r.tags["occluded"] for r in rows)
    return rows


def generate_synthtrack(out_dir: str | os.PathLike, sequences: int = 10, frames: int = 30, seed: int = 0,
                        split: str = "val", size: tuple[int, int] = DEFAULT_SIZE,
                        options: Optional[SynthOptions] = None, progress: bool = True) -> SynthSummary:
    """Write a SynthTrack set in the PoseTrack18 layout under ``out_dir`` (see the module docstring).

    Every file is written atomically (temporary file, then rename). Refuses to write into an annotation folder
    that holds other sequence files, so readers never mix two generations.
    """
    return _generate(out_dir, sequences, frames, seed, split, size, options or SynthOptions(), progress)[0]


def generate_counterfactual(out_dir: str | os.PathLike, sequences: int = 30, frames: int = 20, seed: int = 0,
                            split: str = "cf", size: tuple[int, int] = DEFAULT_SIZE,
                            progress: bool = True) -> list[SynthSummary]:
    """Write the paired counterfactual sets ``<split>clean``, ``<split>distractor`` and ``<split>background``.

    Sequence ``i`` of each is the same scene (:data:`~tdmi.data.synthetic.scene.VARIANTS`): one key person before a
    still background; the same plus an unannotated person walking through its crop; the same with a panning,
    moving background. Every entity draws from its own random stream, so the variants differ only in the toggled
    element, and the key person's annotations are the clean scene's in all three (a distractor that hides a joint
    does not change its label). Returns the three summaries.
    """
    from tdmi.data.synthetic.scene import VARIANTS

    options = SynthOptions()
    summaries, clean_rows = [], None
    for variant in VARIANTS:  # "clean" first: its labels are every variant's
        summary, rows = _generate(out_dir, sequences, frames, seed, f"{split}{variant}", size, options, progress,
                                  variant=variant, labels=clean_rows)
        clean_rows = clean_rows or rows
        summaries.append(summary)
    return summaries


def _generate(out_dir, sequences: int, frames: int, seed: int, split: str, size: tuple[int, int],
              options: SynthOptions, progress: bool, variant: Optional[str] = None,
              labels: Optional[list[list[_FrameResult]]] = None) -> tuple[SynthSummary, list[list[_FrameResult]]]:
    """:func:`generate_synthtrack`, for one counterfactual ``variant`` too; ``labels[s]``: the frames whose keypoint
    labels sequence ``s`` takes. Returns the summary and every sequence's frame results (without images)."""
    from tqdm import tqdm

    size = (int(size[0]), int(size[1]))
    _validate(frames, size, seed, split, sequences)
    start = time.perf_counter()
    out = Path(out_dir)
    names = [sequence_name(i, split) for i in range(sequences)]
    annotation_dir = out / "annotations" / split
    if annotation_dir.is_dir():
        stale = sorted(p.name for p in annotation_dir.glob("*.json") if p.stem not in set(names))
        if stale:
            raise CommandError(f"{annotation_dir}: already holds {len(stale)} other sequence file(s) "
                               f"(e.g. {stale[0]}); write to an empty --out or delete them first")
    summary = SynthSummary(out_dir=out, split=split, sequences=names, annotation_dir=annotation_dir,
                           image_dir=out / "images" / split, detections_file=out / "detections" / f"{split}_boxes.json")
    labeled = labeled_frame_mask(frames, options.dense_labeled_frames, options.labeled_every)
    detections: list[dict] = []
    written: list[list[_FrameResult]] = []
    for s in tqdm(range(sequences), desc=f"synth {split}", unit="seq", disable=not progress):
        scene, results = _iter_frames(seed, s, frames, size, options, variant)
        written.append(_write_sequence(out, split, s, names[s], scene, results, size, labeled, options, seed, summary,
                                       detections, labels[s] if labels is not None else None))
    atomic_write_bytes(summary.detections_file, json.dumps(detections).encode())
    summary.detections = len(detections)
    record = {"version": options.version, "seed": seed, "split": split, "variant": variant, "sequences": sequences,
              "frames": frames, "size": list(size), "options": asdict(options), "sequence_names": names,
              "counts": {"frames": summary.frames, "labeled_frames": summary.labeled_frames,
                         "annotations": summary.annotations, "detections": summary.detections,
                         "blurred_frames": summary.blurred_frames, "occluded_frames": summary.occluded_frames}}
    atomic_write_bytes(out / f"synthtrack_{split}.json", json.dumps(record, indent=1).encode())
    summary.seconds = time.perf_counter() - start
    return summary, written


def synth_command(args) -> int:
    """``tdmi synth``: generate a set (or, with ``--counterfactual``, the three paired variant sets) and print a
    one-line summary of each."""
    size = tuple(args.size) if args.size else DEFAULT_SIZE
    if getattr(args, "counterfactual", False):
        if getattr(args, "generator_version", None) == 1:
            raise CommandError("--counterfactual needs SynthTrack version 2 (per-entity random streams); drop "
                               "--generator-version 1")
        split = args.split if args.split is not None else "cf"
        for summary in generate_counterfactual(args.out, sequences=args.sequences, frames=args.frames,
                                               seed=args.seed, split=split, size=size):
            print(summary.line())
        return 0
    version = getattr(args, "generator_version", None)
    options = SynthOptions(version=version) if version is not None else None
    summary = generate_synthtrack(args.out, sequences=args.sequences, frames=args.frames, seed=args.seed,
                                  split=args.split if args.split is not None else "val", size=size, options=options)
    print(summary.line())
    return 0
