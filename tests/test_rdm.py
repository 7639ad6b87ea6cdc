"""Representation Disentanglement Module (paper section 3.3, eq. 6; table 7's channel split)."""

from __future__ import annotations

import pytest
import torch

from tdmi.models.blocks import count_parameters
from tdmi.models.rdm import RepresentationDisentanglement


def test_gates_rescale_channels_of_motion():
    torch.manual_seed(0)
    rdm = RepresentationDisentanglement(16, hidden=4)
    with torch.no_grad():
        for p in rdm.parameters():
            p.normal_()
    motion = torch.randn(3, 16, 5, 4)
    useful, noisy = rdm(motion)
    useful_gate, noisy_gate = rdm.gates(motion)
    assert useful_gate.shape == noisy_gate.shape == (3, 16, 1, 1)
    assert ((useful_gate > 0) & (useful_gate < 1)).all()
    torch.testing.assert_close(useful, useful_gate * motion)
    torch.testing.assert_close(noisy, noisy_gate * motion)
    # Two independent MLPs: with random weights the gates differ.
    assert not torch.allclose(useful_gate, noisy_gate)


def test_normal_init_starts_both_gates_at_one_half():
    rdm = RepresentationDisentanglement(16, hidden=4, init="normal")
    useful_gate, noisy_gate = rdm.gates(torch.randn(2, 16, 3, 3))
    torch.testing.assert_close(useful_gate, torch.full_like(useful_gate, 0.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(noisy_gate, torch.full_like(noisy_gate, 0.5), atol=1e-3, rtol=0)


def test_lineage_init_starts_the_gates_apart_with_zero_biases():
    """The authors' later code: default Linear weights, zero biases (its init_weights), so the two gates do not start
    tied at 0.5, where a symmetric overlap term has zero gradient (issue 22)."""
    torch.manual_seed(0)
    rdm = RepresentationDisentanglement(48)
    for gate in (rdm.useful_gate, rdm.noisy_gate):
        assert all(torch.equal(layer.bias, torch.zeros_like(layer.bias)) for layer in (gate.mlp[0], gate.mlp[2]))
    motion = torch.relu(torch.randn(4, 48, 6, 5)) * 3
    useful_gate, noisy_gate = rdm.gates(motion)
    assert (useful_gate - noisy_gate).abs().max() > 0.05
    assert (useful_gate - 0.5).abs().max() > 0.05


def test_gate_size_at_w48():
    rdm = RepresentationDisentanglement(48)
    assert rdm.useful_gate.mlp[0].out_features == 128  # the lineage's 48 -> 128 -> 48
    assert count_parameters(rdm) == 2 * (48 * 128 + 128 + 128 * 48 + 48)
    assert rdm.useful_gate.mlp[0].weight.data_ptr() != rdm.noisy_gate.mlp[0].weight.data_ptr()


def test_legacy_reduction_in_a_config_gives_the_old_width():
    from tdmi.config import load_config
    from tdmi.models.tdmi import rdm_hidden_width

    assert rdm_hidden_width(load_config(None).model) == 128
    assert rdm_hidden_width(load_config(None, ["model.rdm.reduction=4"]).model) == 12
    assert rdm_hidden_width(load_config(None, ["model.rdm.hidden=64"]).model) == 64


def test_both_gates_and_motion_receive_gradients():
    torch.manual_seed(0)
    rdm = RepresentationDisentanglement(8, hidden=4)
    motion = torch.randn(2, 8, 4, 4, requires_grad=True)
    useful, noisy = rdm(motion)
    (useful.pow(2).sum() + 0.3 * noisy.pow(3).sum()).backward()
    assert motion.grad is not None and motion.grad.abs().sum() > 0
    for name, p in rdm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("channels", [8, 7])
def test_channel_split_partitions_channels_without_parameters(channels):
    rdm = RepresentationDisentanglement(channels, factorisation="channel_split")
    assert count_parameters(rdm) == 0
    motion = torch.randn(2, channels, 3, 3)
    useful, noisy = rdm(motion)
    half = (channels + 1) // 2
    torch.testing.assert_close(useful + noisy, motion, rtol=0, atol=0)
    assert torch.equal(useful[:, half:], torch.zeros_like(useful[:, half:]))
    assert torch.equal(noisy[:, :half], torch.zeros_like(noisy[:, :half]))
    assert torch.equal(useful[:, :half], motion[:, :half])
    assert "useful_mask" not in rdm.state_dict()  # derived from the width, not stored in checkpoints


def test_invalid_arguments():
    with pytest.raises(ValueError, match="factorisation='halves'"):
        RepresentationDisentanglement(8, factorisation="halves")
    with pytest.raises(ValueError, match="hidden"):
        RepresentationDisentanglement(8, hidden=0)
    with pytest.raises(ValueError, match="init='uniform'"):
        RepresentationDisentanglement(8, init="uniform")
    with pytest.raises(ValueError, match=r"\[B, 8, h, w\]"):
        RepresentationDisentanglement(8)(torch.randn(2, 4, 3, 3))


def test_normal_init_leaves_no_hidden_unit_dead_on_non_negative_motion():
    torch.manual_seed(0)
    rdm = RepresentationDisentanglement(48, hidden=12, init="normal")
    motion = torch.relu(torch.randn(4, 48, 6, 5)) * 3  # M leaves the TDE through a ReLU
    pooled = motion.mean(dim=(2, 3))
    for gate in (rdm.useful_gate, rdm.noisy_gate):
        assert (gate.mlp[0](pooled) > 0).all()
