"""PoseTrack17 / 18 / 21 annotation readers producing the plain records of :mod:`tdmi.data.records`; the public
reading API, which also re-exports the names, ids and box rule (:mod:`tdmi.data.posetrack_fields`) and the
PoseTrack18-schema writer (:mod:`tdmi.data.posetrack_writer`). PoseTrack17's old format lives in
:mod:`tdmi.data.posetrack17_annolist`.

Facts implemented (``docs/facts/posetrack-facts.md``):

- 2.1 The PoseTrack18/21 per-sequence schema (``images`` / ``annotations`` / ``categories``), 17-slot keypoints.
- 2.2 PoseTrack17's old ``annolist`` schema (JSON from poseval's ``mat2json``, or the official ``.mat`` files read
  with :func:`scipy.io.loadmat`), 15 poseval joint ids mapped to the 17-slot order; DCPose/PoseWarper's merged
  COCO-style files (``posetrack_train.json``, ``posetrack_val.json``) and mmpose's ``test_posetrack18_val.json``,
  split back into sequences by the frames' folder.
- 2.2 Frame numbering: the frame index is the number in the frame's file name. A name with exactly six digits
  (``000017.jpg``) follows PoseTrack18's 0-based rule; any other digit count (PoseTrack17's renamed ``%08d`` frames,
  the original PT17 names) follows PoseTrack17's 1-based rule (DCPose decides by the same test). See
  :func:`parse_frame_index` and :func:`frame_index_base`.
- 2.3 PoseTrack18 image ids ``T*10^10 + S*10^4 + F`` (:func:`posetrack18_image_id`).
- 1.3 Visibility. A joint is *labelled* when the evaluation that belongs to the dataset would score it:
  poseval (PT17/18) keeps a point unless x == 0 and y == 0 and flag == 0; the PoseTrack21 kit keeps a point iff
  x > 0 and y > 0, whatever its flag (PT21 annotates occluded joints with flag 0 and real coordinates). Labelled
  joints keep their coordinates and get :data:`FLAG_LABELED` (1.0) when the file's flag is positive and
  :data:`FLAG_OCCLUDED` (0.5) when it is 0; unlabelled joints are (0, 0, 0). Training can therefore choose:
  ``weight = flag > 0`` (every joint the evaluator scores, occluded ones included) or ``weight = flag >= 1``
  (DCPose's ``min(file flag, 1)``, which drops occluded PT21 joints). PoseTrack17 points with ``is_visible`` 0
  also get :data:`FLAG_OCCLUDED`.

Nothing here opens an image: sizes come from the files (0 when absent) and PT18 GT boxes are used as written.
PoseTrack17 old-format people have no body box; they get the box PoseTrack18 itself uses, the labelled-keypoint
extent enlarged 1.3x about its centre (:func:`bbox_from_keypoints`, facts 2.1).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np
from tqdm import tqdm

from tdmi.data.fileio import check_int, check_list, check_number, check_numbers, field_error, read_json
from tdmi.data.posetrack17_annolist import parse_annolist, read_mat
from tdmi.data.posetrack_fields import (DATASETS, FLAG_LABELED, FLAG_OCCLUDED, GT_BOX_ENLARGE, NUM_JOINTS,
                                        POSETRACK18_SOURCE_IDS, bbox_from_keypoints, frame_index_base,
                                        parse_frame_index, posetrack18_image_id, posetrack18_image_id_parts)
from tdmi.data.posetrack_writer import save_sequences, sequence_to_posetrack18_json
from tdmi.data.records import Frame, Person, Sequence
from tdmi.errors import DataFormatError

__all__ = ["DATASETS", "FLAG_LABELED", "FLAG_OCCLUDED", "GT_BOX_ENLARGE", "NUM_JOINTS", "POSETRACK18_SOURCE_IDS",
           "annotation_files", "bbox_from_keypoints", "frame_index_base", "load_sequence_file", "load_sequences",
           "parse_frame_index", "posetrack18_image_id", "posetrack18_image_id_parts", "save_sequences",
           "sequence_to_posetrack18_json"]


def _flags_from_file(xy: np.ndarray, file_flags: np.ndarray, dataset: str) -> np.ndarray:
    """Apply the dataset's evaluation rule for "this joint exists" and encode the file flag (module docstring).

    Args:
        xy: ``[J, 2]`` coordinates as written. file_flags: ``[J]`` the file's third values.
    Returns:
        float32 ``[J, 3]`` keypoints, unlabelled joints zeroed.
    """
    if dataset == "posetrack21":
        labelled = (xy[:, 0] > 0) & (xy[:, 1] > 0)
    else:
        labelled = ~((xy[:, 0] == 0) & (xy[:, 1] == 0) & (file_flags == 0))
    flags = np.where(file_flags > 0, FLAG_LABELED, FLAG_OCCLUDED)
    keypoints = np.zeros((len(xy), 3), np.float32)
    keypoints[labelled, :2] = xy[labelled]
    keypoints[labelled, 2] = flags[labelled]
    return keypoints


# ------------------------------------------------------------------------------------ PT18 / PT21 / merged (new) format


def _new_format_person(ann: dict, src: str, where: str, dataset: str) -> Person:
    raw = ann.get("keypoints")
    if raw is None or (isinstance(raw, list) and len(raw) == 0):
        keypoints = np.zeros((NUM_JOINTS, 3), np.float32)  # PT21 box-only person
    else:
        values = check_numbers(raw, src, f"{where}.keypoints", NUM_JOINTS * 3).reshape(NUM_JOINTS, 3)
        keypoints = _flags_from_file(values[:, :2], values[:, 2], dataset)
    if "bbox" in ann:
        bbox = check_numbers(ann["bbox"], src, f"{where}.bbox", 4).astype(np.float32)
    else:
        bbox = bbox_from_keypoints(keypoints)
    head = ann.get("bbox_head")
    bbox_head = None
    if head is not None and head != []:
        bbox_head = check_numbers(head, src, f"{where}.bbox_head", 4).astype(np.float32)
    scores = ann.get("scores")
    joint_scores = None
    if scores is not None and len(check_list(scores, src, f"{where}.scores")) > 0:
        joint_scores = check_numbers(scores, src, f"{where}.scores", NUM_JOINTS, f"{NUM_JOINTS} or none").astype(
            np.float32)
    return Person(
        keypoints=keypoints,
        bbox=bbox,
        bbox_head=bbox_head,
        track_id=check_int(ann.get("track_id", -1), src, f"{where}.track_id"),
        person_id=check_int(ann.get("person_id", -1), src, f"{where}.person_id"),
        score=check_number(ann.get("score", 1.0), src, f"{where}.score"),
        joint_scores=joint_scores,
    )


def _new_format_ignore_regions(image: dict, src: str, where: str) -> list[np.ndarray]:
    xs, ys = image.get("ignore_regions_x") or [], image.get("ignore_regions_y") or []
    check_list(xs, src, f"{where}.ignore_regions_x")
    check_list(ys, src, f"{where}.ignore_regions_y")
    if len(xs) != len(ys):
        raise field_error(src, where, f"has {len(xs)} ignore_regions_x polygons but {len(ys)} ignore_regions_y")
    polygons = []
    for k, (px, py) in enumerate(zip(xs, ys)):
        x = check_numbers(px, src, f"{where}.ignore_regions_x[{k}]")
        y = check_numbers(py, src, f"{where}.ignore_regions_y[{k}]", len(x), f"{len(x)} (as ignore_regions_x[{k}])")
        polygons.append(np.stack([x, y], axis=1) if len(x) else np.zeros((0, 2)))
    return polygons


def _detect_new_format_dataset(images: list, annotations: list) -> str:
    if any(isinstance(im, dict) and "has_labeled_person" in im for im in images) or any(
            isinstance(a, dict) and "person_id" in a for a in annotations):
        return "posetrack21"
    for image in images:
        if isinstance(image, dict) and isinstance(image.get("file_name"), str):
            try:
                return "posetrack18" if frame_index_base(image["file_name"]) == 0 else "posetrack17"
            except ValueError:
                continue
    return "posetrack18"


def _parse_new_format(doc: dict, path: Path, dataset: Optional[str]) -> list[Sequence]:
    src = str(path)
    if "images" not in doc:
        raise DataFormatError(f"{src}: missing 'images' (expected a PoseTrack18/21 file with images, annotations, "
                              f"categories, or a PoseTrack17 file with annolist)")
    images = check_list(doc["images"], src, "images")
    annotations = check_list(doc.get("annotations", []), src, "annotations")
    dataset = dataset or _detect_new_format_dataset(images, annotations)
    is_pt21 = dataset == "posetrack21"

    frames: list[Frame] = []
    frame_by_id: dict[int, Frame] = {}
    groups: dict[str, list[Frame]] = {}
    group_info: dict[str, tuple[int, str]] = {}  # group -> (nframes, vid_id)
    for i, image in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(image, dict):
            raise field_error(src, where, f"is {type(image).__name__}, expected an object")
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise field_error(src, f"{where}.file_name", "is missing or not a string")
        if "id" not in image and "frame_id" not in image:
            raise field_error(src, where, "has neither 'id' nor 'frame_id'")
        image_id = check_int(image.get("id", image.get("frame_id")), src, f"{where}.id")
        if image_id in frame_by_id:
            raise field_error(src, f"{where}.id", f"{image_id} is used by two images")
        try:
            frame_index = parse_frame_index(file_name)
        except ValueError as err:
            raise field_error(src, f"{where}.file_name", str(err).replace("frame file name ", "")) from None
        frame = Frame(
            file_name=file_name,
            frame_index=frame_index,
            image_id=image_id,
            is_labeled=bool(image.get("is_labeled", False)),
            ignore_regions=_new_format_ignore_regions(image, src, where),
            has_labeled_person=bool(image.get("has_labeled_person", False)),
            width=check_int(image.get("width", 0), src, f"{where}.width"),
            height=check_int(image.get("height", 0), src, f"{where}.height"),
        )
        frames.append(frame)
        frame_by_id[image_id] = frame
        folder = str(PurePosixPath(file_name.replace("\\", "/")).parent)
        vid_id = str(image.get("vid_id", ""))
        group = folder if folder not in ("", ".") else vid_id
        if group not in groups:
            groups[group] = []
            nframes = image.get("nframes")
            group_info[group] = (-1 if nframes is None else check_int(nframes, src, f"{where}.nframes"), vid_id)
        groups[group].append(frame)

    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise field_error(src, where, f"is {type(ann).__name__}, expected an object")
        if "image_id" not in ann:
            raise field_error(src, where, "has no image_id")
        image_id = check_int(ann["image_id"], src, f"{where}.image_id")
        if image_id not in frame_by_id:
            raise field_error(src, f"{where}.image_id", f"{image_id} is not the id of any entry in images")
        if check_int(ann.get("category_id", 1), src, f"{where}.category_id") != 1:
            continue  # not a person
        frame_by_id[image_id].people.append(_new_format_person(ann, src, where, dataset))

    for frame, image in zip(frames, images):
        if not is_pt21:
            # Only PT21 states it; elsewhere "has boxes" is exactly "has people".
            frame.has_labeled_person = bool(frame.people)
        if "is_labeled" not in image:
            frame.is_labeled = bool(frame.people)

    sequences = []
    for group, group_frames in groups.items():
        nframes, vid_id = group_info[group]
        name = path.stem if len(groups) == 1 else PurePosixPath(group).name
        nframes = nframes if nframes >= 0 else len(group_frames)
        sequences.append(Sequence(name=name, frames=group_frames, nframes=nframes, dataset=dataset, source=src,
                                  vid_id=vid_id))
    return sequences


# --------------------------------------------------------------------------------------------------- public readers


def _check_dataset(dataset: Optional[str]) -> None:
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)} (or None to detect)")


def load_sequence_file(path: str | Path, dataset: Optional[str] = None) -> list[Sequence]:
    """Read one annotation file: per-sequence PT18/PT21 JSON, merged COCO-style JSON, PT17 ``annolist`` JSON or
    PT17 ``.mat``. Returns one Sequence per video in the file (several for merged files)."""
    _check_dataset(dataset)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    if path.suffix.lower() == ".mat":
        return read_mat(path, dataset)
    doc = read_json(path)
    if isinstance(doc, list):
        raise DataFormatError(f"{path}: top level is a list (a detection or results file?); expected an object with "
                              f"images/annotations (PoseTrack18/21) or annolist (PoseTrack17)")
    if not isinstance(doc, dict):
        raise DataFormatError(f"{path}: top level is {type(doc).__name__}, expected an object")
    if "annolist" in doc:
        return parse_annolist(doc["annolist"], path, dataset)
    return _parse_new_format(doc, path, dataset)


def annotation_files(folder: str | Path) -> list[Path]:
    """The annotation files of a folder in name order: every ``*.json``, plus ``*.mat`` without a ``.json`` twin
    (a converted PT17 file wins over its source)."""
    folder = Path(folder)
    jsons = sorted(p for p in folder.glob("*.json") if p.is_file())
    stems = {p.stem for p in jsons}
    mats = sorted(p for p in folder.glob("*.mat") if p.is_file() and p.stem not in stems)
    return sorted(jsons + mats, key=lambda p: p.name)


def load_sequences(path: str | Path, dataset: Optional[str] = None, progress: bool = False) -> list[Sequence]:
    """Read PoseTrack annotations into :class:`Sequence` records.

    Args:
        path: a folder of per-sequence files (PT18/PT21 JSON, PT17 ``annolist`` JSON or ``.mat``), one such file,
            or one merged COCO-style file (DCPose's ``posetrack_val.json``, mmpose's ``test_posetrack18_val.json``),
            whose images are grouped into sequences by their folder (or ``vid_id``).
        dataset: force ``posetrack17``/``posetrack18``/``posetrack21``/``synthtrack`` instead of detecting it.
            Detection: ``annolist`` -> posetrack17; PT21 fields (``has_labeled_person``, ``person_id``) ->
            posetrack21; frame names that are not 6 digits -> posetrack17; else posetrack18. The choice decides the
            joint-existence rule (module docstring) and ``Sequence.dataset``.
        progress: show a progress bar while reading a folder.
    Returns:
        Sequences in file-name order (merged files: in order of first appearance). A sequence is named after its
        file (the name prediction files must carry); sequences from a merged file holding several are named after
        their frame folder (``images/val/003418_mpii_test/...`` -> ``003418_mpii_test``).
    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: a file is malformed (the message names the file and the field), or a folder holds no
            annotation files.
    """
    _check_dataset(dataset)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation path not found: {path}")
    if not path.is_dir():
        return load_sequence_file(path, dataset)
    files = annotation_files(path)
    if not files:
        raise DataFormatError(f"{path}: no annotation files (*.json or *.mat) in this folder")
    sequences = []
    for file in tqdm(files, desc=f"reading {path.name}", unit="file", disable=not progress, leave=False):
        sequences.extend(load_sequence_file(file, dataset))
    return sequences
