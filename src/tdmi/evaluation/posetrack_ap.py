"""PoseTrack multi-person pose AP: our own implementation of poseval's rules, plus the PoseTrack21 kit's rules.

Facts: ``shared/docs/posetrack-facts.md`` sections 7 (what poseval reads), 8 (poseval's AP algorithm), 10 (the
PoseTrack21 protocol) and 1 (joint orders). Written from those facts; no poseval code is used or imported.

``protocol="poseval"`` (PoseTrack17/18, the default) reproduces the official ``poseval`` numbers:

- files: one GT file per sequence; the prediction file with the same name; frames matched BY POSITION, so the
  prediction file must list as many frames as the GT file. Both the PoseTrack18 layout (``images`` /
  ``annotations`` / ``categories``) and the PoseTrack17 ``annolist`` layout are read. PoseTrack18 files are
  converted like poseval: only the images of the first video (folder token of ``file_name``) are kept, a point
  is dropped when ``x == 0 and y == 0 and flag == 0``, ears are dropped (15 joints), the head box is
  ``bbox_head``; a predicted joint without a score gets -9999.
- track ids must be ``< 10000`` and, in predictions, unique within a frame (the poseval package raises).
- evaluated frames = frames whose GT lists at least one person; then rects without a point structure are dropped;
  in frames with ignore regions every GT and predicted point strictly inside a polygon (shapely ``contains``) is
  removed, and a person left without points is removed.
- matching per frame: head size = 0.6 x head-box diagonal, a joint matches when distance / head size <= 0.5,
  pck[p, g] = matched joints / GT joints of g; each prediction keeps only its best GT (first on ties), then each
  GT takes the prediction with the highest remaining pck (first on ties), none if that value is 0.
- every predicted joint is a detection: label 1 only if its person is matched and the joint matches; predicted
  joints the GT does not label are false positives. nGT[j] counts GT persons labelling joint j.
- AP per joint: ``np.argsort(scores)[::-1]`` over all detections (same call and the same input order as poseval,
  so ties break identically), VOC all-point AP. No predictions -> AP 0 (counted in the Mean); predictions but
  nGT = 0 -> NaN (excluded from the Mean, but NaN in its group). Mean = mean of the non-NaN joint APs, which
  weights Head 3/15 and every other group 2/15.

``protocol="pt21"`` follows the PoseTrack21 evaluation kit (``eval_type='pose_estim'``): frames = GT
``is_labeled`` frames, equal image ids at each position, joints present iff ``x > 0 and y > 0``, ignore regions
zero points (a person is dropped if all 15 points are inside or none is left valid), recall uses ``max(nGT, 1)``,
sequences in sorted order. Where the kit crashes (a frame without GT people but with predictions) we count the
predictions as false positives, which is what its code intends. The kit casts scores into the keypoint array, so
all-integer prediction files get truncated scores there; we do not copy that bug.

Hot path: per-person arrays for all frames, matching batched over padded frame blocks, AP by sorting; the only
Python loops run over files, frames with ignore regions and frame blocks, never over points.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np

from tdmi.atomic import atomic_write_json
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSETRACK17, POSETRACK17_TO_POSEVAL15, POSEVAL15, POSEVAL_GROUPS

Protocol = Literal["poseval", "pt21"]
PROTOCOLS: tuple[str, ...] = ("poseval", "pt21")

#: Score poseval gives a predicted joint without a score.
MISSING_SCORE = -9999.0
#: poseval asserts ``track_id < MAX_TRACK_ID`` (it offsets ids by sequence index times this).
MAX_TRACK_ID = 10000
#: PCKh threshold: distance / head size.
DIST_THRESHOLD = 0.5
#: Head size factor: head size = HEAD_SIZE_FACTOR x head-box diagonal.
HEAD_SIZE_FACTOR = 0.6
NUM_JOINTS = POSEVAL15.num_joints

#: Keys of the paper-style table, in print order. "Mean" is poseval's "Total".
TABLE_KEYS: tuple[str, ...] = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")

# PoseTrack21 kit: the 17 slots minus the ears, in 17-slot order; its groups in its own index order.
_PT21_SLOTS: tuple[int, ...] = tuple(i for i in range(POSETRACK17.num_joints) if POSETRACK17_TO_POSEVAL15[i] >= 0)
_PT21_TO_POSEVAL: tuple[int, ...] = tuple(POSETRACK17_TO_POSEVAL15[s] for s in _PT21_SLOTS)
_PT21_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (2, 1, 0), "Shoulder": (3, 4), "Elbow": (5, 6), "Wrist": (7, 8), "Hip": (9, 10), "Knee": (11, 12),
    "Ankle": (14, 13),
}
# poseval's names of the 17 slots (its categories list); used when a PoseTrack18 file has no categories.
_POSEVAL_NAMES = POSEVAL15.names


# ------------------------------------------------------------------------------------------------------ results


@dataclass
class APResult:
    """PoseTrack AP of one evaluation.

    Attributes:
        protocol: ``"poseval"`` or ``"pt21"``.
        per_joint_ap: ``[15]`` AP in percent per joint, in poseval order (``POSEVAL15.names``); NaN where the joint
            has predictions but no GT (poseval protocol).
        per_joint_precision / per_joint_recall: ``[15]`` precision / recall (percent) at the last ranked detection.
        table: the 8 paper columns ``TABLE_KEYS`` (percent); ``Mean`` = poseval's Total.
        mean_precision / mean_recall: poseval's "total" precision / recall (mean of the non-NaN joints).
        num_gt_joints: ``[15]`` GT joint count per joint (poseval order) over the evaluated frames.
        num_detections: ``[15]`` predicted joint count per joint (poseval order) over the evaluated frames.
        num_sequences / num_frames: sequences read and frames evaluated.
        num_gt_people / num_predicted_people: persons left after cleaning in the evaluated frames.
        sequences: sequence names in evaluation order.
        missing_predictions: sequences scored without a prediction file (``allow_missing``).
    """

    protocol: str
    per_joint_ap: np.ndarray
    per_joint_precision: np.ndarray
    per_joint_recall: np.ndarray
    table: dict[str, float]
    mean_precision: float
    mean_recall: float
    num_gt_joints: np.ndarray
    num_detections: np.ndarray
    num_sequences: int
    num_frames: int
    num_gt_people: int
    num_predicted_people: int
    sequences: list[str] = field(default_factory=list)
    missing_predictions: list[str] = field(default_factory=list)

    @property
    def mean_ap(self) -> float:
        return self.table["Mean"]

    def format_table(self) -> str:
        """The paper-style table: one header line, one line of values with one decimal."""
        header = " ".join(f"{key:>8}" for key in TABLE_KEYS)
        values = " ".join(f"{self.table[key]:>8.1f}" for key in TABLE_KEYS)
        return f"{header}\n{values}"

    def to_json_dict(self, **meta: Any) -> dict:
        """JSON form: the 8 table keys (percent, full precision) at top level, ``per_joint`` and ``meta`` below.

        NaN becomes ``null`` so the file stays valid JSON.
        """

        def clean(value: float) -> Optional[float]:
            value = float(value)
            return None if np.isnan(value) else value

        names = POSEVAL15.names
        out: dict[str, Any] = {key: clean(self.table[key]) for key in TABLE_KEYS}
        out["per_joint"] = {
            "ap": {n: clean(v) for n, v in zip(names, self.per_joint_ap)},
            "precision": {n: clean(v) for n, v in zip(names, self.per_joint_precision)},
            "recall": {n: clean(v) for n, v in zip(names, self.per_joint_recall)},
            "num_gt_joints": {n: int(v) for n, v in zip(names, self.num_gt_joints)},
            "num_detections": {n: int(v) for n, v in zip(names, self.num_detections)},
        }
        out["meta"] = {
            "protocol": self.protocol,
            "sequences": self.num_sequences,
            "frames_evaluated": self.num_frames,
            "gt_people": self.num_gt_people,
            "predicted_people": self.num_predicted_people,
            "mean_precision": clean(self.mean_precision),
            "mean_recall": clean(self.mean_recall),
            "missing_predictions": list(self.missing_predictions),
            **meta,
        }
        return out


# ------------------------------------------------------------------------------------------- internal records


@dataclass
class _People:
    """Persons of one file (or of all evaluated frames), one row each, in frame order then file order.

    ``xy [N, 15, 2]``, ``present [N, 15]``, ``score [N, 15]`` use the protocol's joint order; ``frame [N]`` is the
    frame index; ``head_size [N]`` is NaN when the person has no head box (only GT uses it).
    """

    frame: np.ndarray
    xy: np.ndarray
    present: np.ndarray
    score: np.ndarray
    head_size: np.ndarray

    @staticmethod
    def empty() -> "_People":
        return _People(np.zeros(0, np.int64), np.zeros((0, NUM_JOINTS, 2)), np.zeros((0, NUM_JOINTS), bool),
                       np.zeros((0, NUM_JOINTS)), np.zeros(0))

    def select(self, mask: np.ndarray) -> "_People":
        return _People(self.frame[mask], self.xy[mask], self.present[mask], self.score[mask], self.head_size[mask])

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


def _check_track_ids(track_ids: list, frame_of: list[int], frame_names: list[str], source: str, unique: bool) -> None:
    """poseval's checks: every id < 10000; in predictions no id twice within a frame."""
    given = [(f, t) for f, t in zip(frame_of, track_ids) if t is not None]
    if not given:
        return
    try:
        arr = np.asarray([t for _, t in given], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataFormatError(f"{source}: a track_id is not a number") from None
    if np.any(arr >= MAX_TRACK_ID):
        raise DataFormatError(f"{source}: track_id {int(arr.max())} >= {MAX_TRACK_ID} (poseval requires ids < 10000)")
    if unique:
        frames = np.asarray([f for f, _ in given])
        pairs = np.stack((frames.astype(np.float64), arr), axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        if np.any(counts > 1):
            bad_frame, bad_id = uniq[np.argmax(counts > 1)]
            raise DataFormatError(f"{source}: track_id {bad_id:g} appears twice in frame "
                                  f"{frame_names[int(bad_frame)]!r}; track ids must be unique within a frame")


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


def _video_token(file_name: Any) -> str:
    return os.path.basename(os.path.dirname(str(file_name))).split("_")[0]


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
        kept = [i for i, name in enumerate(file_names) if _video_token(name) == first]
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
    track_ids: list = []
    scores = np.full((len(people), num_slots), np.nan)
    head = np.full((len(people), 4), np.nan)
    for row, person in enumerate(people):
        if "track_id" not in person:
            raise DataFormatError(f"{source}: annotations[{person_rows[row]}] has no track_id")
        track_ids.append(person["track_id"])
        joint_scores = person.get("scores")
        if joint_scores and not is_gt:
            values = _numbers(joint_scores, f"annotations[{person_rows[row]}].scores", source)
            if len(values) < num_slots:
                raise DataFormatError(f"{source}: annotations[{person_rows[row]}].scores has {len(values)} "
                                      f"values, expected {num_slots}")
            scores[row] = values[:num_slots]
        box = person.get("bbox_head")
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
        ignore_regions=ignore,
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
        for rect in rects:
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
            for point in rect["annopoints"][0]["point"] or []:
                pid = point.get("id")
                pid = _first(pid, "point id", source) if pid is not None else None
                joint_id = int(pid) if isinstance(pid, (int, float)) and float(pid).is_integer() else -1
                owner.append(row)
                joint.append(joint_id if 0 <= joint_id < NUM_JOINTS else -1)
                try:
                    xy.append((float(_first(point["x"], "x", source)), float(_first(point["y"], "y", source))))
                except (KeyError, TypeError, ValueError):
                    raise DataFormatError(f"{source}: annolist[{frame}] has a point without numeric x/y") from None
                s = point.get("score")
                score.append(float(_first(s, "score", source)) if s is not None else np.nan)
    _check_track_ids(track_ids, person_frame, frame_names, source, unique=not is_gt)
    return _PosevalFile(
        source=source, num_frames=len(annolist), frame_names=frame_names, frame_people=frame_people,
        frame=np.asarray(person_frame, dtype=np.int64), structured=np.asarray(structured, dtype=bool),
        head=np.asarray(heads, dtype=np.float64).reshape(-1, 4), owner=np.asarray(owner, dtype=np.int64),
        joint=np.asarray(joint, dtype=np.int64), xy=np.asarray(xy, dtype=np.float64).reshape(-1, 2),
        score=np.asarray(score, dtype=np.float64), ignore_regions=ignore,
    )


def _read_poseval_file(data: dict, source: str, is_gt: bool) -> _PosevalFile:
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
        return _People(new_index[f.frame[rows]], xy, present, score, head_size)

    return clean(gt, True), clean(pred, False), names


# ---------------------------------------------------------------------------------------- PoseTrack21 reading


@dataclass
class _Pt21File:
    source: str
    image_ids: list
    is_labeled: np.ndarray  # [F] (GT only)
    frame: np.ndarray  # [N]
    keypoints: np.ndarray  # [N, 15, 3] x, y, score (preds) or flag (GT), PT21 order
    head_size: np.ndarray  # [N]
    ignore_regions: dict[int, list[np.ndarray]]


def _read_pt21_file(data: dict, source: str, is_gt: bool) -> _Pt21File:
    images = data.get("images")
    if not isinstance(images, list):
        raise DataFormatError(f"{source}: 'images' must be a list (the PoseTrack21 protocol reads PoseTrack18-style "
                              f"files)")
    annotations = data.get("annotations", [])
    try:
        image_ids = [im["id"] for im in images]
    except (KeyError, TypeError):
        raise DataFormatError(f"{source}: every entry of 'images' needs an 'id'") from None
    position = {}
    for i, image_id in enumerate(image_ids):
        if image_id in position:
            raise DataFormatError(f"{source}: image id {image_id} appears twice")
        position[image_id] = i
    labeled = np.zeros(len(images), dtype=bool)
    ignore: dict[int, list[np.ndarray]] = {}
    if is_gt:
        for i, image in enumerate(images):
            if "is_labeled" not in image:
                raise DataFormatError(f"{source}: images[{i}] has no 'is_labeled' (needed by the PoseTrack21 protocol)")
            labeled[i] = bool(image["is_labeled"])
            polygons = _polygon_arrays(image.get("ignore_regions_x", []), image.get("ignore_regions_y", []), source)
            if polygons:
                ignore[i] = polygons
    frames = []
    for index, ann in enumerate(annotations):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in position:
            raise DataFormatError(f"{source}: annotations[{index}].image_id {image_id!r} is not in 'images'")
        frames.append(position[image_id])
    # The kit groups persons by image in annotation order: a stable sort by frame gives the same order.
    order = np.argsort(np.asarray(frames, dtype=np.int64), kind="stable")
    people = [annotations[i] for i in order]
    frame = np.asarray(frames, dtype=np.int64)[order] if frames else np.zeros(0, np.int64)
    keypoints = _number_array([p.get("keypoints") for p in people], 51, "annotations.keypoints", source)
    keypoints = keypoints.reshape(-1, 17, 3)[:, _PT21_SLOTS]
    head_size = np.full(len(people), np.nan)
    track_ids = []
    if is_gt:
        for row, person in enumerate(people):
            box = person.get("bbox_head")
            if box is not None and len(box) == 4:
                x, y, w, h = (float(v) for v in box)
                dx, dy = (x + w) - x, (y + h) - y
                head_size[row] = HEAD_SIZE_FACTOR * np.sqrt(dx * dx + dy * dy)
    else:
        scores = []
        for row, person in enumerate(people):
            s = person.get("scores")
            scores.append([MISSING_SCORE] * 17 if s is None else s)
        keypoints[:, :, 2] = _number_array(scores, 17, "annotations.scores", source).reshape(-1, 17)[:, _PT21_SLOTS]
    for person in people:
        if "track_id" not in person:
            raise DataFormatError(f"{source}: an annotation has no track_id")
        track_ids.append(person["track_id"])
    names = [str(images[i].get("file_name", i)) for i in range(len(images))]
    _check_track_ids(track_ids, list(frame), names, source, unique=True)
    return _Pt21File(source, image_ids, labeled, frame, keypoints, head_size, ignore)


def _prepare_pt21(gt: _Pt21File, pred: _Pt21File) -> tuple[_People, _People, list[str]]:
    if len(pred.image_ids) != len(gt.image_ids):
        raise DataFormatError(f"{pred.source}: # prediction frames {len(pred.image_ids)} <> # GT frames "
                              f"{len(gt.image_ids)} (GT file {gt.source})")
    evaluated = np.flatnonzero(gt.is_labeled)
    for i in evaluated:
        if pred.image_ids[i] != gt.image_ids[i]:
            raise DataFormatError(f"{pred.source}: images[{i}].id is {pred.image_ids[i]!r} but the GT has "
                                  f"{gt.image_ids[i]!r}; the PoseTrack21 protocol needs equal ids at each position")
    new_index = np.full(len(gt.image_ids), -1, dtype=np.int64)
    new_index[evaluated] = np.arange(len(evaluated))
    region_polygons = {frame: _build_polygons(polygons) for frame, polygons in gt.ignore_regions.items()
                       if new_index[frame] >= 0}

    def clean(f: _Pt21File, is_gt: bool) -> _People:
        keep = new_index[f.frame] >= 0 if len(f.frame) else np.zeros(0, bool)
        kp = f.keypoints.copy()
        for frame, polygons in region_polygons.items():
            rows = np.flatnonzero(keep & (f.frame == frame))
            if not len(rows):
                continue
            inside = _inside_any(kp[rows, :, :2].reshape(-1, 2), polygons).reshape(len(rows), -1)
            all_inside = inside.all(axis=1)
            kp[rows] = np.where(inside[..., None], 0.0, kp[rows])
            invalid = ((kp[rows, :, 0] <= 0) & (kp[rows, :, 1] <= 0)).all(axis=1)
            keep[rows[all_inside | invalid]] = False
        sel = np.flatnonzero(keep)
        kp = kp[sel]
        present = (kp[:, :, 0] > 0) & (kp[:, :, 1] > 0)
        return _People(new_index[f.frame[sel]], kp[:, :, :2], present, kp[:, :, 2], f.head_size[sel])

    return clean(gt, True), clean(pred, False), [str(i) for i in evaluated]


# ------------------------------------------------------------------------------------------------------ matching


def _frame_starts(frame: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.bincount(frame, minlength=num_frames)
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(frame)) - starts[frame]
    return counts, starts, rank


def _match_labels(gt: _People, pred: _People, num_frames: int, block_elements: int = 4_000_000) -> np.ndarray:
    """``[NP, 15]`` True where a predicted joint counts as a true positive (poseval's two-step assignment).

    Frames are processed in blocks padded to the block's largest person counts; padding sits after the real
    persons so first-on-ties argmax behaves exactly as on the unpadded per-frame matrices.
    """
    labels = np.zeros(pred.present.shape, dtype=bool)
    if len(pred.frame) == 0 or len(gt.frame) == 0:
        return labels
    gt_counts, _, gt_rank = _frame_starts(gt.frame, num_frames)
    pr_counts, _, pr_rank = _frame_starts(pred.frame, num_frames)
    active = np.flatnonzero((gt_counts > 0) & (pr_counts > 0))
    start = 0
    while start < len(active):
        stop, max_g, max_p = start, 0, 0
        while stop < len(active):
            g, p = max(max_g, gt_counts[active[stop]]), max(max_p, pr_counts[active[stop]])
            if stop > start and (stop - start + 1) * g * p * NUM_JOINTS > block_elements:
                break
            max_g, max_p, stop = g, p, stop + 1
        frames = active[start:stop]
        start = stop
        local = np.full(num_frames, -1, dtype=np.int64)
        local[frames] = np.arange(len(frames))
        nf = len(frames)

        g_rows = np.flatnonzero(local[gt.frame] >= 0)
        p_rows = np.flatnonzero(local[pred.frame] >= 0)
        gf, gr = local[gt.frame[g_rows]], gt_rank[g_rows]
        pf, pr = local[pred.frame[p_rows]], pr_rank[p_rows]
        gt_xy = np.zeros((nf, max_g, NUM_JOINTS, 2))
        gt_has = np.zeros((nf, max_g, NUM_JOINTS), dtype=bool)
        head = np.ones((nf, max_g))
        gt_xy[gf, gr], gt_has[gf, gr], head[gf, gr] = gt.xy[g_rows], gt.present[g_rows], gt.head_size[g_rows]
        pr_xy = np.zeros((nf, max_p, NUM_JOINTS, 2))
        pr_has = np.zeros((nf, max_p, NUM_JOINTS), dtype=bool)
        pr_xy[pf, pr], pr_has[pf, pr] = pred.xy[p_rows], pred.present[p_rows]

        # [F, P, G, J]: same arithmetic as poseval (norm of the difference, then divided by the head size).
        diff = gt_xy[:, None, :, :, :] - pr_xy[:, :, None, :, :]
        with np.errstate(invalid="ignore"):
            dist = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) / head[:, None, :, None]
            match = pr_has[:, :, None, :] & gt_has[:, None, :, :] & (dist <= DIST_THRESHOLD)
        count = match.sum(axis=3).astype(np.float64)
        n_gt_joints = gt_has.sum(axis=2)[:, None, :]
        pck = np.divide(count, n_gt_joints, out=count.copy(), where=n_gt_joints > 0)
        # Step 1: each prediction keeps only its best GT.
        best_gt = np.argmax(pck, axis=2)
        pck = np.where(np.arange(max_g)[None, None, :] == best_gt[:, :, None], pck, 0.0)
        # Step 2: each GT takes its best remaining prediction, none when that value is 0.
        best_pred = np.argmax(pck, axis=1)
        best_val = np.max(pck, axis=1)
        assigned = np.full((nf, max_p), -1, dtype=np.int64)
        f_idx, g_idx = np.nonzero(best_val > 0)
        assigned[f_idx, best_pred[f_idx, g_idx]] = g_idx
        chosen = np.take_along_axis(match, np.maximum(assigned, 0)[:, :, None, None], axis=2)[:, :, 0, :]
        chosen &= (assigned >= 0)[:, :, None]
        labels[p_rows] = chosen[pf, pr]
    return labels


def _check_head_boxes(gt: _People, pred: _People, num_frames: int, frame_sources: list[str]) -> None:
    """A GT person without head box cannot be scored where predictions exist (poseval would crash there)."""
    bad = np.isnan(gt.head_size) & gt.present.any(axis=1)
    if not bad.any():
        return
    has_pred = np.bincount(pred.frame, minlength=num_frames) > 0
    needed = np.flatnonzero(bad & has_pred[gt.frame])
    if len(needed):
        raise DataFormatError(f"{frame_sources[gt.frame[needed[0]]]}: a GT person has labelled joints but no head box "
                              f"(bbox_head / x1,y1,x2,y2), so PCKh cannot be computed")


# ------------------------------------------------------------------------------------------------------- metrics


def _voc_ap(scores: np.ndarray, labels: np.ndarray, num_gt: float, recall_floor_one: bool) -> tuple[float, float, float]:
    """VOC all-point AP (x100), precision and recall (x100) at the last detection, for one joint."""
    if len(scores) == 0:
        return 0.0, 0.0, 0.0
    # The exact call poseval makes, on an array with the same values in the same order: ties break identically.
    order = np.array(scores).argsort()[::-1]
    true_pos = np.cumsum(labels[order] == 1)
    denominator = max(num_gt, 1) if recall_floor_one else num_gt
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = true_pos / np.float64(denominator)
    precision = true_pos / np.arange(1, len(order) + 1, dtype=np.float64)
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    ap = np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes])
    return float(ap * 100), float(precision[-1] * 100), float(recall[-1] * 100)


