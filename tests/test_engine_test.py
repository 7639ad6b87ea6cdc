"""``tdmi.engine.test`` and ``tdmi test`` on a tiny SynthTrack set (2 sequences x 8 frames).

The oracle model returns the dataset's own target heatmaps for the crop it is given; decoding them through the real
path (crop meta -> decode -> writer -> evaluator) must score near 100 mAP, which catches coordinate-transform and
key/ordering bugs between the dataset, the decoder and the writer. The module under test is imported as
``engine_test`` so that pytest does not collect its ``test_command`` / ``run_test`` as tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tdmi.cli import main
from tdmi.config import ExperimentConfig, load_config, to_dict
from tdmi.data.dataset import PoseTrackClipDataset, build_dataset
from tdmi.data.synthetic import generate_synthtrack
from tdmi.data.targets import gaussian_heatmaps
from tdmi.data.transforms import AugmentParams, clip_joints, clip_matrix, flip_joints
from tdmi.engine import test as engine_test
from tdmi.errors import CheckpointError
from tdmi.evaluation.posetrack_ap import TABLE_KEYS, evaluate_dirs
from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint
from tdmi.models.tdmi import build_model
from model_helpers import TINY_CLIP_MODEL

TINY_MODEL = TINY_CLIP_MODEL + ["data.sigma=2.0", "test.batch_size=16"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The test machine's cores are shared; tiny tensors gain nothing from intra-op threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthtrack")
    generate_synthtrack(root, sequences=2, frames=8, seed=3, size=(192, 144), progress=False)
    return root


def tiny_config(root: Path, *extra: str) -> ExperimentConfig:
    return load_config(None, [f"data.root={root}", "data.dataset=synthtrack", *TINY_MODEL, *extra])


# ---------------------------------------------------------------------------------------------------------------------
# Oracle


def mirrored_targets(dataset: PoseTrackClipDataset, index: int) -> torch.Tensor:
    """Targets a perfect model would output for the horizontally mirrored crop of sample ``index``."""
    entry = dataset.entries[index]
    frame = dataset.sequences[entry.sequence].frames[entry.frame]
    params = AugmentParams(center=entry.center, scale=entry.scale)
    matrix = clip_matrix(params, dataset.input_size, frame.width)
    joints = clip_joints(np.asarray(entry.person.keypoints), params, matrix, dataset.input_size, frame.width,
                         dataset.flip_perm, dataset.mask_outside)
    own, _ = gaussian_heatmaps(joints, dataset.input_size, dataset.heatmap_size, dataset.sigma)
    # The recomputed targets must be the dataset's own, or the mirrored ones below mean nothing.
    np.testing.assert_array_equal(own, dataset[index]["heatmaps"].numpy())
    mirrored = flip_joints(joints, dataset.input_size[0], dataset.flip_perm)
    heatmaps, _ = gaussian_heatmaps(mirrored, dataset.input_size, dataset.heatmap_size, dataset.sigma)
    return torch.from_numpy(heatmaps)


class OracleModel(nn.Module):
    """Looks up which sample's key-frame crop (or its mirror) it was given and returns that sample's targets.

    ``shift_samples`` answers with the targets of another sample (a wrong model, for the negative control).
    """

    def __init__(self, dataset: PoseTrackClipDataset, shift_samples: int = 0):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        samples = [dataset[i] for i in range(len(dataset))]
        self.key_position = samples[0]["meta"]["key_position"]
        self.crops = torch.stack([s["frames"][self.key_position] for s in samples])
        self.targets = torch.stack([s["heatmaps"] for s in samples]).roll(shift_samples, 0)
        self.mirrored = torch.stack([mirrored_targets(dataset, i) for i in range(len(dataset))]).roll(shift_samples, 0)
        self.calls: list[int] = []

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        key = frames[:, self.key_position].cpu()
        candidates = torch.cat([self.crops, self.crops.flip(-1)])
        distance = ((key[:, None] - candidates[None]) ** 2).flatten(2).mean(2)
        best_distance, best = distance.min(1)
        assert float(best_distance.max()) < 1e-8, "the oracle was given a crop the dataset does not produce"
        self.calls.append(int((best >= len(self.crops)).sum()))
        return torch.cat([self.targets, self.mirrored])[best] + self.anchor


def test_oracle_model_scores_near_100_with_gt_boxes(synth_root, tmp_path):
    cfg = tiny_config(synth_root)
    oracle = OracleModel(build_dataset(cfg, "val"))
    result = engine_test.run_test(oracle, cfg, out_dir=tmp_path, device="cpu", progress=False)
    assert result.boxes == "GT"
    assert set(result.table) == set(TABLE_KEYS)
    assert result.table["Mean"] > 95.0, result.result.format_table()
    assert min(result.table.values()) > 90.0, result.result.format_table()
    assert sum(oracle.calls) == 0  # no mirrored crops without the flip test


def test_oracle_with_flip_test_runs_mirrored_clips_and_still_scores_near_100(synth_root, tmp_path):
    cfg = tiny_config(synth_root, "test.flip_test=true")
    dataset = build_dataset(cfg, "val")
    oracle = OracleModel(dataset)
    result = engine_test.run_test(oracle, cfg, out_dir=tmp_path, device="cpu", progress=False)
    assert sum(oracle.calls) == len(dataset)  # every sample also went through mirrored
    assert result.flip_test
    assert result.table["Mean"] > 95.0, result.result.format_table()


def test_wrong_oracle_scores_low(synth_root, tmp_path):
    # Negative control: the same pipeline with targets of the neighbouring sample must not look good.
    cfg = tiny_config(synth_root)
    oracle = OracleModel(build_dataset(cfg, "val"), shift_samples=1)
    result = engine_test.run_test(oracle, cfg, out_dir=tmp_path, device="cpu", progress=False)
    assert result.table["Mean"] < 50.0, result.result.format_table()


# ---------------------------------------------------------------------------------------------------------------------
# run_test with a real tiny model, detection boxes, validation


def test_run_test_writes_files_poseval_reads(synth_root, tmp_path):
    cfg = tiny_config(synth_root)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    result = engine_test.run_test(model, cfg, split="test", out_dir=tmp_path / "out", device="cpu", progress=False)

    gt_dir = synth_root / "annotations" / "val"
    assert result.ground_truth == gt_dir  # per-sequence folder: used as is, nothing copied
    files = sorted(p.name for p in result.predictions_dir.glob("*.json"))
    assert files == sorted(p.name for p in gt_dir.glob("*.json"))
    for name in files:
        gt = json.loads((gt_dir / name).read_text())
        pred = json.loads((result.predictions_dir / name).read_text())
        assert [im["id"] for im in pred["images"]] == [im["id"] for im in gt["images"]]
        labelled = {im["id"] for im in gt["images"] if im.get("is_labeled")}
        assert {a["image_id"] for a in pred["annotations"]} <= labelled
        for ann in pred["annotations"]:
            assert len(ann["keypoints"]) == 51 and ann["score"] == 1.0
    assert sum(len(json.loads(p.read_text())["annotations"]) for p in result.predictions_dir.glob("*.json")) \
        == result.num_samples == len(build_dataset(cfg, "test"))

    rescored = evaluate_dirs(gt_dir, result.predictions_dir)
    assert rescored.table == result.table
    saved = json.loads(result.results_file.read_text())
    assert set(TABLE_KEYS) <= set(saved) and saved["meta"]["boxes"] == "GT"
    assert all(np.isfinite(result.table[k]) for k in TABLE_KEYS)
    assert not list(tmp_path.rglob("*.tmp"))


class ConstantPeakModel(nn.Module):
    """Heatmaps with one peak of height ``peak`` in the middle of every channel, whatever the input."""

    def __init__(self, joints: int, size: tuple[int, int], peak: float = 0.5):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        heatmap = torch.zeros(joints, size[1], size[0])
        heatmap[:, size[1] // 2, size[0] // 2] = peak
        self.register_buffer("heatmap", heatmap)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.heatmap.expand(frames.shape[0], -1, -1, -1) + self.anchor


def test_detection_boxes_give_box_scores_and_joint_scores(synth_root, tmp_path):
    cfg = tiny_config(synth_root, "data.box_score_threshold=0.5")
    box_file = synth_root / "detections" / "val_boxes.json"
    model = ConstantPeakModel(cfg.model.num_joints, tuple(cfg.model.heatmap_size), peak=0.5)
    result = engine_test.run_test(model, cfg, split="val", boxes=str(box_file), out_dir=tmp_path, device="cpu",
                                  progress=False)
    dataset = build_dataset(cfg, "val", boxes=str(box_file))
    assert result.boxes == f"{box_file} (score >= 0.5, {len(dataset)} boxes)"
    assert result.num_samples == len(dataset) > 0

    detections = json.loads(box_file.read_text())
    kept = {round(d["score"], 6) for d in detections if d["score"] >= 0.5}
    written = [ann for p in result.predictions_dir.glob("*.json") for ann in json.loads(p.read_text())["annotations"]]
    assert len(written) == len(dataset)
    assert {round(a["score"], 6) for a in written} <= kept
    for ann in written:
        # joint score = heatmap maximum x box score (the writer multiplies once)
        np.testing.assert_allclose(ann["scores"], [0.5 * ann["score"]] * 17, rtol=1e-6)
        np.testing.assert_allclose(ann["keypoints"][2::3], ann["scores"], rtol=1e-6)


def test_validate_model_returns_the_table_and_restores_training_mode(synth_root, tmp_path):
    cfg = tiny_config(synth_root, f"train.out_dir={tmp_path}", "model.arch=hrnet", "model.delta=0")
    model = build_model(cfg.model).train()
    table = engine_test.validate_model(model, cfg, epoch=3)
    assert list(table) == list(TABLE_KEYS)
    assert model.training
    assert (tmp_path / "val_epoch_003" / "results.json").is_file()
    assert len(list((tmp_path / "val_epoch_003" / "predictions").glob("*.json"))) == 2


def test_merged_annotation_file_is_split_into_per_sequence_ground_truth(synth_root, tmp_path):
    # One file holding both sequences (DCPose/mmpose style): the GT is written per sequence beside the predictions.
    gt_dir = synth_root / "annotations" / "val"
    merged = {"images": [], "annotations": [], "categories": None}
    for path in sorted(gt_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        merged["images"] += doc["images"]
        merged["annotations"] += doc["annotations"]
        merged["categories"] = doc["categories"]
    merged_file = tmp_path / "val_merged.json"
    merged_file.write_text(json.dumps(merged))
    cfg = tiny_config(synth_root, f"data.val_annotations={merged_file}")
    oracle = OracleModel(build_dataset(cfg, "val"))
    result = engine_test.run_test(oracle, cfg, out_dir=tmp_path / "out", device="cpu", progress=False)
    assert result.ground_truth == tmp_path / "out" / "ground_truth"
    assert sorted(p.name for p in result.ground_truth.glob("*.json")) == sorted(p.name for p in gt_dir.glob("*.json"))
    assert result.table["Mean"] > 95.0


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints and the command


def save_tiny_checkpoint(cfg: ExperimentConfig, path: Path, extra_state: dict | None = None) -> nn.Module:
    torch.manual_seed(1)
    model = build_model(cfg.model)
    state = dict(model.state_dict())
    state.update(extra_state or {})
    metadata = checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                                   heatmap_size=cfg.model.heatmap_size, delta=cfg.model.delta,
                                   training={"epoch": 1})
    save_checkpoint(path, state, metadata)
    return model


def test_load_without_config_uses_the_sidecar_and_skips_the_mi_objective(synth_root, tmp_path):
    cfg = tiny_config(synth_root)
    trained = save_tiny_checkpoint(cfg, tmp_path / "ckpt", {"mi_objective.projection.weight": torch.ones(3, 3)})
    model, loaded_cfg, metadata = engine_test.load_model_for_test(tmp_path / "ckpt.safetensors", device="cpu")
    assert to_dict(loaded_cfg) == to_dict(cfg)
    assert metadata["training"]["epoch"] == 1
    assert not model.training
    loaded_state = model.state_dict()
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(loaded_state[name], tensor, msg=name)

    overridden = engine_test.load_model_for_test(tmp_path / "ckpt.safetensors", device="cpu",
                                                 overrides=["test.batch_size=3"])
    assert overridden.cfg.test.batch_size == 3


def test_load_with_config_checks_the_model_section(synth_root, tmp_path):
    cfg = tiny_config(synth_root)
    save_tiny_checkpoint(cfg, tmp_path / "ckpt")
    # Training-only keys may differ ...
    same = tiny_config(synth_root, "model.backbone.freeze=false", "model.mi.alpha=0.5", "model.backbone.pretrained=x")
    assert engine_test.load_model_for_test(tmp_path / "ckpt", same, device="cpu").cfg is same
    # ... architecture keys may not, and the error names them.
    other = tiny_config(synth_root, "model.backbone.width=8", "model.delta=2")
    with pytest.raises(CheckpointError) as err:
        engine_test.load_model_for_test(tmp_path / "ckpt", other, device="cpu")
    assert "model.backbone.width: 8 vs checkpoint 4" in str(err.value)
    assert "model.delta: 2 vs checkpoint 1" in str(err.value)
    assert "model.mi" not in str(err.value)


def test_weights_that_do_not_fit_are_an_error_naming_the_keys(synth_root, tmp_path):
    cfg = tiny_config(synth_root)
    save_tiny_checkpoint(cfg, tmp_path / "ckpt", {"stray.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): stray.weight"):
        engine_test.load_model_for_test(tmp_path / "ckpt", device="cpu")


def test_tdmi_test_command_with_gt_and_detection_boxes(synth_root, tmp_path, capsys):
    cfg = tiny_config(synth_root, "model.arch=hrnet", "model.delta=0")
    save_tiny_checkpoint(cfg, tmp_path / "ckpt")
    out = tmp_path / "out"
    assert main(["test", "--checkpoint", str(tmp_path / "ckpt.safetensors"), "--out", str(out),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "boxes: GT" in printed
    assert " ".join(TABLE_KEYS) in " ".join(printed.split())
    summary = printed.strip().splitlines()[-1]
    assert summary.startswith("test: Mean AP ") and str(out / "results.json") in summary
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["checkpoint"].endswith("ckpt.safetensors") and saved["meta"]["boxes"] == "GT"
    assert len(list((out / "predictions").glob("*.json"))) == 2

    box_file = synth_root / "detections" / "val_boxes.json"
    assert main(["test", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "det"), "--device", "cpu",
                 "--boxes", str(box_file), "--set", "data.box_score_threshold=0.6"]) == 0
    printed = capsys.readouterr().out
    count = len(build_dataset(load_config(None, [f"data.root={synth_root}", "data.box_score_threshold=0.6",
                                                 "data.dataset=synthtrack"]), "test", boxes=str(box_file)))
    assert f"boxes: {box_file} (score >= 0.6, {count} boxes)" in printed


def test_tdmi_test_command_errors_are_one_line(synth_root, tmp_path, capsys):
    cfg = tiny_config(synth_root)
    save_tiny_checkpoint(cfg, tmp_path / "ckpt")
    config_file = tmp_path / "other.yaml"
    config_file.write_text("model:\n  backbone:\n    width: 6\n")
    assert main(["test", "--checkpoint", str(tmp_path / "ckpt"), "--config", str(config_file), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "describes a different model" in err and "model.backbone.width: 6 vs checkpoint 4" in err
    assert main(["test", "--checkpoint", str(tmp_path / "missing"), "--device", "cpu"]) == 2
    assert "checkpoint weights not found" in capsys.readouterr().err


@pytest.mark.parametrize("annotations", ["annotations/val", "annotations/test_posetrack18_val.json"])
def test_oracle_on_real_posetrack18_frames(posetrack18_sample, annotations, tmp_path):
    # Real 1920x1080 frames whose size comes from the image header; only the key frames exist, so supporting
    # frames are padded. The merged COCO-style file must score like the per-sequence folder.
    cfg = tiny_config(posetrack18_sample, "data.dataset=posetrack18", f"data.val_annotations={annotations}",
                      "data.missing_frames=pad")
    dataset = build_dataset(cfg, "val")
    result = engine_test.run_test(OracleModel(dataset), cfg, out_dir=tmp_path, device="cpu", progress=False)
    assert result.result.num_sequences == 3 and result.num_samples == len(dataset) > 0
    assert result.table["Mean"] > 95.0, result.result.format_table()


def test_config_comparison_treats_keys_an_older_checkpoint_lacks_as_their_defaults():
    from tdmi.config import ModelConfig
    from tdmi.engine.test import model_config_differences

    given = to_dict(ModelConfig())
    stored = to_dict(ModelConfig())
    del stored["rdm"]["hidden"]  # a key added after the checkpoint was written, at its default
    assert model_config_differences(given, stored) == []
    given["rdm"]["hidden"] = 8
    assert model_config_differences(given, stored) == ["model.rdm.hidden: 8 vs checkpoint 128"]
    given["rdm"]["hidden"], given["rdm"]["init_std"], given["rdm"]["init"] = 128, 0.1, "normal"  # init only
    assert model_config_differences(given, stored) == []


def test_config_comparison_reads_a_missing_stage1_feature_as_the_layer1_of_older_checkpoints():
    from tdmi.config import ModelConfig
    from tdmi.engine.test import model_config_differences

    given, stored = to_dict(ModelConfig()), to_dict(ModelConfig())
    del stored["tde"]["stage1_feature"]  # saved before issue 22: those checkpoints all used layer1
    assert model_config_differences(given, stored) == ["model.tde.stage1_feature: 'transition' vs checkpoint 'layer1'"]
    given["tde"]["stage1_feature"] = "layer1"
    assert model_config_differences(given, stored) == []


def test_oracle_poses_tracked_by_the_pose_tracker_score_a_high_mota(synth_root, tmp_path):
    cfg = tiny_config(synth_root, "test.track=pose", "test.track_joint_threshold=0.3")
    oracle = OracleModel(build_dataset(cfg, "val"))
    result = engine_test.run_test(oracle, cfg, out_dir=tmp_path, device="cpu", progress=False)
    assert result.table["Mean"] > 95.0  # the mAP file is the same as without tracking
    mota = result.tracking.table["MOTA"]["Total"]
    assert mota > 80.0, result.tracking.format_table()
    saved = json.loads(result.results_file.read_text())["tracking"]
    assert saved["settings"] == {"tracker": "pose", "joint_threshold": 0.3, "person_threshold": 0.0}
    assert saved["MOTA"]["Total"] == pytest.approx(mota)
    assert (tmp_path / "predictions_track").is_dir() and saved["track_dir"] == str(tmp_path / "predictions_track")


def test_track_under_the_pt21_protocol_reports_the_kits_hota(synth_root, tmp_path):
    cfg = tiny_config(synth_root, "test.track=pose", "test.track_joint_threshold=0.3", "test.protocol=pt21")
    oracle = OracleModel(build_dataset(cfg, "val"))
    result = engine_test.run_test(oracle, cfg, out_dir=tmp_path, device="cpu", progress=False)
    from tdmi.evaluation.pt21_hota import evaluate_hota_dirs

    hota = result.tracking.table
    # oracle poses decoded from tiny heatmaps: HOTA's strict localisation thresholds (LocA ~79) keep it below 100
    assert set(hota) >= {"HOTA", "DetA", "AssA"} and hota["HOTA"] > 60.0, result.tracking.format_table()
    assert hota == evaluate_hota_dirs(result.ground_truth, tmp_path / "predictions_track", allow_missing=True).table
    saved = json.loads(result.results_file.read_text())["tracking"]
    assert saved["HOTA"] == pytest.approx(hota["HOTA"]) and saved["settings"]["tracker"] == "pose"


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_checks_test_out_dir_and_the_report(tmp_path, rank):
    """``tdmi test`` under torchrun: ``test.out_dir`` and ``--report`` are rank 0's to write, so rank 0 alone checks
    them (before any work); another rank takes the paths unchecked, where they may not even be mounted."""
    from argparse import Namespace

    from tdmi.engine.distributed import DistInfo
    from tdmi.errors import CommandError

    taken = tmp_path / "taken.txt"
    taken.write_text("x")  # nothing can be created under a file
    cfg = load_config(None, [f"test.out_dir={taken / 'out'}"])
    for args in (Namespace(out=None, report=None), Namespace(out=None, report=str(taken / "r.html")),
                 Namespace(out=str(tmp_path / "ok"), report=str(taken / "r.html"))):
        ranks = DistInfo(rank, 2, rank)
        if rank == 0:
            with pytest.raises(CommandError, match=r"(test\.out_dir|--report) .*taken\.txt"):
                engine_test.check_test_outputs(args, cfg, ranks)
        else:
            out_dir, report = engine_test.check_test_outputs(args, cfg, ranks)
            assert out_dir == Path(args.out or taken / "out") and report is None
    # one process checks, and a good place passes
    out_dir, report = engine_test.check_test_outputs(Namespace(out=str(tmp_path / "ok"), report="<default>"), cfg,
                                                     DistInfo(0, 1, 0))
    assert out_dir == tmp_path / "ok" and report == tmp_path / "ok" / "report.html"
    assert not (tmp_path / "ok").exists()  # checked, nothing left behind
