"""PoseTrack multi-person pose AP: our own implementation of poseval's rules, plus the PoseTrack21 kit's rules.

Facts: ``docs/facts/posetrack-facts.md`` sections 7 (what poseval reads), 8 (poseval's AP algorithm), 10 (the
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
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np

from tdmi.atomic import atomic_write_json
from tdmi.errors import DataFormatError
from tdmi.keypoints import POSEVAL15, POSEVAL_GROUPS

Protocol = Literal["poseval", "pt21"]
PROTOCOLS: tuple[str, ...] = ("poseval", "pt21")

from tdmi.evaluation.posetrack_files import (  # noqa: F401  (re-exported: the readers' names are this module's API)
    DIST_THRESHOLD, HEAD_SIZE_FACTOR, MAX_TRACK_ID, MISSING_SCORE, NUM_JOINTS, _PT21_GROUPS, _PT21_SLOTS,
    _PT21_TO_POSEVAL, _POSEVAL_NAMES, _People, _PosevalFile, _empty_predictions, _prepare_poseval,
    _read_poseval_file, read_json, read_sequence_pair)
from tdmi.evaluation.pt21_files import _Pt21File, _prepare_pt21, _read_pt21_file  # noqa: F401
from tdmi.evaluation.parallel import map_in_order, reader_processes  # noqa: F401  (reader_processes: API)


#: Keys of the paper-style table, in print order. "Mean" is poseval's "Total".
TABLE_KEYS: tuple[str, ...] = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")


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


def _voc_ap(scores: np.ndarray, labels: np.ndarray, num_gt: float,
            recall_floor_one: bool) -> tuple[float, float, float]:
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


def _compute_result(gt: _People, pred: _People, labels: np.ndarray, num_frames: int, protocol: str,
                    sequences: list[str], missing: list[str]) -> APResult:
    """The table from all evaluated frames' people and the matching's ``labels [NP, 15]``."""
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
    prepared: list[_Prepared] = []
    iterator: Iterable[str] = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="evaluate", unit="seq", file=sys.stderr)
    for name in iterator:
        gt_source, pred_source = (sources or {}).get(name, (f"GT {name}", f"prediction {name}"))
        prepared.append(_prepare_sequence(name, gt[name], predictions.get(name), protocol, allow_missing,
                                          gt_source, pred_source))
    return _combine(names, prepared, protocol)


@dataclass
class _Prepared:
    """One sequence after its files are read and cleaned: what the matching needs, nothing of the JSON."""

    gt: _People
    pred: _People
    labels: np.ndarray  # [NP, 15] the matching's true positives (frames are matched independently)
    frame_sources: list[str]  # "<GT file> frame <name>" per evaluated frame, for error messages
    missing: bool  # no prediction file (scored as all misses)
    frame_names: list[str] = field(default_factory=list)  # the GT image's file_name (PT17: image name) per frame


def _prepare_sequence(name: str, gt_data: dict, pred_data: Optional[dict], protocol: str, allow_missing: bool,
                      gt_source: str, pred_source: str) -> _Prepared:
    if pred_data is None and not allow_missing:
        raise DataFormatError(f"{pred_source}: no prediction file for GT sequence {name} ({gt_source}); "
                              f"every GT sequence needs one (or pass --allow-missing)")
    missing = pred_data is None
    if protocol == "poseval":
        gt_file = _read_poseval_file(gt_data, gt_source, is_gt=True)
        pred_file = (_read_poseval_file(pred_data, pred_source, is_gt=False) if pred_data is not None
                     else _empty_predictions(gt_file.num_frames, pred_source))
        gt_people, pr_people, frame_names = _prepare_poseval(gt_file, pred_file)
    else:
        gt_file21 = _read_pt21_file(gt_data, gt_source, is_gt=True)
        if missing:
            pred_data = {"images": [{"id": i} for i in gt_file21.image_ids], "annotations": []}
        pred_file21 = _read_pt21_file(pred_data, pred_source, is_gt=False)
        gt_people, pr_people, frame_names = _prepare_pt21(gt_file21, pred_file21)
    # matching runs here, per sequence, so that it runs in the reader processes too
    labels = _match_labels(gt_people, pr_people, len(frame_names))
    # PT21 names frames by their position in 'images' (messages); the report needs the images' file names
    file_names = ([gt_file21.file_names[int(n)] for n in frame_names] if protocol == "pt21" else list(frame_names))
    return _Prepared(gt_people, pr_people, labels, [f"{gt_source} frame {n}" for n in frame_names], missing,
                     file_names)


def _read_and_prepare(task: tuple[str, str, str, str, bool]) -> _Prepared:
    """Read one sequence's GT and prediction files and clean them (runs in the reader processes)."""
    name, gt_path, pred_path, protocol, allow_missing = task
    gt_data, pred_data = read_sequence_pair(gt_path, pred_path)
    return _prepare_sequence(name, gt_data, pred_data, protocol, allow_missing, gt_path, pred_path)


