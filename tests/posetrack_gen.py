"""Random PoseTrack18-style ground truth and predictions for evaluator tests, parity checks and benchmarks.

Sequence names follow PoseTrack's ``<6 digits>_mpii_test`` pattern so that the official poseval converter accepts
them. The generator deliberately produces the awkward cases of docs/facts/posetrack-facts.md section 8: unlabelled
frames,
labelled frames without people, people without keypoints, ignore regions (some self-intersecting), joints the GT
does not label, predictions without scores, score ties, (0, 0, 0) points, extra people and shuffled person order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

CATEGORIES = [{
    "supercategory": "person", "id": 1, "name": "person",
    "keypoints": ["nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"],
    "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
                 [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]],
}]


def sequence_name(index: int) -> str:
    return f"{index:06d}_mpii_test"


def _polygon(rng: np.random.Generator, width: int, height: int) -> tuple[list[float], list[float]]:
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    if rng.random() < 0.25:  # a self-intersecting "bow tie"
        r = rng.uniform(40, 200)
        xs, ys = [cx - r, cx + r, cx + r, cx - r], [cy - r, cy + r, cy - r, cy + r]
    else:
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(30, 250, n)
        xs, ys = list(cx + radius * np.cos(angles)), list(cy + radius * np.sin(angles))
    return [float(round(v)) for v in xs], [float(round(v)) for v in ys]


def make_gt_sequence(rng: np.random.Generator, seq_index: int, num_frames: int = 12, labeled_every: int = 1,
                     max_people: int = 6, ignore_prob: float = 0.3, width: int = 1280, height: int = 720) -> dict:
    """One GT file in the PoseTrack18 layout."""
    name = sequence_name(seq_index)
    images, annotations = [], []
    for k in range(num_frames):
        image_id = int(f"1{seq_index:06d}{k:04d}")
        labeled = k % labeled_every == 0
        image = {"file_name": f"images/val/{name}/{k:06d}.jpg", "id": image_id, "frame_id": image_id,
                 "vid_id": f"{seq_index:06d}", "nframes": num_frames, "is_labeled": labeled,
                 "has_no_densepose": True, "ignore_regions_x": [], "ignore_regions_y": []}
        if labeled and rng.random() < ignore_prob:
            for _ in range(int(rng.integers(1, 4))):
                xs, ys = _polygon(rng, width, height)
                image["ignore_regions_x"].append(xs)
                image["ignore_regions_y"].append(ys)
        images.append(image)
        if not labeled or rng.random() < 0.08:  # unlabelled frame, or a labelled frame without people
            continue
        for person in range(int(rng.integers(1, max_people + 1))):
            center = rng.uniform([0, 0], [width, height])
            spread = rng.uniform(30, 150)
            xy = center + rng.normal(0, spread, (17, 2))
            labeled_joint = rng.random(17) < 0.8
            labeled_joint[[3, 4]] = False  # ears are never annotated
            if rng.random() < 0.05:
                labeled_joint[:] = False  # a person with a box but no keypoints
            keypoints = np.zeros((17, 3))
            keypoints[labeled_joint, :2] = np.round(xy[labeled_joint], 2)
            keypoints[labeled_joint, 2] = 1
            head_w, head_h = rng.uniform(15, 80, 2)
            annotations.append({
                "bbox_head": [float(round(center[0] - head_w / 2, 1)), float(round(center[1] - spread, 1)),
                              float(round(head_w, 1)), float(round(head_h, 1))],
                "keypoints": keypoints.reshape(-1).tolist(), "track_id": person, "image_id": image_id,
                "bbox": [0, 0, 1, 1], "scores": [], "category_id": 1, "id": image_id * 100 + person,
                "iscrowd": False, "num_keypoints": int(labeled_joint.sum()),
            })
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def make_predictions(rng: np.random.Generator, gt: dict, miss_prob: float = 0.15, extra_people: float = 0.6,
                     tie_scores: bool = False, missing_scores_prob: float = 0.03,
                     width: int = 1280, height: int = 720, track_ids: str = "rank", swap_prob: float = 0.0) -> dict:
    """Predictions for one GT file: perturbed GT people plus false positives, in the PoseTrack18 layout.

    ``track_ids="rank"``: each person's position in the (shuffled) frame, so tracks mean nothing. ``"follow"``:
    every GT track keeps an id of its own (not the GT's), extras get fresh ids, and with ``swap_prob`` a frame
    swaps the ids of two of its people (identity switches for the tracking metrics).
    """
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    follow = track_ids == "follow"
    relabel = ({t: 100 + i for i, t in enumerate(rng.permutation(sorted({a["track_id"] for a in gt["annotations"]})))}
               if follow else {})
    annotations, next_id = [], 1000
    for image in gt["images"]:
        people = []
        for ann in by_image.get(image["id"], []):
            if rng.random() < miss_prob:
                continue
            kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            head = np.hypot(ann["bbox_head"][2], ann["bbox_head"][3]) * 0.6
            noise = rng.normal(0, head * rng.choice([0.1, 0.3, 0.8]), (17, 2))
            xy = np.where(kp[:, 2:] > 0, kp[:, :2] + noise, rng.uniform([0, 0], [width, height], (17, 2)))
            people.append([relabel.get(ann["track_id"]), xy])
        for _ in range(rng.poisson(extra_people)):
            people.append([next_id, rng.uniform([0, 0], [width, height]) + rng.normal(0, 80, (17, 2))])
            next_id += 1
        if follow and len(people) >= 2 and rng.random() < swap_prob:
            a, b = rng.choice(len(people), 2, replace=False)
            people[a][0], people[b][0] = people[b][0], people[a][0]
        order = rng.permutation(len(people))
        for rank, index in enumerate(order):
            track_id, xy = people[index]
            track_id = int(track_id) if follow else rank
            scores = rng.random(17)
            if tie_scores:
                scores = np.round(scores, 1)
            keypoints = np.concatenate([np.round(xy, 3), scores[:, None]], axis=1)
            dropped = rng.random(17) < 0.05
            keypoints[dropped] = 0.0  # (0, 0, 0): not submitted
            ann = {"image_id": image["id"], "track_id": track_id, "keypoints": keypoints.reshape(-1).tolist(),
                   "scores": keypoints[:, 2].tolist(), "score": float(rng.random()), "category_id": 1}
            if rng.random() < missing_scores_prob:
                del ann["scores"]
            annotations.append(ann)
    images = [{k: image[k] for k in ("file_name", "id", "frame_id", "vid_id", "nframes")} for image in gt["images"]]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def gt_as_predictions(gt: dict, unlabeled_score: Optional[float] = None) -> dict:
    """GT turned into predictions with the flag as joint score (mmpose's metric test). With ``unlabeled_score``,
    the unannotated non-ear joints are predicted far away with that score (facts section 8 verification)."""
    pred = json.loads(json.dumps(gt))
    for ann in pred["annotations"]:
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        if unlabeled_score is not None:
            empty = kp[:, 2] == 0
            empty[[3, 4]] = False
            kp[empty] = (5000.0, 5000.0, unlabeled_score)
        ann["keypoints"] = kp.reshape(-1).tolist()
        ann["scores"] = kp[:, 2].tolist()
    return pred


def write_sequences(folder: Path, files: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
    return folder


def to_annolist(data: dict, rng: Optional[np.random.Generator] = None, dummy: bool = False) -> dict:
    """The PoseTrack17 ``annolist`` form of a PoseTrack18 file (15 poseval ids, head box as x1..y2, ignore regions
    as point lists). With ``rng`` it adds old-format quirks: duplicate point ids, an id outside 0..14, a rect
    without ``annopoints``; with ``dummy`` empty frames get DCPose's dummy person ((0, 0) id 0, score -100)."""
    slot_to_id = [13, 12, 14, -1, -1, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0]
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    annolist = []
    for image in data["images"]:
        rects = []
        for ann in by_image.get(image["id"], []):
            kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
            scores = ann.get("scores") or None
            points = []
            for slot, pid in enumerate(slot_to_id):
                if pid < 0 or (kp[slot, 0] == 0 and kp[slot, 1] == 0 and kp[slot, 2] == 0):
                    continue
                point = {"id": [pid], "x": [float(kp[slot, 0])], "y": [float(kp[slot, 1])]}
                if scores is not None:
                    point["score"] = [float(scores[slot])]
                points.append(point)
            if rng is not None and points and rng.random() < 0.1:
                extra = dict(points[int(rng.integers(len(points)))])
                extra = {**extra, "x": [extra["x"][0] + 500.0]}
                points.insert(int(rng.integers(len(points) + 1)), extra)  # duplicate id: the first one counts
                points.append({"id": [15], "x": [10.0], "y": [10.0], "score": [0.9]})
            rect = {"track_id": [ann["track_id"]], "annopoints": [{"point": points}]}
            if "bbox_head" in ann:
                x, y, w, h = ann["bbox_head"]
                rect.update(x1=[x], y1=[y], x2=[x + w], y2=[y + h])
            if rng is not None and rng.random() < 0.03:
                del rect["annopoints"]
            rects.append(rect)
        if dummy and not rects:
            rects.append({"track_id": [0], "score": [0.0],
                          "annopoints": [{"point": [{"id": [0], "x": [0.0], "y": [0.0], "score": [-100.0]}]}]})
        entry = {"image": [{"name": image["file_name"]}], "imgnum": [0], "annorect": rects}
        regions = [{"point": [{"x": [x], "y": [y]} for x, y in zip(xs, ys)]}
                   for xs, ys in zip(image.get("ignore_regions_x", []), image.get("ignore_regions_y", []))]
        if regions:
            entry["ignore_regions"] = regions
        annolist.append(entry)
    return {"annolist": annolist}
