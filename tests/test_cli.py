import os
import subprocess
import sys
from pathlib import Path

import pytest

from tdmi.cli import build_parser, main

COMMANDS = ["demo", "infer", "train", "test", "evaluate", "synth", "prepare", "export", "info"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"tdmi {command}" in out


def test_parser_lists_all_commands():
    help_text = build_parser().format_help()
    for command in COMMANDS:
        assert command in help_text


def test_module_entry_point_runs():
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "tdmi", "--version"], capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.startswith("tdmi ")


def test_bad_config_is_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("nonsense: 1\n")
    assert main(["info", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "nonsense" in err and "Traceback" not in err


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="docs/cli.md is generated with Python 3.11's argparse")
def test_docs_cli_page_matches_the_parsers():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "write_cli_docs.py"
    spec = importlib.util.spec_from_file_location("write_cli_docs", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DOC.read_text() == module.render(), "docs/cli.md is stale: run python scripts/write_cli_docs.py"


def test_an_error_raised_in_a_dataloader_worker_is_shown_as_its_one_line_message(tmp_path, capsys):
    import torch

    from tdmi.cli import one_line
    from tdmi.errors import DataFormatError

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise DataFormatError(f"{tmp_path}/frame_{i}.jpg: not an image")

    with pytest.raises(DataFormatError) as caught:
        next(iter(torch.utils.data.DataLoader(Broken(), num_workers=1)))
    assert "Original Traceback" in str(caught.value)  # what torch re-raises: the worker's whole traceback
    assert one_line(caught.value) == f"{tmp_path}/frame_0.jpg: not an image"
    assert one_line(ValueError("plain")) == "plain"


def test_info_list_shortens_descriptions_at_word_boundaries(capsys):
    from tdmi.config import packaged_configs

    assert main(["info", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(packaged_configs())
    for line in lines:
        name, _, description = line.partition(" ")
        description = description.strip()
        assert description and len(description) <= 100, line
        # shortened text ends in a whole word and says so; full text ends where its comment ends
        assert description.endswith(" ...") or description[-1] in ".):'\"`" or description[-1].isalnum(), line
        if description.endswith(" ..."):
            words = description[:-4].split()
            config_text = " ".join(line.lstrip("#").strip() for line in
                                   (next(p for p in packaged_configs() if p.stem == name)).read_text().splitlines()
                                   if line.startswith("#"))
            assert " ".join(words) in config_text  # every shown word is whole


def test_help_examples_name_shipped_configs_not_repository_paths():
    """A wheel install has no configs/ folder: every --help example names a shipped config (issue 25)."""
    import re

    from tdmi.config import packaged_configs

    names = {p.stem for p in packaged_configs()}
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    seen = 0
    for command, sub in subparsers.choices.items():
        for value in re.findall(r"--config (\S+)", sub.epilog or ""):
            assert value in names, f"tdmi {command} --help example: --config {value}"
            seen += 1
    assert seen >= 2


@pytest.mark.parametrize("rank", ["0", "1"])
def test_tdmi_test_checks_its_outputs_on_rank_0_only(tmp_path, monkeypatch, capsys, rank):
    """Under torchrun only rank 0 of ``tdmi test`` writes: the other ranks do not check --out / --report (on a node
    where that location is not mounted they used to exit 2); rank 0 still checks before any work."""
    from tdmi.cli import check_outputs
    from tdmi.errors import CommandError

    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    taken = tmp_path / "taken.txt"
    taken.write_text("x")  # a folder cannot be made under a file: not writable, for root too
    argv = ["test", "--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(taken / "out"),
            "--report", str(taken / "report.html")]
    args = build_parser().parse_args(argv)
    if rank == "0":
        with pytest.raises(CommandError, match="--out .*taken.txt is a file"):
            check_outputs(args)
    else:
        check_outputs(args)  # nothing to check: this rank writes nothing
    # the whole command: rank 0 stops at --out, before any work; rank 1 gets to the checkpoint
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("--out" in err) == (rank == "0") and ("none.safetensors" in err) == (rank == "1"), err
    # another command keeps its checks on every rank
    with pytest.raises(CommandError, match="--out"):
        check_outputs(build_parser().parse_args(["infer", "x.mp4", "--out", str(taken / "out")]))
