"""Training loop: one process, or one process per GPU under torchrun; resumable bit-identically on CPU.

    tdmi train --config configs/tdmi_w48_pt17.yaml                        # one process (GPU if available)
    torchrun --nproc_per_node 2 -m tdmi train --config configs/tdmi_w48_pt17.yaml   # DDP, one process per GPU
    tdmi train --config ... --resume runs/tdmi_w48_pt17                     # continue where it stopped

The loop reads top to bottom (nanoGPT's shape): distributed set-up from torchrun's environment, model, losses,
optimizer and schedule, data, then epochs of steps. Loss = heatmap MSE (joint-weighted, paper eq. 14) +
alpha * L_MI (eq. 13; ``models/mi_loss.py``); every MI term is logged. Adam with the paper's schedule (1e-3, x0.1 at
epochs 6, 12, 18; 20 epochs). Rank 0 alone logs and writes checkpoints.

Run folder (``train.out_dir`` or ``--out``):
    last.safetensors / last.json     weights + sidecar (config, epoch, step, CPU seconds, metrics), written atomically
    last.state.pt                    optimizer, schedule, grad scaler, RNG and data-order state (weights_only loadable)
    epoch_NNN.safetensors            a snapshot per epoch;  best.safetensors  the best validation mAP
    metrics.jsonl                    one JSON line per logged step / epoch / validation; TensorBoard if installed

Determinism: the data order of epoch e is a permutation drawn from ``seed + e``; each sample's augmentation is drawn
from ``(seed, epoch, index)`` (the dataset's ``set_epoch``), so a resumed run sees exactly the batches the
uninterrupted run would have seen, and on CPU continues bit-identically.

The loop's parts live beside it: ``distributed`` (torchrun set-up, ranks agreeing to stop), ``schedule`` (data order,
lr), ``checkpointing`` (weights and training state, resume) and ``metrics_log`` (``metrics.jsonl``).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from tdmi.atomic import atomic_write_bytes
from tdmi.config import ExperimentConfig, dump_config, load_config
from tdmi.data.transforms import channels_last_frames, normalize_frames
from tdmi.errors import CheckpointError, CommandError, TdmiError
from tdmi.engine.checkpointing import (
    load_training_state, save_training_state)
from tdmi.engine.checkpointing import rng_state as _rng_state  # noqa: F401
from tdmi.engine.checkpointing import set_rng_state as _set_rng_state  # noqa: F401
from tdmi.engine.distributed import DistInfo, agree_across_ranks, any_rank, setup_distributed
from tdmi.engine.metrics_log import MetricsLog
from tdmi.engine.schedule import (  # noqa: F401  (lr_at_epoch re-exported)
    EpochSampler, lr_at_epoch, lr_multiplier, seed_worker, steps_per_epoch)
from tdmi.engine.train_step import TrainStep, build_train_step  # noqa: F401  (TrainStep re-exported)


class NonFiniteLossError(TdmiError, FloatingPointError):
    """The loss became NaN or inf; the message names the step and every loss term."""


def check_pretrained(cfg: ExperimentConfig) -> None:
    """Fail before anything long starts if the configured COCO HRNet checkpoint is missing."""
    path = cfg.model.backbone.pretrained
    if path and not Path(path).is_file():
        raise CheckpointError(
            f"model.backbone.pretrained: {path} does not exist. The paper initialises from the COCO-pretrained "
            "HRNet (pose_hrnet_w48_384x288.pth from the HRNet model zoo, "
            "github.com/leoxiaobin/deep-high-resolution-net.pytorch, or mmpose's hrnet_w48_coco_384x288 file); "
            "download it yourself and point model.backbone.pretrained at it, or set it to null for random init.")


# -------------------------------------------------------------------------------------------------------- the loop


def configure_backends(dev: torch.device, deterministic: bool) -> None:
    """The process-wide backend settings of a training run (``scripts/gpu_check.py`` times steps with the same)."""
    if dev.type == "cuda" and not deterministic:
        # cuDNN autotuning (fixed crop sizes) and TF32 matmuls/convolutions on Ampere and later GPUs
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        # Strict: an op without a deterministic kernel raises, naming itself. The DCN, whose usual CUDA backwards
        # are not deterministic, takes its gather path in this mode (models/deform_conv_plain.py). cuBLAS reads its
        # workspace setting when its handle is made, so this must come before the first CUDA matmul; autotuning
        # off, since it may pick other (deterministic) algorithms from run to run.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def _to_device(batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return (normalize_frames(batch["frames"].to(device, non_blocking=True)),
            batch["heatmaps"].to(device, non_blocking=True),
            batch["target_weight"].to(device, non_blocking=True))


def train(cfg: ExperimentConfig, resume: Optional[str] = None, device: Optional[str] = None,
          train_dataset=None, val_fn=None) -> dict[str, Any]:
    """Train ``cfg`` and return the final progress record.

    Args:
        cfg: the experiment.
        resume: a run folder or ``.safetensors`` checkpoint to continue from.
        device: ``cpu``, ``cuda`` or ``cuda:N``; default cuda when available.
        train_dataset: a ready dataset (tests); default ``data.dataset.build_dataset(cfg, "train")``.
        val_fn: ``f(model, cfg, epoch) -> dict`` with at least ``Mean``; default the `tdmi test` path on val.
    """
    info, dev = setup_distributed(device, cfg.train.dist_timeout_minutes)
    run_dir = Path(cfg.train.out_dir)
    if train_dataset is None and not cfg.train.feature_cache:  # fail before anything is written
        from tdmi.data.dataset import check_annotations_exist

        root = Path(cfg.data.root)
        annotations = Path(cfg.data.train_annotations)
        check_annotations_exist(cfg, annotations if annotations.is_absolute() else root / annotations, "train")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode("utf-8"))
    check_pretrained(cfg)
    configure_backends(dev, cfg.train.deterministic)
    # The same seed on every rank: identical initial weights without a broadcast.
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    random.seed(cfg.train.seed)

    step_module = build_train_step(cfg).to(dev)
    trainable = [p for p in step_module.parameters() if p.requires_grad]
    if not trainable:
        raise CommandError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.Adam(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scaler = torch.amp.GradScaler(dev.type) if cfg.train.amp == "fp16" else None

    from tdmi.data.dataset import collate_clips, loader_workers

    collate = collate_clips
    if train_dataset is None and cfg.train.feature_cache:
        train_dataset = _cached_dataset(cfg, info, dev)
    if train_dataset is None:
        from tdmi.data.dataset import build_dataset, frames_as_uint8

        train_dataset = build_dataset(cfg, "train", uint8_frames=frames_as_uint8(cfg, dev))
    from tdmi.engine.feature_cache import CachedFeatureDataset, collate_cached

    if isinstance(train_dataset, CachedFeatureDataset):
        collate = collate_cached
    if len(train_dataset) == 0:
        raise CommandError(f"the training set of {cfg.data.root} is empty")
    sampler = EpochSampler(len(train_dataset), cfg.train.batch_size, cfg.train.seed, info.rank, info.world_size)
    check_batches = getattr(step_module.model, "check_batches", None)  # a model's own limits, before any step
    if check_batches is not None:
        check_batches(sampler.per_rank, cfg.train.batch_size)
    # The schedule is a function of the optimizer step, so it needs the epoch's step count before any resume.
    epoch_steps = steps_per_epoch(math.ceil(sampler.per_rank / cfg.train.batch_size), cfg.train.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(cfg, step, epoch_steps))

    progress: dict[str, Any] = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_mean": None, "seed": cfg.train.seed,
                                "val_history": [], "world_size": info.world_size}
    if resume:
        progress = load_training_state(resume, step_module, optimizer, scheduler, scaler)
        progress.setdefault("val_history", [])
        saved_world = int(progress.get("world_size", 1))
        if saved_world != info.world_size:
            raise CheckpointError(
                f"--resume: {resume} was trained with {saved_world} process(es), this run has {info.world_size}. "
                "The number of processes sets the batch per optimizer step, the data sharding and the lr "
                f"schedule's steps per epoch, so resume with {saved_world} (torchrun --nproc_per_node "
                f"{saved_world}), or start a new run from its weights with --set model.backbone.pretrained=...")
        if info.is_main:
            print(f"resumed from {resume}: epoch {progress['epoch']}, batch {progress['batch_in_epoch']}, "
                  f"step {progress['step']}")
        if progress.get("stopped") == "plateau" and not _plateaued(cfg, progress):
            progress.pop("stopped")  # the current config (e.g. plateau_window=0) no longer calls it a plateau
        if progress.get("stopped") == "plateau":
            if info.is_main:
                print(f"{resume} already stopped at its plateau after epoch {progress['epoch']}: nothing to do")
            return progress

    wrapped: nn.Module = step_module
    if info.enabled:
        wrapped = nn.parallel.DistributedDataParallel(step_module, device_ids=[dev.index] if dev.type == "cuda"
                                                      else None)
    if cfg.train.compile:
        from tdmi.models.deform_conv import prepare_for_compile

        prepare_for_compile(dev)
        wrapped = torch.compile(wrapped)  # after DDP, as PyTorch documents; checkpoints keep step_module's names

    loader_generator = torch.Generator().manual_seed(cfg.train.seed + info.rank)
    loader = torch.utils.data.DataLoader(
        train_dataset, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=loader_workers(cfg),
        collate_fn=collate, drop_last=False, worker_init_fn=seed_worker, generator=loader_generator,
        pin_memory=dev.type == "cuda", persistent_workers=False)

    log = MetricsLog(run_dir, info.is_main)
    interrupted = {"flag": False, "agreed": False}

    def _on_sigint(signum, frame):  # finish the current step, then save a resumable checkpoint
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True
        if info.is_main:
            print("\ninterrupt: saving a resumable checkpoint after this step (Ctrl-C again to abort)", flush=True)

    # SIGTERM too: torchrun and cluster schedulers stop jobs with it
    previous = ({sig: signal.signal(sig, _on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)}
                if _in_main_thread() else {})
    try:
        _run_epochs(cfg, info, dev, wrapped, step_module, optimizer, scheduler, scaler, loader, sampler,
                    train_dataset, progress, run_dir, log, interrupted, val_fn)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.close()
    return progress


def _cached_dataset(cfg: ExperimentConfig, info: DistInfo, dev: torch.device):
    """Build (rank 0) or open ``train.feature_cache`` and return its dataset."""
    from tdmi.engine.feature_cache import CachedFeatureDataset, build_feature_cache

    if not cfg.model.backbone.freeze:
        raise CommandError("train.feature_cache needs a frozen backbone (model.backbone.freeze=true): a trained "
                           "backbone changes its features every step")
    if not cfg.model.backbone.bn_eval:
        raise CommandError("train.feature_cache needs model.backbone.bn_eval=true: with BatchNorm in train mode the "
                           "frozen backbone's features depend on the batch, which a cache cannot reproduce")
    if info.is_main:
        build_feature_cache(cfg, cfg.train.feature_cache, cfg.train.feature_cache_draws,
                            seed=cfg.train.feature_cache_seed, device=dev)
    if info.enabled:
        dist.barrier()
    return CachedFeatureDataset(cfg.train.feature_cache, draws=cfg.train.feature_cache_draws, delta=cfg.model.delta)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _run_epochs(cfg, info, dev, wrapped, step_module, optimizer, scheduler, scaler, loader, sampler, dataset,
                progress, run_dir, log, interrupted, val_fn) -> None:
    from tqdm import tqdm

    accum = max(1, cfg.train.grad_accum)
    max_steps = cfg.train.max_steps
    if max_steps and progress["step"] >= max_steps:  # a resumed run that already reached its step limit
        return
    # CPU seconds of the training saved so far, summed over resumes (this process's; rank 0's under torchrun): work
    # lost to an interruption is redone and counted once, a killed process's time is not lost with it
    cpu_before, cpu_start = float(progress.get("cpu_seconds", 0.0)), time.process_time()
    for epoch in range(progress["epoch"], cfg.train.epochs):
        start_batch = progress["batch_in_epoch"] if epoch == progress["epoch"] else 0
        sampler.set_epoch(epoch, start_batch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        step_module.train()
        epoch_lr = optimizer.param_groups[0]["lr"]  # the lr of the epoch's first step (it changes every step)
        sums: dict[str, float] = {}
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not info.is_main,
                   initial=start_batch, total=start_batch + len(loader), leave=False, dynamic_ncols=True)
        batch_index = start_batch
        for batch in bar:
            if "stage_features" in batch:
                frames = type(batch["stage_features"])(*(f.to(dev, non_blocking=True)
                                                         for f in batch["stage_features"]))
                heatmaps = batch["heatmaps"].to(dev, non_blocking=True)
                weight = batch["target_weight"].to(dev, non_blocking=True)
            else:
                frames, heatmaps, weight = _to_device(batch, dev)
                if cfg.train.channels_last:
                    frames = channels_last_frames(frames)
            is_step = (batch_index + 1) % accum == 0 or batch_index + 1 == start_batch + len(loader)
            sync = nullcontext() if (is_step or not info.enabled) else wrapped.no_sync()
            with sync:
                terms = wrapped(frames, heatmaps, weight)
                loss = terms["loss"]
                if info.enabled:
                    # One collective and one host sync per batch carry both agreements: a NaN on any rank stops
                    # every rank now, and an interrupt any rank has seen stops all of them after this step.
                    nonfinite, interrupted["agreed"] = agree_across_ranks(
                        ~torch.isfinite(loss.detach()), is_step and interrupted["flag"], dev)
                    finite = not nonfinite
                else:
                    finite = bool(torch.isfinite(loss))  # the one host sync per batch
                if not finite:
                    values = ", ".join(f"{k}={v.item():.6g}" for k, v in terms.items())
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch + 1}, batch {batch_index}, step {progress['step']}: "
                        f"{values}. The last good checkpoint in {run_dir} is kept; lower train.lr or "
                        "model.mi.alpha, or use train.amp=none.")
                # The epoch's last group may hold fewer than `accum` batches: average over the batches it has.
                # groups are aligned to the epoch's batch index (as is_step), also after a mid-epoch resume
                group_start = batch_index // accum * accum
                group_size = min(accum, start_batch + len(loader) - group_start)
                scaled = loss / group_size
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if is_step:
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                progress["step"] += 1
            batch_index += 1
            progress["batch_in_epoch"] = batch_index
            n = heatmaps.shape[0] * info.world_size
            seen += n
            # running sums stay on the device: one host sync per step (the finiteness check), not one per term
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach() * n
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            if batch_index % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.5f}", hm=f"{float(terms['heatmap'].detach()):.5f}",
                                sps=f"{rate:.1f}")
            if is_step and info.is_main and progress["step"] % 20 == 0:
                log.write("step", progress["step"], {k: float(v.detach()) for k, v in terms.items()}
                          | {"lr": optimizer.param_groups[0]["lr"], "samples_per_s": rate})
            every = cfg.train.mi_diagnostics_every
            if is_step and every and progress["step"] % every == 0 and info.is_main:
                from tdmi.engine.mi_diagnostics import mi_diagnostics

                diagnostics = mi_diagnostics(step_module, frames, heatmaps, weight)
                if diagnostics:
                    log.write("mi_diag", progress["step"], diagnostics)
            # Stop at an optimizer step, so no accumulated gradient is thrown away. Under DDP the ranks agreed above
            # (each saw its own signal at its own moment), so no rank leaves a collective the others still wait in;
            # a signal that arrives after that agreement stops the run at the next step.
            if not info.enabled:
                interrupted["agreed"] = is_step and interrupted["flag"]
            stop_now = interrupted["agreed"] or (max_steps and progress["step"] >= max_steps)
            if stop_now:
                break
        bar.close()
        epoch_done = progress["batch_in_epoch"] >= start_batch + len(loader) and not interrupted["agreed"]
        if epoch_done:
            progress["epoch"] = epoch + 1
            progress["batch_in_epoch"] = 0
        means = {k: float(v) / max(seen, 1) for k, v in sums.items()}
        if info.is_main:
            elapsed = time.perf_counter() - t0
            summary = " ".join(f"{k}={v:.5f}" for k, v in means.items())
            print(f"epoch {epoch + 1}/{cfg.train.epochs}: {summary} lr={epoch_lr:.2e} "
                  f"{seen / max(elapsed, 1e-9):.1f} samples/s ({elapsed:.0f}s)", flush=True)
            log.write("epoch", progress["step"], means | {"epoch": epoch + 1, "seconds": elapsed, "lr": epoch_lr})
        if epoch_done and cfg.train.val_every and (epoch + 1) % cfg.train.val_every == 0 and info.is_main:
            table = _validate(step_module.model, cfg, epoch + 1, val_fn)
            if table is not None:
                log.write("val", progress["step"], table | {"epoch": epoch + 1})
                mean = table.get("Mean")
                if mean is not None:
                    progress["val_history"].append([epoch + 1, float(mean)])
                if mean is not None and (progress["best_mean"] is None or mean > progress["best_mean"]):
                    progress["best_mean"] = float(mean)
                    save_training_state(run_dir, "best", step_module, optimizer, scheduler, scaler, cfg,
                                        dict(progress), snapshot=False)
        if epoch_done and _plateaued(cfg, progress):
            progress["stopped"] = "plateau"  # before the checkpoint, so a resume knows the run is finished
        progress["cpu_seconds"] = round(cpu_before + time.process_time() - cpu_start, 1)
        if info.is_main:
            save_training_state(run_dir, "last", step_module, optimizer, scheduler, scaler, cfg, dict(progress))
            if epoch_done:
                save_training_state(run_dir, f"epoch_{epoch + 1:03d}", step_module, optimizer, scheduler, scaler,
                                    cfg, dict(progress), snapshot=False)
        if info.enabled:
            dist.barrier()
            # only rank 0 validates, so only it can see a plateau: every rank stops with it
            if any_rank(progress.get("stopped") == "plateau", dev):
                progress["stopped"] = "plateau"
        if interrupted["agreed"]:
            if info.is_main:
                print(f"saved a resumable checkpoint: tdmi train --config {run_dir / 'config.yaml'} "
                      f"--resume {run_dir}")
            raise KeyboardInterrupt
        if max_steps and progress["step"] >= max_steps:
            break
        if progress.get("stopped") == "plateau":
            if info.is_main:
                window = [m for _, m in progress["val_history"][-cfg.train.plateau_window:]]
                print(f"stopping after epoch {epoch + 1}: the last {len(window)} validations agree within "
                      f"{cfg.train.plateau_tolerance} mAP ({', '.join(f'{m:.1f}' for m in window)})", flush=True)
            break


def _plateaued(cfg: ExperimentConfig, progress: dict[str, Any]) -> bool:
    """True when the last ``plateau_window`` validations agree within ``plateau_tolerance`` mAP."""
    window = cfg.train.plateau_window
    history = progress.get("val_history", [])
    if window <= 0 or len(history) < window or progress["epoch"] < cfg.train.plateau_min_epochs:
        return False
    means = [m for _, m in history[-window:]]
    return max(means) - min(means) <= cfg.train.plateau_tolerance


def _validate(model: nn.Module, cfg: ExperimentConfig, epoch: int, val_fn) -> Optional[dict[str, float]]:
    if val_fn is None:
        from tdmi.engine.test import validate_model

        val_fn = validate_model
    model.eval()
    try:
        table = val_fn(model, cfg, epoch)
    finally:
        model.train()
    if table:
        row = " ".join(f"{k} {v:.1f}" for k, v in table.items() if isinstance(v, (int, float)))
        print(f"validation after epoch {epoch}: {row}", flush=True)
    return table


# ------------------------------------------------------------------------------------------------------------- CLI


def train_command(args) -> int:
    """``tdmi train``: load the config (or the resumed run's), apply CLI options, train."""
    if not args.resume and not args.config:
        raise CommandError("give --config FILE (a new run) or --resume RUN_DIR (continue a run)")
    if args.resume and not args.config:
        run_dir = Path(args.resume) if Path(args.resume).is_dir() else Path(args.resume).parent
        cfg = load_config(run_dir / "config.yaml", args.overrides)  # the run's own config
    else:
        cfg = load_config(args.config, args.overrides)
    if args.out:
        cfg.train.out_dir = args.out
    if args.deterministic:
        cfg.train.deterministic = True
    try:
        progress = train(cfg, resume=args.resume, device=args.device)
    except KeyboardInterrupt:
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    best = progress.get("best_mean")
    print(f"done: {progress['epoch']} epochs, {progress['step']} steps, best val mAP "
          f"{'n/a' if best is None else f'{best:.1f}'}; checkpoints in {cfg.train.out_dir}")
    return 0


def load_run_config(run_dir: str) -> ExperimentConfig:
    """The config a run was trained with (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CommandError(f"{path} not found")
    return load_config(path)


