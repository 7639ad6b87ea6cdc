"""Temporal Difference Encoder (TDE): multi-stage feature differences -> motion feature M (paper section 3.2).

For each backbone stage j (paper eq. 1-5; choices the paper leaves open: docs/architecture.md):

1. **Differences** (eq. 1): the 2*delta consecutive differences ``F^j_{i+1} - F^j_i`` of the clip's stage-j
   features, concatenated in temporal order -> ``[B, (T-1)*C_j, h, w]``.
2. **Intra-stage fusion** (eq. 2): a chain of residual blocks ({3, 3, 2, 2} in the paper), the first projecting
   ``(T-1)*C_j`` to ``channels`` (ours: 48) -> D^j.
3. **Spatial modulation** (eq. 3-4): offsets and modulation scalars predicted *independently* from D^j
   (each: 1 BasicBlock + 3x3 conv with dilation 3), then a DCNv2 (3x3, dilation 3, 12 offset groups) on D^j
   -> D̄^j. The mask is a sigmoid (DCNv2/mmcv); both predictor convs start at zero, so the DCN starts as a regular
   dilated conv with mask 0.5.
4. **Aggregation**: progressive accumulation (eq. 5) ``A_1 = Φ_1(D̄^1)``, ``A_j = Φ_j(A_{j-1} + D̄^j)``, M = A_4,
   each Φ a BasicBlock ("several 3x3 convolutions"); or, for table 6's "multi-stage concat + conv" row, one block
   chain over the concatenation of all D̄^j.

Ablations of table 6 are constructor switches: ``differences='final_stage'`` (S^4 only), ``aggregation='concat'``
and ``modulation=False`` (progressive without DCN). Stages that a switch leaves out are not built, so every
parameter of a built encoder is used.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from tdmi.models.blocks import BasicBlock, BlockChain, init_normal_
from tdmi.models.deform_conv import ModulatedDeformConv2d

DIFFERENCE_CHOICES = ("all_stages", "final_stage")
INPUT_CHOICES = ("differences", "keyframe", "concat")
AGGREGATION_CHOICES = ("progressive", "concat")
KERNEL_TAPS = 9
"""Taps of the 3x3 deformable kernel (K in the offset/mask layouts)."""


def stage_input(features: Tensor, mode: str = "differences") -> Tensor:
    """What a stage's block chain reads, ``[B, T, C, h, w]`` -> ``[B, K*C, h, w]``.

    ``differences``: :func:`temporal_differences` (K = T-1). The benchmark's controls: ``keyframe`` = the key frame
    (index T // 2) repeated T-1 times (K = T-1: same widths, no time); ``concat`` = all T frames (K = T).
    """
    if mode == "differences":
        return temporal_differences(features)
    if mode == "keyframe":
        frames = features.shape[1]
        return features[:, frames // 2].repeat(1, frames - 1, 1, 1)
    if mode == "concat":
        return features.flatten(1, 2)
    raise ValueError(f"TDE input={mode!r}; choose one of {', '.join(INPUT_CHOICES)}")


def temporal_differences(features: Tensor) -> Tensor:
    """Consecutive frame differences, concatenated in temporal order (paper eq. 1).

    Args:
        features: ``[B, T, C, h, w]`` one stage's features of a clip.

    Returns:
        ``[B, (T-1)*C, h, w]``: channels ``[i*C:(i+1)*C]`` hold ``features[:, i+1] - features[:, i]``.
    """
    return (features[:, 1:] - features[:, :-1]).flatten(1, 2)


class SpatialModulation(nn.Module):
    """Deformable re-sampling of one stage's difference feature D^j (paper eq. 3-4).

    ``forward(d [B, C, h, w]) -> [B, C, h, w]``.
    """

    def __init__(self, channels: int, deform_groups: int = 12, dilation: int = 3):
        super().__init__()
        if deform_groups < 1 or channels % deform_groups:
            raise ValueError(f"TDE channels={channels} must be divisible by deform_groups={deform_groups} "
                             "(each offset group deforms a contiguous block of channels)")
        self.deform_groups = deform_groups
        self.offset_predictor = nn.Sequential(
            BasicBlock(channels, channels),
            nn.Conv2d(channels, 2 * KERNEL_TAPS * deform_groups, 3, padding=dilation, dilation=dilation),
        )
        self.mask_predictor = nn.Sequential(
            BasicBlock(channels, channels),
            nn.Conv2d(channels, KERNEL_TAPS * deform_groups, 3, padding=dilation, dilation=dilation),
        )
        self.deform_conv = ModulatedDeformConv2d(channels, channels, kernel_size=3, padding=dilation,
                                                 dilation=dilation, bias=True)
        init_normal_(self.offset_predictor[1], self.mask_predictor[1], self.deform_conv)
        # Zero predictors: the layer starts as a plain dilated conv (offsets 0, mask 0.5) and learns to deform.
        for final_conv in (self.offset_predictor[1], self.mask_predictor[1]):
            nn.init.zeros_(final_conv.weight)
            nn.init.zeros_(final_conv.bias)

    def forward(self, d: Tensor) -> Tensor:
        offset = self.offset_predictor(d)
        mask = torch.sigmoid(self.mask_predictor(d))
        return self.deform_conv(d, offset, mask)


class TemporalDifferenceEncoder(nn.Module):
    """Multi-stage temporal differences of a clip -> motion feature M (paper section 3.2).

    Args:
        stage_channels: channels of the backbone's stage features (HRNet: ``(C, C, C, C)``, or ``(256, C, C, C)``
            with the ``layer1`` stage-1 feature).
        num_frames: T = 2*delta + 1 frames per clip (T-1 differences per stage).
        channels: width of D^j, D̄^j and M (ours: 48).
        blocks_per_stage: residual blocks of each stage's intra-stage fusion (paper: 3, 3, 2, 2).
        differences: ``all_stages`` or ``final_stage`` (table 6, "S^4 only").
        aggregation: ``progressive`` (eq. 5) or ``concat`` (table 6, "multi-stage concat + conv").
        modulation: apply the DCN spatial modulation (eq. 3-4); False = table 6's "progressive" row.
        deform_groups: offset groups of the DCN; must divide ``channels``.
        dilation: dilation of the DCN and of the offset/mask predictor convs.
        accumulation_blocks: BasicBlocks per accumulation step Φ_j (``concat`` uses this many per stage, in one
            chain, so both aggregations have the same depth).
        input: what each stage's chain reads (:func:`stage_input`): ``differences`` (the paper), ``keyframe`` or
            ``concat`` (controls).

    ``forward(stage_features)``: a sequence of ``[B, T, C_j, h, w]`` tensors, one per backbone stage (all stages are
    passed even when only the final one is used), all at the same ``h, w``. Returns M ``[B, channels, h, w]``.
    """

    def __init__(self, stage_channels: Sequence[int], num_frames: int, channels: int = 48,
                 blocks_per_stage: Sequence[int] = (3, 3, 2, 2),
                 differences: Literal["all_stages", "final_stage"] = "all_stages",
                 aggregation: Literal["progressive", "concat"] = "progressive", modulation: bool = True,
                 deform_groups: int = 12, dilation: int = 3, accumulation_blocks: int = 1,
                 input: Literal["differences", "keyframe", "concat"] = "differences"):
        super().__init__()
        if input not in INPUT_CHOICES:
            raise ValueError(f"TDE input={input!r}; choose one of {', '.join(INPUT_CHOICES)}")
        if differences not in DIFFERENCE_CHOICES:
            raise ValueError(f"differences={differences!r}; choose one of {', '.join(DIFFERENCE_CHOICES)}")
        if aggregation not in AGGREGATION_CHOICES:
            raise ValueError(f"aggregation={aggregation!r}; choose one of {', '.join(AGGREGATION_CHOICES)}")
        if num_frames < 2:
            raise ValueError(f"the TDE needs at least 2 frames to form a difference, got num_frames={num_frames}")
        if len(blocks_per_stage) != len(stage_channels):
            raise ValueError(f"blocks_per_stage has {len(blocks_per_stage)} entries but the backbone has "
                             f"{len(stage_channels)} stages")
        self.num_frames = num_frames
        self.channels = channels
        self.aggregation = aggregation
        last = len(stage_channels) - 1
        self.stages: tuple[int, ...] = tuple(range(len(stage_channels))) if differences == "all_stages" else (last,)

        self.input = input
        slots = num_frames if input == "concat" else num_frames - 1
        self.intra_stage = nn.ModuleList(
            BlockChain(slots * stage_channels[j], channels, blocks_per_stage[j]) for j in self.stages)
        self.modulation = (nn.ModuleList(SpatialModulation(channels, deform_groups, dilation) for _ in self.stages)
                           if modulation else None)
        if aggregation == "progressive":
            self.accumulate = nn.ModuleList(BlockChain(channels, channels, accumulation_blocks) for _ in self.stages)
        else:
            self.accumulate = BlockChain(len(self.stages) * channels, channels, accumulation_blocks * len(self.stages))

    def forward(self, stage_features: Sequence[Tensor]) -> Tensor:
        stage_outputs = []
        for i, j in enumerate(self.stages):
            features = stage_features[j]
            if features.dim() != 5 or features.shape[1] != self.num_frames:
                raise ValueError(f"stage {j + 1} features must be [B, T={self.num_frames}, C, h, w], "
                                 f"got {tuple(features.shape)}")
            d = self.intra_stage[i](stage_input(features, self.input))
            if self.modulation is not None:
                d = self.modulation[i](d)
            stage_outputs.append(d)

        if self.aggregation == "concat":
            return self.accumulate(torch.cat(stage_outputs, dim=1))
        accumulated = self.accumulate[0](stage_outputs[0])
        for phi, d in zip(self.accumulate[1:], stage_outputs[1:]):
            accumulated = phi(accumulated + d)
        return accumulated
