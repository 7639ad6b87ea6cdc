"""The PoseTrack21 kit's pose-tracking HOTA (``hota_pose``): HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA.

Our own implementation of the rules of anDoer/PoseTrack21 ``eval/posetrack21`` (HEAD 3e61960:
``trackeval/metrics/hota_pose.py`` and ``trackeval/datasets/posetrack.py``; ``docs/tracking-metrics.md``).
Files are read as for the PT21 mAP (:mod:`tdmi.evaluation.pt21_files`: GT ``is_labeled`` frames, a joint is
present iff x > 0 and y > 0, ignore regions zero points and drop people left with none). Then, per sequence:

- ids are the files' track ids (any non-negative integer, unique within a frame), relabelled per sequence;
- similarity of a GT and a predicted joint = ``max(0, 1 - d / 0.5001)``, d = distance / head size (0.6 x the
  head-box diagonal); 0 where either joint is missing;
- per frame and joint, a Hungarian assignment maximises the summed similarity over *all* the frame's people;
  for each alpha in ``0.05, 0.10, ..., 0.95`` a pair with similarity >= alpha is a TP; FN / FP are the frame's
  present GT / predicted joints minus the TPs;
- AssA per alpha and joint = sum over TP pairs of ``TPA / (gt_count + pred_count - TPA)`` / TP, with
  ``gt_count`` / ``pred_count`` the ids' present joints over the sequence and TPA the pair's TPs at that alpha;
  AssRe, AssPr likewise with ``gt_count`` / ``pred_count`` alone; LocA = mean TP similarity;
- the sequence's Total column is the plain mean over the 15 joints for these ratios (a joint without TPs counts
  0) and the sum for TP / FN / FP;
- sequences combine by summing TP / FN / FP and TP-weighting AssA, AssRe, AssPr and LocA; then
  ``DetA = TP / (TP + FN + FP)``, ``DetRe = TP / (TP + FN)``, ``DetPr = TP / (TP + FP)`` and
  ``HOTA = sqrt(DetA x AssA)`` per alpha; reported values are 100 x the mean over the 19 alphas.

The kit's defects, reproduced by default (the published numbers have them) and corrected with ``corrected=True``:

- a labeled frame with GT people but no prediction adds the **whole sequence's** GT joint counts to FN (and a
  frame with predictions but no GT person the whole sequence's predicted joints to FP), not the frame's;
- a labeled frame without any GT annotation makes the kit raise (TypeError); we score it as a frame without GT
  people, which is what its metric code then does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from tdmi.errors import DataFormatError
from tdmi.evaluation.posetrack_files import _People, read_json
from tdmi.evaluation.pt21_files import _prepare_pt21, _read_pt21_file

ALPHAS = np.arange(0.05, 0.99, 0.05)
NUM_JOINTS = 15
#: The kit's joint names, in its (PoseTrack21) order.
JOINT_NAMES = ("Nose", "Neck", "Head", "LS", "RS", "LE", "RE", "LW", "RW", "LH", "RH", "LK", "RK", "LA", "RA")
RATIOS = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA")
_EPS = np.finfo("float").eps


@dataclass
class HotaResult:
    """Per-alpha arrays ``[19, 16]`` (15 joints in the kit's order, then Total), fractions in [0, 1]."""

    values: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]  # HOTA_TP, HOTA_FN, HOTA_FP: [19, 16]
    num_sequences: int
    corrected: bool
    notes: list[str] = field(default_factory=list)

    @property
    def table(self) -> dict[str, float]:
        """The reported numbers: 100 x mean over alphas of the Total column."""
        return {name: float(100 * self.values[name][:, NUM_JOINTS].mean()) for name in RATIOS}

    def per_joint(self, name: str) -> dict[str, float]:
        return {joint: float(100 * self.values[name][:, j].mean()) for j, joint in enumerate(JOINT_NAMES)}

    def format_table(self) -> str:
        return "  ".join(f"{name} {value:.1f}" for name, value in self.table.items())

    def to_json_dict(self) -> dict[str, Any]:
        return {**self.table, "per_joint": {name: self.per_joint(name) for name in RATIOS},
                "num_sequences": self.num_sequences, "protocol": "pt21", "kit_defects_corrected": self.corrected,
                "notes": list(self.notes)}


