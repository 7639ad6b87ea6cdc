"""TDMI and TDMI-ST assembly, the single-frame HRNet baseline, and ``build_model`` (paper section 3, fig. 2).

Data flow of one clip of T = 2*delta + 1 frames (key frame at index delta):

    frames [B, T, 3, H, W] --encode (backbone, per frame)--> StageFeatures of [B, T, C_j, h, w]
      --TDE--> motion M [B, C, h, w] --RDM--> useful Mu, noisy Mn [B, C, h, w]
      fusion: BlockChain([Mu, V]) -> F~ [B, C, h, w] --3x3 conv--> heatmaps [B, J, h, w]

V is the key frame's stage-4 feature F_t^4 (TDMI) or, for TDMI-ST, a block chain over the concatenated stage-4
features of all T frames (docs/facts/model-facts.md (e): "TDMI-ST spatiotemporal feature"). Without the RDM (table 5's
"TDE only") M itself is fused and ``useful``/``noisy`` are None. ``encode`` / ``decode`` are split so that
per-frame backbone features can be cached (a video frame is a supporting frame of up to 2*delta other key
frames); ``forward`` is ``decode(encode(...))``.

All archs share the ``encode / decode / forward`` contract and return :class:`TDMIOutput`, so trainer, tester and
inference treat them alike. ``build_model`` is the only place where a :class:`~tdmi.config.ModelConfig` is mapped
onto constructor arguments.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from tdmi.config import ConfigError, ModelConfig
from tdmi.models.blocks import BlockChain, init_normal_
from tdmi.models.clip_model import ClipModel, TDMIOutput, head_outside_autocast
from tdmi.models.hrnet import HRNet
from tdmi.models.rdm import RepresentationDisentanglement
from tdmi.models.tde import TemporalDifferenceEncoder


class TDMI(ClipModel):
    """TDMI / TDMI-ST (paper section 3): backbone, TDE, RDM, fusion and a 3x3 detection head.

    Args:
        backbone: a per-frame feature extractor with HRNet's interface (``forward -> StageFeatures``,
            ``stage_channels``, ``final_layer``).
        tde: the temporal difference encoder, built for ``num_frames = 2*delta + 1``.
        rdm: the disentanglement module, or None for table 5's "TDE only".
        delta: supporting frames on each side of the key frame (>= 1).
        num_joints: J heatmap channels (must equal the backbone ``final_layer``'s outputs).
        spatiotemporal: TDMI-ST: fuse Mu with a feature of all T frames instead of the key frame's.
        fusion_blocks: BasicBlocks fusing [Mu, V] into F~ (ours: 3).
        st_blocks: BasicBlocks reducing the T concatenated stage-4 features for TDMI-ST (ours: 2).
        freeze_backbone: keep the backbone's weights fixed (paper: only the new modules train).
        backbone_bn_eval: keep a frozen backbone's BatchNorms in eval mode.
        static: replace every supporting frame's features by the key frame's (``model.support_frames:
            key_frame``, the benchmark's same-modules-no-time control).
    """

    def __init__(self, backbone: nn.Module, tde: TemporalDifferenceEncoder,
                 rdm: RepresentationDisentanglement | None, *, delta: int = 2, num_joints: int = 17,
                 spatiotemporal: bool = False, fusion_blocks: int = 3, st_blocks: int = 2,
                 freeze_backbone: bool = True, backbone_bn_eval: bool = True, static: bool = False):
        if delta < 1:
            raise ValueError(f"TDMI needs supporting frames: delta must be >= 1, got delta={delta}")
        super().__init__(backbone, delta, freeze_backbone, backbone_bn_eval)
        if tde.num_frames != self.num_frames:
            raise ValueError(f"the TDE was built for {tde.num_frames} frames, but delta={delta} gives "
                             f"{self.num_frames}")
        if rdm is not None and rdm.channels != tde.channels:
            raise ValueError(f"RDM width {rdm.channels} != TDE width {tde.channels}")
        if backbone.final_layer.out_channels != num_joints:
            raise ValueError(f"num_joints={num_joints} but the backbone's final_layer predicts "
                             f"{backbone.final_layer.out_channels} joints")
        channels = tde.channels
        visual_channels = backbone.stage_channels[-1]
        self.tde = tde
        self.rdm = rdm
        self.static = static
        self.spatiotemporal = spatiotemporal
        self.spatiotemporal_block = (BlockChain(self.num_frames * visual_channels, channels, st_blocks)
                                     if spatiotemporal else None)
        context_channels = channels if spatiotemporal else visual_channels
        self.fusion = BlockChain(channels + context_channels, channels, fusion_blocks)
        self.head = nn.Conv2d(channels, num_joints, kernel_size=3, padding=1)
        init_normal_(self.head)
        # TDMI never trains HRNet's own head: it only gives the MI objective its static teacher p(y | F)
        # (docs/facts/model-facts.md (d), h_hr), which is detached there. Fixing it also when the backbone is
        # fine-tuned keeps
        # every trainable parameter on the loss path (DDP refuses parameters that never get a gradient).
        backbone.final_layer.requires_grad_(False)

    def decode(self, stage_features) -> TDMIOutput:
        """StageFeatures of ``[B, T, C_j, h, w]`` (from :meth:`encode`, possibly cached) -> :class:`TDMIOutput`."""
        self._check_clip(stage_features)
        if self.static:  # every slot holds the key frame: no motion reaches the encoder
            stage_features = type(stage_features)(*(f[:, self.delta:self.delta + 1].expand_as(f)
                                                    for f in stage_features))
        clip_s4 = stage_features[-1]
        visual = clip_s4[:, self.delta]
        motion = self.tde(stage_features)
        useful, noisy = self.rdm(motion) if self.rdm is not None else (None, None)
        context = self.spatiotemporal_block(clip_s4.flatten(1, 2)) if self.spatiotemporal else visual
        fused = self.fusion(torch.cat([motion if useful is None else useful, context], dim=1))
        return TDMIOutput(heatmaps=head_outside_autocast(self.head, fused), motion=motion, useful=useful,
                          noisy=noisy, visual=visual, fused=fused,
                          static_heatmaps=head_outside_autocast(self.backbone.final_layer, visual))


class SingleFrameHRNet(ClipModel):
    """The single-frame baseline: HRNet on the key frame, heatmaps = ``final_layer(F_t^4)``.

    It takes the same clips as TDMI (any delta >= 0) so that all archs share one trainer; ``forward`` runs the
    backbone on the key frame only, ``decode`` reads the key frame out of cached clip features.

    Args:
        backbone: HRNet-like backbone (see :class:`TDMI`).
        delta: supporting frames on each side of the key frame in the clips it is given (0 = single frames).
        freeze_backbone, backbone_bn_eval: as for :class:`TDMI`.
    """

    def __init__(self, backbone: nn.Module, *, delta: int = 0, freeze_backbone: bool = False,
                 backbone_bn_eval: bool = True):
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got delta={delta}")
        super().__init__(backbone, delta, freeze_backbone, backbone_bn_eval)

    def _predict(self, visual: Tensor) -> TDMIOutput:
        heatmaps = head_outside_autocast(self.backbone.final_layer, visual)
        return TDMIOutput(heatmaps=heatmaps, motion=None, useful=None, noisy=None, visual=visual, fused=None,
                          static_heatmaps=heatmaps)

    def _key_index(self, num_frames: int) -> int:
        # The dataset gives the baseline key frames only (T = 1) whatever its delta; whole clips work too.
        if num_frames == 1:
            return 0
        self._check_frames(num_frames)
        return self.delta

    def decode(self, stage_features) -> TDMIOutput:
        """StageFeatures of ``[B, T, C_j, h, w]`` (T = 1 or 2 delta + 1) -> :class:`TDMIOutput` of the key frame."""
        s4 = stage_features[-1]
        if s4.dim() != 5:
            raise ValueError(f"decode expects stage features [B, T, C, h, w], got {tuple(s4.shape)}")
        return self._predict(s4[:, self._key_index(s4.shape[1])])

    def forward(self, frames: Tensor) -> TDMIOutput:
        """``frames [B, T, 3, H, W]`` (T = 1 or 2 delta + 1) -> :class:`TDMIOutput`; only the key frame is encoded."""
        if frames.dim() != 5:
            raise ValueError(f"forward expects frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        return self._predict(self.encode(frames[:, self._key_index(frames.shape[1])])[-1])


def rdm_hidden_width(cfg: ModelConfig) -> int:
    """The RDM gates' hidden width: ``rdm.hidden``, or ``tde.channels // rdm.reduction`` for a legacy config."""
    if cfg.rdm.reduction is None:
        return cfg.rdm.hidden
    return max(1, cfg.tde.channels // cfg.rdm.reduction)


def build_model(cfg: ModelConfig, backbone: nn.Module | None = None) -> nn.Module:
    """Build the model that ``cfg`` describes (``cfg.arch``: tdmi, tdmi_st, hrnet, dcpose or fami_pose).

    Args:
        cfg: the ``model`` section of an experiment config.
        backbone: an HRNet-compatible backbone to use instead of ``HRNet(cfg.backbone.width, cfg.num_joints)``.

    Pretrained weights (``cfg.backbone.pretrained``) are not read here: the caller loads them into
    ``model.backbone`` (``tdmi.models.checkpoints``), before or after building.

    Raises:
        ConfigError: naming the config key, for combinations the model cannot be built with.
    """
    if cfg.arch != "hrnet" and cfg.delta < 1:
        raise ConfigError(f"model.delta={cfg.delta}: arch {cfg.arch!r} needs supporting frames (delta >= 1); "
                          "only arch 'hrnet' runs on single frames")
    if cfg.delta < 0:
        raise ConfigError(f"model.delta={cfg.delta} must be >= 0")
    if cfg.arch != "hrnet" and cfg.tde.modulation and cfg.tde.channels % cfg.tde.deform_groups:
        raise ConfigError(f"model.tde.channels={cfg.tde.channels} is not divisible by model.tde.deform_groups="
                          f"{cfg.tde.deform_groups}: each DCN offset group deforms an equal block of channels")
    if cfg.rdm.reduction is not None and cfg.rdm.reduction < 1:
        raise ConfigError(f"model.rdm.reduction={cfg.rdm.reduction} must be >= 1 (or null to use model.rdm.hidden)")
    if cfg.rdm.hidden < 1:
        raise ConfigError(f"model.rdm.hidden={cfg.rdm.hidden} must be >= 1")
    if backbone is None:
        backbone = HRNet(width=cfg.backbone.width, num_joints=cfg.num_joints, stage1_feature=cfg.tde.stage1_feature)

    if cfg.arch == "dcpose":
        if cfg.delta != 1:
            raise ConfigError(f"model.delta={cfg.delta}: DCPose reads the previous, key and next frame (delta 1, as "
                              "its code's DISTANCE: 2)")
        from tdmi.models.rivals.dcpose import DCPose  # the rivals build on this module's contract

        return DCPose(backbone, num_joints=cfg.num_joints, freeze_backbone=cfg.backbone.freeze,
                      backbone_bn_eval=cfg.backbone.bn_eval)
    if cfg.arch == "fami_pose":
        from tdmi.models.rivals.fami_pose import CHANNELS_PER_OFFSET_GROUP, FAMIPose

        if backbone.stage_channels[-1] % CHANNELS_PER_OFFSET_GROUP:
            raise ConfigError(f"model.backbone.width={cfg.backbone.width}: FAMI-Pose's deformable convs take "
                              f"{CHANNELS_PER_OFFSET_GROUP} channels per offset group, so the width must be a "
                              f"multiple of {CHANNELS_PER_OFFSET_GROUP}")
        return FAMIPose(backbone, heatmap_hw=(cfg.heatmap_size[1], cfg.heatmap_size[0]), delta=cfg.delta,
                        num_joints=cfg.num_joints, freeze_backbone=cfg.backbone.freeze,
                        backbone_bn_eval=cfg.backbone.bn_eval)
    if cfg.arch == "hrnet":
        return SingleFrameHRNet(backbone, delta=cfg.delta, freeze_backbone=cfg.backbone.freeze,
                                backbone_bn_eval=cfg.backbone.bn_eval)
    tde = TemporalDifferenceEncoder(
        stage_channels=backbone.stage_channels, num_frames=cfg.num_frames, channels=cfg.tde.channels,
        blocks_per_stage=cfg.tde.blocks_per_stage, differences=cfg.tde.differences, aggregation=cfg.tde.aggregation,
        modulation=cfg.tde.modulation, deform_groups=cfg.tde.deform_groups, dilation=cfg.tde.deform_dilation,
        accumulation_blocks=cfg.tde.accumulation_blocks, input=cfg.tde.input)
    rdm = (RepresentationDisentanglement(cfg.tde.channels, hidden=rdm_hidden_width(cfg),
                                         factorisation=cfg.rdm.factorisation, init=cfg.rdm.init,
                                         init_std=cfg.rdm.init_std)
           if cfg.rdm.enabled else None)
    if rdm is not None and rdm.factorisation == "gates" and not cfg.mi.enabled:
        # Mn feeds only the MI objective. Without it the noisy gate never gets a gradient (table 7, "no MI"), and
        # DDP rejects trainable parameters that receive none; it stays in the model so checkpoints keep one layout.
        rdm.noisy_gate.requires_grad_(False)
    return TDMI(backbone, tde, rdm, delta=cfg.delta, num_joints=cfg.num_joints, spatiotemporal=cfg.arch == "tdmi_st",
                fusion_blocks=cfg.fusion_blocks, st_blocks=cfg.st_blocks, freeze_backbone=cfg.backbone.freeze,
                backbone_bn_eval=cfg.backbone.bn_eval, static=cfg.support_frames == "key_frame")
