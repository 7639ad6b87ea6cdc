"""TDMI / TDMI-ST / single-frame baseline assembly, build_model and every ablation switch (paper section 3,
tables 5-7)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from model_helpers import perturb_zero_predictors
from tdmi.config import ConfigError, ModelConfig, load_config
from tdmi.models.blocks import count_parameters
from tdmi.models.hrnet import HRNet
from tdmi.models.losses import JointsMSELoss
from tdmi.models.mi_loss import MIObjective
from tdmi.models.rdm import RepresentationDisentanglement
from tdmi.models.tde import TemporalDifferenceEncoder
from tdmi.models.tdmi import TDMI, SingleFrameHRNet, TDMIOutput, build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
H, W = 64, 32  # input (HRNet's four branches need multiples of 32); features and heatmaps at 16x8
h, w = H // 4, W // 4
J = 5
WIDTH = 4


def tiny_model_config(path: Path | None = None, *overrides: str) -> ModelConfig:
    """A config from ``configs/`` (or the defaults), shrunk so the model runs in milliseconds on CPU."""
    shrink = [f"model.num_joints={J}", f"model.backbone.width={WIDTH}", "model.tde.channels=8",
              "model.tde.deform_groups=2", "model.tde.deform_dilation=2"]
    return load_config(path, overrides=shrink + list(overrides)).model


def build_tiny(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg)


def clip(batch: int = 2, frames: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, H, W, generator=torch.Generator().manual_seed(seed))


def training_loss(output: TDMIOutput, cfg: ModelConfig) -> torch.Tensor:
    """The training objective: L_H, plus the MI objective's total when it is enabled (paper eq. 14, 13)."""
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(output.heatmaps.shape, generator=gen)
    weight = (torch.rand(output.heatmaps.shape[:2], generator=gen) > 0.2).float()
    loss = JointsMSELoss()(output.heatmaps, target, weight)
    if cfg.mi.enabled:
        loss = loss + MIObjective.from_config(cfg)(output, target, weight)["total"]
    return loss


# Every experiment config (paper runs and ablations), with the parameters that are trainable yet, by design,
# never get a gradient. None exist: the one candidate (table 7 "no MI": the noisy gate) is frozen by build_model.
EXPERIMENTS = {
    "tdmi_w48_pt17.yaml": "full model (tables 5-7, last rows)",
    "tdmist_w48_pt17.yaml": "TDMI-ST",
    "hrnet_w48_pt17.yaml": "single-frame baseline",
    "ablation_t5_tde_only.yaml": "table 5: TDE only",
    "ablation_t6_final_stage.yaml": "table 6: S^4 only",
    "ablation_t6_concat.yaml": "table 6: concat + conv",
    "ablation_t6_progressive.yaml": "table 6: progressive, no modulation",
    "ablation_t7_no_mi.yaml": "table 7: RDM without MI",
    "ablation_t7_channel_split.yaml": "table 7: channel split",
}
FROZEN_BY_DESIGN = {"ablation_t7_no_mi.yaml": ("rdm.noisy_gate.",)}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_trains_every_trainable_parameter(name):
    cfg = tiny_model_config(CONFIGS / name)
    model = build_tiny(cfg).train()
    perturb_zero_predictors(model)
    frames = clip(frames=cfg.num_frames)
    output = model(frames)
    assert output.heatmaps.shape == (2, J, h, w)
    training_loss(output, cfg).backward()

    frozen_prefixes = FROZEN_BY_DESIGN.get(name, ())
    trainable = 0
    for parameter_name, parameter in model.named_parameters():
        if parameter_name.startswith(frozen_prefixes) or (parameter_name.startswith("backbone.")
                                                         and cfg.backbone.freeze):
            assert not parameter.requires_grad and parameter.grad is None, parameter_name
            continue
        assert parameter.requires_grad, parameter_name
        assert parameter.grad is not None, f"{name}: {parameter_name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name}: {parameter_name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name}: {parameter_name} has an all-zero gradient"
        trainable += 1
    assert trainable > 0


