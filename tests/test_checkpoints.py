"""Checkpoint loading under every HRNet naming (docs/facts/model-facts.md (b)) and tdmi's safetensors + sidecar
format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from tdmi.errors import CheckpointError
from tdmi.models.checkpoints import (
    checkpoint_metadata,
    checkpoint_paths,
    load_checkpoint,
    load_hrnet_weights,
    save_checkpoint,
)
from tdmi.models.hrnet import HRNet

TINY = 2


def source_state() -> dict[str, torch.Tensor]:
    """A tiny HRNet's state with distinct random values everywhere (init values would hide mix-ups)."""
    torch.manual_seed(1)
    state = HRNet(width=TINY, num_joints=3).state_dict()
    return {k: (torch.randint(0, 1000, v.shape) if v.dtype == torch.int64 else torch.randn(v.shape))
            for k, v in state.items()}


def fresh_model() -> HRNet:
    torch.manual_seed(2)
    return HRNet(width=TINY, num_joints=3)


def assert_loaded(model: HRNet, state: dict[str, torch.Tensor], skip_final_layer: bool = False) -> None:
    result = model.state_dict()
    for key, tensor in state.items():
        if skip_final_layer and key.startswith("final_layer."):
            continue
        assert torch.equal(result[key], tensor), key


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def mmpose(state: dict[str, torch.Tensor], head: str) -> dict[str, torch.Tensor]:
    out = {("backbone." + k if not k.startswith("final_layer.") else head + k): v for k, v in state.items()}
    return out


NAMINGS = {
    "official": lambda s: s,
    "module": lambda s: prefixed(s, "module."),
    "state_dict+module": lambda s: {"state_dict": prefixed(s, "module."), "epoch": 3},
    "mmpose0": lambda s: {"meta": {"epoch": 210, "mmcv_version": "1.3.0"},
                          "state_dict": mmpose(s, "keypoint_head.")},
    "mmpose1": lambda s: {"meta": {"dataset_meta": {"name": "coco"}},
                          "state_dict": {**mmpose(s, "head."), "data_preprocessor.mean": torch.ones(1, 3, 1, 1),
                                         "data_preprocessor.std": torch.ones(1, 3, 1, 1)}},
    "dcpose": lambda s: {"state_dict": {**prefixed(s, "module.rough_pose_estimation_net."),
                                        "module.offset_mask_combine_conv.weight": torch.ones(4, 4),
                                        "module.conv1.weight": torch.ones(5)}},  # not HRNet's, despite the name
    "fami": lambda s: {"state_dict": {**prefixed(s, "hrnet."), "agg_final_layer.weight": torch.ones(3, 3),
                                      "final_layer.weight": torch.ones(7)}},
    "no_num_batches_tracked": lambda s: {k: v for k, v in s.items() if not k.endswith("num_batches_tracked")},
}


@pytest.mark.parametrize("naming", list(NAMINGS))
def test_every_naming_loads_exactly(tmp_path, naming):
    state = source_state()
    path = tmp_path / f"{naming}.pth"
    torch.save(NAMINGS[naming](state), path)
    model = fresh_model()
    report = load_hrnet_weights(model, path)
    if naming == "no_num_batches_tracked":
        assert report.filled_num_batches_tracked == 292
        state = {k: (torch.zeros_like(v) if k.endswith("num_batches_tracked") else v) for k, v in state.items()}
    assert_loaded(model, state)
    assert report.missing == []
    assert len(report.loaded) + report.filled_num_batches_tracked == len(state)


def test_report_lists_ignored_keys(tmp_path):
    path = tmp_path / "mmpose1.pth"
    torch.save(NAMINGS["mmpose1"](source_state()), path)
    report = load_hrnet_weights(fresh_model(), path)
    assert report.wrapper == "backbone."
    assert sorted(report.unexpected) == ["data_preprocessor.mean", "data_preprocessor.std"]
    assert "loaded 1754 tensors" in report.summary()