def _similarity(gt: _People, g: np.ndarray, pred: _People, p: np.ndarray) -> np.ndarray:
    """``[G, P, 15]`` joint similarities ``max(0, 1 - d / 0.5001)`` (0 where a joint is missing)."""
    diff = gt.xy[g][:, None] - pred.xy[p][None]
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) / gt.head_size[g][:, None, None]
    both = gt.present[g][:, None] & pred.present[p][None]
    distance = np.where(both, distance, np.inf)
    return np.maximum((-1 / 0.5001) * distance + 1, 0)


def _ids(track_id: np.ndarray, what: str, source: str) -> tuple[np.ndarray, int]:
    if np.isnan(track_id).any():
        raise DataFormatError(f"{source}: a {what} person has no track_id")
    unique, contiguous = np.unique(track_id, return_inverse=True)
    return contiguous.reshape(-1), len(unique)


def _sequence(gt: _People, pred: _People, num_frames: int, corrected: bool, source: str) -> dict[str, np.ndarray]:
    A, J = len(ALPHAS), NUM_JOINTS
    res = {k: np.zeros((A, J)) for k in ("HOTA_TP", "HOTA_FN", "HOTA_FP", "AssA", "AssRe", "AssPr", "LocA")}
    gt_total = gt.present.sum(axis=0).astype(float)  # the kit's num_gt_joints / num_tracker_joints
    pred_total = pred.present.sum(axis=0).astype(float)
    if len(pred.frame) == 0 or len(gt.frame) == 0:
        if len(pred.frame) == 0:
            res["HOTA_FN"][:] = gt_total
        else:
            res["HOTA_FP"][:] = pred_total
        res["LocA"][:] = 1.0
        return _finish(res)
    gt_ids, num_gt_ids = _ids(gt.track_id, "GT", source)
    pr_ids, num_pr_ids = _ids(pred.track_id, "predicted", source)
    gt_count = np.zeros((num_gt_ids, 1, J))
    pr_count = np.zeros((1, num_pr_ids, J))
    np.add.at(gt_count[:, 0], gt_ids, gt.present.astype(float))
    np.add.at(pr_count[0], pr_ids, pred.present.astype(float))
    matches = np.zeros((A, num_gt_ids, num_pr_ids, J))
    gt_start = np.searchsorted(gt.frame, np.arange(num_frames + 1))
    pr_start = np.searchsorted(pred.frame, np.arange(num_frames + 1))
    for t in range(num_frames):
        g = np.arange(gt_start[t], gt_start[t + 1])
        p = np.arange(pr_start[t], pr_start[t + 1])
        gt_t = gt.present[g].sum(axis=0)
        pr_t = pred.present[p].sum(axis=0)
        if len(g) == 0:
            res["HOTA_FP"] += pr_t if corrected else pred_total
            continue
        if len(p) == 0:
            res["HOTA_FN"] += gt_t if corrected else gt_total
            continue
        if np.isnan(gt.head_size[g][gt.present[g].any(axis=1)]).any():
            raise DataFormatError(f"{source}: a GT person of labeled frame {t} has no bbox_head")
        similarity = _similarity(gt, g, pred, p)
        for j in range(J):
            rows, cols = linear_sum_assignment(-similarity[:, :, j])
            s = similarity[rows, cols, j]
            hit = s[None, :] >= ALPHAS[:, None] - _EPS  # [A, pairs]
            tp = hit.sum(axis=1)
            res["HOTA_TP"][:, j] += tp
            res["HOTA_FN"][:, j] += gt_t[j] - tp
            res["HOTA_FP"][:, j] += pr_t[j] - tp
            res["LocA"][:, j] += (hit * s[None, :]).sum(axis=1)
            a_idx, pair = np.nonzero(hit)
            np.add.at(matches, (a_idx, gt_ids[g[rows[pair]]], pr_ids[p[cols[pair]]], j), 1.0)
    for a in range(A):
        tpa = matches[a]
        tp = np.maximum(1, res["HOTA_TP"][a])
        res["AssA"][a] = (tpa * (tpa / np.maximum(1, gt_count + pr_count - tpa))).sum(axis=(0, 1)) / tp
        res["AssRe"][a] = (tpa * (tpa / np.maximum(1, gt_count))).sum(axis=(0, 1)) / tp
        res["AssPr"][a] = (tpa * (tpa / np.maximum(1, pr_count))).sum(axis=(0, 1)) / tp
    res["LocA"] = np.maximum(1e-10, res["LocA"]) / np.maximum(1e-10, res["HOTA_TP"])
    return _finish(res)


