"""PoseTrack pose-tracking metrics (MOTA, MOTP, precision, recall), computed as poseval's ``--evalPoseTracking`` does.

Our own implementation of the rules in ``docs/tracking-metrics.md`` (read from poseval HEAD 4258a15 and motmetrics
1.4.0, which poseval calls); neither is imported. The files are read and cleaned exactly as for the AP
(:func:`tdmi.evaluation.posetrack_files._prepare_poseval`: evaluated frames, rects without points, ignore regions).
Then, per sequence and per joint independently:

- frames: the evaluated frames in order, **except the last one of every sequence** (poseval's ``imgidxs[:-1]``).
  poseval crashes on a sequence with a single evaluated frame; we score nothing for it and say so in ``notes``.
- objects are the GT persons having the joint, hypotheses the predicted persons having it (in file order);
  a pair may match iff ``||gt - pred|| / head size <= 0.5`` (head size = 0.6 x head-box diagonal).
- a frame whose cleaned GT or predictions hold nobody counts one miss and one false positive per joint.
- association is motmetrics' ``MOTAccumulator``: carry over last frame's partners that are still allowed, then
  a minimum-distance assignment of the rest (scipy's solver on motmetrics' finite cost matrix); a match is a
  switch iff the object's last partner (kept through gaps) was another hypothesis.
- counts are pooled over sequences per joint: ``MOTA = 100 (1 - (misses + switches + FP) / objects)``,
  ``precision = 100 det / (det + FP)``, ``recall = 100 det / objects``, det = matches + switches, and
  ``MOTP = 100 (1 - sumD / det)`` (0 when det = 0) where sumD is poseval's sum over *all* motmetrics event
  distances: every allowed pair of every frame (RAW events) and the extra TRANSFER / ASCEND / MIGRATE rows
  besides the matches, so perfect tracking can score MOTP below 100.
- Total = mean of the non-NaN joint values; a group (Head, Shoulder, ...) = plain mean of its joints, as
  poseval's table prints it.

Scores play no part: every predicted joint counts, so PoseTrack entries prune low-confidence joints first
(``tdmi test --track`` writes such a submission, ``tdmi.engine.test_tracking``). Association state is
sequential, so a Python loop runs over frames and joints, on small per-frame matrices; distances are computed
vectorised per frame.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from tdmi.errors import DataFormatError
from tdmi.evaluation.parallel import map_in_order, reader_processes
from tdmi.evaluation.posetrack_files import (DIST_THRESHOLD, NUM_JOINTS, _empty_predictions, _People,
                                             _prepare_poseval, _read_poseval_file, read_sequence_pair)
from tdmi.keypoints import POSEVAL15, POSEVAL_GROUPS

METRICS: tuple[str, ...] = ("MOTA", "MOTP", "Precision", "Recall")
GROUP_KEYS: tuple[str, ...] = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Total")
COUNT_KEYS: tuple[str, ...] = ("objects", "matches", "switches", "misses", "false_positives")


@dataclass
class TrackingResult:
    """poseval's tracking metrics. Arrays ``[16]``: the 15 joints in poseval order, then Total (percent)."""

    mota: np.ndarray
    motp: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    counts: dict[str, np.ndarray]  # COUNT_KEYS and "sum_distance", each [15]
    num_sequences: int
    num_frames: int
    notes: list[str] = field(default_factory=list)

    def metric(self, name: str) -> np.ndarray:
        return {"MOTA": self.mota, "MOTP": self.motp, "Precision": self.precision, "Recall": self.recall}[name]

    @property
    def table(self) -> dict[str, dict[str, float]]:
        """``{"MOTA": {"Head": ..., ..., "Total": ...}, "MOTP": ..., "Precision": ..., "Recall": ...}``."""
        out = {}
        for name in METRICS:
            values = self.metric(name)
            row = {group: float(np.mean(values[list(joints)])) for group, joints in POSEVAL_GROUPS.items()}
            row["Total"] = float(values[NUM_JOINTS])
            out[name] = row
        return out

    def format_table(self) -> str:
        header = "        " + " ".join(f"{k:>8}" for k in GROUP_KEYS)
        rows = [f"{name:<9}" + " ".join(f"{self.table[name][k]:8.1f}" for k in GROUP_KEYS) for name in METRICS]
        return "\n".join([header, *rows])

    def to_json_dict(self) -> dict[str, Any]:
        def clean(value: float) -> Optional[float]:
            return None if np.isnan(value) else float(value)

        table = {name: {k: clean(v) for k, v in row.items()} for name, row in self.table.items()}
        joints = POSEVAL15.names
        return {**table, "per_joint": {name: dict(zip(joints, (clean(v) for v in self.metric(name)[:NUM_JOINTS])))
                                       for name in METRICS},
                "counts": {k: dict(zip(joints, v.tolist())) for k, v in self.counts.items()},
                "num_sequences": self.num_sequences, "num_frames": self.num_frames, "notes": list(self.notes),
                "protocol": "poseval"}