def _nan_excluding_mean(values: np.ndarray) -> float:
    """poseval's Total: mean over the non-NaN entries, computed on the same (k, 1) array shape it uses."""
    column = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    idxs = np.argwhere(~np.isnan(column[:, 0]))
    if len(idxs) == 0:
        return float("nan")
    return float(column[idxs, 0].mean())


def _compute_result(gt: _People, pred: _People, num_frames: int, protocol: str, sequences: list[str],
                    missing: list[str]) -> APResult:
    labels = _match_labels(gt, pred, num_frames)
    pt21 = protocol == "pt21"
    ap = np.zeros(NUM_JOINTS)
    pre = np.zeros(NUM_JOINTS)
    rec = np.zeros(NUM_JOINTS)
    num_gt = gt.present.sum(axis=0)
    num_det = pred.present.sum(axis=0)
    for j in range(NUM_JOINTS):
        has = pred.present[:, j]
        ap[j], pre[j], rec[j] = _voc_ap(pred.score[has, j], labels[has, j], float(num_gt[j]), recall_floor_one=pt21)
    groups = _PT21_GROUPS if pt21 else POSEVAL_GROUPS
    table = {name: float(ap[list(idx)].mean()) for name, idx in groups.items()}
    table["Mean"] = _nan_excluding_mean(ap)
    mean_pre, mean_rec = _nan_excluding_mean(pre), _nan_excluding_mean(rec)
    if pt21:  # report per-joint values in poseval order like the default protocol
        to_poseval = np.asarray(_PT21_TO_POSEVAL)
        reorder = np.argsort(to_poseval)
        ap, pre, rec, num_gt, num_det = ap[reorder], pre[reorder], rec[reorder], num_gt[reorder], num_det[reorder]
    return APResult(
        protocol=protocol, per_joint_ap=ap, per_joint_precision=pre, per_joint_recall=rec, table=table,
        mean_precision=mean_pre, mean_recall=mean_rec, num_gt_joints=num_gt.astype(np.int64),
        num_detections=num_det.astype(np.int64), num_sequences=len(sequences), num_frames=num_frames,
        num_gt_people=len(gt.frame), num_predicted_people=len(pred.frame), sequences=list(sequences),
        missing_predictions=list(missing),
    )