def _combine(names: list[str], prepared: Sequence[_Prepared], protocol: str) -> APResult:
    offsets = np.cumsum([0] + [len(p.frame_sources) for p in prepared])[:-1].tolist()
    gt_all = _People.concat([p.gt for p in prepared], offsets)
    pr_all = _People.concat([p.pred for p in prepared], offsets)
    frame_sources = [source for p in prepared for source in p.frame_sources]
    total = len(frame_sources)
    _check_head_boxes(gt_all, pr_all, total, frame_sources)
    missing = [name for name, p in zip(names, prepared) if p.missing]
    labels = (np.concatenate([p.labels for p in prepared]) if prepared else np.zeros((0, NUM_JOINTS), bool))
    return _compute_result(gt_all, pr_all, labels, total, protocol, names, missing)


def list_sequence_files(gt_dir: str | os.PathLike, protocol: Protocol = "poseval") -> list[Path]:
    """GT files of a folder: poseval's ``glob(dir/*.json)`` order, or sorted for the PT21 protocol."""
    files = [Path(p) for p in glob.glob(os.path.join(str(gt_dir), "*.json"))]
    return sorted(files) if protocol == "pt21" else files


def checked_sequence_files(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                           protocol: str) -> tuple[Path, Path, list[Path]]:
    """``(gt_dir, pred_dir, the GT sequence files in poseval's order)`` after checking the protocol and both folders
    (:class:`~tdmi.errors.DataFormatError` naming the one missing)."""
    _validate_protocol(protocol)
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    if not gt_dir.is_dir():
        raise DataFormatError(f"{gt_dir}: ground-truth folder not found")
    if not pred_dir.is_dir():
        raise DataFormatError(f"{pred_dir}: prediction folder not found")
    return gt_dir, pred_dir, list_sequence_files(gt_dir, protocol)


def evaluate_dirs(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    protocol: Protocol = "poseval",
    allow_missing: bool = False,
    progress: bool = False,
    workers: Optional[int] = None,
) -> APResult:
    """AP of a folder of prediction files against a folder of per-sequence GT files (same file names).

    ``workers`` processes read and clean the files (default: :func:`reader_processes`; 1 = this process only);
    the numbers do not depend on it.

    GT files are taken in the order poseval takes them (``glob``, filesystem order) for ``poseval``; that order
    only matters for exact score ties across sequences. Errors (missing folder or file, malformed file, frame
    count mismatch, bad track ids) raise :class:`~tdmi.errors.DataFormatError` naming the file.
    """
    gt_dir, pred_dir, files = checked_sequence_files(gt_dir, pred_dir, protocol)
    if not files:
        raise DataFormatError(f"{gt_dir}: no *.json ground-truth files")
    tasks = [(path.stem, str(path), str(pred_dir / path.name), protocol, allow_missing) for path in files]
    prepared = map_in_order(_read_and_prepare, tasks, reader_processes(len(tasks), workers),
                            progress="read" if progress else None)
    return _combine([t[0] for t in tasks], prepared, protocol)


# ------------------------------------------------------------------------------------------------------ files


def write_json_atomic(path: str | os.PathLike, payload: Any, indent: Optional[int] = 2) -> Path:
    """Write JSON atomically (no half-written files); NaN is refused, as strict JSON readers do."""
    return atomic_write_json(path, payload, indent=indent, allow_nan=False)
