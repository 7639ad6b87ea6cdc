"""Training throughput of the SynthTrack proof's models: precision, memory format, batch, feature cache, processes.

Every row is a full optimizer step (forward, backward, Adam) on real SynthTrack batches held in memory, so the data
pipeline is measured separately (``loader`` rows); ratios are against the first row of the same section, measured in
the same run. Sections:

    stage1     the single-frame HRNet-W8 (128x96): fp32 batch 16 (the first proof's setting) against fp32/bf16 and
               contiguous/channels-last at batch 32
    stage2     TDMI over the frozen backbone: from frames (fp32, bf16 + channels-last) against from cached
               features (engine/feature_cache.py)
    loader     samples/s of the datasets alone (0 workers): stage-1 crops, stage-2 clips, cached features
    processes  aggregate stage-1 samples/s of 1 process x 2 threads against 2 processes x 1 thread side by side
    curve      (--curve-steps N) fp32 against bf16 + channels-last from the same weights and batches: the loss of
               every step, and how far apart they end

    PYTHONPATH=src python benchmarks/train_speed.py --data runs/synthtrack_proof/data \
        --json-out bench-results/train_speed.json
    PYTHONPATH=src python benchmarks/train_speed.py --sections stage1 curve --curve-steps 60

Without ``--data`` a small SynthTrack split is generated in a temporary folder. One thread per process unless a
section says otherwise (``processes``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tdmi.atomic import atomic_write_json
from tdmi.config import load_config
from tdmi.data.dataset import build_dataset, collate_clips
from tdmi.data.transforms import channels_last_frames
from tdmi.engine.train_step import build_train_step

REPO = Path(__file__).resolve().parents[1]
STAGE1 = REPO / "configs/synthtrack_stage1_hrnet_w8.yaml"
STAGE2 = REPO / "configs/synthtrack_stage2_tdmi_w8.yaml"


def _cfg(path: Path, data: Path, *extra: str):
    return load_config(path, [f"data.root={data}", "model.backbone.pretrained=null", "train.feature_cache=null",
                              *extra])


def _batches(cfg, batch_size: int, count: int) -> list[dict]:
    dataset = build_dataset(cfg, "train")
    dataset.set_epoch(0)
    out = []
    for b in range(count):
        indices = [(b * batch_size + i) % len(dataset) for i in range(batch_size)]
        out.append(collate_clips([dataset[i] for i in indices]))
    return out


def _module_and_optimizer(cfg, lr: float):
    """The trainer's model + losses, seeded, in train mode, with Adam over its trainable parameters."""
    torch.manual_seed(0)
    module = build_train_step(cfg)
    module.train()
    return module, torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)


def step_rate(cfg, batches: list[dict], steps: int, cached: bool = False) -> dict:
    """Samples/s of full optimizer steps (best of ``steps`` after one warm-up step)."""
    module, optimizer = _module_and_optimizer(cfg, 1e-4)
    inputs = []
    for batch in batches:
        frames = batch["frames"]
        if cached:
            with torch.no_grad():
                features = module.model.encode(frames.flatten(0, 1))
            frames = features._make(f.unflatten(0, frames.shape[:2]).half().float() for f in features)
        elif cfg.train.channels_last:
            frames = channels_last_frames(frames)
        inputs.append((frames, batch["heatmaps"], batch["target_weight"]))
    times = []
    for i in range(steps + 1):
        frames, heatmaps, weight = inputs[i % len(inputs)]
        start = time.perf_counter()
        loss = module(frames, heatmaps, weight)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    best = min(times[1:])
    batch = inputs[0][1].shape[0]
    return {"ms_per_step": best * 1000, "samples_per_s": batch / best, "batch": batch}


def section_stage1(data: Path, steps: int) -> list[dict]:
    rows = []
    for label, amp, cl, batch in (("fp32, batch 16 (first proof)", "none", False, 16),
                                  ("fp32, batch 32", "none", False, 32),
                                  ("fp32, channels-last, batch 32", "none", True, 32),
                                  ("bf16, batch 32", "bf16", False, 32),
                                  ("bf16, channels-last, batch 32 (proof v2)", "bf16", True, 32)):
        cfg = _cfg(STAGE1, data, f"train.amp={amp}", f"train.channels_last={str(cl).lower()}")
        rows.append({"row": label, **step_rate(cfg, _batches(cfg, batch, 2), steps)})
    return rows


def section_stage2(data: Path, steps: int) -> list[dict]:
    rows = []
    for label, amp, cl, cached in (("from frames, fp32 (first proof)", "none", False, False),
                                   ("from frames, bf16, channels-last", "bf16", True, False),
                                   ("from cached features, bf16 (proof v2)", "bf16", True, True)):
        cfg = _cfg(STAGE2, data, f"train.amp={amp}", f"train.channels_last={str(cl).lower()}")
        rows.append({"row": label, **step_rate(cfg, _batches(cfg, 32, 2), steps, cached=cached)})
    return rows


