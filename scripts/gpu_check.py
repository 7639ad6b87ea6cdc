"""Everything a first GPU run can get wrong, checked in minutes: prints a table and writes JSON.

    bash scripts/gpu_check.sh                         # on a GPU machine: --device cuda, full sizes (< 8 min)
    python scripts/gpu_check.py --device cpu --quick  # the same checks on CPU at tiny sizes (CI runs this)

Checks (one row each; ``ok`` false marks a failure, and the exit status is 1 when any row failed):

    versions       torch / CUDA / cuDNN, whether torchvision's DCN runs per device, which DCN backend ``auto``
                   gives CPU and device tensors (fp32 and bf16)
    dcn_parity     pure DCN vs torchvision (when it runs) vs a float64 CPU reference: output and every gradient;
                   under bf16 and fp16 autocast
    dcn_speed      forward+backward time and peak memory of the DCN against a 3x3 conv of the same shape
    dcn_gather     the gather path of deterministic mode: parity, and two runs bit-identical
    deterministic  two identical training steps under strict deterministic mode give identical weights (on a
                   GPU the DCN takes its gather path); an op without a deterministic kernel fails the row
    train_<amp>    W48 384x288 batch 16 (quick: W8 128x96 batch 2), N steps: loss finite, s/step, peak memory,
                   the fp16 scaler's scale. The step's memory is estimated first (1 and 2 clips at a third of the
                   size: the difference is one clip's, the rest, autocast's weight copies, counted once;
                   scripts/gpu_memory.py); where the batch does not fit in the memory left, the row runs the
                   largest batch that does, or is skipped, with a one-line reason naming the memory needed and
                   available. A row that fails (out of memory) gives its memory back before the next row
    compile        torch.compile of a small training step: compile time, s/step against eager (not --quick)
    loss_terms     each loss term of one batch under bf16 autocast against float32, on the shipped trained TDMI
    loader         the training data loader alone against the training step rate
    ddp            two ranks on one device (gloo) with gradient accumulation: equal weights afterwards
    resume         a run stopped and resumed continues; a checkpoint from more processes is refused clearly
    test_cli       `tdmi test` on the PoseTrack18 sample (--shared-data) on the device and on CPU
    infer_cli      `tdmi infer` on 60 frames of vtest.avi (--shared-data) on the device and on CPU
    onnx           ONNX export of a model that lives on the device, checked with onnxruntime when installed

test_cli and infer_cli need the real sample data: without it they are skipped under --quick and fail otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# Before torch creates a cuBLAS handle: the deterministic rows need it (as `tdmi train --deterministic` sets it)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (the tests): gpu_memory beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))

# the training rows' memory: estimate, what is available, the batch that fits
from gpu_memory import (GIB, MEMORY_HEADROOM, MemoryEstimate, available_memory,  # noqa: E402,F401
                        estimate_train_memory, fit_batch, random_batch, release_memory)
# beside the checkout (this machine's layout) or inside it (a copy of the working tree with its shared/)
SHARED = next((p for p in (REPO.parent / "shared" / "data", REPO / "shared" / "data") if p.is_dir()),
              REPO.parent / "shared" / "data")
ROWS: list[dict] = []


def row(check: str, ok: bool, result: str, **values) -> None:
    ROWS.append({"check": check, "ok": bool(ok), "result": result, **values})
    print(f"{'ok ' if ok else 'FAIL'} {check:<16} {result}", flush=True)


@contextlib.contextmanager
def section(name: str):
    start = time.perf_counter()
    try:
        yield
    except Exception as err:  # a failing check is a row, not the end of the script
        row(name, False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            traceback=traceback.format_exc(limit=4))
    finally:
        for r in ROWS:
            if r["check"].startswith(name) and "seconds" not in r:
                r["seconds"] = round(time.perf_counter() - start, 2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device):
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# ------------------------------------------------------------------------------------------------------------ checks


def check_versions(device: torch.device) -> None:
    from tdmi.models import deform_conv

    tv = {kind: deform_conv.torchvision_available(kind) for kind in {"cpu", device.type}}
    backends = {f"{kind}/{str(dtype).split('.')[-1]}": ("torchvision" if deform_conv.auto_uses_torchvision(kind, dtype)
                                                       else "torch")
                for kind in {"cpu", device.type} for dtype in (torch.float32, torch.bfloat16)}
    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    row("versions", True, f"torch {torch.__version__}, cuda {cuda}, cudnn {cudnn}, {name}; torchvision DCN runs "
        f"{tv}; auto -> {backends}", torch=torch.__version__, cuda=cuda, cudnn=cudnn, device_name=name,
        torchvision_dcn=tv, auto_backend=backends)


def _dcn_case(device, dtype, B=2, C=16, H=12, W=10, G=4, dilation=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    case = {"input": torch.randn(B, C, H, W, generator=g), "offset": torch.randn(B, 2 * G * 9, H, W, generator=g) * 2,
            "weight": torch.randn(C, C, 3, 3, generator=g) * 0.1, "bias": torch.randn(C, generator=g),
            "mask": torch.rand(B, G * 9, H, W, generator=g)}
    return {k: v.to(device=device, dtype=dtype).requires_grad_() for k, v in case.items()}, dict(padding=dilation,
                                                                                                 dilation=dilation)


def _dcn_run(case, geometry, backend, autocast_dtype=None):
    from tdmi.models import deform_conv

    device = case["input"].device
    ctx = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype
           else contextlib.nullcontext())
    with deform_conv.use_backend(backend), ctx:
        out = deform_conv.deform_conv2d(**case, **geometry)
    grad = torch.ones_like(out)
    grads = torch.autograd.grad(out, list(case.values()), grad)
    return [out] + list(grads)


def check_dcn_parity(device: torch.device) -> None:
    from tdmi.models import deform_conv

    names = ["out", "input", "offset", "weight", "bias", "mask"]
    reference_case, geometry = _dcn_case("cpu", torch.float64)
    reference = _dcn_run(reference_case, geometry, "torch")
    backends = ["torch"] + (["torchvision"] if deform_conv.torchvision_available(device) else [])
    for backend in backends:
        case, _ = _dcn_case(device, torch.float32)
        errors = {n: rel(a, b) for n, a, b in zip(names, _dcn_run(case, geometry, backend), reference)}
        worst = max(errors.values())
        row(f"dcn_parity_{backend}", worst < 1e-4, f"fp32 vs float64 reference, worst relative error "
            f"{worst:.1e} ({max(errors, key=errors.get)})", errors=errors)
        for amp in (torch.bfloat16, torch.float16):
            if device.type == "cpu" and amp == torch.float16:
                continue  # CPU autocast has no float16 conv policy worth checking here
            case, _ = _dcn_case(device, torch.float32)
            results = _dcn_run(case, geometry, backend, amp)
            errors = {n: rel(a, b) for n, a, b in zip(names, results, reference)}
            worst = max(errors.values())
            row(f"dcn_parity_{backend}_{str(amp).split('.')[-1]}", worst < 2e-2 and results[0].dtype == torch.float32,
                f"under autocast: output dtype {str(results[0].dtype).split('.')[-1]}, worst relative error of the "
                f"output and gradients {worst:.1e} ({max(errors, key=errors.get)})", errors=errors)
    # bf16 activations with fp32 parameters, as a bf16 layer hands them to the DCN: promoted, sampled in fp32, so
    # equal to the float64 reference on the same bf16-rounded input
    case, _ = _dcn_case(device, torch.float32)
    case["input"] = case["input"].detach().to(torch.bfloat16).requires_grad_()
    rounded_case, _ = _dcn_case("cpu", torch.float64)
    rounded_case["input"] = rounded_case["input"].detach().to(torch.bfloat16).double().requires_grad_()
    rounded = _dcn_run(rounded_case, geometry, "torch")
    results = _dcn_run(case, geometry, "auto")
    errors = {n: rel(a, b) for n, a, b in zip(names, results, rounded)}
    # the input's gradient comes back in the input's dtype (bf16: ~4e-3 rounding); the rest is computed in fp32
    worst = max(v for n, v in errors.items() if n != "input")
    ok = worst < 1e-4 and errors["input"] < 1e-2 and results[0].dtype == torch.float32
    row("dcn_parity_bf16_activations", ok, f"bf16 input, fp32 weights ('auto'): output "
        f"{str(results[0].dtype).split('.')[-1]}, worst relative error {worst:.1e} (input gradient, in bf16: "
        f"{errors['input']:.1e}) against float64 on the rounded input", errors=errors)
    check_dcn_gather(device, names, reference, geometry)


def check_dcn_gather(device: torch.device, names, reference, geometry) -> None:
    """Deterministic mode's DCN (the gather path on GPUs): parity, and bit-identical gradients over two runs."""
    from tdmi.models.deform_conv import _pair
    from tdmi.models.deform_conv_plain import gather_deform_conv2d

    runs = []
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            case, _ = _dcn_case(device, torch.float32)
            out = gather_deform_conv2d(case["input"], case["offset"], case["weight"], case["bias"], case["mask"],
                                       (1, 1), _pair(geometry["padding"]), _pair(geometry["dilation"]))
            runs.append([out] + list(torch.autograd.grad(out, list(case.values()), torch.ones_like(out))))
    finally:
        torch.use_deterministic_algorithms(previous)
    errors = {n: rel(a, b) for n, a, b in zip(names, runs[0], reference)}
    identical = all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    worst = max(errors.values())
    row("dcn_gather", worst < 1e-4 and identical, f"gather path (deterministic mode on GPUs): worst relative error "
        f"{worst:.1e}; two runs {'bit-identical' if identical else 'DIFFER'}", errors=errors, identical=identical)


