"""Residual building blocks shared by the TDMI modules, and the initialisation they use.

- :class:`BasicBlock`: HRNet's residual block (3x3 conv, BN, ReLU, 3x3 conv, BN, add the shortcut, ReLU). The
  layer names (``conv1, bn1, conv2, bn2, downsample``) are HRNet's, so the same class can hold official weights.
- :class:`BlockChain`: ``num_blocks`` BasicBlocks where only the first changes the width, through a 1x1 conv + BN
  projection on its shortcut (the "chain of basic blocks" pattern of DCPose/FAMI; docs/facts/model-facts.md (e),
  "intra-stage
  blocks").
- :func:`init_normal_`: the initialisation every new TDMI layer gets (docs/facts/model-facts.md (a) "BatchNorm momentum
and
  init": conv weight ~ N(0, 0.001), bias 0; BN gamma 1, beta 0). Modules initialise their own layers in
  ``__init__``, so a parent never has to re-initialise (and undo) a child's special init such as the zero-initialised
  offset/mask predictors of the TDE.
"""

from __future__ import annotations

from torch import Tensor, nn

from tdmi.models.deform_conv import ModulatedDeformConv2d

INIT_STD = 0.001
"""Standard deviation of every new conv/linear weight (HRNet, DCPose and FAMI all use 0.001)."""


def init_normal_(*modules: nn.Module) -> None:
    """Initialise every conv, DCN, linear and BN layer inside ``modules`` in place (N(0, 0.001) / zero bias; BN 1/0)."""
    for root in modules:
        for layer in root.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear, ModulatedDeformConv2d)):
                nn.init.normal_(layer.weight, std=INIT_STD)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.BatchNorm2d):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BN always follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """HRNet/ResNet BasicBlock: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity when the shape is kept, else ``downsample`` = 1x1 conv (no bias) + BN.

    ``forward(x [B, in_channels, H, W]) -> [B, out_channels, H / stride, W / stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        init_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class BlockChain(nn.Sequential):
    """``num_blocks`` BasicBlocks mapping ``in_channels`` to ``out_channels``; only the first block projects.

    ``forward(x [B, in_channels, H, W]) -> [B, out_channels, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"a block chain needs at least one block, got num_blocks={num_blocks}")
        blocks = [BasicBlock(in_channels, out_channels)]
        blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
        super().__init__(*blocks)
        self.in_channels = in_channels
        self.out_channels = out_channels


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``module`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["INIT_STD", "BasicBlock", "BlockChain", "conv3x3", "count_parameters", "init_normal_"]