# ----------------------------------------------------------------------------------------------- public entry


def _validate_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    return protocol


def evaluate_sequences(
    gt: Mapping[str, dict],
    predictions: Mapping[str, Optional[dict]],
    protocol: Protocol = "poseval",
    allow_missing: bool = False,
    sources: Optional[Mapping[str, tuple[str, str]]] = None,
    progress: bool = False,
) -> APResult:
    """AP of already-loaded per-sequence files.

    Args:
        gt: sequence name -> GT file content (PoseTrack18 or ``annolist``), in evaluation order (``poseval``:
            the order given, like poseval's file order; ``pt21``: sorted by name, like the PT21 kit).
        predictions: sequence name -> prediction file content (missing key or None = no prediction file).
        protocol: ``"poseval"`` (default) or ``"pt21"``.
        allow_missing: score a sequence without predictions as all misses instead of raising.
        sources: optional sequence name -> (GT path, prediction path), used in error messages.
        progress: show a tqdm bar over sequences.

    Returns:
        :class:`APResult`.
    """
    _validate_protocol(protocol)
    names = sorted(gt) if protocol == "pt21" else list(gt)
    if not names:
        raise DataFormatError("no ground-truth sequences to evaluate")
    gt_parts: list[_People] = []
    pr_parts: list[_People] = []
    offsets: list[int] = []
    frame_sources: list[str] = []
    missing: list[str] = []
    total = 0
    iterator: Iterable[str] = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="evaluate", unit="seq", file=sys.stderr)
    for name in iterator:
        gt_source, pred_source = (sources or {}).get(name, (f"GT {name}", f"prediction {name}"))
        pred_data = predictions.get(name)
        if pred_data is None and not allow_missing:
            raise DataFormatError(f"{pred_source}: no prediction file for GT sequence {name} ({gt_source}); "
                                  f"every GT sequence needs one (or pass --allow-missing)")
        if pred_data is None:
            missing.append(name)
        if protocol == "poseval":
            gt_file = _read_poseval_file(gt[name], gt_source, is_gt=True)
            pred_file = (_read_poseval_file(pred_data, pred_source, is_gt=False) if pred_data is not None
                         else _empty_predictions(gt_file.num_frames, pred_source))
            gt_people, pr_people, frame_names = _prepare_poseval(gt_file, pred_file)
        else:
            gt_file21 = _read_pt21_file(gt[name], gt_source, is_gt=True)
            if pred_data is None:
                pred_data = {"images": [{"id": i} for i in gt_file21.image_ids], "annotations": []}
            pred_file21 = _read_pt21_file(pred_data, pred_source, is_gt=False)
            gt_people, pr_people, frame_names = _prepare_pt21(gt_file21, pred_file21)
        gt_parts.append(gt_people)
        pr_parts.append(pr_people)
        offsets.append(total)
        frame_sources.extend(f"{gt_source} frame {n}" for n in frame_names)
        total += len(frame_names)
    gt_all = _People.concat(gt_parts, offsets)
    pr_all = _People.concat(pr_parts, offsets)
    _check_head_boxes(gt_all, pr_all, total, frame_sources)
    return _compute_result(gt_all, pr_all, total, protocol, names, missing)