def test_ablation_switches_build_the_intended_modules():
    full = build_tiny(tiny_model_config(CONFIGS / "tdmi_w48_pt17.yaml"))
    assert len(full.tde.intra_stage) == 4 and full.tde.modulation is not None and full.rdm.factorisation == "gates"
    assert isinstance(full.tde.accumulate, nn.ModuleList)
    assert full.spatiotemporal_block is None

    tde_only = build_tiny(tiny_model_config(CONFIGS / "ablation_t5_tde_only.yaml"))
    assert tde_only.rdm is None
    final_stage = build_tiny(tiny_model_config(CONFIGS / "ablation_t6_final_stage.yaml"))
    assert final_stage.tde.stages == (3,) and final_stage.tde.modulation is None
    concat = build_tiny(tiny_model_config(CONFIGS / "ablation_t6_concat.yaml"))
    assert concat.tde.aggregation == "concat" and concat.tde.modulation is None
    progressive = build_tiny(tiny_model_config(CONFIGS / "ablation_t6_progressive.yaml"))
    assert progressive.tde.aggregation == "progressive" and progressive.tde.modulation is None
    split = build_tiny(tiny_model_config(CONFIGS / "ablation_t7_channel_split.yaml"))
    assert split.rdm.factorisation == "channel_split" and count_parameters(split.rdm) == 0
    st = build_tiny(tiny_model_config(CONFIGS / "tdmist_w48_pt17.yaml"))
    assert st.spatiotemporal_block.in_channels == 5 * WIDTH
    assert isinstance(build_tiny(tiny_model_config(CONFIGS / "hrnet_w48_pt17.yaml")), SingleFrameHRNet)


@pytest.mark.parametrize("arch", ["tdmi", "tdmi_st", "hrnet"])
def test_output_fields_and_shapes(arch):
    cfg = tiny_model_config(None, f"model.arch={arch}")
    model = build_tiny(cfg).eval()
    with torch.no_grad():
        out = model(clip(batch=3))
    assert out.heatmaps.shape == out.static_heatmaps.shape == (3, J, h, w)
    assert out.visual.shape == (3, WIDTH, h, w)
    torch.testing.assert_close(out.static_heatmaps, model.backbone.final_layer(out.visual))
    if arch == "hrnet":
        assert out.motion is None and out.useful is None and out.noisy is None and out.fused is None
        torch.testing.assert_close(out.heatmaps, out.static_heatmaps)
    else:
        for feature in (out.motion, out.useful, out.noisy, out.fused):
            assert feature.shape == (3, 8, h, w)


def test_visual_feature_is_the_key_frames_stage4():
    cfg = tiny_model_config(None, "model.delta=2")
    model = build_tiny(cfg).eval()
    frames = clip()
    with torch.no_grad():
        out = model(frames)
        key = model.backbone(frames[:, 2]).s4
    torch.testing.assert_close(out.visual, key)


def test_without_rdm_the_motion_feature_is_fused_directly():
    model = build_tiny(tiny_model_config(None, "model.rdm.enabled=false")).eval()
    with torch.no_grad():
        out = model(clip())
    assert out.noisy is None and out.useful is None and out.motion is not None
    torch.testing.assert_close(out.heatmaps, model.head(model.fusion(torch.cat([out.motion, out.visual], dim=1))))


