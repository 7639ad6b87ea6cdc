"""Typed experiment configs: dataclasses with documented defaults, loaded from YAML, overridable from the CLI.

One YAML file per experiment lives in ``configs/``. A file only states what differs from the defaults below,
so the defaults are the paper's TDMI on PoseTrack17 (W48, 384x288, delta=2; ``model-facts.md`` (e)). Every
field says where its value comes from; "ours" marks a choice the paper leaves open.

    cfg = load_config("configs/tdmi_w48_pt17.yaml", overrides=["train.lr=5e-4", "model.tde.modulation=false"])
    print(dump_config(cfg))     # the fully resolved config, as YAML

Unknown keys, wrong types and values outside a closed set are errors that name the key, the value and the
choices. Sizes are written ``[w, h]`` (as HRNet's yaml files do); tensors are ``[..., h, w]``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from tdmi.errors import TdmiError


class ConfigError(TdmiError, ValueError):
    """A config file or override is invalid; the message names the key and the problem."""


# --------------------------------------------------------------------------------------------------------------
# Model


@dataclass
class BackboneConfig:
    width: int = 48
    """HRNet width C (branches C, 2C, 4C, 8C). 48 = the paper's HRNet-W48; 32 and 18 are official too; any
    positive width builds (tiny widths for tests)."""
    pretrained: Optional[str] = None
    """Path to a COCO-pretrained HRNet checkpoint (official ``pose_hrnet_w48_384x288.pth``, mmpose, DCPose or
    FAMI files all load). None = random init. Nothing is ever downloaded."""
    freeze: bool = True
    """Freeze the backbone's weights (DCPose/FAMI do; the paper trains only the new modules)."""
    bn_eval: bool = True
    """Keep the frozen backbone's BatchNorm in eval mode (running statistics are used and not updated).
    DCPose/FAMI only set requires_grad=False, which leaves BN in train mode; set false to copy that."""


@dataclass
class TDEConfig:
    """Temporal Difference Encoder (paper section 3.2, eq. 1-5)."""

    channels: int = 48
    """Width of D^j, the modulated features, M, Mu, Mn and F~ (ours: FAMI's 48; model-facts.md (e))."""
    blocks_per_stage: list[int] = field(default_factory=lambda: [3, 3, 2, 2])
    """Residual blocks fusing the differences inside each stage (paper: {3, 3, 2, 2})."""
    differences: Literal["all_stages", "final_stage"] = "all_stages"
    """Which stages' feature differences are used. ``final_stage`` = table 6's "S^4 only" ablation."""
    aggregation: Literal["progressive", "concat"] = "progressive"
    """How stages are combined into M: the paper's progressive accumulation (eq. 5) or table 6's
    "multi-stage concat + conv" ablation."""
    modulation: bool = True
    """Spatial modulation of each stage with DCNv2 (eq. 3-4). False = table 6's "progressive" row."""
    deform_groups: int = 12
    """Offset groups of the DCN (ours: FAMI's 12; channels must be divisible by it)."""
    deform_dilation: int = 3
    """Dilation of the 3x3 DCN and of the offset/mask predictors (ours: FAMI's 3)."""
    accumulation_blocks: int = 1
    """Residual blocks after each accumulation step ("several 3x3 convolutions", eq. 5; ours: 1)."""


@dataclass
class RDMConfig:
    """Representation Disentanglement Module (paper section 3.3, eq. 6)."""

    enabled: bool = True
    """False = table 5's "TDE only": the motion feature M is fused directly, with no useful/noisy split."""
    factorisation: Literal["gates", "channel_split"] = "gates"
    """``gates``: two independent GAP-MLP-sigmoid channel attentions (the paper). ``channel_split``: table 7's
    alternative that takes the first half of M's channels as useful and the rest as noisy."""
    reduction: int = 4
    """MLP reduction ratio r (C -> C/r -> C). Ours: 4, since SE's 16 leaves 3 hidden units at C=48."""
    init_std: float = 0.001
    """Std of the gates' initial MLP weights (HRNet's 0.001 makes both gates start at exactly 0.5, where any
    symmetric overlap term has zero gradient; the ``balanced`` MI formulation wants ~0.1 to break the tie)."""


