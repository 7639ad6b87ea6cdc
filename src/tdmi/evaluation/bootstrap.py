"""Paired bootstrap confidence intervals for differences in poseval mAP, resampling whole sequences.

poseval pools every frame of every sequence before ranking detections, so a sequence's contribution to AP is not
additive; the bootstrap therefore recomputes AP on each resample. Matching (which prediction hits which GT joint)
happens within a frame, so it is done once per sequence (:func:`sequence_stats`); a resample then only concatenates
per-sequence (score, hit) lists and recomputes the per-joint VOC AP and the Mean exactly as poseval does.

Paired: both sides of a difference use the same resampled sequences. With several seeds per variant, a variant's
value on a resample is the mean over its seeds, so the interval covers the variation of the val set; the spread
across seeds is reported separately (mean +- std).

Two levels (:func:`two_level_bootstrap`, issue 23): training seeds vary too, so each resample first draws seeds with
replacement (the same seeds on both sides when two arms share initialisation and data order: paired by seed), then
sequences; the interval then covers both sources of variation. :func:`encode_stats` / :func:`decode_stats` turn
matched predictions into a compact JSON object, so the intervals can be recomputed from committed per-run files.

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


def two_level_bootstrap(a: dict[int, Sequence[SequenceStats]], b: dict[int, Sequence[SequenceStats]],
                        paired: bool = True, resamples: int = 10000, seed: int = 0) -> dict:
    """Mean mAP difference ``a - b`` over seeds, with a 95% interval that resamples seeds, then sequences.

    Args:
        a, b: per training seed, the :func:`sequence_stats` of one arm (all on the same sequences).
        paired: the arms share seeds (same initialisation and data order per seed): resample the common seeds once
            for both sides. Otherwise each side's seeds are resampled on their own.
        resamples: bootstrap resamples.
        seed: the resampling generator's seed.

    Returns:
        ``difference`` (seed-averaged, full val set), ``ci95``, ``p_not_positive``, ``per_seed`` (paired only: the
        full-set difference of each common seed), ``seeds_a``, ``seeds_b``, ``resamples``, ``sequences``.
    """
    seeds_a, seeds_b = sorted(a), sorted(b)
    if not seeds_a or not seeds_b:
        raise ValueError("two_level_bootstrap: each arm needs at least one seed")
    if paired:
        common = sorted(set(seeds_a) & set(seeds_b))
        if not common:
            raise ValueError(f"two_level_bootstrap: paired arms share no seed ({seeds_a} vs {seeds_b})")
        seeds_a = seeds_b = common
    names = [s.name for s in a[seeds_a[0]]]
    for group in (*(a[k] for k in seeds_a), *(b[k] for k in seeds_b)):
        if [s.name for s in group] != names:
            raise ValueError("two_level_bootstrap: every seed of both arms must cover the same sequences")
    n = len(names)
    rng = np.random.default_rng(seed)
    cache: dict = {}

    def value(arm: dict, key: int, indices: tuple) -> float:
        token = (id(arm), key, indices)
        if token not in cache:
            cache[token] = mean_ap(arm[key], None if indices == () else list(indices))
        return cache[token]

    full_a = {k: value(a, k, ()) for k in seeds_a}
    full_b = {k: value(b, k, ()) for k in seeds_b}
    difference = float(np.mean(list(full_a.values())) - np.mean(list(full_b.values())))
    diffs = np.empty(resamples)
    for r in range(resamples):
        sequences = rng.integers(0, n, size=n)
        pick_a = rng.choice(seeds_a, size=len(seeds_a))
        pick_b = pick_a if paired else rng.choice(seeds_b, size=len(seeds_b))
        chosen = list(sequences)
        diffs[r] = (np.mean([mean_ap(a[k], chosen) for k in pick_a])
                    - np.mean([mean_ap(b[k], chosen) for k in pick_b]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    out = {"difference": difference, "ci95": [float(low), float(high)],
           "p_not_positive": float((diffs <= 0).mean()), "seeds_a": list(map(int, seeds_a)),
           "seeds_b": list(map(int, seeds_b)), "resamples": int(resamples), "sequences": n}
    if paired:
        out["per_seed"] = {int(k): float(full_a[k] - full_b[k]) for k in seeds_a}
    return out


SCORE_SCALE = 2**20
"""Scores are stored as integers of ``score * SCORE_SCALE`` (about 1e-6 resolution): exact enough for pooled AP
(ranking), a third of float64 text."""


def encode_stats(stats: Sequence[SequenceStats]) -> dict:
    """Matched predictions as a JSON-serialisable object (per sequence and joint: base64 scores and hit bits)."""
    import base64

    sequences = []
    for s in stats:
        joints = []
        for scores, hits in zip(s.scores, s.hits):
            quantised = np.round(np.clip(scores, 0, None) * SCORE_SCALE).astype("<u4")
            joints.append({"scores": base64.b64encode(quantised.tobytes()).decode("ascii"),
                           "hits": base64.b64encode(np.packbits(hits.astype(bool)).tobytes()).decode("ascii"),
                           "n": int(len(scores))})
        sequences.append({"name": s.name, "num_gt": [int(v) for v in s.num_gt], "joints": joints})
    return {"format": "tdmi-sequence-stats-1", "score_scale": SCORE_SCALE, "sequences": sequences}


def decode_stats(obj: dict) -> list[SequenceStats]:
    """The inverse of :func:`encode_stats` (scores to within 1 / ``SCORE_SCALE``)."""
    import base64

    if obj.get("format") != "tdmi-sequence-stats-1":
        raise DataFormatError(f"sequence stats of format {obj.get('format')!r}; expected tdmi-sequence-stats-1")
    scale = float(obj["score_scale"])
    out = []
    for seq in obj["sequences"]:
        scores, hits = [], []
        for joint in seq["joints"]:
            n = int(joint["n"])
            scores.append(np.frombuffer(base64.b64decode(joint["scores"]), "<u4").astype(np.float64) / scale)
            bits = np.unpackbits(np.frombuffer(base64.b64decode(joint["hits"]), np.uint8))[:n]
            hits.append(bits.astype(bool))
        out.append(SequenceStats(name=seq["name"], scores=scores, hits=hits,
                                 num_gt=np.asarray(seq["num_gt"], np.float64)))
    return out

