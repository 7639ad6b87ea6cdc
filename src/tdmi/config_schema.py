"""The experiment config's schema: typed dataclasses with documented defaults (loading lives in ``tdmi.config``).

A YAML file only states what differs from these defaults, so the defaults are the paper's TDMI on PoseTrack17 (W48,
384x288, delta=2). Every field says where its value comes from; "ours" marks a choice the paper leaves open
(docs/architecture.md lists them all with their sources). Sizes are written ``[w, h]`` (as HRNet's yaml files do);
tensors are ``[..., h, w]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

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
    """Width of D^j, the modulated features, M, Mu, Mn and F~ (ours: FAMI's 48; docs/architecture.md)."""
    stage1_feature: Literal["transition", "layer1"] = "transition"
    """Which tensor is the stage-1 feature F^1. ``transition``: the first transition's high-resolution branch
    (C channels at 1/4 resolution; the authors' later code, docs/architecture.md). ``layer1``: the stage-1
    Bottlenecks' output (256 channels; tdmi's choice before 2026-12-06, which the shipped demo model and every
    checkpoint without this field use)."""
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
    input: Literal["differences", "keyframe", "concat"] = "differences"
    """What each stage's block chain reads. ``differences``: the paper's consecutive differences (eq. 1).
    Controls of the SynthTrack benchmark: ``keyframe`` = the key frame's own features repeated T-1 times (the same
    widths and blocks, no time); ``concat`` = the raw features of all T frames (time without differencing; the
    first conv reads T*C channels instead of (T-1)*C)."""


@dataclass
class RDMConfig:
    """Representation Disentanglement Module (paper section 3.3, eq. 6)."""

    enabled: bool = True
    """False = table 5's "TDE only": the motion feature M is fused directly, with no useful/noisy split."""
    factorisation: Literal["gates", "channel_split"] = "gates"
    """``gates``: two independent GAP-MLP-sigmoid channel attentions (the paper). ``channel_split``: table 7's
    alternative that takes the first half of M's channels as useful and the rest as noisy."""
    hidden: int = 128
    """Hidden width of each gate's MLP (C -> hidden -> C; the authors' later code: 48 -> 128 -> 48)."""
    reduction: Optional[int] = None
    """Legacy: when set, the hidden width is C // reduction instead of ``hidden`` (tdmi's r = 4 before
    2026-12-06; checkpoints saved then carry it, so they keep loading)."""
    init: Literal["lineage", "normal"] = "lineage"
    """Initialisation of the gate MLPs. ``lineage``: PyTorch's default Linear weights and zero biases (the authors'
    later code), so the two gates start different. ``normal``: weights N(0, ``init_std``) and a hidden bias of
    0.1 (tdmi's earlier choice; with std 0.001 both gates start at 0.5, where a symmetric overlap term has zero
    gradient)."""
    init_std: float = 0.001
    """``init: normal`` only: std of the gates' initial MLP weights."""


@dataclass
class MIConfig:
    """Mutual-information objective (paper section 3.4, eq. 7-13; docs/facts/model-facts.md (d))."""

    enabled: bool = True
    """False = table 7's "RDM without MI" row (heatmap loss only)."""
    alpha: float = 1.0
    """Weight of L_MI in L = L_H + alpha * L_MI (paper: 1)."""
    formulation: Literal["vsd", "balanced", "fami", "lineage"] = "balanced"
    """``balanced`` (default): the bounded Variational Self-Distillation terms with the defects measured in the
    SynthTrack proof corrected (temperature-scaled gradients, accuracy gates, a feature-space overlap;
    ``models/mi_loss.py``); the SynthTrack benchmark's pre-registered dev choice (docs/results.md, step 5). ``vsd``:
    the bounded VSD terms before those corrections (the default until 2026-12-06). ``fami``: the literal FAMI-Pose
    estimators (probabilities passed to kl_div; kept for comparison only). ``lineage``: the four terms exactly as the
    authors' later code computes them (weight 2 on I(Mu; Mn), the frozen HRNet head as the label probe; the same
    kl_div quirk), i.e. TDMI's objective as its authors most likely ran it."""
    temperature: float = 0.05
    """Softmax temperature over heatmap pixels (FAMI's 0.05)."""
    epsilon: float = 1e-4
    """Floor mixed into student distributions so every KL is at most log(N / epsilon) (``vsd``, ``balanced``)."""
    gate_distillation: bool = True
    """``vsd`` only: distil the conditional terms only where the teacher beats the fused prediction
    (docs/facts/model-facts.md (d)); false = the paper-literal VSD use on every joint. ``balanced`` always gates, by
    localisation accuracy."""
    motion_head_kernel: int = 1
    """Kernel of the auxiliary motion head h_m that estimates p(y | M) for the VSD terms (1 or 3; ours: 1)."""


@dataclass
class ModelConfig:
    arch: Literal["tdmi", "tdmi_st", "hrnet", "dcpose", "fami_pose"] = "tdmi"
    """``tdmi``: fuse Mu with the key frame's stage-4 feature. ``tdmi_st``: fuse with a spatio-temporal feature
    of the whole clip (TDMI-ST). ``hrnet``: the single-frame baseline (key frame only). ``dcpose``: DCPose over the
    frozen HRNet (``models/rivals/dcpose.py``; delta 1). ``fami_pose``: FAMI-Pose over the frozen HRNet
    (``models/rivals/fami_pose.py``; its KL-proxy terms follow ``model.mi.enabled``, the other ``mi`` keys are
    TDMI's)."""
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
    support_frames: Literal["clip", "key_frame"] = "clip"
    """``key_frame``: every supporting frame's features are replaced by the key frame's, in training and test (the
    benchmark's ``static`` control: the same modules, no time; the differences are then zero)."""
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
    """Training augmentation with the reference distributions (docs/facts/posetrack-facts.md 5.3)."""

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
    ``USE_DIFFERENT_JOINTS_WEIGHT``, off in DCPose/FAMI; docs/facts/posetrack-facts.md 1.1)."""
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
    support_from: Literal["own_sequence", "other_sequence"] = "own_sequence"
    """``other_sequence``: the supporting frames of every test clip come from the next sequence (the key frame
    stays), a test-time control: a model that uses its clip's motion should lose accuracy."""
    decode: Literal["argmax", "dark", "dark_published"] = "argmax"
    """Heatmap -> keypoint decoding. ``argmax``: the first maximum plus a quarter-pixel shift toward the higher
    neighbour (HRNet, DCPose, FAMI-Pose). ``dark``: distribution-aware sub-pixel decoding (Zhang et al., CVPR 2020;
    the authors' later code), with tdmi's guard: the Taylor step is taken only where the maximum is one of the
    log-map and the step stays within a pixel (``evaluation/decode.py``). ``dark_published``: DARK without the guard.
    Composes with ``flip_test``."""
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
# Ranges of the numeric fields, checked at load (tdmi.config.check_ranges): ``key: (low, high, low_open)``, where a
# None bound is open-ended and ``low_open`` makes the lower bound strict. A list field's range holds for each
# element; None (where a field allows it) is always accepted. Every int and float field must be listed here (a test
# checks), so a new field cannot slip through unchecked.

