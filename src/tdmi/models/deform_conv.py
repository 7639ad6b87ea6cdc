"""Modulated deformable convolution (DCNv2) in pure PyTorch, with torchvision's offset/mask layout.

Semantics (model-facts.md (c)), for input ``[B, Cin, H, W]``, weight ``[Cout, Cin/groups, kh, kw]``, K = kh*kw:

- ``offset [B, 2*G*K, Ho, Wo]``: G offset groups, inferred as ``offset.shape[1] // (2K)``; input channels are
  split into G contiguous blocks. For group g and tap k = i*kw + j, channel ``g*2K + 2k`` is dy and ``g*2K + 2k + 1``
  is dx (interleaved pairs, as torchvision, mmcv and the DCNv2 CUDA kernels read them).
- ``mask [B, G*K, Ho, Wo]`` multiplies each sample as given (no activation inside); None means 1 (DCNv1).
- sample point: ``y = yo*stride - pad + i*dil + dy``, ``x = xo*stride - pad + j*dil + dx``; bilinear with zeros
  outside the image (a sample at y <= -1 or y >= H is 0; partial corners contribute only in-image neighbours).

This file holds a first, correct version built on ``F.grid_sample(align_corners=True, padding_mode='zeros')``,
which reproduces the kernels' zero-border bilinear rule exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                  dilation=1, mask: Tensor | None = None) -> Tensor:
    """Functional DCNv2 with ``torchvision.ops.deform_conv2d``'s signature and semantics.

    Args:
        input: ``[B, Cin, H, W]``.
        offset: ``[B, 2*G*K, Ho, Wo]`` interleaved (dy, dx) per tap.
        weight: ``[Cout, Cin/groups, kh, kw]``; conv groups = Cin // weight.shape[1].
        bias: ``[Cout]`` or None.
        mask: ``[B, G*K, Ho, Wo]`` or None.

    Returns:
        ``[B, Cout, Ho, Wo]``.
    """
    B, Cin, H, W = input.shape
    Cout, Cin_g, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    K = kh * kw
    groups = Cin // Cin_g
    G = offset.shape[1] // (2 * K)
    if G * 2 * K != offset.shape[1] or G == 0 or Cin % G:
        raise ValueError(f"offset has {offset.shape[1]} channels: expected 2*G*{K} with G dividing Cin={Cin}")
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if offset.shape[-2:] != (Ho, Wo):
        raise ValueError(f"offset spatial size {tuple(offset.shape[-2:])} != output size {(Ho, Wo)}")
    if mask is not None and mask.shape[1] != G * K:
        raise ValueError(f"mask has {mask.shape[1]} channels, expected G*K = {G * K}")

    dtype, device = input.dtype, input.device
    # Regular sampling grid [K, Ho, Wo] in input pixels, before offsets.
    ys = torch.arange(Ho, device=device, dtype=dtype) * sh - ph
    xs = torch.arange(Wo, device=device, dtype=dtype) * sw - pw
    ki = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dh
    kj = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dw
    base_y = ki[:, None, None] + ys[None, :, None]
    base_x = kj[:, None, None] + xs[None, None, :]

    off = offset.view(B, G, K, 2, Ho, Wo)
    py = base_y + off[:, :, :, 0]  # [B, G, K, Ho, Wo]
    px = base_x + off[:, :, :, 1]
    # align_corners=True maps -1..1 onto pixel centres 0..W-1; guard the 1-pixel case against dividing by 0.
    gy = py * (2.0 / max(H - 1, 1)) - 1.0 if H > 1 else py * 2.0
    gx = px * (2.0 / max(W - 1, 1)) - 1.0 if W > 1 else px * 2.0
    grid = torch.stack((gx, gy), dim=-1).view(B * G, K * Ho, Wo, 2)
    sampled = F.grid_sample(input.reshape(B * G, Cin // G, H, W), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)  # [B*G, Cin/G, K*Ho, Wo]
    sampled = sampled.view(B, G, Cin // G, K, Ho, Wo)
    if mask is not None:
        sampled = sampled * mask.view(B, G, 1, K, Ho, Wo)
    # Columns ordered channel-major, tap-minor (c*K + k) to match weight.view(Cout, Cin_g*K).
    columns = sampled.reshape(B, groups, Cin_g * K, Ho * Wo)
    w = weight.view(groups, Cout // groups, Cin_g * K)
    out = torch.einsum("goc,bgcn->bgon", w, columns).reshape(B, Cout, Ho, Wo)
    if bias is not None:
        out = out + bias.view(1, Cout, 1, 1)
    return out


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer holding the conv weight and bias; offsets and masks are passed to ``forward``.

    ``forward(x [B, Cin, H, W], offset [B, 2*G*K, Ho, Wo], mask [B, G*K, Ho, Wo] | None) -> [B, Cout, Ho, Wo]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
