"""Feature cache for training over a frozen backbone: cached clips equal the live ones, resume, refusal, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tdmi.config import load_config
from tdmi.data.dataset import build_dataset
from tdmi.data.synthetic import generate_synthtrack
from tdmi.engine.feature_cache import CachedFeatureDataset, build_feature_cache, collate_cached
from tdmi.engine.train import build_train_step, train
from tdmi.errors import CommandError
from tdmi.models.checkpoints import save_checkpoint
from tdmi.models.hrnet import HRNet

TINY = ["model.input_size=[32,64]", "model.heatmap_size=[8,16]", "model.delta=1", "model.backbone.width=4",
        "model.tde.channels=8", "model.tde.deform_groups=4", "model.tde.blocks_per_stage=[1,1,1,1]",
        "model.fusion_blocks=1", "model.st_blocks=1", "data.sigma=1.0", "data.workers=0", "data.dataset=synthtrack",
        "train.batch_size=4", "train.val_every=0", "train.epochs=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    generate_synthtrack(root / "data", sequences=1, frames=6, seed=5, size=(128, 96), split="train", progress=False)
    torch.manual_seed(0)
    backbone = HRNet(width=4, num_joints=17)
    for module in backbone.modules():  # non-trivial running statistics, so eval-mode BN matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    weights = save_checkpoint(root / "backbone.safetensors", backbone.state_dict(), {"config": {}})
    return root, weights


def _cfg(root: Path, weights: Path, *extra: str):
    return load_config(None, [f"data.root={root / 'data'}", f"model.backbone.pretrained={weights}", *TINY, *extra])


def test_cached_clips_equal_the_live_backbone_features(setup):
    root, weights = setup
    cfg = _cfg(root, weights)
    manifest = build_feature_cache(cfg, root / "c1", draws=2, seed=7, progress=False)
    assert manifest["draws_done"] == [0, 1]
    cached = CachedFeatureDataset(root / "c1")
    live = build_dataset(cfg, "train")
    live.seed = 7
    model = build_train_step(cfg).model.eval()
    assert len(cached) == len(live) > 0
    for epoch in (0, 1, 3):  # epoch 3 reads draw 1
        cached.set_epoch(epoch)
        live.set_epoch(epoch % 2)
        for index in (0, len(live) - 1):
            sample, reference = cached[index], live[index]
            with torch.no_grad():
                features = model.encode(reference["frames"])
            for got, want in zip(sample["stage_features"], features):
                torch.testing.assert_close(got, want.float(), atol=2e-3 * float(want.abs().max()) + 1e-3, rtol=1e-3)
            torch.testing.assert_close(sample["heatmaps"], reference["heatmaps"], atol=1e-3, rtol=1e-3)
            assert torch.equal(sample["target_weight"], reference["target_weight"].reshape(-1))
    cached.set_epoch(0)
    other = CachedFeatureDataset(root / "c1")
    other.set_epoch(1)
    assert not torch.equal(cached[0]["stage_features"][0], other[0]["stage_features"][0])  # draws differ
    batch = collate_cached([cached[0], cached[1]])
    assert batch["stage_features"].s1.shape[:2] == (2, 3) and batch["heatmaps"].shape[0] == 2


def test_interrupted_build_resumes_and_a_mismatched_cache_is_refused(setup):
    root, weights = setup
    cfg = _cfg(root, weights)
    folder = root / "c2"
    build_feature_cache(cfg, folder, draws=1, progress=False)
    first = np.load(folder / "draw_000" / "s4.npy").copy()
    (folder / "draw_001.partial").mkdir()  # what a crash mid-draw leaves
    manifest = build_feature_cache(cfg, folder, draws=2, progress=False)
    assert manifest["draws_done"] == [0, 1] and not (folder / "draw_001.partial").exists()
    assert np.array_equal(np.load(folder / "draw_000" / "s4.npy"), first)  # the finished draw was kept
    with pytest.raises(CommandError, match="sigma"):
        build_feature_cache(_cfg(root, weights, "data.sigma=2.0"), folder, draws=2, progress=False)
    with pytest.raises(CommandError, match="build it first"):
        CachedFeatureDataset(root / "c1", draws=0)
    (root / "bad").mkdir()
    (root / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(CommandError, match="manifest"):
        CachedFeatureDataset(root / "bad")


def test_training_on_the_cache_learns_and_needs_a_frozen_backbone(setup, tmp_path):
    root, weights = setup
    cfg = _cfg(root, weights, f"train.feature_cache={root / 'c3'}", "train.feature_cache_draws=2",
               f"train.out_dir={tmp_path / 'run'}", "train.epochs=3", "model.mi.enabled=false")
    progress = train(cfg, device="cpu")
    assert progress["epoch"] == 3
    losses = [json.loads(line)["heatmap"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert json.loads((root / "c3" / "manifest.json").read_text())["draws_done"] == [0, 1]
    unfrozen = _cfg(root, weights, f"train.feature_cache={root / 'c4'}", "model.backbone.freeze=false",
                    f"train.out_dir={tmp_path / 'run2'}")
    with pytest.raises(CommandError, match="frozen backbone"):
        train(unfrozen, device="cpu")


def test_a_narrower_clip_reads_the_middle_frames_of_a_wider_cache(setup):
    """DCPose (delta 1) trains from the benchmark's delta-2 cache: its clips are the middle three frames of the cached
    five, with the same key frames and draws, and equal the live delta-1 clips."""
    root, weights = setup
    wide = _cfg(root, weights, "model.delta=2")
    build_feature_cache(wide, root / "c5", draws=1, seed=3, progress=False)
    narrow = _cfg(root, weights, "model.delta=1", "model.arch=dcpose")
    assert build_feature_cache(narrow, root / "c5", draws=1, seed=3, progress=False)["key"]["delta"] == 2
    five, three = CachedFeatureDataset(root / "c5"), CachedFeatureDataset(root / "c5", delta=1)
    assert len(five) == len(three) > 0
    for index in (0, len(five) - 1):
        for a, b in zip(five[index]["stage_features"], three[index]["stage_features"]):
            assert b.shape[0] == 3 and torch.equal(a[1:4], b)
        assert torch.equal(five[index]["heatmaps"], three[index]["heatmaps"])
    live = build_dataset(narrow, "train")
    live.seed = 3
    model = build_train_step(narrow).model.eval()
    with torch.no_grad():
        features = model.encode(live[0]["frames"])
    for got, want in zip(three[0]["stage_features"], features):
        torch.testing.assert_close(got, want.float(), atol=2e-3 * float(want.abs().max()) + 1e-3, rtol=1e-3)
    with pytest.raises(CommandError, match="needs 7"):
        CachedFeatureDataset(root / "c5", delta=3)
    with pytest.raises(CommandError, match="finish it with its own config"):
        build_feature_cache(narrow, root / "c5", draws=2, seed=3, progress=False)
    # FAMI's asymmetric sequence-end rule pads each delta differently: the middle frames are not the narrower clip
    fami_wide, fami_narrow = (_cfg(root, weights, f"model.delta={d}", "data.padding=fami") for d in (2, 1))
    build_feature_cache(fami_wide, root / "c6", draws=1, seed=3, progress=False)
    with pytest.raises(CommandError, match="data.padding key_frame or clamp, not 'fami'"):
        build_feature_cache(fami_narrow, root / "c6", draws=1, seed=3, progress=False)
