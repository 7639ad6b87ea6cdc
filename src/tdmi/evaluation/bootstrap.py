"""Paired bootstrap confidence intervals for differences in poseval mAP, resampling whole sequences.

poseval pools every frame of every sequence before ranking detections, so a sequence's contribution to AP is not
additive; the bootstrap therefore recomputes AP on each resample. Matching (which prediction hits which GT joint)
happens within a frame, so it is done once per sequence (:func:`sequence_stats`); a resample then only concatenates
per-sequence (score, hit) lists and recomputes the per-joint VOC AP and the Mean exactly as poseval does.

Paired: both sides of a difference use the same resampled sequences. With several seeds per variant, a variant's
value on a resample is the mean over its seeds, so the interval covers the variation of the val set; the spread
across seeds is reported separately (mean +- std).

    a = [sequence_stats(gt_dir, pred_dir) for pred_dir in tdmi_seed_dirs]
    b = [sequence_stats(gt_dir, pred_dir) for pred_dir in baseline_seed_dirs]
    paired_bootstrap(a, b, resamples=2000)   # {"difference": 5.1, "ci95": [3.2, 7.0], "p_not_positive": 0.0, ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tdmi.evaluation.posetrack_ap import (NUM_JOINTS, _match_labels, _nan_excluding_mean, _prepare_poseval,
                                          _read_poseval_file, _voc_ap, list_sequence_files, read_json)
from tdmi.errors import DataFormatError


@dataclass
class SequenceStats:
    """One sequence's matched predictions: per joint, the scores and hit flags of its predicted joints."""

    name: str
    scores: list[np.ndarray]
    hits: list[np.ndarray]
    num_gt: np.ndarray


def sequence_stats(gt_dir: str | Path, pred_dir: str | Path) -> list[SequenceStats]:
    """Match every sequence of ``gt_dir`` with its prediction file in ``pred_dir`` (poseval rules), in poseval's
    file order (which decides exact score ties across sequences, so the full-set Mean is poseval's)."""
    out = []
    for path in list_sequence_files(gt_dir):
        pred_path = Path(pred_dir) / path.name
        if not pred_path.is_file():
            raise DataFormatError(f"{pred_path}: prediction file missing for GT sequence {path}")
        gt_file = _read_poseval_file(read_json(path), str(path), is_gt=True)
        pred_file = _read_poseval_file(read_json(pred_path), str(pred_path), is_gt=False)
        gt, pred, frames = _prepare_poseval(gt_file, pred_file)
        labels = _match_labels(gt, pred, len(frames))
        out.append(SequenceStats(
            name=path.stem,
            scores=[pred.score[pred.present[:, j], j] for j in range(NUM_JOINTS)],
            hits=[labels[pred.present[:, j], j] for j in range(NUM_JOINTS)],
            num_gt=gt.present.sum(axis=0).astype(np.float64)))
    return out


def mean_ap(stats: Sequence[SequenceStats], indices: Sequence[int] | None = None) -> float:
    """poseval's Mean AP (x100) over the sequences ``indices`` of ``stats`` (repeats allowed); all when None.

    The poseval protocol only (``sequence_stats`` reads poseval's rules; PT21's recall floor is not applied)."""
    chosen = [stats[i] for i in (range(len(stats)) if indices is None else indices)]
    ap = np.zeros(NUM_JOINTS)
    for j in range(NUM_JOINTS):
        scores = np.concatenate([s.scores[j] for s in chosen])
        hits = np.concatenate([s.hits[j] for s in chosen])
        ap[j] = _voc_ap(scores, hits, float(sum(s.num_gt[j] for s in chosen)), recall_floor_one=False)[0]
    return _nan_excluding_mean(ap)


def paired_bootstrap(a: Sequence[Sequence[SequenceStats]], b: Sequence[Sequence[SequenceStats]],
                     resamples: int = 2000, seed: int = 0) -> dict:
    """Seed-averaged mAP difference ``a - b`` and its 95% percentile interval over sequence resamples.

    Args:
        a, b: per seed, the :func:`sequence_stats` of one variant (all on the same GT sequences).
        resamples: bootstrap resamples.
        seed: the resampling generator's seed.

    Returns:
        ``difference`` (on the full val set), ``ci95`` [low, high], ``p_not_positive`` (fraction of resamples
        with difference <= 0), ``resamples``, ``sequences``.
    """
    names = [s.name for s in a[0]]
    for group in (*a, *b):
        if [s.name for s in group] != names:
            raise ValueError("paired_bootstrap: every seed of both variants must cover the same sequences")
    n = len(names)
    rng = np.random.default_rng(seed)

    def value(indices):
        return (np.mean([mean_ap(s, indices) for s in a]) - np.mean([mean_ap(s, indices) for s in b]))

    full = float(value(None))
    diffs = np.array([value(rng.integers(0, n, size=n)) for _ in range(resamples)])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": full, "ci95": [float(low), float(high)], "p_not_positive": float((diffs <= 0).mean()),
            "resamples": int(resamples), "sequences": n}
