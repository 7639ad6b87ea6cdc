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
