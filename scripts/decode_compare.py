"""Test-time decoding on real predictions: argmax vs DARK, each with and without the flip test.

The shipped demo checkpoints (TDMI and the single-frame HRNet, both W8 on SynthTrack) are scored on the SynthTrack
validation split they were scored on when shipped (the seed, sequence and frame counts in their sidecars), with GT
boxes and the poseval protocol, under six test protocols: ``argmax`` (the DCPose/FAMI default), ``dark`` (with
tdmi's guard), ``dark_published`` (without it), each also with the flip test (flip + DARK: the authors' later code).
The model's outputs are the same in all four; only the flip test (a second, mirrored forward pass) and the decoding
differ.

    PYTHONPATH=src python scripts/decode_compare.py                      # -> docs/results/decode_compare.json
    PYTHONPATH=src python scripts/decode_compare.py --sequences 2 --frames 8 --json-out /tmp/d.json   # quick
    PYTHONPATH=src python scripts/decode_compare.py --models tdmi_demo --sequences 10   # the first 10 val sequences

Prints one row per (model, protocol) with the 8 paper columns; ``--json-out`` holds the same tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = (("argmax", False, "argmax"), ("dark", False, "dark"), ("dark_published", False, "dark_published"),
             ("flip + argmax", True, "argmax"), ("flip + dark", True, "dark"),
             ("flip + dark_published", True, "dark_published"))
COLUMNS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=None, help="val sequences (default: the sidecar's)")
    parser.add_argument("--frames", type=int, default=None, help="frames per sequence (default: the sidecar's)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "bench-results" / "decode_compare")
    parser.add_argument("--json-out", type=Path, default=REPO / "docs" / "results" / "decode_compare.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["tdmi_demo", "hrnet_demo"], choices=["tdmi_demo", "hrnet_demo"],
                        help="shipped checkpoints to score (default both)")
    args = parser.parse_args(argv)
    for name in ("sequences", "frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")

    import tdmi
    from tdmi.atomic import atomic_write_json
    from tdmi.data.synthetic import SynthOptions, generate_synthtrack
    from tdmi.engine.test import load_model_for_test, run_test, test_protocol

    torch.set_num_threads(args.threads)
    weights = Path(tdmi.__file__).parent / "weights"
    rows: list[dict] = []
    for checkpoint in (weights / f"{name}.safetensors" for name in args.models):
        metadata = json.loads(checkpoint.with_suffix(".json").read_text())
        split = metadata["validation"]["synthtrack"]
        sequences = args.sequences or split["sequences"]
        frames = args.frames or split["frames"]
        version = split.get("generator_version", 1)
        data = args.work_dir / f"synthtrack_v{version}_val_{sequences}x{frames}_seed{split['seed']}"
        if not (data / "synthtrack_val.json").is_file():  # the generator version the models were scored on
            generate_synthtrack(data, sequences=sequences, frames=frames, seed=split["seed"], split="val",
                                options=SynthOptions(version=version), progress=False)
        for label, flip, decode in PROTOCOLS:
            overrides = [f"data.root={data}", "data.workers=0", f"test.flip_test={str(flip).lower()}",
                         f"test.decode={decode}"]
            loaded = load_model_for_test(checkpoint, device="cpu", overrides=overrides)
            start = time.perf_counter()
            out = args.work_dir / "runs" / checkpoint.stem / label.replace(" + ", "_")
            result = run_test(loaded.model, loaded.cfg, split="val", boxes="gt", out_dir=out, device="cpu",
                              progress=False)
            row = {"model": checkpoint.stem, "protocol": label, "flip_test": flip, "decode": decode,
                   "printed_protocol": test_protocol(loaded.cfg, "gt"), "sequences": sequences, "frames": frames,
                   "seed": split["seed"], "seconds": round(time.perf_counter() - start, 1),
                   **{k: round(result.table[k], 2) for k in COLUMNS}}
            rows.append(row)
            print(f"{row['model']:<16}{label:<23}" + "".join(f"{row[k]:>9.1f}" for k in COLUMNS), flush=True)
            # after every row, so an interrupted comparison keeps what it measured
            atomic_write_json(args.json_out, {"rows": rows, "boxes": "GT", "metric": "poseval mAP"}, indent=1)
    print(f"{'model':<16}{'protocol':<23}" + "".join(f"{k:>9}" for k in COLUMNS))
    for row in rows:
        print(f"{row['model']:<16}{row['protocol']:<23}" + "".join(f"{row[k]:>9.1f}" for k in COLUMNS))
    atomic_write_json(args.json_out, {"rows": rows, "boxes": "GT", "metric": "poseval mAP"}, indent=1)
    print(f"decode_compare: wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
