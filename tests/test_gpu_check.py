"""scripts/gpu_check.py runs every check that a CPU can run (CI): what a first GPU run would otherwise find."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_passes_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(REPO / "scripts/gpu_check.py"), "--device", "cpu", "--quick",
                             "--json-out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(out.read_text())
    failed = [(r["check"], r["result"]) for r in report["rows"] if not r["ok"]]
    assert result.returncode == 0 and not failed, failed or result.stderr[-2000:]
    checks = {r["check"] for r in report["rows"]}
    for expected in ("versions", "dcn_parity_torch", "dcn_parity_torch_bfloat16", "dcn_parity_bf16_activations",
                     "dcn_gather", "dcn_speed", "deterministic",
                     "train_none", "train_bf16", "loss_terms", "loader", "ddp", "resume", "onnx"):
        assert expected in checks


def _gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_script", REPO / "scripts/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_batch_that_does_not_fit_is_sized_down_or_skipped_with_the_memory_named():
    gc = _gpu_check_module()
    gib = gc.GIB
    estimate = gc.MemoryEstimate(fixed=1 * gib, per_clip=2 * gib, how="test")
    assert gc.fit_batch(16, estimate, 64 * gib) == (16, None)  # 33 GiB of 64: as asked
    assert gc.fit_batch(16, estimate, None) == (16, None)  # memory unknown: as asked
    batch, reason = gc.fit_batch(16, estimate, 24 * gib, "available (MemAvailable)")  # the 24 GB machine of issue 25
    assert batch == 9 and estimate.need(9) <= gc.MEMORY_HEADROOM * 24 * gib < estimate.need(10)
    assert reason == ("sized down: batch 16 needs ~33.0 GiB, 24.0 GiB available (MemAvailable); batch 9 needs "
                      "~19.0 GiB")
    batch, reason = gc.fit_batch(16, estimate, 2 * gib, "free on the device")
    assert batch == 0
    assert reason == "skipped: batch 16 needs ~33.0 GiB, 2.0 GiB free on the device, and even 1 clip needs ~3.0 GiB"


def test_train_rows_check_the_memory_before_running(monkeypatch, capsys):
    import torch

    gc = _gpu_check_module()
    monkeypatch.setattr(gc, "ROWS", [])
    gib = gc.GIB
    # the estimate is measured (one small clip through the real step) and grows with the batch
    monkeypatch.setattr(gc, "available_memory", lambda device: (64 * gib, "test"))
    from tdmi.config import load_config

    estimate = gc.estimate_train_memory(load_config(None, gc._tiny_overrides(True)), torch.device("cpu"))
    assert 0 < estimate.fixed and 0 < estimate.per_clip < gib
    # too little memory for one clip: each row skipped, one line naming it, what it needs and what is free
    monkeypatch.setattr(gc, "available_memory", lambda device: (1 << 20, "MemAvailable"))
    gc.check_train(torch.device("cpu"), quick=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ok ")]
    assert [line.split()[1] for line in lines] == ["train_none", "train_bf16"]
    for line, r in zip(lines, gc.ROWS):
        assert "skipped: batch 2 needs ~" in line and "0.0 GiB available (MemAvailable)" in line
        assert r["skipped"] and r["ok"] and "losses" not in r
    # room for one clip of the two: the row runs batch 1 and says why
    monkeypatch.setattr(gc, "ROWS", [])
    monkeypatch.setattr(gc, "estimate_train_memory", lambda cfg, device: gc.MemoryEstimate(gib, gib, "test"))
    monkeypatch.setattr(gc, "available_memory", lambda device: (3 * gib, "MemAvailable"))
    gc.check_train(torch.device("cpu"), quick=True)
    assert [(r["check"], r["ok"], r["batch_size"]) for r in gc.ROWS] == [("train_none", True, 1),
                                                                         ("train_bf16", True, 1)]
    assert all(r["result"].startswith("1 clips, 2 steps") and r["result"].endswith(
        "sized down: batch 2 needs ~3.0 GiB, 3.0 GiB available (MemAvailable); batch 1 needs ~2.0 GiB")
        for r in gc.ROWS)


def _gpu_memory_module():
    _gpu_check_module()  # puts scripts/ on sys.path, where gpu_check.py imports it from
    import gpu_memory

    return gpu_memory


def test_the_per_clip_memory_is_the_difference_of_a_1_and_a_2_clip_probe():
    """autocast's weight copies are kept once per step, not per clip: a 1-clip probe alone (scaled by k^2 and the
    batch) counted W48 bf16 at ~56 GiB for batch 16 against ~29 GiB real."""
    gm = _gpu_memory_module()
    mib = 2**20
    copies, clip = 120 * mib, 130 * mib  # what autograd keeps once (weight copies), and per probe clip
    estimate = gm.estimate_from_probes(copies + clip, copies + 2 * clip, k=3, weights=500 * mib, how="test")
    assert estimate.per_clip == int(clip * 9 * gm.BACKWARD_FACTOR)
    assert estimate.fixed == 500 * mib + copies
    assert estimate.need(16) == 500 * mib + copies + 16 * int(clip * 9 * gm.BACKWARD_FACTOR)
    # a probe too small to tell the two apart: the whole 1-clip probe per clip (never less than before)
    small = gm.estimate_from_probes(copies + clip, copies + clip, k=1, weights=0)
    assert small.per_clip == int((copies + clip) * gm.BACKWARD_FACTOR) and small.fixed == 0


def test_the_estimate_probes_1_and_2_clips_and_counts_the_rest_once(monkeypatch):
    import torch

    gm = _gpu_memory_module()
    from tdmi.config import load_config

    cfg = load_config(None, _gpu_check_module()._tiny_overrides(True))
    clips_seen = []

    def fake_saved(module, batch):  # 1000 bytes kept whatever the batch, 300 more per clip
        clips_seen.append(batch[0].shape[0])
        return 1000 + 300 * batch[0].shape[0]

    monkeypatch.setattr(gm, "saved_for_backward", fake_saved)
    estimate = gm.estimate_train_memory(cfg, torch.device("cpu"))
    k = gm.probe_divisor(cfg)
    assert clips_seen == [1, 2]
    assert estimate.per_clip == int(300 * k * k * gm.BACKWARD_FACTOR)
    assert 1000 < estimate.fixed and estimate.fixed % 4 == 0  # the weights (x4: gradients, Adam) and the 1000 once
    assert "1 and 2 clips" in estimate.how


def test_under_bf16_the_weight_copies_are_counted_once_not_per_clip():
    """The real step under bf16 autocast on CPU: what the probes keep whatever the batch is about the half-precision
    copies of the weights (2 bytes for each fp32 parameter's 4), and it is in ``fixed``, not ``per_clip``."""
    import torch

    gm = _gpu_memory_module()
    from tdmi.config import load_config
    from tdmi.engine.train import build_train_step

    cfg = load_config(None, _gpu_check_module()._tiny_overrides(True) + ["train.amp=bf16"])
    module = build_train_step(cfg)
    trainable = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in module.parameters() if not p.requires_grad)
    estimate = gm.estimate_train_memory(cfg, torch.device("cpu"))
    once = estimate.fixed - (frozen + 4 * trainable)
    half_copies = (trainable + frozen) / 2
    assert 0.5 * half_copies <= once <= 1.5 * half_copies, (once, half_copies)