@dataclass
class MIConfig:
    """Mutual-information objective (paper section 3.4, eq. 7-13; model-facts.md (d))."""

    enabled: bool = True
    """False = table 7's "RDM without MI" row (heatmap loss only)."""
    alpha: float = 1.0
    """Weight of L_MI in L = L_H + alpha * L_MI (paper: 1)."""
    formulation: Literal["vsd", "balanced", "fami"] = "vsd"
    """``vsd``: the bounded Variational Self-Distillation terms of model-facts.md (default). ``balanced``: the
    same terms with the defects measured in the SynthTrack proof corrected (temperature-scaled gradients, accuracy
    gates, a feature-space overlap; ``models/mi_loss.py``). ``fami``: the
    literal FAMI-Pose estimators (probabilities passed to kl_div; kept for comparison only)."""
    temperature: float = 0.05
    """Softmax temperature over heatmap pixels (FAMI's 0.05)."""
    epsilon: float = 1e-4
    """Floor mixed into student distributions so every KL is at most log(N / epsilon)."""
    gate_distillation: bool = True
    """Distil the conditional terms only where the teacher beats the fused prediction (model-facts.md (d));
    false = the paper-literal VSD use on every joint."""
    motion_head_kernel: int = 1
    """Kernel of the auxiliary motion head h_m that estimates p(y | M) for the VSD terms (1 or 3; ours: 1)."""


