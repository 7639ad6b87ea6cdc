"""The model ``tdmi test`` tests: a checkpoint's weights in the model its config describes, on a checked device.

Checkpoints (docs/architecture.md "Checkpoints"): a tdmi checkpoint's sidecar carries the training config, so ``tdmi
test`` needs no ``--config``; a given config must describe the same model (the architecture keys of ``model``),
otherwise the error names the keys that differ. Keys under ``mi_objective.`` belong to the training objective, not the
model. Foreign HRNet files (official, mmpose, DCPose) go to :mod:`tdmi.models.foreign_hrnet`.

Re-exported by :mod:`tdmi.engine.test` (``from tdmi.engine.test import load_model_for_test`` keeps working).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import torch
from torch import nn

from tdmi.config import (ConfigError, ExperimentConfig, apply_override, config_from_dict, flatten_dict, to_dict,
                         with_legacy_defaults)
from tdmi.errors import CheckpointError, CommandError
from tdmi.models.checkpoints import layout_hint, load_checkpoint

MI_OBJECTIVE_PREFIX = "mi_objective."
"""State-dict keys of the MI objective's own modules in training checkpoints; not part of the model."""

TRAINING_ONLY_MODEL_KEYS: tuple[str, ...] = ("backbone.pretrained", "backbone.freeze", "backbone.bn_eval", "mi.",
                                             "rdm.init_std", "rdm.init")
"""``model`` config keys (and prefixes) that change training but not the weights' layout or the predictions, so a
``--config`` may differ from the checkpoint there: where the initial weights came from, which weights train, how
they were initialised, and the MI objective's settings."""

SINGLE_FRAME_UNUSED_KEYS: tuple[str, ...] = ("tde.", "rdm.", "fusion_blocks", "st_blocks")
"""``model`` keys of the temporal modules, which the single-frame model (``arch: hrnet``) does not build."""


def select_device(name: Optional[str] = None) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``; ``cpu``/``cuda``/``cuda:N`` are checked, not assumed."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CommandError(f"--device {name!r}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def model_config_differences(given: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """``model`` keys whose values differ (``key: given vs stored``), ignoring :data:`TRAINING_ONLY_MODEL_KEYS`."""
    from tdmi.config import ModelConfig

    # A key that a checkpoint from an older tdmi does not store had the value of LEGACY_DEFAULTS then, or else
    # today's default.
    a, b = flatten_dict(dict(given)), flatten_dict(with_legacy_defaults({"model": dict(stored)})["model"])
    defaults = flatten_dict(to_dict(ModelConfig()))
    ignored = TRAINING_ONLY_MODEL_KEYS
    if a.get("arch", defaults["arch"]) == b.get("arch", defaults["arch"]) == "hrnet":
        ignored = ignored + SINGLE_FRAME_UNUSED_KEYS  # the single-frame model builds none of these modules
    differing = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in ignored):
            continue
        mine, theirs = a.get(key, defaults.get(key, "<absent>")), b.get(key, defaults.get(key, "<absent>"))
        if mine != theirs:
            differing.append(f"model.{key}: {mine!r} vs checkpoint {theirs!r}")
    return differing


class LoadedModel(NamedTuple):
    """A model ready for testing, the config it was built from, and the checkpoint's sidecar."""

    model: nn.Module
    cfg: ExperimentConfig
    metadata: dict[str, Any]


def load_model_for_test(checkpoint: str | Path, cfg: Optional[ExperimentConfig] = None,
                        device: str | torch.device | None = None,
                        overrides: tuple[str, ...] | list[str] = ()) -> LoadedModel:
    """Build the checkpoint's model and load its weights strictly (``mi_objective.*`` keys are skipped).

    Args:
        checkpoint: a tdmi ``.safetensors`` checkpoint with its JSON sidecar, or a foreign HRNet ``.pth``
            (:mod:`tdmi.models.foreign_hrnet`; then ``cfg`` must be None).
        cfg: the experiment config to test with; None = the sidecar's training config (with ``overrides``
            applied, e.g. ``data.root=...``). A given config must describe the same model: differing ``model`` keys
            (other than :data:`TRAINING_ONLY_MODEL_KEYS`) are a :class:`~tdmi.errors.CheckpointError` naming them.
        device: where to put the model (default: cuda when available).
        overrides: ``key=value`` overrides for the sidecar's config (ignored when ``cfg`` is given).

    Returns:
        :class:`LoadedModel` (``model, cfg, metadata = load_model_for_test(...)`` also works); the model is in eval
        mode on ``device``.
    """
    from tdmi.models.foreign_hrnet import is_foreign_checkpoint, load_foreign_hrnet
    from tdmi.models.tdmi import build_model

    if is_foreign_checkpoint(checkpoint):
        if cfg is not None:
            raise CheckpointError(f"{checkpoint}: a foreign HRNet file takes its model from the weights; pass the "
                                  f"config as a path to tdmi.models.foreign_hrnet.load_foreign_hrnet instead")
        device = device if isinstance(device, torch.device) else select_device(device)
        foreign = load_foreign_hrnet(checkpoint, None, overrides, device)
        return LoadedModel(foreign.model, foreign.cfg, foreign.metadata)
    state, metadata = load_checkpoint(checkpoint)
    stored = metadata.get("config")
    if not isinstance(stored, dict) or not isinstance(stored.get("model"), dict):
        raise CheckpointError(f"{checkpoint}: the sidecar has no training config ('config' with a 'model' section); "
                              f"it was not written by tdmi's trainer")
    if cfg is None:
        raw = copy.deepcopy(stored)  # overrides must not edit the returned metadata
        for item in overrides:
            apply_override(raw, item)
        try:
            cfg = config_from_dict(raw, where=f"{checkpoint} (sidecar config)")
        except ConfigError as err:
            raise CheckpointError(f"{err}; pass --config with a config this tdmi version reads") from None
    else:
        differing = model_config_differences(to_dict(cfg.model), stored["model"])
        if differing:
            raise CheckpointError(f"{checkpoint}: --config describes a different model than the checkpoint: "
                                  f"{'; '.join(differing)}. Drop --config to use the checkpoint's own, "
                                  f"or fix these keys")
    model = build_model(cfg.model)
    model_state = {k: v for k, v in state.items() if not k.startswith(MI_OBJECTIVE_PREFIX)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(model_state))
    unexpected = sorted(set(model_state) - set(expected))
    mismatched = [f"{k} {list(model_state[k].shape)} vs model {list(expected[k].shape)}"
                  for k in sorted(set(expected) & set(model_state)) if model_state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(names)}): {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)) if names]
        raise CheckpointError(f"{checkpoint}: weights do not fit the {cfg.model.arch} model of the config: "
                              f"{'; '.join(parts)}{layout_hint(model_state, expected)}")
    model.load_state_dict(model_state, strict=True)
    device = device if isinstance(device, torch.device) else select_device(device)
    return LoadedModel(model.eval().to(device), cfg, metadata)
