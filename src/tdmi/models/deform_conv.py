"""Modulated deformable convolution (DCNv2, paper eq. 3-4) in pure PyTorch, with torchvision's offset/mask layout.

Semantics (docs/facts/model-facts.md (c)), for input ``[B, Cin, H, W]``, weight ``[Cout, Cin/groups, kh, kw]``, K =
kh*kw:

- ``offset [B, 2*G*K, Ho, Wo]``: G offset groups, inferred as ``offset.shape[1] // (2K)``; input channels are
  split into G contiguous blocks. For group g and tap k = i*kw + j, channel ``g*2K + 2k`` is dy and ``g*2K + 2k + 1``
  is dx (interleaved pairs, as torchvision, mmcv and the DCNv2 CUDA kernels read them).
- ``mask [B, G*K, Ho, Wo]`` multiplies each sample as given (no activation inside); None means 1 (DCNv1).
- sample point: ``y = yo*stride - pad + i*dil + dy``, ``x = xo*stride - pad + j*dil + dx``; bilinear with zeros
  outside the image (a sample at y <= -1 or y >= H is 0; partial corners contribute only in-image neighbours).
- columns are ordered channel-major, tap-minor (c*K + k), matching ``weight.view(Cout, Cin/groups * K)``.

Two backends, chosen by ``TDMI_DCN_BACKEND`` (``auto`` | ``torch`` | ``torchvision``, default ``auto``) or at run
time with :func:`set_backend` / :func:`use_backend`:

- ``torch``: the pure-PyTorch implementation below. Bilinear sampling is ``F.grid_sample(align_corners=True,
  padding_mode='zeros')``, which reproduces the kernels' zero-border rule exactly (including the partial-corner
  band -1 < y < 0); the sampled columns ``[B, Cin*K, Ho*Wo]`` are contracted with the weight by matmuls, or on
  CPUs with oneDNN by 1x1 convolutions over channels-last views of the same memory (see :class:`_Contraction`).
  It is a custom autograd function that works on chunks of the batch, so that temporaries stay small enough to be
  reused rather than page-faulted in again on CPU. Forward keeps the unmasked columns for backward's weight and
  mask gradients when they fit in ``_SAVE_COLUMNS_BYTES`` (96 MB for one W48 TDMI DCN at batch 8; larger calls
  sample them again in backward); gradients nobody asked for are skipped.
- ``torchvision``: ``torchvision.ops.deform_conv2d`` (same semantics), if torchvision imports and its compiled op
  runs on the tensors' device; checked once per device type, lazily, with a tiny call on that device.

Deterministic mode (``torch.use_deterministic_algorithms(True)``, ``tdmi train --deterministic``) on a GPU takes a
third implementation whatever the backend, :func:`tdmi.models.deform_conv_plain.gather_deform_conv2d`: neither
grid_sample's CUDA backward (no deterministic kernel: it raises) nor torchvision's (atomic adds) is deterministic
there. On the CPU both usual paths are deterministic already. :func:`sampling_path` states the whole rule.

``auto`` picks per call, by measurement: on CUDA torchvision's fused kernel when it runs there (a torchvision built
without CUDA fails the CUDA probe and falls back) and the compute dtype is float32/float64/float16 (its kernels
have no bfloat16); everywhere else the pure path, which on CPU is 6-9x faster than torchvision's CPU kernel
(``benchmarks/dcn_speed.py``). Both backends get the same promoted dtype (bf16/fp16 activations with fp32
parameters compute in fp32), and the pure path samples in at least float32: a bfloat16 sampling grid quantises
coordinates to ~0.14 px at these feature sizes.

Speed: ``benchmarks/dcn_speed.py`` measures the pure path against a plain 3x3 conv of the same shape. On a
2-core AMD EPYC (Zen 5), one thread, at the TDMI shape, forward+backward costs 5-7x the conv, by machine (forward
alone 4-6x). Most of that is fixed by the primitives: ``grid_sampler_2d_backward`` scatters each of the
B*Cin*K*Ho*Wo column gradients into 4 input pixels one scalar at a time, which alone takes about 3x the whole conv;
grid_sample's forward takes about 1x, the three contractions about 1.2x (the conv's own FLOPs), and the offset and
mask gradients, which the conv does not have, add 72 MB of fresh output per call at batch 8. Measured and slower
(docs/results.md): inductor-compiled sampling (per-element atomic scatter-adds) and fused numba sampling kernels.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from tdmi.models.deform_conv_plain import gather_deform_conv2d, regular_grid, traceable_deform_conv2d
from tdmi.precision import autocast_off

BACKENDS = ("auto", "torch", "torchvision")
_ENV_VAR = "TDMI_DCN_BACKEND"

# Target size of one chunk's sampled columns. Below glibc's largest mmap threshold (32 MiB), freed chunks are
# reused from the heap rather than page-faulted in again; larger chunks did not run faster.
_CHUNK_BYTES = 16 * 2**20
# On GPUs there are no page faults, and fewer, larger chunks mean fewer kernel launches.
_CHUNK_BYTES_ACCELERATOR = 256 * 2**20
# Forward keeps the unmasked sampled columns for backward when all of them together take at most this much;
# larger calls recompute them chunk by chunk in backward instead.
_SAVE_COLUMNS_BYTES = 512 * 2**20


def _backend_from_env() -> str:
    value = os.environ.get(_ENV_VAR, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"environment variable {_ENV_VAR}={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


_backend = _backend_from_env()
_torchvision_ok: dict[str, bool] = {}
"""Result of the torchvision probe per device type ("cpu", "cuda", ...)."""
_TORCHVISION_DTYPES = (torch.float32, torch.float64, torch.float16)


def set_backend(name: str) -> None:
    """Choose the DCN implementation for all later calls: ``auto``, ``torch`` or ``torchvision``."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"DCN backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if name == "torchvision" and not (torchvision_available("cpu") or torchvision_available("cuda")):
        raise RuntimeError("DCN backend 'torchvision' requested, but torchvision.ops.deform_conv2d does not "
                           "import or does not run here; use 'torch' or 'auto'")
    _backend = name


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with use_backend("torch"): ...`` runs the block with the given backend, then restores the previous one."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def torchvision_available(device: torch.device | str = "cpu") -> bool:
    """True if ``torchvision.ops.deform_conv2d`` imports and runs on ``device``'s type (a tiny call there);
    checked once per device type."""
    kind = torch.device(device).type
    if kind not in _torchvision_ok:
        try:
            from torchvision.ops import deform_conv2d as tv_deform_conv2d

            ones = torch.ones(1, 1, 3, 3, device=device)
            out = tv_deform_conv2d(ones, torch.zeros(1, 18, 3, 3, device=device), ones, padding=(1, 1),
                                   mask=torch.ones(1, 9, 3, 3, device=device))
            # a centre sample of a 3x3 box filter over ones sees all 9 in-image taps
            _torchvision_ok[kind] = bool(out.shape == (1, 1, 3, 3) and abs(float(out[0, 0, 1, 1]) - 9.0) < 1e-4)
        except Exception:  # ImportError, missing compiled ops, no kernel for this device, ABI mismatch: "unusable"
            _torchvision_ok[kind] = False
    return _torchvision_ok[kind]