POSITIVE = (0, None, True)
AT_LEAST_1 = (1, None, False)
NON_NEGATIVE = (0, None, False)
FRACTION = (0, 1, False)
NUMERIC_RANGES: dict[str, tuple] = {
    "model.num_joints": AT_LEAST_1, "model.input_size": (32, None, False), "model.heatmap_size": AT_LEAST_1,
    "model.delta": (0, 50, False), "model.fusion_blocks": AT_LEAST_1, "model.st_blocks": AT_LEAST_1,
    "model.backbone.width": AT_LEAST_1, "model.tde.channels": AT_LEAST_1, "model.tde.blocks_per_stage": AT_LEAST_1,
    "model.tde.deform_groups": AT_LEAST_1, "model.tde.deform_dilation": AT_LEAST_1,
    "model.tde.accumulation_blocks": AT_LEAST_1, "model.rdm.hidden": AT_LEAST_1, "model.rdm.reduction": AT_LEAST_1,
    "model.rdm.init_std": POSITIVE, "model.mi.alpha": NON_NEGATIVE, "model.mi.temperature": POSITIVE,
    "model.mi.epsilon": (0, 1, True), "model.mi.motion_head_kernel": AT_LEAST_1,
    "data.box_score_threshold": FRACTION, "data.sigma": POSITIVE, "data.bbox_enlarge": POSITIVE,
    "data.workers": NON_NEGATIVE, "data.augment.scale_factor": (0, 0.99, False),
    "data.augment.rotation_factor": (0, 180, False), "data.augment.rotation_prob": FRACTION,
    "data.augment.half_body_prob": FRACTION, "data.augment.half_body_min_joints": NON_NEGATIVE,
    "train.epochs": AT_LEAST_1, "train.lr": POSITIVE, "train.lr_steps": NON_NEGATIVE, "train.lr_factor": POSITIVE,
    "train.warmup_epochs": NON_NEGATIVE, "train.min_lr_factor": FRACTION, "train.weight_decay": NON_NEGATIVE,
    "train.batch_size": AT_LEAST_1, "train.grad_accum": AT_LEAST_1, "train.heatmap_loss_factor": POSITIVE,
    "train.seed": NON_NEGATIVE, "train.val_every": NON_NEGATIVE, "train.plateau_window": NON_NEGATIVE,
    "train.plateau_tolerance": NON_NEGATIVE, "train.plateau_min_epochs": NON_NEGATIVE,
    "train.dist_timeout_minutes": POSITIVE, "train.feature_cache_draws": AT_LEAST_1,
    "train.feature_cache_seed": NON_NEGATIVE, "train.mi_diagnostics_every": NON_NEGATIVE,
    "train.max_steps": NON_NEGATIVE, "test.batch_size": AT_LEAST_1, "test.track_joint_threshold": FRACTION,
    "test.track_person_threshold": FRACTION,
}