def check_dcn_speed(device: torch.device, quick: bool) -> None:
    from tdmi.models import deform_conv

    B, C, H, W, G = (2, 16, 24, 18, 4) if quick else (8, 48, 96, 72, 12)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g).to(device).requires_grad_()
    offset = (torch.randn(B, 2 * G * 9, H, W, generator=g) * 2).to(device).requires_grad_()
    mask = torch.rand(B, G * 9, H, W, generator=g).to(device).requires_grad_()
    weight = (torch.randn(C, C, 3, 3, generator=g) * 0.1).to(device).requires_grad_()
    timings = {}

    def timed(fn, repeats=3 if quick else 10):
        fn()
        sync(device)
        peak_reset(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
        return (time.perf_counter() - start) / repeats * 1000, peak_mib(device)

    def conv():
        torch.nn.functional.conv2d(x, weight, padding=3, dilation=3).sum().backward()

    timings["conv3x3"] = timed(conv)
    for backend in ["torch"] + (["torchvision"] if deform_conv.torchvision_available(device) else []):
        def dcn(backend=backend):
            with deform_conv.use_backend(backend):
                deform_conv.deform_conv2d(x, offset, weight, padding=3, dilation=3, mask=mask).sum().backward()

        timings[f"dcn[{backend}]"] = timed(dcn)
    base = timings["conv3x3"][0]
    text = ", ".join(f"{k} {ms:.1f} ms ({ms / base:.1f}x, peak {mib} MiB)" for k, (ms, mib) in timings.items())
    row("dcn_speed", True, f"fwd+bwd at {B}x{C}x{H}x{W}, {G} groups: {text}",
        timings={k: {"ms": ms, "peak_mib": mib, "ratio_vs_conv": ms / base} for k, (ms, mib) in timings.items()})


def check_deterministic(device: torch.device) -> None:
    """Two identical steps with deterministic algorithms on, strictly (as `tdmi train --deterministic`): an op
    without a deterministic kernel raises and fails the row by name; on a GPU the DCN takes its gather path."""
    from tdmi.config import load_config
    from tdmi.engine.train import build_train_step
    from tdmi.models import deform_conv

    cfg = load_config(None, _tiny_overrides(True))
    weights = []
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        dcn_path = deform_conv.sampling_path(device, torch.float32)
        for _ in range(2):
            torch.manual_seed(0)
            module = build_train_step(cfg).to(device).train()
            optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
            module(*_batch(cfg, 2, device))["loss"].backward()
            optimizer.step()
            weights.append({k: v.detach().cpu().clone() for k, v in module.named_parameters()})
    except RuntimeError as error:  # "... does not have a deterministic implementation ..."
        row("deterministic", False, f"an op has no deterministic kernel: {str(error).splitlines()[0][:200]}")
        return
    finally:
        torch.use_deterministic_algorithms(previous)
    differ = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    row("deterministic", not differ,
        f"{'identical weights' if not differ else f'{len(differ)} tensors differ'} after a step, twice; "
        f"DCN path: {dcn_path}", differing=differ[:10], dcn_path=dcn_path)


def _tiny_overrides(quick: bool) -> list[str]:
    if quick:
        return ["model.backbone.width=8", "model.input_size=[96,128]", "model.heatmap_size=[24,32]",
                "model.tde.channels=16", "model.tde.deform_groups=4", "model.backbone.freeze=false"]
    return ["model.backbone.freeze=false"]  # W48 384x288, the paper's model, trained end to end (worst case)


_batch = random_batch  # a training step's inputs (scripts/gpu_memory.py)


def check_train(device: torch.device, quick: bool) -> None:
    from tdmi.config import load_config
    from tdmi.engine.train import configure_backends

    configure_backends(device, deterministic=False)  # cuDNN autotuning and TF32 on CUDA, as `tdmi train`
    batch_size, steps = (2, 2) if quick else (16, 20)
    for amp in ("none", "bf16", "fp16"):
        if device.type == "cpu" and amp == "fp16":
            continue
        # what an earlier row left (one that failed: its step is freed only once its exception is gone) is free
        release_memory(device)
        with section(f"train_{amp}"):
            channels_last = str(device.type == "cuda").lower()
            overrides = [f"train.amp={amp}", f"train.channels_last={channels_last}"]
            cfg = load_config(None, _tiny_overrides(quick) + overrides)
            # Before the row runs: does its batch fit in the memory left? (else smaller, or skipped, and said why)
            estimate = estimate_train_memory(cfg, device)
            available, where = available_memory(device)
            batch, sizing = fit_batch(batch_size, estimate, available, f"available ({where})")
            memory = train_memory_fields(estimate, batch_size, batch, available)
            if batch == 0:
                row(f"train_{amp}", True, f"{sizing} ({estimate.how})", skipped=True, **memory)
                continue
            _train_row(cfg, amp, device, batch, steps, sizing, memory)


def train_memory_fields(estimate: MemoryEstimate, requested: int, batch: int, available) -> dict:
    """A train row's memory fields: ``estimated_gib`` is the requested batch's estimate (``requested_batch_size``),
    ``run_estimated_gib`` the estimate of the batch the row ran (``batch_size``; None when skipped)."""
    return {"requested_batch_size": requested, "estimated_gib": round(estimate.need(requested) / GIB, 2),
            "batch_size": batch, "run_estimated_gib": round(estimate.need(batch) / GIB, 2) if batch else None,
            "fixed_gib": round(estimate.fixed / GIB, 3), "per_clip_gib": round(estimate.per_clip / GIB, 3),
            "estimate": estimate.how, "available_gib": None if available is None else round(available / GIB, 2)}


def _train_row(cfg, amp: str, device: torch.device, batch: int, steps: int, sizing, memory: dict) -> None:
    """``steps`` timed training steps (after one untimed) of ``batch`` clips; one row. Whatever the step held is
    dropped and given back (:func:`release_memory`) also when it fails (e.g. out of memory), so that the next row
    finds the memory free."""
    from tdmi.engine.train import build_train_step

    module = optimizer = scaler = frames = heatmaps = weight = loss = None
    try:
        torch.manual_seed(0)
        module = build_train_step(cfg).to(device).train()
        optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
        scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        frames, heatmaps, weight = _batch(cfg, batch, device)
        peak_reset(device)
        losses, start = [], None
        for step in range(steps + 1):
            if step == 1:
                sync(device)
                start = time.perf_counter()
            loss = module(frames, heatmaps, weight)["loss"]
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        sync(device)
        seconds = (time.perf_counter() - start) / steps
        finite = all(map(lambda v: v == v and abs(v) < float("inf"), losses))
        scale = scaler.get_scale() if scaler else None
        row(f"train_{amp}", finite, f"{batch} clips, {steps} steps: {seconds:.3f} s/step, loss "
            f"{losses[0]:.5f} -> {losses[-1]:.5f}, peak {peak_mib(device)} MiB, scaler {scale}"
            f"{f'; {sizing}' if sizing else ''}", seconds_per_step=seconds, losses=losses,
            peak_mib=peak_mib(device), scaler_scale=scale, **memory)
    finally:
        del module, optimizer, scaler, frames, heatmaps, weight, loss
        release_memory(device)


def check_compile(device: torch.device, quick: bool) -> None:
    """`train.compile`: torch.compile of a small TDMI's training step (W8 at 128x96), compile time and s/step
    against eager. Not under --quick: compiling takes minutes on a CPU (benchmarks/compile_speed.py)."""
    if quick:
        row("compile", True, "skipped under --quick (minutes of compilation on a CPU)", skipped=True)
        return
    from tdmi.config import load_config
    from tdmi.engine.train import build_train_step
    from tdmi.models.deform_conv import prepare_for_compile

    cfg = load_config(None, _tiny_overrides(True))
    frames, heatmaps, weight = _batch(cfg, 8, device)
    timings, first_losses = {}, {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        module = build_train_step(cfg).to(device).train()
        step = module
        if name == "compiled":
            prepare_for_compile(device)
            step = torch.compile(module)
        optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1e-3)
        seconds = []
        for _ in range(6):
            sync(device)
            start = time.perf_counter()
            loss = step(frames, heatmaps, weight)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(device)
            seconds.append(time.perf_counter() - start)
            first_losses.setdefault(name, float(loss.detach()))
        timings[name] = {"first_step_s": seconds[0], "step_s": min(seconds[1:])}
    diff = abs(first_losses["compiled"] - first_losses["eager"]) / max(abs(first_losses["eager"]), 1e-12)
    speedup = timings["eager"]["step_s"] / timings["compiled"]["step_s"]
    row("compile", diff < 1e-3, f"first step {timings['compiled']['first_step_s']:.1f} s (compilation), then "
        f"{timings['compiled']['step_s'] * 1000:.1f} ms/step against {timings['eager']['step_s'] * 1000:.1f} eager "
        f"({speedup:.2f}x); first-step loss difference {diff:.1e}", timings=timings, loss_difference=diff)


def check_loss_terms(device: torch.device, quick: bool) -> None:
    """Each loss term under bf16 autocast against fp32, on the shipped trained TDMI (at random init the heads give
    ~1e-12 and the MI terms 0, which would make the comparison vacuous)."""
    from tdmi.config import load_config
    from tdmi.engine.test import load_model_for_test
    from tdmi.engine.train import build_train_step
    from tdmi.inference.model_loading import shipped_checkpoint

    shipped = shipped_checkpoint()
    if shipped is not None:
        loaded = load_model_for_test(shipped, device=device)
        cfg = loaded.cfg
        module = build_train_step(cfg).to(device).eval()
        module.model.load_state_dict(loaded.model.state_dict())
        source = f"shipped {shipped.name}"
    else:
        cfg = load_config(None, _tiny_overrides(quick) + ["model.mi.formulation=balanced"])
        torch.manual_seed(0)
        module = build_train_step(cfg).to(device).eval()
        source = "random init (no shipped checkpoint: the MI terms may be ~0)"
    frames, heatmaps, weight = _batch(cfg, 2, device)
    with torch.no_grad():
        module.amp = "none"
        exact = module(frames, heatmaps, weight)
        module.amp = "bf16"
        mixed = module(frames, heatmaps, weight)
    errors = {k: abs(float(mixed[k]) - float(exact[k])) / max(abs(float(exact[k])), 1e-8) for k in exact}
    dtypes = {str(v.dtype) for v in mixed.values()}
    worst = max(errors, key=errors.get)
    row("loss_terms", dtypes == {"torch.float32"} and errors[worst] < 0.1,
        f"{source}: bf16 autocast vs fp32: terms are {dtypes}; largest relative difference {errors[worst]:.1e} "
        f"({worst})", errors=errors, values={k: float(v) for k, v in exact.items()})


def check_loader(device: torch.device, quick: bool, tmp: Path) -> None:
    from tdmi.config import load_config
    from tdmi.data.dataset import build_dataset, collate_clips, frames_as_uint8, loader_workers
    from tdmi.data.synthetic import generate_synthtrack

    root = tmp / "synth"
    generate_synthtrack(root, sequences=2 if quick else 6, frames=12 if quick else 40, seed=0, split="train",
                        progress=False)
    cfg = load_config(None, _tiny_overrides(quick) + [f"data.root={root}", "data.dataset=synthtrack"]
                      + (["data.workers=0"] if quick else []))
    # what `tdmi train` uses: data.workers None = the cores per process less one, uint8 crops on CUDA
    workers, uint8 = loader_workers(cfg), frames_as_uint8(cfg, device)
    dataset = build_dataset(cfg, "train", uint8_frames=uint8)
    batch = 2 if quick else 16
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate_clips,
                                         pin_memory=device.type == "cuda")
    count, start = 0, None
    for b in loader:
        b["frames"].to(device, non_blocking=True)
        if start is None:  # timed from the first batch on: worker start-up is not the steady rate
            start = time.perf_counter()
            continue
        count += b["frames"].shape[0]
    rate = count / (time.perf_counter() - start) if start is not None and count else 0.0
    steps = [r for r in ROWS if r["check"] == "train_bf16" and "seconds_per_step" in r]
    step_rate = steps[0].get("batch_size", batch) / steps[0]["seconds_per_step"] if steps else None
    skipped = any(r["check"] == "train_bf16" and r.get("skipped") for r in ROWS)  # too big for this memory
    ok = quick or skipped or (step_rate is not None and rate >= step_rate)
    row("loader", ok, f"{workers} workers, {'uint8' if uint8 else 'float'} crops: {rate:.1f} clips/s; bf16 training "
        f"step: {'n/a' if step_rate is None else f'{step_rate:.1f} clips/s'}", clips_per_s=rate,
        step_clips_per_s=step_rate, workers=workers, uint8_frames=uint8)


