"""Reading PoseTrack files the way poseval reads them: per-person arrays for the AP and MOTA evaluators.

Facts: ``docs/facts/posetrack-facts.md`` sections 7 (what poseval reads) and 8 (steps 1-4: conversion, evaluated
frames, rects without points, ignore regions). :func:`_prepare_poseval` gives one sequence's GT and predicted
people after every cleaning step, which is where the AP (:mod:`tdmi.evaluation.posetrack_ap`) and the tracking
metrics (:mod:`tdmi.evaluation.posetrack_mota`) start; PoseTrack21's reading is in
:mod:`tdmi.evaluation.pt21_files`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from tdmi.errors import DataFormatError
from tdmi.keypoints import POSETRACK17, POSETRACK17_TO_POSEVAL15, POSEVAL15

#: Score poseval gives a predicted joint without a score.
MISSING_SCORE = -9999.0
#: poseval asserts ``track_id < MAX_TRACK_ID`` (it offsets ids by sequence index times this).
MAX_TRACK_ID = 10000
#: PCKh threshold: distance / head size.
DIST_THRESHOLD = 0.5
#: Head size factor: head size = HEAD_SIZE_FACTOR x head-box diagonal.
HEAD_SIZE_FACTOR = 0.6
NUM_JOINTS = POSEVAL15.num_joints


# PoseTrack21 kit: the 17 slots minus the ears, in 17-slot order; its groups in its own index order.
_PT21_SLOTS: tuple[int, ...] = tuple(i for i in range(POSETRACK17.num_joints) if POSETRACK17_TO_POSEVAL15[i] >= 0)
_PT21_TO_POSEVAL: tuple[int, ...] = tuple(POSETRACK17_TO_POSEVAL15[s] for s in _PT21_SLOTS)
_PT21_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (2, 1, 0), "Shoulder": (3, 4), "Elbow": (5, 6), "Wrist": (7, 8), "Hip": (9, 10), "Knee": (11, 12),
    "Ankle": (14, 13),
}
# poseval's names of the 17 slots (its categories list); used when a PoseTrack18 file has no categories.
_POSEVAL_NAMES = POSEVAL15.names


# ------------------------------------------------------------------------------------------- internal records


@dataclass
class _People:
    """Persons of one file (or of all evaluated frames), one row each, in frame order then file order.

    ``xy [N, 15, 2]``, ``present [N, 15]``, ``score [N, 15]`` use the protocol's joint order; ``frame [N]`` is the
    frame index; ``head_size [N]`` is NaN when the person has no head box (only GT uses it); ``track_id [N]``
    (float64, NaN when absent) is read for the tracking metrics.
    """

    frame: np.ndarray
    xy: np.ndarray
    present: np.ndarray
    score: np.ndarray
    head_size: np.ndarray
    track_id: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.track_id is None:
            self.track_id = np.full(len(self.frame), np.nan)

    @staticmethod
    def empty() -> "_People":
        return _People(np.zeros(0, np.int64), np.zeros((0, NUM_JOINTS, 2)), np.zeros((0, NUM_JOINTS), bool),
                       np.zeros((0, NUM_JOINTS)), np.zeros(0))

    def select(self, mask: np.ndarray) -> "_People":
        return _People(self.frame[mask], self.xy[mask], self.present[mask], self.score[mask], self.head_size[mask],
                       self.track_id[mask])

    @staticmethod
    def concat(parts: Sequence["_People"], frame_offsets: Sequence[int]) -> "_People":
        if not parts:
            return _People.empty()
        return _People(
            np.concatenate([p.frame + off for p, off in zip(parts, frame_offsets)]),
            np.concatenate([p.xy for p in parts]),
            np.concatenate([p.present for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.head_size for p in parts]),
            np.concatenate([p.track_id for p in parts]),
        )


@dataclass
class _PosevalFile:
    """One file in poseval's old-format view, kept flat so that ignore regions can remove single points.

    People: ``frame [N]``, ``structured [N]`` (has ``annopoints[0].point``), ``head [N, 4]`` x1, y1, x2, y2 (NaN if
    absent). Points: ``owner [K]`` person row, ``joint [K]`` poseval id (-1 when not 0..14, kept because such points
    still keep a person alive), ``xy [K, 2]``, ``score [K]`` (NaN = no score).
    """

    source: str
    num_frames: int
    frame_names: list[str]
    frame_people: np.ndarray  # [F] raw person count per frame (before any cleaning)
    frame: np.ndarray
    structured: np.ndarray
    head: np.ndarray
    owner: np.ndarray
    joint: np.ndarray
    xy: np.ndarray
    score: np.ndarray
    ignore_regions: dict[int, list[np.ndarray]]  # frame -> polygons (each [V, 2]); only frames with regions
    track_id: Optional[np.ndarray] = None  # [N] float64, NaN where a person has none

    def __post_init__(self) -> None:
        if self.track_id is None:
            self.track_id = np.full(len(self.frame), np.nan)


# --------------------------------------------------------------------------------------------------- file reading


try:  # orjson parses 3-5x faster, which is most of evaluating from files; numbers come out identical
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency, but the evaluator works without it
    _orjson = None


def _parse_json(raw: bytes):
    if _orjson is not None:
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass  # NaN/Infinity literals, integers beyond 64 bits, ...: Python's parser accepts or explains them
    return json.loads(raw.decode("utf-8"))


def read_json(path: str | os.PathLike) -> dict:
    """Read one JSON file, turning any failure into a DataFormatError that names the file."""
    try:
        with open(path, "rb") as handle:
            data = _parse_json(handle.read())
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except OSError as err:  # a folder named *.json, no permission, ...
        raise DataFormatError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object with 'annolist' or 'images', got {type(data).__name__}")
    return data


def read_sequence_pair(gt_path: str, pred_path: str) -> tuple[dict, Optional[dict]]:
    """One sequence's GT file and its prediction file (None when there is no prediction file)."""
    return read_json(gt_path), (read_json(pred_path) if os.path.isfile(pred_path) else None)


