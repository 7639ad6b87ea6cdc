"""FAMI-Pose (Liu et al., CVPR 2022, "Temporal Feature Alignment and Mutual Information Maximization for Video-Based
Human Pose Estimation"), over a frozen HRNet.

Written from the paper and the facts in docs/facts/rivals-and-lineage.md section 3 and docs/facts/model-facts.md (c)
(its public code, ``Alignment_V15``, was read for them, not copied). Data flow of one clip of T = 2 delta + 1 frames
(paper: delta 2, four supporting frames), C = the backbone's stage-4 width (48 for W48):

    frames --encode (frozen HRNet)--> s4 [B, T, C, h, w]; key z_t = s4[:, delta], supports z_{t+d} (d != 0)
      global alignment, per support: (z_{t+d} - z_t) --BasicBlock C->16, 5 stride-2 conv-BN-ReLU, 3 linear-->
          (dx, dy) [B, 2], a translation in heatmap pixels; the support feature is shifted by it (bilinear, zeros)
      aggregate: cat(shifted supports) [B, 2 delta C, h, w] --2 BasicBlocks--> z_agg [B, C, h, w]
      fine alignment (4 cascaded DCNv2, 3x3, dilation 3, C/4 offset groups, raw masks; offsets and masks by a 3x3
          dilation-3 conv with bias from the feature named):
          x = BasicBlock([z_agg, z_t])  (2C -> C)
          x = dcn1(x | from x);  x = dcn2(x | from x)
          a = dcn3(z_agg | from x);  a = dcn4(a | from a)
      fuse: cat(z_t, a) --3 BasicBlocks--> z~ [B, C, h, w] --3x3 conv--> heatmaps [B, J, h, w]

Choices, each where the paper and its code differ or are silent (docs/architecture.md):
- Offset groups: C / 4 (the code's 12 for C = 48, i.e. 4 channels per group), so narrower backbones keep the ratio.
- The translation network's first linear layer reads 16 x ceil(h/32) x ceil(w/32) values (the code's 144 =
  16 x 3 x 3 at 96x72; five stride-2 convs), computed from the heatmap size.
- Outputs: the model returns the heatmaps and the MI terms (as ``Alignment_V15`` does); its trainer unpacks a fourth
  output, per-support warped heatmaps with their own MSE, that this model never produces (the known defect). We follow
  the model: the loss is the target-weighted heatmap MSE plus :class:`FAMIObjective`, nothing on support heatmaps.
- Initialisation as the code: convs N(0, 0.001) with zero bias, BN 1/0, linear layers PyTorch's default with zero
  bias, DCN weights PyTorch's default (kaiming uniform) with zero bias. The raw masks start near 0, so the aligned
  support feature starts near 0 and the prediction at step 0 comes from the key frame's feature.

``forward(frames [B, T, 3, H, W])`` / ``decode(StageFeatures of [B, T, C_j, h, w])`` -> :class:`TDMIOutput` with
``heatmaps`` the prediction, ``visual`` z_t, ``motion`` z_agg (what the supporting frames contribute), ``fused`` z~,
``static_heatmaps`` the key frame's HRNet heatmaps. :class:`FAMIObjective` reads them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdmi.config import ConfigError

from tdmi.models.blocks import BlockChain
from tdmi.models.deform_conv import ModulatedDeformConv2d
from tdmi.models.mi_loss import fami_divergence
from tdmi.models.clip_model import ClipModel, TDMIOutput, head_outside_autocast
from tdmi.precision import autocast_off

TRANSLATION_WIDTH = 16
TRANSLATION_HIDDEN = 64
TRANSLATION_STRIDES = 5
CHANNELS_PER_OFFSET_GROUP = 4
DILATION = 3
KERNEL_TAPS = 9


def _conv_init_(module: nn.Module) -> None:
    """FAMI-Pose's init: every Conv2d N(0, 0.001) with zero bias, BN 1/0, any other bias 0 (weights left default)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, std=0.001)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
        bias = getattr(layer, "bias", None)
        if isinstance(bias, nn.Parameter):
            nn.init.zeros_(bias)


def strided_size(size: int, strides: int = TRANSLATION_STRIDES) -> int:
    """Side length after ``strides`` 3x3 stride-2 convolutions with padding 1."""
    for _ in range(strides):
        size = (size - 1) // 2 + 1
    return size


