"""HRNet backbone: official key layout and sizes (docs/facts/model-facts.md (a)/(b)), stage features, init, freezing."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tdmi.models.hrnet import HRNet, HighResolutionModule, StageFeatures, freeze, set_bn_eval, unfreeze

TINY = 4  # branch widths 4, 8, 16, 32


def tiny_model(num_joints: int = 5) -> HRNet:
    torch.manual_seed(0)
    return HRNet(width=TINY, num_joints=num_joints)


@pytest.mark.parametrize("width,expected_parameters", [(32, 28_536_113), (48, 63_595_745)])
def test_state_dict_equals_official_manifest(reference_dir, width, expected_parameters):
    manifest = json.loads((reference_dir / f"hrnet_w{width}_coco_keys.json").read_text())
    with torch.device("meta"):  # shapes only: no memory, no init arithmetic
        model = HRNet(width=width, num_joints=17)
    state = model.state_dict()
    assert list(state) == list(manifest)  # same names, same order
    for key, shape in manifest.items():
        assert list(state[key].shape) == shape, key
    assert sum(p.numel() for p in model.parameters()) == expected_parameters


def test_parameter_count_without_reference():
    # Independent of the shared manifest: W32 totals from docs/facts/model-facts.md (a).
    with torch.device("meta"):
        model = HRNet(width=32)
    assert sum(p.numel() for p in model.parameters()) == 28_536_113
    assert sum(p.numel() for p in model.final_layer.parameters()) == 32 * 17 + 17
    assert sum(b.numel() for b in model.buffers()) == 54_628


@pytest.mark.parametrize("width", [1, TINY, 18])
def test_structure_counts_hold_for_any_width(width):
    with torch.device("meta"):
        model = HRNet(width=width, num_joints=3)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batch_norms) == 292
    assert all(bn.momentum == 0.1 and bn.eps == 1e-5 and bn.affine for bn in batch_norms)
    modules = [m for m in model.modules() if isinstance(m, HighResolutionModule)]
    assert len(modules) == 8
    assert [len(m.fuse_layers) for m in model.stage4] == [4, 4, 1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c for c in convs if c.bias is not None] == [model.final_layer]
    assert model.final_layer.kernel_size == (1, 1)
    assert model.stage_channels == (width, width, width, width)  # s1 = the first transition's branch 0
    with torch.device("meta"):
        assert HRNet(width=width, num_joints=3, stage1_feature="layer1").stage_channels == (256, width, width, width)


def test_stage_features_shapes_and_heatmaps():
    model = tiny_model().eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = model(images)
        heatmaps = model.heatmaps(features.s4)
    assert isinstance(features, StageFeatures)
    expected_channels = model.stage_channels
    for tensor, channels in zip(features, expected_channels):
        assert tensor.shape == (2, channels, 16, 24)
    assert heatmaps.shape == (2, 5, 16, 24)
    torch.testing.assert_close(heatmaps, model.final_layer(features.s4))


@pytest.mark.parametrize("stage1_feature", ["transition", "layer1"])
def test_stage_features_are_the_returned_branch0_outputs(stage1_feature):
    # Recompute stage by stage by hand: s2/s3 must be what the stages *return*, not their (pre-fusion) inputs.
    model = HRNet(width=TINY, num_joints=5, stage1_feature=stage1_feature).eval()
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):  # non-trivial statistics so that every path matters
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
        for conv in model.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.normal_(0, 0.2)
        images = torch.randn(1, 3, 64, 64)
        features = model(images)
        x = model.relu(model.bn2(model.conv2(model.relu(model.bn1(model.conv1(images))))))
        s1 = model.layer1(x)
        stage2_inputs = [model.transition1[0](s1), model.transition1[1](s1)]
        saved_inputs = list(stage2_inputs)
        stage2 = model.stage2(stage2_inputs)
        # The list given to a stage is not mutated (docs/facts/model-facts.md (a) pitfall).
        assert all(a is b for a, b in zip(stage2_inputs, saved_inputs))
        stage3 = model.stage3([stage2[0], stage2[1], model.transition2[2](stage2[1])])
        stage4 = model.stage4([*stage3, model.transition3[3](stage3[2])])
    assert len(stage2) == 2 and len(stage3) == 3 and len(stage4) == 1
    # s1: the transition's high-resolution branch (the authors' later code) or layer1's output; either way the
    # stage-2 input it comes from is left as it was by stage 2
    torch.testing.assert_close(features.s1, stage2_inputs[0] if stage1_feature == "transition" else s1, rtol=0, atol=0)
    torch.testing.assert_close(features.s2, stage2[0], rtol=0, atol=0)
    torch.testing.assert_close(features.s3, stage3[0], rtol=0, atol=0)
    torch.testing.assert_close(features.s4, stage4[0], rtol=0, atol=0)
    assert not torch.equal(features.s2, stage2_inputs[0])
    assert not torch.equal(features.s2, features.s3)


def test_stage1_choice_changes_only_what_is_returned():
    torch.manual_seed(0)
    transition = HRNet(width=TINY, num_joints=5).eval()
    layer1 = HRNet(width=TINY, num_joints=5, stage1_feature="layer1").eval()
    layer1.load_state_dict(transition.state_dict(), strict=True)  # one network, one set of weights
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = transition(images), layer1(images)
    assert a.s1.shape[1] == TINY and b.s1.shape[1] == 256
    for j in (1, 2, 3):
        torch.testing.assert_close(a[j], b[j], rtol=0, atol=0)
    with pytest.raises(ValueError, match="stage1_feature='stage1'"):
        HRNet(width=TINY, stage1_feature="stage1")


def test_fuse_rule_low_to_high_and_high_to_low():
    module = HighResolutionModule((2, 4, 8)).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
        inputs = [torch.randn(1, 2, 8, 8), torch.randn(1, 4, 4, 4), torch.randn(1, 8, 2, 2)]
        outputs = module(inputs)
        branch = [b(x) for b, x in zip(module.branches, inputs)]
        up = module.fuse_layers[0][2]  # 1x1 conv + BN + x4 nearest
        expected_0 = torch.relu(branch[0] + module.fuse_layers[0][1](branch[1]) + up(branch[2]))
        assert torch.equal(up(branch[2])[..., :4, :4], up(branch[2])[..., 0:1, 0:1].expand(-1, -1, 4, 4))
        down = module.fuse_layers[2][0]  # two stride-2 3x3 convs; the first keeps 2 channels and has ReLU
        assert down[0][0].out_channels == 2 and isinstance(down[0][2], nn.ReLU)
        assert down[1][0].out_channels == 8 and len(down[1]) == 2
    assert [o.shape for o in outputs] == [x.shape for x in inputs]
    torch.testing.assert_close(outputs[0], expected_0)


def test_init_follows_hrnet():
    model = HRNet(width=8)
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    assert abs(weights.std().item() - 0.001) < 1e-4
    assert torch.count_nonzero(model.final_layer.bias) == 0
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_every_parameter_gets_a_gradient():
    model = tiny_model().train()
    with torch.no_grad():
        for conv in model.modules():  # the 0.001 init makes gradients vanishingly small; widen it for the check
            if isinstance(conv, nn.Conv2d):
                conv.weight.normal_(0, 0.3)
    features = model(torch.randn(2, 3, 64, 64))
    loss = sum(f.square().mean() for f in features) + model.heatmaps(features.s4).square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_channels_last_matches_contiguous():
    model = tiny_model().eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(images)
        model = model.to(memory_format=torch.channels_last)
        result = model(images.contiguous(memory_format=torch.channels_last))
    for a, b in zip(result, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rejects_sizes_not_divisible_by_32():
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny_model()(torch.randn(1, 3, 64, 70))


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = tiny_model()
        self.head = nn.Sequential(nn.Conv2d(TINY, 2, 1), nn.BatchNorm2d(2))


def test_freeze_with_bn_eval_survives_parent_train():
    model = Wrapper()
    freeze(model.backbone, bn_eval=True)
    model.train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert model.backbone.training  # the module flag follows train(); only its BatchNorms stay in eval
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.head[1].training
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.backbone(torch.randn(2, 3, 64, 64))
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats and counters unchanged

    unfreeze(model.backbone)
    model.train()
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert all(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_freeze_without_bn_eval_keeps_batch_statistics():
    model = Wrapper()
    freeze(model, bn_eval=False)  # DCPose/FAMI behaviour
    model.train()
    bn = model.backbone.bn1
    assert bn.training and not bn.weight.requires_grad
    before = bn.running_mean.clone()
    model.backbone(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, bn.running_mean)


def test_set_bn_eval_on_plain_module():
    head = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).train()
    set_bn_eval(head)
    assert head.training and not head[1].training
