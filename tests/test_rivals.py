"""The comparison methods (tdmi.models.rivals, issue 24): DCPose so far."""

from __future__ import annotations

import pytest
import torch

from tdmi.config import ConfigError, load_config
from tdmi.models.blocks import count_parameters
from tdmi.models.rivals.dcpose import DILATIONS, DCPose, PoseCorrection, ResidualStepsBlock, rsb_chain
from tdmi.models.tdmi import build_model

TINY = ["model.arch=dcpose", "model.delta=1", "model.backbone.width=4", "model.input_size=[64,64]",
        "model.heatmap_size=[16,16]"]


def tiny_dcpose(seed: int = 0) -> DCPose:
    torch.manual_seed(seed)
    return build_model(load_config(None, TINY).model)


def test_shapes_gradients_and_the_frozen_backbone():
    model = tiny_dcpose().train()
    out = model(torch.randn(2, 3, 3, 64, 64))
    assert out.heatmaps.shape == out.static_heatmaps.shape == (2, 17, 16, 16)
    out.heatmaps.pow(2).sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(not n.startswith("backbone.") for n, _ in trainable)
    assert all(p.grad is not None for _, p in trainable)
    with pytest.raises(ValueError, match="T = 2\\*delta \\+ 1 = 3"):
        model(torch.randn(1, 5, 3, 64, 64))


def test_delta_other_than_one_is_refused():
    with pytest.raises(ConfigError, match="delta 1"):
        build_model(load_config(None, TINY + ["model.delta=2"]).model)


def test_residual_steps_block_wiring_and_widths():
    block = ResidualStepsBlock(68, 34, project=True)
    assert block.branch == 68 * 26 // 64 == 27
    assert [len(chain) for chain in block.steps] == [1, 2, 3, 4]  # branch k takes k steps
    assert block(torch.randn(2, 68, 8, 8)).shape == (2, 34, 8, 8)
    with pytest.raises(ValueError, match="keeps the width"):
        ResidualStepsBlock(34, 17, project=False)
    chain = rsb_chain(51, 64, 2)
    assert chain[0].shortcut is not None and chain[1].shortcut is None


def test_pcn_with_identity_weights_zero_offsets_and_unit_masks_returns_the_ptm_output():
    """Issue 24's check of DCPose's initialisation: identity weights give back the PTM heatmaps only with a mask of
    1; DCPose's raw masks are predicted near 0 at step 0, so its output then starts near 0."""
    pcn = PoseCorrection(17, 64)
    pcn.identity_init_()
    for conv in pcn.offsets:
        torch.nn.init.zeros_(conv.weight)
    for conv in pcn.masks:  # a constant mask of 1: zero weights cannot give it, so feed a feature that does
        torch.nn.init.zeros_(conv.weight)
    ptm, combined = torch.rand(2, 17, 12, 10), torch.randn(2, 64, 12, 10)
    assert pcn(ptm, combined).abs().max() == 0  # mask 0: nothing passes
    ones = [lambda c, n=m.out_channels: torch.ones(c.shape[0], n, *c.shape[2:]) for m in pcn.masks]
    warped = [warp(ptm, offset(combined), mask(combined)) for offset, mask, warp in zip(pcn.offsets, ones, pcn.warps)]
    torch.testing.assert_close(torch.stack(warped).mean(0), ptm, rtol=0, atol=1e-6)
    model = tiny_dcpose().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 3, 64, 64))
    assert out.heatmaps.abs().max() < 1e-6  # DCPose at step 0


def test_the_frame_weights_and_interleaving_follow_the_code():
    """Per joint j, the PRF input is [dA_j, dA_j w_p, dB_j, dB_j w_n] and the PTM input [H_c, H_p w_p, H_n w_n]."""
    model = tiny_dcpose().eval()
    seen = {}

    def keep(name):
        def hook(module, inputs, output):  # returns None: the output stays as it was
            seen[name] = inputs[0]
        return hook

    model.residual.register_forward_hook(keep("prf"))
    model.merge.register_forward_hook(keep("ptm"))
    with torch.no_grad():
        features = model.encode(torch.randn(3, 3, 64, 64))
        clip = type(features)(*(f.unsqueeze(0) for f in features))
        model.decode(clip)
        rough = model.rough_heatmaps(clip[-1])[0]
    previous, key, following = rough
    j = 5
    torch.testing.assert_close(seen["prf"][0, 4 * j], key[j] - previous[j])
    torch.testing.assert_close(seen["prf"][0, 4 * j + 1], 0.5 * (key[j] - previous[j]))
    torch.testing.assert_close(seen["prf"][0, 4 * j + 3], 0.5 * (key[j] - following[j]))
    torch.testing.assert_close(seen["ptm"][0, 3 * j], key[j])
    torch.testing.assert_close(seen["ptm"][0, 3 * j + 2], 0.5 * following[j])


def test_dcpose_overfits_a_tiny_batch():
    """Every trainable part can learn. DCPose's own init (N(0, 0.001) everywhere, raw masks) starts at a saddle where
    the output and its gradients are ~0 until the rough heatmaps carry signal, so the masks start larger here."""
    from tdmi.models.losses import JointsMSELoss

    model = tiny_dcpose().train()
    for conv in model.correction.masks:
        torch.nn.init.normal_(conv.weight, std=0.05)
    frames = torch.randn(2, 3, 3, 64, 64)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    target = torch.exp(-((xs - 8) ** 2 + (ys - 8) ** 2) / 8).expand(2, 17, 16, 16).clone()  # a sigma-2 peak
    weight = torch.ones(2, 17)
    loss_fn = JointsMSELoss(factor=1.0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    with torch.no_grad():
        features = model.encode(frames.flatten(0, 1))
    clip = type(features)(*(f.unflatten(0, (2, 3)) for f in features))
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = loss_fn(model.decode(clip).heatmaps, target, weight)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses  # measured: 0.049 -> 0.004 in 12 steps


def test_checkpoint_round_trip(tmp_path):
    from tdmi.config import to_dict
    from tdmi.engine.test import load_model_for_test
    from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint

    cfg = load_config(None, TINY)
    model = tiny_dcpose(seed=3)
    with torch.no_grad():
        for p in model.correction.parameters():
            p.add_(0.01 * torch.randn_like(p))
    meta = checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                               heatmap_size=cfg.model.heatmap_size, delta=cfg.model.delta)
    path = save_checkpoint(tmp_path / "dcpose", model.state_dict(), meta)
    loaded = load_model_for_test(path, device="cpu")
    assert isinstance(loaded.model, DCPose)
    frames = torch.randn(1, 3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(frames).heatmaps, model.eval()(frames).heatmaps)
    assert count_parameters(loaded.model, trainable_only=True) == count_parameters(model, trainable_only=True)
    assert len(DILATIONS) == len(loaded.model.correction.warps) == 5