def _ddp_worker(rank: int, port: int, out: str, device: str, quick: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TDMI_DIST_BACKEND="gloo")
    sys.path.insert(0, str(REPO / "scripts"))
    from tdmi.config import load_config
    from tdmi.engine import train as engine

    cfg = load_config(None, _tiny_overrides(True) + [f"train.out_dir={out}", "train.epochs=1", "train.grad_accum=2",
                                                     "train.batch_size=1", "train.val_every=0", "data.workers=0"])
    captured = {}
    original = engine._run_epochs

    def spy(cfg_, info, dev, wrapped, step_module, *rest):
        original(cfg_, info, dev, wrapped, step_module, *rest)
        captured["state"] = {k: v.detach().cpu().clone() for k, v in step_module.named_parameters()}

    engine._run_epochs = spy
    try:
        engine.train(cfg, device=device, train_dataset=_RandomClips(cfg))
    finally:
        engine._run_epochs = original
        torch.distributed.destroy_process_group()
    torch.save(captured["state"], os.path.join(out, f"rank{rank}.pt"))


class _RandomClips(torch.utils.data.Dataset):
    def __init__(self, cfg, n: int = 4):
        self.cfg, self.n = cfg, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        w, h = self.cfg.model.input_size
        hw, hh = self.cfg.model.heatmap_size
        return {"frames": torch.randn(self.cfg.model.num_frames, 3, h, w, generator=g),
                "heatmaps": torch.rand(self.cfg.model.num_joints, hh, hw, generator=g),
                "target_weight": torch.ones(self.cfg.model.num_joints), "meta": {"index": i}}


