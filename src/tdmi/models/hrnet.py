"""HRNet pose network (Sun et al., CVPR 2019) returning the four stage features TDMI differences.

TDMI (Feng et al., CVPR 2023, section 3.1) forms F^j, j = 1..4, from "four convolutional stages" of a
COCO-pretrained HRNet-W48. Which tensors those are, and the architecture itself, follow docs/facts/model-facts.md (a):

- stem: two 3x3 stride-2 convs (3->64->64), each with BN and ReLU; output at 1/4 resolution.
- stage 1 (``layer1``): 4 Bottlenecks (planes 64, expansion 4), the first with a 1x1 projection shortcut.
- transitions add one branch per stage (3x3 stride-2 conv + BN + ReLU from the lowest-resolution output);
  stage 2/3/4 hold 1/4/3 multi-resolution modules of 4 BasicBlocks per branch, widths (C, 2C, 4C, 8C).
- the last stage-4 module fuses into branch 0 only (``multi_scale_output=False``).
- ``final_layer``: a 1x1 conv C -> J with bias, reading stage 4's branch-0 output.

Stage features, all at 1/4 resolution (docs/architecture.md, "Choices the paper leaves open"): ``s1`` = the first
transition's high-resolution branch [N, C, H/4, W/4] (``stage1_feature="transition"``, the authors' later code) or
the layer1 output [N, 256, H/4, W/4] (``"layer1"``, tdmi's earlier choice); ``s2``, ``s3``, ``s4`` = branch 0 of
the lists that stage 2, 3, 4 *return* [N, C, H/4, W/4]. ``s4`` is exactly ``final_layer``'s input. The choice only
changes what is returned: the network and its weights are the same.

Module names and parameter shapes equal the official COCO checkpoints key for key (docs/facts/model-facts.md (b);
``shared/reference/hrnet_w{32,48}_coco_keys.json``), so ``pose_hrnet_w48_384x288.pth`` loads without renaming.
Blocks never mutate the list they receive (the official module rebinds its input list in place, which makes a
caller's saved list hold pre-fusion tensors; docs/facts/model-facts.md (a) "Pitfall").

Freezing (``freeze``): DCPose/FAMI only set ``requires_grad=False``; ``bn_eval=True`` additionally keeps every
BatchNorm in eval mode, and :meth:`HRNet.train` re-applies that, so a parent's ``model.train()`` (which calls
``train`` on every child) cannot switch frozen statistics back on.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

BN_MOMENTUM = 0.1
"""BatchNorm momentum of every BN in HRNet (docs/facts/model-facts.md (a): 0.1 everywhere, eps 1e-5, affine)."""

STEM_CHANNELS = 64
BOTTLENECK_EXPANSION = 4
STAGE1_CHANNELS = STEM_CHANNELS * BOTTLENECK_EXPANSION  # 256
BLOCKS_PER_BRANCH = 4
STAGE1_FEATURES = ("transition", "layer1")
"""Choices of the stage-1 feature (:class:`HRNet` ``stage1_feature``)."""
MODULES_PER_STAGE = (1, 4, 3)
"""HR modules in stages 2, 3, 4 (8 in all; 104 BasicBlocks)."""


class StageFeatures(NamedTuple):
    """Per-frame HRNet features, all at 1/4 of the input resolution.

    s1: the first transition's branch 0 ``[N, C, H/4, W/4]`` or layer1's output ``[N, 256, H/4, W/4]``
        (``HRNet.stage1_feature``).
    s2, s3, s4: branch-0 outputs of stage 2, 3, 4 ``[N, C, H/4, W/4]``; ``s4`` is ``final_layer``'s input.
    """

    s1: Tensor
    s2: Tensor
    s3: Tensor
    s4: Tensor


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN, identity shortcut, ReLU. Channels are unchanged: ``[N, C, H, W] -> [N, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.bn1 = _bn(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = _bn(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # In place is safe: BN's backward does not read its output, and ``x`` is not touched.
        out += x
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) with BN, plus a shortcut: ``[N, Cin, H, W] -> [N, 4*planes, H, W]``."""

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        out_channels = planes * BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = _bn(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _bn(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += shortcut
        return self.relu(out)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 conv + BN + ReLU; the official key layout ``.0`` = conv, ``.1`` = BN."""
    return nn.Sequential(_conv3x3(in_channels, out_channels, stride), _bn(out_channels), nn.ReLU(inplace=True))


def _fuse_path(in_channels: int, out_channels: int, levels_up: int) -> nn.Module:
    """Bring branch j's map to branch i's resolution and width, where ``levels_up = j - i``.

    j > i (lower resolution): 1x1 conv + BN, then nearest upsampling by 2^(j-i).
    j < i (higher resolution): (i-j) 3x3 stride-2 convs; all but the last keep C_j and have BN+ReLU, the last maps
    to C_i with BN and no ReLU (the ReLU comes after the sum). j = i: identity (no keys, as in the checkpoints).
    """
    if levels_up > 0:
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            _bn(out_channels),
            nn.Upsample(scale_factor=2**levels_up, mode="nearest"),
        )
    if levels_up == 0:
        return nn.Identity()
    steps = []
    for _ in range(-levels_up - 1):
        steps.append(_conv_bn_relu(in_channels, in_channels, stride=2))
    steps.append(nn.Sequential(_conv3x3(in_channels, out_channels, stride=2), _bn(out_channels)))
    return nn.Sequential(*steps)


class HighResolutionModule(nn.Module):
    """One multi-resolution module: BasicBlocks on every branch, then exchange across resolutions.

    Input: a list of ``num_branches`` tensors ``[N, widths[b], H/2^b, W/2^b]`` (H, W of branch 0).
    Output: the same list shapes, or only branch 0 when ``multi_scale_output`` is False.
    Output i = ReLU(sum_j fuse_layers[i][j](branch_j output)).
    """

    def __init__(self, widths: tuple[int, ...], multi_scale_output: bool = True) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(width) for _ in range(BLOCKS_PER_BRANCH))) for width in widths
        )
        num_outputs = len(widths) if multi_scale_output else 1
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_path(widths[j], widths[i], j - i) for j in range(len(widths)))
            for i in range(num_outputs)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        # A new list: the caller's list is never rebound (see the module docstring's pitfall).
        branch_outputs = [branch(x) for branch, x in zip(self.branches, inputs)]
        fused = []
        for paths in self.fuse_layers:
            # Summed in branch order j = 0, 1, ... (the reference's order, so float rounding matches it).
            # The first sum allocates a fresh tensor; later terms are added into it in place.
            total = paths[0](branch_outputs[0]) + paths[1](branch_outputs[1])
            for path, x in zip(paths[2:], branch_outputs[2:]):
                total += path(x)
            fused.append(self.relu(total))
        return fused


def _transition(in_widths: tuple[int, ...], out_widths: tuple[int, ...]) -> nn.ModuleList:
    """Open the next stage's branches, as an ``nn.ModuleList`` indexed by branch (keys ``transitionK.<b>.*``).

    A branch whose width is unchanged passes through (``nn.Identity``: no keys, like the official ``None``
    entries); ``transition1.0`` maps 256 -> C with a stride-1 conv. Each new branch is one 3x3 stride-2 conv + BN +
    ReLU from the lowest-resolution input, wrapped once more (``transitionK.<b>.0.{0,1}``) as in the checkpoints.
    """
    layers: list[nn.Module] = []
    for b, width in enumerate(out_widths):
        if b < len(in_widths):
            layers.append(nn.Identity() if in_widths[b] == width else _conv_bn_relu(in_widths[b], width, stride=1))
        else:
            layers.append(nn.Sequential(_conv_bn_relu(in_widths[-1], width, stride=2)))
    return nn.ModuleList(layers)


def _apply_transition(transition: nn.ModuleList, inputs: list[Tensor]) -> list[Tensor]:
    """Existing branches go through their own layer; new branches read the lowest-resolution input."""
    outputs = [layer(x) for layer, x in zip(transition, inputs)]
    for layer in transition[len(inputs):]:
        outputs.append(layer(inputs[-1]))
    return outputs


class HRNet(nn.Module):
    """HRNet-W``width`` pose network; ``forward`` returns :class:`StageFeatures`, ``heatmaps`` the J joint maps.

    Args:
        width: C, the branch-0 width (branches C, 2C, 4C, 8C). 18/32/48 are the official models; any positive
            width builds (tiny widths for tests).
        num_joints: J, channels of ``final_layer`` (17 for the COCO checkpoints and PoseTrack's 17 slots).
        stage1_feature: ``"transition"`` (s1 = ``transition1[0]``'s output, C channels) or ``"layer1"`` (s1 =
            layer1's output, 256 channels).

    Example:
        model = HRNet(48)
        features = model(images)              # images [N, 3, 384, 288] -> 4 x [N, *, 96, 72]
        heatmaps = model.heatmaps(features.s4)  # [N, 17, 96, 72]
    """

    def __init__(self, width: int = 48, num_joints: int = 17, stage1_feature: str = "transition") -> None:
        super().__init__()
        if width < 1 or num_joints < 1:
            raise ValueError(f"HRNet width and num_joints must be positive, got width={width}, num_joints={num_joints}")
        if stage1_feature not in STAGE1_FEATURES:
            raise ValueError(f"stage1_feature={stage1_feature!r}; choose one of {', '.join(STAGE1_FEATURES)}")
        self.width = width
        self.num_joints = num_joints
        self.stage1_feature = stage1_feature
        s1_channels = width if stage1_feature == "transition" else STAGE1_CHANNELS
        self.stage_channels: tuple[int, int, int, int] = (s1_channels, width, width, width)
        self.frozen_bn_eval = False
        """True after ``freeze(self, bn_eval=True)``: :meth:`train` keeps every BatchNorm in eval mode."""

        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(STEM_CHANNELS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(
            Bottleneck(STEM_CHANNELS, STEM_CHANNELS),
            *(Bottleneck(STAGE1_CHANNELS, STEM_CHANNELS) for _ in range(3)),
        )

        widths = tuple(width * 2**b for b in range(4))
        self.transition1 = _transition((STAGE1_CHANNELS,), widths[:2])
        self.stage2 = self._make_stage(widths[:2], MODULES_PER_STAGE[0], last_multi_scale=True)
        self.transition2 = _transition(widths[:2], widths[:3])
        self.stage3 = self._make_stage(widths[:3], MODULES_PER_STAGE[1], last_multi_scale=True)
        self.transition3 = _transition(widths[:3], widths[:4])
        self.stage4 = self._make_stage(widths[:4], MODULES_PER_STAGE[2], last_multi_scale=False)
        self.final_layer = nn.Conv2d(width, num_joints, 1)

        self.init_weights()

    @staticmethod
    def _make_stage(widths: tuple[int, ...], num_modules: int, last_multi_scale: bool) -> nn.Sequential:
        return nn.Sequential(*(
            HighResolutionModule(widths, multi_scale_output=last_multi_scale or m < num_modules - 1)
            for m in range(num_modules)
        ))

    def init_weights(self) -> None:
        """HRNet's init (docs/facts/model-facts.md (a)): every conv N(0, 0.001) with zero bias; BN gamma 1, beta 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> StageFeatures:
        """``x [N, 3, H, W]`` (normalised RGB) -> :class:`StageFeatures`, each at ``[H/4, W/4]``.

        H and W must be multiples of 32: branch 3 sits at 1/32 and nearest upsampling must land on branch 0's grid.
        """
        height, width = x.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"HRNet input must have height and width divisible by 32, got {height}x{width}")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        layer1 = self.layer1(x)
        stage2_inputs = _apply_transition(self.transition1, [layer1])
        stage2 = self.stage2(stage2_inputs)
        stage3 = self.stage3(_apply_transition(self.transition2, stage2))
        stage4 = self.stage4(_apply_transition(self.transition3, stage3))
        s1 = stage2_inputs[0] if self.stage1_feature == "transition" else layer1
        return StageFeatures(s1, stage2[0], stage3[0], stage4[0])

    def heatmaps(self, s4: Tensor) -> Tensor:
        """``s4 [N, C, h, w]`` -> heatmaps ``[N, J, h, w]`` through the 1x1 ``final_layer``."""
        return self.final_layer(s4)

    def train(self, mode: bool = True) -> HRNet:
        """Like ``nn.Module.train``, but BatchNorms stay in eval mode while frozen with ``bn_eval``.

        ``nn.Module.train`` calls ``train`` on every child, so this also holds when the HRNet sits inside a bigger
        model whose ``train()`` is called.
        """
        super().train(mode)
        if self.frozen_bn_eval:
            set_bn_eval(self)
        return self


def set_bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm inside ``module`` in eval mode (use running statistics, never update them)."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()


def freeze(module: nn.Module, bn_eval: bool = True) -> None:
    """Freeze ``module``'s weights (``requires_grad=False``); with ``bn_eval`` also its BatchNorm statistics.

    This is ``cfg.model.backbone.freeze`` / ``bn_eval``. DCPose/FAMI only set ``requires_grad=False``, which leaves
    BN in train mode (batch statistics, running stats updated); ``bn_eval=False`` copies that.

    On an :class:`HRNet` (at any depth inside ``module``) the BN choice persists: its ``train()`` re-applies it. On
    other modules BN is put in eval mode now only, so a later ``train()`` must call :func:`set_bn_eval` again.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for child in module.modules():
        if isinstance(child, HRNet):
            child.frozen_bn_eval = bn_eval
    if bn_eval:
        set_bn_eval(module)


def unfreeze(module: nn.Module) -> None:
    """Undo :func:`freeze`: weights trainable again, BatchNorm follows ``module.training`` again."""
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    for child in module.modules():
        if isinstance(child, HRNet):
            child.frozen_bn_eval = False
    module.train(module.training)
