"""Collect the SynthTrack proof's runs (2026-12-02) into docs/results/synthtrack_proof_2026_12_02.json, the plots and
the tables of docs/results.md.

    python scripts/synthtrack_report.py [--work runs/synthtrack_proof] [--resamples 2000]

Reads every run folder that scripts/synthtrack_proof.sh makes (``<variant>/seed_<k>/`` with ``test/results.json``,
``metrics.jsonl``, ``config.yaml``); runs not finished yet are listed as pending, so the report can be refreshed
while the experiment runs. For each finished run: the 8-column table on the held-out val (GT boxes), the same on
the hard frames (blurred or occluded key frames, scripts/synthtrack_hard_subset.py), wall time and budget. For the
differences the protocol names: the paired bootstrap 95% interval over val sequences (tdmi.evaluation.bootstrap).
Writes (atomically) the JSON, ``docs/synthtrack_stage1_curve.png``, ``docs/synthtrack_mi_terms.png`` and the part of
docs/results.md between the ``synthtrack-proof`` markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from tdmi.atomic import atomic_write, atomic_write_bytes, atomic_write_json  # noqa: E402
from tdmi.evaluation.bootstrap import paired_bootstrap, sequence_stats  # noqa: E402
from tdmi.evaluation.posetrack_ap import TABLE_KEYS, evaluate_dirs  # noqa: E402

VARIANTS = {  # name -> (run folder under work, description)
    "baseline_stage1": ("baseline_stage1", "HRNet-W8, stage 1 only (best dev epoch, float16 as shipped)"),
    "baseline": ("baseline_continued", "HRNet-W8 baseline continued for the stage-2 budget"),
    "tdmi": ("tdmi", "TDMI (TDE + RDM + MI, balanced formulation, alpha 1)"),
    "tdmi_no_mi": ("tdmi_no_mi", "TDMI without the MI objective (table 7)"),
    "tde_only": ("tde_only", "TDE only (table 5)"),
    "tdmi_alpha_0.1": ("tdmi_alpha_0.1", "TDMI, alpha 0.1"),
    "tdmi_alpha_10": ("tdmi_alpha_10", "TDMI, alpha 10"),
    "tdmi_vsd": ("tdmi_vsd", "TDMI with the earlier vsd MI formulation"),
}
COMPARISONS = [  # (name, a, b, subset)
    ("tdmi_vs_baseline", "tdmi", "baseline", "all"),
    ("tdmi_vs_baseline_hard", "tdmi", "baseline", "hard"),
    ("tdmi_vs_no_mi", "tdmi", "tdmi_no_mi", "all"),
    ("tde_only_vs_baseline", "tde_only", "baseline", "all"),
    ("tdmi_vs_tde_only", "tdmi", "tde_only", "all"),
    ("tdmi_vs_baseline_stage1", "tdmi", "baseline_stage1", "all"),
]
BEGIN, END = "<!-- synthtrack-proof:begin -->", "<!-- synthtrack-proof:end -->"


def _runs(work: Path, folder: str) -> list[Path]:
    base = work / folder
    if (base / "config.yaml").is_file() or (base / "test/results.json").is_file():  # a single run (stage 1)
        return [base]
    return sorted(p for p in base.glob("seed_*") if p.is_dir())


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _hard_gt(work: Path) -> Path:
    out = work / "hard_gt"
    if not out.is_dir():  # built beside and renamed, so an interrupted build is never taken for a finished one
        partial = work / "hard_gt.partial"
        subprocess.run([sys.executable, str(REPO / "scripts/synthtrack_hard_subset.py"),
                        str(work / "data/annotations/val"), str(partial)], check=True, capture_output=True)
        partial.rename(out)
    return out


def collect(work: Path) -> tuple[dict, dict]:
    gt_dir = work / "data/annotations/val"
    hard = _hard_gt(work)
    variants, stats = {}, {}
    for name, (folder, description) in VARIANTS.items():
        seeds, seed_stats = [], {"all": [], "hard": []}
        pending = []
        for run in _runs(work, folder):
            results = run / "test/results.json"
            if not results.is_file():
                pending.append(run.name)
                continue
            table = {k: float(json.loads(results.read_text())[k]) for k in TABLE_KEYS}
            predictions = run / "test/predictions"
            hard_table = evaluate_dirs(hard, predictions).table
            records = _metrics(run)
            epochs = [r for r in records if r["kind"] == "epoch"]
            import yaml

            config_path = run / "config.yaml"
            config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {"train": {}}
            seeds.append({
                "seed": config["train"].get("seed"), "run": str(run.relative_to(work)), "table": table,
                "hard_table": {k: float(hard_table[k]) for k in TABLE_KEYS},
                "epochs": len(epochs), "wall_seconds": float(sum(r.get("seconds", 0.0) for r in epochs)),
                "batch_size": config["train"].get("batch_size"), "feature_cache": config["train"].get("feature_cache"),
            })
            seed_stats["all"].append(sequence_stats(gt_dir, predictions))
            seed_stats["hard"].append(sequence_stats(hard, predictions))
        entry = {"description": description, "seeds": seeds, "pending": pending}
        if seeds:
            means = np.array([s["table"]["Mean"] for s in seeds])
            entry["mean"] = float(means.mean())
            entry["std"] = float(means.std(ddof=1)) if len(means) > 1 else None
            entry["mean_table"] = {k: float(np.mean([s["table"][k] for s in seeds])) for k in TABLE_KEYS}
            entry["mean_hard"] = float(np.mean([s["hard_table"]["Mean"] for s in seeds]))
        variants[name] = entry
        stats[name] = seed_stats
    return variants, stats


def compare(stats: dict, resamples: int) -> dict:
    out = {}
    for name, a, b, subset in COMPARISONS:
        if stats[a][subset] and stats[b][subset]:
            out[name] = {"a": a, "b": b, "subset": subset,
                         **paired_bootstrap(stats[a][subset], stats[b][subset], resamples=resamples)}
    return out


def _save(fig, name: str, dpi: int) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = REPO / "docs" / name
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return str(path.relative_to(REPO))


def plot(work: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install matplotlib)")
        return []
    written = []
    records = _metrics(work / "baseline")
    val = [(r["epoch"], r["Mean"]) for r in records if r["kind"] == "val" and "epoch" in r]
    if not val:  # older runs log val without the epoch: recover it from the epoch records
        epochs = [r for r in records if r["kind"] == "epoch"]
        step_to_epoch = {r["step"]: r["epoch"] for r in epochs}
        val = [(step_to_epoch.get(r["step"]), r["Mean"]) for r in records if r["kind"] == "val"]
    losses = [(r["epoch"], r["heatmap"]) for r in records if r["kind"] == "epoch"]
    if val:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(*zip(*val), "o-", label="dev mAP")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mAP (dev, GT boxes)")
        ax2 = ax.twinx()
        ax2.plot(*zip(*losses), color="gray", alpha=0.6, label="train heatmap loss")
        ax2.set_ylabel("train heatmap loss")
        ax.set_title("Stage 1: HRNet-W8 from scratch on SynthTrack")
        ax.grid(alpha=0.3)
        written.append(_save(fig, "synthtrack_stage1_curve.png", 110))
    names = ["mi_useful_noisy", "mi_motion_useful", "mi_useful_label", "mi_visual_label", "aux"]
    runs = [("tdmi (balanced)", r) for r in _runs(work, "tdmi")[:1]] + [("tdmi_vsd", r) for r in
                                                                       _runs(work, "tdmi_vsd")[:1]]
    runs = [(label, r) for label, r in runs if (r / "test/results.json").is_file()]  # finished runs only
    if runs:
        fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.2 * len(runs)), squeeze=False)
        for row, (label, run) in enumerate(runs):
            steps = [r for r in _metrics(run) if r["kind"] == "step"]
            for term in names:
                if steps and term in steps[0]:
                    axes[row, 0].plot([r["step"] for r in steps], [r[term] for r in steps], label=term)
            axes[row, 0].set_yscale("symlog", linthresh=1e-3)
            axes[row, 0].set_title(f"{label}: MI terms (raw values)", fontsize=9)
            axes[row, 0].legend(fontsize=7)
            diag = [r for r in _metrics(run) if r["kind"] == "mi_diag"]
            for key in ("tde.mi_useful_noisy.cos", "tde.mi_motion_useful.cos", "tde.mi_useful_label.cos",
                        "tde.mi_visual_label.cos", "useful_gate.saturated", "noisy_gate.saturated"):
                if diag and key in diag[0]:
                    axes[row, 1].plot([r["step"] for r in diag], [r[key] for r in diag], label=key)
            axes[row, 1].set_title(f"{label}: cosines with the heatmap gradient; gate saturation", fontsize=9)
            axes[row, 1].legend(fontsize=7)
            for ax in axes[row]:
                ax.set_xlabel("optimizer step")
                ax.grid(alpha=0.3)
        written.append(_save(fig, "synthtrack_mi_terms.png", 100))
    return written


def dev_diagnosis(folder: Path) -> dict:
    """The dev-split runs that chose the MI formulation: their dev tables and gradient summaries."""
    from mi_diag_summary import summarise

    out = {}
    for run in sorted(folder.glob("*/dev/results.json")) if folder.is_dir() else []:
        name = run.parents[1].name
        summary = summarise(run.parents[1], after=100, results="dev")
        out[name] = {"dev_table": {k: json.loads(run.read_text())[k] for k in TABLE_KEYS},
                     "gradients": {k: v for k, v in summary.items() if k not in ("run", "mAP")}}
    return out


def _fmt(value) -> str:
    return "" if value is None else f"{value:.1f}"


def markdown(report: dict) -> str:
    lines = ["| variant | seeds | " + " | ".join(TABLE_KEYS) + " | hard frames | mean +- std |",
             "| --- | --- | " + " | ".join("---" for _ in TABLE_KEYS) + " | --- | --- |"]
    for name, entry in report["variants"].items():
        if not entry["seeds"]:
            lines.append(f"| {name} | pending | " + " | ".join("" for _ in TABLE_KEYS) + " | | |")
            continue
        table = entry["mean_table"]
        spread = f"{entry['mean']:.1f} +- {entry['std']:.1f}" if entry["std"] is not None else f"{entry['mean']:.1f}"
        pending = f" (+{len(entry['pending'])} pending)" if entry["pending"] else ""
        lines.append(f"| {name} | {len(entry['seeds'])}{pending} | " + " | ".join(_fmt(table[k]) for k in TABLE_KEYS)
                     + f" | {_fmt(entry['mean_hard'])} | {spread} |")
    lines += ["", "| difference | frames | mean difference | paired bootstrap 95% CI | P(diff <= 0) |",
              "| --- | --- | --- | --- | --- |"]
    for name, c in report["comparisons"].items():
        lines.append(f"| {c['a']} - {c['b']} | {c['subset']} | {c['difference']:+.2f} | "
                     f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] | {c['p_not_positive']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs/synthtrack_proof")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--json-out", type=Path, default=REPO / "docs/results/synthtrack_proof_2026_12_02.json")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/results.md")
    parser.add_argument("--mi-dev", type=Path, default=REPO / "runs/mi_dev",
                        help="the MI formulation diagnosis (scripts/mi_dev_diagnosis.sh), recorded when present")
    args = parser.parse_args()
    variants, stats = collect(args.work)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    report = {"experiment": "synthtrack_proof", "commit": commit, "protocol": "docs/results.md#protocol",
              "metric": "poseval mAP, held-out SynthTrack val (30 x 30 frames, seed 1001), GT boxes",
              "variants": variants, "comparisons": compare(stats, args.resamples), "plots": plot(args.work),
              "mi_dev_diagnosis": dev_diagnosis(args.mi_dev)}
    atomic_write_json(args.json_out, report, indent=1)
    text = markdown(report)
    print(text)
    if not args.no_docs:
        doc = REPO / "docs/results.md"
        content = doc.read_text()
        if BEGIN in content and END in content:
            head, rest = content.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            atomic_write_bytes(doc, (head + BEGIN + "\n" + text + "\n" + END + tail).encode("utf-8"))
    print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
