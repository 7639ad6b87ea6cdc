"""Summarise the MI gradient diagnostics of training runs (``mi_diag`` records of ``train.mi_diagnostics_every``).

    python scripts/mi_diag_summary.py runs/mi_dev/balanced runs/mi_dev/vsd [--after 100] [--dev-results dev]

For each run: per MI term, its gradient norm as a multiple of the heatmap loss's and its cosine with it, on the TDE
and on the useful gate (means over the records after step ``--after``), then the gates' saturation and per-sample
std at the last record, and the run's mAP from ``RUN/<dev-results>/results.json`` when present. Prints markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TERMS = ("mi_useful_noisy", "mi_motion_useful", "mi_useful_label", "mi_visual_label")
SHORT = {"mi_useful_noisy": "I(Mu;Mn)", "mi_motion_useful": "I(M;Mu)", "mi_useful_label": "I(Mu;y\\|F~)",
         "mi_visual_label": "I(F;y\\|F~)"}


def summarise(run: Path, after: int, results: str) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    diag = [r for r in records if r["kind"] == "mi_diag"]
    late = [r for r in diag if r["step"] > after] or diag
    out = {"run": str(run), "records": len(diag)}
    for group in ("tde", "useful_gate"):
        for term in TERMS:
            ratios = [r[f"{group}.{term}.norm"] / r[f"{group}.heatmap.norm"] for r in late
                      if r[f"{group}.heatmap.norm"] > 0]
            cosines = [r[f"{group}.{term}.cos"] for r in late]
            out[f"{group}.{term}"] = (sum(ratios) / max(len(ratios), 1), sum(cosines) / max(len(cosines), 1))
    if diag:
        last = diag[-1]
        for gate in ("useful_gate", "noisy_gate"):
            out[f"{gate}.saturated"] = last.get(f"{gate}.saturated")
            out[f"{gate}.per_sample_std"] = last.get(f"{gate}.per_sample_std")
    path = run / results / "results.json"
    out["mAP"] = json.loads(path.read_text())["Mean"] if path.is_file() else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--after", type=int, default=100)
    parser.add_argument("--dev-results", default="dev")
    args = parser.parse_args()
    rows = [summarise(run, args.after, args.dev_results) for run in args.runs]
    head = " | ".join(f"{g} {SHORT[t]}" for g in ("TDE", "gate") for t in TERMS)
    print(f"| run | mAP | {head} | useful gate saturated / std | noisy gate saturated / std |")
    print("| --- " * (3 + 2 * len(TERMS) + 1) + "|")
    for row in rows:
        cells = []
        for group in ("tde", "useful_gate"):
            for term in TERMS:
                ratio, cos = row.get(f"{group}.{term}", (0.0, 0.0))
                cells.append(f"{ratio:.2f}x, cos {cos:+.2f}")
        gates = [f"{row.get(f'{g}.saturated') or 0:.2f} / {row.get(f'{g}.per_sample_std') or 0:.3f}"
                 for g in ("useful_gate", "noisy_gate")]
        mean = "" if row["mAP"] is None else f"{row['mAP']:.1f}"
        print(f"| {Path(row['run']).name} | {mean} | " + " | ".join(cells) + " | " + " | ".join(gates) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