def check_ddp(device: torch.device, tmp: Path) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(port, str(out), str(device), True), nprocs=2, join=True)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    differ = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    row("ddp", not differ, f"2 ranks on one {device.type} device (gloo), grad_accum 2: "
        f"{'identical weights' if not differ else f'{len(differ)} tensors differ, e.g. {differ[0]}'}")


def check_resume(device: torch.device, tmp: Path) -> None:
    from tdmi.config import load_config
    from tdmi.engine.train import train
    from tdmi.errors import CheckpointError

    cfg = load_config(None, _tiny_overrides(True) + [f"train.out_dir={tmp / 'resume'}", "train.epochs=2",
                                                     "train.batch_size=2", "train.val_every=0", "train.max_steps=1",
                                                     "data.workers=0"])
    train(cfg, device=str(device), train_dataset=_RandomClips(cfg))
    cfg.train.max_steps = 0
    progress = train(cfg, resume=str(tmp / "resume"), device=str(device), train_dataset=_RandomClips(cfg))
    state_path = tmp / "resume" / "last.state.pt"
    state = torch.load(state_path, weights_only=True)
    state["progress"]["world_size"] = 8
    torch.save(state, state_path)
    try:
        train(cfg, resume=str(tmp / "resume"), device=str(device), train_dataset=_RandomClips(cfg))
        refused = "not refused"
    except CheckpointError as err:
        refused = str(err).split(".")[0]
    row("resume", progress["epoch"] == 2 and "8 process" in refused,
        f"resumed to epoch {progress['epoch']}; from an 8-process checkpoint: {refused}")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "tdmi", *args], capture_output=True, text=True, env=env)


