"""Checkpoints: safe loading of foreign HRNet ``.pth`` files, and tdmi's own safetensors + JSON sidecar format.

Foreign HRNet weights (docs/facts/model-facts.md (b), "Recommended loader"). One loader reads every naming in use:

| source | file layout | key names |
| --- | --- | --- |
| official HRNet (leoxiaobin) | bare state_dict | ``conv1.weight`` ... ``final_layer.weight`` |
| training wrappers | ``{'state_dict': ...}`` and/or ``module.`` | ``module.conv1.weight`` |
| mmpose 0.x | ``{'meta', 'state_dict'}`` | ``backbone.<official>``, ``keypoint_head.final_layer.*`` |
| mmpose 1.x | ``{'meta', 'state_dict'}`` | ``backbone.<official>``, ``head.final_layer.*``, ``data_preprocessor.*`` |
| DCPose | ``{'state_dict'}``, ``module.`` | ``rough_pose_estimation_net.<official>`` plus DCPose's own modules |
| FAMI-Pose | ``{'state_dict'}``, ``module.`` | ``hrnet.<official>`` plus FAMI's own modules |
| ImageNet HRNet | bare | official backbone keys plus ``incre_modules``, ``final_layer.N.*``, ``classifier``... |

Every file is read with ``torch.load(weights_only=True)``: a pickle that needs arbitrary Python objects is refused,
never retried unsafely. Names are mapped by the explicit rules of :func:`hrnet_key`; a mapped key must match the
model's shape (a mismatch is an error naming the key and both shapes); absent ``num_batches_tracked`` buffers are
filled with 0; everything else is reported in a :class:`LoadReport`. Nothing is ever downloaded.

tdmi's own checkpoints (docs/architecture.md "Checkpoints"): ``<name>.safetensors`` holds the tensors and
``<name>.json``
(the sidecar) holds what is needed to use them: the config, joint set, input/heatmap size, normalisation, delta,
tdmi and format version, the weights' sha256, and free-form training info. Both are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

from tdmi.atomic import atomic_write  # noqa: F401  (re-exported: part of this module's API)
from tdmi.errors import CheckpointError

# ---------------------------------------------------------------------------------------------------------------------
# Foreign HRNet checkpoints

WHERE_OFFICIAL_WEIGHTS_COME_FROM = (
    "COCO-pretrained HRNet weights (pose_hrnet_w48_384x288.pth, pose_hrnet_w32_256x192.pth) are published in the "
    "model zoo of the official HRNet repository (github.com/leoxiaobin/deep-high-resolution-net.pytorch, README "
    "'Main Results' links) and by mmpose (hrnet_w48_coco_384x288-314c8528_20200708.pth); tdmi never downloads them"
)

WRAPPER_PREFIXES = ("backbone.", "rough_pose_estimation_net.", "hrnet.")
"""Prefixes under which a bigger model stores its HRNet: mmpose, DCPose, FAMI-Pose (docs/facts/model-facts.md (b))."""

HEAD_PREFIXES = ("keypoint_head.final_layer.", "head.final_layer.")
"""mmpose 0.x and 1.x names of the 1x1 heatmap conv, which is HRNet's ``final_layer``."""

DROPPED_PREFIXES = ("data_preprocessor.", "head.", "keypoint_head.", "incre_modules.", "downsamp_modules.",
                    "classifier.")
"""Parts that are never HRNet pose weights: mmpose's normaliser and other heads, ImageNet's classifier."""

_CLASSIFIER_FINAL_LAYER = re.compile(r"^final_layer\.\d+\.")
"""ImageNet HRNet's ``final_layer`` is a Sequential (1024->2048 conv + BN): ``final_layer.0.weight`` etc."""


