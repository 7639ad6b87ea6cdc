"""``tdmi demo``: the embedded default. No arguments, no downloads: synthesise, infer, render, score.

Implements ``docs/architecture.md`` "Commands users expect" (``tdmi demo``, embedded default) and ``user-needs.md``
section 3
("CPU fallback for the demo"). Steps, all into ``--out`` (default ``tdmi-demo/``):

1. a short SynthTrack clip (``tdmi.data.synthetic``; 1 sequence x 24 frames at 320x240 by default) with its
   ground truth and its synthetic detections under ``synthtrack/``;
2. ``tdmi infer`` on it (``tdmi.inference.pipeline``, tube mode) with the shipped checkpoint
   ``tdmi/weights/tdmi_demo.safetensors`` or, when the package holds none, a RANDOMLY initialised small model
   (a loud banner says so, and every number is then meaningless);
3. the outputs: ``<sequence>.json`` (PoseTrack18-style poses with track ids), ``<sequence>.mp4`` (skeletons coloured
   per track), ``contact_sheet.png`` (six frames of the rendered video);
4. the PoseTrack mAP against the clip's ground truth (``evaluation.posetrack_ap``, poseval-identical), computed from
   ``predictions/<sequence>.json`` (the GT-aligned file). The boxes are SynthTrack's synthetic detections (GT
   silhouettes with jitter, misses, crowd boxes and false positives), not GT boxes, so the score includes
   detection and tracking errors as a real run would; ``metrics.json`` holds the table and the throughput.

``--video PATH`` runs steps 2-3 on a real video with the best local detector instead (no ground truth, no mAP).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from tdmi.data.fileio import atomic_write_json, read_json
from tdmi.errors import CommandError
from tdmi.inference.infer_command import InferOutcome, infer_source
from tdmi.inference.model_loading import RANDOM_INIT_BANNER, SHIPPED_MODEL_NOTE, load_inference_model, resolve_device
from tdmi.inference.records import PipelineOptions

#: Frames and frame size of the synthetic demo clip (small: the whole demo runs in seconds on a laptop CPU).
DEMO_FRAMES = 24
DEMO_SIZE = (320, 240)
DEMO_SEED = 0
CONTACT_SHEET_FRAMES = 6


def write_contact_sheet_from_video(video: Path, path: Path, count: int = CONTACT_SHEET_FRAMES) -> Optional[Path]:
    """Tile ``count`` evenly spaced frames of a rendered video into a PNG; None when the video cannot be read."""
    from tdmi.errors import DataFormatError
    from tdmi.inference.render import write_contact_sheet
    from tdmi.inference.sources import open_source

    try:
        with open_source(video) as source:
            frames = [(f.index, f.image) for f in source]
    except (DataFormatError, FileNotFoundError):
        return None
    if not frames:
        return None
    picks = sorted({int(round(i)) for i in np.linspace(0, len(frames) - 1, min(count, len(frames)))})
    return write_contact_sheet(path, [frames[i][1] for i in picks], [f"frame {frames[i][0]}" for i in picks],
                               columns=3, tile_width=min(480, frames[0][1].shape[1]))


def _report(outcome: InferOutcome, out: Path) -> None:
    """Print the run's notes, files and throughput; write the contact sheet from the rendered video."""
    for note in outcome.notes:
        print(f"note: {note}", file=sys.stderr)
    s = outcome.stats
    print(f"poses: {outcome.json_path} ({s.frames} frames, {outcome.people} person-frames, {outcome.tracks} tracks)")
    if outcome.video_path is not None:
        print(f"video: {outcome.video_path}")
    print(f"throughput: {s.person_frames_per_second:.1f} person-frames/s for cropping + TDMI ({s.pose_seconds:.2f} s), "
          f"{s.encodes_per_person_frame:.2f} backbone encodes per person-frame; detection {s.detect_seconds:.2f} s")
    sheet = write_contact_sheet_from_video(outcome.video_path, out / "contact_sheet.png") \
        if outcome.video_path else None
    if sheet:
        print(f"contact sheet: {sheet}")