@pytest.mark.parametrize("arch", ["tdmi", "tdmi_st", "hrnet"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_decode_of_encode_equals_forward(arch, mode):
    cfg = tiny_model_config(None, f"model.arch={arch}", "model.backbone.freeze=false")
    model = build_tiny(cfg)
    model.train(mode == "train")
    frames = clip()
    with torch.no_grad():
        torch.manual_seed(0)
        direct = model(frames)
        features = model.encode(frames.flatten(0, 1))
        clip_features = type(features)(*(f.unflatten(0, (2, 5)) for f in features))
        decoded = model.decode(clip_features)
    if arch == "hrnet":
        # The baseline's forward runs the backbone on the key frames only (a different batch for BN in train mode).
        if mode == "eval":
            torch.testing.assert_close(decoded.heatmaps, direct.heatmaps, atol=1e-6, rtol=1e-5)
        return
    for field in TDMIOutput._fields:
        a, b = getattr(direct, field), getattr(decoded, field)
        assert (a is None) == (b is None), field
        if a is not None:
            assert torch.equal(a, b), field


def test_frame_by_frame_cached_features_give_the_same_prediction():
    """Encoding each frame on its own (as a streaming cache does) matches encoding the clip at once."""
    model = build_tiny(tiny_model_config(None)).eval()
    frames = clip(batch=1)
    with torch.no_grad():
        per_frame = [model.encode(frames[:, t]) for t in range(5)]
        stacked = type(per_frame[0])(*(torch.stack([f[j] for f in per_frame], dim=1) for j in range(4)))
        torch.testing.assert_close(model.decode(stacked).heatmaps, model(frames).heatmaps, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("delta", [1, 2, 3])
@pytest.mark.parametrize("arch", ["tdmi", "tdmi_st"])
def test_any_delta(delta, arch):
    cfg = tiny_model_config(None, f"model.delta={delta}", f"model.arch={arch}")
    model = build_tiny(cfg)
    # the stage-1 chain reads the transition's C channels per difference (docs/architecture.md)
    assert model.tde.intra_stage[0][0].conv1.in_channels == 2 * delta * cfg.backbone.width
    out = model(clip(frames=2 * delta + 1))
    assert out.heatmaps.shape == (2, J, h, w)
    out.heatmaps.sum().backward()
    with pytest.raises(ValueError, match=f"T = 2\\*delta \\+ 1 = {2 * delta + 1}"):
        model(clip(frames=2 * delta + 3))


def test_frozen_backbone_runs_without_autograd_and_keeps_bn_in_eval():
    model = build_tiny(tiny_model_config(None))
    model.train()
    assert model.training and model.tde.training
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    before = model.backbone.bn1.running_mean.clone()
    features = model.encode(clip().flatten(0, 1))
    assert not any(f.requires_grad for f in features)
    assert torch.equal(model.backbone.bn1.running_mean, before)
    out = model(clip())
    assert out.heatmaps.requires_grad  # the new modules still train


def test_frozen_backbone_with_train_mode_bn_copies_dcpose():
    model = build_tiny(tiny_model_config(None, "model.backbone.bn_eval=false")).train()
    bn = model.backbone.bn1
    assert bn.training
    before = bn.running_mean.clone()
    model.encode(clip().flatten(0, 1))
    assert not torch.equal(bn.running_mean, before)


def test_unfrozen_backbone_gets_gradients_through_encode():
    model = build_tiny(tiny_model_config(None, "model.backbone.freeze=false")).train()
    model(clip()).heatmaps.square().mean().backward()
    assert model.backbone.conv1.weight.grad is not None
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_new_layers_are_initialised_as_in_model_facts():
    model = build_tiny(tiny_model_config(None))
    assert model.head.weight.std().item() == pytest.approx(0.001, rel=0.3)
    assert torch.equal(model.head.bias, torch.zeros_like(model.head.bias))
    for modulation in model.tde.modulation:
        for conv in (modulation.offset_predictor[1], modulation.mask_predictor[1]):
            assert not conv.weight.any() and not conv.bias.any()
        assert modulation.deform_conv.weight.std().item() == pytest.approx(0.001, rel=0.3)


def test_invalid_models_raise_clear_errors():
    with pytest.raises(ConfigError, match=r"model.tde.channels=10 is not divisible by model.tde.deform_groups=4"):
        build_tiny(tiny_model_config(None, "model.tde.channels=10", "model.tde.deform_groups=4"))
    build_tiny(tiny_model_config(None, "model.tde.channels=10", "model.tde.deform_groups=4",
                                 "model.tde.modulation=false"))
    with pytest.raises(ConfigError, match=r"model.delta=0: arch 'tdmi' needs supporting frames"):
        build_tiny(tiny_model_config(None, "model.delta=0"))
    with pytest.raises(ConfigError, match=r"model.delta=-1"):
        build_tiny(tiny_model_config(None, "model.delta=-1", "model.arch=hrnet"))
    backbone = HRNet(width=WIDTH, num_joints=J)
    tde = TemporalDifferenceEncoder(backbone.stage_channels, num_frames=1 + 2, channels=8, deform_groups=2)
    with pytest.raises(ValueError, match="delta must be >= 1, got delta=0"):
        TDMI(backbone, tde, None, delta=0, num_joints=J)
    with pytest.raises(ValueError, match="built for 3 frames, but delta=2 gives 5"):
        TDMI(backbone, tde, None, delta=2, num_joints=J)
    with pytest.raises(ValueError, match="num_joints=17 but the backbone's final_layer predicts 5"):
        TDMI(backbone, tde, None, delta=1, num_joints=17)
    with pytest.raises(ValueError, match="RDM width 4 != TDE width 8"):
        TDMI(backbone, tde, RepresentationDisentanglement(4), delta=1, num_joints=J)
    with pytest.raises(TypeError, match="must expose `stage_channels`"):
        SingleFrameHRNet(nn.Conv2d(3, 3, 1))
    model = TDMI(backbone, tde, None, delta=1, num_joints=J)
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        model(torch.randn(2, 3, H, W))
    baseline = SingleFrameHRNet(backbone, delta=1)
    with pytest.raises(ValueError, match=r"T = 2\*delta \+ 1 = 3 frames \(delta=1\), got T=5"):
        baseline(clip())
    with pytest.raises(ValueError, match="delta must be >= 0"):
        SingleFrameHRNet(backbone, delta=-1)


@pytest.mark.parametrize("legacy", [False, True])
def test_parameter_count_of_the_new_modules_at_w48(legacy):
    """docs/architecture.md: 2.03 M trainable parameters on top of the frozen W48 backbone (2.41 M with the earlier
    layer1 stage-1 feature and r = 4 gates)."""
    cfg = load_config(None, ["model.tde.stage1_feature=layer1", "model.rdm.reduction=4"] if legacy else []).model
    backbone = HRNet(width=48, num_joints=17, stage1_feature=cfg.tde.stage1_feature)
    model = build_model(cfg, backbone=backbone)
    assert model.backbone is backbone
    new = count_parameters(model, trainable_only=True)
    assert count_parameters(model) - new == count_parameters(backbone)
    assert new == (2_406_569 if legacy else 2_029_713), new
    hidden = 12 if legacy else 128
    assert count_parameters(model.rdm) == 2 * (48 * hidden + hidden + hidden * 48 + 48)
    assert count_parameters(model.head) == 48 * 17 * 9 + 17
    assert sum(count_parameters(m.deform_conv) for m in model.tde.modulation) == 4 * (48 * 48 * 9 + 48)
    assert count_parameters(model.tde.accumulate) == 4 * (2 * 48 * 48 * 9 + 4 * 48)


@pytest.mark.parametrize("arch", ["tdmi", "tdmi_st", "hrnet"])
def test_only_temporal_models_look_at_supporting_frames(arch):
    model = build_tiny(tiny_model_config(None, f"model.arch={arch}")).eval()
    perturb_zero_predictors(model)
    frames = clip()
    moved = frames.clone()
    moved[:, 0] = torch.roll(moved[:, 0], shifts=3, dims=-1)  # the first supporting frame changes
    with torch.no_grad():
        same = torch.equal(model(frames).heatmaps, model(moved).heatmaps)
    assert same == (arch == "hrnet")


def test_baseline_takes_key_frames_only_or_whole_clips():
    """The dataset gives the baseline T = 1 clips whatever model.delta is; whole clips must give the same answer."""
    from tdmi.config import load_config
    from tdmi.models.tdmi import build_model

    cfg = load_config(None, ["model.arch=hrnet", "model.delta=2", "model.backbone.width=4"])
    model = build_model(cfg.model).eval()
    clip = torch.randn(2, 5, 3, 64, 64)
    with torch.no_grad():
        whole = model(clip).heatmaps
        key_only = model(clip[:, 2:3]).heatmaps
    assert torch.equal(whole, key_only)
    with pytest.raises(ValueError):
        model(clip[:, :3])


# ---------------------------------------------------------------------------------------------------------------
# The SynthTrack benchmark's controls (issue 23): same modules, no time / no differencing


def test_keyframe_and_concat_encoder_inputs():
    from tdmi.models.tde import stage_input

    features = torch.randn(2, 5, 3, 4, 4)
    key = stage_input(features, "keyframe")
    assert key.shape == (2, 12, 4, 4)
    torch.testing.assert_close(key, features[:, 2].repeat(1, 4, 1, 1))
    torch.testing.assert_close(stage_input(features, "concat"), features.flatten(1, 2))
    assert stage_input(features, "differences").shape == (2, 12, 4, 4)
    with pytest.raises(ValueError, match="input='raw'"):
        stage_input(features, "raw")


@pytest.mark.parametrize("extra, same_parameters", [(("model.tde.input=keyframe",), True),
                                                    (("model.support_frames=key_frame",), True),
                                                    (("model.tde.input=concat",), False)])
def test_controls_keep_the_modules(extra, same_parameters):
    reference = count_parameters(build_tiny(tiny_model_config(None)), trainable_only=True)
    control = count_parameters(build_tiny(tiny_model_config(None, *extra)), trainable_only=True)
    assert (control == reference) == same_parameters


@pytest.mark.parametrize("extra", [("model.support_frames=key_frame",), ("model.tde.input=keyframe",)])
def test_a_control_without_time_ignores_its_supporting_frames(extra):
    model = build_tiny(tiny_model_config(None, *extra)).eval()
    frames = clip(batch=1)
    shuffled = frames.clone()
    shuffled[:, [0, 1, 3, 4]] = torch.randn_like(shuffled[:, [0, 1, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(frames).heatmaps, model(shuffled).heatmaps)
    normal = build_tiny(tiny_model_config(None)).eval()
    with torch.no_grad():
        a, b = normal(frames).heatmaps, normal(shuffled).heatmaps
    assert not torch.equal(a, b)  # the paper's model does read them
