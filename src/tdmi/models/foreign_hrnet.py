"""Foreign HRNet pose checkpoints (official, mmpose, DCPose, FAMI-Pose files) as ready single-frame models.

The file every pose researcher has is an official HRNet COCO checkpoint (``pose_hrnet_w32_256x192.pth``) or a
wrapping of it. ``tdmi infer``, ``test``, ``export`` and ``info`` take one with ``--checkpoint FILE`` alone:
:func:`load_foreign_hrnet` turns it into the ``hrnet`` model (the key frame only, its own ``final_layer`` as the
heatmap head), reading from the weights what they fix and from the file name what they do not:

- layout and key names: from the file; every naming :func:`tdmi.models.checkpoints.load_hrnet_weights` reads.
- width C: from ``transition1.0.0.weight`` ``[C, 256, 3, 3]``; the weights decide, and a config that says otherwise
  is overridden, with a note.
- joints: from ``final_layer.weight`` ``[J, C, 1, 1]``; J must be 17 (COCO's layout, PoseTrack's 17 slots). Weights
  with no head (ImageNet, backbone-only) are refused.
- input size: from the model zoo's ``_HxW`` in the file name (``_256x192`` = 256 high, 192 wide); else the
  config's when ``--config`` is given, else :data:`DEFAULT_INPUT_SIZE` for the width, with a note.

A COCO head puts COCO's left/right eyes in slots 1 and 2, where PoseTrack has head_bottom and head_top
(``keypoints.POSETRACK17``); the joints are right everywhere else. Weights fine-tuned on PoseTrack (DCPose's,
FAMI's) fill those slots as PoseTrack does. The file cannot say which it is, so a note says it.

A TDMI config (``arch`` tdmi or tdmi_st) over foreign weights is refused: its TDE, RDM, fusion and head would be
random. Such weights initialise training instead (``model.backbone.pretrained``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional

from torch import Tensor, nn

from tdmi.config import ExperimentConfig, load_config, to_dict
from tdmi.errors import CheckpointError
from tdmi.models.checkpoints import (_detect_wrapper, _state_dict_from, checkpoint_metadata, checkpoint_paths,
                                     hrnet_key, load_hrnet_weights, read_torch_file)

#: Input ``[w, h]`` when neither the file name nor a config gives one: the official COCO pairing of each width.
DEFAULT_INPUT_SIZE = {48: [288, 384], 32: [192, 256]}
FALLBACK_INPUT_SIZE = [192, 256]
"""Any other width: the model zoo's most common input, 256x192 (h x w)."""

_ZOO_SIZE = re.compile(r"(?<![0-9])(\d{2,4})x(\d{2,4})(?![0-9])")

EYE_SLOTS_NOTE = ("joint slots 1-2 (head_bottom, head_top) hold whatever the file was trained on: COCO weights "
                  "predict the eyes there, PoseTrack-fine-tuned weights (DCPose, FAMI) head bottom and top")


class ForeignHRNet(NamedTuple):
    """A foreign HRNet file, loaded: the model in eval mode, its config, a sidecar-like record and the notes."""

    model: nn.Module
    cfg: ExperimentConfig
    metadata: dict[str, Any]
    description: str
    notes: list[str]


def is_foreign_checkpoint(path: str | Path) -> bool:
    """True for a file that is not one of tdmi's own checkpoints (``.safetensors`` + sidecar), e.g. a ``.pth``."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return False
    return path.is_file() and not checkpoint_paths(path)[0].is_file()


def input_size_from_name(path: str | Path) -> Optional[list[int]]:
    """``[w, h]`` from the model zoo's ``_HxW`` naming (``pose_hrnet_w32_256x192.pth`` -> ``[192, 256]``)."""
    matches = _ZOO_SIZE.findall(Path(path).name)
    if not matches:
        return None
    height, width = (int(v) for v in matches[-1])
    return [width, height] if width % 4 == 0 and height % 4 == 0 else None


def hrnet_file_shape(path: str | Path) -> tuple[int, Optional[int], dict[str, Tensor]]:
    """Width, joint count (None without a pose head) and the state dict of a foreign HRNet file.

    Raises:
        CheckpointError: the file is unreadable or unsafe, or holds no HRNet stem/transition weights.
    """
    path = Path(path)
    state = _state_dict_from(read_torch_file(path), path)
    wrapper = _detect_wrapper(list(state))
    mapped = {key: tensor for file_key, tensor in state.items()
              if (key := hrnet_key(file_key, wrapper)) is not None}
    transition = mapped.get("transition1.0.0.weight")
    if transition is None or transition.dim() != 4:
        raise CheckpointError(f"{path}: not an HRNet pose checkpoint (no transition1.0.0.weight under any known "
                              f"naming; its keys look like {', '.join(list(state)[:3])})")
    head = mapped.get("final_layer.weight")
    joints = int(head.shape[0]) if head is not None and head.dim() == 4 else None
    return int(transition.shape[0]), joints, state


