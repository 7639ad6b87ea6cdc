"""Model summary (`tdmi info`): parameter counts and conv/linear MACs (docs/facts/model-facts.md (a) reference
totals)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tdmi.cli import main
from tdmi.config import load_config
from tdmi.models.hrnet import HRNet, freeze
from tdmi.models.summary import format_summary, model_summary, summarise_config


def hrnet_macs(width: int, height: int, image_width: int) -> int:
    with torch.device("meta"):
        model = HRNet(width=width)
        images = torch.zeros(1, 3, height, image_width)
    return model_summary(model, images, lambda x: model.heatmaps(model(x).s4))["macs"]


def test_hrnet_w32_macs_match_reference():
    assert hrnet_macs(32, 256, 192) == 7_645_003_776


def test_hrnet_w48_macs_match_reference():
    assert hrnet_macs(48, 384, 288) == 35_306_606_592


class Toy(nn.Module):
    """conv (3->4, 3x3) on 8x8, then a linear 256->10; the parent also calls a grandchild directly."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.extra = nn.Sequential(nn.Conv2d(4, 2, 1, bias=False))
        self.classifier = nn.Linear(256, 10)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        side = self.extra[0](x)  # grandchild called by the parent: still counts for `extra`
        return self.classifier(x.flatten(1)) * self.scale + side.sum()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_toy_counts_by_hand(device):
    with torch.device(device):
        model = Toy()
        images = torch.zeros(2, 3, 8, 8)
    model.features.requires_grad_(False)
    summary = model_summary(model, images)
    conv_macs = 2 * 4 * 3 * 9 * 64
    extra_macs = 2 * 2 * 4 * 64
    linear_macs = 2 * 256 * 10
    assert summary["macs"] == conv_macs + extra_macs + linear_macs
    rows = {row["name"]: row for row in summary["modules"]}
    assert rows["features"]["macs"] == conv_macs and rows["features"]["parameters"] == 4 * 27 + 4
    assert rows["features"]["trainable_parameters"] == 0
    assert rows["extra"]["macs"] == extra_macs
    assert rows["classifier"]["macs"] == linear_macs
    assert rows["(own)"] == {"name": "(own)", "parameters": 1, "trainable_parameters": 1, "macs": 0}
    assert summary["parameters"] == 4 * 27 + 4 + 8 + 2570 + 1
    assert summary["trainable_parameters"] == 8 + 2570 + 1
    assert summary["output_shape"] == [2, 10]
    assert model.training  # restored after the count


def test_frozen_hrnet_has_only_trainable_head_after_unfreezing_it():
    with torch.device("meta"):
        model = HRNet(width=4)
        images = torch.zeros(1, 3, 64, 64)
    freeze(model)
    model.final_layer.requires_grad_(True)
    summary = model_summary(model, images)
    assert summary["trainable_parameters"] == 4 * 17 + 17
    assert summary["parameters"] == sum(p.numel() for p in HRNet(width=4).parameters())
    assert [m["name"] for m in summary["modules"]][:2] == ["conv1", "bn1"]


def tiny_config(*extra: str):
    return load_config(None, ["model.arch=hrnet", "model.backbone.width=4", "model.input_size=[64,96]",
                              "model.heatmap_size=[16,24]", "model.backbone.freeze=false", *extra])


def test_summarise_config_for_hrnet():
    summary = summarise_config(tiny_config())
    assert summary["parameters"] == sum(p.numel() for p in HRNet(width=4).parameters())
    assert summary["macs"] == hrnet_macs(4, 96, 64)
    assert summary["output_shape"][-2:] == [24, 16]
    assert summary["joint_set"] == "posetrack17" and summary["num_frames"] == 5 and summary["delta"] == 2
    assert "warning" not in format_summary(summary)


def test_heatmap_size_mismatch_is_reported():
    summary = summarise_config(tiny_config("model.heatmap_size=[32,48]"))
    assert "warning: the model outputs heatmaps of 16x24, but model.heatmap_size is 32x48" in format_summary(summary)


def test_tdmi_info_command_prints_and_writes_json(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  arch: hrnet\n  backbone: {width: 4, freeze: false}\n  input_size: [64, 96]\n"
                      "  heatmap_size: [16, 24]\n")
    out_json = tmp_path / "info" / "summary.json"
    assert main(["info", "--config", str(config), "--json-out", str(out_json)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out_json.read_text())
    assert written["parameters"] == sum(p.numel() for p in HRNet(width=4).parameters())
    assert written["macs"] == hrnet_macs(4, 96, 64)
    last_line = printed.strip().splitlines()[-1]
    assert last_line.startswith("tdmi info: hrnet,") and "GMACs per person" in last_line
    assert f"{written['parameters']:,}" in printed
    assert [p.name for p in out_json.parent.iterdir()] == ["summary.json"]


def test_tdmi_summaries_are_counted_on_the_meta_device():
    """The heads run with autocast off; on 'meta' (no autocast there) that must not force a full-size CPU run."""
    from tdmi.config import load_config
    from tdmi.models.summary import summarise_config

    assert summarise_config(load_config("tdmi_w48_pt17"))["counted_on"] == "meta"
