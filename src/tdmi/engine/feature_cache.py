"""Cached backbone features for training over a frozen backbone (``train.feature_cache``).

With ``model.backbone.freeze`` the backbone is a fixed function of the augmented crops, so a clip's stage features
can be computed once and reused by every epoch, seed and ablation that shares the backbone: training then runs only
the new modules (TDE, RDM, fusion, head, MI objective). Augmentation stays in image space, where the paper applies
it: the cache holds ``draws`` augmented versions of every training clip, draw k being exactly the clip the dataset
gives in epoch k (``set_epoch(k)``, per-sample generators from ``(seed, k, index)``), and epoch e of training reads
draw ``e % draws``. So a cached run sees ``draws`` augmentations of each clip instead of one per epoch; every run
over the same cache sees the same ones (training seeds then vary initialisation and data order only).

Layout of a cache folder (NumPy ``.npy`` files, memory-mapped; one per stage, so a sample reads contiguous rows)::

    manifest.json                 what the features depend on (the ``key``), shapes, finished draws
    draw_000/s1.npy ... s4.npy    stage features [N, T, C_j, h, w], float16
    draw_000/heatmaps.npy         targets [N, J, h, w], float16;  draw_000/target_weight.npy  [N, J], float32

A draw is written into ``draw_NNN.partial`` and renamed when complete, so an interrupted build resumes at the first
missing draw and a finished draw is never half-written. A cache whose key differs from the run's (other backbone
weights, data, crop or augmentation settings) is refused with the differing field named.

    cache = build_feature_cache(cfg, "runs/cache", draws=4)        # or: tdmi train ... --set train.feature_cache=DIR
    dataset = CachedFeatureDataset("runs/cache")
    dataset.set_epoch(5); sample = dataset[0]   # {"stage_features": (s1 [T, C1, h, w], ...), "heatmaps", ...}
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tdmi.atomic import atomic_write_json
from tdmi.config import ExperimentConfig, to_dict
from tdmi.errors import CommandError
from tdmi.models.checkpoints import file_sha256

CACHE_VERSION = 1
STAGES = ("s1", "s2", "s3", "s4")
FLOAT16_MAX = 65504.0


def cache_key(cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
    """Everything the cached arrays depend on; two runs may share a cache exactly when their keys are equal."""
    pretrained = cfg.model.backbone.pretrained
    if not pretrained or not Path(pretrained).is_file():
        raise CommandError("train.feature_cache needs the frozen backbone's weights: set model.backbone.pretrained "
                           f"to an existing checkpoint (got {pretrained!r})")
    data = to_dict(cfg.data)
    annotations = Path(cfg.data.train_annotations)
    annotations = annotations if annotations.is_absolute() else Path(cfg.data.root) / annotations
    files = sorted(annotations.rglob("*.json")) if annotations.is_dir() else [annotations]
    # the annotation files' contents: data regenerated under the same root must not reuse an old cache
    fingerprint = hashlib.sha256()
    for path in files:
        if path.is_file():
            fingerprint.update(path.name.encode())
            fingerprint.update(file_sha256(path).encode())
    return {
        "version": CACHE_VERSION,
        "backbone_sha256": file_sha256(Path(pretrained)),
        "backbone_width": cfg.model.backbone.width,
        "stage1_feature": cfg.model.tde.stage1_feature,
        "bn_eval": cfg.model.backbone.bn_eval,
        "amp": cfg.train.amp,
        "data_root": str(Path(cfg.data.root).resolve()),
        "annotations_sha256": fingerprint.hexdigest(),
        "data": {k: data[k] for k in ("dataset", "train_annotations", "image_root", "padding", "missing_frames",
                                      "sigma", "bbox_enlarge", "joint_weights", "augment")},
        "input_size": list(cfg.model.input_size),
        "heatmap_size": list(cfg.model.heatmap_size),
        "delta": cfg.model.delta,
        "num_joints": cfg.model.num_joints,
        "seed": int(seed),
    }


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: cache {b!r}, run {a!r}"]


def _read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        manifest["key"], manifest["draws_done"]  # noqa: B018 - both must exist
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CommandError(f"{path}: not a tdmi feature cache manifest ({err}); delete the folder to rebuild it")
    return manifest


def build_feature_cache(cfg: ExperimentConfig, folder: str | Path, draws: int, seed: int = 0,
                        device: Optional[torch.device] = None, batch_size: int = 32,
                        progress: bool = True) -> dict[str, Any]:
    """Compute (or finish) the cache of ``cfg``'s training clips in ``folder``; returns its manifest.

    Args:
        cfg: the experiment (its frozen ``model.backbone.pretrained``, ``data`` and ``model`` crop settings).
        folder: the cache folder; created, resumed, or checked against ``cfg`` when it exists.
        draws: augmented versions of each clip (draw k = the dataset's epoch-k sample).
        seed: the dataset seed that the augmentation draws come from.
        device: where the backbone runs (default CPU).
        batch_size: clips per backbone call.

    Raises:
        CommandError: the folder holds a cache built for other weights or settings (the field is named).
    """
    if draws < 1:
        raise CommandError(f"train.feature_cache_draws={draws}: need at least one draw")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        return _build(cfg, folder, draws, seed, device, batch_size, progress)


@contextlib.contextmanager
def _exclusive(folder: Path):
    """One builder per cache folder: a second process waits instead of overwriting the first one's draw."""
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{folder}: another process is building this feature cache; waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(cfg: ExperimentConfig, folder: Path, draws: int, seed: int, device: Optional[torch.device],
           batch_size: int, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from tdmi.data.dataset import PoseTrackClipDataset, build_dataset, frames_as_uint8, loader_workers
    from tdmi.data.transforms import channels_last_frames, normalize_frames
    from tdmi.precision import autocast_for
    from tdmi.models.checkpoints import load_hrnet_weights
    from tdmi.models.hrnet import HRNet

    key = cache_key(cfg, seed)
    manifest = _read_manifest(folder)
    if manifest is not None:
        cached_delta = manifest["key"].get("delta")
        narrower = isinstance(cached_delta, int) and cfg.model.delta < cached_delta
        if narrower:  # a clip of delta d is the middle 2d + 1 frames of the cached clip (CachedFeatureDataset)
            if cfg.data.padding not in ("key_frame", "clamp"):
                # FAMI's asymmetric rule pads the previous side differently for each delta: the middle frames of a
                # wider clip are then not the narrower clip
                raise CommandError(f"{folder}: the cache holds clips of model.delta={cached_delta}; a narrower "
                                   f"delta={cfg.model.delta} can read their middle frames only with data.padding "
                                   f"key_frame or clamp, not {cfg.data.padding!r}; use another train.feature_cache")
            key = dict(key, delta=cached_delta)
        differ = _differences(key, manifest["key"])
        if differ:
            raise CommandError(f"{folder}: this feature cache was built for other settings ({'; '.join(differ[:3])}); "
                               "delete it or point train.feature_cache at another folder")
        if len(manifest["draws_done"]) >= draws:
            return manifest
        if narrower:
            raise CommandError(f"{folder}: the cache (model.delta={cached_delta}) has {len(manifest['draws_done'])} "
                               f"of train.feature_cache_draws={draws} draws; finish it with its own config first")
    device = device or torch.device("cpu")
    if cfg.model.arch == "hrnet":
        raise CommandError("train.feature_cache is for training new modules over a frozen backbone; "
                           "the single-frame baseline (model.arch=hrnet) has nothing to train then")
    dataset: PoseTrackClipDataset = build_dataset(cfg, "train", uint8_frames=frames_as_uint8(cfg, device))
    dataset.seed = int(seed)
    if len(dataset) == 0:
        raise CommandError(f"the training set of {cfg.data.root} is empty")
    if manifest is not None and manifest["num_samples"] != len(dataset):
        raise CommandError(f"{folder}: the cache holds {manifest['num_samples']} clips, the training set "
                           f"{len(dataset)}; delete the folder to rebuild it")
    backbone = HRNet(width=cfg.model.backbone.width, num_joints=cfg.model.num_joints,
                     stage1_feature=cfg.model.tde.stage1_feature)
    load_hrnet_weights(backbone, cfg.model.backbone.pretrained)
    backbone.eval().to(device)
    if cfg.train.channels_last:
        backbone.to(memory_format=torch.channels_last)

    n, t = len(dataset), dataset.num_frames
    h, w = cfg.model.heatmap_size[1], cfg.model.heatmap_size[0]
    channels = list(backbone.stage_channels)
    manifest = {
        "key": key, "num_samples": n, "num_frames": t, "stage_channels": channels, "heatmap_hw": [h, w],
        "num_joints": cfg.model.num_joints, "dtype": "float16", "draws_done": [],
    } if manifest is None else manifest
    atomic_write_json(folder / "manifest.json", manifest, indent=1)

    from tdmi.data.dataset import collate_clips

    for draw in range(draws):
        if draw in manifest["draws_done"]:
            continue
        final = folder / f"draw_{draw:03d}"
        partial = folder / f"draw_{draw:03d}.partial"
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        arrays = {name: np.lib.format.open_memmap(partial / f"{name}.npy", mode="w+", dtype=np.float16,
                                                  shape=(n, t, c, h, w)) for name, c in zip(STAGES, channels)}
        arrays["heatmaps"] = np.lib.format.open_memmap(partial / "heatmaps.npy", mode="w+", dtype=np.float16,
                                                       shape=(n, cfg.model.num_joints, h, w))
        arrays["target_weight"] = np.lib.format.open_memmap(partial / "target_weight.npy", mode="w+",
                                                            dtype=np.float32, shape=(n, cfg.model.num_joints))
        dataset.set_epoch(draw)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                             num_workers=loader_workers(cfg), collate_fn=collate_clips)
        start = 0
        for batch in tqdm(loader, desc=f"feature cache draw {draw + 1}/{draws}", disable=not progress,
                          dynamic_ncols=True):
            frames = normalize_frames(batch["frames"].to(device))
            if cfg.train.channels_last:
                frames = channels_last_frames(frames)
            b = frames.shape[0]
            with torch.no_grad(), autocast_for(device.type, cfg.train.amp):
                features = backbone(frames.flatten(0, 1))
            for name, feature in zip(STAGES, features):
                values = feature.float().unflatten(0, (b, t))
                peak = float(values.abs().max())
                if not peak <= FLOAT16_MAX:
                    raise CommandError(f"{folder}: stage feature {name} reaches {peak:.3g}, beyond float16; "
                                       "the backbone's activations do not fit the cache's storage type")
                arrays[name][start:start + b] = values.cpu().numpy().astype(np.float16)
            arrays["heatmaps"][start:start + b] = batch["heatmaps"].numpy().astype(np.float16)
            arrays["target_weight"][start:start + b] = batch["target_weight"].reshape(b, -1).numpy()
            start += b
        for array in arrays.values():
            array.flush()
        del arrays
        os.replace(partial, final)
        manifest["draws_done"] = sorted(set(manifest["draws_done"]) | {draw})
        atomic_write_json(folder / "manifest.json", manifest, indent=1)
    return manifest


class CachedFeatureDataset(Dataset):
    """Training samples read from a feature cache: ``{"stage_features": (s1, s2, s3, s4) each [T, C_j, h, w],
    "heatmaps": [J, h, w], "target_weight": [J]}`` as float32 tensors. Epoch e reads draw ``e % draws``.

    ``delta`` smaller than the cache's gives the middle ``2 delta + 1`` frames of each cached clip (the same key
    frames, augmentation draws and, for ``data.padding`` key_frame or clamp, sequence-end padding: e.g. DCPose's
    delta 1 from the benchmark's delta-2 cache; ``build_feature_cache`` refuses the other padding rule).
    """

    def __init__(self, folder: str | Path, draws: Optional[int] = None, delta: Optional[int] = None):
        self.folder = Path(folder)
        manifest = _read_manifest(self.folder)
        if manifest is None:
            raise CommandError(f"{self.folder}: no feature cache here (manifest.json missing)")
        done = sorted(manifest["draws_done"])
        usable = done if draws is None else [d for d in done if d < draws]
        if not usable or usable != list(range(len(usable))):
            raise CommandError(f"{self.folder}: the cache's finished draws are {done}; build it first")
        self.manifest = manifest
        self.draws = len(usable)
        cached_frames = int(manifest["num_frames"])
        frames = cached_frames if delta is None else 2 * delta + 1
        if frames > cached_frames or frames < 1:
            raise CommandError(f"{self.folder}: the cache holds clips of {cached_frames} frames; model.delta={delta} "
                               f"needs {frames}")
        start = (cached_frames - frames) // 2
        self.frames = slice(start, start + frames)
        self.epoch = 0
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.manifest["num_samples"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _draw(self, draw: int) -> dict[str, np.ndarray]:
        if draw not in self._arrays:
            base = self.folder / f"draw_{draw:03d}"
            self._arrays[draw] = {name: np.load(base / f"{name}.npy", mmap_mode="r")
                                  for name in (*STAGES, "heatmaps", "target_weight")}
        return self._arrays[draw]

    def __getitem__(self, index: int) -> dict[str, Any]:
        arrays = self._draw(self.epoch % self.draws)
        return {
            "stage_features": tuple(torch.from_numpy(np.asarray(arrays[name][index][self.frames], dtype=np.float32))
                                    for name in STAGES),
            "heatmaps": torch.from_numpy(np.asarray(arrays["heatmaps"][index], dtype=np.float32)),
            "target_weight": torch.from_numpy(np.array(arrays["target_weight"][index])),
        }

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own memory maps
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


def collate_cached(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack cached samples: ``stage_features`` a tuple of ``[B, T, C_j, h, w]``, ``heatmaps`` ``[B, J, h, w]``,
    ``target_weight`` ``[B, J]``."""
    from tdmi.models.hrnet import StageFeatures

    stages = StageFeatures(*(torch.stack([s["stage_features"][j] for s in samples]) for j in range(len(STAGES))))
    return {"stage_features": stages, "heatmaps": torch.stack([s["heatmaps"] for s in samples]),
            "target_weight": torch.stack([s["target_weight"] for s in samples])}