class _JointAccumulator:
    """motmetrics 1.4.0's ``MOTAccumulator(auto_id=True)`` for one joint of one sequence, reduced to what poseval
    reads: the event counts and the event distance column (``events['D']``, NaN rows as 0)."""

    def __init__(self) -> None:
        self.partner: dict[float, float] = {}  # object -> last matched hypothesis (motmetrics' ``m``)
        self.owner: dict[float, float] = {}  # hypothesis -> last matched object (``res_m``)
        self.hypotheses_seen: set[float] = set()  # ``hypHistory``
        self.objects_matched: set[float] = set()  # ``last_match``
        self.matches = self.switches = self.misses = self.false_positives = self.objects = 0
        self.distances: list[float] = []

    def update(self, oids: np.ndarray, hids: np.ndarray, dists: np.ndarray) -> None:
        """``dists [len(oids), len(hids)]``: distance where the pair may match, NaN where it may not."""
        column = self.distances
        no, nh = len(oids), len(hids)
        self.objects += no
        column.append(0.0)  # the RAW row that marks the frame
        finite = np.isfinite(dists)
        if not finite.any():  # nothing may match: every object a miss, every hypothesis a false positive
            column.extend([0.0] * (2 * (no + nh)))  # unpaired RAW rows, then the MISS and FP rows
            self.misses += no
            self.false_positives += nh
            return
        valid_i, valid_j = np.nonzero(finite)
        column.extend(dists[valid_i, valid_j].tolist())
        column.extend([0.0] * (no - int(finite.any(axis=1).sum()) + nh - int(finite.any(axis=0).sum())))
        object_ids, hypothesis_ids = oids.tolist(), hids.tolist()  # Python floats: fast dict and set lookups
        object_done = [False] * no
        hypothesis_done = [False] * nh
        first_column: dict[float, list[int]] = {}
        for j, h in enumerate(hypothesis_ids):
            first_column.setdefault(h, []).append(j)
        matched_now = 0
        for i, o in enumerate(object_ids):  # 1. carry over the partners of the last frame that may still match
            previous = self.partner.get(o)
            if previous is None:
                continue
            j = next((j for j in first_column.get(previous, ()) if not hypothesis_done[j]), None)
            if j is not None and finite[i, j]:
                object_done[i] = hypothesis_done[j] = True
                matched_now += 1
                self.matches += 1
                column.append(float(dists[i, j]))
                self.objects_matched.add(o)
                self.hypotheses_seen.add(hypothesis_ids[j])
        costs = dists
        if matched_now:  # 2. minimum-distance assignment of the rest
            costs = dists.copy()
            costs[np.asarray(object_done), :] = np.nan
            costs[:, np.asarray(hypothesis_done)] = np.nan
        for i, j in zip(*_assignment(costs)):
            o, h, d = object_ids[i], hypothesis_ids[j], float(costs[i, j])
            switch = o in self.partner and self.partner[o] != h
            if switch and h not in self.hypotheses_seen:
                column.append(d)  # ASCEND
            if h in self.owner and self.owner[h] != o:
                if o not in self.objects_matched:
                    column.append(d)  # MIGRATE
                column.append(d)  # TRANSFER
            self.hypotheses_seen.add(h)
            self.objects_matched.add(o)
            column.append(d)
            if switch:
                self.switches += 1
            else:
                self.matches += 1
            matched_now += 1
            object_done[i] = hypothesis_done[j] = True
            self.partner[o] = h
            self.owner[h] = o
        missed, false = no - matched_now, nh - matched_now
        self.misses += missed
        self.false_positives += false
        column.extend([0.0] * (missed + false))

    def sum_distance(self) -> float:
        # pandas' Series.sum: NaN rows count 0, numpy's pairwise summation over the column in event order
        return float(np.asarray(self.distances, np.float64).sum()) if self.distances else 0.0