def section_loader(data: Path, samples: int, cache: Path | None) -> list[dict]:
    rows = []
    for label, path in (("stage-1 crops (1 frame)", STAGE1), ("stage-2 clips (5 frames)", STAGE2)):
        dataset = build_dataset(_cfg(path, data), "train")
        start = time.perf_counter()
        for i in range(samples):
            dataset[i % len(dataset)]
        rows.append({"row": label, "samples_per_s": samples / (time.perf_counter() - start)})
    if cache is not None and (cache / "manifest.json").is_file():
        from tdmi.engine.feature_cache import CachedFeatureDataset

        dataset = CachedFeatureDataset(cache)
        start = time.perf_counter()
        for i in range(samples):
            dataset[(i * 7919) % len(dataset)]  # scattered reads, as a shuffled epoch makes them
        elapsed = time.perf_counter() - start
        rows.append({"row": f"cached features ({cache.name})", "samples_per_s": samples / elapsed})
    return rows


def _child(data: Path, steps: int, threads: int) -> float:
    code = (f"import torch; torch.set_num_threads({threads}); import sys; "
            f"sys.path.insert(0, {str(REPO / 'benchmarks')!r});"
            f"import train_speed as t; from pathlib import Path;"
            f"cfg = t._cfg(t.STAGE1, Path({str(data)!r}), 'train.amp=bf16', 'train.channels_last=true');"
            f"print(t.step_rate(cfg, t._batches(cfg, 32, 2), {steps})['samples_per_s'])")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO / "src"))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def section_processes(data: Path, steps: int) -> list[dict]:
    one = _child(data, steps, 2)
    single = float(one.communicate()[0].split()[-1])
    pair = [_child(data, steps, 1) for _ in range(2)]
    rates = [float(p.communicate()[0].split()[-1]) for p in pair]
    return [{"row": "1 process x 2 threads", "samples_per_s": single},
            {"row": "2 processes x 1 thread (sum)", "samples_per_s": sum(rates), "per_process": rates}]


def section_curve(data: Path, steps: int) -> dict:
    losses = {}
    for label, amp, cl in (("fp32", "none", False), ("bf16, channels-last", "bf16", True)):
        cfg = _cfg(STAGE1, data, f"train.amp={amp}", f"train.channels_last={str(cl).lower()}")
        batches = _batches(cfg, 32, steps)
        module, optimizer = _module_and_optimizer(cfg, 1e-3)
        curve = []
        for batch in batches:
            frames = channels_last_frames(batch["frames"]) if cl else batch["frames"]
            loss = module(frames, batch["heatmaps"], batch["target_weight"])["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            curve.append(float(loss.detach()))
        losses[label] = curve
    a, b = losses["fp32"], losses["bf16, channels-last"]
    tail = max(1, steps // 5)
    end_a, end_b = sum(a[-tail:]) / tail, sum(b[-tail:]) / tail
    return {"steps": steps, "losses": losses, "mean_last_fp32": end_a, "mean_last_bf16": end_b,
            "relative_difference": abs(end_b - end_a) / end_a,
            "max_step_relative_difference": max(abs(x - y) / x for x, y in zip(a, b))}


def _print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    first = rows[0]["samples_per_s"]
    print(f"  {'setting':<44} {'samples/s':>10} {'x first':>8}")
    for row in rows:
        row["ratio_vs_first"] = row["samples_per_s"] / first
        print(f"  {row['row']:<44} {row['samples_per_s']:>10.1f} {row['ratio_vs_first']:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, default=None, help="a SynthTrack root with annotations/train")
    parser.add_argument("--cache", type=Path, default=None, help="a feature cache folder for the loader row")
    parser.add_argument("--sections", nargs="+", default=["stage1", "stage2", "loader", "processes"],
                        choices=["stage1", "stage2", "loader", "processes", "curve"])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per row (best of)")
    parser.add_argument("--curve-steps", type=int, default=60)
    parser.add_argument("--samples", type=int, default=200, help="samples per loader row")
    parser.add_argument("--json-out", type=Path, default=Path("bench-results/train_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from tdmi.data.synthetic import generate_synthtrack

            data = Path(tmp) / "synth"
            generate_synthtrack(data, sequences=4, frames=20, seed=1, split="train", progress=False)
        result = {"benchmark": "train_speed", "data": str(data), "cpu_count": os.cpu_count(),
                  "machine": platform.machine(), "torch": torch.__version__,
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "sections": {}}
        titles = {"stage1": "stage 1: HRNet-W8 train step", "stage2": "stage 2: TDMI-W8 train step (frozen backbone)",
                  "loader": "data alone (0 workers)", "processes": "stage 1, bf16 + channels-last, batch 32"}
        for section in args.sections:
            if section == "stage1":
                rows = section_stage1(data, args.steps)
            elif section == "stage2":
                rows = section_stage2(data, args.steps)
            elif section == "loader":
                rows = section_loader(data, args.samples, args.cache)
            elif section == "processes":
                rows = section_processes(data, args.steps)
            else:
                curve = section_curve(data, args.curve_steps)
                result["sections"]["curve"] = curve
                print(f"\ncurve: {args.curve_steps} steps from the same init and batches; mean loss of the last "
                      f"{max(1, args.curve_steps // 5)} steps fp32 {curve['mean_last_fp32']:.5f}, bf16 "
                      f"{curve['mean_last_bf16']:.5f} ({100 * curve['relative_difference']:.1f}% apart; largest "
                      f"single-step gap {100 * curve['max_step_relative_difference']:.1f}%)")
                continue
            _print_rows(titles[section], rows)
            result["sections"][section] = rows
    atomic_write_json(args.json_out, result, indent=1)
    print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
