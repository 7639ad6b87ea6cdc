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


class ResampledAP:
    """poseval's Mean AP of many sequence resamples at once, for one run's :func:`sequence_stats`.

    A resample is a count per sequence (how often the bootstrap drew it). Repeating a sequence c times repeats each of
    its detections c times with the same score, so the copies sit together in the ranking: the pooled ranking of any
    resample is the full set's ranking (sorted once, by poseval's own call) with each detection weighted by its
    sequence's count. VOC's all-point AP sums each hit's recall step (weight / GT count) times the precision envelope
    there; a run of c copied hits reaches the same envelope at each copy, so this equals AP on the expanded list
    (tested against :func:`mean_ap`). Only an exact score tie between *different* detections may order differently
    than the concatenated list would; the full set (every count 1) is poseval's order exactly.

    Only hit ranks matter: a miss never raises precision, so the envelope at a hit is the largest precision at this or
    a later *hit*. The weighted true positives up to each hit are a cumulative sum over the hits ``[R, H]``; the
    weighted detections seen up to each hit are either ``counts @ seen_per_sequence`` (``[R, n] @ [n, H]``, one BLAS
    product, exact integers: the fast way while n * H is small) or a cumulative sum over every detection ``[R, D]``
    sampled at the hits (the way whose cost and memory do not grow with the number of sequences). ``method="auto"``
    takes the product when ``n * H <= 64 * D``: on one thread it is about 2x faster at 30 sequences and even at ~170
    (PoseTrack val), where the cumulative sum also keeps no ``[n, H]`` table per joint.
    """

    #: elements of one chunk's largest temporary (8 bytes each): 32 MiB
    CHUNK_ELEMENTS = 2**22

    def __init__(self, stats: Sequence[SequenceStats], method: str = "auto"):
        if method not in ("auto", "matmul", "cumsum"):
            raise ValueError(f"method must be auto, matmul or cumsum, got {method!r}")
        self.sequences = n = len(stats)
        # per joint: rank order's sequence of each detection [D], hit ranks [H], the per-sequence detections seen up
        # to each hit [n, H] (matmul only, else None), detections per sequence [n], GT per sequence [n]
        self.joints: list[tuple] = []
        for j in range(NUM_JOINTS):
            scores = np.concatenate([s.scores[j] for s in stats]) if stats else np.zeros(0)
            hits = np.concatenate([s.hits[j] for s in stats]).astype(bool) if stats else np.zeros(0, bool)
            owner = np.concatenate([np.full(len(s.scores[j]), i) for i, s in enumerate(stats)]).astype(np.int64) \
                if stats else np.zeros(0, np.int64)
            order = np.array(scores).argsort()[::-1]  # the call _voc_ap makes
            owner, hits = owner[order], hits[order]
            hit_ranks = np.flatnonzero(hits)
            use_matmul = method == "matmul" or (method == "auto" and n * len(hit_ranks) <= 64 * len(owner))
            seen = None
            if use_matmul:  # per sequence, how many of its detections rank at or above each hit
                seen = np.stack([np.searchsorted(np.flatnonzero(owner == i), hit_ranks, side="right")
                                 for i in range(n)]).astype(np.float64) if n else np.zeros((0, len(hit_ranks)))
            self.joints.append((owner, hit_ranks, seen, np.bincount(owner, minlength=n).astype(np.float64),
                                np.array([s.num_gt[j] for s in stats], np.float64)))

    def mean_ap(self, counts: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """``counts [R, n]`` (draws per sequence) -> Mean AP (x100) of each resample ``[R]``; ``chunk`` resamples at
        a time (default: what keeps each temporary near :attr:`CHUNK_ELEMENTS`)."""
        counts = np.asarray(counts, np.float64)
        if counts.ndim != 2 or counts.shape[1] != self.sequences:
            raise ValueError(f"counts must be [R, {self.sequences}], got {counts.shape}")
        ap = np.zeros((len(counts), NUM_JOINTS))
        for j, (owner, hit_ranks, seen, detections, num_gt) in enumerate(self.joints):
            width = len(hit_ranks) if seen is not None else len(owner)
            step = chunk or max(1, self.CHUNK_ELEMENTS // max(width, 1))
            for start in range(0, len(counts), step):
                c = counts[start:start + step]                                   # [r, n]
                anywhere = c @ detections                                        # [r]
                gt = c @ num_gt
                if len(hit_ranks):
                    hit_weight = c[:, owner[hit_ranks]]                          # [r, H]: each hit's count
                    true_pos = np.cumsum(hit_weight, axis=1)
                    if seen is not None:
                        weighted_seen = c @ seen                                 # [r, H]
                    else:
                        weighted_seen = np.cumsum(c[:, owner], axis=1)[:, hit_ranks]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        precision = np.where(weighted_seen > 0, true_pos / weighted_seen, 0.0)
                    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
                    recall_weighted = (hit_weight * envelope).sum(axis=1)       # over the resample's GT, below
                else:
                    recall_weighted = np.zeros(len(c))
                with np.errstate(divide="ignore", invalid="ignore"):
                    value = recall_weighted / gt * 100
                # no GT of this joint in the resample: poseval's NaN where it has detections (0/0 recall), else 0
                ap[start:start + step, j] = np.where(gt > 0, value, np.where(anywhere > 0, np.nan, 0.0))
        valid = ~np.isnan(ap)
        with np.errstate(invalid="ignore"):
            return np.where(valid.any(axis=1), np.where(valid, ap, 0.0).sum(axis=1) / valid.sum(axis=1), np.nan)


def resample_counts(rng: np.random.Generator, resamples: int, sequences: int) -> np.ndarray:
    """``[resamples, sequences]``: how often each sequence is drawn when ``sequences`` are drawn with replacement."""
    draws = rng.integers(0, sequences, size=(resamples, sequences))
    flat = draws + sequences * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * sequences).reshape(resamples, sequences)


def two_level_contrast(terms: Sequence[tuple[float, dict[int, Sequence[SequenceStats]]]], paired: bool = True,
                       resamples: int = 10000, seed: int = 0, cache: dict | None = None) -> dict:
    """A weighted sum of seed-averaged mAPs, ``sum_i w_i * mean_seeds mAP(arm_i)``, with a 95% interval that resamples
    seeds, then sequences (the same sequence resample for every term).

    ``terms``: ``(weight, {seed: sequence_stats})`` pairs, all on the same sequences. ``a - b`` is
    ``[(1, a), (-1, b)]``; a difference of counterfactual drops is
    ``[(1, a_clean), (-1, a_distractor), (-1, b_clean), (1, b_distractor)]``. ``paired``: the terms share training
    seeds (same initialisation and data order), so one seed resample serves them all and ``per_seed`` reports the
    contrast of each common seed; otherwise each term resamples its own seeds. ``cache``: a dict kept across calls
    (with the same ``resamples`` and ``seed``, hence the same sequence resamples) that holds each run's resampled
    mAPs, so a report of many contrasts over the same runs computes each run once; the stats objects must stay alive
    while the cache is used.

    Returns ``value`` (full val set, poseval's Mean exactly), ``ci95``, ``p_not_positive``, ``seeds`` (per term),
    ``resamples``, ``sequences`` and, when paired, ``per_seed``.
    """
    if not terms or any(not arm for _, arm in terms):
        raise ValueError("two_level_contrast: every term needs at least one seed")
    seeds = [sorted(arm) for _, arm in terms]
    if paired:
        common = sorted(set.intersection(*(set(s) for s in seeds)))
        if not common:
            raise ValueError(f"two_level_contrast: paired terms share no seed ({seeds})")
        seeds = [common] * len(terms)
    names = [s.name for s in terms[0][1][seeds[0][0]]]
    for (_, arm), keys in zip(terms, seeds):
        if any([s.name for s in arm[k]] != names for k in keys):
            raise ValueError("two_level_contrast: every seed of every term must cover the same sequences")
    n = len(names)
    rng = np.random.default_rng(seed)
    counts = resample_counts(rng, resamples, n)  # drawn first: the same for every call with this seed and size
    cache = {} if cache is None else cache

    def resampled(stats) -> np.ndarray:
        key = (id(stats), resamples, seed, n)
        if key not in cache:
            cache[key] = (stats, ResampledAP(stats).mean_ap(counts))  # the stats kept: their id stays theirs
        return cache[key][1]

    def full(picks: list) -> float:
        return float(sum(w * np.mean([mean_ap(arm[k]) for k in keys]) for (w, arm), keys in zip(terms, picks)))

    draws = np.zeros(resamples)
    if paired:
        picks = rng.integers(0, len(seeds[0]), size=(resamples, len(seeds[0])))  # one seed resample for all terms
    for (weight, arm), keys in zip(terms, seeds):
        if not paired:
            picks = rng.integers(0, len(keys), size=(resamples, len(keys)))
        per_seed = np.stack([resampled(arm[k]) for k in keys], axis=1)  # [R, seeds]
        draws += weight * np.take_along_axis(per_seed, picks, axis=1).mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    out = {"value": full(seeds), "ci95": [float(low), float(high)], "p_not_positive": float((draws <= 0).mean()),
           "seeds": [list(map(int, keys)) for keys in seeds], "resamples": int(resamples), "sequences": n}
    if paired:
        out["per_seed"] = {int(k): full([[k]] * len(terms)) for k in seeds[0]}
    return out


def two_level_bootstrap(a: dict[int, Sequence[SequenceStats]], b: dict[int, Sequence[SequenceStats]],
                        paired: bool = True, resamples: int = 10000, seed: int = 0, cache: dict | None = None) -> dict:
    """The mAP difference ``a - b`` (seed-averaged) by :func:`two_level_contrast`; keys ``difference``, ``ci95``,
    ``p_not_positive``, ``seeds_a``, ``seeds_b``, ``resamples``, ``sequences`` and, paired, ``per_seed``."""
    out = two_level_contrast([(1.0, a), (-1.0, b)], paired=paired, resamples=resamples, seed=seed, cache=cache)
    out["difference"] = out.pop("value")
    out["seeds_a"], out["seeds_b"] = out.pop("seeds")
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

