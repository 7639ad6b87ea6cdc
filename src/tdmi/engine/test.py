"""Model over a split -> prediction files -> PoseTrack mAP table (``tdmi test`` and the trainer's validation).

Flow (docs/architecture.md "Layout", ``engine/test.py``): the clip dataset of the val/test split with GT boxes or a
detection file (``tdmi.data.dataset.build_dataset``) -> batched inference under ``torch.inference_mode`` -> heatmaps
decoded exactly as DCPose/FAMI decode them (``tdmi.evaluation.decode``, docs/facts/posetrack-facts.md section 6) -> one
official PoseTrack18 JSON per sequence (``tdmi.evaluation.writers``; joint score = heatmap maximum x box score, the
writer multiplies) -> poseval-identical AP (``tdmi.evaluation.posetrack_ap``). The table is always printed with the
boxes it was computed from, since GT-box and detection-box numbers are not comparable (user-needs.md).

Optional HRNet flip test (``test.flip_test``, off by default as in DCPose/FAMI): every clip is also run mirrored
(``frames.flip(-1)``: all T frames flipped along the width), and the decoder fuses the two outputs
(``decode_heatmaps(flipped_heatmaps=...)``: flip back, swap left/right channels, shift one pixel, average).

Checkpoints: :mod:`tdmi.engine.test_model` loads a checkpoint into the model its config describes
(:func:`load_model_for_test`, re-exported here); the HTML report of ``--report`` is :mod:`tdmi.engine.test_report`.

Outputs of :func:`run_test` under ``out_dir``: ``predictions/<sequence>.json`` (the files poseval reads),
``results.json`` (the 8-column table in percent, per-joint APs, boxes, timing) and, when the annotations are not
already one PoseTrack18/annolist JSON file per sequence, ``ground_truth/<sequence>.json`` (the per-sequence GT the
predictions were scored against). Each folder is written whole or not at all, and whatever cannot be written (a full
disk) is saved in a fallback folder and scored from there (:mod:`tdmi.results_fallback`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from tdmi.config import ExperimentConfig, load_config
from tdmi.data.dataset import (Mode, PoseTrackClipDataset, build_dataset, collate_clips, frames_as_uint8,
                               loader_workers, under_root)
from tdmi.data.transforms import normalize_frames
from tdmi.engine.distributed import DistInfo
from tdmi.engine.test_model import (MI_OBJECTIVE_PREFIX, SINGLE_FRAME_UNUSED_KEYS,  # noqa: F401  (re-exported)
                                    TRAINING_ONLY_MODEL_KEYS, LoadedModel, load_model_for_test,
                                    model_config_differences, select_device)
from tdmi.errors import CommandError
from tdmi.evaluation.decode import decode_heatmaps
from tdmi.evaluation.posetrack_ap import APResult, evaluate_dirs, write_json_atomic
from tdmi.evaluation.writers import PersonPrediction, write_posetrack18_predictions
from tdmi.keypoints import POSETRACK17
from tdmi.outputs import DEFAULT_REPORT, check_output_dir, check_report_path
from tdmi.results_fallback import save_results


@dataclass
class TestResult:
    """What :func:`run_test` produced.

    Attributes:
        out_dir: the output folder.
        predictions_dir: folder of per-sequence PoseTrack18 prediction files.
        ground_truth: GT folder the predictions were written against and scored with.
        result: the AP of the predictions.
        boxes: which person boxes were used, e.g. ``GT`` or ``val_boxes.json (score >= 0.2, 1234 boxes)``.
        split: ``val`` or ``test``.
        num_samples: person boxes run through the model.
        flip_test: whether the flip test was on.
        inference_seconds / evaluation_seconds: wall time of the model loop (data loading included) and of
            writing + scoring.
        results_file: the JSON written beside the predictions (in a fallback folder when ``out_dir`` could not be
            written, :mod:`tdmi.results_fallback`).
        track_dir: the tracking submission's folder (``--track``), where it was written; None without tracking.
        image_root: the folder the dataset read the frames from (the report draws on them).
    """

    out_dir: Path
    predictions_dir: Path
    ground_truth: Path
    result: APResult
    boxes: str
    split: str
    num_samples: int
    flip_test: bool
    inference_seconds: float
    evaluation_seconds: float
    results_file: Path
    meta: dict[str, Any] = field(default_factory=dict)
    tracking: Optional[Any] = None
    """The tracking submission's metrics (``--track``): poseval's MOTA
    (:class:`~tdmi.evaluation.posetrack_mota.TrackingResult`) or, with ``test.protocol=pt21``, the PT21 kit's HOTA
    (:class:`~tdmi.evaluation.pt21_hota.HotaResult`)."""
    tracking_settings: Optional[dict[str, Any]] = None
    decode: str = "argmax"
    """Heatmap decoding used (``test.decode``)."""
    track_dir: Optional[Path] = None
    image_root: Optional[Path] = None

    @property
    def table(self) -> dict[str, float]:
        """The 8 paper columns (Head ... Ankle, Mean) in percent."""
        return dict(self.result.table)

    def to_json_dict(self) -> dict[str, Any]:
        out = self.result.to_json_dict(
            boxes=self.boxes, split=self.split, flip_test=self.flip_test, decode=self.decode, samples=self.num_samples,
            predictions_dir=str(self.predictions_dir), ground_truth=str(self.ground_truth),
            inference_seconds=round(self.inference_seconds, 3), evaluation_seconds=round(self.evaluation_seconds, 3),
            **self.meta)
        if self.tracking is not None:
            out["tracking"] = {**self.tracking.to_json_dict(), "settings": self.tracking_settings}
        if self.track_dir is not None:  # where the tracking submission went (a fallback folder when the disk was full)
            out.setdefault("tracking", {})["track_dir"] = str(self.track_dir)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Boxes, ground truth


def box_source(cfg: ExperimentConfig, split: Mode, boxes: Optional[str] = None) -> Optional[Path]:
    """The detection file ``build_dataset(cfg, split, boxes)`` reads, or None for GT boxes (same resolution rule:
    a ``boxes`` argument as given, config values relative to ``data.root``)."""
    configured = cfg.data.val_boxes if split == "val" else cfg.test.boxes
    chosen = boxes if boxes is not None else configured
    if chosen == "gt":
        return None
    return Path(chosen) if boxes is not None else under_root(cfg, chosen)


def describe_boxes(cfg: ExperimentConfig, box_file: Optional[Path], dataset: PoseTrackClipDataset) -> str:
    """``GT`` or ``<file> (score >= thr, N boxes)``; N counts the boxes that became samples."""
    if box_file is None:
        return "GT"
    return f"{box_file} (score >= {cfg.data.box_score_threshold:g}, {len(dataset)} boxes)"


def ground_truth_dir(cfg: ExperimentConfig, dataset: PoseTrackClipDataset, out_dir: Path) -> Path:
    """A folder of one GT JSON per sequence for the writer and the evaluator.

    The annotation folder itself when it is one (every sequence read from its own ``*.json``); otherwise (a merged
    COCO-style file, ``.mat`` files) the records are written to ``out_dir/ground_truth`` in the PoseTrack18 schema.
    """
    from tdmi.data.posetrack import save_sequences

    annotations = under_root(cfg, cfg.data.val_annotations)
    if annotations.is_dir():
        sources = {Path(s.source) for s in dataset.sequences}
        per_file = all(p.suffix == ".json" and p.parent == annotations for p in sources)
        if per_file and len(sources) == len(dataset.sequences):
            return annotations
    return save_results(out_dir / "ground_truth", lambda folder: save_sequences(dataset.sequences, folder),
                        "the per-sequence ground truth", folder=True)


# ---------------------------------------------------------------------------------------------------------------------
# Inference


def _heatmaps_of(output: Any) -> Tensor:
    """``TDMIOutput.heatmaps`` (any model of ``tdmi.models.tdmi``), or a bare ``[B, J, h, w]`` tensor."""
    return output if isinstance(output, Tensor) else output.heatmaps


def _frame_track_ids(track_ids: list[int]) -> list[Optional[int]]:
    """Keep the boxes' track ids when they are valid for the writer (unique in the frame, in [0, 9999]); detection
    boxes carry -1, and then the position in the frame names each person."""
    valid = all(0 <= t < 10000 for t in track_ids) and len(set(track_ids)) == len(track_ids)
    return list(track_ids) if valid else [None] * len(track_ids)


def test_protocol(cfg: ExperimentConfig, boxes: Optional[str] = None) -> str:
    """The test-time choices that move published numbers as much as methods differ, in one phrase: boxes, flip
    test, decoding and metric (docs/results.md, "Published numbers and their protocols")."""
    source = boxes or cfg.test.boxes
    box_text = "GT boxes" if source == "gt" else f"boxes from {source} (score >= {cfg.data.box_score_threshold:g})"
    return (f"{box_text}, flip test {'on' if cfg.test.flip_test else 'off'}, {cfg.test.decode} decoding, "
            f"{'poseval' if cfg.test.protocol == 'poseval' else 'PoseTrack21 kit'} mAP")


def predict_split(model: nn.Module, loader: DataLoader, device: torch.device, *, flip_test: bool = False,
                  progress: bool = True, amp: str = "none", decode: str = "argmax",
                  dark_sigma: float = 3.0) -> dict[tuple[str, str], list[PersonPrediction]]:
    """Run ``model`` over ``loader`` (batches of :func:`~tdmi.data.dataset.collate_clips`) and decode every box.

    ``frames [B, T, 3, H, W]`` -> heatmaps ``[B, J, h, w]`` (and of ``frames.flip(-1)`` with ``flip_test``) ->
    image keypoints ``[B, J, 2]`` and heatmap maxima ``[B, J]``, using each sample's own crop (center, scale,
    rotation). Returns ``(sequence, key-frame file_name) -> persons`` in the order of the boxes in the frame.
    ``amp`` (``none``/``bf16``/``fp16``) autocasts the model; decoding runs in float32 on ``device``, so only the
    keypoints travel back to the CPU. ``decode`` is ``argmax`` or ``dark`` (:func:`decode_heatmaps`; ``dark_sigma``
    = the targets' sigma).
    """
    return assemble_predictions(predict_rows(model, loader, device, flip_test=flip_test, progress=progress, amp=amp,
                                             decode=decode, dark_sigma=dark_sigma))


PredictionRow = tuple[tuple[str, str], int, int, PersonPrediction]
"""One decoded box: ``((sequence, key-frame file_name), person index in the frame, box track id, person)``."""


def predict_rows(model: nn.Module, loader: DataLoader, device: torch.device, *, flip_test: bool = False,
                 progress: bool = True, amp: str = "none", decode: str = "argmax",
                 dark_sigma: float = 3.0) -> list[PredictionRow]:
    """:func:`predict_split`'s model loop: one row per sample, in the loader's order (``tdmi.sharding`` gathers the
    rows of several ranks and puts them back in the dataset's order)."""
    from tqdm import tqdm

    from tdmi.precision import autocast_for

    flip_permutation = POSETRACK17.flip_permutation()
    collected: list[PredictionRow] = []
    batches = tqdm(loader, desc="test", unit="batch", file=sys.stderr, disable=not progress, leave=False)
    with torch.inference_mode():
        for batch in batches:
            meta = batch["meta"]
            frames = normalize_frames(batch["frames"].to(device, non_blocking=True))
            with autocast_for(device.type, amp):
                heatmaps = _heatmaps_of(model(frames)).float()
                flipped = _heatmaps_of(model(frames.flip(-1))).float() if flip_test else None
            rotation = np.asarray(meta["rotation"], dtype=np.float64)
            coords, maxvals = decode_heatmaps(
                heatmaps, torch.from_numpy(np.asarray(meta["center"], np.float64)).to(device),
                torch.from_numpy(np.asarray(meta["scale"], np.float64)).to(device),
                rotation=torch.from_numpy(rotation).to(device) if np.any(rotation != 0) else None,
                flipped_heatmaps=flipped, flip_permutation=flip_permutation, method=decode, dark_sigma=dark_sigma)
            coords_np, maxvals_np = coords.cpu().numpy(), maxvals.cpu().numpy()
            for i in range(coords_np.shape[0]):
                key = (str(meta["sequence"][i]), str(meta["image"][i]))
                person = PersonPrediction(keypoints=coords_np[i].astype(np.float64),
                                          heatmap_scores=maxvals_np[i].astype(np.float64),
                                          box_score=float(meta["score"][i]),
                                          box=np.asarray(meta["bbox"][i], np.float64) if "bbox" in meta else None)
                collected.append((key, int(meta["person_index"][i]), int(meta["track_id"][i]), person))
    return collected


def assemble_predictions(rows: list[PredictionRow]) -> dict[tuple[str, str], list[PersonPrediction]]:
    """Rows -> ``(sequence, key-frame file_name) -> persons`` (frames in the order of their first row, persons in
    the order of the boxes in the frame, with the boxes' track ids where those are valid)."""
    collected: dict[tuple[str, str], list[tuple[int, int, PersonPrediction]]] = {}
    for key, person_index, track_id, person in rows:
        collected.setdefault(key, []).append((person_index, track_id, person))
    predictions: dict[tuple[str, str], list[PersonPrediction]] = {}
    for key, frame_rows in collected.items():
        frame_rows.sort(key=lambda row: row[0])
        for (_, _, person), track_id in zip(frame_rows, _frame_track_ids([row[1] for row in frame_rows])):
            person.track_id = track_id
        predictions[key] = [row[2] for row in frame_rows]
    return predictions


def make_loader(dataset: PoseTrackClipDataset, cfg: ExperimentConfig, device: torch.device,
                batch_sampler: Optional[Sampler[list[int]] | list[list[int]]] = None) -> DataLoader:
    """Sequential batches of ``test.batch_size`` clips, ``data.workers`` worker processes (None: by the cores);
    ``batch_sampler`` (lists of sample indices) gives the batches instead (a rank's share under torchrun)."""
    sizing: dict[str, Any] = ({"batch_sampler": batch_sampler} if batch_sampler is not None
                              else {"batch_size": max(1, int(cfg.test.batch_size)), "shuffle": False})
    return DataLoader(dataset, **sizing, num_workers=loader_workers(cfg), collate_fn=collate_clips,
                      pin_memory=device.type == "cuda", persistent_workers=False)


def predict_split_sharded(model: nn.Module, dataset: PoseTrackClipDataset, cfg: ExperimentConfig,
                          device: torch.device, ranks: DistInfo, *,
                          progress: bool = True) -> Optional[dict[tuple[str, str], list[PersonPrediction]]]:
    """:func:`predict_split` over torchrun's ranks (:mod:`tdmi.sharding`): this rank runs batches ``b % world ==
    rank`` of the batches one process runs, rank 0 gathers every rank's rows and assembles them in the dataset's
    order, so its result equals one process's. Returns None on the other ranks. A failure on any rank stops every
    rank (the failing one with its own error, the others with a one-line error naming it)."""
    from tdmi.sharding import agree_on_failure, batch_share, gather_to_main

    batches = batch_share(len(dataset), cfg.test.batch_size, ranks)
    indices = [index for batch in batches for index in batch]
    error: Optional[Exception] = None
    rows: list[PredictionRow] = []
    try:
        rows = predict_rows(model, make_loader(dataset, cfg, device, batch_sampler=batches), device,
                            flip_test=cfg.test.flip_test, progress=progress, amp=cfg.test.amp, decode=cfg.test.decode,
                            dark_sigma=cfg.data.sigma)
        if len(indices) != len(rows):  # checked before the agreement, so that no rank waits for this one's rows
            raise RuntimeError(f"rank {ranks.rank}: {len(rows)} predictions for {len(indices)} samples")
    except Exception as err:  # shared with the other ranks first, so that none waits for this one's rows
        error = err
    failure = agree_on_failure(None if error is None else f"{type(error).__name__}: {error}".splitlines()[0], ranks)
    if error is not None:
        raise error
    if failure is not None:
        raise CommandError(f"testing stopped: {failure}")
    gathered = gather_to_main(list(zip(indices, rows)), ranks)
    if gathered is None:
        return None
    ordered = sorted((pair for part in gathered for pair in part), key=lambda pair: pair[0])
    return assemble_predictions([row for _, row in ordered])


def run_test(model: nn.Module, cfg: ExperimentConfig, split: Mode = "val", boxes: Optional[str] = None,
             out_dir: str | Path | None = None, device: str | torch.device | None = None, progress: bool = True,
             meta: Optional[Mapping[str, Any]] = None, ranks: Optional[DistInfo] = None) -> Optional[TestResult]:
    """Predict every box of ``split``, write PoseTrack18 prediction files and score them.

    Args:
        model: any model of ``tdmi.models.tdmi`` (``forward(frames [B, T, 3, H, W]) -> .heatmaps [B, J, h, w]``);
            put in eval mode here (the caller restores training mode).
        cfg: the experiment config (data paths, model input/heatmap size and delta, ``test`` section).
        split: ``val`` (boxes: ``data.val_boxes``) or ``test`` (boxes: ``test.boxes``); both read the validation
            annotations (``build_dataset``).
        boxes: ``gt`` or a detection file; overrides the configured boxes.
        out_dir: output folder (default ``test.out_dir``).
        device: where the model runs (default: cuda when available); the model is moved there.
        progress: tqdm bars for loading and inference.
        meta: extra fields for ``results.json`` (e.g. the checkpoint path).
        ranks: torchrun's ranks, in a started process group (:func:`predict_split_sharded`): every rank predicts
            its share, rank 0 alone writes and scores.

    Returns:
        :class:`TestResult`; ``results.json`` is written atomically in ``out_dir``. None on ranks other than 0.
    """
    if split not in ("val", "test"):
        raise CommandError(f"split={split!r}: testing runs on 'val' or 'test'")
    device = device if isinstance(device, torch.device) else select_device(device)
    out = Path(out_dir if out_dir is not None else cfg.test.out_dir)
    dataset = build_dataset(cfg, split, boxes=boxes, uint8_frames=frames_as_uint8(cfg, device))
    boxes_text = describe_boxes(cfg, box_source(cfg, split, boxes), dataset)
    if len(dataset) == 0:
        raise CommandError(f"split {split} with boxes {boxes_text}: no person boxes to test (skipped: "
                           f"{dataset.skipped})")

    model.eval().to(device)
    start = time.perf_counter()
    if ranks is not None and ranks.enabled:
        predictions = predict_split_sharded(model, dataset, cfg, device, ranks, progress=progress)
        if predictions is None:
            return None  # rank 0 writes, scores and reports
    else:
        predictions = predict_split(model, make_loader(dataset, cfg, device), device, flip_test=cfg.test.flip_test,
                                    progress=progress, amp=cfg.test.amp, decode=cfg.test.decode,
                                    dark_sigma=cfg.data.sigma)
    inference_seconds = time.perf_counter() - start

    start = time.perf_counter()
    gt_dir = ground_truth_dir(cfg, dataset, out)
    tracking = settings = track_dir = None
    if cfg.test.track is not None:
        from tdmi.engine.test_tracking import TrackingSettings, track_split

        tracking_settings = TrackingSettings(cfg.test.track, cfg.test.track_joint_threshold,
                                             cfg.test.track_person_threshold)
        predictions, submission = track_split(predictions, dataset.sequences, tracking_settings)
        track_dir = save_results(out / "predictions_track",
                                 lambda folder: write_posetrack18_predictions(gt_dir, submission, folder),
                                 "the tracking submission", folder=True)
        if cfg.test.protocol == "pt21":  # the PoseTrack21 kit's hota_pose, as tdmi evaluate --track reports it
            from tdmi.evaluation.pt21_hota import evaluate_hota_dirs

            tracking = evaluate_hota_dirs(gt_dir, track_dir, allow_missing=True)
        else:
            from tdmi.evaluation.posetrack_mota import evaluate_tracking_dirs

            tracking = evaluate_tracking_dirs(gt_dir, track_dir, allow_missing=True)
        settings = tracking_settings.to_json()
    # a full disk now loses nothing: the files go to a fallback folder, and are scored there (tdmi.results_fallback)
    predictions_dir = save_results(out / "predictions",
                                   lambda folder: write_posetrack18_predictions(gt_dir, predictions, folder),
                                   "the prediction files", folder=True)
    result = evaluate_dirs(gt_dir, predictions_dir, protocol=cfg.test.protocol)
    evaluation_seconds = time.perf_counter() - start

    test_result = TestResult(
        out_dir=out, predictions_dir=predictions_dir, ground_truth=gt_dir, result=result, boxes=boxes_text,
        split=split, num_samples=len(dataset), flip_test=cfg.test.flip_test, inference_seconds=inference_seconds,
        evaluation_seconds=evaluation_seconds, results_file=out / "results.json", meta=dict(meta or {}),
        tracking=tracking, tracking_settings=settings, decode=cfg.test.decode, track_dir=track_dir,
        image_root=Path(dataset.image_root))
    payload = test_result.to_json_dict()
    test_result.results_file = save_results(test_result.results_file, lambda path: write_json_atomic(path, payload),
                                            "the results table")
    return test_result


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel: validation runs on rank 0 alone, and DDP's forward
    would wait for the other ranks."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def validate_model(model: nn.Module, cfg: ExperimentConfig, epoch: int) -> dict[str, float]:
    """The trainer's validation: :func:`run_test` on ``val`` with ``data.val_boxes``, on the model's own device.

    Predictions go to ``train.out_dir/val_epoch_NNN``. The model's train/eval mode is restored afterwards.

    Returns:
        the 8-column table (``Head`` ... ``Ankle``, ``Mean``) in percent.
    """
    inner = _unwrap(model)
    was_training = inner.training
    parameter = next(inner.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    out_dir = Path(cfg.train.out_dir) / f"val_epoch_{int(epoch):03d}"
    try:
        result = run_test(inner, cfg, split="val", out_dir=out_dir, device=device, progress=True,
                          meta={"epoch": int(epoch)})
    finally:
        inner.train(was_training)
    return result.table


# ---------------------------------------------------------------------------------------------------------------------
# Command


def check_test_outputs(args, cfg: ExperimentConfig, ranks: DistInfo) -> tuple[Path, Optional[Path]]:
    """``(output folder, report file or None)`` of ``tdmi test``: ``--out`` or ``test.out_dir``, and ``--report``
    (never over ``results.json``), checked before any work (:mod:`tdmi.outputs`). Under torchrun only rank 0
    writes, so only rank 0 checks (as the CLI's ``--out`` check); the other ranks take the paths unchecked: they may
    run on machines where the output location is not mounted."""
    out_dir = Path(args.out) if args.out else Path(cfg.test.out_dir)
    if not ranks.is_main:
        return out_dir, None  # rank 0 writes, scores and reports
    if not args.out:
        check_output_dir(out_dir, "test.out_dir")
    report = (check_report_path(args.report, out_dir=out_dir, json_out=out_dir / "results.json",
                                json_what="the results table (results.json)")
              if getattr(args, "report", None) else None)  # --report: never over results.json
    return out_dir, report


def test_command(args) -> int:
    """``tdmi test --checkpoint CKPT [--config YAML] [--set k=v] [--boxes gt|FILE] [--track [pose|iou]] [--out DIR]
    [--device D]``; under torchrun every rank runs a share of the batches (:mod:`tdmi.sharding`)."""
    from tdmi.sharding import dist_info_from_env, process_group, rank_device

    ranks = dist_info_from_env()
    device = select_device(args.device)
    device = rank_device(device, ranks) if ranks.enabled else device
    overrides = list(getattr(args, "overrides", None) or [])
    if getattr(args, "track", None):
        overrides.append(f"test.track={args.track}")
    if getattr(args, "decode", None):
        overrides.append(f"test.decode={args.decode}")
    if getattr(args, "flip_test", False):
        overrides.append("test.flip_test=true")
    from tdmi.models.foreign_hrnet import is_foreign_checkpoint, load_foreign_hrnet

    if is_foreign_checkpoint(args.checkpoint):  # an official/mmpose/DCPose HRNet file: its single-frame HRNet
        foreign = load_foreign_hrnet(args.checkpoint, args.config, overrides, device)
        model, cfg = foreign.model, foreign.cfg
        for line in [f"model: {foreign.description}"] + [f"note: {note}" for note in foreign.notes]:
            if ranks.is_main:
                print(line, file=sys.stderr)
    else:
        cfg = load_config(args.config, overrides) if args.config else None
        model, cfg, _ = load_model_for_test(args.checkpoint, cfg, device=device, overrides=overrides)
    out_dir, report = check_test_outputs(args, cfg, ranks)
    if ranks.is_main:
        print(f"test: {cfg.model.arch} from {args.checkpoint} on {device}"
              f"{f' (and {ranks.world_size - 1} more ranks)' if ranks.enabled else ''}, split test "
              f"({cfg.data.val_annotations} under {cfg.data.root}); protocol: {test_protocol(cfg, args.boxes)}",
              file=sys.stderr)
    with process_group(ranks, device, cfg.train.dist_timeout_minutes):
        result = run_test(model, cfg, split="test", boxes=args.boxes, out_dir=out_dir, device=device,
                          meta={"checkpoint": str(args.checkpoint), "config": args.config or "checkpoint sidecar",
                                "experiment": cfg.name}, progress=ranks.is_main, ranks=ranks)
    if result is None:
        return 0  # torchrun, a rank other than 0: rank 0 writes, scores and reports
    ap = result.result
    print(f"PoseTrack AP ({ap.protocol} protocol): {ap.num_sequences} sequences, {ap.num_frames} frames evaluated, "
          f"{result.num_samples} person boxes")
    print(ap.format_table())
    print(f"boxes: {result.boxes}")
    if result.tracking is not None:
        s = result.tracking_settings
        print(f"tracking ({s['tracker']} tracker; submission without joints scoring < {s['joint_threshold']:g} "
              f"and unconfirmed tracks, in {result.track_dir}), "
              f"{'the PoseTrack21 kit' if ap.protocol == 'pt21' else 'poseval'}'s metrics:")
        print(result.tracking.format_table())
    if report is not None:
        from tdmi.engine.test_report import write_test_report

        if str(args.report) == DEFAULT_REPORT:  # a bare --report: beside results.json, wherever that was saved
            report = result.results_file.parent / report.name
        print(f"report: wrote {write_test_report(report, result, cfg)}")
    rate = result.num_samples / result.inference_seconds if result.inference_seconds > 0 else math.inf
    boxes_short = "GT boxes" if result.boxes == "GT" else f"{result.num_samples} detected boxes"
    mota = ""
    if result.tracking is not None:
        table = result.tracking.table
        mota = f", HOTA {table['HOTA']:.1f}" if "HOTA" in table else f", MOTA {table['MOTA']['Total']:.1f}"
    print(f"test: Mean AP {ap.table['Mean']:.1f}{mota} with {boxes_short} in {result.inference_seconds:.1f} s "
          f"({rate:.1f} boxes/s); wrote {result.predictions_dir} and {result.results_file}")
    return 0
