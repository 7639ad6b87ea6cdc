"""Model over a split -> prediction files -> PoseTrack mAP table (``tdmi test`` and the trainer's validation).

Flow (docs/architecture.md "Layout", ``engine/test.py``): the clip dataset of the val/test split with GT boxes or a
detection
file (``tdmi.data.dataset.build_dataset``) -> batched inference under ``torch.inference_mode`` -> heatmaps decoded
exactly as DCPose/FAMI decode them (``tdmi.evaluation.decode``, docs/facts/posetrack-facts.md section 6) -> one official
PoseTrack18 JSON per sequence (``tdmi.evaluation.writers``; joint score = heatmap maximum x box score, the writer
multiplies) -> poseval-identical AP (``tdmi.evaluation.posetrack_ap``). The table is always printed with the boxes it
was computed from, since GT-box and detection-box numbers are not comparable (user-needs.md).

Optional HRNet flip test (``test.flip_test``, off by default as in DCPose/FAMI): every clip is also run mirrored
(``frames.flip(-1)``: all T frames flipped along the width), and the decoder fuses the two outputs
(``decode_heatmaps(flipped_heatmaps=...)``: flip back, swap left/right channels, shift one pixel, average).

Checkpoints (docs/architecture.md "Checkpoints"): a tdmi checkpoint's sidecar carries the training config, so ``tdmi
test``
needs no ``--config``; a given config must describe the same model (the architecture keys of ``model``), otherwise
the error names the keys that differ. Keys under ``mi_objective.`` belong to the training objective, not the model.

Outputs of :func:`run_test` under ``out_dir``: ``predictions/<sequence>.json`` (the files poseval reads),
``results.json`` (the 8-column table in percent, per-joint APs, boxes, timing) and, when the annotations are not
already one PoseTrack18/annolist JSON file per sequence, ``ground_truth/<sequence>.json`` (the per-sequence GT the
predictions were scored against).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tdmi.config import (ConfigError, ExperimentConfig, apply_override, config_from_dict, flatten_dict, load_config,
                         to_dict, with_legacy_defaults)
from tdmi.data.dataset import (Mode, PoseTrackClipDataset, build_dataset, collate_clips, frames_as_uint8,
                               loader_workers)
from tdmi.data.transforms import normalize_frames
from tdmi.errors import CheckpointError, CommandError
from tdmi.evaluation.decode import decode_heatmaps
from tdmi.evaluation.posetrack_ap import APResult, evaluate_dirs, write_json_atomic
from tdmi.evaluation.writers import PersonPrediction, write_posetrack18_predictions
from tdmi.keypoints import POSETRACK17
from tdmi.models.checkpoints import layout_hint, load_checkpoint
from tdmi.outputs import check_output_dir

MI_OBJECTIVE_PREFIX = "mi_objective."
"""State-dict keys of the MI objective's own modules in training checkpoints; not part of the model."""

TRAINING_ONLY_MODEL_KEYS: tuple[str, ...] = ("backbone.pretrained", "backbone.freeze", "backbone.bn_eval", "mi.",
                                             "rdm.init_std", "rdm.init")
"""``model`` config keys (and prefixes) that change training but not the weights' layout or the predictions, so a
``--config`` may differ from the checkpoint there: where the initial weights came from, which weights train, how
they were initialised, and the MI objective's settings."""

SINGLE_FRAME_UNUSED_KEYS: tuple[str, ...] = ("tde.", "rdm.", "fusion_blocks", "st_blocks")
"""``model`` keys of the temporal modules, which the single-frame model (``arch: hrnet``) does not build."""


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
        results_file: the JSON written beside the predictions.
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
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Devices, boxes, ground truth