def test_imagenet_file_loads_backbone_only(tmp_path):
    state = source_state()
    imagenet = {k: v for k, v in state.items() if not k.startswith("final_layer.")}
    imagenet.update({
        "stage4.2.fuse_layers.1.0.0.weight": torch.randn(4, 2, 1, 1),  # multi_scale_output=True extras
        "incre_modules.0.0.conv1.weight": torch.randn(32, 2, 1, 1),
        "downsamp_modules.0.0.weight": torch.randn(64, 32, 3, 3),
        "final_layer.0.weight": torch.randn(2048, 1024, 1, 1),
        "final_layer.1.running_mean": torch.randn(2048),
        "classifier.weight": torch.randn(1000, 2048),
    })
    path = tmp_path / "hrnet_w2_imagenet.pth"
    torch.save(imagenet, path)
    model = fresh_model()
    initial_head = model.final_layer.weight.clone()
    report = load_hrnet_weights(model, path)
    assert_loaded(model, state, skip_final_layer=True)
    assert torch.equal(model.final_layer.weight, initial_head)  # never ImageNet's final_layer
    assert report.missing == ["final_layer.weight", "final_layer.bias"]
    assert len(report.unexpected) == 6


def test_imagenet_mmpose_copy_head_is_ignored(tmp_path):
    state = source_state()
    file_state = {"backbone." + k: v for k, v in state.items() if not k.startswith("final_layer.")}
    file_state["head.final_layer.0.weight"] = torch.randn(2048, 1024, 1, 1)
    file_state["head.fc.weight"] = torch.randn(1000, 2048)
    path = tmp_path / "mmpose_imagenet.pth"
    torch.save({"state_dict": file_state}, path)
    report = load_hrnet_weights(fresh_model(), path)
    assert report.missing == ["final_layer.weight", "final_layer.bias"]


