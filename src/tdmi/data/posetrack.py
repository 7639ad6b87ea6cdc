"""PoseTrack17 / 18 / 21 annotation readers (and a PoseTrack18-schema writer) producing the plain records of
:mod:`tdmi.data.records`.

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

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from tdmi.data.fileio import (atomic_write_json, check_int, check_list, check_number, check_numbers, field_error,
                               read_json)
from tdmi.data.records import Frame, Person, Sequence
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSETRACK17, POSEVAL15_TO_POSETRACK17

#: Dataset names a reader may be forced to (``synthtrack`` is read with the PoseTrack18 rules).
DATASETS: tuple[str, ...] = ("posetrack17", "posetrack18", "posetrack21", "synthtrack")

#: Flag of a labelled joint whose file flag is positive (PT18 labelled, PT21 visible, PT17 visible).
FLAG_LABELED: float = 1.0
#: Flag of a labelled joint whose file flag is 0 (PT21 occluded but annotated, PT17 ``is_visible`` 0).
FLAG_OCCLUDED: float = 0.5

NUM_JOINTS = POSETRACK17.num_joints
#: PoseTrack18 dataset token (after the first "_" of the sequence folder) -> the T of the image id.
POSETRACK18_SOURCE_IDS: dict[str, int] = {"mpii": 1, "bonn": 2, "mpiinew": 3}
#: PoseTrack18's GT boxes are the labelled-keypoint extent enlarged by this factor about its centre.
GT_BOX_ENLARGE = 1.3

_FRAME_NAME = re.compile(r"^(\d+)$")
_SEQUENCE_FOLDER = re.compile(r"^(\d{6})_([A-Za-z]+)")


# --------------------------------------------------------------------------------------------------- names and ids


def parse_frame_index(file_name: str) -> int:
    """The frame number in a frame file name, e.g. ``images/val/x/000017.jpg`` -> 17, ``00000001.jpg`` -> 1.

    Raises:
        ValueError: the file name (without extension) is not all digits.
    """
    stem = PurePosixPath(str(file_name).replace("\\", "/")).stem
    match = _FRAME_NAME.match(stem)
    if match is None:
        raise ValueError(f"frame file name {file_name!r} does not end in a frame number (e.g. 000017.jpg)")
    return int(match.group(1))


def frame_index_base(file_name: str) -> int:
    """Index of a sequence's first frame under the numbering its file names follow (facts 2.2, DCPose's rule).

    Six-digit names (``000000.jpg``) are PoseTrack18's 0-based frames -> 0. Any other digit count (PoseTrack17's
    renamed ``00000001.jpg`` frames, original PT17 names) is PoseTrack17's 1-based numbering -> 1.
    """
    parse_frame_index(file_name)
    stem = PurePosixPath(str(file_name).replace("\\", "/")).stem
    return 0 if len(stem) == 6 else 1


def posetrack18_image_id(file_name: str) -> int:
    """PoseTrack18 image id ``T*10^10 + S*10^4 + F`` of a frame path (facts 2.3, poseval's id rule).

    T is 1/2/3 for the mpii/bonn/mpiinew token after the first "_" of the sequence folder, S the folder's 6-digit
    sequence number and F the frame number in the file name (< 10^4).
    ``images/val/012834_mpii_test/000000.jpg`` -> 10128340000.

    Raises:
        DataFormatError: the path does not follow the PoseTrack naming.
    """
    path = PurePosixPath(str(file_name).replace("\\", "/"))
    match = _SEQUENCE_FOLDER.match(path.parent.name)
    if match is None:
        raise DataFormatError(f"{file_name}: sequence folder {path.parent.name!r} is not '<6 digits>_<source>...'")
    source = match.group(2).lower()
    if source not in POSETRACK18_SOURCE_IDS:
        raise DataFormatError(f"{file_name}: unknown source {source!r}; known: {', '.join(POSETRACK18_SOURCE_IDS)}")
    try:
        frame = parse_frame_index(file_name)
    except ValueError as err:
        raise DataFormatError(str(err)) from None
    if frame >= 10**4:
        raise DataFormatError(f"{file_name}: frame number {frame} does not fit a PoseTrack18 image id (< 10000)")
    return POSETRACK18_SOURCE_IDS[source] * 10**10 + int(match.group(1)) * 10**4 + frame


def posetrack18_image_id_parts(image_id: int) -> tuple[int, int, int]:
    """Split a PoseTrack18 image id into (T source id, S sequence number, F frame number)."""
    return image_id // 10**10, (image_id // 10**4) % 10**6, image_id % 10**4


def bbox_from_keypoints(keypoints: np.ndarray, enlarge: float = GT_BOX_ENLARGE) -> np.ndarray:
    """``[x, y, w, h]`` of the labelled-keypoint extent enlarged ``enlarge`` times about its centre (facts 2.1).

    Args:
        keypoints: ``[J, 3]`` (x, y, flag); joints with flag > 0 count.
    Returns:
        float32 ``[4]``; all zeros when no joint is labelled.
    """
    labelled = keypoints[:, 2] > 0
    if not labelled.any():
        return np.zeros(4, np.float32)
    xy = keypoints[labelled, :2].astype(np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    centre, size = (lo + hi) / 2, (hi - lo) * enlarge
    return np.array([*(centre - size / 2), *size], np.float32)


# --------------------------------------------------------------------------------------------------- field checks


def _as_list(value: Any) -> list:
    """Old-format and .mat fields hold one item either bare or as a 1-element list; empty means absent."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else [value.item()]
    return [value]


def _scalar(value: Any, src: str, where: str) -> Optional[float]:
    """A number stored bare or as ``[number]`` (old format); None when empty."""
    items = _as_list(value)
    if not items:
        return None
    if len(items) != 1:
        raise field_error(src, where, f"has {len(items)} values, expected one")
    return check_number(items[0], src, where)


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


# --------------------------------------------------------------------------------------- PT17 old (annolist) format


def _old_format_person(rect: dict, src: str, where: str) -> Person:
    keypoints = np.zeros((NUM_JOINTS, 3), np.float32)
    joint_scores = np.zeros(NUM_JOINTS, np.float32)
    has_joint_scores = False
    annopoints = _as_list(rect.get("annopoints"))
    points = _as_list(annopoints[0].get("point")) if annopoints and isinstance(annopoints[0], dict) else []
    for k, point in enumerate(points):
        pwhere = f"{where}.annopoints[0].point[{k}]"
        if not isinstance(point, dict):
            raise field_error(src, pwhere, f"is {type(point).__name__}, expected an object")
        joint = _scalar(point.get("id"), src, f"{pwhere}.id")
        if joint is None or joint != int(joint) or not 0 <= joint < len(POSEVAL15_TO_POSETRACK17):
            raise field_error(src, f"{pwhere}.id", f"is {point.get('id')!r}, expected a joint id 0..14")
        x, y = _scalar(point.get("x"), src, f"{pwhere}.x"), _scalar(point.get("y"), src, f"{pwhere}.y")
        if x is None or y is None:
            raise field_error(src, pwhere, "lacks x or y")
        visible = _scalar(point.get("is_visible"), src, f"{pwhere}.is_visible")
        slot = POSEVAL15_TO_POSETRACK17[int(joint)]
        keypoints[slot] = (x, y, FLAG_OCCLUDED if visible == 0 else FLAG_LABELED)
        score = _scalar(point.get("score"), src, f"{pwhere}.score")
        if score is not None:
            joint_scores[slot], has_joint_scores = score, True
    corners = [_scalar(rect.get(key), src, f"{where}.{key}") for key in ("x1", "y1", "x2", "y2")]
    bbox_head = None
    if all(c is not None for c in corners):
        x1, y1, x2, y2 = corners
        bbox_head = np.array([x1, y1, x2 - x1, y2 - y1], np.float32)
    track_id = _scalar(rect.get("track_id"), src, f"{where}.track_id")
    score = _scalar(rect.get("score"), src, f"{where}.score")
    return Person(
        keypoints=keypoints,
        bbox=bbox_from_keypoints(keypoints),
        bbox_head=bbox_head,
        track_id=-1 if track_id is None else int(track_id),
        score=1.0 if score is None else score,
        joint_scores=joint_scores if has_joint_scores else None,
    )


def _old_format_ignore_regions(regions: Any, src: str, where: str) -> list[np.ndarray]:
    polygons = []
    for r, region in enumerate(_as_list(regions)):
        if not isinstance(region, dict):
            raise field_error(src, f"{where}[{r}]", f"is {type(region).__name__}, expected an object with 'point'")
        points = []
        for k, point in enumerate(_as_list(region.get("point"))):
            pwhere = f"{where}[{r}].point[{k}]"
            if not isinstance(point, dict):
                raise field_error(src, pwhere, f"is {type(point).__name__}, expected an object")
            x, y = _scalar(point.get("x"), src, f"{pwhere}.x"), _scalar(point.get("y"), src, f"{pwhere}.y")
            if x is None or y is None:
                raise field_error(src, pwhere, "lacks x or y")
            points.append((x, y))
        polygons.append(np.array(points, np.float64).reshape(-1, 2))
    return polygons


def _image_name(frame: dict, src: str, where: str) -> str:
    images = _as_list(frame.get("image"))
    name = images[0].get("name") if images and isinstance(images[0], dict) else None
    if isinstance(name, list) and len(name) == 1:
        name = name[0]
    if not isinstance(name, str) or not name:
        raise field_error(src, f"{where}.image", "has no name")
    return name


def _parse_old_format(annolist: Any, path: Path, dataset: Optional[str]) -> list[Sequence]:
    src = str(path)
    entries = _as_list(annolist)
    frames = []
    used_ids: set[int] = set()
    for i, entry in enumerate(entries):
        where = f"annolist[{i}]"
        if not isinstance(entry, dict):
            raise field_error(src, where, f"is {type(entry).__name__}, expected an object")
        file_name = _image_name(entry, src, where)
        try:
            frame_index = parse_frame_index(file_name)
        except ValueError as err:
            raise field_error(src, f"{where}.image.name", str(err).replace("frame file name ", "")) from None
        people = []
        for k, rect in enumerate(_as_list(entry.get("annorect"))):
            if not isinstance(rect, dict):
                raise field_error(src, f"{where}.annorect[{k}]", f"is {type(rect).__name__}, expected an object")
            people.append(_old_format_person(rect, src, f"{where}.annorect[{k}]"))
        labelled = _scalar(entry.get("is_labeled"), src, f"{where}.is_labeled")
        # PT17 files carry no image ids; the PT18 formula keeps them unique and meaningful where the names allow,
        # otherwise the 1-based position in the file stands in (poseval's imgnum).
        try:
            image_id = posetrack18_image_id(file_name)
        except DataFormatError:
            image_id = i + 1
        if image_id in used_ids:
            image_id = i + 1
        used_ids.add(image_id)
        frames.append(Frame(
            file_name=file_name,
            frame_index=frame_index,
            image_id=image_id,
            is_labeled=bool(people) if labelled is None else bool(labelled),
            people=people,
            ignore_regions=_old_format_ignore_regions(entry.get("ignore_regions"), src, f"{where}.ignore_regions"),
            has_labeled_person=bool(people),
        ))
    return [Sequence(name=path.stem, frames=frames, nframes=len(frames), dataset=dataset or "posetrack17",
                     source=src, vid_id="")]


def _mat_to_python(value: Any) -> Any:
    """loadmat(squeeze_me=True, struct_as_record=False) objects -> dicts, lists and Python numbers."""
    from scipy.io.matlab import mat_struct

    if isinstance(value, mat_struct):
        return {name: _mat_to_python(getattr(value, name)) for name in value._fieldnames}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_mat_to_python(v) for v in value.reshape(-1)]
        if value.dtype.kind in "US":
            return str(value.item()) if value.size == 1 else [str(v) for v in value.reshape(-1)]
        return value.item() if value.ndim == 0 else value.reshape(-1).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_mat(path: Path, dataset: Optional[str]) -> list[Sequence]:
    import scipy.io

    try:
        contents = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise DataFormatError(f"{path}: MATLAB v7.3 (HDF5) file; save it as -v7 or convert it with poseval's "
                              f"mat2json") from None
    except Exception as err:  # scipy raises ValueError/TypeError/OSError variants for non-.mat content
        raise DataFormatError(f"{path}: not a readable MATLAB file ({err})") from None
    if "annolist" not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "nothing"
        raise DataFormatError(f"{path}: no 'annolist' variable (found: {found})")
    return _parse_old_format(_mat_to_python(contents["annolist"]), path, dataset)


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
        return _read_mat(path, dataset)
    doc = read_json(path)
    if isinstance(doc, list):
        raise DataFormatError(f"{path}: top level is a list (a detection or results file?); expected an object with "
                              f"images/annotations (PoseTrack18/21) or annolist (PoseTrack17)")
    if not isinstance(doc, dict):
        raise DataFormatError(f"{path}: top level is {type(doc).__name__}, expected an object")
    if "annolist" in doc:
        return _parse_old_format(doc["annolist"], path, dataset)
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