def list_sequence_files(gt_dir: str | os.PathLike, protocol: Protocol = "poseval") -> list[Path]:
    """GT files of a folder: poseval's ``glob(dir/*.json)`` order, or sorted for the PT21 protocol."""
    files = [Path(p) for p in glob.glob(os.path.join(str(gt_dir), "*.json"))]
    return sorted(files) if protocol == "pt21" else files


def evaluate_dirs(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    protocol: Protocol = "poseval",
    allow_missing: bool = False,
    progress: bool = False,
) -> APResult:
    """AP of a folder of prediction files against a folder of per-sequence GT files (same file names).

    GT files are taken in the order poseval takes them (``glob``, filesystem order) for ``poseval``; that order
    only matters for exact score ties across sequences. Errors (missing folder or file, malformed file, frame
    count mismatch, bad track ids) raise :class:`~tdmi.errors.DataFormatError` naming the file.
    """
    _validate_protocol(protocol)
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    if not gt_dir.is_dir():
        raise DataFormatError(f"{gt_dir}: ground-truth folder not found")
    if not pred_dir.is_dir():
        raise DataFormatError(f"{pred_dir}: prediction folder not found")
    files = list_sequence_files(gt_dir, protocol)
    if not files:
        raise DataFormatError(f"{gt_dir}: no *.json ground-truth files")
    gt: dict[str, dict] = {}
    predictions: dict[str, Optional[dict]] = {}
    sources: dict[str, tuple[str, str]] = {}
    iterator: Iterable[Path] = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="read", unit="seq", file=sys.stderr, leave=False)
    for path in iterator:
        name = path.stem
        pred_path = pred_dir / path.name
        sources[name] = (str(path), str(pred_path))
        gt[name] = read_json(path)
        if pred_path.is_file():
            predictions[name] = read_json(pred_path)
        elif not allow_missing:
            raise DataFormatError(f"{pred_path}: prediction file missing for GT sequence {path} "
                                  f"(every GT sequence needs one; --allow-missing scores it as all misses)")
    return evaluate_sequences(gt, predictions, protocol, allow_missing, sources=sources)