def _assignment(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """motmetrics' ``lsa_solve_scipy``: non-edges become a cost no optimum would choose, then are dropped."""
    valid = np.isfinite(costs)
    if not valid.any():
        return np.zeros(0, int), np.zeros(0, int)
    if valid.sum(axis=0).max() <= 1 and valid.sum(axis=1).max() <= 1:
        # each object and each hypothesis has at most one candidate: every optimum takes all of those pairs
        # (a non-edge costs more than any set of edges), returned by row like the solver's answer
        return np.nonzero(valid)
    if valid.all():
        finite = costs.copy()
    elif not valid.any():
        finite = np.zeros_like(costs)
    else:
        largest = np.abs(costs[valid]).max() + 1
        finite = np.where(valid, costs, 2 * min(costs.shape) * largest + 1)
    rows, cols = linear_sum_assignment(finite)
    keep = valid[rows, cols]
    return rows[keep], cols[keep]


def _frame_distances(gt: _People, pred: _People, g_rows: np.ndarray, p_rows: np.ndarray) -> np.ndarray:
    """``[G, P, 15]`` distance / head size for joints both persons have, NaN elsewhere or beyond 0.5."""
    diff = gt.xy[g_rows][:, None] - pred.xy[p_rows][None]
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) / gt.head_size[g_rows][:, None, None]
    allowed = gt.present[g_rows][:, None] & pred.present[p_rows][None] & (dist <= DIST_THRESHOLD)
    return np.where(allowed, dist, np.nan)


def _sequence(gt: _People, pred: _People, num_frames: int, accumulators: list[_JointAccumulator],
              source: str) -> None:
    for people, what in ((gt, "GT"), (pred, "predicted")):
        if np.isnan(people.track_id).any():
            raise DataFormatError(f"{source}: a {what} person has no track_id; tracking evaluation needs one on "
                                  f"every person")
    fake_ids, fake_dist = np.zeros(1), np.full((1, 1), np.nan)
    gt_start = np.searchsorted(gt.frame, np.arange(num_frames + 1))
    pr_start = np.searchsorted(pred.frame, np.arange(num_frames + 1))
    for frame in range(num_frames - 1):  # poseval drops the last evaluated frame of every sequence
        g_rows = np.arange(gt_start[frame], gt_start[frame + 1])
        p_rows = np.arange(pr_start[frame], pr_start[frame + 1])
        if len(g_rows) == 0 or len(p_rows) == 0:
            for acc in accumulators:  # one fake object and one fake hypothesis that may not match
                acc.update(fake_ids, fake_ids, fake_dist)
            continue
        if np.isnan(gt.head_size[g_rows]).any():
            raise DataFormatError(f"{source}: a GT person of evaluated frame {frame} has no head box (bbox_head), "
                                  f"which tracking evaluation needs")
        dist = _frame_distances(gt, pred, g_rows, p_rows).transpose(2, 0, 1)  # [15, G, P]
        gt_present, pr_present = gt.present[g_rows].T, pred.present[p_rows].T
        gt_ids, pr_ids = gt.track_id[g_rows], pred.track_id[p_rows]
        for joint, acc in enumerate(accumulators):
            has_g, has_p = gt_present[joint], pr_present[joint]
            acc.update(gt_ids[has_g], pr_ids[has_p], dist[joint][has_g][:, has_p])