# --------------------------------------------------------------------------------------------------- writer


def _flat_keypoints(keypoints: np.ndarray) -> list[float]:
    flat = []
    for x, y, flag in keypoints.astype(np.float64):
        flat.extend((x, y, 1.0 if flag >= FLAG_LABELED else 0.0))
    return flat


def sequence_to_posetrack18_json(sequence: Sequence) -> dict:
    """A Sequence in the PoseTrack18 per-sequence schema (plus PT21's ``has_labeled_person`` and ``person_id``
    when ``sequence.dataset == "posetrack21"``). Reading the result back gives equal records.

    Flags are written back in the files' convention: :data:`FLAG_LABELED` -> 1, :data:`FLAG_OCCLUDED` -> 0 with
    the coordinates kept (so an occluded joint exactly at (0, 0) cannot survive a PT18 round trip). Annotation ids
    are ``image_id * 100 + position`` as in the official files.

    Raises:
        DataFormatError: two frames share an image id (the schema links people to frames by id).
    """
    is_pt21 = sequence.dataset == "posetrack21"
    images, annotations, seen = [], [], set()
    for frame in sequence.frames:
        if frame.image_id in seen:
            raise DataFormatError(f"sequence {sequence.name}: image id {frame.image_id} is used by two frames")
        seen.add(frame.image_id)
        image: dict[str, Any] = {
            "file_name": frame.file_name,
            "id": frame.image_id,
            "frame_id": frame.image_id,
            "vid_id": sequence.vid_id,
            "nframes": sequence.nframes,
            "is_labeled": frame.is_labeled,
            "ignore_regions_x": [[float(v) for v in polygon[:, 0]] for polygon in frame.ignore_regions],
            "ignore_regions_y": [[float(v) for v in polygon[:, 1]] for polygon in frame.ignore_regions],
        }
        if is_pt21:
            image["has_labeled_person"] = frame.has_labeled_person
        if frame.width or frame.height:
            image["width"], image["height"] = frame.width, frame.height
        images.append(image)
        for k, person in enumerate(frame.people):
            annotation: dict[str, Any] = {
                "id": frame.image_id * 100 + k,
                "image_id": frame.image_id,
                "category_id": 1,
                "track_id": person.track_id,
                "bbox": [float(v) for v in person.bbox],
                "keypoints": _flat_keypoints(person.keypoints),
                "scores": [] if person.joint_scores is None else [float(v) for v in person.joint_scores],
                "num_keypoints": person.num_labeled,
                "iscrowd": False,
            }
            if person.bbox_head is not None:
                annotation["bbox_head"] = [float(v) for v in person.bbox_head]
            if is_pt21:
                annotation["person_id"] = person.person_id
            if person.score != 1.0:
                annotation["score"] = float(person.score)
            annotations.append(annotation)
    category = {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(POSETRACK17.names),
        "skeleton": [[a + 1, b + 1] for a, b in POSETRACK17.skeleton],
    }
    return {"images": images, "annotations": annotations, "categories": [category]}


def save_sequences(sequences: Iterable[Sequence], out_dir: str | Path) -> list[Path]:
    """Write each sequence to ``out_dir/<name>.json`` in the PoseTrack18 schema (atomic writes).

    Returns:
        The written paths, in input order.
    Raises:
        DataFormatError: two sequences share a name.
    """
    out_dir = Path(out_dir)
    sequences = list(sequences)
    names = [s.name for s in sequences]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataFormatError(f"{out_dir}: several sequences are named {', '.join(duplicates)}")
    written = []
    for sequence in sequences:
        target = out_dir / f"{sequence.name}.json"
        atomic_write_json(target, sequence_to_posetrack18_json(sequence))
        written.append(target)
    return written