@dataclass
class LoadReport:
    """What :func:`load_hrnet_weights` did.

    Attributes:
        path: the file read.
        loaded: model keys that received a tensor from the file.
        missing: model keys the file did not provide (left as initialised), e.g. ``final_layer.*`` from an
            ImageNet file. Filled ``num_batches_tracked`` buffers are not listed here.
        unexpected: file keys (as named in the file) that map to no model key and were ignored.
        filled_num_batches_tracked: BN counters absent from the file and set to 0.
        wrapper: the prefix the HRNet was found under ("" for a bare file).
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    filled_num_batches_tracked: int = 0
    wrapper: str = ""

    def summary(self) -> str:
        """One line for logs, e.g. ``loaded 1754 tensors from x.pth; 0 missing, 3 ignored``."""
        where = f" (under {self.wrapper!r})" if self.wrapper else ""
        text = (f"loaded {len(self.loaded)} tensors from {self.path}{where}; {len(self.missing)} missing, "
                f"{len(self.unexpected)} ignored")
        if self.filled_num_batches_tracked:
            text += f", {self.filled_num_batches_tracked} num_batches_tracked filled with 0"
        if self.missing:
            text += f"; missing: {_preview(self.missing)}"
        return text


def _preview(names: list[str], count: int = 3) -> str:
    more = f" (+{len(names) - count} more)" if len(names) > count else ""
    return ", ".join(names[:count]) + more


def hrnet_key(key: str, wrapper: str) -> str | None:
    """Map one file key (``module.`` already stripped) to an official HRNet key, or None to ignore it.

    With a ``wrapper`` prefix (e.g. ``backbone.``) only keys under it, and mmpose's head conv, belong to HRNet;
    the other modules of DCPose/FAMI/mmpose models are ignored.
    """
    for head in HEAD_PREFIXES:
        if key.startswith(head):
            key = "final_layer." + key[len(head):]
            return None if _CLASSIFIER_FINAL_LAYER.match(key) else key
    if wrapper:
        if not key.startswith(wrapper):
            return None
        key = key[len(wrapper):]
    if key.startswith(DROPPED_PREFIXES) or _CLASSIFIER_FINAL_LAYER.match(key):
        return None
    return key


def _detect_wrapper(keys: list[str]) -> str:
    """The prefix that holds the HRNet: the wrapper prefix carrying the stem conv, else "" (a bare file)."""
    for prefix in WRAPPER_PREFIXES:
        if prefix + "conv1.weight" in keys:
            return prefix
    for prefix in WRAPPER_PREFIXES:  # a partial file: still prefer a known wrapper that many keys use
        if sum(k.startswith(prefix) for k in keys) > len(keys) // 2:
            return prefix
    return ""


def _numpy_scalar_globals() -> list[Any]:
    """Plain-data numpy reconstructors (scalars, dtypes) that training metadata often contains; safe to allow."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [core.multiarray.scalar, np.dtype]
    for name in ("float16", "float32", "float64", "int32", "int64", "bool_"):
        allowed.append(type(np.dtype(getattr(np, name))))
    return allowed


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
          (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"))
_SUFFIX_KINDS = {".onnx": "an ONNX model", ".yaml": "a YAML file", ".yml": "a YAML file", ".json": "a JSON file",
                 ".mp4": "a video", ".avi": "a video", ".mov": "a video", ".mkv": "a video", ".txt": "a text file"}


def not_a_checkpoint(path: str | Path) -> Optional[str]:
    """What ``path`` is, when it is clearly not a checkpoint (a folder, an image, a video, an ONNX model, a config
    or other text); None when it may be one (a zip or pickle ``.pth``, a ``.safetensors`` file, or unknown)."""
    path = Path(path)
    if path.is_dir():
        return "a folder, not a checkpoint file (give the .safetensors or .pth file inside it)"
    if not path.is_file():
        return None
    with path.open("rb") as stream:
        head = stream.read(64)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip format, or a legacy pickle
        return None
    if path.suffix == ".safetensors":
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "an AVI video"
    if path.suffix.lower() in _SUFFIX_KINDS:
        return _SUFFIX_KINDS[path.suffix.lower()]
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return None


def read_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with tdmi's error messages."""
    path = Path(path)
    kind = not_a_checkpoint(path)
    if kind is not None:
        raise CheckpointError(f"{path}: {kind if kind.startswith('a folder') else kind + ', not a checkpoint'}; "
                              "a checkpoint is a tdmi .safetensors file (with its .json) or a PyTorch .pth")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found. {WHERE_OFFICIAL_WEIGHTS_COME_FROM}; "
                              "download one yourself and pass its path")
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    try:
        if safe_globals is not None:
            with safe_globals(_numpy_scalar_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to unpickle: {_refusal_reason(path, err)}. Such objects could run arbitrary code, so "
            "tdmi reads .pth files only with torch.load(weights_only=True) and never falls back to unsafe loading; "
            "ask whoever made the file for its plain state_dict (tensors only) or a .safetensors copy") from None
    except Exception as err:  # torch raises KeyError/RuntimeError/EOFError... for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None


def _refusal_reason(path: Path, err: Exception) -> str:
    """Name the Python objects that ``weights_only`` would not build (torch >= 2.5 can list them)."""
    unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    names: list[str] = []
    if unsafe is not None:
        try:
            names = list(unsafe(path))
        except Exception:  # the listing is a courtesy; the refusal stands either way
            names = []
    if names:
        return f"the file stores Python objects beyond tensors and plain containers ({', '.join(names)})"
    detail = re.search(r"WeightsUnpickler error: ([^\n]*)", str(err))
    return "the file is not a plain tensor pickle" + (f" ({detail.group(1).strip()})" if detail else "")