def auto_uses_torchvision(device: torch.device | str, dtype: torch.dtype) -> bool:
    """The ``auto`` rule: torchvision on CUDA for the dtypes its kernels take, when it runs there; else pure."""
    return (torch.device(device).type == "cuda" and dtype in _TORCHVISION_DTYPES
            and torchvision_available(device))


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
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    K = kh * kw
    if Cin_g == 0 or Cin % Cin_g or Cout % (Cin // Cin_g):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input channels {Cin} with whole conv groups")
    G = offset.shape[1] // (2 * K)
    if G * 2 * K != offset.shape[1] or G == 0 or Cin % G:
        raise ValueError(f"offset has {offset.shape[1]} channels: expected 2*G*{K} with G dividing Cin={Cin}")
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if offset.shape[0] != B or offset.shape[-2:] != (Ho, Wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} != expected [{B}, {2 * G * K}, {Ho}, {Wo}]")
    if mask is not None and (mask.shape[0] != B or mask.shape[1] != G * K or mask.shape[-2:] != (Ho, Wo)):
        raise ValueError(f"mask shape {tuple(mask.shape)} != expected [{B}, {G * K}, {Ho}, {Wo}]")

    # one compute dtype: bf16/fp16 activations with fp32 parameters (no autocast rule covers this function)
    dtype = torch.promote_types(input.dtype, weight.dtype)
    path = sampling_path(input.device, dtype, torch.compiler.is_compiling())
    if path == "torchvision":
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        cast = [t if t is None else t.to(dtype) for t in (input, offset, weight, bias, mask)]
        out = tv_deform_conv2d(cast[0], cast[1], cast[2], cast[3], stride=stride, padding=padding,
                               dilation=dilation, mask=cast[4])
    else:
        # The other paths sample in at least float32 (a half-precision grid misplaces samples by up to ~0.1 px)
        # and return the promoted dtype. contiguous: offsets are often channel slices of a predictor's output.
        compute = torch.promote_types(dtype, torch.float32)
        args = [t if t is None else t.to(compute).contiguous() for t in (input, offset, weight, bias, mask)]
        # the plain-op paths' matmuls would otherwise follow a caller's autocast down to bf16/fp16
        with autocast_off(input.device.type):
            if path == "pure":
                out = _DeformConv2dFunction.apply(*args, stride, padding, dilation)
            elif path == "traceable":
                out = traceable_deform_conv2d(*args, stride, padding, dilation)
            else:
                out = gather_deform_conv2d(*args, stride, padding, dilation)
        out = out.to(dtype)
    if not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)  # hand a channels-last model its layout back
    return out


