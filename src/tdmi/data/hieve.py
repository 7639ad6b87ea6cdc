"""HiEve (humaninevents.org, ACM MM 2020 challenge) annotations -> the PoseTrack-order records, and a submission
zip writer.

What is public and implemented (``docs/facts/user-needs.md`` section 2, humaninevents.org/format.html):

- All-track ground truth: one VOC-style XML per frame (``000000.xml`` for frame 0) with ``folder``, ``filename``
  (``0.jpg``), ``size/{width,height}`` and one ``object`` per person: ``name`` ``P-<id>``, ``action``, and a
  ``bndbox`` with ``xmin, ymin, xmax, ymax`` and 14 joints as text ``"x,y,flag"`` (tags ``Nose``, ``Chest``,
  ``Right-shoulder`` ... ``Left-ankle``; matched here case- and punctuation-insensitively, ``R-``/``Right-`` alike).
  Flag 0 = visible, 1 = invisible (labelled, occluded), -1 = not annotated: the reverse of COCO's convention.
- Track-1 (MOT) ground truth: one ``<sequence>.txt`` per video, lines ``frame,id,left,top,width,height,flag,-1,-1,-1``;
  ``flag == 0`` lines are ignored by the evaluation (dropped here unless asked for).
- Submissions: one ``.zip`` with one file per sequence in the archive root, named exactly after the sequence
  (track-2 example: ``20.json`` ... ``32.json``).

Conversions. HiEve's 14 joints go to the 17-slot PoseTrack order with :data:`tdmi.keypoints.HIEVE14_TO_POSETRACK17`.
HiEve has no head top, head bottom or ears; its ``Chest`` is stored in the head_bottom slot (1), the nearest
PoseTrack point on the neck line, so one 17-channel model serves both datasets (the choice documented in
``keypoints.py``). Flags follow :mod:`tdmi.data.posetrack`: visible -> 1.0, invisible -> 0.5, not annotated ->
(0, 0, 0). Export (:func:`posetrack17_to_hieve14`) takes slot 1 back as the chest, or, for a model trained on
PoseTrack only (whose slot 1 is the real head bottom), the shoulder midpoint with ``chest="mid_shoulder"``.

NOT public, therefore our own documented choices (do not mistake them for the official ones):

- The JSON schema inside a track-2 ``<sequence>.json``: :func:`write_hieve_submission` writes
  :data:`SUBMISSION_FORMAT` (described there). Check the challenge's current instructions before submitting.
- The released images' frame naming: frames are named ``<sequence>/<filename from the XML>`` (``0.jpg`` in the
  format page's example); MOT-only sequences use ``<sequence>/<frame>.jpg``.
- Boxes are ``[xmin, ymin, xmax - xmin, ymax - ymin]`` (no VOC +1).
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ElementTree
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np

from tdmi.data.fileio import atomic_write_bytes
from tdmi.data.posetrack import FLAG_LABELED, FLAG_OCCLUDED
from tdmi.data.records import Frame, Person, Sequence
from tdmi.errors import DataFormatError
from tdmi.keypoints import HIEVE14, HIEVE14_TO_POSETRACK17, POSETRACK17

#: The joint tags of HiEve's format page, in HiEve index order.
HIEVE_JOINT_TAGS: tuple[str, ...] = (
    "Nose", "Chest", "Right-shoulder", "Right-elbow", "Right-wrist", "Left-shoulder", "Left-elbow", "Left-wrist",
    "Right-hip", "Right-knee", "Right-ankle", "Left-hip", "Left-knee", "Left-ankle",
)
#: HiEve's flags.
HIEVE_VISIBLE, HIEVE_INVISIBLE, HIEVE_NOT_ANNOTATED = 0, 1, -1
#: Identifier written into every submission file (our schema; the official track-2 schema is not public).
SUBMISSION_FORMAT = "tdmi-hieve-pose-v1"

ChestSource = Literal["head_bottom", "mid_shoulder"]
_SHOULDERS = (POSETRACK17.index("left_shoulder"), POSETRACK17.index("right_shoulder"))


def _joint_key(tag: str) -> str:
    key = re.sub(r"[^a-z]", "", tag.lower())
    return re.sub(r"^right", "r", re.sub(r"^left", "l", key))


_JOINT_BY_KEY: dict[str, int] = {_joint_key(name): i for i, name in enumerate(HIEVE14.names)}
assert all(_joint_key(tag) in _JOINT_BY_KEY for tag in HIEVE_JOINT_TAGS)


# ------------------------------------------------------------------------------------------------ joint maps


def hieve14_to_posetrack17(joints: np.ndarray) -> np.ndarray:
    """``[..., 14, C]`` HiEve-order joints -> ``[..., 17, C]`` PoseTrack slots (head_top and ears zero)."""
    joints = np.asarray(joints)
    out = np.zeros(joints.shape[:-2] + (POSETRACK17.num_joints, joints.shape[-1]), joints.dtype)
    out[..., list(HIEVE14_TO_POSETRACK17), :] = joints
    return out


def posetrack17_to_hieve14(keypoints: np.ndarray, chest: ChestSource = "head_bottom") -> np.ndarray:
    """``[..., 17, C]`` PoseTrack slots -> ``[..., 14, C]`` HiEve order (x, y, then score or flag columns).

    Args:
        chest: ``head_bottom`` takes slot 1 (a model trained on HiEve data learnt the chest there);
            ``mid_shoulder`` puts the chest at the shoulder midpoint, with the lower of the two shoulders' third
            values (zero unless both shoulders are present).
    """
    if chest not in ("head_bottom", "mid_shoulder"):
        raise ValueError(f"chest must be 'head_bottom' or 'mid_shoulder', not {chest!r}")
    keypoints = np.asarray(keypoints)
    out = keypoints[..., list(HIEVE14_TO_POSETRACK17), :].copy()
    if chest == "mid_shoulder":
        left, right = keypoints[..., _SHOULDERS[0], :], keypoints[..., _SHOULDERS[1], :]
        both = (left[..., 2] > 0) & (right[..., 2] > 0)
        chest_joint = np.zeros_like(left)
        chest_joint[..., :2] = (left[..., :2] + right[..., :2]) / 2
        chest_joint[..., 2:] = np.minimum(left[..., 2:], right[..., 2:])
        out[..., HIEVE14.index("chest"), :] = np.where(both[..., None], chest_joint, 0)
    return out


# ------------------------------------------------------------------------------------------------ all-track XML


def _text(element: Optional[ElementTree.Element]) -> Optional[str]:
    return None if element is None or element.text is None else element.text.strip()


def _xml_number(element: ElementTree.Element, tag: str, src: str, where: str) -> float:
    text = _text(element.find(tag))
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataFormatError(f"{src}: {where}.{tag} is {text!r}, expected a number") from None


def _parse_person(obj: ElementTree.Element, src: str, where: str) -> Person:
    box = obj.find("bndbox")
    if box is None:
        raise DataFormatError(f"{src}: {where} has no bndbox")
    joints = np.zeros((HIEVE14.num_joints, 3), np.float32)
    # The format page puts the joints inside bndbox; accept them directly under object as well.
    for child in list(box) + list(obj):
        index = _JOINT_BY_KEY.get(_joint_key(child.tag))
        if index is None:
            continue
        text = _text(child) or ""
        try:
            x, y, flag = (float(v) for v in text.split(","))
        except ValueError:
            raise DataFormatError(f"{src}: {where}.{child.tag} is {text!r}, expected 'x,y,flag'") from None
        if flag not in (HIEVE_VISIBLE, HIEVE_INVISIBLE, HIEVE_NOT_ANNOTATED):
            raise DataFormatError(f"{src}: {where}.{child.tag} has flag {flag:g}, expected 0, 1 or -1")
        if flag != HIEVE_NOT_ANNOTATED:
            joints[index] = (x, y, FLAG_LABELED if flag == HIEVE_VISIBLE else FLAG_OCCLUDED)
    corners = [_xml_number(box, tag, src, f"{where}.bndbox") for tag in ("xmin", "ymin", "xmax", "ymax")]
    name = _text(obj.find("name")) or ""
    track = re.search(r"(\d+)$", name)
    return Person(
        keypoints=hieve14_to_posetrack17(joints),
        bbox=np.array([corners[0], corners[1], corners[2] - corners[0], corners[3] - corners[1]], np.float32),
        track_id=int(track.group(1)) if track else -1,
    )


def load_hieve_frame(xml_path: Union[str, Path], sequence_name: str) -> Frame:
    """One all-track XML file -> a labelled :class:`Frame` (frame index from the file name, ``000000.xml`` -> 0)."""
    xml_path = Path(xml_path)
    src = str(xml_path)
    try:
        frame_index = int(xml_path.stem)
    except ValueError:
        raise DataFormatError(f"{src}: file name is not a frame number (e.g. 000000.xml)") from None
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as err:
        raise DataFormatError(f"{src}: not valid XML ({err})") from None
    if root.tag != "annotation":
        raise DataFormatError(f"{src}: root element is <{root.tag}>, expected <annotation>")
    people = [_parse_person(obj, src, f"object[{k}]") for k, obj in enumerate(root.findall("object"))]
    size = root.find("size")
    width = int(_xml_number(size, "width", src, "size")) if size is not None else 0
    height = int(_xml_number(size, "height", src, "size")) if size is not None else 0
    image_name = _text(root.find("filename")) or f"{frame_index}.jpg"
    return Frame(file_name=f"{sequence_name}/{image_name}", frame_index=frame_index, image_id=frame_index,
                 is_labeled=True, people=people, has_labeled_person=bool(people), width=width, height=height)


def load_hieve_sequence(folder: Union[str, Path], name: Optional[str] = None) -> Sequence:
    """A folder of all-track XML files (one per frame) -> one :class:`Sequence` named after the folder."""
    folder = Path(folder)
    name = name or folder.name
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataFormatError(f"{folder}: no HiEve all-track .xml files in this folder")
    frames = sorted((load_hieve_frame(f, name) for f in files), key=lambda f: f.frame_index)
    return Sequence(name=name, frames=frames, nframes=frames[-1].frame_index + 1, dataset="hieve", source=str(folder))


# ------------------------------------------------------------------------------------------------ track-1 MOT txt


def load_hieve_mot(txt_path: Union[str, Path], keep_ignored: bool = False) -> Sequence:
    """A track-1 ``<sequence>.txt`` -> a box-only :class:`Sequence` (no joints; ``is_labeled`` False).

    Args:
        keep_ignored: also keep lines whose flag is 0 (the evaluation ignores them).
    Frames are numbered as in the file; ``nframes`` is the span of frame numbers present.
    """
    txt_path = Path(txt_path)
    name = txt_path.stem
    people_by_frame: dict[int, list[Person]] = {}
    for line_no, line in enumerate(txt_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [v.strip() for v in line.split(",")]
        if len(fields) < 7:
            raise DataFormatError(f"{txt_path}:{line_no}: {len(fields)} values, expected "
                                  f"frame,id,left,top,width,height,flag,-1,-1,-1")
        values = np.array([_parse_float(v, txt_path, line_no) for v in fields[:7]])
        frame, track_id, flag = int(values[0]), int(values[1]), values[6]
        people = people_by_frame.setdefault(frame, [])
        if flag == 0 and not keep_ignored:
            continue
        people.append(Person(keypoints=np.zeros((POSETRACK17.num_joints, 3), np.float32),
                             bbox=values[2:6].astype(np.float32), track_id=track_id))
    if not people_by_frame:
        raise DataFormatError(f"{txt_path}: no MOT lines")
    numbers = sorted(people_by_frame)
    frames = [Frame(file_name=f"{name}/{n}.jpg", frame_index=n, image_id=n, people=people_by_frame[n],
                    has_labeled_person=bool(people_by_frame[n])) for n in numbers]
    return Sequence(name=name, frames=frames, nframes=numbers[-1] - numbers[0] + 1, dataset="hieve",
                    source=str(txt_path))


def _parse_float(text: str, path: Path, line_no: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(f"{path}:{line_no}: {text!r} is not a number") from None


def load_hieve(path: Union[str, Path]) -> list[Sequence]:
    """Read HiEve annotations: a track-1 ``.txt``; a folder of per-frame XML files (one sequence); a folder of
    such folders; or a folder of ``.txt`` files. Sequences come in name order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"HiEve annotation path not found: {path}")
    if path.is_file():
        if path.suffix.lower() != ".txt":
            raise DataFormatError(f"{path}: expected a track-1 .txt file or a folder of per-frame .xml files")
        return [load_hieve_mot(path)]
    if any(path.glob("*.xml")):
        return [load_hieve_sequence(path)]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("*.xml")))
    if folders:
        return [load_hieve_sequence(p) for p in folders]
    texts = sorted(path.glob("*.txt"))
    if texts:
        return [load_hieve_mot(p) for p in texts]
    raise DataFormatError(f"{path}: no HiEve annotations (per-frame .xml folders or track-1 .txt files)")


