"""Every YAML in configs/: loads, states only non-defaults, builds its model; ablations differ from the full model
only in their switch (paper tables 5-7)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tdmi.config import ExperimentConfig, flatten_dict, load_config, to_dict
from tdmi.models.tdmi import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
FULL = "tdmi_w48_pt17.yaml"

# What each ablation changes relative to the full model (besides its name), as resolved dotted keys.
ABLATIONS = {
    "ablation_t5_tde_only.yaml": {"model.rdm.enabled": False, "model.mi.enabled": False},
    "ablation_t6_final_stage.yaml": {"model.tde.differences": "final_stage", "model.tde.modulation": False},
    "ablation_t6_concat.yaml": {"model.tde.aggregation": "concat", "model.tde.modulation": False},
    "ablation_t6_progressive.yaml": {"model.tde.modulation": False},
    "ablation_t7_no_mi.yaml": {"model.mi.enabled": False},
    "ablation_t7_channel_split.yaml": {"model.rdm.factorisation": "channel_split"},
    "tdmist_w48_pt17.yaml": {"model.arch": "tdmi_st"},
}


def test_the_expected_experiments_exist():
    names = {p.name for p in ALL_CONFIGS}
    for dataset in ("pt17", "pt18", "pt21"):
        assert f"tdmi_w48_{dataset}.yaml" in names and f"tdmist_w48_{dataset}.yaml" in names
    assert set(ABLATIONS) <= names
    for rival in ("dcpose", "fami_pose"):  # the comparison methods (issue 24): PoseTrack W48 and the benchmark's W8
        assert {f"{rival}_w48_pt17.yaml", f"{rival}_w48_pt18.yaml", f"bench_{rival}_w8.yaml"} <= names
    assert {"hrnet_w48_pt17.yaml", "tdmi_w8_synth_128x96.yaml", "hrnet_w8_synth_128x96.yaml",
            "tdmi_w18_synth_256x192.yaml"} <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_states_only_what_differs_from_the_defaults(path):
    text = path.read_text()
    assert text.startswith("#"), f"{path.name} must open with a comment saying what it reproduces"
    cfg = load_config(path)
    assert cfg.name == path.stem
    defaults = flatten_dict(to_dict(ExperimentConfig()))
    for key, value in flatten_dict(yaml.safe_load(text)).items():
        assert value != defaults[key], f"{path.name}: {key}: {value!r} is the default; leave it out"
    model = cfg.model
    assert [s * 4 for s in model.heatmap_size] == model.input_size, "heatmaps are input / 4"


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_changes_only_its_switch(name):
    full = flatten_dict(to_dict(load_config(CONFIGS / FULL)))
    ablation = flatten_dict(to_dict(load_config(CONFIGS / name)))
    changed = {k: v for k, v in ablation.items() if v != full[k] and k != "name"}
    assert changed == ABLATIONS[name]


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_its_model(path):
    cfg = load_config(path).model
    model = build_model(cfg)
    assert model.num_frames == cfg.num_frames
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, f"{path.name} has nothing to train"
    if cfg.backbone.freeze:
        assert not any(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.parametrize("name", ["tdmi_w8_synth_128x96.yaml", "hrnet_w8_synth_128x96.yaml"])
def test_small_cpu_configs_predict_heatmaps_of_the_configured_size(name):
    cfg = load_config(CONFIGS / name).model
    model = build_model(cfg).eval()
    width, height = cfg.input_size
    with torch.no_grad():
        out = model(torch.randn(1, cfg.num_frames, 3, height, width))
    assert out.heatmaps.shape == (1, cfg.num_joints, cfg.heatmap_size[1], cfg.heatmap_size[0])