def sampling_path(device: torch.device | str, dtype: torch.dtype, compiling: bool = False) -> str:
    """Which implementation a call on ``device`` with compute ``dtype`` takes, by the backend setting:

    - ``gather`` whenever deterministic algorithms are on and the device is not the CPU, whatever the backend:
      the only path whose backward is deterministic there (see :mod:`tdmi.models.deform_conv_plain`);
    - ``torchvision`` when asked for, or under ``auto`` by :func:`auto_uses_torchvision`;
    - ``traceable`` (grid_sample as plain ops) while ``torch.compile`` traces;
    - ``pure``, the hand-written autograd function, otherwise.

    While compiling no probe runs (it reads a value back): :func:`prepare_for_compile` ran it beforehand.
    """
    kind = torch.device(device).type
    if kind != "cpu" and torch.are_deterministic_algorithms_enabled():
        return "gather"
    if _backend == "torchvision":
        return "torchvision"
    if _backend == "auto":
        known = (kind == "cuda" and dtype in _TORCHVISION_DTYPES and _torchvision_ok.get(kind, False)) if compiling \
            else auto_uses_torchvision(device, dtype)
        if known:
            return "torchvision"
    return "traceable" if compiling else "pure"


def prepare_for_compile(device: torch.device | str) -> None:
    """Run the torchvision probe for ``device`` now, outside ``torch.compile``'s tracing (which cannot read the
    probe's value back), so that a compiled model takes the backend an eager one would."""
    if torch.device(device).type == "cuda":
        torchvision_available(device)


# ----------------------------------------------------------------------------------------------------------------
# Pure-PyTorch path