@dataclass
class ModelConfig:
    arch: Literal["tdmi", "tdmi_st", "hrnet"] = "tdmi"
    """``tdmi``: fuse Mu with the key frame's stage-4 feature. ``tdmi_st``: fuse with a spatio-temporal feature
    of the whole clip (TDMI-ST). ``hrnet``: the single-frame baseline (key frame only)."""
    num_joints: int = 17
    """Heatmap channels, in PoseTrack's 17-slot order (keypoints.POSETRACK17)."""
    input_size: list[int] = field(default_factory=lambda: [288, 384])
    """Network input [w, h] (the W48 COCO checkpoint's 288x384)."""
    heatmap_size: list[int] = field(default_factory=lambda: [72, 96])
    """Heatmap [w, h]; input / 4."""
    delta: int = 2
    """Supporting frames on each side of the key frame; a clip has T = 2*delta + 1 frames (paper: 2)."""
    fusion_blocks: int = 3
    """Residual blocks fusing [Mu, key-frame feature] into F~ (ours: FAMI's 3)."""
    st_blocks: int = 2
    """TDMI-ST only: residual blocks reducing the concatenated stage-4 features of all T frames (ours: 2)."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    tde: TDEConfig = field(default_factory=TDEConfig)
    rdm: RDMConfig = field(default_factory=RDMConfig)
    mi: MIConfig = field(default_factory=MIConfig)

    @property
    def num_frames(self) -> int:
        return 2 * self.delta + 1


# --------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class AugmentConfig:
    """Training augmentation with the reference distributions (posetrack-facts.md 5.3)."""

    enabled: bool = True
    scale_factor: float = 0.35
    """scale *= clip(N(0,1) * sf + 1, 1 - sf, 1 + sf)."""
    rotation_factor: float = 45.0
    """rotation = clip(N(0,1) * rf, -2 rf, 2 rf) degrees, applied with probability ``rotation_prob``."""
    rotation_prob: float = 0.6
    flip: bool = True
    """Horizontal flip with probability 0.5, applied to every frame of the clip, joints swapped."""
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    """Half-body is tried only when more than this many joints are labelled."""


@dataclass
class DataConfig:
    dataset: Literal["posetrack17", "posetrack18", "posetrack21", "hieve", "synthtrack"] = "posetrack17"
    root: str = "data/posetrack17"
    """Dataset root. Annotation and image paths below are relative to it unless absolute."""
    train_annotations: str = "annotations/train"
    """A folder of per-sequence JSON files or one merged COCO-style file."""
    val_annotations: str = "annotations/val"
    image_root: str = "."
    """Folder that the annotation files' ``file_name`` entries are relative to."""
    val_boxes: str = "gt"
    """``gt`` or a person-detection file (COCO results or DCPose/PoseWarper box list) for validation/test."""
    box_score_threshold: float = 0.2
    """Detections below this score are dropped (DCPose/FAMI IMAGE_THRE 0.2)."""
    padding: Literal["key_frame", "fami", "clamp"] = "key_frame"
    """Which frame replaces a supporting frame beyond the sequence ends: the key frame (ours; FAMI's training
    rule in spirit), FAMI's exact asymmetric rule, or mmpose's clamp to the nearest valid frame."""
    missing_frames: Literal["error", "pad"] = "error"
    """A supporting frame file that does not exist: raise (default) or treat it like a sequence end."""
    sigma: float = 3.0
    """Gaussian sigma of the target heatmaps (3 at 96x72, 2 at 64x48)."""
    bbox_enlarge: float = 1.25
    """Box enlargement before cropping (paper: 25%)."""
    joint_weights: bool = False
    """Multiply the target weights by DCPose's per-joint weights (elbows/knees 1.2, wrists/ankles 1.5;
    ``USE_DIFFERENT_JOINTS_WEIGHT``, off in DCPose/FAMI; posetrack-facts.md 1.1)."""
    workers: Optional[int] = None
    """DataLoader worker processes. None (default): the cores each training process may use (the node's cores
    shared among torchrun's local processes) less one, at most 16; 4 workers give about 80 clips/s, less than a
    bf16 W48 step on a modern GPU takes (issue 13)."""
    uint8_frames: Optional[bool] = None
    """Load crops as uint8 and normalise them on the device (a quarter of the bytes through the loader and the
    host-to-GPU copy; the same values to the bit). None (default): on for CUDA runs, off on the CPU."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# --------------------------------------------------------------------------------------------------------------
# Training and testing


@dataclass
class TrainConfig:
    epochs: int = 20
    """Paper: 20 epochs."""
    lr: float = 1e-3
    """Adam learning rate (paper: 1e-3)."""
    lr_steps: list[int] = field(default_factory=lambda: [6, 12, 18])
    """Epochs after which lr is multiplied by ``lr_factor`` (paper: 1e-4, 1e-5, 1e-6 at 6, 12, 18)."""
    lr_factor: float = 0.1
    schedule: Literal["step", "cosine"] = "step"
    """``step``: the paper's schedule (x ``lr_factor`` after each epoch in ``lr_steps``). ``cosine``: linear warmup
    over ``warmup_epochs``, then a cosine from ``lr`` down to ``lr * min_lr_factor`` at the end of ``epochs``
    (ours, for training from scratch, where the step schedule converges slowly). Both are applied per optimizer
    step."""
    warmup_epochs: float = 0.0
    """Linear warmup from ~0 to ``lr`` over this many epochs (any schedule; 0 = none)."""
    min_lr_factor: float = 0.0
    """``cosine`` only: the final lr as a fraction of ``lr``."""
    weight_decay: float = 0.0
    """Adam weight decay (HRNet and FAMI use none)."""
    batch_size: int = 16
    """Clips per process (per GPU under torchrun). Not given in the paper; FAMI used 48 on one GPU."""
    grad_accum: int = 1
    """Optimizer step every this many batches."""
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Autocast dtype for the model's forward; fp16 uses a gradient scaler. Losses and the MI objective's heads
    always run in float32 outside autocast."""
    channels_last: bool = False
    """Channels-last memory format for the model and its inputs (faster convolutions with oneDNN on CPU and with
    cuDNN on GPU; measure with benchmarks/train_speed.py)."""
    compile: bool = False
    """``torch.compile`` the training step (model and losses; the DCN takes a traceable path there, no graph
    breaks). The first steps pay the compilation (``benchmarks/compile_speed.py`` measures both)."""
    heatmap_loss_factor: float = 1.0
    """Factor on the joint-weighted MSE: 1.0 as DCPose/FAMI (HRNet uses 0.5). It sets alpha's scale."""
    seed: int = 0
    deterministic: bool = False
    val_every: int = 1
    """Validate (the `tdmi test` path) every this many epochs; 0 = never."""
    plateau_window: int = 0
    """Stop when the last ``plateau_window`` validations agree within ``plateau_tolerance`` mAP (max - min);
    0 = never stop early. Checked only from epoch ``plateau_min_epochs`` on."""
    plateau_tolerance: float = 1.0
    plateau_min_epochs: int = 0
    out_dir: str = "runs/experiment"
    dist_timeout_minutes: float = 120.0
    """Timeout of the process group's collectives under torchrun. Rank 0 validates and writes checkpoints while the
    other ranks wait in a barrier, which on PoseTrack val with detected boxes can exceed NCCL's 10-minute default."""
    feature_cache: Optional[str] = None
    """Folder of cached backbone features (``engine/feature_cache.py``): with a frozen backbone, the stage
    features of ``feature_cache_draws`` augmented versions of every training clip are computed once (built on
    first use, resumable) and epoch e trains on draw ``e % feature_cache_draws``. Runs that share the backbone,
    data and crop settings share the cache. None = compute the backbone every step."""
    feature_cache_draws: int = 4
    feature_cache_seed: int = 0
    """The dataset seed of the cached augmentation draws (the same for every training seed that uses the cache)."""
    mi_diagnostics_every: int = 0
    """Every this many optimizer steps, log per-term gradient norms and cosines on the TDE and the RDM gates and
    the gates' saturation (``engine/mi_diagnostics.py``) to metrics.jsonl as ``mi_diag`` records; 0 = never."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = no limit); for smoke tests."""