def _finish(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The sequence's Total column: sums for the counts, plain means over the joints for the ratios."""
    out = {}
    for key, values in res.items():
        total = values.sum(axis=1, keepdims=True) if key.startswith("HOTA_") else values.mean(axis=1, keepdims=True)
        out[key] = np.concatenate([values, total], axis=1)
    return out


def _combine(parts: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    counts = {k: sum(p[k] for p in parts) for k in ("HOTA_TP", "HOTA_FN", "HOTA_FP")}
    tp, fn, fp = counts["HOTA_TP"], counts["HOTA_FN"], counts["HOTA_FP"]
    values = {k: sum(p[k] * p["HOTA_TP"] for p in parts) / np.maximum(1.0, tp) for k in ("AssA", "AssRe", "AssPr")}
    values["LocA"] = np.maximum(1e-10, sum(p["LocA"] * p["HOTA_TP"] for p in parts)) / np.maximum(1e-10, tp)
    values["DetRe"] = tp / np.maximum(1, tp + fn)
    values["DetPr"] = tp / np.maximum(1, tp + fp)
    values["DetA"] = tp / np.maximum(1, tp + fn + fp)
    values["HOTA"] = np.sqrt(values["DetA"] * values["AssA"])
    return values, counts


def evaluate_hota_sequences(gt: Mapping[str, dict], predictions: Mapping[str, Optional[dict]],
                            corrected: bool = False, allow_missing: bool = False,
                            sources: Optional[Mapping[str, tuple[str, str]]] = None) -> HotaResult:
    """The kit's pose-tracking HOTA of already-loaded PoseTrack21 files (sequence name -> file content)."""
    names = sorted(gt)
    if not names:
        raise DataFormatError("no ground-truth sequences to evaluate")
    parts = []
    for name in names:
        gt_source, pred_source = (sources or {}).get(name, (f"GT {name}", f"prediction {name}"))
        gt_file = _read_pt21_file(gt[name], gt_source, is_gt=True)
        pred_data = predictions.get(name)
        if pred_data is None:
            if not allow_missing:
                raise DataFormatError(f"{pred_source}: no prediction file for GT sequence {name} ({gt_source})")
            pred_data = {"images": [{"id": i} for i in gt_file.image_ids], "annotations": []}
        pred_file = _read_pt21_file(pred_data, pred_source, is_gt=False)
        gt_people, pred_people, frames = _prepare_pt21(gt_file, pred_file)
        parts.append(_sequence(gt_people, pred_people, len(frames), corrected, gt_source))
    values, counts = _combine(parts)
    return HotaResult(values, counts, len(parts), corrected)


def evaluate_hota_dirs(gt_dir: str | Path, pred_dir: str | Path, corrected: bool = False,
                       allow_missing: bool = False) -> HotaResult:
    """The kit's pose-tracking HOTA of a prediction folder against a folder of per-sequence GT files."""
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: {what} folder not found")
    gt, predictions, sources = {}, {}, {}
    for path in sorted(gt_dir.glob("*.json")):
        pred_path = pred_dir / path.name
        sources[path.stem] = (str(path), str(pred_path))
        gt[path.stem] = read_json(path)
        predictions[path.stem] = read_json(pred_path) if pred_path.is_file() else None
    if not gt:
        raise DataFormatError(f"{gt_dir}: no *.json ground-truth files")
    return evaluate_hota_sequences(gt, predictions, corrected, allow_missing, sources)