def load_foreign_hrnet(path: str | Path, config: Optional[str | Path] = None, overrides: Iterable[str] = (),
                       device: Any = "cpu") -> ForeignHRNet:
    """The single-frame ``hrnet`` model of a foreign HRNet file (see the module docstring for the rules).

    Args:
        path: the ``.pth`` (or other ``torch.save``) file.
        config: an experiment config (path or shipped name) for the data/test sections; its model must be
            ``arch: hrnet``. None = tdmi's defaults.
        overrides: ``key=value`` overrides, applied last (they win over what the file implies).
        device: where to put the model.

    Raises:
        CheckpointError: unreadable or unsafe file, no pose head, a joint count other than 17, or a TDMI config.
    """
    path = Path(path)
    overrides = list(overrides)
    width, joints, _ = hrnet_file_shape(path)
    if joints is None:
        raise CheckpointError(f"{path}: HRNet-W{width} weights without a pose head (final_layer): an ImageNet or "
                              f"backbone-only file cannot predict poses. It can initialise training: tdmi train "
                              f"--config hrnet_w48_pt17 --set model.backbone.pretrained={path}")
    if joints != 17:
        raise CheckpointError(f"{path}: its final_layer predicts {joints} joints; tdmi's models predict the 17 "
                              f"slots of COCO/PoseTrack (an MPII or other 16/14-joint head cannot be used as is)")
    notes: list[str] = []
    user = load_config(config, overrides)
    asks_for_arch = config is not None or any(o.partition("=")[0].strip() == "model.arch" for o in overrides)
    if asks_for_arch and user.model.arch != "hrnet":
        raise CheckpointError(
            f"{path}: foreign HRNet weights hold a single-frame HRNet, but the config asks for arch "
            f"{user.model.arch!r}, whose TDE, RDM, fusion and head these weights do not contain (they would be "
            f"random). Drop --config to run the HRNet itself, or train TDMI over them: tdmi train --config "
            f"{config or 'tdmi_w48_pt17'} --set model.backbone.pretrained={path}")
    derived = ["model.arch=hrnet", "model.delta=0", f"model.backbone.width={width}", "model.mi.enabled=false",
               "model.backbone.pretrained=null", f"model.num_joints={joints}"]
    if config is not None and user.model.backbone.width != width:
        notes.append(f"model.backbone.width {user.model.backbone.width} -> {width}: the weights are HRNet-W{width}")
    size = input_size_from_name(path)
    if size is None and config is None:
        size = DEFAULT_INPUT_SIZE.get(width, FALLBACK_INPUT_SIZE)
        notes.append(f"input size {size[1]}x{size[0]} (h x w): the file name has no _HxW size, so the default for "
                     f"W{width} is used; set model.input_size=[w,h] if the weights were trained at another size")
    if size is not None:
        derived += [f"model.input_size=[{size[0]},{size[1]}]", f"model.heatmap_size=[{size[0] // 4},{size[1] // 4}]"]
    if config is None:
        derived.append(f"name=hrnet_w{width}_{path.stem}")
    cfg = load_config(config, [*derived, *overrides])

    from tdmi.models.tdmi import build_model

    model = build_model(cfg.model)
    report = load_hrnet_weights(model.backbone, path, include_final_layer=True)
    if report.missing:
        raise CheckpointError(f"{path}: the pose head did not load ({', '.join(report.missing[:3])})")
    notes.append(EYE_SLOTS_NOTE)
    metadata = checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                                   heatmap_size=cfg.model.heatmap_size, delta=cfg.model.delta,
                                   training={"foreign_checkpoint": str(path), "wrapper": report.wrapper,
                                             "load_report": report.summary()})
    description = (f"hrnet HRNet-W{width} {cfg.model.input_size[1]}x{cfg.model.input_size[0]} (h x w), foreign "
                   f"weights from {path.name}" + (f" (under {report.wrapper!r})" if report.wrapper else ""))
    return ForeignHRNet(model.eval().to(device), cfg, metadata, description, notes)