@dataclass
class TestConfig:
    batch_size: int = 32
    flip_test: bool = False
    """HRNet-style flip test (off by default for parity with DCPose/FAMI)."""
    boxes: str = "gt"
    """``gt`` or a detection file; overrides ``data.val_boxes`` for `tdmi test`."""
    protocol: Literal["poseval", "pt21"] = "poseval"
    amp: Literal["none", "bf16", "fp16"] = "none"
    """Autocast dtype of the model during testing (bf16/fp16 on GPUs; docs/results.md gives the measured mAP
    difference); decoding always runs in float32."""
    out_dir: str = "runs/test"
    track: Optional[Literal["iou", "pose"]] = None
    """`tdmi test --track`: give predictions track ids with this tracker (``pose``: IoU + OKS, ``iou``: boxes
    only), write the pruned tracking submission and report poseval's MOTA beside the mAP (the PT21 kit's HOTA with
    ``protocol: pt21``)."""
    track_joint_threshold: float = 0.4
    """Joints scoring below this are left out of the tracking submission (poseval's MOTA counts every submitted
    joint); the mAP file keeps all of them."""
    track_person_threshold: float = 0.0
    """People whose box score is below this are left out of the tracking submission."""


@dataclass
class ExperimentConfig:
    name: str = "tdmi"
    """Short experiment name, used in output folder names."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)


# --------------------------------------------------------------------------------------------------------------
# Loading, overriding, validating


PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""The experiment configs shipped inside the package (``configs/`` in a checkout links here)."""


def packaged_configs() -> list[Path]:
    """The shipped experiment configs, sorted by name."""
    return sorted(PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a shipped config (``tdmi_w48_pt17`` or ``tdmi_w48_pt17.yaml``)."""
    candidate = Path(path)
    if candidate.is_file() or len(candidate.parts) > 1:
        return candidate
    name = candidate.name if candidate.suffix == ".yaml" else f"{candidate.name}.yaml"
    shipped = PACKAGED_CONFIGS / name
    return shipped if shipped.is_file() else candidate


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config (a path, or the name of a shipped config; the defaults when ``path`` is None) and apply
    ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        if not path.is_file():
            names = ", ".join(p.stem for p in packaged_configs())
            raise ConfigError(f"{path}: config file not found (a path, or one of the shipped configs: {names})")
        try:
            with path.open(encoding="utf-8") as stream:  # a stream, so YAML's message names the file, not a string
                loaded = yaml.safe_load(stream)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
        raw = loaded
    overridden: dict[str, str] = {}
    for item in overrides:
        apply_override(raw, item)
        overridden[item.partition("=")[0].strip()] = item
    where = str(path) if path is not None else "<defaults>"
    try:
        return from_dict(ExperimentConfig, raw, where=where)
    except ConfigError as err:
        # A value that came from --set is blamed on the --set argument, not on the file.
        detail = str(err)[len(where) + 2:]
        unknown = re.match(r"unknown key '([^']+)'", detail)
        named = unknown.group(1) if unknown else re.split(r"[ =\[]", detail, maxsplit=1)[0]
        for key, item in overridden.items():
            # the key set, a field inside a section that was set as a whole, or a bad section name on the way
            if named == key or named.startswith(key + ".") or key.startswith(named + "."):
                raise ConfigError(f"--set {item}: {detail}") from None
        raise


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override to a raw nested dict; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=5e-4")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key component")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def from_dict(cls: type, raw: Any, where: str = "<config>", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking keys, types and closed choices."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in known]
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{where}: unknown key {name!r}; valid keys here: {', '.join(known)}")
    kwargs = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(hints[key], value, where, name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, name)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, name)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {name}={value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {name} must be a list, got {value!r}")
        return [_coerce(args[0], v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads "5e-4" as a string; accept any text Python parses as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, got {value!r}")
        return value
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (JSON/YAML-serialisable)."""
    return dataclasses.asdict(cfg)


def flatten_dict(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: ``{"model": {"delta": 2}} -> {"model.delta": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_dict(value, name + "."))
        else:
            flat[name] = value
    return flat


def dump_config(cfg: Any) -> str:
    """The fully resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_from_dict(raw: dict[str, Any], where: str = "<dict>") -> ExperimentConfig:
    """Rebuild an :class:`ExperimentConfig` from :func:`to_dict` output (e.g. a checkpoint sidecar)."""
    return from_dict(ExperimentConfig, raw, where=where)
