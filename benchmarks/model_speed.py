"""Model speed: forward time per person-clip, achieved multiply-adds per second, and the DCN's cost.

For each config the model (random weights) runs ``--repeats`` timed forwards on a ``[batch, T, 3, H, W]`` clip
batch under ``torch.no_grad`` in eval mode. Reported, all measured in this one run:

- ms per person-clip (fastest of ``--repeats`` forwards / batch; the minimum is least affected by other load),
  split into ``encode`` (the backbone on all B*T frames; on the key frames only for the single-frame baseline),
  timed inside the same forwards, and the rest (``decode``: TDE, RDM, fusion, head);
- multiply-adds per clip, counted with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2; convs, matmuls,
  and the DCN's einsum; the DCN's bilinear sampling is not a multiply-add and is not counted);
- achieved MAC/s and that as a fraction of this machine's dense float32 matmul rate (a square ``--matmul-size``
  matmul timed in the same run, before and after the models; the faster run counts): how close the model runs
  to the hardware's useful peak; also as a fraction of one large dense 3x3 conv's rate, since PyTorch's conv
  kernels can beat its matmul on some CPUs;
- the pure-PyTorch DCN (``ModulatedDeformConv2d``, 3x3, dilation 3, 12 offset groups) forward+backward time as a
  ratio of a plain ``nn.Conv2d`` of the same shape (48 -> 48 channels at 96x72 by default).

Targets (issue "The TDMI network in pure PyTorch"): DCN ratio <= 3x; W48 TDMI forward >= 50% of the matmul rate at
batch 8. Timings on a shared machine are noisy: compare only numbers from the same run.

    PYTHONPATH=src python benchmarks/model_speed.py                                  # W48 TDMI + baseline, batch 8
    PYTHONPATH=src python benchmarks/model_speed.py --configs configs/tdmi_w8_synth_128x96.yaml --batch 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from tdmi.config import load_config
from tdmi.models.deform_conv import ModulatedDeformConv2d
from tdmi.models.tdmi import build_model

DEFAULT_CONFIGS = ["configs/tdmi_w48_pt17.yaml", "configs/hrnet_w48_pt17.yaml"]


def best_seconds(steps: dict[str, Callable[[], object]], repeats: int, warmup: int,
                 device: torch.device) -> dict[str, float]:
    """Minimum wall time of each step over ``repeats`` rounds, after ``warmup`` untimed rounds.

    The steps alternate within every round, so load from other processes hits them alike, and the minimum is the
    measure least affected by that load (the machine these run on is often shared).
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def min_seconds(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    return best_seconds({"fn": fn}, repeats, warmup, device)["fn"]


def count_macs(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def matmul_rate(size: int, repeats: int, device: torch.device) -> dict:
    """Dense float32 matmul rate of this machine, in multiply-adds per second."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = min_seconds(lambda: a @ b, repeats, warmup=2, device=device)
    return {"size": size, "seconds": seconds, "macs_per_s": size ** 3 / seconds}


def conv_rate(batch: int, channels: int, height: int, width: int, repeats: int, device: torch.device) -> dict:
    """Rate of one large dense 3x3 convolution (oneDNN/cuDNN), in multiply-adds per second.

    A second reference next to the matmul: on some CPUs (e.g. AMD with MKL's BLAS) PyTorch's conv kernels reach a
    higher rate than its matmul, so a model can run at more than 100% of the matmul rate.
    """
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device)
    x = torch.randn(batch, channels, height, width, device=device)
    with torch.no_grad():
        seconds = min_seconds(lambda: conv(x), repeats, warmup=1, device=device)
    macs = batch * channels * channels * 9 * height * width
    return {"shape": [batch, channels, height, width], "seconds": seconds, "macs_per_s": macs / seconds}


def model_speed(config: str, batch: int, repeats: int, warmup: int, device: torch.device, peak: float,
                conv_peak: float) -> dict:
    model_cfg = load_config(config).model
    model = build_model(model_cfg).to(device).eval()
    width, height = model_cfg.input_size
    frames = torch.randn(batch, model_cfg.num_frames, 3, height, width, device=device)

    # Time the backbone inside the same forwards: an instance attribute shadows the ``encode`` method.
    encode_times: list[float] = []
    encode = model.encode

    def timed_encode(x: torch.Tensor):
        start = time.perf_counter()
        features = encode(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        encode_times.append(time.perf_counter() - start)
        return features

    with torch.no_grad():
        macs = count_macs(lambda: model(frames))  # also the first warm-up run
        encode_macs = count_macs(lambda: model.encode(frames[:, model_cfg.delta] if model_cfg.arch == "hrnet"
                                                      else frames.flatten(0, 1)))
        model.encode = timed_encode
        forward_s = min_seconds(lambda: model(frames), repeats, max(warmup - 1, 0), device)
        del model.encode
    encode_s = min(encode_times[-repeats:])
    decode_s = forward_s - encode_s
    achieved = macs / forward_s
    return {
        "config": config, "arch": model_cfg.arch, "width": model_cfg.backbone.width, "batch": batch,
        "frames": model_cfg.num_frames, "input_hw": [height, width],
        "ms_per_clip": 1e3 * forward_s / batch, "encode_ms_per_clip": 1e3 * encode_s / batch,
        "decode_ms_per_clip": 1e3 * decode_s / batch,
        "gmac_per_clip": macs / batch / 1e9, "decode_gmac_per_clip": (macs - encode_macs) / batch / 1e9,
        "achieved_gmac_per_s": achieved / 1e9, "fraction_of_matmul": achieved / peak,
        "fraction_of_conv": achieved / conv_peak,
        "decode_fraction_of_matmul": (macs - encode_macs) / max(decode_s, 1e-9) / peak,
    }


def dcn_speed(batch: int, channels: int, height: int, width: int, repeats: int, warmup: int,
              device: torch.device) -> dict:
    """Forward+backward of the pure-PyTorch DCN vs a plain conv of the same shape (3x3, dilation 3, padding 3)."""
    groups, taps, dilation = 12, 9, 3
    dcn = ModulatedDeformConv2d(channels, channels, 3, padding=dilation, dilation=dilation).to(device)
    conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation).to(device)
    x = torch.randn(batch, channels, height, width, device=device, requires_grad=True)
    offset = torch.randn(batch, 2 * groups * taps, height, width, device=device, requires_grad=True)
    mask = torch.rand(batch, groups * taps, height, width, device=device, requires_grad=True)

    def dcn_step() -> None:
        dcn(x, offset, mask).square().mean().backward()

    def conv_step() -> None:
        conv(x).square().mean().backward()

    best = best_seconds({"dcn": dcn_step, "conv": conv_step}, repeats, warmup, device)
    dcn_s, conv_s = best["dcn"], best["conv"]
    return {"batch": batch, "channels": channels, "hw": [height, width], "deform_groups": groups,
            "dcn_fwd_bwd_ms": 1e3 * dcn_s, "conv_fwd_bwd_ms": 1e3 * conv_s, "ratio": dcn_s / conv_s}


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="experiment YAMLs to time")
    parser.add_argument("--batch", type=int, default=8, help="person-clips per forward (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the fastest counts)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs before timing (the MAC-counting run is the first)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--dcn-batch", type=int, default=None, help="batch of the DCN comparison (default --batch)")
    parser.add_argument("--dcn-shape", type=int, nargs=3, default=[48, 96, 72], metavar=("C", "H", "W"))
    parser.add_argument("--skip-models", action="store_true", help="only the matmul and DCN measurements")
    parser.add_argument("--json-out", type=Path, default=Path("bench-results/model_speed.json"))
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    peak = matmul_rate(args.matmul_size, max(args.repeats, 5), device)
    conv_peak = conv_rate(2, 256, 96, 72, max(args.repeats, 3), device)

    results = []
    if not args.skip_models:
        for config in tqdm(args.configs, desc="models", file=sys.stderr):
            results.append(model_speed(config, args.batch, args.repeats, args.warmup, device, peak["macs_per_s"],
                                       conv_peak["macs_per_s"]))
        # Measure the references again after the models: on a shared machine keep the faster (stricter) one.
        peak = max(peak, matmul_rate(args.matmul_size, max(args.repeats, 5), device), key=lambda r: r["macs_per_s"])
        conv_peak = max(conv_peak, conv_rate(2, 256, 96, 72, max(args.repeats, 3), device),
                        key=lambda r: r["macs_per_s"])
        for r in results:
            r["fraction_of_matmul"] = r["achieved_gmac_per_s"] * 1e9 / peak["macs_per_s"]
            r["fraction_of_conv"] = r["achieved_gmac_per_s"] * 1e9 / conv_peak["macs_per_s"]
            r["decode_fraction_of_matmul"] = (r["decode_gmac_per_clip"] / max(r["decode_ms_per_clip"], 1e-9) * 1e12
                                              / peak["macs_per_s"])
    print(f"dense float32 matmul {args.matmul_size}^3: {peak['macs_per_s'] / 1e9:.1f} GMAC/s; 3x3 conv 256ch 96x72: "
          f"{conv_peak['macs_per_s'] / 1e9:.1f} GMAC/s ({torch.get_num_threads()} threads, {device})")
    channels, height, width = args.dcn_shape
    dcn = dcn_speed(args.dcn_batch or args.batch, channels, height, width, args.repeats, args.warmup, device)

    if results:
        header = (f"{'config':<36} {'arch':<8} {'B':>3} {'ms/clip':>9} {'enc ms':>9} {'dec ms':>8} {'GMAC/clip':>10} "
                  f"{'GMAC/s':>8} {'of mm':>6} {'of conv':>7} {'dec of mm':>9}")
        print(header)
        print("-" * len(header))
        for r in results:
            print(f"{Path(r['config']).name:<36} {r['arch']:<8} {r['batch']:>3} {r['ms_per_clip']:>9.1f} "
                  f"{r['encode_ms_per_clip']:>9.1f} {r['decode_ms_per_clip']:>8.1f} {r['gmac_per_clip']:>10.2f} "
                  f"{r['achieved_gmac_per_s']:>8.1f} {r['fraction_of_matmul']:>6.0%} {r['fraction_of_conv']:>7.0%} "
                  f"{r['decode_fraction_of_matmul']:>9.0%}")
    print(f"DCN {channels}ch {height}x{width} batch {dcn['batch']} fwd+bwd: {dcn['dcn_fwd_bwd_ms']:.1f} ms vs conv "
          f"{dcn['conv_fwd_bwd_ms']:.1f} ms = {dcn['ratio']:.2f}x (target <= 3x)")

    payload = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": str(device), "cpu_count": os.cpu_count()},
        "note": "timings from one run on a possibly shared machine; compare ratios within this file only",
        "matmul": peak, "conv": conv_peak, "models": results, "dcn": dcn,
    }
    write_json_atomic(args.json_out, payload)
    best = max((r["fraction_of_matmul"] for r in results), default=float("nan"))
    print(f"wrote {args.json_out}: {len(results)} models, best {best:.0%} of matmul rate, DCN {dcn['ratio']:.2f}x conv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