def test_a_train_row_that_fails_gives_its_memory_back_before_the_next_row(monkeypatch):
    """A row out of memory used to keep its step (module, optimizer, batch) bound until the next row had measured
    the memory left; now every row's step is dropped and the memory given back, also when it raised."""
    import weakref

    import torch

    from tdmi.engine import train as engine_train

    gc = _gpu_check_module()
    monkeypatch.setattr(gc, "ROWS", [])
    steps: list = []  # weak references to every step built, and to its batch

    class OutOfMemoryStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1000))

        def forward(self, frames, heatmaps, weight):
            steps.append(weakref.ref(frames))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def build(cfg):
        step = OutOfMemoryStep()
        steps.append(weakref.ref(step))
        return step

    alive_at_estimate: list[int] = []
    released: list[str] = []

    def estimate(cfg, device):  # each row starts here: what earlier rows held must be gone by now
        alive_at_estimate.append(sum(ref() is not None for ref in steps))
        return gc.MemoryEstimate(1, 1, "test")

    monkeypatch.setattr(engine_train, "build_train_step", build)
    monkeypatch.setattr(gc, "estimate_train_memory", estimate)
    monkeypatch.setattr(gc, "available_memory", lambda device: (64 * gc.GIB, "test"))
    monkeypatch.setattr(gc, "release_memory", lambda device: released.append(device.type))
    gc.check_train(torch.device("cpu"), quick=True)
    assert [(r["check"], r["ok"]) for r in gc.ROWS] == [("train_none", False), ("train_bf16", False)]
    assert "out of memory" in gc.ROWS[0]["result"]
    assert len(steps) == 4 and alive_at_estimate == [0, 0]  # both rows built a step; none outlived its row
    assert released.count("cpu") >= 2  # given back after each failed row (the allocator's cache, on CUDA)


def test_a_train_row_names_the_requested_and_the_run_batch_estimates():
    gc = _gpu_check_module()
    gib = gc.GIB
    fields = gc.train_memory_fields(gc.MemoryEstimate(gib, 2 * gib, "test"), requested=16, batch=9,
                                    available=24 * gib)
    assert fields["requested_batch_size"] == 16 and fields["estimated_gib"] == 33.0
    assert fields["batch_size"] == 9 and fields["run_estimated_gib"] == 19.0
    assert gc.train_memory_fields(gc.MemoryEstimate(gib, 2 * gib, "test"), 16, 0, gib)["run_estimated_gib"] is None
