"""Video inference speed: naive per-key-frame recompute vs exact mode vs tube mode (feature cache), and tube's mAP cost.

Measured in one run, on the same frames and the same boxes (detection is done ONCE beforehand and excluded):

- ``vtest.avi`` (``../shared/data/video``; skipped when absent): the first ``--video-frames`` frames of a real street
  scene, boxes from the built-in HOG detector, computed once and cached in ``--cache-dir``;
- SynthTrack (``tdmi.data.synthetic``, generated once into ``--cache-dir``): ``--synth-sequences`` sequences with
  their synthetic detections (GT silhouettes with jitter, misses and false positives).

Modes (``tdmi.inference.pipeline``): (a) ``naive``: ``model(clip [1, T, 3, H, W])`` per person and key frame, T
encodes per person-frame, no batching; (b) ``exact``: the paper's per-key-frame crops, batched across people, padded
slots encoded once; (c) ``tube``: one crop per track and window of ``--window`` key frames, each (track, frame,
window) encoded once; (d) ``warp``: each person-frame encoded once in its own crop, supporting features resampled
into the key frame's crop; plus ``tube-online`` and ``warp-online`` (causal clips). Timing = cropping + encode +
decode + heatmap decoding (``RunStats.pose_seconds``), the fastest of ``--repeats`` interleaved runs (the machine is
shared). Person-frames/s and the speed-up over naive are reported per dataset; on SynthTrack also the PoseTrack mAP
(poseval protocol) of naive (= exact, numerically), tube and warp. Target (issue): >= 4x naive at delta 2 with
<= 0.5 mAP loss.

The mAP is only meaningful with trained weights (``--checkpoint``, or the shipped demo checkpoint when the package
has one); with random weights both modes score ~0 and the comparison says nothing. Speed needs no training:
``--random-init`` times the model of ``--config`` (with ``--set`` overrides) at today's defaults with random
weights, e.g. before and after a layout change.

    PYTHONPATH=src python benchmarks/infer_speed.py
    PYTHONPATH=src python benchmarks/infer_speed.py --checkpoint runs/synth/best.safetensors --window 16
    PYTHONPATH=src python benchmarks/infer_speed.py --random-init --set model.tde.stage1_feature=layer1
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from tdmi.data.fileio import atomic_write_json, read_json
from tdmi.errors import DataFormatError
from tdmi.inference.detectors import BoxFileDetector, Detections, HOGPeopleDetector, write_boxes_file
from tdmi.inference.pipeline import (DEFAULT_WINDOW, FramePoses, PipelineOptions, VideoPoseEstimator,
                                     load_inference_model, resolve_device)
from tdmi.inference.sources import SourceFrame, open_source

REPO = Path(__file__).resolve().parents[1]
VTEST = REPO.parent / "shared" / "data" / "video" / "vtest.avi"
MODES = (("naive", False), ("exact", False), ("tube", False), ("tube", True), ("warp", False), ("warp", True))


class CachedBoxes:
    """Detections looked up by frame index (boxes computed once, outside the timed runs)."""

    def __init__(self, boxes: dict[int, Detections], description: str) -> None:
        self.boxes = boxes
        self.description = description

    def detect(self, frame_bgr, frame_index: Optional[int] = None, frame_name: Optional[str] = None) -> Detections:
        return self.boxes.get(int(frame_index), Detections.empty())


def read_frames(spec: Path, limit: Optional[int] = None) -> list[SourceFrame]:
    frames = []
    with open_source(spec) as source:
        for frame in source:
            frames.append(frame)
            if limit is not None and len(frames) >= limit:
                break
    return frames


def hog_boxes(frames: list[SourceFrame], cache: Path, source: str) -> CachedBoxes:
    """HOG boxes of ``frames``, read from ``cache`` when it exists, else detected once and written there."""
    if not cache.is_file():
        detector = HOGPeopleDetector()
        start = time.perf_counter()
        detections = [(f.index, f.name, *detector.detect(f.image, f.index, f.name)) for f in frames]
        print(f"HOG on {len(frames)} frames: {time.perf_counter() - start:.1f} s (once; cached in {cache})")
        write_boxes_file(cache, detections, source=source)
    reader = BoxFileDetector(cache)
    boxes = {f.index: reader.detect(f.image, f.index, f.name) for f in frames}
    return CachedBoxes(boxes, f"HOG people detector, cached in {cache.name}")


def file_boxes(frames: list[SourceFrame], path: Path, sequence: str, threshold: float) -> CachedBoxes:
    reader = BoxFileDetector(path, score_threshold=threshold)
    reader.select_sequence(sequence)
    return CachedBoxes({f.index: reader.detect(f.image, f.index, f.name) for f in frames},
                       f"SynthTrack synthetic detections (score >= {threshold:g})")


def run_mode(loaded, frames: list[SourceFrame], boxes: CachedBoxes, mode: str, online: bool, window: int,
             device: torch.device) -> tuple[dict, list[FramePoses]]:
    collected: list[FramePoses] = []
    estimator = VideoPoseEstimator(loaded.model, loaded.config, PipelineOptions(mode=mode, online=online,
                                                                                window=window), device)
    stats = estimator.run(frames, boxes, lambda frame, image: collected.append(frame))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return stats.to_json(), collected


def mode_name(mode: str, online: bool) -> str:
    return f"{mode}-online" if online else mode


def measure(loaded, clips: list[tuple[str, list[SourceFrame], CachedBoxes]], window: int, repeats: int,
            device: torch.device) -> tuple[dict[str, dict], dict[str, dict[str, list[FramePoses]]]]:
    """Fastest pose time per mode over ``repeats`` rounds (modes interleaved, order rotated each round)."""
    from tqdm import tqdm

    best: dict[str, dict] = {}
    outputs: dict[str, dict[str, list[FramePoses]]] = {}
    rounds = [MODES[r % len(MODES):] + MODES[:r % len(MODES)] for r in range(repeats)]
    with tqdm(total=repeats * len(MODES) * len(clips), desc="runs", unit="run", file=sys.stderr) as bar:
        for order in rounds:
            for mode, online in order:
                name = mode_name(mode, online)
                total = {"pose_seconds": 0.0, "person_frames": 0, "encoded_crops": 0, "frames": 0}
                for clip_name, frames, boxes in clips:
                    stats, collected = run_mode(loaded, frames, boxes, mode, online, window, device)
                    for key in total:
                        total[key] += stats[key]
                    outputs.setdefault(name, {})[clip_name] = collected
                    bar.update(1)
                if name not in best or total["pose_seconds"] < best[name]["pose_seconds"]:
                    best[name] = total
    for total in best.values():
        total["person_frames_per_second"] = total["person_frames"] / total["pose_seconds"]
        total["encodes_per_person_frame"] = total["encoded_crops"] / max(total["person_frames"], 1)
    base = best["naive"]["person_frames_per_second"]
    for total in best.values():
        total["speedup_vs_naive"] = total["person_frames_per_second"] / base
    return best, outputs


def synth_map(outputs: dict[str, list[FramePoses]], annotation_dir: Path, out_dir: Path) -> dict:
    from tdmi.evaluation.posetrack_ap import evaluate_dirs
    from tdmi.evaluation.writers import write_posetrack18_predictions

    predictions = {}
    for sequence, frames in outputs.items():
        ids = [image["id"] for image in read_json(annotation_dir / f"{sequence}.json")["images"]]
        for frame in frames:
            predictions[(sequence, ids[frame.position])] = [p.prediction() for p in frame.people]
    write_posetrack18_predictions(annotation_dir, predictions, out_dir)
    return evaluate_dirs(annotation_dir, out_dir).table


def print_table(title: str, best: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'mode':<13}{'person-frames':>14}{'pose s':>9}{'pf/s':>9}{'encodes/pf':>12}{'x naive':>9}")
    for name, row in best.items():
        print(f"{name:<13}{row['person_frames']:>14d}{row['pose_seconds']:>9.2f}{row['person_frames_per_second']:>9.1f}"
              f"{row['encodes_per_person_frame']:>12.2f}{row['speedup_vs_naive']:>9.2f}")


def _conv_macs(module: torch.nn.Module, output: torch.Tensor) -> int:
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 4:
        return 0
    return int(output.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3])


def time_breakdown(model: torch.nn.Module, input_size: tuple[int, int], num_frames: int, clips: int, repeats: int,
                   device: torch.device) -> dict:
    """Where the pose time goes: ``encode`` per frame crop and ``decode`` per clip, the decoder split into its
    parts (forward hooks timing each part and counting its conv multiply-adds), at the pipeline's batch sizes."""
    model.eval()
    width, height = input_size
    crops = torch.randn(clips * num_frames, 3, height, width, device=device)
    parts: dict[str, torch.nn.Module] = {}
    tde = getattr(model, "tde", None)
    if tde is not None:
        for i, j in enumerate(tde.stages):
            parts[f"TDE stage {j + 1} intra-stage fusion"] = tde.intra_stage[i]
            if tde.modulation is not None:
                parts[f"TDE stage {j + 1} spatial modulation (DCN)"] = tde.modulation[i]
        if isinstance(tde.accumulate, torch.nn.ModuleList):  # progressive: the steps are called one by one
            for k, step in enumerate(tde.accumulate):
                parts[f"TDE accumulation step {k + 1}"] = step
        else:
            parts["TDE accumulation"] = tde.accumulate
    for name in ("rdm", "spatiotemporal_block", "fusion", "head"):
        if getattr(model, name, None) is not None:
            parts[name.replace("_", " ")] = getattr(model, name)
    seconds = dict.fromkeys(parts, 0.0)
    macs = dict.fromkeys(parts, 0)
    starts: dict[str, float] = {}
    handles = []

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for name, module in parts.items():
        def pre(_m, _i, name=name):
            sync()
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            sync()
            seconds[name] += time.perf_counter() - starts[name]

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
        for sub in module.modules():
            def count(m, _i, output, name=name):
                if isinstance(output, torch.Tensor):
                    macs[name] += _conv_macs(m, output)
            handles.append(sub.register_forward_hook(count))
    best_encode = best_decode = float("inf")
    best_parts: dict[str, float] = {}
    try:
        with torch.no_grad():
            for _ in range(repeats + 1):  # the first round warms up
                sync()
                start = time.perf_counter()
                features = model.encode(crops)
                sync()
                encode = time.perf_counter() - start
                clip_features = features._make(f.unflatten(0, (clips, num_frames)) for f in features)
                seconds.update(dict.fromkeys(parts, 0.0))
                macs.update(dict.fromkeys(parts, 0))
                start = time.perf_counter()
                model.decode(clip_features)
                sync()
                decode = time.perf_counter() - start
                best_encode = min(best_encode, encode)
                if decode < best_decode:
                    best_decode, best_parts = decode, dict(seconds)
    finally:
        for handle in handles:
            handle.remove()
    encode_ms = 1000 * best_encode / (clips * num_frames)
    decode_ms = 1000 * best_decode / clips
    rows = {name: {"ms_per_clip": 1000 * best_parts[name] / clips, "mmac_per_clip": macs[name] / clips / 1e6,
                   "share_of_decode": best_parts[name] / best_decode} for name in parts}
    accounted = sum(best_parts.values())
    rows["rest (checks, stacking, HRNet head on the key frame)"] = {
        "ms_per_clip": 1000 * (best_decode - accounted) / clips, "mmac_per_clip": None,
        "share_of_decode": (best_decode - accounted) / best_decode}
    return {"encode_ms_per_crop": encode_ms, "decode_ms_per_clip": decode_ms,
            "decode_over_encode": decode_ms / encode_ms, "clips": clips, "num_frames": num_frames, "parts": rows}


