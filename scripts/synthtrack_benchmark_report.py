"""The SynthTrack benchmark's report, from the committed per-run files alone (``docs/results/runs/<arm>/seed<k>.json``).

Protocol: docs/results.md ("The SynthTrack benchmark", 2026-12-06). Prints markdown tables (per arm: seeds, val mAP
mean +- std, subsets, counterfactual drops, costs; per comparison: per-seed paired differences and the two-level
bootstrap interval) and writes them as JSON (default ``docs/results/synthtrack_proof.json``). Arms or seeds not yet
run are reported as missing, never guessed.

Per joint group, the paired differences of the main comparisons are read against each group's articulated speed
(``<runs>/val_joint_speed.json``, written once by ``scripts/synthtrack_joint_speed.py`` from val's annotations).

    PYTHONPATH=src python scripts/synthtrack_benchmark_report.py [--resamples 10000] [--runs DIR] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARMS = ("tdmi", "tdmi_no_mi", "tdmi_lineage_mi", "static", "keyframe", "concat", "tde_only", "baseline", "fami_pose",
        "dcpose", "tdmi_paper_tde")
SUBSETS = ("blurred", "occluded", "fast", "distractor_in_crop", "none")
#: (label, arm a, arm b): the protocol's comparisons, a - b, paired by seed
COMPARISONS = (
    ("temporal vs same modules without time", "tdmi", "static"),
    ("temporal vs the extra depth on the key frame", "tdmi", "keyframe"),
    ("differences vs raw frames", "tdmi", "concat"),
    ("MI (F*) vs no MI", "tdmi", "tdmi_no_mi"),
    ("MI as the authors computed it vs no MI", "tdmi_lineage_mi", "tdmi_no_mi"),
    ("TDMI vs the single-frame baseline", "tdmi", "baseline"),
    ("RDM without MI vs TDE only", "tdmi_no_mi", "tde_only"),
    ("TDMI vs FAMI-Pose", "tdmi", "fami_pose"),
    ("TDMI vs DCPose", "tdmi", "dcpose"),
    ("the paper's TDE width vs the narrow one (addendum 13)", "tdmi_paper_tde", "tdmi"),
    ("TDMI at the paper's TDE width vs DCPose (like parameter counts)", "tdmi_paper_tde", "dcpose"),
    ("TDMI at the paper's TDE width vs FAMI-Pose", "tdmi_paper_tde", "fami_pose"),
)
#: test-time substitutions on the trained ``tdmi`` seeds (no training): name in the result file -> row label
SUBSTITUTIONS = (("key_frame", "supporting frames replaced by the key frame"),
                 ("other_sequence", "supporting frames from another sequence"))
#: counterfactual variants whose drop from ``clean`` is compared between arms
DROP_VARIANTS = ("distractor", "background")
#: per-joint paired differences (a - b, mean over common seeds) read against each joint group's articulated speed
JOINT_COMPARISONS = (("tdmi", "static"), ("tdmi", "keyframe"), ("tdmi", "concat"), ("tdmi", "baseline"),
                     ("tdmi", "dcpose"), ("tdmi_paper_tde", "dcpose"))
JOINT_GROUPS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
#: counterfactual drop comparisons: drop(a) - drop(b) for each variant's drop from clean
DROP_COMPARISONS = (("tdmi", "tdmi_no_mi"), ("tdmi", "concat"), ("tdmi", "static"), ("tdmi", "fami_pose"),
                    ("tdmi", "dcpose"), ("tdmi_paper_tde", "dcpose"))


def load_runs(folder: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob("*/seed*.json")):
        record = json.loads(path.read_text())
        runs.setdefault(record["arm"], {})[int(record["seed"])] = record
    return runs


_STATS: dict = {}  # (id of the arm's runs, where) -> per seed stats: the same objects each time, for the AP cache


def stats_of(arm_runs: dict[int, dict], where: tuple[str, ...]) -> dict[int, list]:
    """Per seed, the matched predictions at ``where`` in each result file, sorted by scene name.

    A counterfactual variant's sequences are named after their split (``000011_bonn_cfclean``,
    ``000011_bonn_cfdistractor``): the split's suffix is dropped, so that the same scene pairs across variants, and
    the sequences are sorted, since each set is listed in its folder's own order.
    """
    from dataclasses import replace

    from tdmi.evaluation.bootstrap import decode_stats

    key = (id(arm_runs), where)
    if key in _STATS:
        return _STATS[key][1]

    suffix = re.compile(rf"_[a-z]*{re.escape(where[-1])}$") if where[0] == "counterfactual" else None
    out = {}
    for seed, record in arm_runs.items():
        node = record
        for key in where:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if "stats" in node:
            stats = decode_stats(node["stats"])
            if suffix is not None:
                stats = [replace(s, name=suffix.sub("", s.name)) for s in stats]
            out[seed] = sorted(stats, key=lambda s: s.name)
    _STATS[key] = (arm_runs, out)  # the runs kept alive, so their id is not reused
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (ties share their mean rank); None when a value is missing (NaN) or a side is
    constant."""
    from scipy.stats import rankdata

    if np.isnan(x).any() or np.isnan(y).any() or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def joint_table(runs: dict, speed_file: Path, report: dict) -> None:
    """Per joint group: the paired val AP difference of each :data:`JOINT_COMPARISONS` pair (mean over the seeds
    both arms have), beside the group's articulated speed when ``speed_file`` (scripts/synthtrack_joint_speed.py)
    is committed; with it, the rank correlation of gain and speed over the 7 groups."""
    speeds = json.loads(speed_file.read_text())["groups"] if speed_file.is_file() else None
    print("\n| per joint group (val AP) | " + " | ".join(JOINT_GROUPS) + " | Mean | seeds | rank corr. with speed |")
    print("| --- " * (len(JOINT_GROUPS) + 4) + "|")
    if speeds:
        print("| articulated speed (% height / frame) | "
              + " | ".join(f"{speeds[g]['speed']:.2f}" for g in JOINT_GROUPS) + " | | | |")
    report["per_joint"] = {"speed": speeds, "differences": {}}
    for a, b in JOINT_COMPARISONS:
        common = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        if not common:
            print(f"| {a} - {b} | (waiting for runs) |" + " |" * (len(JOINT_GROUPS) + 2))
            continue
        diff = {g: float(np.mean([runs[a][k]["val"]["table"][g] - runs[b][k]["val"]["table"][g] for k in common]))
                for g in (*JOINT_GROUPS, "Mean")}
        corr = spearman([speeds[g]["speed"] for g in JOINT_GROUPS], [diff[g] for g in JOINT_GROUPS]) if speeds \
            else None
        report["per_joint"]["differences"][f"{a} - {b}"] = {"seeds": common, "difference": diff,
                                                             "rank_correlation_with_speed": corr}
        print(f"| {a} - {b} | " + " | ".join(f"{diff[g]:+.1f}" for g in (*JOINT_GROUPS, "Mean"))
              + f" | {','.join(map(str, common))} | {'-' if corr is None else f'{corr:+.2f}'} |")


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):.1f} +- {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def interval(result: dict, key: str = "value") -> str:
    low, high = result["ci95"]
    return f"{result[key]:+.2f} [{low:+.2f}, {high:+.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=REPO / "docs" / "results" / "runs")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--json-out", type=Path, default=REPO / "docs" / "results" / "synthtrack_proof.json")
    args = parser.parse_args(argv)
    if args.resamples < 100:
        parser.error(f"--resamples must be at least 100, got {args.resamples}")
    if not args.runs.is_dir():
        parser.error(f"{args.runs}: no per-run result folder (scripts/synthtrack_benchmark.sh writes it)")
    from tdmi.atomic import atomic_write_json
    from tdmi.evaluation.bootstrap import two_level_contrast

    runs = load_runs(args.runs)
    cache: dict = {}  # each run's resampled mAPs, computed once for every contrast it is in
    report: dict = {"protocol": "docs/results.md, The SynthTrack benchmark (2026-12-06)", "arms": {},
                    "comparisons": {}, "drop_comparisons": {}, "resamples": args.resamples}
    choice = args.runs / "mi_choice.json"
    if choice.is_file():
        report["mi_choice"] = json.loads(choice.read_text())

    print("| arm | seeds | val mAP | " + " | ".join(SUBSETS) + " | clean -> distractor | clean -> background "
          "| trainable params | GMAC/person | train CPU h |")
    print("| --- " * (8 + len(SUBSETS)) + "|")  # arm, seeds, val, the subsets, 2 drops, params, MACs, CPU
    for arm in ARMS:
        arm_runs = runs.get(arm, {})
        if not arm_runs:
            print(f"| {arm} | (not run yet) |" + " |" * (6 + len(SUBSETS)))
            continue
        seeds = sorted(arm_runs)
        val = [arm_runs[k]["val"]["table"]["Mean"] for k in seeds]
        subsets = {name: [arm_runs[k]["val"]["subsets"][name]["Mean"] for k in seeds
                          if name in arm_runs[k]["val"].get("subsets", {})] for name in SUBSETS}
        drops = {}
        for variant in ("distractor", "background"):
            values = [arm_runs[k]["counterfactual"]["clean"]["table"]["Mean"]
                      - arm_runs[k]["counterfactual"][variant]["table"]["Mean"]
                      for k in seeds if variant in arm_runs[k].get("counterfactual", {})]
            drops[variant] = values
        cpu = [arm_runs[k]["train_cpu_seconds"] / 3600 for k in seeds if arm_runs[k].get("train_cpu_seconds")]
        first = arm_runs[seeds[0]]
        report["arms"][arm] = {
            "seeds": seeds, "val_mean_ap": dict(zip(map(str, seeds), val)),
            "subsets": {n: dict(zip(map(str, seeds), v)) for n, v in subsets.items()},
            "drops": {v: dict(zip(map(str, seeds), d)) for v, d in drops.items()},
            "trainable_parameters": first.get("trainable_parameters"), "macs_per_person": first.get("macs_per_person"),
            "train_cpu_hours": cpu, "epochs_from_steps": [arm_runs[k].get("epochs_from_steps") for k in seeds]}
        print(f"| {arm} | {','.join(map(str, seeds))} | {mean_std(val)} | "
              + " | ".join(mean_std([float(x) for x in subsets[n]]) for n in SUBSETS)
              + f" | {mean_std(drops['distractor'])} | {mean_std(drops['background'])} | "
              f"{first.get('trainable_parameters', 0):,} | {first.get('macs_per_person', 0) / 1e9:.2f} | "
              f"{mean_std(cpu)} |")

    print("\n| comparison | a - b | per-seed differences | two-level 95% interval | P(<= 0) |")
    print("| --- | --- | --- | --- | --- |")
    for label, a, b in COMPARISONS:
        sa, sb = stats_of(runs.get(a, {}), ("val",)), stats_of(runs.get(b, {}), ("val",))
        if not sa or not sb or not set(sa) & set(sb):
            print(f"| {label} | {a} - {b} | (waiting for runs) | | |")
            continue
        result = two_level_contrast([(1.0, sa), (-1.0, sb)], resamples=args.resamples, cache=cache)
        report["comparisons"][f"{a} - {b}"] = {"label": label, **result}
        per_seed = ", ".join(f"{v:+.2f}" for _, v in sorted(result["per_seed"].items()))
        print(f"| {label} | {a} - {b} | {per_seed} | {interval(result)} | {result['p_not_positive']:.3f} |")

    print("\n| tdmi at test time (no training) | val mAP | tdmi - this | per-seed | two-level 95% interval | P(<= 0) |")
    print("| --- | --- | --- | --- | --- | --- |")
    report["substitutions"] = {}
    trained = stats_of(runs.get("tdmi", {}), ("val",))
    for name, label in SUBSTITUTIONS:
        substituted = stats_of(runs.get("tdmi", {}), ("substitutions", name))
        if not trained or not set(trained) & set(substituted):
            print(f"| {label} | (waiting for runs) | | | | |")
            continue
        maps = [runs["tdmi"][k]["substitutions"][name]["table"]["Mean"] for k in sorted(substituted)]
        result = two_level_contrast([(1.0, trained), (-1.0, substituted)], resamples=args.resamples,
                                    cache=cache)
        report["substitutions"][name] = {"label": label, "val_mean_ap": dict(zip(map(str, sorted(substituted)),
                                                                                 maps)), "tdmi_minus_this": result}
        per_seed = ", ".join(f"{v:+.2f}" for _, v in sorted(result["per_seed"].items()))
        print(f"| {label} | {mean_std(maps)} | tdmi - this | {per_seed} | {interval(result)} | "
              f"{result['p_not_positive']:.3f} |")

    print("\n| robustness | drop(a) - drop(b) | per-seed | two-level 95% interval |")
    print("| --- | --- | --- | --- |")
    for variant in DROP_VARIANTS:
        report["drop_comparisons"][variant] = {}
        for a, b in DROP_COMPARISONS:
            terms = []
            for arm, sign in ((a, 1.0), (b, -1.0)):
                clean = stats_of(runs.get(arm, {}), ("counterfactual", "clean"))
                changed = stats_of(runs.get(arm, {}), ("counterfactual", variant))
                terms += [(sign, clean), (-sign, changed)]
            if any(not t for _, t in terms) or not set.intersection(*(set(t) for _, t in terms)):
                print(f"| clean -> {variant}: {a} vs {b} | (waiting for runs) | | |")
                continue
            result = two_level_contrast(terms, resamples=args.resamples, cache=cache)
            report["drop_comparisons"][variant][f"{a} - {b}"] = result
            per_seed = ", ".join(f"{v:+.2f}" for _, v in sorted(result["per_seed"].items()))
            print(f"| clean -> {variant}: {a} vs {b} | drop({a}) - drop({b}) | {per_seed} | {interval(result)} |")

    joint_table(runs, args.runs / "val_joint_speed.json", report)

    atomic_write_json(args.json_out, report, indent=1)
    print(f"\nsynthtrack_benchmark_report: {sum(len(v) for v in runs.values())} runs; wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
