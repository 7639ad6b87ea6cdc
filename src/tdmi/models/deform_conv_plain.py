"""The DCNv2 of :mod:`tdmi.models.deform_conv` written as plain differentiable ops, for two callers:

- :func:`traceable_deform_conv2d`: bilinear sampling by ``F.grid_sample``, for ``torch.compile`` (the hand-written
  autograd function chunks the batch, writes into strided views with ``out=`` and calls oneDNN directly, none of
  which dynamo can trace); autograd gives the backward and the compiler fuses and schedules it.
- :func:`gather_deform_conv2d`: bilinear sampling by ``torch.gather`` from a zero-bordered image, for
  deterministic mode on GPUs. ``grid_sample``'s CUDA backward has no deterministic kernel (it raises under
  ``torch.use_deterministic_algorithms(True)``) and torchvision's adds into the input gradient with atomics
  (run-to-run differences in the last bits that training spreads upstream); the backward of ``gather`` on a
  CUDA tensor that requires grad is deterministic in that mode (torch's documented list). It holds the four
  corner samples of every column and their int64 indices for backward: several times the memory of the other
  paths.

Both take what :func:`tdmi.models.deform_conv.deform_conv2d` has checked and promoted: input ``[B, Cin, H, W]``,
offset ``[B, 2*G*K, Ho, Wo]`` (interleaved dy, dx), weight ``[Cout, Cin/groups, kh, kw]``, bias ``[Cout]`` or None,
mask ``[B, G*K, Ho, Wo]`` or None, and return ``[B, Cout, Ho, Wo]``. Semantics are the module docstring's (zeros
outside the image, partial corners included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def regular_grid(offset: Tensor, kh: int, kw: int, stride, padding, dilation) -> tuple[Tensor, Tensor]:
    """Pixel coordinates of the undeformed taps: ``y [K, Ho, 1]`` and ``x [K, 1, Wo]``."""
    Ho, Wo = offset.shape[-2:]
    device, dtype = offset.device, offset.dtype
    ys = torch.arange(Ho, device=device, dtype=dtype) * stride[0] - padding[0]
    xs = torch.arange(Wo, device=device, dtype=dtype) * stride[1] - padding[1]
    tap_y = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dilation[0]
    tap_x = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dilation[1]
    return tap_y[:, None, None] + ys[None, :, None], tap_x[:, None, None] + xs[None, None, :]


def _contract(columns: Tensor, weight: Tensor, bias: Tensor | None, Ho: int, Wo: int) -> Tensor:
    """columns ``[B, Cin*K, Ho*Wo]`` (row ``c*K + k``) with the weight, per conv group -> ``[B, Cout, Ho, Wo]``."""
    B = columns.shape[0]
    Cout, Cin_g, kh, kw = weight.shape
    groups = columns.shape[1] // (Cin_g * kh * kw)
    out = torch.matmul(weight.reshape(groups, Cout // groups, Cin_g * kh * kw),
                       columns.reshape(B, groups, Cin_g * kh * kw, Ho * Wo))
    out = out.reshape(B, Cout, Ho, Wo)
    return out if bias is None else out + bias.view(1, Cout, 1, 1)


def traceable_deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None,
                            mask: Tensor | None, stride, padding, dilation) -> Tensor:
    """DCNv2 by ``F.grid_sample`` (align_corners, zeros), as the hand-written path samples."""
    B, Cin, H, W = input.shape
    _, _, kh, kw = weight.shape
    K = kh * kw
    G = offset.shape[1] // (2 * K)
    Ho, Wo = offset.shape[-2:]
    pad_h, pad_w = int(H == 1), int(W == 1)  # grid_sample needs at least 2 pixels per side
    scale_y, scale_x = 2.0 / (H + pad_h - 1), 2.0 / (W + pad_w - 1)
    base_y, base_x = regular_grid(offset, kh, kw, stride, padding, dilation)
    pairs = offset.view(B, G, K, 2, Ho, Wo)
    grid_x = (base_x + pairs[:, :, :, 1]) * scale_x - 1.0
    grid_y = (base_y + pairs[:, :, :, 0]) * scale_y - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1).view(B * G, K * Ho, Wo, 2)
    image = F.pad(input, (0, pad_w, 0, pad_h)) if pad_h or pad_w else input
    columns = F.grid_sample(image.reshape(B * G, Cin // G, *image.shape[-2:]), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=True).view(B, G, Cin // G, K * Ho * Wo)
    if mask is not None:
        columns = columns * mask.view(B, G, 1, K * Ho * Wo)
    return _contract(columns.reshape(B, Cin * K, Ho * Wo), weight, bias, Ho, Wo)


def gather_deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None,
                         mask: Tensor | None, stride, padding, dilation) -> Tensor:
    """DCNv2 by four ``torch.gather`` calls per column from the image with a one-pixel zero border.

    A sample at ``(y, x)`` with ``y0 = floor(y)`` reads rows ``y0, y0 + 1`` and columns ``x0, x0 + 1``; with the
    border, every sample that touches the image (``-1 < y < H``, ``-1 < x < W``) reads in-bounds pixels of the
    padded image, zeros standing for the outside, and samples farther out get weight 0.
    """
    B, Cin, H, W = input.shape
    _, _, kh, kw = weight.shape
    K = kh * kw
    G = offset.shape[1] // (2 * K)
    Cg = Cin // G
    Ho, Wo = offset.shape[-2:]
    KP = K * Ho * Wo
    base_y, base_x = regular_grid(offset, kh, kw, stride, padding, dilation)
    pairs = offset.view(B, G, K, 2, Ho, Wo)
    y = base_y + pairs[:, :, :, 0]  # [B, G, K, Ho, Wo]
    x = base_x + pairs[:, :, :, 1]
    # NaN coordinates (a diverged offset predictor) read a sample outside, at a NaN weight: the output is NaN and
    # the training loop's NaN check reports it, instead of an out-of-bounds index (a device-side assert on GPUs)
    y0 = torch.nan_to_num(torch.floor(y.detach()), nan=-2.0, posinf=-2.0, neginf=-2.0)
    x0 = torch.nan_to_num(torch.floor(x.detach()), nan=-2.0, posinf=-2.0, neginf=-2.0)
    inside = ((y0 >= -1) & (y0 <= H - 1) & (x0 >= -1) & (x0 <= W - 1)).to(y.dtype)
    fy, fx = y - y0, x - x0  # the gradient reaches the offsets through these
    # index of the top-left corner in the padded image; samples outside read anywhere, at weight 0
    row = (y0 + 1).clamp(0, H).long()
    col = (x0 + 1).clamp(0, W).long()
    width = W + 2
    top_left = (row * width + col).view(B * G, 1, KP)
    image = F.pad(input, (1, 1, 1, 1)).reshape(B * G, Cg, (H + 2) * width)
    scale = inside if mask is None else inside * mask.view(B, G, K, Ho, Wo)
    weights = (((1 - fy) * (1 - fx), 0), ((1 - fy) * fx, 1), (fy * (1 - fx), width), (fy * fx, width + 1))
    columns = None
    for corner_weight, shift in weights:
        samples = torch.gather(image, 2, (top_left + shift).expand(B * G, Cg, KP))  # [B*G, Cg, K*P]
        term = samples * (corner_weight * scale).view(B * G, 1, KP)
        columns = term if columns is None else columns + term
    return _contract(columns.reshape(B, Cin * K, Ho * Wo), weight, bias, Ho, Wo)
