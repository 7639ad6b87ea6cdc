"""Person boxes for validation/test and inference: detection files and the ground-truth-box mode.

Box files are read by :mod:`tdmi.data.box_files` (its docstring lists the layouts and the rules shared with
``tdmi infer``); this module matches them to dataset frames (``docs/facts/posetrack-facts.md`` 4.2 and 10):

- COCO detection results and PoseTrack-style files are matched to frames by image id;
- DCPose / PoseWarper box lists (``val_boxes.json``) and ``tdmi-boxes`` files by image path, exactly or by the
  ``<sequence>/<file>`` suffix.
- GT-box mode (:meth:`Detections.from_ground_truth`): every GT person with at least one labelled joint becomes a
  box of score 1, as DCPose's ``USE_GT_BBOX`` path (people with all-zero keypoints are skipped there too).
  Clipping GT boxes to the image is the crop transform's job, which knows the image size.

Which boxes produced a number decides most of the gap between published results (facts 10): print
:attr:`Detections.description` next to every mAP.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Union

import numpy as np

from tdmi.data.box_files import DEFAULT_SCORE_THRESHOLD, read_box_file
from tdmi.data.records import Frame, Person, Sequence
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSETRACK17

def _normalise_path(name: str) -> str:
    path = name.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _suffix_key(name: str) -> str:
    """``<sequence folder>/<file>``: unique across PoseTrack splits because sequence names carry the split."""
    parts = PurePosixPath(name).parts
    return "/".join(parts[-2:])


def _common_suffix_length(a: str, b: str) -> int:
    pa, pb = PurePosixPath(a).parts, PurePosixPath(b).parts
    n = 0
    while n < min(len(pa), len(pb)) and pa[-1 - n] == pb[-1 - n]:
        n += 1
    return n


def _box_person(bbox: np.ndarray, score: float, track_id: int = -1) -> Person:
    return Person(keypoints=np.zeros((POSETRACK17.num_joints, 3), np.float32), bbox=bbox.astype(np.float32),
                  track_id=track_id, score=float(score))


def _copy(person: Person) -> Person:
    return replace(person, keypoints=person.keypoints.copy(), bbox=person.bbox.copy())


class Detections:
    """Person boxes keyed by image id and by image path.

    Build it with :func:`load_detections` or :meth:`from_ground_truth`. Boxes of a frame come back in file order
    (which poseval's tie-breaking depends on, facts 8), as fresh :class:`Person` records with zero keypoints.
    """

    def __init__(self, description: str = "") -> None:
        self.description = description
        """Where the boxes came from, e.g. ``val_boxes.json (score >= 0.2)`` or ``ground truth``."""
        self._by_image_id: dict[int, list[Person]] = defaultdict(list)
        self._by_name: dict[str, list[Person]] = defaultdict(list)
        self._names_by_suffix: dict[str, set[str]] = defaultdict(set)
        # Images that appear in the file at all (also those whose every box fell below the threshold), so that
        # "no boxes here" can be told apart from "this file knows nothing about this frame".
        self._known_ids: set[int] = set()
        self._known_names: set[str] = set()

    # ----------------------------------------------------------------------------------------------- building

    def _note_image(self, image_id: int | None, image_name: str | None) -> None:
        if image_id is not None:
            self._known_ids.add(image_id)
        if image_name is not None:
            name = _normalise_path(image_name)
            self._known_names.add(name)
            self._names_by_suffix[_suffix_key(name)].add(name)

    def add(self, person: Person, image_id: int | None = None, image_name: str | None = None) -> None:
        """Add one box for the image with this id and/or path."""
        if image_id is None and image_name is None:
            raise ValueError("a detection needs an image_id or an image_name")
        self._note_image(image_id, image_name)
        if image_id is not None:
            self._by_image_id[image_id].append(person)
        else:
            self._by_name[_normalise_path(image_name)].append(person)

    @classmethod
    def from_ground_truth(cls, sequences: Iterable[Sequence], skip_unlabeled: bool = True) -> "Detections":
        """GT-box mode: each GT person's ``bbox`` with score 1 (track ids kept).

        Args:
            skip_unlabeled: skip people without a labelled joint (PT21 box-only people), as DCPose does.
        """
        detections = cls("ground truth" + (" (people with labelled joints)" if skip_unlabeled else ""))
        for sequence in sequences:
            for frame in sequence.frames:
                detections._note_image(None, frame.file_name)
                for person in frame.people:
                    if skip_unlabeled and person.num_labeled == 0:
                        continue
                    box = _box_person(np.asarray(person.bbox, np.float32), 1.0, person.track_id)
                    detections._by_name[_normalise_path(frame.file_name)].append(box)
        return detections

    # ------------------------------------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_image_id.values()) + sum(len(v) for v in self._by_name.values())

    @property
    def num_images(self) -> int:
        """Images with at least one kept box."""
        return sum(1 for v in self._by_image_id.values() if v) + sum(1 for v in self._by_name.values() if v)

    def _match_name(self, file_name: str) -> str | None:
        name = _normalise_path(file_name)
        if name in self._known_names:
            return name
        candidates = self._names_by_suffix.get(_suffix_key(name), set())
        if not candidates:
            return None
        ranked = sorted(candidates, key=lambda c: _common_suffix_length(c, name), reverse=True)
        if len(ranked) > 1 and _common_suffix_length(ranked[0], name) == _common_suffix_length(ranked[1], name):
            raise DataFormatError(f"{self.description}: frame {file_name} matches several detection images "
                                  f"({', '.join(sorted(candidates))}); use paths relative to the same root")
        return ranked[0]

    def covers(self, frame: Frame) -> bool:
        """True when the box source lists this frame (even if all of its boxes fell below the threshold)."""
        if frame.image_id and frame.image_id in self._known_ids:
            return True
        return self._match_name(frame.file_name) is not None

    def for_frame(self, frame: Frame) -> list[Person]:
        """Boxes of one frame: matched by image id, else by path (exact, else by the ``<sequence>/<file>``
        suffix, so ``images/val/x/000001.jpg`` and ``val/x/000001.jpg`` match). Empty when none."""
        if frame.image_id and frame.image_id in self._known_ids:
            return [_copy(p) for p in self._by_image_id.get(frame.image_id, [])]
        name = self._match_name(frame.file_name)
        if name is None:
            return []
        return [_copy(p) for p in self._by_name.get(name, [])]


def load_detections(path: Union[str, Path], score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> Detections:
    """The boxes of a box file (any layout :func:`tdmi.data.box_files.read_box_file` reads), keyed for frames.

    A record is matched to a frame by its image id when it has one (COCO results, PoseTrack-style files), else
    by its path (DCPose/PoseWarper lists, ``tdmi-boxes`` files written from a PoseTrack frame folder).

    Args:
        path: the JSON file.
        score_threshold: drop boxes with ``score < score_threshold`` (default 0.2, as DCPose/FAMI).
    Raises:
        FileNotFoundError: no such file.
        DataFormatError: a malformed file (the message names the file and the record), or a record that only
            has a frame index (a ``tdmi-boxes`` file of a video), which names no dataset frame.
    """
    path = Path(path)
    detections = Detections(f"{path.name} (score >= {score_threshold:g})")
    for record in read_box_file(path):
        if record.image_id is None and record.image_name is None:
            raise DataFormatError(f"{path}: frame {record.frame_index} is known by its index only (a tdmi-boxes "
                                  f"file written from a video?); dataset frames are matched by image id or path")
        # PoseTrack-style files give both; the id is the exact key there
        key_name = record.image_name if record.image_id is None else None
        detections._note_image(record.image_id, key_name)
        if record.bbox is None or record.score < score_threshold:
            continue
        detections.add(_box_person(record.bbox, record.score), image_id=record.image_id, image_name=key_name)
    return detections