def translate(features: Tensor, shift: Tensor) -> Tensor:
    """Shift ``features [B, C, h, w]`` by ``shift [B, 2]`` = (dx, dy) pixels: ``out(x, y) = in(x - dx, y - dy)``.

    Bilinear, zeros outside, pixel centres at integer coordinates (an affine warp with the matrix [[1, 0, dx],
    [0, 1, dy]], as FAMI's ``warp_affine`` call applies it). The sampling runs in float32 whatever the input's dtype:
    a bf16 grid misplaces samples by up to a pixel at 72 columns. The result has the input's dtype.
    """
    batch, _, height, width = features.shape
    with autocast_off(features.device.type):
        ys = torch.linspace(-1.0, 1.0, height, device=features.device, dtype=torch.float32)
        xs = torch.linspace(-1.0, 1.0, width, device=features.device, dtype=torch.float32)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=features.device)
        grid = torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0) - (shift.float() * scale).view(batch, 1, 1, 2)
        out = F.grid_sample(features.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(features.dtype)


class GlobalTranslation(nn.Module):
    """Predicts one translation per supporting frame from its feature difference to the key frame.

    ``forward(difference [B, C, h, w]) -> shift [B, 2]`` = (dx, dy) in feature pixels.
    """

    def __init__(self, channels: int, heatmap_hw: tuple[int, int]):
        super().__init__()
        layers: list[nn.Module] = [BlockChain(channels, TRANSLATION_WIDTH, 1)]
        for _ in range(TRANSLATION_STRIDES):
            layers += [nn.Conv2d(TRANSLATION_WIDTH, TRANSLATION_WIDTH, 3, stride=2, padding=1),
                       nn.BatchNorm2d(TRANSLATION_WIDTH), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.final_hw = (strided_size(heatmap_hw[0]), strided_size(heatmap_hw[1]))
        flat = TRANSLATION_WIDTH * self.final_hw[0] * self.final_hw[1]
        # three linear layers with no activation between them, as the code has it
        self.regress = nn.Sequential(nn.Linear(flat, TRANSLATION_HIDDEN), nn.Linear(TRANSLATION_HIDDEN,
                                                                                   TRANSLATION_HIDDEN),
                                     nn.Linear(TRANSLATION_HIDDEN, 2))

    def forward(self, difference: Tensor) -> Tensor:
        if self.training and difference.shape[0] == 1 and self.final_hw == (1, 1):
            # BatchNorm in training needs more than one value per channel; say why, not torch's generic message
            raise ValueError(f"FAMI-Pose's translation network reduces a {difference.shape[2]}x{difference.shape[3]} "
                             "feature to 1x1, where its BatchNorm cannot train on a batch of one clip (an epoch's "
                             "last batch can be one): choose a train.batch_size that does not leave one clip over")
        return self.regress(self.features(difference).flatten(1))


class DeformStep(nn.Module):
    """One DCNv2 of the cascade: ``forward(x [B, C, h, w], guide [B, C, h, w]) -> [B, C, h, w]``, with the offsets
    and (raw) masks predicted from ``guide``."""

    def __init__(self, channels: int):
        super().__init__()
        groups = channels // CHANNELS_PER_OFFSET_GROUP
        self.offset = nn.Conv2d(channels, 2 * KERNEL_TAPS * groups, 3, padding=DILATION, dilation=DILATION)
        self.mask = nn.Conv2d(channels, KERNEL_TAPS * groups, 3, padding=DILATION, dilation=DILATION)
        self.deform = ModulatedDeformConv2d(channels, channels, 3, padding=DILATION, dilation=DILATION)

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        return self.deform(x, self.offset(guide), self.mask(guide))


class FAMIPose(ClipModel):
    """FAMI-Pose over a frozen HRNet backbone (see the module doc).

    Args:
        backbone: HRNet-like (``stage_channels[-1]`` = C, ``final_layer`` gives the key frame's rough heatmaps).
        heatmap_hw: (h, w) of the stage-4 feature, which sizes the translation network's first linear layer.
        delta: supporting frames on each side (paper: 2).
        num_joints: J.
        support_blocks, combine_blocks, fusion_blocks: BasicBlocks aggregating the supports (2), combining them
            with the key frame before the cascade (1) and fusing the aligned result with it (3).
        freeze_backbone, backbone_bn_eval: as for :class:`~tdmi.models.tdmi.TDMI`.
    """

    def __init__(self, backbone: nn.Module, *, heatmap_hw: tuple[int, int], delta: int = 2, num_joints: int = 17,
                 support_blocks: int = 2, combine_blocks: int = 1, fusion_blocks: int = 3,
                 freeze_backbone: bool = True, backbone_bn_eval: bool = True):
        super().__init__(backbone, delta, freeze_backbone, backbone_bn_eval)
        channels = backbone.stage_channels[-1]
        if channels % CHANNELS_PER_OFFSET_GROUP:
            raise ValueError(f"FAMI-Pose's DCNs take {CHANNELS_PER_OFFSET_GROUP} channels per offset group; the "
                             f"backbone's stage-4 width {channels} is not a multiple of it")
        if backbone.final_layer.out_channels != num_joints:
            raise ValueError(f"num_joints={num_joints} but the backbone predicts {backbone.final_layer.out_channels}")
        self.num_joints = num_joints
        self.global_alignment = GlobalTranslation(channels, heatmap_hw)
        self.support_aggregation = BlockChain(2 * delta * channels, channels, support_blocks)
        self.combine = BlockChain(2 * channels, channels, combine_blocks)
        self.cascade = nn.ModuleList(DeformStep(channels) for _ in range(4))
        self.fusion = BlockChain(2 * channels, channels, fusion_blocks)
        self.head = nn.Conv2d(channels, num_joints, 3, padding=1)
        for module in (self.global_alignment, self.support_aggregation, self.combine, self.cascade, self.fusion,
                       self.head):
            _conv_init_(module)
        backbone.final_layer.requires_grad_(False)

    def check_batches(self, samples: int, batch_size: int) -> None:
        """Refuse, before training, a batch layout whose last batch holds one clip where the translation network ends
        at 1x1: its BatchNorm cannot train on a single value per channel (the trainer calls this)."""
        if self.global_alignment.final_hw == (1, 1) and samples % batch_size == 1:
            raise ConfigError(f"train.batch_size={batch_size}: the {samples} training clips per process leave a last "
                              "batch of one clip, on which FAMI-Pose's translation network (1x1 after its five "
                              "stride-2 convs at this heatmap size) cannot train its BatchNorm; choose another batch "
                              "size")

    def align_supports(self, s4: Tensor) -> tuple[Tensor, Tensor]:
        """Global alignment and aggregation: ``s4 [B, T, C, h, w]`` -> (z_t, z_agg), each ``[B, C, h, w]``."""
        key = s4[:, self.delta]
        supports = [s4[:, i] for i in range(s4.shape[1]) if i != self.delta]
        shifted = [translate(support, self.global_alignment(support - key)) for support in supports]
        return key, self.support_aggregation(torch.cat(shifted, dim=1))

    def decode(self, stage_features) -> TDMIOutput:
        """StageFeatures of ``[B, T, C_j, h, w]`` (key frame at index delta) -> :class:`TDMIOutput`."""
        self._check_clip(stage_features)
        s4 = stage_features[-1]
        key, aggregated = self.align_supports(s4)
        first, second, third, fourth = self.cascade
        x = self.combine(torch.cat((aggregated, key), dim=1))
        x = first(x, x)
        x = second(x, x)
        aligned = third(aggregated, x)  # the aggregated supports, deformed by offsets from the combined feature
        aligned = fourth(aligned, aligned)
        fused = self.fusion(torch.cat((key, aligned), dim=1))
        heatmaps = head_outside_autocast(self.head, fused)
        with torch.no_grad():
            static = head_outside_autocast(self.backbone.final_layer, key)
        return TDMIOutput(heatmaps=heatmaps.float(), motion=aggregated, useful=None, noisy=None, visual=key,
                          fused=fused, static_heatmaps=static)


# Signs and weights of FAMI-Pose's six terms as its trainer sums them: total = ALPHA * sum(sign * weight * KL_k).
FAMI_TERMS = (
    # name, teacher (detached), student (gets the gradient), kind, coefficient
    ("kl1_fused_label", "fused", "heatmaps", "label", -0.1),   # -beta I(y_t; z~)
    ("kl2_key_fused", "visual", "fused", "feature", 0.1),      # +beta I(z_t; z~)
    ("kl3_support_label", "motion", "heatmaps", "label", 1.0),  # +I(y_t; z_{t+d})
    ("kl4_support_fused", "motion", "fused", "feature", -1.0),  # -I(z_{t+d}; z~)
    ("kl5_key_label", "visual", "heatmaps", "label", 1.0),     # +I(y_t; z_t)
    ("kl6_key_fused", "visual", "fused", "feature", -1.0),     # -I(z_t; z~): the same estimate as kl2
)
FAMI_ALPHA = 0.5


class FAMIObjective(nn.Module):
    """FAMI-Pose's KL-proxy "MI" terms, as its code computes them (``model.mi.enabled: false`` switches them off).

    Each term is :func:`~tdmi.models.mi_loss.fami_divergence` (softmax over pixels at T = 0.05, the teacher
    detached, probabilities where kl_div expects log-probabilities, as the code has it). A "label" term's teacher is
    the frozen HRNet head applied to a feature (the code's ``hrnet.final_layer``), its student the prediction; a
    "feature" term pairs two features channel by channel. Only the student side gets gradients, so the label terms
    act on the heatmaps and the feature terms on z~.

    ``forward(output, target_heatmaps, target_weight) -> {term: value, ..., "total": ALPHA * sum(coef * term)}``.
    """

    def __init__(self, label_probe: nn.Module, temperature: float = 0.05, alpha: float = FAMI_ALPHA):
        super().__init__()
        self.label_probe = [label_probe]  # a list: not registered, so the backbone's head is not saved twice
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, output: TDMIOutput, target_heatmaps: Tensor, target_weight: Tensor) -> dict[str, Tensor]:
        probe = self.label_probe[0]
        terms: dict[str, Tensor] = {}
        total = output.heatmaps.new_zeros(())
        probed: dict[str, Tensor] = {}
        for name, teacher, student, kind, coefficient in FAMI_TERMS:
            if kind == "label":
                if teacher not in probed:
                    with torch.no_grad():
                        probed[teacher] = head_outside_autocast(probe, getattr(output, teacher)).float()
                value = fami_divergence(probed[teacher], output.heatmaps.float(), self.temperature)
            else:
                value = fami_divergence(getattr(output, teacher).float(), getattr(output, student).float(),
                                        self.temperature)
            terms[name] = value
            total = total + coefficient * value
        terms["total"] = self.alpha * total
        return terms


__all__ = ["FAMIObjective", "FAMIPose", "FAMI_TERMS", "GlobalTranslation", "translate"]
