"""Thread defaults of the inference commands (tdmi.threads): the cores other processes leave free."""

from __future__ import annotations

import pytest

from tdmi import threads as threads_module
from tdmi.errors import CommandError
from tdmi.threads import choose_threads


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(threads_module, "available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("busy, expected", [(0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (9.0, 1)])
def test_auto_takes_the_cores_other_work_leaves_free(four_cores, monkeypatch, busy, expected):
    monkeypatch.setattr(threads_module, "busy_cores", lambda: (busy, f"{busy} busy"))
    threads, why = choose_threads("auto")
    assert threads == expected and "4 cores" in why


def _stat(tmp_path, rows: dict[int, tuple[int, int]]):
    """A /proc/stat with per-core (busy, idle) jiffies: busy counted as user time, idle as idle."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"] + [f"cpu{c} {b} 0 0 {i} 0 0 0 0 0 0" for c, (b, i) in rows.items()]
    tmp_path.mkdir()
    path = tmp_path / "stat"
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n")
    return path


def test_busy_cores_counts_other_processes_cpu_time_on_this_process_cores(tmp_path, monkeypatch):
    before = _stat(tmp_path / "before", {0: (100, 100), 1: (100, 100), 2: (0, 0)})
    after = _stat(tmp_path / "after", {0: (200, 100), 1: (100, 200), 2: (500, 0)})
    monkeypatch.setattr(threads_module, "_PROC_STAT", str(before))
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads_module.time, "sleep", lambda _s: setattr(threads_module, "_PROC_STAT", str(after)))
    busy, how = threads_module.busy_cores()
    # over the window core 0 was fully busy and core 1 idle; core 2 (busy) is not one this process may use
    assert busy == pytest.approx(1.0) and "1.0 busy over" in how


def test_busy_cores_falls_back_to_the_load_average(tmp_path, monkeypatch):
    monkeypatch.setattr(threads_module, "_PROC_STAT", str(tmp_path / "absent"))
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (1.4, 0.0, 0.0))
    assert threads_module.busy_cores() == (1.4, "load average 1.4")


def test_omp_num_threads_wins_over_auto_and_an_explicit_number_wins_over_both(four_cores, monkeypatch):
    monkeypatch.setattr(threads_module, "busy_cores", lambda: (0.0, "idle"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads("auto") == (2, "OMP_NUM_THREADS=2")
    assert choose_threads("3")[0] == 3
    assert "more than the 4 cores" in choose_threads(8)[1]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_thread_counts_are_one_line_errors(value):
    with pytest.raises(CommandError, match="expected a positive integer or 'auto'"):
        choose_threads(value)


def test_the_commands_say_how_many_threads_they_use(tmp_path, capsys):
    from tdmi.cli import main

    assert main(["infer", str(tmp_path / "missing.mp4"), "--threads", "1"]) == 2
    assert "tdmi infer: 1 CPU thread (--threads 1)" in capsys.readouterr().err