class _Geometry:
    """Shapes and the regular sampling grid of one call, in grid_sample's normalised [-1, 1] coordinates.

    Columns are ``[b, G, Cin/G, K*Ho*Wo]`` per chunk: per offset group exactly grid_sample's output for a grid
    ``[b*G, K*Ho, Wo, 2]``, and as a matrix ``[b, groups, Cin_g*K, Ho*Wo]`` in the weight's ``c*K + k`` order.
    """

    def __init__(self, input: Tensor, offset: Tensor, weight: Tensor, stride, padding, dilation, step: int = 0):
        self.B, self.Cin, self.H, self.W = input.shape
        self.Cout, self.Cin_g, kh, kw = weight.shape
        self.K = kh * kw
        self.groups = self.Cin // self.Cin_g
        self.G = offset.shape[1] // (2 * self.K)
        self.Cg = self.Cin // self.G
        self.Ho, self.Wo = offset.shape[-2:]
        self.P = self.Ho * self.Wo
        # grid_sample with align_corners=True maps -1..1 onto pixel centres 0..size-1, which is undefined for
        # size 1; such inputs get one extra zero row/column (also outside the image for the kernels' rule).
        self.pad_h, self.pad_w = int(self.H == 1), int(self.W == 1)
        self.scale_y = 2.0 / (self.H + self.pad_h - 1)
        self.scale_x = 2.0 / (self.W + self.pad_w - 1)
        device = offset.device
        # regular grid [K, Ho, 1] / [K, 1, Wo], already normalised: grid = base + offset * scale
        base_y, base_x = regular_grid(offset, kh, kw, stride, padding, dilation)
        self.base_x = base_x * self.scale_x - 1.0
        self.base_y = base_y * self.scale_y - 1.0
        self.columns_per_sample = self.Cin * self.K * self.P
        chunk_bytes = _CHUNK_BYTES if device.type == "cpu" else _CHUNK_BYTES_ACCELERATOR
        # samples per chunk; backward reuses forward's step so that saved columns line up with its chunks
        self.step = step or max(1, chunk_bytes // max(1, self.columns_per_sample * input.element_size()))

    def chunks(self) -> Iterator[slice]:
        for start in range(0, self.B, self.step):
            yield slice(start, min(start + self.step, self.B))

    def buffer(self, like: Tensor, per_sample: int) -> Tensor:
        """One flat work buffer for the largest chunk, reused by every chunk (one allocation, one page-in)."""
        return like.new_empty(min(self.step, self.B) * per_sample)

    def grid(self, offset: Tensor, buffer: Tensor) -> Tensor:
        """offset ``[b, 2*G*K, Ho, Wo]`` -> grid ``[b*G, K*Ho, Wo, 2]``, written into ``buffer``."""
        b = offset.shape[0]
        pairs = offset.view(b, self.G, self.K, 2, self.Ho, self.Wo)
        grid = buffer[: b * self.G * self.K * self.P * 2].view(b, self.G, self.K, self.Ho, self.Wo, 2)
        # (dy, dx) pairs -> grid_sample's (x, y), written straight into the strided halves (no flip/stack copies)
        torch.add(self.base_x, pairs[:, :, :, 1], alpha=self.scale_x, out=grid[..., 0])
        torch.add(self.base_y, pairs[:, :, :, 0], alpha=self.scale_y, out=grid[..., 1])
        return grid.view(b * self.G, self.K * self.Ho, self.Wo, 2)

    def offset_gradient(self, grad_grid: Tensor, out: Tensor) -> None:
        """grad_grid ``[b*G, K*Ho, Wo, 2]`` (x, y; normalised units) -> ``out [b, 2*G*K, Ho, Wo]`` (dy, dx; pixels)."""
        b = out.shape[0]
        grad_grid = grad_grid.view(b, self.G, self.K, self.Ho, self.Wo, 2)
        pairs = out.view(b, self.G, self.K, 2, self.Ho, self.Wo)
        torch.mul(grad_grid[..., 1], self.scale_y, out=pairs[:, :, :, 0])
        torch.mul(grad_grid[..., 0], self.scale_x, out=pairs[:, :, :, 1])

    def image(self, input: Tensor) -> Tensor:
        """input ``[b, Cin, H, W]`` -> ``[b*G, Cin/G, H', W']`` (padded to at least 2x2)."""
        if self.pad_h or self.pad_w:
            input = F.pad(input, (0, self.pad_w, 0, self.pad_h))
        return input.reshape(-1, self.Cg, *input.shape[-2:])

    def sample(self, image: Tensor, grid: Tensor) -> Tensor:
        """Bilinear samples ``[b, G, Cin/G, K*P]``: the unmasked columns."""
        sampled = torch.grid_sampler(image, grid, 0, 0, True)  # bilinear, zeros, align_corners
        return sampled.view(-1, self.G, self.Cg, self.K * self.P)


class _Contraction:
    """The three products of columns ``[b, Cin*K, P]`` with ``weight.view(Cout, Cin_g*K)`` per conv group.

    Plain matmuls, except for float32 on CPUs with oneDNN and one conv group: there each product runs as a oneDNN
    1x1 convolution over channels-last views, which oneDNN reads and writes in place (no reorder of the large
    column tensor) with its AVX-512 kernels, about twice as fast as MKL's sgemm on CPUs where MKL falls back to AVX2
    (AMD). Per sample, with j = c*K + k:

    - out[o, p] = sum_j W[o, j] cols[j, p]: oneDNN's weight gradient of a 1x1 conv whose source is cols seen as
      [1, P, Cin*K, 1] channels-last and whose output gradient is W^T seen as [1, Cout, Cin*K, 1].
    - grad_cols[j, p] = sum_o W[o, j] g[o, p]: a 1x1 conv of W^T seen as [1, Cout, Cin*K, 1] with weight g^T.
    - grad_W[o, j] = sum_p g[o, p] cols[j, p]: a 1x1 conv of cols seen as [1, P, Cin*K, 1] with weight g.
    """

    def __init__(self, geo: _Geometry, weight: Tensor):
        self.geo = geo
        Og, CK = geo.Cout // geo.groups, geo.Cin_g * geo.K
        self.weight_groups = weight.reshape(geo.groups, Og, CK)
        self.onednn = (weight.device.type == "cpu" and weight.dtype == torch.float32 and geo.groups == 1
                       and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
        if self.onednn:
            self.weight_t = self.weight_groups[0].t().contiguous()  # [CK, Cout]
            self.weight_t_nhwc = self.weight_t.view(1, CK, 1, geo.Cout).permute(0, 3, 1, 2)

    @staticmethod
    def _nhwc(matrix: Tensor) -> Tensor:
        """[rows, cols] contiguous -> [1, cols, rows, 1] in channels-last strides (a view)."""
        return matrix.view(1, matrix.shape[0], 1, matrix.shape[1]).permute(0, 3, 1, 2)

    def forward(self, columns: Tensor, out: Tensor) -> None:
        """columns ``[b, Cin*K, P]`` -> ``out [b, Cout, P]``."""
        geo = self.geo
        if not self.onednn:
            torch.matmul(self.weight_groups, columns.view(-1, geo.groups, geo.Cin_g * geo.K, geo.P),
                         out=out.view(-1, geo.groups, geo.Cout // geo.groups, geo.P))
            return
        # only shapes are read from the weight argument of a weight-gradient call; 1x1 convolutions with
        # dilation 1 go to a non-oneDNN kernel, and dilation does not change a 1x1 convolution
        shape_only = columns.new_empty(1).expand(geo.Cout, geo.P, 1, 1)
        for i in range(columns.shape[0]):
            out[i] = torch.ops.aten.convolution_backward(
                self.weight_t_nhwc, self._nhwc(columns[i]), shape_only, None, [1, 1], [0, 0], [2, 2], False,
                [0, 0], 1, [False, True, False])[1].view(geo.Cout, geo.P)

    def grad_columns(self, grad: Tensor, buffer: Tensor) -> Tensor:
        """grad ``[b, Cout, P]`` -> ``[b, Cin*K, P]`` (in ``buffer`` on the matmul path)."""
        geo = self.geo
        b, CK = grad.shape[0], geo.Cin_g * geo.K
        if not self.onednn:
            out = buffer[: b * geo.Cin * geo.K * geo.P].view(b, geo.groups, CK, geo.P)
            torch.matmul(self.weight_groups.transpose(-1, -2), grad.view(b, geo.groups, -1, geo.P), out=out)
            return out.view(b, geo.Cin * geo.K, geo.P)
        per_sample = []
        for i in range(b):
            grad_t = grad[i].t().contiguous().view(geo.P, geo.Cout, 1, 1)
            out = torch.mkldnn_convolution(self.weight_t_nhwc, grad_t, None, [0, 0], [1, 1], [1, 1], 1)
            per_sample.append(out.permute(0, 2, 3, 1).view(CK, geo.P))  # channels-last [1, P, CK, 1] is [CK, P]
        return per_sample[0].unsqueeze(0) if b == 1 else torch.stack(per_sample)

    def grad_weight(self, grad: Tensor, columns: Tensor) -> Tensor:
        """grad ``[b, Cout, P]``, columns ``[b, Cin*K, P]`` -> ``[groups, Cout/groups, Cin_g*K]`` summed over b."""
        geo = self.geo
        if not self.onednn:
            return torch.matmul(grad.view(-1, geo.groups, geo.Cout // geo.groups, geo.P),
                                columns.view(-1, geo.groups, geo.Cin_g * geo.K, geo.P).transpose(-1, -2)).sum(0)
        total = None
        for i in range(grad.shape[0]):
            part = torch.mkldnn_convolution(self._nhwc(columns[i]), grad[i].view(geo.Cout, geo.P, 1, 1), None,
                                            [0, 0], [1, 1], [1, 1], 1)  # [1, Cout, CK, 1] channels-last
            total = part if total is None else total.add_(part)
        return total.reshape(1, geo.Cout, geo.Cin_g * geo.K)  # logical order; the strides are channels-last


class _DeformConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None,
                stride, padding, dilation) -> Tensor:
        geo = _Geometry(input, offset, weight, stride, padding, dilation)
        contraction = _Contraction(geo, weight)
        # backward needs the unmasked samples only for the weight and mask gradients; keeping them saves one
        # grid_sample per chunk there, at the cost of holding them (96 MB for a W48 TDMI DCN at batch 8)
        need_weight, need_mask = ctx.needs_input_grad[2], mask is not None and ctx.needs_input_grad[4]
        keep = ((need_weight or need_mask)
                and geo.B * geo.columns_per_sample * input.element_size() <= _SAVE_COLUMNS_BYTES)
        kept = []
        grid_buffer = geo.buffer(offset, geo.G * geo.K * geo.P * 2)
        masked_buffer = geo.buffer(input, geo.columns_per_sample) if keep and mask is not None else None
        out = input.new_empty(geo.B, geo.Cout, geo.P)
        for part in geo.chunks():
            columns = geo.sample(geo.image(input[part]), geo.grid(offset[part], grid_buffer))
            b = columns.shape[0]
            if keep:
                kept.append(columns)
            if mask is not None:
                mask_part = mask[part].view(b, geo.G, 1, geo.K * geo.P)
                if keep:
                    columns = torch.mul(columns, mask_part, out=masked_buffer[: columns.numel()].view_as(columns))
                else:
                    columns.mul_(mask_part)
            contraction.forward(columns.view(b, geo.Cin * geo.K, geo.P), out[part])
            del columns
        if bias is not None:
            out.add_(bias.view(1, geo.Cout, 1))
        ctx.save_for_backward(input, offset, weight, mask)
        ctx.kept_columns = kept if keep else None
        ctx.geometry_args = (stride, padding, dilation, geo.step)
        ctx.has_bias = bias is not None
        return out.view(geo.B, geo.Cout, geo.Ho, geo.Wo)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        input, offset, weight, mask = ctx.saved_tensors
        kept, ctx.kept_columns = ctx.kept_columns, None  # freed chunk by chunk below
        need_input, need_offset, need_weight, need_bias, need_mask = ctx.needs_input_grad[:5]
        need_mask = need_mask and mask is not None
        geo = _Geometry(input, offset, weight, *ctx.geometry_args)
        G, Cg, KP = geo.G, geo.Cg, geo.K * geo.P
        contraction = _Contraction(geo, weight)
        grad_out = grad_out.reshape(geo.B, geo.Cout, geo.P)
        need_sampled = need_weight or need_mask
        need_grad_columns = need_input or need_offset or need_mask
        # every chunk writes its own slice of these, so no zero-fill is needed
        grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) if need_input else None
        grad_offset = torch.empty_like(offset, memory_format=torch.contiguous_format) if need_offset else None
        grad_mask = torch.empty_like(mask, memory_format=torch.contiguous_format) if need_mask else None
        grad_weight = torch.zeros_like(contraction.weight_groups) if need_weight else None
        if need_sampled or need_grad_columns:
            grid_buffer = geo.buffer(offset, G * geo.K * geo.P * 2)
        if need_grad_columns and not contraction.onednn:
            grad_columns_buffer = geo.buffer(input, geo.columns_per_sample)
        else:
            grad_columns_buffer = None
        for index, part in enumerate(geo.chunks() if need_sampled or need_grad_columns else ()):
            image, grid = geo.image(input[part]), geo.grid(offset[part], grid_buffer)
            g_out = grad_out[part]
            b = g_out.shape[0]
            mask_part = mask[part].view(b, G, 1, KP) if mask is not None else None
            sampled = None  # unmasked, [b, G, Cg, K*P]
            if need_sampled:
                if kept is not None:
                    sampled, kept[index] = kept[index], None
                else:
                    sampled = geo.sample(image, grid)
            if need_grad_columns:
                grad_columns = contraction.grad_columns(g_out, grad_columns_buffer).view(b, G, Cg, KP)
            if need_mask:
                # the sum over the group's Cg channels, accumulated without a [b, G, Cg, K*P] product temporary
                grad_mask_part = grad_mask[part].view(b, G, KP)
                torch.mul(grad_columns[:, :, 0], sampled[:, :, 0], out=grad_mask_part)
                for c in range(1, Cg):
                    grad_mask_part.addcmul_(grad_columns[:, :, c], sampled[:, :, c])
            if need_weight:
                if mask is not None:
                    sampled.mul_(mask_part)  # the masked columns; the unmasked ones are not needed any more
                grad_weight += contraction.grad_weight(g_out, sampled.view(b, geo.Cin * geo.K, geo.P))
            del sampled
            if not (need_input or need_offset):
                continue
            if mask is not None:
                grad_columns.mul_(mask_part)
            grad_image, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                grad_columns.view(b * G, Cg, geo.K * geo.Ho, geo.Wo), image, grid,
                0, 0, True, [need_input, need_offset])  # bilinear, zeros, align_corners
            if need_input:
                grad_input[part] = grad_image.view(b, geo.Cin, *image.shape[-2:])[..., :geo.H, :geo.W]
            if need_offset:
                geo.offset_gradient(grad_grid, out=grad_offset[part])
        grad_bias = grad_out.sum((0, 2)) if need_bias and ctx.has_bias else None
        if grad_weight is not None:
            grad_weight = grad_weight.view_as(weight)
        return grad_input, grad_offset, grad_weight, grad_bias, grad_mask, None, None, None


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