def test_wrong_shape_names_key_and_shapes(tmp_path):
    state = source_state()
    state["stage3.1.branches.2.0.conv1.weight"] = torch.randn(8, 8, 1, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    expected = r"stage3\.1\.branches\.2\.0\.conv1\.weight.*\[8, 8, 1, 3\].*\[8, 8, 3, 3\]"
    with pytest.raises(CheckpointError, match=expected):
        load_hrnet_weights(fresh_model(), path)


def test_other_width_is_refused(tmp_path):
    path = tmp_path / "w4.pth"
    torch.save(HRNet(width=4, num_joints=3).state_dict(), path)
    expected = r"'transition1\.0\.0\.weight' has shape \[4, 256, 3, 3\].*\[2, 256, 3, 3\]"
    with pytest.raises(CheckpointError, match=expected):
        load_hrnet_weights(fresh_model(), path)


def test_other_joint_count_needs_include_final_layer_false(tmp_path):
    state = source_state()
    path = tmp_path / "coco.pth"
    torch.save(state, path)
    model = HRNet(width=TINY, num_joints=5)
    with pytest.raises(CheckpointError, match="final_layer.weight.*include_final_layer=False"):
        load_hrnet_weights(model, path)
    report = load_hrnet_weights(model, path, include_final_layer=False)
    assert_loaded(model, state, skip_final_layer=True)
    assert report.missing == ["final_layer.weight", "final_layer.bias"]


def test_missing_backbone_weights_are_an_error(tmp_path):
    state = source_state()
    del state["stage4.0.branches.3.1.conv2.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="stage4.0.branches.3.1.conv2.weight"):
        load_hrnet_weights(fresh_model(), path)


def test_missing_file_says_where_weights_come_from(tmp_path):
    path = tmp_path / "pose_hrnet_w48_384x288.pth"
    with pytest.raises(CheckpointError) as err:
        load_hrnet_weights(fresh_model(), path)
    message = str(err.value)
    assert str(path) in message and "not found" in message
    assert "deep-high-resolution-net" in message and "mmpose" in message and "never downloads" in message


def test_unsafe_pickle_is_refused_without_fallback(tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": source_state(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError) as err:
        load_hrnet_weights(fresh_model(), path)
    message = str(err.value)
    assert str(path) in message and "argparse.Namespace" in message
    assert "weights_only=True" in message and "never falls back" in message
    assert "weights_only=False" not in message  # and never suggests unsafe loading either (issue 25)


def test_numpy_scalars_in_metadata_are_accepted(tmp_path):
    np = pytest.importorskip("numpy")
    state = source_state()
    path = tmp_path / "numpy_meta.pth"
    torch.save({"meta": {"best_score": np.float64(0.75), "iter": np.int64(3)}, "state_dict": state}, path)
    model = fresh_model()
    load_hrnet_weights(model, path)
    assert_loaded(model, state)


def test_corrupt_pth_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint" * 20)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_hrnet_weights(fresh_model(), path)


def test_loads_into_backbone_of_bigger_model(tmp_path):
    state = source_state()
    path = tmp_path / "official.pth"
    torch.save(state, path)
    wrapper = torch.nn.Module()
    wrapper.backbone = fresh_model()
    load_hrnet_weights(wrapper.backbone, path)
    assert_loaded(wrapper.backbone, state)


# ---------------------------------------------------------------------------------------------------------------------
# tdmi's own format


def test_safetensors_round_trip_with_sidecar(tmp_path):
    state = source_state()
    state["tied"] = state["conv1.weight"]  # shared storage
    state["view"] = state["conv2.weight"][:, :, 1]  # non-contiguous view of another entry
    metadata = checkpoint_metadata({"model": {"arch": "hrnet"}}, joint_set="posetrack17", input_size=[288, 384],
                                   heatmap_size=[72, 96], delta=2, training={"epoch": 4, "map": 81.5})
    weights = save_checkpoint(tmp_path / "run" / "epoch_4", state, metadata)
    assert weights == tmp_path / "run" / "epoch_4.safetensors"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["epoch_4.json", "epoch_4.safetensors"]

    loaded, meta = load_checkpoint(tmp_path / "run" / "epoch_4.safetensors")
    assert loaded.keys() == state.keys()
    for key in state:
        assert torch.equal(loaded[key], state[key]) and loaded[key].dtype == state[key].dtype, key
    assert meta["training"] == {"epoch": 4, "map": 81.5}
    assert meta["joint_set"] == "posetrack17" and meta["delta"] == 2 and meta["input_size"] == [288, 384]
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["format_version"] == 1 and meta["tdmi_version"]
    # A saved HRNet state goes back into a model strictly.
    model = fresh_model()
    model.load_state_dict({k: v for k, v in loaded.items() if k not in ("tied", "view")})


def test_save_overwrites_atomically_and_leaves_no_temp_files(tmp_path, monkeypatch):
    state = source_state()
    save_checkpoint(tmp_path / "ckpt", state, {"note": "first"})
    before = (tmp_path / "ckpt.safetensors").read_bytes()

    import safetensors.torch

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as stream:
            stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt.safetensors", {k: v + 1 for k, v in state.items()}, {"note": "second"})
    assert (tmp_path / "ckpt.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "ckpt.json").read_text())["note"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json", "ckpt.safetensors"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.safetensors: checkpoint weights not found"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path / "a", source_state(), {})
    (tmp_path / "a.json").unlink()
    with pytest.raises(CheckpointError, match=r"a\.json: sidecar missing"):
        load_checkpoint(tmp_path / "a")

    save_checkpoint(tmp_path / "b", source_state(), {})
    (tmp_path / "b.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="weights_sha256 does not match"):
        load_checkpoint(tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"b\.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path / "b", verify=False)

    save_checkpoint(tmp_path / "c", source_state(), {})
    (tmp_path / "c.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"c\.json: sidecar is not valid JSON"):
        load_checkpoint(tmp_path / "c.json")
    (tmp_path / "c.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(tmp_path / "c")


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "x", source_state(), {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_paths():
    assert checkpoint_paths("runs/a/best") == checkpoint_paths("runs/a/best.safetensors")
    assert checkpoint_paths("runs/a/best.json")[0].name == "best.safetensors"
    assert checkpoint_paths("w.v2")[1].name == "w.v2.json"


def test_backbone_from_our_own_safetensors_checkpoint(tmp_path):
    """A trained tdmi model's backbone initialises another model (SynthTrack's stand-in for COCO pre-training)."""
    from tdmi.config import load_config
    from tdmi.models.checkpoints import load_hrnet_weights, save_checkpoint
    from tdmi.models.tdmi import build_model

    cfg = load_config(None, ["model.arch=hrnet", "model.delta=0", "model.backbone.width=4",
                             "model.backbone.freeze=false"])
    torch.manual_seed(3)
    trained = build_model(cfg.model)
    save_checkpoint(tmp_path / "baseline.safetensors", trained.state_dict(), {"config": {}})
    fresh = build_model(load_config(None, ["model.backbone.width=4", "model.tde.channels=12",
                                           "model.tde.deform_groups=3"]).model)
    report = load_hrnet_weights(fresh.backbone, tmp_path / "baseline.safetensors")
    assert not report.missing
    for key, value in trained.backbone.state_dict().items():
        assert torch.equal(fresh.backbone.state_dict()[key], value), key


def test_atomic_writes_get_normal_permissions_and_leave_nothing_behind(tmp_path):
    import os

    from tdmi.atomic import atomic_write, atomic_write_json

    path = atomic_write_json(tmp_path / "out.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask
    before = path.read_text()

    def broken(temp):
        temp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == before  # the old file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def _pre_issue22_checkpoint(tmp_path):
    """A TDMI-W8 checkpoint as tdmi wrote it before the stage-1 and RDM-width fields existed: the stage-1 feature from
    layer1, gates of width C // 4, and a stored config that names none of the three fields. Built here (random
    weights), so the test does not depend on which layout the shipped demo has."""
    from tdmi.config import load_config, to_dict
    from tdmi.models.tdmi import build_model

    cfg = load_config(None, ["model.input_size=[96, 128]", "model.heatmap_size=[24, 32]", "model.backbone.width=8",
                             "model.tde.channels=16", "model.tde.deform_groups=4", "model.tde.stage1_feature=layer1",
                             "model.rdm.hidden=4", "model.rdm.reduction=4", "model.rdm.init=normal",
                             "model.rdm.init_std=0.1", "model.mi.enabled=false"])
    torch.manual_seed(0)
    state = build_model(cfg.model).state_dict()
    stored = to_dict(cfg)
    for section, key in (("tde", "stage1_feature"), ("rdm", "hidden"), ("rdm", "init")):
        del stored["model"][section][key]
    return save_checkpoint(tmp_path / "old", state, {"config": stored})


def test_a_checkpoint_saved_before_the_stage1_field_loads_with_layer1(tmp_path):
    from tdmi.engine.test import load_model_for_test
    from tdmi.inference.model_loading import load_inference_model

    path = _pre_issue22_checkpoint(tmp_path)
    loaded = load_model_for_test(path, device="cpu")
    assert loaded.cfg.model.tde.stage1_feature == "layer1" and loaded.model.backbone.stage_channels[0] == 256
    assert load_inference_model(str(path), device="cpu").config.model.tde.stage1_feature == "layer1"


def test_a_stored_config_without_the_mi_formulation_means_the_default_it_was_trained_with():
    """The MI default changed from vsd to balanced (the SynthTrack benchmark's dev choice): a stored config that
    names no formulation was trained with vsd, while a config written today gets balanced."""
    from tdmi.config import config_from_dict, load_config, to_dict

    stored = to_dict(load_config(None))
    assert stored["model"]["mi"]["formulation"] == "balanced"
    del stored["model"]["mi"]["formulation"]
    assert config_from_dict(stored).model.mi.formulation == "vsd"


def test_weights_of_the_other_stage1_layout_name_the_field_to_set(tmp_path):
    from tdmi.config import load_config
    from tdmi.inference.model_loading import load_inference_model

    path = _pre_issue22_checkpoint(tmp_path)
    config = tmp_path / "today.yaml"
    config.write_text("model:\n  input_size: [96, 128]\n  heatmap_size: [24, 32]\n  backbone: {width: 8}\n"
                      "  tde: {channels: 16, deform_groups: 4}\n  rdm: {reduction: 4}\n")
    assert load_config(config).model.tde.stage1_feature == "transition"
    with pytest.raises(CheckpointError, match=r"set model\.tde\.stage1_feature=layer1"):
        load_inference_model(str(path), str(config), device="cpu")
