"""One training step's module: the model and its losses, so one DDP wrapper synchronises every trainable parameter.

Its own file so that the trainer (``engine/train.py``), the checkpointer (``engine/checkpointing.py``), the MI
diagnostics and the GPU scripts can all name it without importing the training loop.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from tdmi.config import ExperimentConfig
from tdmi.precision import autocast_for, autocast_off


class TrainStep(nn.Module):
    """Model + losses in one module, so one DDP wrapper synchronises every trainable parameter (the MI objective's
    auxiliary head included).

    ``forward(frames [B, T, 3, H, W], heatmaps [B, J, h, w], target_weight [B, J]) -> dict`` of scalar terms,
    ``loss`` being the total to minimise.
    """

    def __init__(self, model: nn.Module, heatmap_loss: nn.Module, mi_objective: Optional[nn.Module],
                 amp: str = "none"):
        super().__init__()
        self.model = model
        self.heatmap_loss = heatmap_loss
        self.mi_objective = mi_objective
        self.amp = amp

    def forward(self, inputs, heatmaps: Tensor, target_weight: Tensor) -> dict[str, Tensor]:
        """``inputs``: clip frames ``[B, T, 3, H, W]``, or cached stage features (a ``StageFeatures`` of
        ``[B, T, C_j, h, w]``, ``engine/feature_cache.py``) that go straight to ``model.decode``."""
        device_type = heatmaps.device.type
        with autocast_for(device_type, self.amp):
            output = self.model(inputs) if isinstance(inputs, Tensor) else self.model.decode(inputs)
        # Losses and the MI objective's heads in float32 with autocast off: inside autocast even an explicit
        # F.conv2d(x.float(), w.float()) comes back in bf16, and the MI terms' temperature (0.05) multiplies
        # that rounding by 20.
        with autocast_off(device_type):
            output = output._replace(**{k: v.float() for k, v in output._asdict().items()
                                        if isinstance(v, Tensor) and v.is_floating_point()})
            return self._losses(output, heatmaps.float(), target_weight.float())

    def _losses(self, output, heatmaps: Tensor, target_weight: Tensor) -> dict[str, Tensor]:
        terms = {"heatmap": self.heatmap_loss(output.heatmaps, heatmaps, target_weight)}
        loss = terms["heatmap"]
        if self.mi_objective is not None:
            mi_terms = self.mi_objective(output, heatmaps, target_weight)
            for name, value in mi_terms.items():
                if name != "total":
                    terms[name] = value
            terms["mi_total"] = mi_terms["total"]
            loss = loss + mi_terms["total"]
        terms["loss"] = loss
        return terms


def build_train_step(cfg: ExperimentConfig) -> TrainStep:
    from tdmi.models.mi_loss import JointsMSELoss, MIObjective
    from tdmi.models.tdmi import build_model

    model = build_model(cfg.model)
    if cfg.model.backbone.pretrained:
        from tdmi.models.checkpoints import load_hrnet_weights

        report = load_hrnet_weights(model.backbone, cfg.model.backbone.pretrained)
        print(f"backbone: {report}")
    mi_objective = None
    if cfg.model.arch in ("tdmi", "tdmi_st") and cfg.model.mi.enabled:
        mi_objective = MIObjective.from_config(cfg.model, label_probe=model.backbone.final_layer)
    elif cfg.model.arch == "fami_pose" and cfg.model.mi.enabled:  # DCPose: the heatmap loss only, as its code
        from tdmi.models.rivals.fami_pose import FAMIObjective

        mi_objective = FAMIObjective(label_probe=model.backbone.final_layer, temperature=cfg.model.mi.temperature)
    step = TrainStep(model, JointsMSELoss(factor=cfg.train.heatmap_loss_factor), mi_objective,
                     amp=cfg.train.amp)
    if cfg.train.channels_last:
        step.to(memory_format=torch.channels_last)
    return step
