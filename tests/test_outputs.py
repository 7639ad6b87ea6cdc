"""Output locations are checked before any work (issue 25): one line naming the option, exit 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tdmi.cli import main
from tdmi.errors import CommandError
from tdmi.outputs import check_output_dir, check_output_file


def test_a_folder_that_can_be_made_passes_and_is_not_left_behind(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert check_output_dir(target) == target
    assert not (tmp_path / "a").exists()
    existing = tmp_path / "there"
    existing.mkdir()
    check_output_dir(existing)
    assert list(existing.iterdir()) == []  # the write probe is gone too


def test_a_file_where_a_folder_is_needed_and_the_reverse(tmp_path):
    file = tmp_path / "f.txt"
    file.write_text("x")
    with pytest.raises(CommandError, match=r"^--out .*f\.txt: exists and is not a folder"):
        check_output_dir(file)
    with pytest.raises(CommandError, match=r"f\.txt is a file, so the folder cannot be created"):
        check_output_dir(file / "sub")
    with pytest.raises(CommandError, match=r"^--json-out .*: is a folder; give a file name"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert not (tmp_path / "new").exists()


def test_torchrun_ranks_other_than_0_create_nothing_and_ask_the_system(tmp_path, monkeypatch):
    from tdmi import outputs

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")

    def forbidden(*args, **kwargs):
        raise AssertionError("a rank other than 0 created something while checking")

    monkeypatch.setattr(Path, "mkdir", forbidden)
    monkeypatch.setattr(outputs.tempfile, "NamedTemporaryFile", forbidden)
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"  # creatable: the parent is writable
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_file(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert list(tmp_path.iterdir()) == []
    file = tmp_path / "f.txt"
    file.write_text("x")
    with pytest.raises(CommandError, match=r"^--out .*f\.txt: exists and is not a folder"):
        check_output_dir(file)
    with pytest.raises(CommandError, match=r"f\.txt is a file, so the folder cannot be created"):
        check_output_dir(file / "sub")
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)  # as for a read-only folder
    with pytest.raises(CommandError, match=r"the folder cannot be created: .* is not writable \(permission denied\)"):
        check_output_dir(tmp_path / "c")
    with pytest.raises(CommandError, match=r"cannot write in .*: not writable \(permission denied\)"):
        check_output_dir(tmp_path)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_a_location_the_system_refuses(tmp_path):
    with pytest.raises(CommandError, match=r"^--out /proc/tdmi-x: the folder cannot be created"):
        check_output_dir("/proc/tdmi-x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CommandError, match="permission denied"):
            check_output_dir(folder / "out")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("argv", [
    ["demo", "--out", "{file}"],
    ["synth", "--out", "{file}", "--sequences", "1", "--frames", "2"],
    ["test", "--checkpoint", "{missing}", "--out", "{file}"],
    ["info", "--config", "tdmi_w48_pt17", "--json-out", "{dir}"],
    ["evaluate", "--gt", "{dir}", "--pred", "{dir}", "--json-out", "{dir}"],
])
def test_every_command_refuses_a_bad_output_before_any_work(tmp_path, capsys, argv):
    file = tmp_path / "taken.txt"
    file.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    filled = [a.format(file=file, dir=tmp_path, missing=tmp_path / "none.safetensors") for a in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("--out" in err or "--json-out" in err) and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_demo_refuses_zero_frames_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--frames", "0", "--out", str(out)]) == 2
    assert "--frames must be >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()


def test_infer_with_every_input_failing_leaves_no_empty_folder(tmp_path, capsys, monkeypatch):
    import cv2
    import numpy as np

    from tdmi.errors import DataFormatError
    from tdmi.inference import infer_command

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    for _ in range(3):
        writer.write(np.zeros((64, 64, 3), np.uint8))
    writer.release()

    def failing(spec, *args, **kwargs):  # a failure found while reading the input, after the checks
        raise DataFormatError(f"{spec}: frame 2 cannot be decoded")

    monkeypatch.setattr(infer_command, "infer_source", failing)
    out = tmp_path / "out"
    assert main(["infer", str(video), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "frame 2 cannot be decoded" in err and "nothing written" in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# Inputs that are not what the option takes (issue 25)


@pytest.mark.parametrize("name, content, says", [
    ("model.onnx", b"\x08\x07\x12\x07pytorch", "an ONNX model, not a checkpoint"),
    ("config.yaml", b"model:\n  delta: 2\n", "a YAML file, not a checkpoint"),
    ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(40), "an MP4/MOV video, not a checkpoint"),
    ("frame.png", b"\x89PNG\r\n\x1a\n" + bytes(40), "a PNG image, not a checkpoint"),
])
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, capsys, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["info", "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert says in err and "weights_only=False" not in err and "Traceback" not in err


def test_a_folder_as_checkpoint_or_boxes_is_called_a_folder(tmp_path, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    assert main(["info", "--checkpoint", str(folder)]) == 2
    assert "a folder, not a checkpoint file" in capsys.readouterr().err
    from tdmi.data.box_files import read_box_file
    from tdmi.errors import DataFormatError

    with pytest.raises(DataFormatError, match="is a folder; --boxes takes one JSON box file"):
        read_box_file(folder)


def test_output_checks_do_not_import_torch_and_a_malformed_rank_checks_fully(tmp_path):
    """``tdmi evaluate`` checks its outputs without torch (a second of import); RANK comes from the environment."""
    import subprocess
    import sys

    code = ("import sys; from tdmi.outputs import check_output_dir; check_output_dir(sys.argv[1]); "
            "print('torch' in sys.modules)")
    for rank in ("0", "1", "not-a-number"):
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / rank)], capture_output=True, text=True,
                              env={**os.environ, "RANK": rank, "WORLD_SIZE": "2"})
        assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    from tdmi import outputs

    os.environ.pop("RANK", None)
    assert outputs._is_main_rank()


def test_a_report_that_is_the_results_file_by_another_path_is_refused(tmp_path):
    from tdmi.outputs import check_report_path

    (tmp_path / "d").mkdir()
    with pytest.raises(CommandError, match="give the report its own name"):
        check_report_path(str(tmp_path / "d" / ".." / "m.json"), json_out=tmp_path / "m.json")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    with pytest.raises(CommandError, match="give the report its own name"):
        check_report_path(str(tmp_path / "link" / "m.json"), json_out=tmp_path / "d" / "m.json")
