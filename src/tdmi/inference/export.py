"""``tdmi export --format onnx``: the per-frame encoder and the clip decoder as two ONNX graphs.

The split follows ``docs/architecture.md`` (``encode`` / ``decode``) and is what makes a deployed pipeline
cache-friendly
(``tdmi.inference.pipeline``): run ``encoder.onnx`` once per (person crop, frame) and ``decoder.onnx`` once per key
frame on T cached feature sets.

- ``encoder.onnx``: ``frames [N, 3, H, W]`` (ImageNet-normalised RGB crops) -> ``s1 [N, C1, h, w]``, ``s2``, ``s3``,
  ``s4`` (the backbone's four stage features at 1/4 resolution, ``models/hrnet.py``). N is dynamic.
- ``decoder.onnx``: ``s1 [B, T, C1, h, w]`` ... ``s4 [B, T, C4, h, w]`` (key frame at index delta) ->
  ``heatmaps [B, J, h, w]``. B is dynamic; T = 2 delta + 1 is fixed by the model. Only the stages the model reads
  are inputs (the exporter drops unused ones): all four for TDMI, ``s4`` alone for DCPose and FAMI-Pose; feed the
  graph's declared inputs (``session.get_inputs()``), which ``export.json`` lists under ``decoder.inputs``.

Deformable convolution: the TDE's DCNv2 (``models/deform_conv.py``) samples with ``grid_sample``, which ONNX has
as ``GridSample`` since opset 16 (bilinear, zeros padding, ``align_corners=1``: exactly the semantics used). The
training implementation, however, chunks the batch and writes into preallocated views (``out=``), which the
TorchScript tracer does not export faithfully (checked with torch 2.13: the decoder exported from it was off by ~2%
of the heatmap range in onnxruntime). The export therefore
runs on a copy of the model whose DCN layers use :func:`functional_deform_conv2d`, the same sampling and the same
column order written with plain, out-of-place ops; it equals the training path to float rounding
(``tests/test_export.py``). The torchvision DCN backend is never exported (``torchvision::deform_conv2d`` has no
ONNX form).

When ``onnxruntime`` is installed (``pip install tdmi[onnx]``) both graphs are run on fresh random inputs with a
batch size other than the traced one and compared with PyTorch; the largest error relative to the output's range
is printed and written to ``export.json``.
"""

from __future__ import annotations

import copy
import time
import types
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdmi.data.fileio import atomic_write_json
from tdmi.errors import CommandError

#: GridSample entered ONNX in opset 16; 17 is widely supported by runtimes.
OPSET = 17

#: Largest accepted |onnx - torch| / max|torch| per output.
TOLERANCE = 1e-4

STAGE_NAMES = ("s1", "s2", "s3", "s4")


