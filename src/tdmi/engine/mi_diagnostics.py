"""What the MI objective does to the representation: per-term gradients on the TDE and both RDM gates, and the
gates' saturation and input dependence (``train.mi_diagnostics_every``; docs/results.md, "The MI objective").

For one batch, every loss term *as it enters the total* (the heatmap MSE; each MI term with alpha, 1/N and the
formulation's temperature factor) is differentiated separately with respect to three parameter groups:

    tde            the temporal difference encoder
    useful_gate    the RDM's useful channel attention (its MLP)
    noisy_gate     the RDM's noisy channel attention

and reported as the gradient norm and its cosine with the heatmap loss's gradient (negative = the term fights the
task). Gate statistics over the batch's ``[B, C]`` gate values: the fraction saturated (< 0.05 or > 0.95), the mean,
and the per-sample standard deviation (the std over the batch, averaged over channels: near 0 means a fixed channel
split that ignores its input, which is table 7's "channel split" row in disguise).

    diag = mi_diagnostics(step_module, frames, heatmaps, target_weight)
    diag["tde.mi_motion_useful.cos"], diag["useful_gate.saturated"]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

GROUPS = ("tde", "useful_gate", "noisy_gate")


def _group_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    groups: dict[str, list[nn.Parameter]] = {}
    tde = getattr(model, "tde", None)
    rdm = getattr(model, "rdm", None)
    if tde is not None:
        groups["tde"] = [p for p in tde.parameters() if p.requires_grad]
    for name in ("useful_gate", "noisy_gate"):
        gate = getattr(rdm, name, None) if rdm is not None else None
        if gate is not None:
            groups[name] = [p for p in gate.parameters() if p.requires_grad]
    return {k: v for k, v in groups.items() if v}


def _flat_gradient(loss: Tensor, parameters: list[nn.Parameter]) -> Tensor:
    if not loss.requires_grad:
        return torch.zeros(sum(p.numel() for p in parameters), device=parameters[0].device)
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float()
                      for g, p in zip(grads, parameters)])


def gate_statistics(gate: Tensor, prefix: str) -> dict[str, float]:
    """``gate`` ``[B, C, 1, 1]`` in (0, 1) -> saturation, mean and per-sample std."""
    values = gate.detach().float().flatten(1)
    saturated = ((values < 0.05) | (values > 0.95)).float().mean()
    per_sample_std = values.std(dim=0).mean() if values.shape[0] > 1 else values.new_zeros(())
    return {f"{prefix}.saturated": float(saturated), f"{prefix}.mean": float(values.mean()),
            f"{prefix}.per_sample_std": float(per_sample_std)}


def mi_diagnostics(step_module: nn.Module, inputs: Any, heatmaps: Tensor, target_weight: Tensor) -> dict[str, float]:
    """Per-term gradient norms and cosines on the TDE and the gates, plus gate statistics, for one batch.

    ``step_module`` is the trainer's ``TrainStep`` (model + losses); ``inputs`` what it takes (frames or cached
    stage features). Gradients are computed with ``torch.autograd.grad``: the parameters' ``.grad`` is untouched.
    """
    from tdmi.precision import autocast_for, autocast_off
    from tdmi.models.mi_loss import TERM_NAMES

    model, objective = step_module.model, step_module.mi_objective
    groups = _group_parameters(model)
    if objective is None or not groups:
        return {}
    device_type = heatmaps.device.type
    # The extra forward runs in train mode (the gradients must be the training step's), which would update the
    # BatchNorm running statistics a second time on this batch: keep them as they were.
    saved = {name: buffer.clone() for name, buffer in model.named_buffers()}
    with autocast_for(device_type, step_module.amp):
        output = model(inputs) if isinstance(inputs, Tensor) else model.decode(inputs)
    with autocast_off(device_type):
        output = output._replace(**{k: v.float() for k, v in output._asdict().items()
                                    if isinstance(v, Tensor) and v.is_floating_point()})
        heatmap_loss = step_module.heatmap_loss(output.heatmaps, heatmaps.float(), target_weight.float())
        terms = objective(output, heatmaps.float(), target_weight.float())
        weighted = objective.weighted_terms(terms, heatmaps.shape[-1] * heatmaps.shape[-2])
    # One backward pass per term over all groups' parameters together, then split by group.
    everything = [p for parameters in groups.values() for p in parameters]
    sizes = [sum(p.numel() for p in parameters) for parameters in groups.values()]
    reference = torch.split(_flat_gradient(heatmap_loss, everything), sizes)
    per_term = {name: torch.split(_flat_gradient(weighted[name], everything), sizes) for name in TERM_NAMES}
    result: dict[str, float] = {}
    for g, group in enumerate(groups):
        ref = reference[g]
        result[f"{group}.heatmap.norm"] = float(ref.norm())
        for name in TERM_NAMES:
            gradient = per_term[name][g]
            norm = float(gradient.norm())
            result[f"{group}.{name}.norm"] = norm
            denominator = norm * float(ref.norm())
            result[f"{group}.{name}.cos"] = float(gradient @ ref) / denominator if denominator > 0 else 0.0
    rdm = getattr(model, "rdm", None)
    if rdm is not None and getattr(rdm, "factorisation", None) == "gates" and output.motion is not None:
        useful, noisy = rdm.gates(output.motion.detach())
        result.update(gate_statistics(useful, "useful_gate"))
        result.update(gate_statistics(noisy, "noisy_gate"))
    del output, terms, weighted, heatmap_loss  # the graph holds the buffers: free it before restoring them
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(saved[name])
    return result
