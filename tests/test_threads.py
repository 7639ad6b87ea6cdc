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


@pytest.mark.parametrize("load, expected", [(0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (9.0, 1)])
def test_auto_takes_the_cores_the_load_leaves_free(four_cores, monkeypatch, load, expected):
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (load, 0.0, 0.0))
    threads, why = choose_threads("auto")
    assert threads == expected and "4 cores" in why


def test_omp_num_threads_wins_over_auto_and_an_explicit_number_wins_over_both(four_cores, monkeypatch):
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
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
