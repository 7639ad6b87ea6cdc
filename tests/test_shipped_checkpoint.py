"""The demo checkpoint shipped inside the package: it loads, says what it is, and reproduces its validation mAP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tdmi
from tdmi.config import config_from_dict
from tdmi.models.checkpoints import load_checkpoint
from tdmi.models.tdmi import build_model

WEIGHT_DIR = Path(tdmi.__file__).parent / "weights"
WEIGHTS = WEIGHT_DIR / "tdmi_demo.safetensors"
SHIPPED = sorted(WEIGHT_DIR.glob("*.safetensors"))
TABLE = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")


def test_shipped_checkpoint_loads_strictly_into_its_config():
    state, metadata = load_checkpoint(WEIGHTS)  # also verifies the sidecar's sha256
    cfg = config_from_dict(metadata["config"])
    assert cfg.model.arch == "tdmi" and cfg.model.delta == 2
    model = build_model(cfg.model)
    model.load_state_dict(state, strict=True)
    assert not any(k.startswith("mi_objective.") for k in state)
    assert WEIGHTS.stat().st_size < 8 * 2**20  # "a few MB"
    w, h = cfg.model.input_size
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, cfg.model.num_frames, 3, h, w))
    assert out.heatmaps.shape[-2:] == (cfg.model.heatmap_size[1], cfg.model.heatmap_size[0])
    assert set(TABLE) <= set(metadata["validation"])


@pytest.mark.slow
@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_reproduces_its_reported_validation_map(weights, tmp_path, capsys):
    """docs/results.md: `tdmi test` on the SynthTrack validation split the checkpoint was scored on."""
    from tdmi.cli import main

    metadata = json.loads(weights.with_suffix(".json").read_text())
    split = metadata["validation"].get("synthtrack", {"sequences": 12, "frames": 30, "seed": 1001})
    data = tmp_path / "synthtrack"
    # scored on SynthTrack version 1 (before per-entity streams), which --generator-version 1 still renders
    assert main(["synth", "--out", str(data), "--sequences", str(split["sequences"]), "--frames",
                 str(split["frames"]), "--seed", str(split["seed"]), "--split", "val",
                 "--generator-version", str(split.get("generator_version", 1))]) == 0
    out = tmp_path / "test"
    assert main(["test", "--checkpoint", str(weights), "--set", f"data.root={data}", "--set", "data.workers=0",
                 "--boxes", "gt", "--out", str(out)]) == 0
    measured = json.loads((out / "results.json").read_text())
    for key in TABLE:
        assert measured[key] == pytest.approx(metadata["validation"][key], abs=0.05), key


def test_shipped_baseline_loads_strictly_and_says_what_it_was_scored_on():
    weights = WEIGHT_DIR / "hrnet_demo.safetensors"
    if not weights.is_file():
        pytest.skip("no shipped baseline yet (scripts/synthtrack_proof.sh packages it after stage 1)")
    state, metadata = load_checkpoint(weights)
    cfg = config_from_dict(metadata["config"])
    assert cfg.model.arch == "hrnet"
    build_model(cfg.model).load_state_dict(state, strict=True)
    assert weights.stat().st_size < 8 * 2**20
    assert set(TABLE) <= set(metadata["validation"]) and "synthtrack" in metadata["validation"]
