"""The model ``tdmi infer``, ``demo`` and ``export`` run: a tdmi checkpoint, a foreign HRNet file, the shipped demo
model, or (with a loud banner) random weights."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

import torch

from tdmi.config import ExperimentConfig, config_from_dict, flatten_dict, load_config, to_dict
from tdmi.errors import CheckpointError, CommandError

DEMO_CHECKPOINT = "tdmi_demo.safetensors"
"""File name of the shipped demo model in ``tdmi/weights`` (trained on SynthTrack; absent in a bare checkout)."""

FALLBACK_MODEL_OVERRIDES = (
    "model.input_size=[96, 128]", "model.heatmap_size=[24, 32]", "model.backbone.width=8",
    "model.tde.channels=16", "model.tde.deform_groups=4",
)
"""The small model (``configs/tdmi_w8_synth_128x96.yaml``'s) built with random weights when no checkpoint exists;
written as overrides because ``configs/`` is not part of an installed package."""




# ----------------------------------------------------------------------------------------------------------- model


class LoadedModel(NamedTuple):
    """A model ready for inference and what the user must be told about it."""

    model: torch.nn.Module
    config: ExperimentConfig
    description: str
    random_init: bool
    checkpoint: Optional[Path]
    notes: tuple[str, ...] | list[str] = ()
    """One-line facts the user should see (e.g. what a foreign checkpoint's joint slots mean)."""


def resolve_device(name: Optional[str]) -> torch.device:
    """``None`` -> cuda when available, else cpu; ``cuda`` without a GPU is a :class:`CommandError`."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: this torch has no usable CUDA device; use --device cpu")
    return device


def shipped_checkpoint() -> Optional[Path]:
    """The demo checkpoint inside the installed package (``tdmi/weights/tdmi_demo.safetensors``), if present."""
    try:
        path = Path(str(resources.files("tdmi") / "weights" / DEMO_CHECKPOINT))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


SHIPPED_MODEL_NOTE = ("note: the shipped demo model was trained on SynthTrack only (synthetic people); on real "
                      "video its poses are not meaningful (Mean AP 1.7 on the real PoseTrack18 sample). For real "
                      "poses pass --checkpoint with a TDMI trained on real data (tdmi train, README).")
"""Printed by `tdmi infer` when it runs the shipped demo model."""

RANDOM_INIT_BANNER = "\n".join([
    "!" * 100,
    "!!  WARNING: NO TRAINED CHECKPOINT. The model has RANDOMLY INITIALISED weights, so every pose below is",
    "!!  MEANINGLESS (the pipeline, files and speed are real). Pass --checkpoint FILE with trained weights",
    f"!!  (or install a tdmi that ships tdmi/weights/{DEMO_CHECKPOINT}).",
    "!" * 100,
])


def load_inference_model(checkpoint: Optional[str], config_path: Optional[str] = None,
                         overrides: Iterable[str] = (), device: torch.device | str = "cpu",
                         random_init: bool = False) -> LoadedModel:
    """Build the model for inference, in eval mode on ``device``.

    Order: ``checkpoint`` (its sidecar's config, or ``config_path`` when given; a foreign HRNet ``.pth`` becomes the
    single-frame HRNet, :mod:`tdmi.models.foreign_hrnet`); else the shipped demo checkpoint;
    else a randomly initialised model from ``config_path`` or, without one, the small W8 128x96 model
    (:data:`FALLBACK_MODEL_OVERRIDES`), with ``random_init`` set so that callers print :data:`RANDOM_INIT_BANNER`.

    ``random_init`` skips the shipped checkpoint: the random model of ``config_path`` (speed benchmarks).

    Raises:
        CheckpointError: missing or unreadable files, or weights that do not fit the config's model.
    """
    from tdmi.models.checkpoints import layout_hint, load_checkpoint
    from tdmi.models.foreign_hrnet import is_foreign_checkpoint, load_foreign_hrnet
    from tdmi.models.tdmi import build_model

    if random_init and checkpoint:
        raise ValueError("random_init builds a model without weights; it cannot be combined with a checkpoint")
    path = Path(checkpoint) if checkpoint else (None if random_init else shipped_checkpoint())
    if path is None:
        cfg = load_config(config_path, list(overrides) if config_path else [*FALLBACK_MODEL_OVERRIDES, *overrides])
        torch.manual_seed(0)  # the same random model every run, so outputs are reproducible
        model = build_model(cfg.model)
        description = (f"{cfg.model.arch} HRNet-W{cfg.model.backbone.width} {cfg.model.input_size[0]}x"
                       f"{cfg.model.input_size[1]} delta={cfg.model.delta}, RANDOM weights (no checkpoint)")
        return LoadedModel(model.to(device).eval(), cfg, description, True, None)
    if is_foreign_checkpoint(path):  # an official/mmpose/DCPose HRNet file: the single-frame HRNet it holds
        foreign = load_foreign_hrnet(path, config_path, overrides, device)
        return LoadedModel(foreign.model, foreign.cfg, foreign.description, False, path, foreign.notes)
    state, metadata = load_checkpoint(path)
    if config_path:
        cfg = load_config(config_path, list(overrides))
    else:
        raw = metadata.get("config")
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: the sidecar holds no 'config'; pass --config with the model's config")
        cfg = config_from_dict(raw, where=f"{path} sidecar")
        if overrides:
            cfg = load_config(None, [*_as_overrides(cfg), *overrides])
    model = build_model(cfg.model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]}{shapes})" for keys, what, shapes in (
            (missing, "missing", ""), (unexpected, "unexpected", ""),
            (wrong, "with another shape", f": file {tuple(state[wrong[0]].shape)}, model "
                                          f"{tuple(expected[wrong[0]].shape)}" if wrong else "")) if keys]
        raise CheckpointError(f"{path}: weights do not fit the config's model ({cfg.model.arch}, width "
                              f"{cfg.model.backbone.width}): {'; '.join(parts)}{layout_hint(state, expected)}")
    model.load_state_dict(state)
    description = (f"{cfg.model.arch} HRNet-W{cfg.model.backbone.width} {cfg.model.input_size[0]}x"
                   f"{cfg.model.input_size[1]} delta={cfg.model.delta} from {path.name}")
    return LoadedModel(model.to(device).eval(), cfg, description, False, path)


def _as_overrides(cfg: ExperimentConfig) -> list[str]:
    """A resolved config as ``a.b=value`` overrides (values as JSON, which YAML parses back)."""
    import json

    return [f"{key}={json.dumps(value)}" for key, value in flatten_dict(to_dict(cfg)).items()]
