"""Temporal Difference Encoder: differences, modulation, aggregation switches (paper section 3.2, table 6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model_helpers import perturb_zero_predictors
from tdmi.models.blocks import BasicBlock, BlockChain, count_parameters
from tdmi.models.tde import SpatialModulation, TemporalDifferenceEncoder, temporal_differences

STAGE_CHANNELS = (8, 4, 4, 4)
H, W = 8, 6


def clip_features(batch: int = 2, frames: int = 5, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, frames, c, H, W, generator=gen) for c in STAGE_CHANNELS]


def small_tde(**kwargs) -> TemporalDifferenceEncoder:
    args = dict(stage_channels=STAGE_CHANNELS, num_frames=5, channels=8, blocks_per_stage=(2, 2, 1, 1),
                deform_groups=2, dilation=3)
    args.update(kwargs)
    return TemporalDifferenceEncoder(**args)


def test_temporal_differences_are_consecutive_and_in_temporal_order():
    frames = torch.arange(4, dtype=torch.float32).pow(2).view(1, 4, 1, 1, 1).expand(1, 4, 3, 2, 2)  # 0, 1, 4, 9
    diffs = temporal_differences(frames)
    assert diffs.shape == (1, 9, 2, 2)
    assert diffs[0, :, 0, 0].tolist() == [1, 1, 1, 3, 3, 3, 5, 5, 5]


def test_block_chain_projects_only_in_first_block():
    chain = BlockChain(12, 4, num_blocks=3)
    assert chain[0].downsample is not None
    assert chain[1].downsample is None and chain[2].downsample is None
    assert chain(torch.randn(2, 12, 5, 5)).shape == (2, 4, 5, 5)
    with pytest.raises(ValueError, match="at least one block"):
        BlockChain(4, 4, num_blocks=0)


def test_basic_block_initialisation_follows_hrnet():
    block = BasicBlock(16, 16)
    assert block.conv1.weight.std().item() == pytest.approx(0.001, rel=0.2)
    assert torch.equal(block.bn1.weight, torch.ones(16)) and torch.equal(block.bn1.bias, torch.zeros(16))


def test_zero_initialised_modulation_is_half_a_plain_dilated_conv():
    torch.manual_seed(0)
    layer = SpatialModulation(channels=8, deform_groups=4, dilation=3).eval()
    with torch.no_grad():
        layer.deform_conv.weight.normal_()
        layer.deform_conv.bias.normal_()
    d = torch.randn(2, 8, 9, 7)
    expected = (0.5 * F.conv2d(d, layer.deform_conv.weight, padding=3, dilation=3)
                + layer.deform_conv.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(layer(d), expected, atol=1e-5, rtol=1e-4)


def test_learned_offsets_change_the_output():
    torch.manual_seed(0)
    layer = SpatialModulation(channels=8, deform_groups=4, dilation=3).eval()
    d = torch.randn(1, 8, 9, 7)
    before = layer(d)
    perturb_zero_predictors(layer)
    assert not torch.allclose(layer(d), before)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(differences="final_stage"),
    dict(aggregation="concat"),
    dict(modulation=False),
    dict(differences="final_stage", aggregation="concat", modulation=False),
])
def test_every_variant_maps_clip_to_motion_and_trains_all_parameters(kwargs):
    torch.manual_seed(0)
    tde = small_tde(**kwargs)
    perturb_zero_predictors(tde)
    motion = tde(clip_features())
    assert motion.shape == (2, 8, H, W)
    motion.pow(2).mean().backward()
    for name, parameter in tde.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_final_stage_variant_ignores_earlier_stages_and_builds_only_one_stage():
    torch.manual_seed(0)
    final_only = small_tde(differences="final_stage").eval()
    features = clip_features()
    changed = [f + 1.5 * torch.randn_like(f) for f in features[:3]] + [features[3]]
    torch.testing.assert_close(final_only(features), final_only(changed), rtol=0, atol=0)
    assert len(final_only.intra_stage) == 1
    assert count_parameters(final_only) < count_parameters(small_tde())
    all_stages = small_tde().eval()
    perturb_zero_predictors(all_stages)
    assert not torch.allclose(all_stages(features), all_stages(changed))


@pytest.mark.parametrize("kwargs", [dict(), dict(aggregation="concat")])
def test_motion_depends_only_on_differences(kwargs):
    """Content shared by every frame of the clip (a static background) cannot reach M."""
    torch.manual_seed(0)
    tde = small_tde(**kwargs).eval()
    perturb_zero_predictors(tde)
    features = clip_features()
    static = [f + torch.randn_like(f[:, :1]) * 3 for f in features]
    torch.testing.assert_close(tde(features), tde(static), atol=1e-5, rtol=1e-4)


def test_progressive_accumulation_adds_each_stage_before_its_block():
    torch.manual_seed(0)
    tde = small_tde(modulation=False).eval()
    features = clip_features()
    with torch.no_grad():
        d = [tde.intra_stage[j](temporal_differences(features[j])) for j in range(4)]
        accumulated = tde.accumulate[0](d[0])
        for j in range(1, 4):
            accumulated = tde.accumulate[j](accumulated + d[j])
        torch.testing.assert_close(tde(features), accumulated, rtol=0, atol=0)


def test_number_of_frames_sets_the_difference_width():
    for frames in (2, 3, 7):
        tde = small_tde(num_frames=frames)
        assert tde.intra_stage[0][0].conv1.in_channels == (frames - 1) * STAGE_CHANNELS[0]
        assert tde(clip_features(frames=frames)).shape == (2, 8, H, W)


def test_invalid_arguments_are_reported_clearly():
    with pytest.raises(ValueError, match="divisible by deform_groups=3"):
        small_tde(channels=8, deform_groups=3)
    small_tde(channels=8, deform_groups=3, modulation=False)  # no DCN, no constraint
    with pytest.raises(ValueError, match="differences='first'"):
        small_tde(differences="first")
    with pytest.raises(ValueError, match="aggregation='sum'"):
        small_tde(aggregation="sum")
    with pytest.raises(ValueError, match="blocks_per_stage has 3 entries"):
        small_tde(blocks_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match="at least 2 frames"):
        small_tde(num_frames=1)
    with pytest.raises(ValueError, match=r"T=5"):
        small_tde()(clip_features(frames=3))
