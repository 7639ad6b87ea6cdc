"""A disk that fills up at the end loses no results (tdmi.results_fallback): the final writes of ``tdmi test``,
``tdmi evaluate`` and ``tdmi infer`` go to a fallback folder, one line names what failed and where the results
are, and the command exits non-zero."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from tdmi import atomic, results_fallback
from tdmi.cli import main
from tdmi.config import load_config, to_dict
from tdmi.data.synthetic import generate_synthtrack
from tdmi.errors import CommandError
from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint
from tdmi.models.tdmi import build_model
from model_helpers import TINY_CLIP_MODEL

TINY_MODEL = TINY_CLIP_MODEL


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv(results_fallback.FALLBACK_ENV, str(tmp_path / "fallback"))
    results_fallback.reset()
    yield
    results_fallback.reset()
    torch.set_num_threads(threads)


def disk_full_under(monkeypatch, folder: Path, after: int = 0) -> None:
    """Every atomic write into ``folder`` fails with ENOSPC, as on a full disk, once ``after`` writes there have
    succeeded; writes elsewhere work."""
    real = atomic.atomic_write
    blocked = folder.absolute()
    done = [0]

    def write(target, writer):
        if Path(target).absolute().is_relative_to(blocked):
            if done[0] >= after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
            done[0] += 1
        return real(target, writer)

    monkeypatch.setattr(atomic, "atomic_write", write)


def fallback_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "failed (no space left on the device); saved it to" in line]


def test_save_results_writes_the_fallback_and_says_where(tmp_path, capsys):
    full = tmp_path / "out"

    def write(path: Path):  # the results writer; its folder is full
        if path.parent == full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        atomic.atomic_write_json(path, {"Mean": 50.0})

    saved = results_fallback.save_results(full / "results.json", write, "the results table")
    assert saved.parent.parent == tmp_path / "fallback" and saved.name == "results.json"
    assert json.loads(saved.read_text()) == {"Mean": 50.0}
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"tdmi: error: writing the results table to {full / 'results.json'} failed (no space left on "
                    f"the device); saved it to {saved} instead")
    assert results_fallback.exit_status(0) == 1 and results_fallback.exit_status(2) == 2
    other = results_fallback.save_results(full / "other.json", write)  # the command's next result: beside it
    assert other == saved.parent / "other.json" and other.exists()
    assert results_fallback.save_results(tmp_path / "fine.json", write) == tmp_path / "fine.json"
    results_fallback.reset()
    assert results_fallback.exit_status(0) == 0


def test_two_results_of_one_name_keep_both_in_the_fallback(tmp_path, capsys):
    """Every validation epoch writes a results.json: on a full disk the second must not overwrite the first."""
    full = tmp_path / "out"

    def writer(value):
        def write(path: Path):
            if path.is_relative_to(full):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            atomic.atomic_write_json(path, {"Mean": value})
        return write

    first = results_fallback.save_results(full / "val_epoch_001" / "results.json", writer(1.0))
    second = results_fallback.save_results(full / "val_epoch_002" / "results.json", writer(2.0))
    assert first != second and second.is_relative_to(first.parent)  # beside the first, in a folder of its own
    assert json.loads(first.read_text()) == {"Mean": 1.0} and json.loads(second.read_text()) == {"Mean": 2.0}
    lines = fallback_lines(capsys.readouterr().err)
    assert [line.rsplit("saved it to ", 1)[1] for line in lines] == [f"{first} instead", f"{second} instead"]


def test_a_reason_is_one_line():
    from tdmi.outputs import os_error_reason

    ffmpeg_log = OSError("[Errno 32] Broken pipe\n\nFFMPEG COMMAND:\nffmpeg -y ...\n\nFFMPEG STDERR OUTPUT:\n...")
    assert os_error_reason(ffmpeg_log) == "[Errno 32] Broken pipe"
    assert os_error_reason(OSError()) == "OSError"
    assert os_error_reason(OSError(errno.ENOSPC, "x")) == "no space left on the device"


def test_a_folder_that_fills_the_disk_midway_is_not_left_half_written(tmp_path, capsys):
    out = tmp_path / "out"
    stale = out / "predictions"
    stale.mkdir(parents=True)
    (stale / "old.json").write_text("{}")  # an earlier run's folder

    def write(folder: Path):  # the prediction writer: file by file; the disk fills after two of four
        for i in range(4):
            if i == 2 and folder.is_relative_to(out):
                raise OSError(errno.ENOSPC, "No space left on device", str(folder / f"{i}.json"))
            atomic.atomic_write_json(folder / f"{i}.json", {"sequence": i})

    saved = results_fallback.save_results(stale, write, "the prediction files", folder=True)
    assert saved.is_relative_to(tmp_path / "fallback") and saved.name == "predictions"
    assert sorted(p.name for p in saved.iterdir()) == ["0.json", "1.json", "2.json", "3.json"]  # the whole set
    assert sorted(p.name for p in out.iterdir()) == ["predictions"]  # no hidden temporary folder left
    assert [p.name for p in stale.iterdir()] == ["old.json"]  # the earlier folder as it was, not mixed
    assert len(fallback_lines(capsys.readouterr().err)) == 1

    # A write that succeeds replaces the earlier folder whole: no stale file survives among the new ones.
    results_fallback.reset()
    fine = tmp_path / "fine" / "predictions"
    fine.mkdir(parents=True)
    (fine / "old.json").write_text("{}")
    assert results_fallback.save_results(fine, write, folder=True) == fine
    assert sorted(p.name for p in fine.iterdir()) == ["0.json", "1.json", "2.json", "3.json"]
    assert [p.name for p in fine.parent.iterdir()] == ["predictions"]


def test_when_the_fallback_fails_too_the_error_names_both(tmp_path, monkeypatch):
    def write(path: Path):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(results_fallback, "fallback_roots", lambda: [tmp_path / "also_full"])
    with pytest.raises(CommandError) as err:
        results_fallback.save_results(tmp_path / "out.json", write, "the results table")
    message = str(err.value)
    assert str(tmp_path / "out.json") in message and str(tmp_path / "also_full") in message
    assert "TDMI_FALLBACK_DIR" in message and not list((tmp_path / "also_full").iterdir())


def test_evaluate_json_out_on_a_full_disk(tmp_path, monkeypatch, capsys):
    summary = generate_synthtrack(tmp_path / "synth", sequences=2, frames=4, size=(128, 96), progress=False)
    out = tmp_path / "full"
    disk_full_under(monkeypatch, out)
    code = main(["evaluate", "--gt", str(summary.annotation_dir), "--pred", str(summary.annotation_dir),
                 "--json-out", str(out / "metrics.json"), "--report", "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    (line,) = fallback_lines(captured.err)
    assert line.startswith(f"tdmi evaluate: error: writing the results table to {out / 'metrics.json'} failed")
    saved = Path(line.rsplit(" saved it to ", 1)[1].removesuffix(" instead"))
    assert saved.is_relative_to(tmp_path / "fallback") and json.loads(saved.read_text())["Mean"] == 100.0
    assert f"wrote {saved}" in captured.out and not (out / "metrics.json").exists()
    # a bare --report goes beside the table, where the table was saved
    assert f"report: wrote {saved.with_suffix('.html')}" in captured.out and saved.with_suffix(".html").is_file()
    assert not out.exists() or not any(out.iterdir())

    # A report named on the full disk: saved in the fallback folder too, said in one line, not a traceback.
    results_fallback.reset()
    code = main(["evaluate", "--gt", str(summary.annotation_dir), "--pred", str(summary.annotation_dir),
                 "--report", str(out / "page.html"), "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    (line,) = fallback_lines(captured.err)
    assert line.startswith(f"tdmi evaluate: error: writing the HTML report to {out / 'page.html'} failed")
    page = Path(line.rsplit(" saved it to ", 1)[1].removesuffix(" instead"))
    assert page.is_relative_to(tmp_path / "fallback") and "<html" in page.read_text()
    assert f"report: wrote {page}" in captured.out and not (out / "page.html").exists()


def test_test_on_a_full_disk_scores_the_saved_predictions(tmp_path, monkeypatch, capsys):
    data = tmp_path / "synth"
    generate_synthtrack(data, sequences=2, frames=6, seed=3, size=(160, 128), progress=False)
    cfg = load_config(None, [f"data.root={data}", "data.dataset=synthtrack", *TINY_MODEL])
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "tiny", dict(build_model(cfg.model).state_dict()),
                    checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                                        heatmap_size=cfg.model.heatmap_size, delta=cfg.model.delta))
    out = tmp_path / "out"
    out.mkdir()
    disk_full_under(monkeypatch, out, after=1)  # the disk fills after the first file: folders are half-written
    code = main(["test", "--checkpoint", str(tmp_path / "tiny.safetensors"), "--out", str(out), "--device", "cpu",
                 "--track", "--report"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "Traceback" not in captured.err
    lines = fallback_lines(captured.err)
    assert [line.split(" to ")[1].split(" failed")[0] for line in lines] == [
        str(out / "predictions_track"), str(out / "predictions"), str(out / "results.json")]
    saved = Path(lines[-1].rsplit(" saved it to ", 1)[1].removesuffix(" instead"))
    results = json.loads(saved.read_text())
    assert Path(results["meta"]["predictions_dir"]) == saved.parent / "predictions"
    assert Path(results["tracking"]["track_dir"]) == saved.parent / "predictions_track"
    assert len(list((saved.parent / "predictions").glob("*.json"))) == 2
    assert len(list((saved.parent / "predictions_track").glob("*.json"))) == 2  # the whole set, not the rest
    assert f"Mean AP {results['Mean']:.1f}" in captured.out and str(saved) in captured.out  # scored and said
    assert f"in {saved.parent / 'predictions_track'})" in captured.out  # where the tracking submission really is
    # the bare --report goes beside results.json, where that was saved
    assert f"report: wrote {saved.parent / 'report.html'}" in captured.out
    assert (saved.parent / "report.html").is_file()
    assert not any(out.iterdir())  # nothing half-written (no file of a folder, no hidden temporary folder)


def test_infer_on_a_full_disk_keeps_the_poses(tmp_path, monkeypatch, capsys):
    summary = generate_synthtrack(tmp_path / "synth", sequences=1, frames=4, size=(160, 128), progress=False)
    folder = summary.image_dir / summary.sequences[0]
    out = tmp_path / "out"
    out.mkdir()
    disk_full_under(monkeypatch, out)
    code = main(["infer", str(folder), "--boxes", str(summary.detections_file), "--out", str(out),
                 "--device", "cpu", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    (line,) = fallback_lines(captured.err)
    assert f"writing the poses of {folder} to {out / (folder.name + '.json')} failed" in line
    saved = Path(line.rsplit(" saved it to ", 1)[1].removesuffix(" instead"))
    assert len(json.loads(saved.read_text())["images"]) == 4
    assert f"-> {saved}" in captured.out


@pytest.mark.parametrize("fails_in", ["write", "close", "replace", "empty_file"])
def test_infer_render_on_a_full_disk_drops_the_video_and_keeps_the_poses(tmp_path, monkeypatch, capsys, fails_in):
    from tdmi.inference import render

    summary = generate_synthtrack(tmp_path / "synth", sequences=1, frames=4, size=(160, 128), progress=False)
    folder = summary.image_dir / summary.sequences[0]
    out = tmp_path / "out"
    if fails_in == "replace":  # the encoder finished the file, its rename into place fails
        real_replace = os.replace

        def replace(source, target, *args, **kwargs):
            if str(target).endswith(".mp4"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_replace(source, target, *args, **kwargs)

        monkeypatch.setattr(render.os, "replace", replace)
    elif fails_in == "empty_file":  # the encoder ran out of space finishing the file and did not say so
        monkeypatch.setattr(render, "_has_frames", lambda path: False)
    else:
        real = getattr(render.VideoWriter, fails_in)

        def full(self, *args):  # the video's disk fills up: after the first frame, or when the file is finished
            if fails_in == "close" or self.frames_written >= 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, *args)

        monkeypatch.setattr(render.VideoWriter, fails_in, full)
    code = main(["infer", str(folder), "--boxes", str(summary.detections_file), "--out", str(out), "--render",
                 "--device", "cpu", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 1, captured.err  # the poses are kept, but a video that was asked for is missing
    assert "Traceback" not in captured.err
    reason = "the finished file holds no readable frame" if fails_in == "empty_file" else "no space left on the device"
    assert f"the video was not written to {out / (folder.name + '.mp4')} ({reason}" in captured.err
    assert len(json.loads((out / f"{folder.name}.json").read_text())["images"]) == 4  # the poses are kept
    assert sorted(p.name for p in out.iterdir()) == [f"{folder.name}.json"]  # no video, no partial video


def test_a_failed_write_leaves_no_folder_it_created(tmp_path):
    """``atomic_write`` and ``atomic_write_folder`` create missing parents; when the write fails, those go again
    (folders that existed before, or that now hold other files, stay)."""
    def failing(path: Path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    for write in (atomic.atomic_write, atomic.atomic_write_folder):
        with pytest.raises(OSError):
            write(tmp_path / "new" / "deeper" / "results.json", failing)
        assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError):
        atomic.atomic_write(tmp_path / "kept" / "sub" / "r.json", failing)
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "sub").exists()
    assert atomic.atomic_write_bytes(tmp_path / "made" / "r.bin", b"x").read_bytes() == b"x"  # success keeps them
