"""Foreign HRNet checkpoints (official, mmpose, DCPose layouts) in `tdmi infer`, `test`, `export` and `info`
with `--checkpoint FILE` alone (tdmi.models.foreign_hrnet)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tdmi.cli import main
from tdmi.config import dump_config, load_config
from tdmi.data.synthetic import generate_synthtrack
from tdmi.errors import CheckpointError
from tdmi.models.checkpoints import load_checkpoint
from tdmi.models.foreign_hrnet import (DEFAULT_INPUT_SIZE, hrnet_file_shape, input_size_from_name,
                                       is_foreign_checkpoint, load_foreign_hrnet)
from tdmi.models.hrnet import HRNet

SHIPPED_BASELINE = Path(__file__).resolve().parents[1] / "src" / "tdmi" / "weights" / "hrnet_demo.safetensors"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official_state(width: int, joints: int = 17, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official key names (HRNet's own state_dict names are the official ones)."""
    torch.manual_seed(seed)
    return HRNet(width=width, num_joints=joints).state_dict()


def wrap(state: dict[str, torch.Tensor], layout: str) -> dict:
    if layout == "official":
        return state
    if layout == "mmpose":
        return {"meta": {"epoch": 210}, "state_dict": {
            ("keypoint_head." + k if k.startswith("final_layer.") else "backbone." + k): v for k, v in state.items()}}
    if layout == "dcpose":
        return {"state_dict": {"module.rough_pose_estimation_net." + k: v for k, v in state.items()}}
    raise ValueError(layout)


@pytest.fixture(scope="module")
def w32_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "pose_hrnet_w32_256x192.pth"
    torch.save(official_state(32), path)
    return path


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_synthtrack(root, sequences=1, frames=3, seed=5, size=(192, 144), progress=False)
    return root


def test_zoo_names_give_the_input_size():
    assert input_size_from_name("pose_hrnet_w32_256x192.pth") == [192, 256]
    assert input_size_from_name("hrnet_w48_coco_384x288-314c8528_20200708.pth") == [288, 384]
    assert input_size_from_name("td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth") == [192, 256]
    assert input_size_from_name("my_weights.pth") is None
    assert input_size_from_name("run_20220909.pth") is None


