"""DCPose (Liu et al., CVPR 2021, "Deep Dual Consecutive Network for Human Pose Estimation"), over a frozen HRNet.

Written from the paper and the facts in docs/facts/rivals-and-lineage.md section 3 and docs/facts/model-facts.md (c)
(its public code was read for them, not copied). Data flow of one clip of T = 3 frames (previous, key, next):

    frames --encode (frozen HRNet)--> s4 [B, 3, C, h, w] --final_layer--> heatmaps H_p, H_c, H_n [B, J, h, w]
      PRF: per joint [H_c - H_p, (H_c - H_p) w_p, H_c - H_n, (H_c - H_n) w_n] (4J) --2 RSB--> [B, 2J, h, w]
      PTM: per joint [H_c, H_p w_p, H_n w_n] (3J) --1 RSB--> P [B, J, h, w]
      combine [PRF, PTM] (3J) --2 RSB--> [B, 64, h, w]
      PCN: for d in (3, 6, 9, 12, 15): offsets (2*9*J) and masks (9*J) from the combined feature (3x3, dilation
           d, no bias), DCNv2 (J -> J, 3x3, dilation d, J offset groups, mask used raw) on P; the mean of the five.

Choices, each where the paper and its code differ or are silent (docs/architecture.md):
- Supporting frames at distance 1 (``model.delta: 1``), as the code's ``DISTANCE: 2`` gives, not the text's window.
- The frame weights w_p = (n - c)/(n - p), w_n = (c - p)/(n - p) are those of the nominal positions (1/2 each): the
  code computes them from the frame indices actually used, which differ only where a sequence end was padded.
- RSB (residual-steps block, from RSN) as the code builds it: 1x1 conv to 4 branches of ``in * 26 // 64`` channels,
  branch k runs k 3x3 conv-BN-ReLU steps fed by the previous branch's steps, concatenation, 1x1 conv-BN, a 1x1
  conv-BN shortcut in the first block of a chain, ReLU.
- Initialisation as the code: convs N(0, 0.001) with zero bias, BN 1/0, each DCN's weight the identity (centre tap,
  channel to itself) with zero bias. With the raw masks predicted near 0 at step 0, the PCN's output starts near 0,
  not at the PTM output the identity weights suggest; with a mask of 1 and zero offsets it is exactly P
  (``tests/test_rivals.py`` checks both).
- Loss: the target-weighted heatmap MSE on the output only.

``forward(frames [B, 3, 3, H, W])`` / ``decode(StageFeatures of [B, 3, C_j, h, w])`` -> :class:`TDMIOutput` with
``heatmaps`` the PCN output and ``static_heatmaps`` the key frame's HRNet heatmaps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tdmi.models.blocks import init_normal_
from tdmi.models.deform_conv import ModulatedDeformConv2d
from tdmi.models.clip_model import ClipModel, TDMIOutput, head_outside_autocast

DILATIONS = (3, 6, 9, 12, 15)
KERNEL_TAPS = 9


def _conv_bn(in_channels: int, out_channels: int, kernel: int, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ResidualStepsBlock(nn.Module):
    """RSN's residual-steps block (RSB). ``forward(x [B, in, h, w]) -> [B, out, h, w]``."""

    def __init__(self, in_channels: int, out_channels: int, project: bool):
        super().__init__()
        self.branch = max(1, in_channels * 26 // 64)
        self.expand = _conv_bn(in_channels, 4 * self.branch, 1)
        # steps[k] is branch k's chain of k + 1 3x3 steps
        self.steps = nn.ModuleList(nn.ModuleList(_conv_bn(self.branch, self.branch, 3) for _ in range(k + 1))
                                   for k in range(4))
        self.reduce = _conv_bn(4 * self.branch, out_channels, 1, relu=False)
        self.shortcut = _conv_bn(in_channels, out_channels, 1, relu=False) if project else None
        if self.shortcut is None and in_channels != out_channels:
            raise ValueError(f"an RSB without projection keeps the width; got {in_channels} -> {out_channels}")

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(self.expand(x), self.branch, dim=1)
        previous: list[Tensor] = []  # the step outputs of the branch before
        ends = []
        for k, chain in enumerate(self.steps):
            outputs = []
            for s, step in enumerate(chain):
                # step s of branch k reads the branch's own input (s = 0) or its last step, plus step s of branch k-1
                source = parts[k] if s == 0 else outputs[-1]
                if s < len(previous):
                    source = source + previous[s]
                outputs.append(step(source))
            ends.append(outputs[-1])
            previous = outputs
        out = self.reduce(torch.cat(ends, dim=1))
        return torch.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


def rsb_chain(in_channels: int, out_channels: int, blocks: int) -> nn.Sequential:
    """``blocks`` RSBs, the first projecting ``in_channels`` to ``out_channels`` (its shortcut is always a 1x1 conv)."""
    return nn.Sequential(ResidualStepsBlock(in_channels, out_channels, project=True),
                         *(ResidualStepsBlock(out_channels, out_channels, project=False) for _ in range(blocks - 1)))


class PoseCorrection(nn.Module):
    """PCN: five dilated DCNv2 branches warping the PTM heatmaps, averaged.

    ``forward(ptm [B, J, h, w], combined [B, C, h, w]) -> [B, J, h, w]``.
    """

    def __init__(self, num_joints: int, channels: int, dilations=DILATIONS):
        super().__init__()
        self.offsets = nn.ModuleList(nn.Conv2d(channels, 2 * KERNEL_TAPS * num_joints, 3, padding=d, dilation=d,
                                               bias=False) for d in dilations)
        self.masks = nn.ModuleList(nn.Conv2d(channels, KERNEL_TAPS * num_joints, 3, padding=d, dilation=d, bias=False)
                                   for d in dilations)
        self.warps = nn.ModuleList(ModulatedDeformConv2d(num_joints, num_joints, 3, padding=d, dilation=d)
                                   for d in dilations)

    def identity_init_(self) -> None:
        """Each DCN maps joint channel j to itself through its centre tap, with zero bias (DCPose's init)."""
        with torch.no_grad():
            for warp in self.warps:
                warp.weight.zero_()
                j = torch.arange(warp.weight.shape[0])
                warp.weight[j, j, 1, 1] = 1.0
                warp.bias.zero_()

    def forward(self, ptm: Tensor, combined: Tensor) -> Tensor:
        warped = [warp(ptm, offset(combined), mask(combined))  # the mask is used raw, as DCPose does
                  for offset, mask, warp in zip(self.offsets, self.masks, self.warps)]
        return torch.stack(warped).mean(dim=0)


class DCPose(ClipModel):
    """DCPose over a frozen HRNet backbone (see the module doc).

    Args:
        backbone: HRNet-like (``final_layer`` gives the rough heatmaps of every frame).
        num_joints: J.
        prf_channels, ptm_channels, combine_channels: widths of the PRF, PTM and combined features (34, 17, 64).
        prf_blocks, ptm_blocks, combine_blocks: RSBs in each chain (2, 1, 2).
        freeze_backbone, backbone_bn_eval: as for :class:`~tdmi.models.tdmi.TDMI`.
    """

    def __init__(self, backbone: nn.Module, *, num_joints: int = 17, prf_channels: int = 34, ptm_channels: int = 17,
                 combine_channels: int = 64, prf_blocks: int = 2, ptm_blocks: int = 1, combine_blocks: int = 2,
                 freeze_backbone: bool = True, backbone_bn_eval: bool = True):
        super().__init__(backbone, 1, freeze_backbone, backbone_bn_eval)
        if backbone.final_layer.out_channels != num_joints:
            raise ValueError(f"num_joints={num_joints} but the backbone predicts {backbone.final_layer.out_channels}")
        if ptm_channels != num_joints:
            raise ValueError(f"the PCN warps the PTM heatmaps joint by joint: ptm_channels must be num_joints "
                             f"({num_joints}), got {ptm_channels}")
        self.num_joints = num_joints
        self.residual = rsb_chain(4 * num_joints, prf_channels, prf_blocks)
        self.merge = rsb_chain(3 * num_joints, ptm_channels, ptm_blocks)
        self.combine = rsb_chain(prf_channels + ptm_channels, combine_channels, combine_blocks)
        self.correction = PoseCorrection(num_joints, combine_channels)
        init_normal_(self.residual, self.merge, self.combine, self.correction)  # N(0, 0.001), BN 1/0, as its code
        self.correction.identity_init_()
        backbone.final_layer.requires_grad_(False)

    def rough_heatmaps(self, s4: Tensor) -> Tensor:
        """Frozen HRNet heatmaps of every frame: ``[B, T, C, h, w] -> [B, T, J, h, w]`` (no gradient)."""
        with torch.no_grad():
            maps = head_outside_autocast(self.backbone.final_layer, s4.flatten(0, 1))
        return maps.unflatten(0, s4.shape[:2])

    def decode(self, stage_features) -> TDMIOutput:
        """StageFeatures of ``[B, 3, C_j, h, w]`` (previous, key, next) -> :class:`TDMIOutput`."""
        self._check_clip(stage_features)
        s4 = stage_features[-1]
        rough = self.rough_heatmaps(s4)
        previous, key, following = rough[:, 0], rough[:, 1], rough[:, 2]
        w_p = w_n = 0.5  # (n - c)/(n - p) and (c - p)/(n - p) at the nominal positions
        diff_p, diff_n = key - previous, key - following
        # per joint, interleaved: [dA, dA w_p, dB, dB w_n] and [H_c, H_p w_p, H_n w_n]
        residuals = torch.stack((diff_p, diff_p * w_p, diff_n, diff_n * w_n), dim=2).flatten(1, 2)
        merged = torch.stack((key, previous * w_p, following * w_n), dim=2).flatten(1, 2)
        ptm = self.merge(merged)
        combined = self.combine(torch.cat((self.residual(residuals), ptm), dim=1))
        heatmaps = self.correction(ptm, combined)
        return TDMIOutput(heatmaps=heatmaps.float(), motion=None, useful=None, noisy=None, visual=s4[:, 1],
                          fused=combined, static_heatmaps=key)
