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
from typing import Any, Iterable, Mapping, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from tdmi.errors import DataFormatError
from tdmi.evaluation.posetrack_files import (DIST_THRESHOLD, NUM_JOINTS, _empty_predictions, _People,
                                             _prepare_poseval, _read_poseval_file, read_json)
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
        valid_i, valid_j = np.nonzero(np.isfinite(dists))
        column.extend(dists[valid_i, valid_j].tolist())
        column.extend([0.0] * (no - len(np.unique(valid_i)) + nh - len(np.unique(valid_j))))  # unpaired RAW rows
        object_done = np.zeros(no, bool)
        hypothesis_done = np.zeros(nh, bool)
        if no and nh:
            for i in range(no):  # 1. carry over the partners of the last frame that may still match
                previous = self.partner.get(oids[i])
                if previous is None:
                    continue
                candidates = np.flatnonzero(~hypothesis_done & (hids == previous))
                if len(candidates) and np.isfinite(dists[i, candidates[0]]):
                    j = candidates[0]
                    object_done[i] = hypothesis_done[j] = True
                    self.matches += 1
                    column.append(float(dists[i, j]))
                    self.objects_matched.add(oids[i])
                    self.hypotheses_seen.add(hids[j])
            costs = dists.copy()  # 2. minimum-distance assignment of the rest
            costs[object_done, :] = np.nan
            costs[:, hypothesis_done] = np.nan
            for i, j in zip(*_assignment(costs)):
                o, h, d = oids[i], hids[j], float(costs[i, j])
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
                object_done[i] = hypothesis_done[j] = True
                self.partner[o] = h
                self.owner[h] = o
        missed = int(no - object_done.sum())
        false = int(nh - hypothesis_done.sum())
        self.misses += missed
        self.false_positives += false
        column.extend([0.0] * (missed + false))

    def sum_distance(self) -> float:
        # pandas' Series.sum: NaN rows count 0, numpy's pairwise summation over the column in event order
        return float(np.asarray(self.distances, np.float64).sum()) if self.distances else 0.0


def _assignment(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """motmetrics' ``lsa_solve_scipy``: non-edges become a cost no optimum would choose, then are dropped."""
    if costs.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    valid = np.isfinite(costs)
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
        dist = _frame_distances(gt, pred, g_rows, p_rows)
        for joint, acc in enumerate(accumulators):
            has_g = np.flatnonzero(gt.present[g_rows, joint])
            has_p = np.flatnonzero(pred.present[p_rows, joint])
            acc.update(gt.track_id[g_rows[has_g]], pred.track_id[p_rows[has_p]], dist[np.ix_(has_g, has_p, [joint])][..., 0])


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


def evaluate_tracking_sequences(gt: Mapping[str, dict], predictions: Mapping[str, Optional[dict]],
                                allow_missing: bool = False,
                                sources: Optional[Mapping[str, tuple[str, str]]] = None,
                                progress: bool = False) -> TrackingResult:
    """poseval's tracking metrics of already-loaded per-sequence files (same arguments as
    :func:`tdmi.evaluation.posetrack_ap.evaluate_sequences` with ``protocol="poseval"``)."""
    names = list(gt)
    if not names:
        raise DataFormatError("no ground-truth sequences to evaluate")
    counts = {k: np.zeros(NUM_JOINTS, np.int64) for k in COUNT_KEYS}
    counts["sum_distance"] = np.zeros(NUM_JOINTS)
    notes: list[str] = []
    scored_sequences = scored_frames = 0
    iterator: Iterable[str] = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="tracking", unit="seq", file=sys.stderr, leave=False)
    for name in iterator:
        gt_source, pred_source = (sources or {}).get(name, (f"GT {name}", f"prediction {name}"))
        pred_data = predictions.get(name)
        if pred_data is None and not allow_missing:
            raise DataFormatError(f"{pred_source}: no prediction file for GT sequence {name} ({gt_source})")
        gt_file = _read_poseval_file(gt[name], gt_source, is_gt=True)
        pred_file = (_read_poseval_file(pred_data, pred_source, is_gt=False) if pred_data is not None
                     else _empty_predictions(gt_file.num_frames, pred_source))
        gt_people, pr_people, frame_names = _prepare_poseval(gt_file, pred_file)
        if len(frame_names) == 0:
            continue  # no evaluated frame: poseval's sequence list never has it
        if len(frame_names) == 1:
            notes.append(f"{gt_source}: a single evaluated frame, which poseval drops as the sequence's last "
                         f"(poseval itself crashes here); the sequence adds nothing")
            continue
        accumulators = [_JointAccumulator() for _ in range(NUM_JOINTS)]
        _sequence(gt_people, pr_people, len(frame_names), accumulators, gt_source)
        for joint, acc in enumerate(accumulators):
            for key in COUNT_KEYS:
                counts[key][joint] += getattr(acc, key)
            counts["sum_distance"][joint] += acc.sum_distance()
        scored_sequences += 1
        scored_frames += len(frame_names) - 1
    return _result(counts, scored_sequences, scored_frames, notes)


def evaluate_tracking_dirs(gt_dir: str | Path, pred_dir: str | Path, allow_missing: bool = False,
                           progress: bool = False) -> TrackingResult:
    """poseval's tracking metrics of a prediction folder against a folder of per-sequence GT files."""
    from tdmi.evaluation.posetrack_ap import list_sequence_files

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: {what} folder not found")
    gt: dict[str, dict] = {}
    predictions: dict[str, Optional[dict]] = {}
    sources: dict[str, tuple[str, str]] = {}
    for path in list_sequence_files(gt_dir):
        pred_path = pred_dir / path.name
        sources[path.stem] = (str(path), str(pred_path))
        gt[path.stem] = read_json(path)
        predictions[path.stem] = read_json(pred_path) if pred_path.is_file() else None
    return evaluate_tracking_sequences(gt, predictions, allow_missing, sources, progress)
