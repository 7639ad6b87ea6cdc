"""DCNv2 speed: pure-PyTorch ``deform_conv2d`` forward+backward against a plain 3x3 conv of the same shape.

The TDMI DCN shape (model-facts.md (e)): 48 -> 48 channels, 3x3, dilation 3, padding 3, 12 offset groups, at the
96x72 heatmap resolution. Both sides are measured in the same run, so the ratio is meaningful on any machine;
the target is ratio <= 3 for the pure-PyTorch path.

    PYTHONPATH=src python benchmarks/dcn_speed.py [--batch 8] [--repeats 7] [--threads 1] [--json bench-results/dcn_speed.json]

Prints a table and writes JSON with min and median times and the ratios. The steps are interleaved and the
headline ratio uses the minimum over rounds, the measure least affected by other processes on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tdmi.models import deform_conv


def _time_interleaved(steps: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each step, alternating the steps in every round so that load from other processes
    hits all of them alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def _inputs(batch: int, channels: int, height: int, width: int, groups: int, dilation: int, device: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=g)
    offset = torch.randn(batch, 2 * groups * 9, height, width, generator=g) * 2.0
    mask = torch.rand(batch, groups * 9, height, width, generator=g)
    weight = torch.randn(channels, channels, 3, 3, generator=g) * 0.05
    bias = torch.randn(channels, generator=g)
    return [t.to(device).requires_grad_() for t in (x, offset, mask, weight, bias)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=48)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--groups", type=int, default=12, help="offset groups")
    parser.add_argument("--dilation", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/dcn_speed.json"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    x, offset, mask, weight, bias = _inputs(args.batch, args.channels, args.height, args.width, args.groups,
                                            args.dilation, args.device)
    d = args.dilation
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def conv_step() -> None:
        out = F.conv2d(x, weight, bias, padding=d, dilation=d)
        out.backward(torch.ones_like(out))
        sync()

    def dcn_step(backend: str):
        def step() -> None:
            with deform_conv.use_backend(backend):
                out = deform_conv.deform_conv2d(x, offset, weight, bias, padding=d, dilation=d, mask=mask)
            out.backward(torch.ones_like(out))
            sync()
        return step

    steps = {"conv2d 3x3 (baseline)": conv_step}
    backends = ["torch"] + (["torchvision"] if deform_conv.torchvision_available() else [])
    for backend in backends:
        steps[f"deform_conv2d [{backend}]"] = dcn_step(backend)
    times = _time_interleaved(steps, args.repeats)
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    baseline = "conv2d 3x3 (baseline)"

    shape = (f"B={args.batch} C={args.channels}->{args.channels} {args.height}x{args.width} 3x3 dil={d} "
             f"G={args.groups} device={args.device} threads={torch.get_num_threads()}")
    print(f"forward+backward, {args.repeats} interleaved rounds: {shape}")
    print(f"{'op':<28}{'min ms':>10}{'median ms':>11}{'x conv (min)':>14}{'x conv (median)':>17}")
    for name in steps:
        print(f"{name:<28}{best[name] * 1e3:>10.1f}{median[name] * 1e3:>11.1f}"
              f"{best[name] / best[baseline]:>14.2f}{median[name] / median[baseline]:>17.2f}")
    result = {"shape": shape, "repeats": args.repeats, "torch": torch.__version__,
              "min_ms": {name: t * 1e3 for name, t in best.items()},
              "median_ms": {name: t * 1e3 for name, t in median.items()}}
    for backend in backends:
        name = f"deform_conv2d [{backend}]"
        result[f"ratio_{backend}_vs_conv"] = best[name] / best[baseline]
        result[f"ratio_{backend}_vs_conv_median"] = median[name] / median[baseline]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.json.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(result, tmp, indent=2)
    os.replace(tmp.name, args.json)
    print(f"pure-PyTorch DCN / conv2d = {result['ratio_torch_vs_conv']:.2f}x by min time, "
          f"{result['ratio_torch_vs_conv_median']:.2f}x by median (target <= 3); wrote {args.json}")


if __name__ == "__main__":
    main()
