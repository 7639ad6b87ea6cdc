"""Per-sequence AP and per-frame joint scores, for the HTML report (``tdmi test --report``, ``tdmi evaluate
--report``).

The files are read and matched exactly as :func:`~tdmi.evaluation.posetrack_ap.evaluate_dirs` reads and matches
them (same readers, same cleaning, same two-step assignment), one sequence at a time:

- a sequence's AP is the AP table of that sequence alone (poseval run on its one file pair). Averaging sequence APs
  does not give the split's AP (AP is not additive), so the report shows them for ranking, not for the total.
- a frame's score is its share of labelled GT joints that a matched prediction hits (PCKh@0.5 under poseval's
  assignment: true-positive joints / GT joints), the quantity poseval's recall counts; ties are broken by the
  number of predicted joints that hit nothing (more is worse). Frames without GT joints get no score.

Nothing here changes the metric: the evaluation's own numbers always come from ``evaluate_dirs``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from tdmi.evaluation.parallel import map_in_order, reader_processes
from tdmi.evaluation.posetrack_ap import (APResult, _compute_result, _Prepared, _read_and_prepare,
                                         checked_sequence_files)
from tdmi.evaluation.posetrack_files import _PT21_TO_POSEVAL


@dataclass
class FrameScore:
    """One evaluated frame: where its image is and how well it was predicted.

    ``gt_xy [G, 15, 2]`` / ``gt_present [G, 15]`` and ``pred_xy [P, 15, 2]`` / ``pred_present`` / ``pred_score``
    / ``pred_correct [P, 15]`` are in poseval's joint order (``POSEVAL15``), after the evaluation's cleaning (ignore
    regions applied); ``pred_correct`` marks the predicted joints poseval counts as true positives.
    """

    sequence: str
    frame: int
    """Position among the sequence's evaluated frames."""
    file_name: str
    """The GT image's ``file_name`` (PoseTrack18/21) or ``image.name`` (PoseTrack17), relative to the dataset root."""
    gt_joints: int
    correct_joints: int
    false_joints: int
    gt_xy: np.ndarray
    gt_present: np.ndarray
    pred_xy: np.ndarray
    pred_present: np.ndarray
    pred_score: np.ndarray
    pred_correct: np.ndarray

    @property
    def score(self) -> float:
        """Share of the GT joints hit (percent); NaN without GT joints."""
        return 100.0 * self.correct_joints / self.gt_joints if self.gt_joints else float("nan")


@dataclass
class SequenceScore:
    """One sequence scored alone: its AP table and its evaluated frames."""

    name: str
    result: APResult
    frames: list[FrameScore]
    missing_prediction: bool = False

    @property
    def mean_ap(self) -> float:
        return float(self.result.table["Mean"])


def _frame_scores(name: str, prepared: _Prepared, frame_files: list[str], protocol: str) -> list[FrameScore]:
    gt, pred, labels = prepared.gt, prepared.pred, prepared.labels
    reorder = np.argsort(np.asarray(_PT21_TO_POSEVAL)) if protocol == "pt21" else np.arange(gt.present.shape[1])
    frames = []
    for index, file_name in enumerate(frame_files):
        g, p = gt.frame == index, pred.frame == index
        present, correct = pred.present[p], labels[p]
        frames.append(FrameScore(
            sequence=name, frame=index, file_name=file_name, gt_joints=int(gt.present[g].sum()),
            correct_joints=int(correct.sum()), false_joints=int((present & ~correct).sum()),
            gt_xy=gt.xy[g][:, reorder], gt_present=gt.present[g][:, reorder], pred_xy=pred.xy[p][:, reorder],
            pred_present=present[:, reorder], pred_score=pred.score[p][:, reorder], pred_correct=correct[:, reorder]))
    return frames


def _score_one(task: tuple[str, str, str, str, bool]) -> SequenceScore:
    """Read, clean and match one file pair, as ``evaluate_dirs`` does, and score it alone (runs in the reader
    processes)."""
    name, protocol = task[0], task[3]
    prepared = _read_and_prepare(task)
    result = _compute_result(prepared.gt, prepared.pred, prepared.labels, len(prepared.frame_names), protocol,
                             [name], [name] if prepared.missing else [])
    return SequenceScore(name, result, _frame_scores(name, prepared, prepared.frame_names, protocol),
                         prepared.missing)


def score_sequences(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, protocol: str = "poseval",
                    allow_missing: bool = False, workers: Optional[int] = None) -> list[SequenceScore]:
    """Every GT sequence of ``gt_dir`` scored alone against the same-named file of ``pred_dir``, in
    :func:`~tdmi.evaluation.posetrack_ap.evaluate_dirs`' file order; its errors are the same."""
    gt_dir, pred_dir, files = checked_sequence_files(gt_dir, pred_dir, protocol)
    tasks = [(path.stem, str(path), str(pred_dir / path.name), protocol, allow_missing) for path in files]
    return map_in_order(_score_one, tasks, reader_processes(len(tasks), workers))


def worst_frames(sequences: list[SequenceScore], count: int = 12, per_sequence: int = 2) -> list[FrameScore]:
    """The ``count`` lowest-scoring frames with GT joints, at most ``per_sequence`` from one sequence while other
    sequences have candidates left (then the rest, still worst first). Ties: more false joints first, then file
    order."""
    candidates = [f for s in sequences for f in s.frames if f.gt_joints > 0]
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i].score, -candidates[i].false_joints, i))
    chosen: list[int] = []
    taken: dict[str, int] = {}
    for i in order:
        if len(chosen) == count:
            break
        name = candidates[i].sequence
        if taken.get(name, 0) < per_sequence:
            chosen.append(i)
            taken[name] = taken.get(name, 0) + 1
    for i in order:  # fewer sequences than count / per_sequence: fill with the next worst
        if len(chosen) == count:
            break
        if i not in chosen:
            chosen.append(i)
    rank = {i: r for r, i in enumerate(order)}
    chosen.sort(key=rank.__getitem__)
    return [candidates[i] for i in chosen]