# -------------------------------------------------------------------------------------------------------- CLI


def write_json_atomic(path: str | os.PathLike, payload: Any, indent: Optional[int] = 2) -> Path:
    """Write JSON atomically (no half-written files); NaN is refused, as strict JSON readers do."""
    return atomic_write_json(path, payload, indent=indent, allow_nan=False)


def evaluate_command(args) -> int:
    """``tdmi evaluate --gt DIR --pred DIR [--protocol poseval|pt21] [--allow-missing] [--json-out FILE]``."""
    result = evaluate_dirs(args.gt, args.pred, protocol=args.protocol, allow_missing=args.allow_missing,
                           progress=True)
    print(f"PoseTrack AP ({result.protocol} protocol): {result.num_sequences} sequences, "
          f"{result.num_frames} frames evaluated")
    print(result.format_table())
    if result.missing_predictions:
        print(f"scored as all misses (no prediction file): {', '.join(result.missing_predictions)}")
    if args.json_out:
        write_json_atomic(args.json_out, result.to_json_dict(gt_dir=str(args.gt), pred_dir=str(args.pred)))
    summary = f"evaluate: Mean AP {result.table['Mean']:.1f} over {result.num_frames} frames"
    print(summary + (f"; wrote {args.json_out}" if args.json_out else ""))
    return 0
