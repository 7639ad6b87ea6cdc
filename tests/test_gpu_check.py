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