def _missing_data(check: str, path: Path, quick: bool) -> None:
    """A data set the check needs is absent: skipped under --quick (CI, a fresh clone), a failure otherwise, so
    that a GPU run cannot pass without having run it."""
    row(check, quick, f"{'skipped' if quick else 'not run'}: {path} not present (pass --shared-data DIR)",
        skipped=True)


def check_test_cli(device: torch.device, tmp: Path, quick: bool) -> None:
    sample = SHARED / "posetrack18_sample"
    if not sample.is_dir():
        _missing_data("test_cli", sample, quick)
        return
    means = {}
    for dev in dict.fromkeys([device.type, "cpu"]):
        out = tmp / f"test_{dev}"
        result = _cli("test", "--checkpoint", str(REPO / "src/tdmi/weights/tdmi_demo.safetensors"),
                      "--set", f"data.root={sample}", "--set", "data.dataset=posetrack18",
                      "--set", "data.val_annotations=annotations/val", "--set", "data.missing_frames=pad",
                      "--set", "data.workers=0", "--boxes", "gt", "--device", dev, "--out", str(out))
        if result.returncode != 0:
            raise RuntimeError(f"tdmi test --device {dev}: {result.stderr.strip().splitlines()[-1]}")
        means[dev] = json.loads((out / "results.json").read_text())["Mean"]
    diff = abs(means[device.type] - means["cpu"])
    row("test_cli", diff < 0.5, f"tdmi test on the PoseTrack18 sample: Mean {means} (difference {diff:.2f})",
        means=means)