# ------------------------------------------------------------------------------------------------ submission


def hieve_result_json(sequence: Sequence, chest: ChestSource = "head_bottom") -> dict:
    """Our track-2 result schema for one sequence (:data:`SUBMISSION_FORMAT`)::

        {"format": "tdmi-hieve-pose-v1", "sequence": "20", "joints": [14 HiEve joint names],
         "frames": [{"frame": 0, "file_name": "20/0.jpg",
                     "people": [{"track_id": 3, "score": 0.93, "bbox": [x, y, w, h],
                                 "keypoints": [[x, y, score] x 14]}]}]}

    The keypoint score is the person's ``joint_scores`` when set (predictions), else the record's flag.
    """
    frames = []
    for frame in sequence.frames:
        people = []
        for person in frame.people:
            keypoints = person.keypoints.astype(np.float64).copy()
            if person.joint_scores is not None:
                keypoints[:, 2] = person.joint_scores
            joints = posetrack17_to_hieve14(keypoints, chest)
            people.append({
                "track_id": int(person.track_id),
                "score": float(person.score),
                "bbox": [float(v) for v in person.bbox],
                "keypoints": [[float(x), float(y), float(s)] for x, y, s in joints],
            })
        frames.append({"frame": frame.frame_index, "file_name": frame.file_name, "people": people})
    return {"format": SUBMISSION_FORMAT, "sequence": sequence.name, "joints": list(HIEVE_JOINT_TAGS),
            "frames": frames}