def select_device(name: Optional[str] = None) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``; ``cpu``/``cuda``/``cuda:N`` are checked, not assumed."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CommandError(f"--device {name!r}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def _under_root(cfg: ExperimentConfig, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else Path(cfg.data.root) / path


def box_source(cfg: ExperimentConfig, split: Mode, boxes: Optional[str] = None) -> Optional[Path]:
    """The detection file ``build_dataset(cfg, split, boxes)`` reads, or None for GT boxes (same resolution rule:
    a ``boxes`` argument as given, config values relative to ``data.root``)."""
    configured = cfg.data.val_boxes if split == "val" else cfg.test.boxes
    chosen = boxes if boxes is not None else configured
    if chosen == "gt":
        return None
    return Path(chosen) if boxes is not None else _under_root(cfg, chosen)


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

    annotations = _under_root(cfg, cfg.data.val_annotations)
    if annotations.is_dir():
        sources = {Path(s.source) for s in dataset.sequences}
        per_file = all(p.suffix == ".json" and p.parent == annotations for p in sources)
        if per_file and len(sources) == len(dataset.sequences):
            return annotations
    target = out_dir / "ground_truth"
    save_sequences(dataset.sequences, target)
    return target


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
    from tqdm import tqdm

    from tdmi.precision import autocast_for

    flip_permutation = POSETRACK17.flip_permutation()
    collected: dict[tuple[str, str], list[tuple[int, int, PersonPrediction]]] = {}
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
                collected.setdefault(key, []).append((int(meta["person_index"][i]), int(meta["track_id"][i]), person))
    predictions: dict[tuple[str, str], list[PersonPrediction]] = {}
    for key, rows in collected.items():
        rows.sort(key=lambda row: row[0])
        for (_, _, person), track_id in zip(rows, _frame_track_ids([row[1] for row in rows])):
            person.track_id = track_id
        predictions[key] = [row[2] for row in rows]
    return predictions


def make_loader(dataset: PoseTrackClipDataset, cfg: ExperimentConfig, device: torch.device) -> DataLoader:
    """Sequential batches of ``test.batch_size`` clips, ``data.workers`` worker processes (None: by the cores)."""
    workers = loader_workers(cfg)
    return DataLoader(dataset, batch_size=max(1, int(cfg.test.batch_size)), shuffle=False, num_workers=workers,
                      collate_fn=collate_clips, pin_memory=device.type == "cuda", persistent_workers=False)


def run_test(model: nn.Module, cfg: ExperimentConfig, split: Mode = "val", boxes: Optional[str] = None,
             out_dir: str | Path | None = None, device: str | torch.device | None = None, progress: bool = True,
             meta: Optional[Mapping[str, Any]] = None) -> TestResult:
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

    Returns:
        :class:`TestResult`; ``results.json`` is written atomically in ``out_dir``.
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
    predictions = predict_split(model, make_loader(dataset, cfg, device), device, flip_test=cfg.test.flip_test,
                                progress=progress, amp=cfg.test.amp, decode=cfg.test.decode,
                                dark_sigma=cfg.data.sigma)
    inference_seconds = time.perf_counter() - start

    start = time.perf_counter()
    gt_dir = ground_truth_dir(cfg, dataset, out)
    predictions_dir = out / "predictions"
    tracking = settings = None
    if cfg.test.track is not None:
        from tdmi.engine.test_tracking import TrackingSettings, track_split

        tracking_settings = TrackingSettings(cfg.test.track, cfg.test.track_joint_threshold,
                                             cfg.test.track_person_threshold)
        predictions, submission = track_split(predictions, dataset.sequences, tracking_settings)
        write_posetrack18_predictions(gt_dir, submission, out / "predictions_track")
        if cfg.test.protocol == "pt21":  # the PoseTrack21 kit's hota_pose, as tdmi evaluate --track reports it
            from tdmi.evaluation.pt21_hota import evaluate_hota_dirs

            tracking = evaluate_hota_dirs(gt_dir, out / "predictions_track", allow_missing=True)
        else:
            from tdmi.evaluation.posetrack_mota import evaluate_tracking_dirs

            tracking = evaluate_tracking_dirs(gt_dir, out / "predictions_track", allow_missing=True)
        settings = tracking_settings.to_json()
    write_posetrack18_predictions(gt_dir, predictions, predictions_dir)
    result = evaluate_dirs(gt_dir, predictions_dir, protocol=cfg.test.protocol)
    evaluation_seconds = time.perf_counter() - start

    test_result = TestResult(
        out_dir=out, predictions_dir=predictions_dir, ground_truth=gt_dir, result=result, boxes=boxes_text,
        split=split, num_samples=len(dataset), flip_test=cfg.test.flip_test, inference_seconds=inference_seconds,
        evaluation_seconds=evaluation_seconds, results_file=out / "results.json", meta=dict(meta or {}),
        tracking=tracking, tracking_settings=settings, decode=cfg.test.decode)
    write_json_atomic(test_result.results_file, test_result.to_json_dict())
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
# Checkpoints


def model_config_differences(given: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """``model`` keys whose values differ (``key: given vs stored``), ignoring :data:`TRAINING_ONLY_MODEL_KEYS`."""
    from tdmi.config import ModelConfig

    # A key that a checkpoint from an older tdmi does not store had the value of LEGACY_DEFAULTS then, or else
    # today's default.
    a, b = flatten_dict(dict(given)), flatten_dict(with_legacy_defaults({"model": dict(stored)})["model"])
    defaults = flatten_dict(to_dict(ModelConfig()))
    ignored = TRAINING_ONLY_MODEL_KEYS
    if a.get("arch", defaults["arch"]) == b.get("arch", defaults["arch"]) == "hrnet":
        ignored = ignored + SINGLE_FRAME_UNUSED_KEYS  # the single-frame model builds none of these modules
    differing = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in ignored):
            continue
        mine, theirs = a.get(key, defaults.get(key, "<absent>")), b.get(key, defaults.get(key, "<absent>"))
        if mine != theirs:
            differing.append(f"model.{key}: {mine!r} vs checkpoint {theirs!r}")
    return differing


class LoadedModel(NamedTuple):
    """A model ready for testing, the config it was built from, and the checkpoint's sidecar."""

    model: nn.Module
    cfg: ExperimentConfig
    metadata: dict[str, Any]


def load_model_for_test(checkpoint: str | Path, cfg: Optional[ExperimentConfig] = None,
                        device: str | torch.device | None = None,
                        overrides: tuple[str, ...] | list[str] = ()) -> LoadedModel:
    """Build the checkpoint's model and load its weights strictly (``mi_objective.*`` keys are skipped).

    Args:
        checkpoint: a tdmi ``.safetensors`` checkpoint with its JSON sidecar, or a foreign HRNet ``.pth``
            (:mod:`tdmi.models.foreign_hrnet`; then ``cfg`` must be None).
        cfg: the experiment config to test with; None = the sidecar's training config (with ``overrides``
            applied, e.g. ``data.root=...``). A given config must describe the same model: differing ``model`` keys
            (other than :data:`TRAINING_ONLY_MODEL_KEYS`) are a :class:`~tdmi.errors.CheckpointError` naming them.
        device: where to put the model (default: cuda when available).
        overrides: ``key=value`` overrides for the sidecar's config (ignored when ``cfg`` is given).

    Returns:
        :class:`LoadedModel` (``model, cfg, metadata = load_model_for_test(...)`` also works); the model is in eval
        mode on ``device``.
    """
    from tdmi.models.foreign_hrnet import is_foreign_checkpoint, load_foreign_hrnet
    from tdmi.models.tdmi import build_model

    if is_foreign_checkpoint(checkpoint):
        if cfg is not None:
            raise CheckpointError(f"{checkpoint}: a foreign HRNet file takes its model from the weights; pass the "
                                  f"config as a path to tdmi.models.foreign_hrnet.load_foreign_hrnet instead")
        device = device if isinstance(device, torch.device) else select_device(device)
        foreign = load_foreign_hrnet(checkpoint, None, overrides, device)
        return LoadedModel(foreign.model, foreign.cfg, foreign.metadata)
    state, metadata = load_checkpoint(checkpoint)
    stored = metadata.get("config")
    if not isinstance(stored, dict) or not isinstance(stored.get("model"), dict):
        raise CheckpointError(f"{checkpoint}: the sidecar has no training config ('config' with a 'model' section); "
                              f"it was not written by tdmi's trainer")
    if cfg is None:
        raw = copy.deepcopy(stored)  # overrides must not edit the returned metadata
        for item in overrides:
            apply_override(raw, item)
        try:
            cfg = config_from_dict(raw, where=f"{checkpoint} (sidecar config)")
        except ConfigError as err:
            raise CheckpointError(f"{err}; pass --config with a config this tdmi version reads") from None
    else:
        differing = model_config_differences(to_dict(cfg.model), stored["model"])
        if differing:
            raise CheckpointError(f"{checkpoint}: --config describes a different model than the checkpoint: "
                                  f"{'; '.join(differing)}. Drop --config to use the checkpoint's own, "
                                  f"or fix these keys")
    model = build_model(cfg.model)
    model_state = {k: v for k, v in state.items() if not k.startswith(MI_OBJECTIVE_PREFIX)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(model_state))
    unexpected = sorted(set(model_state) - set(expected))
    mismatched = [f"{k} {list(model_state[k].shape)} vs model {list(expected[k].shape)}"
                  for k in sorted(set(expected) & set(model_state)) if model_state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(names)}): {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)) if names]
        raise CheckpointError(f"{checkpoint}: weights do not fit the {cfg.model.arch} model of the config: "
                              f"{'; '.join(parts)}{layout_hint(model_state, expected)}")
    model.load_state_dict(model_state, strict=True)
    device = device if isinstance(device, torch.device) else select_device(device)
    return LoadedModel(model.eval().to(device), cfg, metadata)