def demo_command(args) -> int:
    """``tdmi demo [--video PATH] [--out DIR] [--device D] [--frames N]``."""
    from tdmi.data.synthetic import generate_synthtrack
    from tdmi.evaluation.posetrack_ap import evaluate_dirs
    from tdmi.evaluation.writers import write_posetrack18_predictions
    from tdmi.inference.detectors import BoxFileDetector, make_detector

    start = time.perf_counter()
    frames = DEMO_FRAMES if getattr(args, "frames", None) is None else int(args.frames)
    if frames < 1 and not getattr(args, "video", None):
        raise CommandError(f"--frames must be >= 1, got {frames}")
    device = resolve_device(getattr(args, "device", None))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_inference_model(None, device=device)
    if loaded.random_init:
        print(RANDOM_INIT_BANNER, file=sys.stderr)
    print(f"model: {loaded.description}")
    options = PipelineOptions(mode="tube", tracker="pose")  # what `tdmi infer` writes by default

    if getattr(args, "video", None):
        if not loaded.random_init:
            print(SHIPPED_MODEL_NOTE)  # the demo's model knows only synthetic people
        detector, detector_description = make_detector(None, None, device=str(device))
        print(f"detector: {detector_description}")
        outcome = infer_source(args.video, out, loaded, detector, detector_description, options, device,
                               render=True)
        _report(outcome, out)
        print(f"demo: {Path(args.video).name}: {outcome.people} person-frames in {outcome.tracks} tracks, no ground "
              f"truth so no mAP{' [RANDOM WEIGHTS]' if loaded.random_init else ''}; wrote {out} in "
              f"{time.perf_counter() - start:.1f} s")
        return 0

    summary = generate_synthtrack(out / "synthtrack", sequences=1, frames=frames, seed=DEMO_SEED, split="val",
                                  size=DEMO_SIZE, progress=False)
    sequence = summary.sequences[0]
    print(f"clip: SynthTrack sequence {sequence}, {frames} frames at {DEMO_SIZE[0]}x{DEMO_SIZE[1]} "
          f"(seed {DEMO_SEED}) in {summary.image_dir / sequence}")
    threshold = loaded.config.data.box_score_threshold
    detector = BoxFileDetector(summary.detections_file, score_threshold=threshold)
    detector_description = (f"SynthTrack's synthetic detections ({summary.detections_file.name}: GT silhouettes with "
                            f"jitter, misses and false positives; score >= {threshold:g}), not GT boxes")
    print(f"boxes: {detector_description}")
    outcome = infer_source(str(summary.image_dir / sequence), out, loaded, detector, detector_description, options,
                           device, render=True, output_stem=sequence)
    _report(outcome, out)

    gt_images = read_json(summary.annotation_dir / f"{sequence}.json")["images"]
    predictions = {(sequence, gt_images[frame.position]["id"]): [p.prediction() for p in frame.people]
                   for frame in outcome.frames}
    prediction_dir = out / "predictions"
    write_posetrack18_predictions(summary.annotation_dir, predictions, prediction_dir)
    result = evaluate_dirs(summary.annotation_dir, prediction_dir)
    print(f"PoseTrack mAP (poseval protocol) on {result.num_frames} labelled frames, synthetic detections:")
    print(result.format_table())
    if loaded.random_init:
        print("(random weights: this mAP is what an untrained model scores, not TDMI's)")
    atomic_write_json(out / "metrics.json", {
        "model": loaded.description, "random_init": loaded.random_init, "boxes": detector_description,
        "sequence": sequence, "frames": frames, "size": list(DEMO_SIZE), "map": result.table,
        "throughput": outcome.stats.to_json()}, indent=2)
    print(f"demo: Mean AP {result.table['Mean']:.1f} on {frames} SynthTrack frames, "
          f"{outcome.stats.person_frames_per_second:.1f} person-frames/s"
          f"{' [RANDOM WEIGHTS]' if loaded.random_init else ''}; wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0