def check_infer_cli(device: torch.device, tmp: Path, quick: bool) -> None:
    import cv2
    import numpy as np

    video = SHARED / "video" / "vtest.avi"
    if not video.is_file():
        _missing_data("infer_cli", video, quick)
        return
    frames = tmp / "vtest_frames"
    frames.mkdir()
    capture = cv2.VideoCapture(str(video))
    count = 8 if quick else 60
    for i in range(count):
        ok, image = capture.read()
        if not ok:
            break
        cv2.imwrite(str(frames / f"{i:06d}.jpg"), image)
    capture.release()
    boxes = tmp / "vtest_boxes.json"  # fixed boxes, so both devices see the same people
    boxes.write_text(json.dumps([{"image_id": i, "file_name": f"{i:06d}.jpg", "category_id": 1, "score": 0.9,
                                  "bbox": [300, 150, 60, 160]} for i in range(count)]))
    keypoints = {}
    for dev in dict.fromkeys([device.type, "cpu"]):
        out = tmp / f"infer_{dev}"
        result = _cli("infer", str(frames), "--boxes", str(boxes), "--device", dev, "--out", str(out))
        if result.returncode != 0:
            raise RuntimeError(f"tdmi infer --device {dev}: {result.stderr.strip().splitlines()[-1]}")
        files = sorted(out.rglob("*.json"))
        data = json.loads(files[0].read_text())
        keypoints[dev] = np.array([a["keypoints"] for a in data["annotations"]], dtype=np.float64)
    diff = float(np.abs(keypoints[device.type] - keypoints["cpu"]).max()) if keypoints["cpu"].size else 0.0
    row("infer_cli", diff < 2.0, f"tdmi infer on {count} frames of vtest: {len(keypoints['cpu'])} poses, largest "
        f"keypoint difference device vs CPU {diff:.3f} (px / score)", max_difference=diff)


