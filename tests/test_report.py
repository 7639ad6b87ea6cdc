"""The HTML report of ``tdmi test --report`` / ``tdmi evaluate --report`` (``tdmi.evaluation.report``).

Unit tests build the page from small random PoseTrack18-style files (``posetrack_gen``); the command tests run on a
tiny SynthTrack set; the browser test opens a real report in headless Chromium (skipped without
``/usr/bin/chromium``) and proves, on deliberately broken pages, that it would notice a script error.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posetrack_gen import gt_as_predictions, make_gt_sequence, make_predictions, write_sequences
from script_helpers import load_script
from tdmi.cli import main
from tdmi.config import load_config, to_dict
from tdmi.data.synthetic import generate_synthtrack
from tdmi.evaluation.per_sequence import score_sequences, worst_frames
from tdmi.evaluation.posetrack_ap import TABLE_KEYS, evaluate_dirs, evaluate_sequences
from tdmi.evaluation.report import build_report_html, make_report
from tdmi.evaluation.report_gallery import build_gallery
from tdmi.keypoints import POSEVAL15

CHROMIUM = Path("/usr/bin/chromium")
DATA_URI = re.compile(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"')


def make_files(root: Path, sequences: int = 4, seed: int = 5) -> tuple[Path, Path, dict, dict]:
    rng = np.random.default_rng(seed)
    gts = {f"{i:06d}_mpii_test": make_gt_sequence(rng, i, num_frames=5, max_people=3) for i in range(1, sequences + 1)}
    preds = {name: make_predictions(rng, gt) for name, gt in gts.items()}
    preds["000001_mpii_test"] = gt_as_predictions(gts["000001_mpii_test"])  # one perfect sequence: best, last
    return write_sequences(root / "annotations" / "val", gts), write_sequences(root / "pred", preds), gts, preds


def write_images(root: Path, gts: dict) -> None:
    for gt in gts.values():
        for image in gt["images"]:
            path = root / image["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((720, 1280, 3), 90, np.uint8))


def sequence_rows(page: str) -> list[str]:
    table = page[page.index('<table class="sortable" id="sequences">'):]
    table = table[:table.index("</table>")]
    return re.findall(r"<tr><td[^>]*>\d+</td><td>([^<]+)", table)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    gt_dir, pred_dir, gts, preds = make_files(root)
    return root, gt_dir, pred_dir, gts, preds


def test_page_has_the_joint_table_the_sequences_worst_first_and_no_outside_reference(files):
    root, gt_dir, pred_dir, gts, preds = files
    payload = evaluate_dirs(gt_dir, pred_dir).to_json_dict(gt_dir=str(gt_dir), pred_dir=str(pred_dir))
    sequences = score_sequences(gt_dir, pred_dir)
    page = build_report_html(payload, sequences, build_gallery(worst_frames(sequences), None), title="t")
    for key in TABLE_KEYS:
        assert f'<span class="label">{key}</span>' in page
    for name in POSEVAL15.names:
        assert name.replace("_", " ") in page
    assert f"{payload['Mean']:.1f}" in page
    # Each sequence scored alone, as poseval would score its one file pair; listed worst first.
    alone = {name: evaluate_sequences({name: gts[name]}, {name: preds[name]}).table["Mean"] for name in gts}
    assert {s.name: s.mean_ap for s in sequences} == pytest.approx(alone)
    assert sequence_rows(page) == sorted(alone, key=alone.get)
    assert sequence_rows(page)[-1] == "000001_mpii_test" and alone["000001_mpii_test"] == pytest.approx(100.0)
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert "<link" not in page and not re.search(r"<script[^>]*\bsrc=", page) and "@import" not in page
    assert "url(" not in page
    # Without images the gallery is one line saying so.
    notes = re.findall(r'<p class="note" id="gallery-note">([^<]*)</p>', page)
    assert len(notes) == 1 and "No frame images" in notes[0] and "\n" not in notes[0]
    assert "data:image" not in page


def test_gallery_embeds_the_worst_frames_when_their_images_exist(files, tmp_path):
    root, gt_dir, pred_dir, gts, _ = files
    write_images(tmp_path, gts)
    sequences = score_sequences(gt_dir, pred_dir)
    assert len(worst_frames(sequences, count=6, per_sequence=1)) == 6  # filled with the next worst
    frames = worst_frames(sequences, count=4, per_sequence=1)
    scores = [f.score for f in frames]
    assert len(frames) == 4 and len({f.sequence for f in frames}) == 4  # one per sequence while others remain
    every = sorted(f.score for s in sequences for f in s.frames if f.gt_joints)
    assert scores[0] == every[0] and scores == sorted(scores)
    gallery = build_gallery(frames, tmp_path)
    assert gallery.note is None and len(gallery.items) == 4
    page = build_report_html({"Mean": 50.0}, sequences, gallery)
    images = DATA_URI.findall(page)
    assert len(images) == 8  # ground truth and prediction per frame
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(images[0]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and max(decoded.shape[:2]) == 360
    assert not re.search(r"https?://", page)

    # Some images missing: those frames are left out, and one line says how many.
    (tmp_path / frames[0].file_name).unlink()
    partial = build_gallery(frames, tmp_path)
    assert len(partial.items) == 3 and partial.note.startswith("1 of the 4 worst frames have no readable image")


def test_without_an_image_root_the_gallery_and_its_note_agree(files, tmp_path, monkeypatch):
    _, gt_dir, pred_dir, gts, _ = files
    write_images(tmp_path, gts)
    monkeypatch.chdir(tmp_path)  # the images' relative names exist from here, but no root was given or found
    frames = worst_frames(score_sequences(gt_dir, pred_dir), count=4, per_sequence=1)
    gallery = build_gallery(frames, None)
    assert gallery.items == [] and gallery.note.startswith("No frame images")  # not frames under "no images"
    absolute = [replace(f, file_name=str(tmp_path / f.file_name)) for f in frames]  # absolute names need no root
    shown = build_gallery(absolute, None)
    assert len(shown.items) == 4 and shown.note is None


def test_an_image_folder_that_may_not_be_read_counts_as_no_image(files, tmp_path, monkeypatch):
    from tdmi.evaluation.report_gallery import find_image_root

    _, gt_dir, pred_dir, gts, _ = files
    write_images(tmp_path, gts)
    frames = worst_frames(score_sequences(gt_dir, pred_dir), count=2, per_sequence=1)
    real = Path.is_file

    def denied(path):  # Python 3.11's is_file lets PermissionError through (only ENOENT and the like are False)
        if path.is_relative_to(tmp_path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "is_file", denied)
    gallery = build_gallery(frames, tmp_path)
    assert gallery.items == [] and gallery.note.startswith("No frame images: the 2 worst frames' files are not under")
    assert find_image_root(tmp_path / "annotations" / "val", [f.file_name for f in frames]) is None


def test_gallery_draws_hits_green_and_misses_red_on_the_same_crop(files):
    _, gt_dir, pred_dir, _, _ = files
    from tdmi.evaluation.report_gallery import draw_frame_pair

    frame = next(f for s in score_sequences(gt_dir, pred_dir) for f in s.frames
                 if f.correct_joints and (f.pred_present & ~f.pred_correct).any())
    blank = np.zeros((720, 1280, 3), np.uint8)
    gt, pred = draw_frame_pair(blank, frame)
    assert gt.shape == pred.shape and max(gt.shape[:2]) == 360
    b, g, r = (pred[..., i].astype(int) for i in range(3))
    assert ((g > 150) & (r < 100) & (b < 100)).any() and ((r > 200) & (g < 80) & (b < 80)).any()
    assert not ((gt[..., 1] > 150) & (gt[..., 2] < 100) & (gt[..., 0] < 100)).any()  # no hit/miss colours on GT


def test_pt21_frames_carry_file_names_and_joints_in_posevals_order(files):
    _, gt_dir, pred_dir, gts, _ = files
    poseval = {(f.sequence, f.file_name): f for s in score_sequences(gt_dir, pred_dir) for f in s.frames}
    pt21 = [f for s in score_sequences(gt_dir, pred_dir, protocol="pt21") for f in s.frames]
    compared = 0
    for frame in pt21:
        assert frame.file_name.startswith(f"images/val/{frame.sequence}/")  # a file name, not an image id
        other = poseval.get((frame.sequence, frame.file_name))
        if other is not None and other.gt_present.shape == frame.gt_present.shape:
            both = other.gt_present & frame.gt_present
            np.testing.assert_allclose(frame.gt_xy[both], other.gt_xy[both])
            compared += int(both.sum())
    assert compared > 50


# ---------------------------------------------------------------------------------------------------- commands


def test_evaluate_report_beside_json_out_and_with_a_path(files, tmp_path, capsys):
    root, gt_dir, pred_dir, gts, _ = files
    out = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json-out", str(out), "--report",
                 "--track", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    report = out.with_suffix(".html")
    assert f"report: wrote {report}" in printed and printed.strip().splitlines()[-1].startswith("evaluate: Mean AP")
    page = report.read_text()
    assert "MOTA" in page and 'id="tracking"' in page
    assert f"{json.loads(out.read_text())['Mean']:.1f}" in page
    assert not list(report.parent.glob(".*.tmp"))  # written through a temporary file, nothing left beside it

    # An explicit file; the images found two folders above --gt (the dataset root), or given with --image-root.
    write_images(root, gts)
    explicit = tmp_path / "elsewhere" / "page.html"
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--report", str(explicit),
                 "--workers", "1"]) == 0
    assert len(DATA_URI.findall(explicit.read_text())) == 24 and "gallery-note" not in explicit.read_text()
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--report", str(explicit),
                 "--image-root", str(tmp_path), "--workers", "1"]) == 0
    assert "gallery-note" in explicit.read_text() and str(tmp_path) in explicit.read_text()


def test_image_root_without_a_report_is_refused(files, tmp_path, capsys):
    _, gt_dir, pred_dir, _, _ = files
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--image-root", str(tmp_path)]) == 2
    assert "--image-root: only the --report page reads images" in capsys.readouterr().err


def test_evaluate_report_path_is_checked_before_any_work(files, tmp_path, capsys):
    _, gt_dir, pred_dir, _, _ = files
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--report"]) == 2
    err = capsys.readouterr().err
    assert "--report: give a file name" in err and "Traceback" not in err
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--report",
                 str(blocker / "r.html")]) == 2
    captured = capsys.readouterr()
    assert "--report" in captured.err and "PoseTrack AP" not in captured.out  # refused before evaluating
    same = tmp_path / "same.html"
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json-out", str(same),
                 "--report", str(same)]) == 2
    assert "is the --json-out file too" in capsys.readouterr().err and not same.exists()


TINY_HRNET = ["model.arch=hrnet", "model.delta=0", "model.input_size=[96,128]", "model.heatmap_size=[24,32]",
              "model.backbone.width=4", "data.sigma=2.0", "data.workers=0", "test.batch_size=16"]


def test_tdmi_test_report_in_the_output_folder(tmp_path, capsys):
    from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint
    from tdmi.models.tdmi import build_model

    root = tmp_path / "synth"
    generate_synthtrack(root, sequences=2, frames=6, seed=3, size=(192, 144), progress=False)
    cfg = load_config(None, [f"data.root={root}", "data.dataset=synthtrack", *TINY_HRNET])
    torch.manual_seed(1)
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "ckpt", dict(model.state_dict()),
                    checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                                        heatmap_size=cfg.model.heatmap_size, delta=cfg.model.delta))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert main(["test", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "x"), "--device", "cpu",
                 "--threads", "1", "--report", str(blocker / "r.html")]) == 2
    assert "--report" in capsys.readouterr().err and not (tmp_path / "x").exists()

    out = tmp_path / "out"
    assert main(["test", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(out), "--device", "cpu",
                 "--threads", "1", "--report", str(out / "results.json")]) == 2  # would overwrite the table
    err = capsys.readouterr().err
    assert "--report" in err and "is the results table (results.json) too" in err and not out.exists()

    assert main(["test", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(out), "--device", "cpu",
                 "--threads", "1", "--report"]) == 0
    printed = capsys.readouterr().out
    assert f"report: wrote {out / 'report.html'}" in printed
    assert printed.strip().splitlines()[-1].startswith("test: Mean AP ")
    page = (out / "report.html").read_text()
    results = json.loads((out / "results.json").read_text())
    assert f"{results['Mean']:.1f}" in page and "tdmi test:" in page
    assert sorted(sequence_rows(page)) == sorted(p.stem for p in (out / "predictions").glob("*.json"))
    assert len(DATA_URI.findall(page)) > 0 and not re.search(r"https?://", page)


# ----------------------------------------------------------------------------------------------------- browser


def chromium_flags() -> list[str]:
    """The screenshot script's flags (one list keeps both offline and quiet), plus console logging to read script
    errors; loaded when a browser test runs, not when this module is collected."""
    return [*load_script("report_screenshot").CHROMIUM_FLAGS, "--enable-logging=stderr", "--v=1"]


def browser_problems(page: Path) -> list[str]:
    """Open ``page`` in headless Chromium; what went wrong: console messages (the report writes none, so any is a
    script error: Chromium logs uncaught exceptions as "INFO:CONSOLE" lines), the marks its script sets missing from
    the rendered DOM (the script did not run to its end), or any file loaded but the page itself."""
    profile = tempfile.mkdtemp(prefix="tdmi-chromium-")
    try:
        run = subprocess.run([str(CHROMIUM), *chromium_flags(), f"--user-data-dir={profile}", "--dump-dom",
                              page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    problems = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    if run.returncode != 0:
        problems.append(f"chromium exited with {run.returncode}")
    html_tag = re.search(r"<html[^>]*>", run.stdout)
    if html_tag is None or not re.search(r'class="[^"]*\bjs\b', html_tag.group(0)):
        problems.append("the page's script did not mark <html> (it did not run)")
    if 'data-sortable="ready"' not in run.stdout:
        problems.append("the page's script did not finish (no sortable table marked ready)")
    loads = re.findall(r"FileURLLoader::Start: (\S+)", run.stderr)
    problems += [f"loaded {url}" for url in loads if url != page.resolve().as_uri()]
    return problems


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium (/usr/bin/chromium) is not installed; "
                                                  "apt-get install chromium")
def test_report_renders_in_headless_chromium_without_console_errors(files, tmp_path):
    root, gt_dir, pred_dir, gts, _ = files
    write_images(root, gts)
    payload = evaluate_dirs(gt_dir, pred_dir).to_json_dict()
    page = make_report(tmp_path / "report.html", payload, gt_dir, pred_dir, image_root=root)
    assert DATA_URI.findall(page.read_text())
    assert browser_problems(page) == []

    # The check must catch what it is for: a script error, a script that never ran, an outside file.
    text = page.read_text()
    thrown = tmp_path / "thrown.html"
    thrown.write_text(text.replace("</main><script>", "</main><script>undefinedFunction();</script><script>"))
    assert any("undefinedFunction is not defined" in p for p in browser_problems(thrown))
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace('classList.add("js");', 'classList.add("js"); var = ;'))
    problems = browser_problems(broken)
    assert any("SyntaxError" in p for p in problems) and any("did not mark" in p for p in problems)
    fetching = tmp_path / "fetching.html"
    fetching.write_text(text.replace("<main>", '<main><img src="missing.png" alt="">'))
    assert any(p.startswith("loaded ") and p.endswith("missing.png") for p in browser_problems(fetching))