def _result(counts: dict[str, np.ndarray], num_sequences: int, num_frames: int, notes: list[str]) -> TrackingResult:
    objects = counts["objects"].astype(np.float64)
    detections = (counts["matches"] + counts["switches"]).astype(np.float64)
    false = counts["false_positives"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_object = np.where(objects > 0, objects, np.nan)
        mota = 100 * (1.0 - (counts["misses"] + counts["switches"] + false) / per_object)
        motp = np.where(detections == 0, 0.0, 100 * (1.0 - counts["sum_distance"] / np.where(detections == 0, 1,
                                                                                               detections)))
        # poseval's operation order (100 * (a / b), not 100 * a / b), so the values are bit-identical
        precision = 100 * (detections / np.where(detections + false > 0, detections + false, np.nan))
        recall = 100 * (detections / per_object)

    def with_total(values: np.ndarray) -> np.ndarray:
        kept = values[~np.isnan(values)]
        return np.append(values, kept.mean() if len(kept) else np.nan)

    return TrackingResult(with_total(mota), with_total(motp), with_total(precision), with_total(recall), counts,
                          num_sequences, num_frames, notes)


@dataclass
class _SequenceEvents:
    """One sequence's event counts per joint (``counts[key] [15]``), or why it adds nothing (``note``)."""

    counts: Optional[dict[str, np.ndarray]]
    frames: int
    note: Optional[str] = None


def _track_sequence(name: str, gt_data: dict, pred_data: Optional[dict], allow_missing: bool, gt_source: str,
                    pred_source: str) -> _SequenceEvents:
    if pred_data is None and not allow_missing:
        raise DataFormatError(f"{pred_source}: no prediction file for GT sequence {name} ({gt_source})")
    gt_file = _read_poseval_file(gt_data, gt_source, is_gt=True)
    pred_file = (_read_poseval_file(pred_data, pred_source, is_gt=False) if pred_data is not None
                 else _empty_predictions(gt_file.num_frames, pred_source))
    gt_people, pr_people, frame_names = _prepare_poseval(gt_file, pred_file)
    if len(frame_names) == 0:
        return _SequenceEvents(None, 0)  # no evaluated frame: poseval's sequence list never has it
    if len(frame_names) == 1:
        return _SequenceEvents(None, 0, f"{gt_source}: a single evaluated frame, which poseval drops as the "
                                        f"sequence's last (poseval itself crashes here); the sequence adds nothing")
    accumulators = [_JointAccumulator() for _ in range(NUM_JOINTS)]
    _sequence(gt_people, pr_people, len(frame_names), accumulators, gt_source)
    counts = {key: np.asarray([getattr(acc, key) for acc in accumulators], np.int64) for key in COUNT_KEYS}
    counts["sum_distance"] = np.asarray([acc.sum_distance() for acc in accumulators])
    return _SequenceEvents(counts, len(frame_names) - 1)


def _read_and_track(task: tuple[str, str, str, bool]) -> _SequenceEvents:
    """Read one sequence's files and count its events (runs in the reader processes)."""
    name, gt_path, pred_path, allow_missing = task
    gt_data, pred_data = read_sequence_pair(gt_path, pred_path)
    return _track_sequence(name, gt_data, pred_data, allow_missing, gt_path, pred_path)


def _total(events: Sequence[_SequenceEvents]) -> TrackingResult:
    counts = {k: np.zeros(NUM_JOINTS, np.int64) for k in COUNT_KEYS}
    counts["sum_distance"] = np.zeros(NUM_JOINTS)
    scored = [e for e in events if e.counts is not None]
    for e in scored:  # in sequence order, so the float sums are the same whichever process counted
        for key in counts:
            counts[key] += e.counts[key]
    return _result(counts, len(scored), sum(e.frames for e in scored), [e.note for e in events if e.note])


def evaluate_tracking_sequences(gt: Mapping[str, dict], predictions: Mapping[str, Optional[dict]],
                                allow_missing: bool = False,
                                sources: Optional[Mapping[str, tuple[str, str]]] = None,
                                progress: bool = False) -> TrackingResult:
    """poseval's tracking metrics of already-loaded per-sequence files (same arguments as
    :func:`tdmi.evaluation.posetrack_ap.evaluate_sequences` with ``protocol="poseval"``)."""
    names = list(gt)
    if not names:
        raise DataFormatError("no ground-truth sequences to evaluate")
    iterator: Iterable[str] = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="tracking", unit="seq", file=sys.stderr, leave=False)
    events = []
    for name in iterator:
        gt_source, pred_source = (sources or {}).get(name, (f"GT {name}", f"prediction {name}"))
        events.append(_track_sequence(name, gt[name], predictions.get(name), allow_missing, gt_source, pred_source))
    return _total(events)


def evaluate_tracking_dirs(gt_dir: str | Path, pred_dir: str | Path, allow_missing: bool = False,
                           progress: bool = False, workers: Optional[int] = None) -> TrackingResult:
    """poseval's tracking metrics of a prediction folder against a folder of per-sequence GT files;
    ``workers`` as in :func:`tdmi.evaluation.posetrack_ap.evaluate_dirs`."""
    from tdmi.evaluation.posetrack_ap import list_sequence_files

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: {what} folder not found")
    tasks = [(path.stem, str(path), str(pred_dir / path.name), allow_missing) for path in list_sequence_files(gt_dir)]
    events = map_in_order(_read_and_track, tasks, reader_processes(len(tasks), workers),
                          progress="tracking" if progress else None)
    return _total(events)