def speedup_bound(num_frames: int, decode_over_encode: float, encodes_per_person_frame: float) -> float:
    """tube (or warp) / naive speed from the two costs alone: naive encodes T crops and decodes one clip per
    person-frame, tube and warp encode ``encodes_per_person_frame`` crops and decode one clip (warp's resampling of
    the supporting features is not in it: its cost shows as the distance between the bound and the measurement)."""
    return (num_frames + decode_over_encode) / (encodes_per_person_frame + decode_over_encode)


def print_breakdown(breakdown: dict, tube_rows: dict[str, float]) -> None:
    e, d = breakdown["encode_ms_per_crop"], breakdown["decode_ms_per_clip"]
    t = breakdown["num_frames"]
    print(f"\nwhere the pose time goes ({breakdown['clips']} clips per decode call): encode {e:.2f} ms per frame "
          f"crop, decode {d:.2f} ms per clip = {d / e:.2f} encodes")
    print(f"{'decoder part':<52}{'ms/clip':>9}{'share':>8}{'MMAC/clip':>11}")
    for name, row in breakdown["parts"].items():
        mmac = f"{row['mmac_per_clip']:>11.1f}" if row["mmac_per_clip"] is not None else f"{'':>11}"
        print(f"{name:<52}{row['ms_per_clip']:>9.2f}{row['share_of_decode']:>8.1%}{mmac}")
    ratio = d / e
    print(f"tube or warp / naive bound from these costs: (T + D/E) / (encodes per person-frame + D/E), T = {t}, D/E = "
          f"{ratio:.2f}:")
    for name, encodes in tube_rows.items():
        print(f"  {name}: {encodes:.2f} encodes/pf -> {speedup_bound(t, ratio, encodes):.2f}x")
    print(f"  every frame encoded once (1.00 encodes/pf) -> {speedup_bound(t, ratio, 1.0):.2f}x; 4x needs D/E <= "
          f"{max((t - 4.0) / 3.0, 0.0):.2f} even then")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "tdmi_w8_synth_128x96.yaml"),
                        help="model config for random weights (ignored with --checkpoint)")
    parser.add_argument("--checkpoint", help="trained tdmi checkpoint (default: the shipped demo one, else random)")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights for the model of --config (speed only; the mAP columns mean nothing)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for --random-init (repeatable), e.g. model.tde.stage1_feature=layer1")
    parser.add_argument("--video", type=Path, default=VTEST, help="real video (default: shared vtest.avi)")
    parser.add_argument("--video-frames", type=int, default=60)
    parser.add_argument("--synth-sequences", type=int, default=3)
    parser.add_argument("--synth-frames", type=int, default=30)
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="tube window in key frames")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the fastest counts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran 20x slower)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "bench-results" / "infer_speed_cache")
    parser.add_argument("--json-out", type=Path, default=REPO / "bench-results" / "infer_speed.json")
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from tdmi.inference import pipeline

    if args.random_init and args.checkpoint:
        parser.error("--random-init and --checkpoint exclude each other")
    if args.overrides and not args.random_init:
        parser.error("--set applies to --random-init only (a checkpoint carries its own config)")
    if args.random_init or (args.checkpoint is None and pipeline.shipped_checkpoint() is None):
        loaded = load_inference_model(None, args.config, args.overrides, device=device, random_init=True)
    else:
        loaded = load_inference_model(args.checkpoint, device=device)
    print(f"model: {loaded.description}; delta={loaded.config.model.delta}, window={args.window}, threads="
          f"{torch.get_num_threads()}, device={device}")
    if loaded.random_init:
        print("WARNING: random weights: speeds are real, mAP values are meaningless (pass --checkpoint)")
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    payload: dict = {"model": loaded.description, "random_init": loaded.random_init, "overrides": args.overrides,
                     "stage1_feature": loaded.config.model.tde.stage1_feature, "window": args.window,
                     "delta": loaded.config.model.delta, "threads": torch.get_num_threads(), "device": str(device),
                     "machine": platform.processor() or platform.machine(), "repeats": args.repeats, "datasets": {}}

    if args.video.is_file():
        try:
            frames = read_frames(args.video, args.video_frames)
        except DataFormatError as err:
            frames = []
            print(f"skipping {args.video}: {err}")
        if frames:
            boxes = hog_boxes(frames, args.cache_dir / f"{args.video.stem}_{len(frames)}_hog.json", args.video.stem)
            count = sum(len(d.boxes) for d in boxes.boxes.values())
            print(f"{args.video.name}: {len(frames)} frames, {count} HOG boxes")
            best, _ = measure(loaded, [(args.video.stem, frames, boxes)], args.window, args.repeats, device)
            print_table(f"{args.video.name} ({len(frames)} frames, HOG boxes, detection excluded)", best)
            payload["datasets"]["vtest"] = {"frames": len(frames), "boxes": count, "modes": best}
    else:
        print(f"skipping the real video: {args.video} not found")

    from tdmi.data.synthetic import generate_synthtrack

    synth_dir = args.cache_dir / f"synth_{args.synth_sequences}x{args.synth_frames}"
    if not (synth_dir / "synthtrack_val.json").is_file():
        generate_synthtrack(synth_dir, sequences=args.synth_sequences, frames=args.synth_frames, seed=0)
    record = read_json(synth_dir / "synthtrack_val.json")
    annotation_dir = synth_dir / "annotations" / "val"
    detections = synth_dir / "detections" / "val_boxes.json"
    clips = []
    for sequence in record["sequence_names"]:
        frames = read_frames(synth_dir / "images" / "val" / sequence)
        clips.append((sequence, frames, file_boxes(frames, detections, sequence,
                                                   loaded.config.data.box_score_threshold)))
    best, outputs = measure(loaded, clips, args.window, args.repeats, device)
    maps = {name: synth_map(outputs[name], annotation_dir, args.cache_dir / "predictions" / name)
            for name in ("naive", "tube", "tube-online", "warp", "warp-online")}
    for name, table in maps.items():
        best[name]["map"] = table["Mean"]
    print_table(f"SynthTrack ({len(clips)} x {args.synth_frames} frames, synthetic detections)", best)
    loss = maps["naive"]["Mean"] - maps["tube"]["Mean"]
    print(f"SynthTrack mAP: naive/exact {maps['naive']['Mean']:.1f}, tube {maps['tube']['Mean']:.1f} "
          f"(loss {loss:.1f}), tube-online {maps['tube-online']['Mean']:.1f}, warp {maps['warp']['Mean']:.1f} "
          f"(loss {maps['naive']['Mean'] - maps['warp']['Mean']:.1f}), warp-online {maps['warp-online']['Mean']:.1f}"
          f"{'  [random weights: meaningless]' if loaded.random_init else ''}")
    payload["datasets"]["synthtrack"] = {"sequences": len(clips), "frames_per_sequence": args.synth_frames,
                                         "modes": best, "map_tables": maps, "map_loss_tube": loss,
                                         "map_loss_warp": maps["naive"]["Mean"] - maps["warp"]["Mean"]}
    from tdmi.inference.pipeline import PipelineOptions as _Options

    breakdown = time_breakdown(loaded.model, tuple(loaded.config.model.input_size), loaded.config.model.delta * 2 + 1,
                               _Options().decode_batch, args.repeats + 1, device)
    tube_rows = {f"{d} {mode}": v["modes"][mode]["encodes_per_person_frame"]
                 for d, v in payload["datasets"].items() for mode in ("tube", "warp")}
    for d, v in payload["datasets"].items():
        for mode in ("tube", "warp"):
            row = v["modes"][mode]
            row["speedup_bound_from_costs"] = speedup_bound(breakdown["num_frames"], breakdown["decode_over_encode"],
                                                            row["encodes_per_person_frame"])
    print_breakdown(breakdown, tube_rows)
    payload["time_breakdown"] = breakdown
    atomic_write_json(args.json_out, payload, indent=2)
    speedups = {d: v["modes"]["tube"]["speedup_vs_naive"] for d, v in payload["datasets"].items()}
    warp_speedups = {d: v["modes"]["warp"]["speedup_vs_naive"] for d, v in payload["datasets"].items()}
    print(f"\ninfer_speed: tube vs naive {', '.join(f'{d} {s:.2f}x' for d, s in speedups.items())}, warp vs naive "
          f"{', '.join(f'{d} {s:.2f}x' for d, s in warp_speedups.items())} (target >= 4x); mAP loss tube "
          f"{loss:.1f}, warp {payload['datasets']['synthtrack']['map_loss_warp']:.1f} (target <= 0.5); "
          f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
