"""``tdmi info``: parameters, multiply-adds per person, input/heatmap sizes, clip length and joint set of a model.

Multiply-adds follow HRNet's own convention (docs/facts/model-facts.md (a), "Parameter counts and FLOPs"): conv and
linear
(matrix-product) MACs only, i.e. ``FlopCounterMode`` FLOPs / 2; BN, activations, additions and resampling are left
out. HRNet's README "GFLOPs" are these MACs / 1024^3. Reference values: HRNet-W32 at 256x192 = 7,645,003,776 MACs,
W48 at 384x288 = 35,306,606,592 (final_layer included).

The count runs on PyTorch's ``meta`` device (shapes only, no arithmetic), so even a 5-frame W48 TDMI is counted in
about a second; a model that cannot run on ``meta`` is counted on the CPU instead. "Per person" means one person
instance: a clip ``[1, T, 3, H, W]`` with T = 2*delta + 1 for the video models, the key frame for the HRNet baseline.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tdmi.models.checkpoints import atomic_write

if TYPE_CHECKING:
    from tdmi.config import ExperimentConfig

_MATRIX_OPS = {"convolution", "_convolution", "mm", "addmm", "bmm", "baddbmm"}
"""aten ops whose FLOPs count (as 2 per MAC): convolutions and the matrix products behind linear layers."""


def _macs(op_counts: dict[Any, int]) -> int:
    return sum(flops for op, flops in op_counts.items() if str(op).split(".")[-1] in _MATRIX_OPS) // 2


class _ChildMacs:
    """Attribute MACs to the model's top-level children with module hooks.

    Scope names cannot do this: a parent may call a grandchild directly (``self.backbone.final_layer(x)``), and
    those MACs belong to ``backbone`` although ``backbone.forward`` is not running. Every module under a child
    reports to that child; nested calls are counted once, by the outermost one.
    """

    def __init__(self, model: nn.Module, counter: FlopCounterMode) -> None:
        self.counter = counter
        self.macs: dict[str, int] = {name: 0 for name, _ in model.named_children()}
        self.depth = 0
        self.start = 0
        owner: dict[nn.Module, str] = {}
        for name, child in model.named_children():
            for module in child.modules():
                owner.setdefault(module, name)
        self.handles = []
        for module, name in owner.items():
            self.handles.append(module.register_forward_pre_hook(self._enter))
            self.handles.append(module.register_forward_hook(lambda *_, name=name: self._leave(name)))

    def _global_macs(self) -> int:
        return _macs(self.counter.get_flop_counts().get("Global", {}))

    def _enter(self, *_: Any) -> None:
        if self.depth == 0:
            self.start = self._global_macs()
        self.depth += 1

    def _leave(self, name: str) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.macs[name] += self._global_macs() - self.start

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _output_shape(output: Any) -> list[int] | None:
    """Shape of the heatmaps in a model output: a tensor, or an object/dict with ``heatmaps``."""
    heatmaps = output.get("heatmaps") if isinstance(output, dict) else getattr(output, "heatmaps", output)
    return list(heatmaps.shape) if isinstance(heatmaps, Tensor) else None


def model_summary(model: nn.Module, example_inputs: Tensor | tuple[Any, ...],
                  forward: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Parameters and conv/linear multiply-adds of ``model`` on ``example_inputs``, total and per top-level module.

    Args:
        model: any module, on any device (``meta`` included: the count needs shapes only).
        example_inputs: one tensor or a tuple of positional inputs.
        forward: called as ``forward(*example_inputs)`` instead of ``model(*example_inputs)``, e.g. to include a
            head that ``forward`` does not run.

    Returns:
        ``{"parameters", "trainable_parameters", "buffer_elements", "macs", "output_shape", "modules": [{"name",
        "parameters", "trainable_parameters", "macs"}, ...]}``. MACs not spent in a named child (functional ops in
        the model's own forward) are listed under ``"(own)"`` when non-zero.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    run = forward if forward is not None else model
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, depth=None)
    child_macs = _ChildMacs(model, counter)
    try:
        with torch.no_grad(), counter:
            output = run(*inputs)
    finally:
        child_macs.remove()
        model.train(was_training)
    total_macs = _macs(counter.get_flop_counts().get("Global", {}))

    modules = []
    for name, child in model.named_children():
        params = list(child.parameters())
        macs = child_macs.macs[name]
        if not params and not macs:  # activations, pooling: nothing to report
            continue
        modules.append({
            "name": name,
            "parameters": sum(p.numel() for p in params),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            "macs": macs,
        })
    own_parameters = list(model.parameters(recurse=False))
    own_macs = total_macs - sum(m["macs"] for m in modules)
    if own_parameters or own_macs:
        modules.append({"name": "(own)", "parameters": sum(p.numel() for p in own_parameters),
                        "trainable_parameters": sum(p.numel() for p in own_parameters if p.requires_grad),
                        "macs": own_macs})
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "buffer_elements": sum(b.numel() for b in model.buffers()),
        "macs": total_macs,
        "output_shape": _output_shape(output),
        "modules": modules,
    }


def _build(cfg: ExperimentConfig, device: str) -> tuple[nn.Module, Tensor, Callable[..., Any] | None]:
    """The configured model, an example person input and (for the bare HRNet) the forward that adds the head."""
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pretrained = None  # the summary never needs weights
    width, height = model_cfg.input_size
    with torch.device(device):
        try:
            from tdmi.models.tdmi import build_model
        except ModuleNotFoundError as err:
            if err.name != "tdmi.models.tdmi":
                raise
            build_model = None
        if build_model is not None:
            model = build_model(model_cfg)
            return model, torch.zeros(1, model_cfg.num_frames, 3, height, width), None
        if model_cfg.arch != "hrnet":
            from tdmi.errors import CommandError

            raise CommandError(f"model.arch={model_cfg.arch!r}: tdmi.models.tdmi is not part of this install yet; "
                               "only arch 'hrnet' can be summarised")
        from tdmi.models.hrnet import HRNet, freeze

        hrnet = HRNet(width=model_cfg.backbone.width, num_joints=model_cfg.num_joints)
        if model_cfg.backbone.freeze:
            freeze(hrnet, bn_eval=model_cfg.backbone.bn_eval)
        return hrnet, torch.zeros(1, 3, height, width), lambda x: hrnet.heatmaps(hrnet(x).s4)


def summarise_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """:func:`model_summary` of the model ``cfg`` describes, plus the sizes and clip settings ``tdmi info`` shows."""
    from tdmi.keypoints import POSETRACK17

    try:
        model, example, forward = _build(cfg, "meta")
        summary = model_summary(model, example, forward)
        counted_on = "meta"
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count with real arithmetic
        model, example, forward = _build(cfg, "cpu")
        summary = model_summary(model, example, forward)
        counted_on = "cpu"
    summary.update({
        "arch": cfg.model.arch,
        "backbone": f"HRNet-W{cfg.model.backbone.width}",
        "joint_set": POSETRACK17.name if cfg.model.num_joints == POSETRACK17.num_joints else "custom",
        "num_joints": cfg.model.num_joints,
        "input_size": list(cfg.model.input_size),
        "heatmap_size": list(cfg.model.heatmap_size),
        "delta": cfg.model.delta,
        "num_frames": cfg.model.num_frames,
        "example_input_shape": list(example.shape),
        "macs_per_person": summary["macs"],
        "gmacs_hrnet_convention": summary["macs"] / 1024**3,
        "counted_on": counted_on,
    })
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The table ``tdmi info`` prints."""
    width, height = summary["input_size"]
    hm_width, hm_height = summary["heatmap_size"]
    lines = [
        f"arch {summary['arch']} with {summary['backbone']}; joint set {summary['joint_set']} "
        f"({summary['num_joints']} joints)",
        f"input {width}x{height} (w x h), heatmap {hm_width}x{hm_height}; delta {summary['delta']} -> "
        f"T = {summary['num_frames']} frames per person clip; example input {summary['example_input_shape']}",
    ]
    output = summary["output_shape"]
    if output is not None and output[-2:] != [hm_height, hm_width]:
        lines.append(f"warning: the model outputs heatmaps of {output[-1]}x{output[-2]}, but model.heatmap_size is "
                     f"{hm_width}x{hm_height}")
    lines.append("")
    name_width = max(12, *(len(m["name"]) for m in summary["modules"]))
    lines.append(f"{'module':<{name_width}}  {'parameters':>12}  {'trainable':>12}  {'GMACs/person':>12}")
    rows = summary["modules"] + [{"name": "total", "parameters": summary["parameters"],
                                  "trainable_parameters": summary["trainable_parameters"], "macs": summary["macs"]}]
    for row in rows:
        if row["name"] == "total":
            lines.append("-" * (name_width + 42))
        lines.append(f"{row['name']:<{name_width}}  {row['parameters']:>12,}  {row['trainable_parameters']:>12,}  "
                     f"{row['macs'] / 1e9:>12.2f}")
    lines.append(f"conv/linear MACs per person: {summary['macs']:,} "
                 f"({summary['gmacs_hrnet_convention']:.2f} in HRNet's README 'GFLOPs' = MACs / 2^30; "
                 "FLOPs = 2 x MACs)")
    return "\n".join(lines)


def print_model_summary(cfg: ExperimentConfig, json_out: str | None = None) -> int:
    """``tdmi info``: print the summary of ``cfg``'s model (and write it as JSON to ``json_out``); returns 0."""
    summary = summarise_config(cfg)
    print(format_summary(summary))
    if json_out:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(Path(json_out), lambda temp: temp.write_text(text))
    width, height = summary["input_size"]
    print(f"tdmi info: {cfg.model.arch}, {summary['parameters'] / 1e6:.2f}M parameters "
          f"({summary['trainable_parameters'] / 1e6:.2f}M trainable), {summary['macs'] / 1e9:.2f} GMACs per person "
          f"at {width}x{height}, T={summary['num_frames']}" + (f"; JSON written to {json_out}" if json_out else ""))
    return 0