def write_hieve_submission(zip_path: Union[str, Path], results_by_sequence: Mapping[str, Sequence],
                           chest: ChestSource = "head_bottom") -> Path:
    """Write the submission zip: ``<sequence>.json`` per sequence in the archive root (atomic write).

    Args:
        results_by_sequence: sequence name (e.g. ``"20"``) -> predicted Sequence.
        chest: see :func:`posetrack17_to_hieve14`.
    Raises:
        ValueError: empty input or a name that cannot be a file name in the archive root.
    """
    if not results_by_sequence:
        raise ValueError("write_hieve_submission: no sequences given")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(results_by_sequence):
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise ValueError(f"sequence name {name!r} cannot name a file in the archive root")
            document = hieve_result_json(results_by_sequence[name], chest)
            archive.writestr(f"{name}.json", json.dumps(document))
    zip_path = Path(zip_path)
    atomic_write_bytes(zip_path, buffer.getvalue())
    return zip_path


def read_hieve_submission(zip_path: Union[str, Path]) -> dict[str, dict]:
    """Read a zip written by :func:`write_hieve_submission` back: sequence name -> result document."""
    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise DataFormatError(f"{zip_path}: not a zip file") from None
    results = {}
    with archive:
        for info in archive.infolist():
            if "/" in info.filename.rstrip("/") or not info.filename.endswith(".json"):
                raise DataFormatError(f"{zip_path}: {info.filename} is not a <sequence>.json in the archive root")
            try:
                document = json.loads(archive.read(info))
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{zip_path}: {info.filename} is not valid JSON ({err.msg})") from None
            except UnicodeDecodeError:
                raise DataFormatError(f"{zip_path}: {info.filename} is not UTF-8 text") from None
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:
                raise DataFormatError(f"{zip_path}: {info.filename} is corrupt in the archive ({err})") from None
            if not isinstance(document, dict) or document.get("format") != SUBMISSION_FORMAT:
                raise DataFormatError(f"{zip_path}: {info.filename} is not in the {SUBMISSION_FORMAT} schema")
            results[info.filename[:-len(".json")]] = document
    return results

