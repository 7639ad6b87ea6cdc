"""scripts/synthtrack_benchmark.sh: its options are checked before any work (nothing generated, trained or written)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "synthtrack_benchmark.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--jobs", "0"], None, "--jobs/JOBS must be a positive whole number, not '0'"),
    (["--jobs", "two"], None, "not 'two'"),
    ([], {"JOBS": "-1"}, "not '-1'"),
    (["--device", "tpu"], None, "--device/DEVICE must be cpu, cuda or cuda:N, not 'tpu'"),
    ([], {"DEVICE": "gpu"}, "not 'gpu'"),
    (["--device"], None, "--device needs cpu, cuda or cuda:N"),
    (["--frobnicate"], None, "unknown option '--frobnicate'"),
])
def test_bad_options_stop_with_one_line_before_any_work(args, env, message):
    before = (REPO / "runs" / "bench").exists()
    done = run(*args, env=env)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert (REPO / "runs" / "bench").exists() == before  # no run folder made


def test_help_prints_the_usage_and_does_nothing():
    done = run("--help")
    assert done.returncode == 0 and done.stderr == ""
    assert "--device cuda --jobs 4" in done.stdout and "resumable" in done.stdout
    assert not done.stdout.lstrip().startswith("!")  # the shebang line is not part of the usage