def functional_deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor], stride,
                             padding, dilation, mask: Optional[Tensor]) -> Tensor:
    """DCNv2 with ``models.deform_conv.deform_conv2d``'s semantics in out-of-place ops that ONNX export can trace.

    Shapes: input ``[B, Cin, H, W]``, offset ``[B, 2*G*K, Ho, Wo]`` (interleaved dy, dx per tap), weight
    ``[Cout, Cin/groups, kh, kw]``, mask ``[B, G*K, Ho, Wo]`` or None -> ``[B, Cout, Ho, Wo]``.
    """
    _, cin, height, width = input.shape
    cout, cin_per_group, kh, kw = weight.shape
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[-2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    # grid_sample(align_corners=True) is undefined on size-1 axes; pad them as the training path does.
    pad_h, pad_w = int(height == 1), int(width == 1)
    if pad_h or pad_w:
        input = F.pad(input, (0, pad_w, 0, pad_h))
    rows = torch.arange(out_h, dtype=offset.dtype, device=offset.device) * sh - ph
    cols = torch.arange(out_w, dtype=offset.dtype, device=offset.device) * sw - pw
    tap_y = torch.arange(kh, dtype=offset.dtype, device=offset.device).repeat_interleave(kw) * dh
    tap_x = torch.arange(kw, dtype=offset.dtype, device=offset.device).repeat(kh) * dw
    pairs = offset.reshape(-1, offset_groups, taps, 2, out_h, out_w)
    y = tap_y[:, None, None] + rows[None, :, None] + pairs[:, :, :, 0]  # [B, G, K, Ho, Wo]
    x = tap_x[:, None, None] + cols[None, None, :] + pairs[:, :, :, 1]
    grid = torch.stack((x * (2.0 / (width + pad_w - 1)) - 1.0, y * (2.0 / (height + pad_h - 1)) - 1.0), dim=-1)
    grid = grid.reshape(-1, taps * out_h, out_w, 2)
    image = input.reshape(-1, cin // offset_groups, height + pad_h, width + pad_w)
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(-1, offset_groups, cin // offset_groups, taps, out_h * out_w)
    if mask is not None:
        sampled = sampled * mask.reshape(-1, offset_groups, 1, taps, out_h * out_w)
    conv_groups = cin // cin_per_group
    columns = sampled.reshape(-1, conv_groups, cin_per_group * taps, out_h * out_w)
    out = torch.matmul(weight.reshape(conv_groups, cout // conv_groups, cin_per_group * taps), columns)
    out = out.reshape(-1, cout, out_h, out_w)
    return out if bias is None else out + bias.reshape(1, cout, 1, 1)


def _functional_dcn_forward(self, x: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    return functional_deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


def exportable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (eval mode) whose DCN layers run :func:`functional_deform_conv2d`."""
    from tdmi.models.deform_conv import ModulatedDeformConv2d

    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(module, ModulatedDeformConv2d):
            module.forward = types.MethodType(_functional_dcn_forward, module)
    return clone


class FrameEncoder(nn.Module):
    """``frames [N, 3, H, W]`` -> the four stage features ``[N, C_j, h, w]`` as a tuple (one ONNX output each)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.encode(frames))


class ClipDecoder(nn.Module):
    """Stage features of T frames ``[B, T, C_j, h, w]`` (four inputs) -> ``heatmaps [B, J, h, w]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, s1: Tensor, s2: Tensor, s3: Tensor, s4: Tensor) -> Tensor:
        return self.model.decode((s1, s2, s3, s4)).heatmaps


def _export(module: nn.Module, inputs: tuple[Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], batch_axis: str) -> None:
    """``torch.onnx.export`` (TorchScript tracer) to a temporary file, renamed over ``path`` when complete."""
    import warnings

    from tdmi.atomic import atomic_write

    axes = {name: {0: batch_axis} for name in (*input_names, *output_names)}

    def write(temp: Path) -> None:
        with warnings.catch_warnings():
            # The tracer warns about every shape check it freezes; those checks hold for any batch size.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, str(temp), dynamo=False, opset_version=OPSET, input_names=input_names,
                              output_names=output_names, dynamic_axes=axes, do_constant_folding=True)

    atomic_write(path, write)


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(actual - expected).max()) / scale


def verify_with_onnxruntime(encoder_path: Path, decoder_path: Path, model: nn.Module, input_size: tuple[int, int],
                            num_frames: int, seed: int = 0) -> Optional[dict[str, float]]:
    """Run both graphs on random inputs (batch sizes 3 and 2, not the traced ones) and compare with ``model``.

    Returns:
        output name -> largest error relative to max|torch output|, or None when onnxruntime is not installed.
    """
    try:
        import onnxruntime
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(3, 3, input_size[1], input_size[0], generator=generator)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    encoder = onnxruntime.InferenceSession(str(encoder_path), options, providers=["CPUExecutionProvider"])
    decoder = onnxruntime.InferenceSession(str(decoder_path), options, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = model.encode(frames)
        clip = tuple(torch.randn(2, num_frames, *f.shape[1:], generator=generator) for f in expected)
        expected_heatmaps = model.decode(clip).heatmaps
    errors = {}
    for name, actual, reference in zip(STAGE_NAMES, encoder.run(None, {"frames": frames.numpy()}), expected):
        errors[f"encoder.{name}"] = _relative_error(actual, reference.numpy())
    wanted = {i.name for i in decoder.get_inputs()}  # the stages the model reads (the exporter drops the others)
    actual_heatmaps = decoder.run(None, {name: t.numpy() for name, t in zip(STAGE_NAMES, clip) if name in wanted})[0]
    errors["decoder.heatmaps"] = _relative_error(actual_heatmaps, expected_heatmaps.numpy())
    return errors


def export_onnx(model: nn.Module, input_size: tuple[int, int], num_frames: int, out_dir: Path,
                verify: bool = True) -> dict:
    """Write ``encoder.onnx`` and ``decoder.onnx`` for ``model``; returns the report written to ``export.json``.

    Raises:
        CommandError: the export fails or onnxruntime's outputs differ from PyTorch's beyond :data:`TOLERANCE`.
    """
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise CommandError("tdmi export needs the onnx package, which is not installed: pip install 'tdmi[onnx]' "
                           "(onnx and onnxruntime; onnxruntime also checks the exported graphs)")
    model = model.cpu().eval()
    width, height = input_size
    frames = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    encoder_path, decoder_path = out_dir / "encoder.onnx", out_dir / "decoder.onnx"
    start = time.perf_counter()
    try:
        with torch.no_grad():
            features = tuple(model.encode(frames))
            clip = tuple(torch.randn(1, num_frames, *f.shape[1:], generator=torch.Generator().manual_seed(2))
                         for f in features)
            joints = int(model.decode(clip).heatmaps.shape[1])
            # The wrappers must be in eval mode themselves: torch.onnx.export restores the traced module's train
            # flag afterwards, and a wrapper left in train mode would switch the shared copy to train mode (batch
            # statistics in every BatchNorm) for the next export.
            clone = exportable_copy(model)
            _export(FrameEncoder(clone).eval(), (frames,), encoder_path, ["frames"], list(STAGE_NAMES), "n")
            _export(ClipDecoder(clone).eval(), clip, decoder_path, list(STAGE_NAMES), ["heatmaps"], "b")
    except (RuntimeError, ValueError, TypeError) as err:  # torch.onnx's errors derive from these
        raise CommandError(f"ONNX export to {out_dir} failed: {err}") from None
    import onnx

    declared = {i.name for i in onnx.load(str(decoder_path), load_external_data=False).graph.input}
    report = {
        "opset": OPSET, "input_size": [width, height], "num_frames": num_frames,
        "encoder": {"file": encoder_path.name, "inputs": {"frames": ["n", 3, height, width]},
                    "outputs": {name: ["n", int(f.shape[1]), int(f.shape[2]), int(f.shape[3])]
                                for name, f in zip(STAGE_NAMES, features)}},
        "decoder": {"file": decoder_path.name,
                    "inputs": {name: ["b", num_frames, int(f.shape[1]), int(f.shape[2]), int(f.shape[3])]
                               for name, f in zip(STAGE_NAMES, features) if name in declared},
                    "outputs": {"heatmaps": ["b", joints, int(features[-1].shape[2]), int(features[-1].shape[3])]}},
        "export_seconds": round(time.perf_counter() - start, 2),
        "verified_with_onnxruntime": False, "relative_errors": None, "tolerance": TOLERANCE,
    }
    if verify:
        errors = verify_with_onnxruntime(encoder_path, decoder_path, model, input_size, num_frames)
        if errors is not None:
            report["verified_with_onnxruntime"] = True
            report["relative_errors"] = errors
            worst = max(errors, key=errors.get)
            if errors[worst] > TOLERANCE:
                atomic_write_json(out_dir / "export.json", report, indent=2)
                raise CommandError(f"{out_dir}: onnxruntime disagrees with PyTorch on {worst}: relative error "
                                   f"{errors[worst]:.2e} > {TOLERANCE:g} (see export.json)")
    atomic_write_json(out_dir / "export.json", report, indent=2)
    return report


def export_command(args) -> int:
    """``tdmi export [--checkpoint FILE] --format onnx [--out DIR]``."""
    import sys

    from tdmi.inference.model_loading import RANDOM_INIT_BANNER, load_inference_model

    if args.format != "onnx":
        raise CommandError(f"--format {args.format!r}: only onnx is supported")
    loaded = load_inference_model(getattr(args, "checkpoint", None), getattr(args, "config", None),
                                  getattr(args, "overrides", None) or ())
    if loaded.random_init:
        print(RANDOM_INIT_BANNER, file=sys.stderr)
    print(f"model: {loaded.description}")
    for note in loaded.notes:
        print(f"note: {note}")
    out_dir = Path(args.out)
    cfg = loaded.config.model
    report = export_onnx(loaded.model, (int(cfg.input_size[0]), int(cfg.input_size[1])), cfg.num_frames, out_dir)
    for part in ("encoder", "decoder"):
        shapes = ", ".join(f"{k} {v}" for k, v in report[part]["inputs"].items())
        print(f"{part}: {out_dir / report[part]['file']} ({shapes})")
    if report["verified_with_onnxruntime"]:
        worst = max(report["relative_errors"].values())
        check = f"onnxruntime matches PyTorch (largest relative error {worst:.1e} <= {TOLERANCE:g})"
    else:
        check = "not verified: onnxruntime is not installed (pip install 'tdmi[onnx]')"
    print(f"export: 2 ONNX graphs (opset {OPSET}) in {out_dir}; {check}"
          f"{' [RANDOM WEIGHTS]' if loaded.random_init else ''}")
    return 0
