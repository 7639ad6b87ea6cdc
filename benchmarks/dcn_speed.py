"""DCNv2 speed: pure-PyTorch ``deform_conv2d`` against a plain 3x3 conv of the same shape, forward and forward+backward.

The TDMI DCN shape (docs/facts/model-facts.md (c), FAMI-Pose Alignment_V15): 48 -> 48 channels, 3x3, dilation 3,
padding 3,
12 offset groups, at the 96x72 heatmap resolution, batch 8; offsets ~ 2 px, masks in [0, 1]. Both ops are measured
in the same run, so the ratios mean something on any machine; the goal is a forward+backward ratio <= 3 for the
pure-PyTorch path.

    PYTHONPATH=src python benchmarks/dcn_speed.py                      # torch's default thread count
    PYTHONPATH=src python benchmarks/dcn_speed.py --threads 1 2        # one table per thread count
    PYTHONPATH=src python benchmarks/dcn_speed.py --device cuda        # on a GPU (timed with synchronisation)

How it measures, for shared machines: the ops are interleaved within every round, so load from other processes
hits them alike; each is reported by min and median over the rounds. On CPU the process CPU time is reported as
well: with one thread it leaves out the time the process waited for a core, which makes it the steadiest number
when other jobs run (with more threads it adds up all threads, including OpenMP's spin-waiting). Gradients are set
to None before every step, as ``optimizer.zero_grad()`` does, so no run pays for accumulating into old ``.grad``.

Prints one table per thread count and writes JSON (default bench-results/dcn_speed.json, written atomically).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from tdmi.models import deform_conv

BASELINE = "conv2d"


def _keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed memory instead of returning it to the OS (as jemalloc/tcmalloc, often used
    with PyTorch on CPU, do anyway). Then large temporaries are not page-faulted in again on every call, which on
    a VM can cost as much as the conv itself and depends on allocation order. Returns False where it cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        # 1 GiB trim threshold; mmap threshold at glibc's maximum (32 MiB on 64-bit) keeps most chunks on the heap
        return bool(libc.mallopt(m_trim_threshold, 2**30) and libc.mallopt(m_mmap_threshold, 32 * 2**20))
    except (OSError, AttributeError):
        return False


def _inputs(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    B, C, H, W, G = args.batch, args.channels, args.height, args.width, args.groups
    tensors = {
        "input": torch.randn(B, C, H, W, generator=g),
        "offset": torch.randn(B, 2 * G * 9, H, W, generator=g) * 2.0,
        "mask": torch.rand(B, G * 9, H, W, generator=g),
        "weight": torch.randn(C, C, 3, 3, generator=g) * 0.05,
        "bias": torch.randn(C, generator=g),
    }
    return {name: t.to(args.device).requires_grad_() for name, t in tensors.items()}


def _steps(tensors: dict[str, torch.Tensor], dilation: int, device: str) -> dict[str, Callable[[], None]]:
    """name -> one timed call; 'fwd' rows run under no_grad, 'fwd+bwd' rows run backward on all inputs."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    x, offset, mask, weight, bias = (tensors[k] for k in ("input", "offset", "mask", "weight", "bias"))

    def conv() -> torch.Tensor:
        return F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)

    def dcn(backend: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with deform_conv.use_backend(backend):
                return deform_conv.deform_conv2d(x, offset, weight, bias, padding=dilation, dilation=dilation,
                                                 mask=mask)
        return run

    def forward_only(op: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                op()
            sync()
        return step

    def forward_backward(op: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            for t in tensors.values():
                t.grad = None
            out = op()
            out.backward(torch.ones_like(out))
            sync()
        return step

    ops = {BASELINE: conv, "deform_conv2d[torch]": dcn("torch")}
    if deform_conv.torchvision_available(device):
        ops["deform_conv2d[torchvision]"] = dcn("torchvision")
    steps = {}
    for name, op in ops.items():
        steps[f"{name} fwd"] = forward_only(op)
        steps[f"{name} fwd+bwd"] = forward_backward(op)
    return steps


def _time_interleaved(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 2
                      ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds per call of each step, all steps once per round."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            step()
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
    return wall, cpu


def _measure(steps: dict[str, Callable[[], None]], repeats: int, on_cpu: bool) -> dict[str, dict[str, float]]:
    wall, cpu = _time_interleaved(steps, repeats)
    rows: dict[str, dict[str, float]] = {}
    for name in steps:
        pass_kind = name.rsplit(" ", 1)[1]
        base = f"{BASELINE} {pass_kind}"
        row = {"wall_min_ms": min(wall[name]) * 1e3, "wall_median_ms": statistics.median(wall[name]) * 1e3,
               "ratio_wall_min": min(wall[name]) / min(wall[base]),
               "ratio_wall_median": statistics.median(wall[name]) / statistics.median(wall[base])}
        if on_cpu:
            row.update(cpu_min_ms=min(cpu[name]) * 1e3, cpu_median_ms=statistics.median(cpu[name]) * 1e3,
                       ratio_cpu_min=min(cpu[name]) / min(cpu[base]))
        rows[name] = row
    return rows


def _print_table(title: str, rows: dict[str, dict[str, float]], on_cpu: bool) -> None:
    print(title)
    header = f"{'op':<34}{'min ms':>9}{'median ms':>11}{'x conv min':>12}{'x conv med':>12}"
    if on_cpu:
        header += f"{'cpu min ms':>12}{'x conv cpu':>12}"
    print(header)
    for name, row in rows.items():
        line = (f"{name:<34}{row['wall_min_ms']:>9.1f}{row['wall_median_ms']:>11.1f}"
                f"{row['ratio_wall_min']:>12.2f}{row['ratio_wall_median']:>12.2f}")
        if on_cpu:
            line += f"{row['cpu_min_ms']:>12.1f}{row['ratio_cpu_min']:>12.2f}"
        print(line)


def _write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(result, tmp, indent=2)
    os.replace(tmp.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=48)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--groups", type=int, default=12, help="offset groups")
    parser.add_argument("--dilation", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per thread count")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="CPU thread counts to run, one table each (0 = torch's default)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc only: keep freed memory in the process (no page faults for reused temporaries)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/dcn_speed.json"))
    args = parser.parse_args()
    if args.keep_freed_memory and not _keep_freed_memory():
        parser.error("--keep-freed-memory needs glibc's mallopt")

    on_cpu = args.device == "cpu"
    tensors = _inputs(args)
    steps = _steps(tensors, args.dilation, args.device)
    default_threads = torch.get_num_threads()
    shape = (f"B={args.batch} C={args.channels}->{args.channels} {args.height}x{args.width} 3x3 dil={args.dilation} "
             f"G={args.groups} device={args.device}" + (" malloc=keep-freed" if args.keep_freed_memory else ""))
    runs = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        rows = _measure(steps, args.repeats, on_cpu)
        title = f"{shape} threads={torch.get_num_threads()}, {args.repeats} interleaved rounds"
        _print_table(title, rows, on_cpu)
        print()
        runs.append({"threads": torch.get_num_threads(), "rows": rows})

    result = {"shape": shape, "repeats": args.repeats, "torch": torch.__version__, "device": args.device,
              "cpu_count": os.cpu_count(), "keep_freed_memory": args.keep_freed_memory, "runs": runs}
    headline = runs[0]["rows"]["deform_conv2d[torch] fwd+bwd"]
    result["ratio_torch_vs_conv"] = headline["ratio_wall_min"]
    result["ratio_torch_vs_conv_median"] = headline["ratio_wall_median"]
    _write_json(args.json, result)
    summary = ", ".join(
        f"threads={run['threads']}: {run['rows']['deform_conv2d[torch] fwd+bwd']['ratio_wall_min']:.2f}x"
        + (f" (cpu {run['rows']['deform_conv2d[torch] fwd+bwd']['ratio_cpu_min']:.2f}x)" if on_cpu else "")
        for run in runs)
    print(f"pure-PyTorch DCN fwd+bwd / conv2d by min time: {summary} (target <= 3); wrote {args.json}")


if __name__ == "__main__":
    main()