def _state_dict_from(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state_dict (expected a dict of tensors, optionally under "
                              f"'state_dict'; got {type(obj).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v
            for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}


def load_hrnet_weights(model: nn.Module, path: str | Path, *, include_final_layer: bool = True) -> LoadReport:
    """Load an HRNet pose checkpoint of any supported naming into ``model`` (an :class:`~tdmi.models.hrnet.HRNet`).

    For an HRNet inside a bigger model, pass the submodule: ``load_hrnet_weights(tdmi_model.backbone, path)``.

    Args:
        model: the HRNet; its ``state_dict()`` names are the official ones.
        path: a ``.pth`` file (see the module docstring for the accepted layouts), or one of our ``.safetensors``
            checkpoints whose model holds the HRNet under ``backbone.``.
        include_final_layer: False loads the backbone only (e.g. a model with other than the file's joints).

    Returns:
        A :class:`LoadReport`. Raises :class:`CheckpointError` for a missing or unsafe file, a tensor whose shape
        differs from the model's (naming the key and both shapes), or a file lacking backbone weights.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        # One of our own checkpoints (e.g. a trained single-frame baseline whose backbone initialises TDMI, the
        # paper's COCO-pretraining step at small scale): its HRNet lives under ``backbone.``.
        file_state = load_checkpoint(path)[0]
    else:
        file_state = _state_dict_from(read_torch_file(path), path)
    wrapper = _detect_wrapper(list(file_state))
    target = model.state_dict()
    report = LoadReport(path=str(path), wrapper=wrapper)

    mapped: dict[str, Tensor] = {}
    source_of: dict[str, str] = {}
    for file_key, tensor in file_state.items():
        key = hrnet_key(file_key, wrapper)
        if key is None or key not in target or (not include_final_layer and key.startswith("final_layer.")):
            report.unexpected.append(file_key)
            continue
        if key in mapped:
            raise CheckpointError(f"{path}: both {source_of[key]!r} and {file_key!r} map to HRNet key {key!r}")
        if tensor.shape != target[key].shape:
            hint = " (load with include_final_layer=False to take the backbone only)" \
                if key.startswith("final_layer.") else ""
            raise CheckpointError(f"{path}: {file_key!r} has shape {list(tensor.shape)} but the model's {key!r} "
                                  f"has shape {list(target[key].shape)}{hint}")
        mapped[key] = tensor
        source_of[key] = file_key

    for key in target:
        if key in mapped:
            continue
        if key.endswith("num_batches_tracked"):
            # Older files leave BN counters out; never rely on PyTorch's version-dependent fill.
            mapped[key] = torch.zeros_like(target[key])
            report.filled_num_batches_tracked += 1
        else:
            report.missing.append(key)

    missing_backbone = [k for k in report.missing if not k.startswith("final_layer.")]
    if missing_backbone:
        raise CheckpointError(
            f"{path}: not an HRNet-W{getattr(model, 'width', '?')} checkpoint: {len(missing_backbone)} backbone "
            f"weights are missing, e.g. {_preview(missing_backbone)} (file keys look like "
            f"{_preview(list(file_state))})")

    model.load_state_dict(mapped, strict=False)
    report.loaded = [k for k in target if k in source_of]
    return report


# ---------------------------------------------------------------------------------------------------------------------
# tdmi's own checkpoints

FORMAT_VERSION = 1
"""Version of the sidecar layout; :func:`load_checkpoint` refuses newer ones."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""RGB normalisation of every HRNet-family model (HRNet, DCPose, FAMI), recorded in each sidecar."""


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``x``, ``x.safetensors`` or ``x.json`` -> (``x.safetensors``, ``x.json``)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def checkpoint_metadata(config: dict[str, Any], *, joint_set: str, input_size: list[int], heatmap_size: list[int],
                        delta: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                        training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sidecar fields a tdmi checkpoint carries (``save_checkpoint`` adds versions and the weights' hash).

    Args:
        config: the resolved experiment config as a dict (``tdmi.config.to_dict(cfg)``).
        joint_set: name of the joint order of the heatmap channels (``tdmi.keypoints.JOINT_SETS``).
        input_size, heatmap_size: ``[w, h]`` as in the config.
        delta: supporting frames on each side of the key frame.
        training: free-form training info (epoch, step, metrics, data used).
    """
    return {"config": config, "joint_set": joint_set, "input_size": list(input_size),
            "heatmap_size": list(heatmap_size), "mean": list(mean), "std": list(std), "delta": delta,
            "training": dict(training or {})}


def _storage_tensors(state: dict[str, Tensor]) -> Iterator[tuple[str, Tensor]]:
    """Tensors safetensors accepts: on CPU, contiguous, each owning its whole storage (no sharing, no views)."""
    seen: set[int] = set()
    for name, tensor in state.items():
        if not isinstance(tensor, Tensor):
            raise CheckpointError(f"state entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage()
        shared = storage.data_ptr() in seen or storage.nbytes() != tensor.numel() * tensor.element_size()
        if shared or not tensor.is_contiguous():
            # Tied weights or views: copy, so every entry is stored (and reloaded) independently.
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(tensor.untyped_storage().data_ptr())
        yield name, tensor


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model_state: dict[str, Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``<name>.safetensors`` and its sidecar ``<name>.json``, each atomically; returns the weights' path.

    ``path`` may be given with or without the ``.safetensors`` suffix. ``metadata`` must be JSON-serialisable
    (see :func:`checkpoint_metadata`); ``format_version``, ``tdmi_version``, ``weights_file`` and ``weights_sha256``
    are added. The weights are written first, so a crash leaves at worst new weights beside an old sidecar, which
    :func:`load_checkpoint` then detects through the hash.
    """
    from safetensors.torch import save_file

    from tdmi import __version__

    weights_path, sidecar_path = checkpoint_paths(path)
    sidecar = dict(metadata)
    sidecar.update(format_version=FORMAT_VERSION, tdmi_version=__version__, weights_file=weights_path.name)
    try:
        json.dumps(sidecar)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{sidecar_path}: metadata is not JSON-serialisable: {err}") from None

    tensors = dict(_storage_tensors(model_state))
    atomic_write(weights_path, lambda temp: save_file(
        tensors, str(temp), metadata={"format": "pt", "tdmi_format_version": str(FORMAT_VERSION)}))
    sidecar["weights_sha256"] = file_sha256(weights_path)
    text = json.dumps(sidecar, indent=2) + "\n"
    atomic_write(sidecar_path, lambda temp: temp.write_text(text))
    return weights_path


def load_checkpoint(path: str | Path, *, verify: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a tdmi checkpoint written by :func:`save_checkpoint`: returns ``(state_dict, metadata)``.

    ``verify`` checks the weights against the sidecar's sha256, so a sidecar never describes other weights.
    Raises :class:`CheckpointError` naming the file for a missing weights file or sidecar, a corrupt file, a
    newer format, or a hash mismatch.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    kind = not_a_checkpoint(path)
    if kind is not None and Path(path).suffix != ".json":  # x.json names x.safetensors' sidecar
        raise CheckpointError(f"{path}: {kind if kind.startswith('a folder') else kind + ', not a checkpoint'}; "
                              "a tdmi checkpoint is a .safetensors file with its .json sidecar")
    weights_path, sidecar_path = checkpoint_paths(path)
    if not weights_path.is_file():
        if Path(path).is_file():
            raise CheckpointError(f"{path}: not a tdmi checkpoint (those are .safetensors + .json); a foreign HRNet "
                                  f"file loads with tdmi.models.foreign_hrnet.load_foreign_hrnet, and the tdmi "
                                  f"commands take it as --checkpoint directly")
        raise CheckpointError(f"{weights_path}: checkpoint weights not found")
    if not sidecar_path.is_file():
        raise CheckpointError(f"{sidecar_path}: sidecar missing; a tdmi checkpoint is {weights_path.name} plus "
                              f"{sidecar_path.name} (config, joint set, input size, normalisation)")
    try:
        metadata = json.loads(sidecar_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{sidecar_path}: sidecar is not valid JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{sidecar_path}: sidecar must hold a JSON object, got {type(metadata).__name__}")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{sidecar_path}: format_version {version!r} is not supported (this tdmi reads "
                              f"<= {FORMAT_VERSION}); upgrade tdmi")
    if verify and "weights_sha256" in metadata and file_sha256(weights_path) != metadata["weights_sha256"]:
        raise CheckpointError(f"{sidecar_path}: weights_sha256 does not match {weights_path.name}: the sidecar "
                              "describes other weights (interrupted save or files mixed up)")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({err})") from None
    return state, metadata


def layout_hint(state: dict[str, Tensor], expected: dict[str, Tensor]) -> str:
    """A sentence naming the config field behind a shape mismatch between a checkpoint's weights and a model ("" if
    none is known): the stage-1 feature (``layer1``'s 256 channels before 2026-12-06, the transition's C now) and the
    RDM gates' hidden width."""
    def differs(prefix: str) -> bool:
        return any(k.startswith(prefix) and k in state and tuple(state[k].shape) != tuple(v.shape)
                   for k, v in expected.items())

    hints = []
    if differs("tde.intra_stage.0."):
        hints.append("the stage-1 feature differs: set model.tde.stage1_feature=layer1 (checkpoints saved before "
                     "that field existed) or =transition")
    if differs("rdm."):
        hints.append("the RDM gates' width differs: set model.rdm.hidden, or model.rdm.reduction for older "
                     "checkpoints")
    return f" ({'; '.join(hints)})" if hints else ""