def check_onnx(device: torch.device, quick: bool, tmp: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        row("onnx", True, "skipped: onnx not installed (pip install 'tdmi[onnx]')")
        return
    from tdmi.config import load_config
    from tdmi.inference.export import export_onnx
    from tdmi.models.tdmi import build_model

    cfg = load_config(None, _tiny_overrides(True))
    model = build_model(cfg.model).to(device).eval()
    report = export_onnx(model, tuple(cfg.model.input_size), cfg.model.num_frames, tmp)
    errors = report["relative_errors"]
    if errors is None:  # exported, but onnxruntime is absent: nothing was compared
        row("onnx", True, f"exported from a {device.type} model; not verified (onnxruntime not installed)",
            skipped=True)
        return
    worst = max(errors.values())
    row("onnx", worst <= report["tolerance"], f"exported from a {device.type} model; onnxruntime relative error "
        f"{worst:.1e} (tolerance {report['tolerance']:.0e})", relative_errors=errors)


def main() -> int:
    global SHARED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU, CI)")
    parser.add_argument("--json-out", type=Path, default=Path("bench-results/gpu_check.json"))
    parser.add_argument("--shared-data", type=Path, default=SHARED,
                        help=f"folder with posetrack18_sample/ and video/vtest.avi (default {SHARED}); without "
                             f"them test_cli and infer_cli fail, except under --quick")
    args = parser.parse_args()
    SHARED = args.shared_data
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for name, fn in (("versions", lambda: check_versions(device)),
                         ("dcn_parity", lambda: check_dcn_parity(device)),
                         ("dcn_speed", lambda: check_dcn_speed(device, args.quick)),
                         ("deterministic", lambda: check_deterministic(device)),
                         ("train", lambda: check_train(device, args.quick)),
                         ("compile", lambda: check_compile(device, args.quick)),
                         ("loss_terms", lambda: check_loss_terms(device, args.quick)),
                         ("loader", lambda: check_loader(device, args.quick, tmp)),
                         ("ddp", lambda: check_ddp(device, tmp)),
                         ("resume", lambda: check_resume(device, tmp)),
                         ("test_cli", lambda: check_test_cli(device, tmp, args.quick)),
                         ("infer_cli", lambda: check_infer_cli(device, tmp, args.quick)),
                         ("onnx", lambda: check_onnx(device, args.quick, tmp / "onnx"))):
            with section(name):
                fn()
    failed = [r["check"] for r in ROWS if not r["ok"]]
    total = time.perf_counter() - start
    print(f"\n{len(ROWS) - len(failed)} of {len(ROWS)} checks ok in {total:.0f} s"
          f"{'; failed: ' + ', '.join(failed) if failed else ''}")
    from tdmi.atomic import atomic_write_json

    atomic_write_json(args.json_out, {"device": str(device), "quick": args.quick, "seconds": total, "rows": ROWS},
                      indent=1)
    print(f"wrote {args.json_out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
