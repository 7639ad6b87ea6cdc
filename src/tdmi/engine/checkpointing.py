"""Training checkpoints of ``tdmi train``: weights in safetensors plus a ``.state.pt`` with the optimizer, schedule,
grad scaler, RNG and data-order state, each written atomically; and resuming from them.

``<name>.safetensors`` (+ its JSON sidecar) holds the model's and the MI objective's weights, ``<name>.state.pt``
everything else a bit-identical CPU resume needs. The state file holds tensors and plain values only, so it loads
with ``torch.load(..., weights_only=True)`` (``tdmi.models.checkpoints.read_torch_file``).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tdmi.atomic import atomic_write
from tdmi.config import ExperimentConfig, to_dict
from tdmi.errors import CheckpointError

if TYPE_CHECKING:
    from tdmi.engine.train_step import TrainStep


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _python_rng_to_tensor(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # the state of this process's own device only: a resume may see a different number of GPUs
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _python_rng_to_tensor() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss if gauss is not None else float("nan")}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    gauss = None if math.isnan(p["gauss"]) else p["gauss"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # older states: one per visible GPU; take this device's (or the last)
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)] if len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def save_training_state(run_dir: Path, name: str, step_module: TrainStep, optimizer, scheduler, scaler,
                        cfg: ExperimentConfig, progress: dict[str, Any], snapshot: bool = True) -> None:
    """Write ``<name>.safetensors`` + sidecar and ``<name>.state.pt``, each atomically."""
    from tdmi.models.checkpoints import save_checkpoint

    weights = {k: v for k, v in step_module.model.state_dict().items()}
    if step_module.mi_objective is not None:
        weights.update({f"mi_objective.{k}": v for k, v in step_module.mi_objective.state_dict().items()})
    metadata = {"config": to_dict(cfg), "training": progress}
    save_checkpoint(run_dir / f"{name}.safetensors", weights, metadata)
    if snapshot:
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": rng_state(),
            "progress": progress,
        }
        atomic_write(run_dir / f"{name}.state.pt", lambda temp: torch.save(state, temp))


def _resume_paths(resume: str) -> tuple[Path, Path]:
    from tdmi.models.checkpoints import checkpoint_paths

    path = Path(resume)
    if path.is_dir():
        path = path / "last.safetensors"
    weights, _ = checkpoint_paths(path)
    state = weights.with_name(weights.name[: -len(".safetensors")] + ".state.pt")
    for p in (weights, state):
        if not p.is_file():
            raise CheckpointError(f"--resume: {p} not found (expected a run folder with last.safetensors, "
                                  "last.json and last.state.pt)")
    return weights, state


def load_training_state(resume: str, step_module: TrainStep, optimizer, scheduler, scaler) -> dict[str, Any]:
    from tdmi.models.checkpoints import load_checkpoint

    weights_path, state_path = _resume_paths(resume)
    from tdmi.models.checkpoints import read_torch_file

    weights, _ = load_checkpoint(weights_path)
    model_weights = {k: v for k, v in weights.items() if not k.startswith("mi_objective.")}
    mi_weights = {k[len("mi_objective."):]: v for k, v in weights.items() if k.startswith("mi_objective.")}
    try:
        step_module.model.load_state_dict(model_weights, strict=True)
        if step_module.mi_objective is not None:
            step_module.mi_objective.load_state_dict(mi_weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"--resume: {weights_path} does not fit the model of this config (resume with the "
                              f"run's own config.yaml): {str(err).splitlines()[0]}") from None
    state = read_torch_file(state_path)
    if isinstance(state.get("scheduler"), dict) and "milestones" in state["scheduler"]:
        raise CheckpointError(f"--resume: {state_path} was written by an older tdmi (epoch-wise MultiStepLR); this "
                              "version schedules the lr per optimizer step. Start a new run from its weights "
                              "(--set model.backbone.pretrained=... or load them into a fresh run)")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        return state["progress"]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"--resume: {state_path} is not a tdmi training state ({type(err).__name__}: "
                              f"{err})") from None