# ---------------------------------------------------------------------------------------------------------------------
# Command


def test_command(args) -> int:
    """``tdmi test --checkpoint CKPT [--config YAML] [--set k=v] [--boxes gt|FILE] [--track [pose|iou]] [--out DIR]
    [--device D]``."""
    device = select_device(args.device)
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
        print(f"model: {foreign.description}", file=sys.stderr)
        for note in foreign.notes:
            print(f"note: {note}", file=sys.stderr)
    else:
        cfg = load_config(args.config, overrides) if args.config else None
        model, cfg, _ = load_model_for_test(args.checkpoint, cfg, device=device, overrides=overrides)
    out_dir = Path(args.out) if args.out else check_output_dir(cfg.test.out_dir, "test.out_dir")
    print(f"test: {cfg.model.arch} from {args.checkpoint} on {device}, split test ({cfg.data.val_annotations} "
          f"under {cfg.data.root}); protocol: {test_protocol(cfg, args.boxes)}", file=sys.stderr)
    result = run_test(model, cfg, split="test", boxes=args.boxes, out_dir=out_dir, device=device,
                      meta={"checkpoint": str(args.checkpoint), "config": args.config or "checkpoint sidecar",
                            "experiment": cfg.name})
    ap = result.result
    print(f"PoseTrack AP ({ap.protocol} protocol): {ap.num_sequences} sequences, {ap.num_frames} frames evaluated, "
          f"{result.num_samples} person boxes")
    print(ap.format_table())
    print(f"boxes: {result.boxes}")
    if result.tracking is not None:
        s = result.tracking_settings
        print(f"tracking ({s['tracker']} tracker; submission without joints scoring < {s['joint_threshold']:g} "
              f"and unconfirmed tracks, in {result.out_dir / 'predictions_track'}), "
              f"{'the PoseTrack21 kit' if ap.protocol == 'pt21' else 'poseval'}'s metrics:")
        print(result.tracking.format_table())
    rate = result.num_samples / result.inference_seconds if result.inference_seconds > 0 else math.inf
    boxes_short = "GT boxes" if result.boxes == "GT" else f"{result.num_samples} detected boxes"
    mota = ""
    if result.tracking is not None:
        table = result.tracking.table
        mota = f", HOTA {table['HOTA']:.1f}" if "HOTA" in table else f", MOTA {table['MOTA']['Total']:.1f}"
    print(f"test: Mean AP {ap.table['Mean']:.1f}{mota} with {boxes_short} in {result.inference_seconds:.1f} s "
          f"({rate:.1f} boxes/s); wrote {result.predictions_dir} and {result.results_file}")
    return 0