def _number_array(rows: list, width: int, what: str, source: str) -> np.ndarray:
    """``[len(rows), width]`` float64 from lists of numbers, with an error naming the first bad row."""
    if not rows:
        return np.zeros((0, width))
    try:
        arr = np.asarray(rows, dtype=np.float64)
        if arr.shape == (len(rows), width):
            return arr
    except (TypeError, ValueError):
        pass
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != width:
            count = len(row) if isinstance(row, (list, tuple)) else type(row).__name__
            raise DataFormatError(f"{source}: {what}[{i}] has {count} numbers, expected {width}")
        try:
            np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataFormatError(f"{source}: {what}[{i}] contains a value that is not a number") from None
    raise DataFormatError(f"{source}: {what} is malformed")


def _check_track_ids(track_ids: list, frame_of: list[int], frame_names: list[str], source: str, unique: bool,
                     max_id: Optional[int] = MAX_TRACK_ID) -> None:
    """poseval's checks: every id < 10000 (``max_id``; None = no limit, as the PT21 kit); with ``unique``, no id
    twice within a frame."""
    given = [(f, t) for f, t in zip(frame_of, track_ids) if t is not None]
    if not given:
        return
    try:
        arr = np.asarray([t for _, t in given], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataFormatError(f"{source}: a track_id is not a number") from None
    if max_id is not None and np.any(arr >= max_id):
        raise DataFormatError(f"{source}: track_id {int(arr.max())} >= {MAX_TRACK_ID} (poseval requires ids < 10000)")
    if unique:
        frames = np.asarray([f for f, _ in given])
        pairs = np.stack((frames.astype(np.float64), arr), axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        if np.any(counts > 1):
            bad_frame, bad_id = uniq[np.argmax(counts > 1)]
            raise DataFormatError(f"{source}: track_id {bad_id:g} appears twice in frame "
                                  f"{frame_names[int(bad_frame)]!r}; track ids must be unique within a frame")


def _uniform_rows(rows: list, min_width: int) -> Optional[np.ndarray]:
    """``[len(rows), W]`` float64 when every row is a list of at least ``min_width`` numbers of one length W,
    else None (the caller then reads row by row)."""
    if not rows or any(not isinstance(row, list) or len(row) < min_width for row in rows):
        return None
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.ndim == 2 else None


def _track_id_array(track_ids: list) -> np.ndarray:
    """Track ids as float64 ``[N]`` (NaN where absent); :func:`_check_track_ids` has already checked them."""
    return np.asarray([np.nan if t is None else float(t) for t in track_ids], dtype=np.float64)


def _numbers(value: Any, field_name: str, source: str) -> np.ndarray:
    """A list of numbers as float64, or a DataFormatError naming the file and the field."""
    try:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise TypeError
        return np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataFormatError(f"{source}: {field_name} must be a list of numbers, got {value!r:.80}") from None


def _polygon_arrays(xs_list: Any, ys_list: Any, source: str = "<ground truth>") -> list[np.ndarray]:
    """Ignore regions as ``[V, 2]`` arrays (x and y lists zipped, like poseval)."""
    polygons = []
    for k, (xs, ys) in enumerate(zip(xs_list, ys_list)):
        x = _numbers(xs, f"ignore_regions_x[{k}]", source)
        y = _numbers(ys, f"ignore_regions_y[{k}]", source)
        n = min(len(x), len(y))  # poseval zips the two lists, dropping unpaired coordinates
        for name, values in (("x", x[:n]), ("y", y[:n])):
            # null, NaN or Infinity: no polygon can be built (poseval fails inside shapely; GEOS raises here)
            if not np.isfinite(values).all():
                bad = int(np.flatnonzero(~np.isfinite(values))[0])
                raise DataFormatError(f"{source}: ignore_regions_{name}[{k}][{bad}] is not a finite number")
        polygons.append(np.stack([x[:n], y[:n]], axis=1))
    return polygons


def _slot_table(data: dict, source: str) -> np.ndarray:
    """poseval id of each keypoint slot of a PoseTrack18 file, from its ``categories`` (-1 = not scored)."""
    categories = data.get("categories")
    if not categories:
        names = list(POSETRACK17.names)
    else:
        try:
            names = list(categories[0]["keypoints"])
        except (KeyError, IndexError, TypeError):
            raise DataFormatError(f"{source}: categories[0] has no 'keypoints' list") from None
        if len(names) not in (15, 17):
            raise DataFormatError(f"{source}: categories[0].keypoints has {len(names)} names, expected 15 or 17")
        missing = [n for n in _POSEVAL_NAMES if n not in names]
        if missing:
            raise DataFormatError(f"{source}: categories[0].keypoints lacks {', '.join(missing)}")
    return np.asarray([_POSEVAL_NAMES.index(n) if n in _POSEVAL_NAMES else -1 for n in names], dtype=np.int64)


def _folder_token(folder: str) -> str:
    """poseval's video token of an image folder: its name up to the first underscore."""
    return os.path.basename(folder).split("_")[0]


def _video_token(file_name: Any) -> str:
    return _folder_token(os.path.dirname(str(file_name)))


def _read_posetrack18_poseval(data: dict, source: str, is_gt: bool) -> _PosevalFile:
    """A PoseTrack18 file converted the way poseval's converter does it (facts 8, step 1)."""
    images = data.get("images")
    if not isinstance(images, list):
        raise DataFormatError(f"{source}: 'images' must be a list")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataFormatError(f"{source}: 'annotations' must be a list")
    slots = _slot_table(data, source)
    try:
        image_ids = [im["id"] for im in images]
        file_names = [im["file_name"] for im in images]
    except (KeyError, TypeError):
        raise DataFormatError(f"{source}: every entry of 'images' needs 'id' and 'file_name'") from None
    # poseval converts only the first video of a file (images grouped by the folder token of file_name).
    if images:
        first = _video_token(file_names[0])
        folders = [os.path.dirname(str(name)) for name in file_names]
        # a sequence has one or two folders: tokenise each folder name once
        tokens = {folder: _folder_token(folder) for folder in set(folders)}
        kept = [i for i, folder in enumerate(folders) if tokens[folder] == first]
    else:
        kept = []
    by_image: dict[Any, list[int]] = defaultdict(list)
    for index, ann in enumerate(annotations):
        try:
            by_image[ann["image_id"]].append(index)
        except (KeyError, TypeError):
            raise DataFormatError(f"{source}: annotations[{index}] has no image_id") from None

    frame_names = [str(file_names[i]) for i in kept]
    person_rows: list[int] = []
    person_frame: list[int] = []
    frame_people = np.zeros(len(kept), dtype=np.int64)
    ignore: dict[int, list[np.ndarray]] = {}
    for frame, image_index in enumerate(kept):
        rows = by_image.get(image_ids[image_index], [])
        person_rows.extend(rows)
        person_frame.extend([frame] * len(rows))
        frame_people[frame] = len(rows)
        if is_gt:
            image = images[image_index]
            if "ignore_regions_x" in image and "ignore_regions_y" in image:
                polygons = _polygon_arrays(image["ignore_regions_x"], image["ignore_regions_y"], source)
                if polygons:
                    ignore[frame] = polygons

    people = [annotations[i] for i in person_rows]
    num_slots = len(slots)
    keypoints = _number_array([p.get("keypoints") for p in people], 3 * num_slots, "annotations.keypoints", source)
    keypoints = keypoints.reshape(-1, num_slots, 3)
    try:
        track_ids: list = [person["track_id"] for person in people]
    except KeyError:
        row = next(r for r, person in enumerate(people) if "track_id" not in person)
        raise DataFormatError(f"{source}: annotations[{person_rows[row]}] has no track_id") from None
    scores = np.full((len(people), num_slots), np.nan)
    head = np.full((len(people), 4), np.nan)
    # The common file (every person with full scores and a head box) is read in one call per field; any other
    # file takes the per-person path, which also words the errors.
    score_rows = [person.get("scores") for person in people] if not is_gt else []
    fast_scores = _uniform_rows(score_rows, num_slots)
    if fast_scores is not None:
        scores = fast_scores[:, :num_slots]
    box_rows = [person.get("bbox_head") for person in people]
    fast_boxes = _uniform_rows(box_rows, 4)
    if fast_boxes is not None and fast_boxes.shape[1] == 4:
        head = np.concatenate([fast_boxes[:, :2], fast_boxes[:, :2] + fast_boxes[:, 2:]], axis=1)
        box_rows = []
    for row, person in enumerate(people):
        joint_scores = score_rows[row] if fast_scores is None and score_rows else None
        if joint_scores:
            values = _numbers(joint_scores, f"annotations[{person_rows[row]}].scores", source)
            if len(values) < num_slots:
                raise DataFormatError(f"{source}: annotations[{person_rows[row]}].scores has {len(values)} "
                                      f"values, expected {num_slots}")
            scores[row] = values[:num_slots]
        box = box_rows[row] if box_rows else None
        if box is not None:
            values = _numbers(box, f"annotations[{person_rows[row]}].bbox_head", source)
            if len(values) != 4:
                raise DataFormatError(f"{source}: annotations[{person_rows[row]}].bbox_head needs 4 numbers")
            x, y, w, h = values
            head[row] = (x, y, x + w, y + h)
    _check_track_ids(track_ids, person_frame, frame_names, source, unique=not is_gt)

    # Points: every slot with a poseval id, except the (0, 0, 0) "not annotated" triples.
    n = len(people)
    owner = np.repeat(np.arange(n), num_slots)
    joint = np.tile(slots, n)
    flat = keypoints.reshape(-1, 3)
    keep = (joint >= 0) & ~((flat[:, 0] == 0) & (flat[:, 1] == 0) & (flat[:, 2] == 0))
    return _PosevalFile(
        source=source, num_frames=len(kept), frame_names=frame_names, frame_people=frame_people,
        frame=np.asarray(person_frame, dtype=np.int64), structured=np.ones(n, dtype=bool), head=head,
        owner=owner[keep], joint=joint[keep], xy=flat[keep, :2], score=scores.reshape(-1)[keep],
        ignore_regions=ignore, track_id=_track_id_array(track_ids),
    )


def _first(value: Any, what: str, source: str) -> Any:
    """Old-format values are 1-element lists."""
    if isinstance(value, list):
        if not value:
            raise DataFormatError(f"{source}: {what} is an empty list")
        return value[0]
    return value


def _read_annolist_poseval(data: dict, source: str, is_gt: bool) -> _PosevalFile:
    """A PoseTrack17 ``annolist`` file read the way poseval reads it."""
    annolist = data["annolist"]
    if not isinstance(annolist, list):
        raise DataFormatError(f"{source}: 'annolist' must be a list")
    frame_names: list[str] = []
    frame_people = np.zeros(len(annolist), dtype=np.int64)
    person_frame: list[int] = []
    structured: list[bool] = []
    heads: list[tuple[float, float, float, float]] = []
    track_ids: list = []
    owner: list[int] = []
    joint: list[int] = []
    xy: list[tuple[float, float]] = []
    score: list[float] = []
    ignore: dict[int, list[np.ndarray]] = {}
    for frame, entry in enumerate(annolist):
        try:
            name = entry["image"][0]["name"]
        except (KeyError, IndexError, TypeError):
            name = f"annolist[{frame}]"
        frame_names.append(str(name))
        if "annorect" not in entry:
            raise DataFormatError(f"{source}: annolist[{frame}] has no 'annorect'")
        rects = entry["annorect"]
        frame_people[frame] = len(rects)
        regions = entry.get("ignore_regions")
        if is_gt and regions:
            try:
                ignore[frame] = [
                    np.asarray([(_first(p["x"], "x", source), _first(p["y"], "y", source)) for p in region["point"]],
                               dtype=np.float64).reshape(-1, 2)
                    for region in regions
                ]
            except (KeyError, TypeError):
                raise DataFormatError(f"{source}: annolist[{frame}].ignore_regions is malformed") from None
        for r, rect in enumerate(rects):
            row = len(person_frame)
            person_frame.append(frame)
            has = ("annopoints" in rect and isinstance(rect["annopoints"], list) and len(rect["annopoints"]) > 0
                   and len(rect["annopoints"][0]) > 0 and "point" in rect["annopoints"][0])
            structured.append(bool(has))
            if all(k in rect for k in ("x1", "y1", "x2", "y2")):
                heads.append(tuple(float(_first(rect[k], k, source)) for k in ("x1", "y1", "x2", "y2")))
            else:
                heads.append((np.nan,) * 4)
            track_ids.append(_first(rect["track_id"], "track_id", source) if "track_id" in rect else None)
            if not has:
                continue
            for k, point in enumerate(rect["annopoints"][0]["point"] or []):
                pid = point.get("id")
                pid = _first(pid, "point id", source) if pid is not None else None
                joint_id = int(pid) if isinstance(pid, (int, float)) and float(pid).is_integer() else -1
                owner.append(row)
                joint.append(joint_id if 0 <= joint_id < NUM_JOINTS else -1)
                try:
                    xy.append((float(_first(point["x"], "x", source)), float(_first(point["y"], "y", source))))
                except (KeyError, TypeError, ValueError):
                    raise DataFormatError(f"{source}: annolist[{frame}].annorect[{r}].annopoints[0].point[{k}] has no "
                                          "numeric x/y") from None
                s = point.get("score")
                score.append(float(_first(s, "score", source)) if s is not None else np.nan)
    _check_track_ids(track_ids, person_frame, frame_names, source, unique=not is_gt)
    return _PosevalFile(
        source=source, num_frames=len(annolist), frame_names=frame_names, frame_people=frame_people,
        frame=np.asarray(person_frame, dtype=np.int64), structured=np.asarray(structured, dtype=bool),
        head=np.asarray(heads, dtype=np.float64).reshape(-1, 4), owner=np.asarray(owner, dtype=np.int64),
        joint=np.asarray(joint, dtype=np.int64), xy=np.asarray(xy, dtype=np.float64).reshape(-1, 2),
        score=np.asarray(score, dtype=np.float64), ignore_regions=ignore, track_id=_track_id_array(track_ids),
    )


@contextmanager
def malformed_file(source: str):
    """Turn what a damaged file makes the readers trip over (a list where an object belongs, a missing field
    deep inside, a string where a number belongs) into one :class:`DataFormatError` that names the file.
    The readers check the common cases with precise messages; this is the net under the rest."""
    try:
        yield
    except DataFormatError:
        raise
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as err:
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise DataFormatError(f"{source}: malformed file: an entry does not have the expected structure or "
                              f"types ({detail})") from None


def _read_poseval_file(data: dict, source: str, is_gt: bool) -> _PosevalFile:
    if not isinstance(data, dict):
        raise DataFormatError(f"{source}: the top level is {type(data).__name__}, expected an object")
    with malformed_file(source):
        if "annolist" in data:
            return _read_annolist_poseval(data, source, is_gt)
        if "images" in data:
            return _read_posetrack18_poseval(data, source, is_gt)
    raise DataFormatError(f"{source}: neither a PoseTrack17 ('annolist') nor a PoseTrack18 ('images') file")


def _empty_predictions(num_frames: int, source: str) -> _PosevalFile:
    return _PosevalFile(source, num_frames, [""] * num_frames, np.zeros(num_frames, np.int64), np.zeros(0, np.int64),
                        np.zeros(0, bool), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros((0, 2)), np.zeros(0), {})


# --------------------------------------------------------------------------------------------- ignore regions


def _build_polygons(polygons: Sequence[np.ndarray]) -> list[tuple[Any, bool]]:
    """shapely polygons with their validity; regions with fewer than 3 vertices (poseval cannot even build them)
    are left out, they contain nothing."""
    import shapely

    built = []
    for vertices in polygons:
        if len(vertices) >= 3:
            polygon = shapely.Polygon(vertices)
            built.append((polygon, bool(polygon.is_valid)))
    return built


def _inside_any(points: np.ndarray, polygons: Sequence[tuple[Any, bool]]) -> np.ndarray:
    """``[K]`` True where a point lies strictly inside one of the polygons (shapely ``Polygon.contains``).

    Valid polygons use shapely's vectorised (prepared) point test, invalid ones (self-intersecting hand-drawn
    regions) the plain ``contains`` predicate that poseval calls, so both agree with poseval.
    """
    import shapely

    inside = np.zeros(len(points), dtype=bool)
    if len(points) == 0:
        return inside
    for polygon, valid in polygons:
        if valid:
            inside |= shapely.contains_xy(polygon, points[:, 0], points[:, 1])
        else:
            inside |= shapely.contains(polygon, shapely.points(points))
    return inside


# ------------------------------------------------------------------------------------ poseval per-sequence prep


def _prepare_poseval(gt: _PosevalFile, pred: _PosevalFile) -> tuple[_People, _People, list[str]]:
    """Cleaning of facts 8 steps 3-4 for one sequence; returns GT people, predicted people, evaluated frame names."""
    if pred.num_frames != gt.num_frames:
        raise DataFormatError(f"{pred.source}: # prediction frames {pred.num_frames} <> # GT frames {gt.num_frames} "
                              f"(GT file {gt.source}); frames are matched by position")
    evaluated = np.flatnonzero(gt.frame_people > 0)
    new_index = np.full(gt.num_frames, -1, dtype=np.int64)
    new_index[evaluated] = np.arange(len(evaluated))
    names = [gt.frame_names[i] for i in evaluated]

    region_polygons = {frame: _build_polygons(gt.ignore_regions[frame])
                       for frame in sorted(gt.ignore_regions) if new_index[frame] >= 0}

    def clean(f: _PosevalFile, is_gt: bool) -> _People:
        keep_person = f.structured & (new_index[f.frame] >= 0) if len(f.frame) else np.zeros(0, bool)
        point_alive = keep_person[f.owner] if len(f.owner) else np.zeros(0, bool)
        for frame, polygons in region_polygons.items():
            in_frame = point_alive & (f.frame[f.owner] == frame)
            idx = np.flatnonzero(in_frame)
            if len(idx):
                point_alive[idx[_inside_any(f.xy[idx], polygons)]] = False
            # A person of this frame left without points is removed (also one that had none).
            persons = np.flatnonzero(keep_person & (f.frame == frame))
            if len(persons):
                remaining = np.bincount(f.owner[point_alive], minlength=len(f.frame))[persons]
                keep_person[persons[remaining == 0]] = False
        rows = np.flatnonzero(keep_person)
        row_of = np.full(len(f.frame), -1, dtype=np.int64)
        row_of[rows] = np.arange(len(rows))
        n = len(rows)
        xy = np.zeros((n, NUM_JOINTS, 2))
        present = np.zeros((n, NUM_JOINTS), dtype=bool)
        score = np.full((n, NUM_JOINTS), MISSING_SCORE)
        sel = np.flatnonzero(point_alive & (f.joint >= 0))
        if len(sel):
            # poseval looks a joint up as the FIRST point with that id: keep first occurrences only.
            key = row_of[f.owner[sel]] * NUM_JOINTS + f.joint[sel]
            _, first = np.unique(key, return_index=True)
            sel = sel[first]
            r, j = row_of[f.owner[sel]], f.joint[sel]
            xy[r, j] = f.xy[sel]
            present[r, j] = True
            s = f.score[sel]
            score[r, j] = np.where(np.isnan(s), MISSING_SCORE, s)
        head_size = np.full(n, np.nan)
        if is_gt and n:
            box = f.head[rows]
            dx, dy = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
            head_size = HEAD_SIZE_FACTOR * np.sqrt(dx * dx + dy * dy)
        return _People(new_index[f.frame[rows]], xy, present, score, head_size, f.track_id[rows])

    return clean(gt, True), clean(pred, False), names