@pytest.mark.parametrize("width, layout", [(32, "official"), (32, "mmpose"), (48, "dcpose"), (48, "official")])
def test_width_and_joints_are_read_from_the_weights(tmp_path, width, layout):
    path = tmp_path / "weights.pth"
    torch.save(wrap(official_state(width), layout), path)
    assert is_foreign_checkpoint(path)
    found_width, joints, _ = hrnet_file_shape(path)
    assert (found_width, joints) == (width, 17)
    foreign = load_foreign_hrnet(path)
    assert foreign.cfg.model.arch == "hrnet" and foreign.cfg.model.backbone.width == width
    assert foreign.cfg.model.input_size == DEFAULT_INPUT_SIZE[width]  # no _HxW in the name: the default, noted
    assert any("no _HxW size" in note for note in foreign.notes)
    assert any("eyes" in note for note in foreign.notes)
    expected = official_state(width)
    loaded = foreign.model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_converted_shipped_baseline_predicts_exactly_as_the_original(tmp_path):
    state, _ = load_checkpoint(SHIPPED_BASELINE)
    backbone = {k[len("backbone."):]: v.float() for k, v in state.items() if k.startswith("backbone.")}
    path = tmp_path / "pose_hrnet_w8_128x96.pth"
    torch.save(wrap(backbone, "dcpose"), path)
    from tdmi.engine.test import load_model_for_test

    native = load_model_for_test(SHIPPED_BASELINE, device="cpu")
    foreign = load_model_for_test(path, device="cpu")
    assert foreign.cfg.model.input_size == native.cfg.model.input_size == [96, 128]
    clip = torch.randn(2, 1, 3, 128, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(native.model(clip).heatmaps, foreign.model(clip).heatmaps)


def test_tdmi_test_on_a_converted_checkpoint_matches_the_original(tmp_path, synth_root, capsys):
    state, metadata = load_checkpoint(SHIPPED_BASELINE)
    path = tmp_path / "pose_hrnet_w8_128x96.pth"
    torch.save({k[len("backbone."):]: v.float() for k, v in state.items() if k.startswith("backbone.")}, path)
    config = tmp_path / "cfg.yaml"
    config.write_text(dump_config(load_config(None, [f"data.root={synth_root}", "data.dataset=synthtrack",
                                                     "model.arch=hrnet", "model.delta=0", "model.backbone.width=8",
                                                     "model.input_size=[96,128]", "model.heatmap_size=[24,32]",
                                                     "model.mi.enabled=false", "data.workers=0"])))
    tables = []
    for checkpoint in (SHIPPED_BASELINE, path):
        out = tmp_path / f"test_{checkpoint.suffix[1:]}"
        assert main(["test", "--checkpoint", str(checkpoint), "--config", str(config), "--boxes", "gt",
                     "--out", str(out)]) == 0
        tables.append(json.loads((out / "results.json").read_text()))
    text = capsys.readouterr()
    assert "foreign weights from pose_hrnet_w8_128x96.pth" in text.err
    columns = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")
    assert [tables[0][c] for c in columns] == [tables[1][c] for c in columns]
    assert tables[0]["Mean"] > 20  # a trained model on its own kind of data, not two equal zeros


def test_tdmi_infer_and_info_with_an_official_w32_file(tmp_path, w32_file, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    image = np.full((256, 192, 3), 90, np.uint8)
    cv2.imwrite(str(frames / "000000.jpg"), image)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 0, "bbox": [40, 20, 100, 220], "score": 0.9}]))
    out = tmp_path / "out"
    assert main(["infer", str(frames), "--checkpoint", str(w32_file), "--boxes", str(boxes), "--out", str(out),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "HRNet-W32 256x192 (h x w), foreign weights from pose_hrnet_w32_256x192.pth" in printed
    assert "eyes" in printed and "no _HxW" not in printed
    written = json.loads(next(out.glob("*.json")).read_text())
    assert len(written["annotations"]) == 1
    assert len(written["annotations"][0]["keypoints"]) == 17 * 3
    assert main(["info", "--checkpoint", str(w32_file)]) == 0
    printed = capsys.readouterr().out
    assert "HRNet-W32" in printed and "192x256" in printed.splitlines()[-1]


def test_a_tdmi_config_over_foreign_weights_is_refused(w32_file):
    with pytest.raises(CheckpointError, match=r"arch 'tdmi', whose TDE, RDM, fusion and head these weights do not "
                                              r"contain .*model\.backbone\.pretrained="):
        load_foreign_hrnet(w32_file, "tdmi_w48_pt17")


def test_a_config_with_another_width_is_overridden_with_a_note(w32_file):
    foreign = load_foreign_hrnet(w32_file, "hrnet_w48_pt17")
    assert foreign.cfg.model.backbone.width == 32
    assert foreign.cfg.model.input_size == [192, 256]  # the file name wins over the config's 384x288
    assert any("width 48 -> 32" in note for note in foreign.notes)


def test_headless_and_other_joint_files_are_refused(tmp_path):
    headless = tmp_path / "hrnet_w32_imagenet.pth"
    torch.save({k: v for k, v in official_state(32).items() if not k.startswith("final_layer.")}, headless)
    with pytest.raises(CheckpointError, match="without a pose head.*initialise training"):
        load_foreign_hrnet(headless)
    mpii = tmp_path / "pose_hrnet_w32_256x256_mpii.pth"
    torch.save(official_state(32, joints=16), mpii)
    with pytest.raises(CheckpointError, match="predicts 16 joints"):
        load_foreign_hrnet(mpii)
    not_hrnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, not_hrnet)
    with pytest.raises(CheckpointError, match="not an HRNet pose checkpoint"):
        load_foreign_hrnet(not_hrnet)


def test_tdmi_checkpoints_are_not_foreign(tmp_path):
    assert not is_foreign_checkpoint(SHIPPED_BASELINE)
    assert not is_foreign_checkpoint(SHIPPED_BASELINE.with_suffix(""))
    assert not is_foreign_checkpoint(tmp_path / "missing.pth")
