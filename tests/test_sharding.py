"""``torchrun -m tdmi test`` / ``tdmi infer`` over 2 CPU ranks (gloo) give exactly what one process gives
(tdmi.sharding): the same prediction files and mAP, the same per-input JSON, and rank 0 alone writes the test's
outputs. A rank that fails during the work stops every rank instead of leaving them waiting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline_helpers import one_torch_thread  # noqa: F401 (autouse fixture: one intra-op thread)
from tdmi.cli import main
from tdmi.config import load_config, to_dict
from tdmi.data.dataset import build_dataset
from tdmi.data.synthetic import generate_synthtrack
from tdmi.engine.distributed import DistInfo
from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint
from tdmi.models.tdmi import build_model
from tdmi.sharding import batch_share, input_share
from model_helpers import TINY_CLIP_MODEL

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = TINY_CLIP_MODEL + ["data.sigma=2.0", "test.batch_size=4"]
TIMING = ("inference_seconds", "evaluation_seconds", "predictions_dir")
"""results.json fields that differ between two runs of the same test: wall times and the output folder."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 4-sequence SynthTrack set and a tiny random TDMI checkpoint whose sidecar config points at it."""
    root = tmp_path_factory.mktemp("sharding")
    data = root / "synth"
    generate_synthtrack(data, sequences=4, frames=8, seed=3, size=(192, 144), progress=False)
    cfg = load_config(None, [f"data.root={data}", "data.dataset=synthtrack", *TINY_MODEL])
    torch.manual_seed(1)
    model = build_model(cfg.model)
    metadata = checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                                   heatmap_size=cfg.model.heatmap_size, delta=cfg.model.delta, training={"epoch": 1})
    save_checkpoint(root / "tiny", dict(model.state_dict()), metadata)
    return root, data, cfg, root / "tiny.safetensors"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, ranks: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), MASTER_PORT=str(port))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "tdmi", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_timing(results_file: Path) -> dict:
    payload = json.loads(results_file.read_text())
    for key in TIMING:
        payload["meta"].pop(key)
    return payload


# ----------------------------------------------------------------------------------------------------------- shares


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("samples, batch", [(0, 4), (1, 4), (17, 4), (16, 4), (7, 1)])
def test_batch_shares_are_the_single_process_batches_each_once(world, samples, batch):
    single = batch_share(samples, batch, DistInfo(0, 1, 0))
    assert [i for b in single for i in b] == list(range(samples))
    shares = [batch_share(samples, batch, DistInfo(rank, world, rank)) for rank in range(world)]
    assert sorted(tuple(b) for share in shares for b in share) == sorted(tuple(b) for b in single)
    for rank, share in enumerate(shares):  # batch b on rank b % world
        assert share == [b for i, b in enumerate(single) if i % world == rank]


def test_input_shares_take_each_input_once_by_position():
    items = ["a.mp4", "b.mp4", "c.mp4"]
    shares = [input_share(items, DistInfo(rank, 2, rank)) for rank in range(2)]
    assert shares == [[(0, "a.mp4"), (2, "c.mp4")], [(1, "b.mp4")]]


# ------------------------------------------------------------------------------------------------------- commands


def test_torchrun_test_equals_one_process(setup, capsys):
    root, _, _, checkpoint = setup
    single, multi = root / "single", root / "multi"
    assert main(["test", "--checkpoint", str(checkpoint), "--out", str(single), "--device", "cpu"]) == 0
    single_table = capsys.readouterr().out.split("PoseTrack AP", 1)[1].split("test: Mean AP", 1)[0]
    run = torchrun("test", "--checkpoint", str(checkpoint), "--out", str(multi), "--device", "cpu")
    assert run.returncode == 0, run.stderr[-3000:]
    # rank 0 alone reports and writes: one table, the same files, byte for byte
    assert run.stdout.count("PoseTrack AP") == 1 and single_table in run.stdout
    assert "(and 1 more ranks)" in run.stderr
    single_files, multi_files = files_under(single / "predictions"), files_under(multi / "predictions")
    assert len(single_files) == 4 and single_files == multi_files
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in single.iterdir())
    assert without_timing(multi / "results.json") == without_timing(single / "results.json")


def test_a_rank_failing_mid_split_stops_every_rank(setup, tmp_path):
    _, data, _, checkpoint = setup
    broken = tmp_path / "synth"
    subprocess.run(["cp", "-r", str(data), str(broken)], check=True)
    dataset = build_dataset(load_config(None, [f"data.root={broken}", "data.dataset=synthtrack", *TINY_MODEL]),
                            "test")
    readers: dict[str, set[int]] = {}  # image -> the samples that read it (key or supporting frame)
    for index in range(len(dataset)):
        for path in dataset.frame_paths(index)[0]:
            readers.setdefault(path, set()).add(index)
    rank1 = {i for batch in batch_share(len(dataset), 4, DistInfo(1, 2, 1)) for i in batch}
    image = Path(next(path for path, samples in readers.items() if samples <= rank1))  # read by rank 1 only
    image.write_bytes(b"not an image")
    run = torchrun("test", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--device", "cpu",
                   "--set", f"data.root={broken}", timeout=180)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("tdmi test: error:")]
    # Each rank stops with the failure in one line; torchrun may stop rank 0 (SIGTERM) as soon as rank 1 exits, before
    # rank 0 prints its line, so only "no rank waited" (the run ended, well before the timeout) and "every line names
    # the image" are certain. Rank 0's line, when it got to print it, says which rank failed.
    assert 1 <= len(errors) <= 2, run.stderr[-3000:]
    assert all(str(image) in line for line in errors)
    assert all("testing stopped: rank 1: DataFormatError" in line for line in errors if "testing stopped" in line)
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_rank_with_too_few_rows_tells_the_others_before_they_wait(monkeypatch):
    """The row count is checked before the ranks agree on failures: a mismatch is shared, so no rank is left in
    gather_to_main waiting for the rows of a rank that raised."""
    from tdmi import sharding
    from tdmi.engine import test as engine_test

    cfg = load_config(None, ["data.workers=0", "test.batch_size=4"])
    agreed: list = []
    monkeypatch.setattr(engine_test, "predict_rows", lambda *args, **kwargs: [])  # no rows for 4 samples
    monkeypatch.setattr(sharding, "agree_on_failure", lambda failure, ranks: agreed.append(failure) or failure)
    monkeypatch.setattr(sharding, "gather_to_main", lambda *args: pytest.fail("gathered after a failure"))
    with pytest.raises(RuntimeError, match="rank 1: 0 predictions for 4 samples"):
        engine_test.predict_split_sharded(torch.nn.Identity(), list(range(8)), cfg, torch.device("cpu"),
                                          DistInfo(1, 2, 1), progress=False)
    assert len(agreed) == 1 and "rank 1: 0 predictions for 4 samples" in agreed[0]


def test_torchrun_infer_equals_one_process(setup, capsys):
    root, data, _, checkpoint = setup
    folders = sorted(str(p) for p in (data / "images" / "val").iterdir())[:3]
    boxes = str(data / "detections" / "val_boxes.json")
    single, multi = root / "infer_single", root / "infer_multi"
    common = ["--checkpoint", str(checkpoint), "--boxes", boxes, "--device", "cpu"]
    assert main(["infer", *folders, *common, "--out", str(single)]) == 0
    capsys.readouterr()
    run = torchrun("infer", *folders, *common, "--out", str(multi))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("infer: 3 of 3 inputs done") == 1 and run.stdout.count("model: ") == 1
    assert sorted(p.name for p in multi.iterdir()) == sorted(p.name for p in single.iterdir())
    for name in (Path(f).name for f in folders):  # each input once, as one process wrote it (but the timings)
        a, b = (json.loads((folder / f"{name}.json").read_text()) for folder in (single, multi))
        assert a["tdmi"].pop("throughput") and b["tdmi"].pop("throughput")
        assert a == b
        assert run.stdout.count(f"{name}: 8 frames") == 1


def test_a_folder_of_videos_stands_for_its_videos_and_a_folder_of_frames_for_itself(tmp_path):
    from tdmi.inference.infer_command import expand_inputs

    videos, frames = tmp_path / "videos", tmp_path / "frames"
    videos.mkdir()
    frames.mkdir()
    for name in ("clip10.mp4", "clip2.avi", "notes.txt"):
        (videos / name).write_bytes(b"")
    for name in ("000000.jpg", "000001.jpg", "preview.mp4"):
        (frames / name).write_bytes(b"")
    assert expand_inputs([str(videos), str(frames), "missing.mp4"]) == [
        str(videos / "clip2.avi"), str(videos / "clip10.mp4"), str(frames), "missing.mp4"]


def _check_many_times(folder: str, start, rounds: int, errors, rank: int = 0, world: int = 1) -> None:
    from tdmi.errors import CommandError
    from tdmi.outputs import check_output_dir

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))  # this process is rank `rank` of torchrun's `world`
    start.wait()
    for i in range(rounds):
        try:
            check_output_dir(f"{folder}/{i}/out", "--out")
        except CommandError as err:
            errors.put(str(err))


def test_ranks_checking_the_same_new_out_folder_at_once_all_pass(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")  # like torchrun's ranks: processes checking the same --out
    start, errors = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_check_many_times, args=(str(tmp_path / "runs"), start, 100, errors, rank, 4))
               for rank in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert all(w.exitcode == 0 for w in workers) and not found, found[:3]
    assert not list(tmp_path.glob("runs/*/out/.tdmi-write-check-*"))  # no probe file left behind
    assert not (tmp_path / "runs").exists()  # and no folder: the checks created nothing that stays


# ------------------------------------------------------------------------------- tdmi infer's ranks, without torchrun
#
# One process plays rank `rank` of 2: the collectives are fakes that hand it the other rank's share (what torchrun's
# ranks would exchange), so each rank's side of the exchange is checked on its own.


def _images(folder: Path, names: list[str]) -> list[str]:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.zeros((32, 32, 3), np.uint8))
    return [str(folder / name) for name in names]


NO_RECORDS = {"saved": [], "lost": []}


def _run_infer_as_rank(monkeypatch, tmp_path, rank: int, inputs: list[str], fake_infer_source, *, gathered: list,
                       other_share=None, main_check=None) -> int:
    """``tdmi infer INPUTS --out tmp_path/out`` as rank ``rank`` of 2; returns its exit status (before the CLI's
    own fallback check). ``gathered`` receives what this rank hands to all_gather; ``other_share``: what the other
    rank hands to it; ``main_check``: rank 0's ``(inputs, failures)`` as broadcast (default: this rank's own)."""
    import contextlib

    from tdmi import results_fallback, sharding
    from tdmi.cli import build_parser
    from tdmi.inference import detectors, infer_command
    from tdmi.inference.model_loading import LoadedModel

    other = other_share or ([], [], False, NO_RECORDS)

    def all_gather(obj, info):
        gathered.append(obj)
        return [obj, other] if rank == 0 else [other, obj]

    monkeypatch.setattr(sharding, "dist_info_from_env", lambda: DistInfo(rank, 2, rank))
    monkeypatch.setattr(sharding, "process_group", lambda *args, **kwargs: contextlib.nullcontext())
    monkeypatch.setattr(sharding, "all_gather", all_gather)
    monkeypatch.setattr(sharding, "broadcast_from_main", lambda obj, info: obj if main_check is None else main_check)
    monkeypatch.setattr(torch.distributed, "barrier", lambda *args, **kwargs: None)
    monkeypatch.setattr(infer_command, "load_inference_model", lambda *args, **kwargs: LoadedModel(
        torch.nn.Identity(), load_config(None, []), "fake model", False, None))
    monkeypatch.setattr(detectors, "make_detector", lambda *args, **kwargs: (object(), "fake detector"))
    monkeypatch.setattr(infer_command, "infer_source", fake_infer_source)
    args = build_parser().parse_args(["infer", *inputs, "--out", str(tmp_path / "out"), "--device", "cpu"])
    results_fallback.reset("infer")
    try:
        return infer_command.infer_command(args)
    finally:
        results_fallback.reset()


def _done(spec, out_dir, *args, output_stem=None, **kwargs):
    """A fake infer_source: one frame, one person, nothing written."""
    from tdmi.inference.infer_command import InferOutcome
    from tdmi.inference.records import RunStats

    return InferOutcome(Path(out_dir) / f"{output_stem}.json", None,
                        RunStats(frames=1, person_frames=1, pose_seconds=0.1, encoded_crops=1), 1, 1)


def test_a_rank_whose_input_raises_without_a_message_still_tells_rank_0(monkeypatch, tmp_path):
    """``RuntimeError()`` (or a bare assert) has no first line: the rank's failure is its type, handed to rank 0
    before the rank stops, instead of an IndexError raised before all_gather, which left the other ranks waiting."""
    def raises(spec, *args, **kwargs):
        raise RuntimeError()

    inputs = _images(tmp_path / "in", ["a.jpg", "b.jpg"])
    gathered: list = []
    with pytest.raises(RuntimeError) as raised:
        _run_infer_as_rank(monkeypatch, tmp_path, 1, inputs, raises, gathered=gathered)
    assert type(raised.value) is RuntimeError  # the rank still stops with its own error, after telling rank 0
    assert len(gathered) == 1 and gathered[0][1] == ["rank 1 stopped: RuntimeError"]


@pytest.mark.parametrize("rank", [0, 1])
def test_every_rank_exits_1_when_another_rank_saved_results_elsewhere(monkeypatch, tmp_path, capsys, rank):
    """Results saved in a fallback folder or an output lost on one rank: rank 0's summary says so (with the rank),
    and every rank's exit status is 1, not only that rank's."""
    inputs = _images(tmp_path / "in", ["a.jpg", "b.jpg"])
    other = rank ^ 1
    records = {"saved": [(f"writing the poses of x to {tmp_path}/out/x.json failed (no space left on the device); "
                          f"saved it to /tmp/tdmi-results-1/x.json instead")],
               "lost": [("x: the video was not written to out/x.mp4 (no space left on the device); the poses are "
                         "kept in the JSON")]}
    other_share = ([(1, 1, 0.1, 1)], [], False, records)
    gathered: list = []
    code = _run_infer_as_rank(monkeypatch, tmp_path, rank, inputs, _done, gathered=gathered, other_share=other_share)
    assert code == 1
    assert gathered[0][3] == NO_RECORDS  # this rank had none of its own
    captured = capsys.readouterr()
    if rank == 0:
        assert f"tdmi infer: error: rank {other}: writing the poses of x" in captured.err
        assert f"tdmi infer: error: rank {other}: x: the video was not written" in captured.err
        (summary,) = [line for line in captured.out.splitlines() if line.startswith("infer: ")]
        assert "2 of 2 inputs done" in summary
        assert "1 saved in a fallback folder; 1 requested output not written" in summary
    # without the other rank's records: 0
    gathered.clear()
    assert _run_infer_as_rank(monkeypatch, tmp_path, rank, inputs, _done, gathered=gathered,
                              other_share=([(1, 1, 0.1, 1)], [], False, NO_RECORDS)) == 0


def test_each_rank_hands_its_own_fallback_records_to_rank_0(monkeypatch, tmp_path):
    from tdmi import results_fallback

    def loses_the_video(spec, *args, **kwargs):
        results_fallback.output_lost(f"{Path(spec).name}: the video was not written")
        return _done(spec, *args, **kwargs)

    inputs = _images(tmp_path / "in", ["a.jpg", "b.jpg"])
    gathered: list = []
    assert _run_infer_as_rank(monkeypatch, tmp_path, 1, inputs, loses_the_video, gathered=gathered) == 1
    assert gathered[0][3] == {"saved": [], "lost": ["b.jpg: the video was not written"]}


def test_rank_0s_summary_counts_every_ranks_fallbacks(capsys, tmp_path):
    from tdmi.config import load_config
    from tdmi.inference.infer_command import PipelineOptions, _infer_status, _infer_summary
    from tdmi.inference.model_loading import LoadedModel

    loaded = LoadedModel(torch.nn.Identity(), load_config(None, []), "fake", False, None)
    clean = ([(4, 8, 1.0, 8)], [], False, NO_RECORDS)
    line = "writing b to out/b.json failed (no space left on the device); saved it to /tmp/r/b.json instead"
    saved_on_1 = ([(4, 8, 1.0, 8)], [], False, {"saved": [line], "lost": []})
    assert _infer_status([clean, clean], []) == 0
    assert _infer_status([clean, saved_on_1], []) == 1
    assert _infer_status([clean, ([], ["b: cannot be read"], False, NO_RECORDS)], []) == 1
    assert _infer_status([([], [], False, NO_RECORDS), ([], ["b: cannot be read"], False, NO_RECORDS)], []) == 2
    assert _infer_summary([clean, saved_on_1], [], 2, tmp_path, PipelineOptions(), loaded) == 1
    captured = capsys.readouterr()
    assert "tdmi infer: error: rank 1: writing b to out/b.json failed" in captured.err
    assert "infer: 2 of 2 inputs done" in captured.out and "1 saved in a fallback folder" in captured.out


def test_every_rank_runs_rank_0s_checked_inputs(monkeypatch, tmp_path, capsys):
    """An input that passes the check on rank 1 but not on rank 0 (a mount missing on one node, a file still being
    written): rank 1 runs rank 0's list, so the shares and the output names are the same on every rank."""
    inputs = _images(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    ran: list[tuple[str, str]] = []

    def record(spec, *args, output_stem=None, **kwargs):
        ran.append((Path(spec).name, output_stem))
        return _done(spec, *args, output_stem=output_stem, **kwargs)

    main_check = ([inputs[0], inputs[2]], [f"{inputs[1]}: cannot be read"])  # rank 0 could not read b.jpg
    gathered: list = []
    code = _run_infer_as_rank(monkeypatch, tmp_path, 1, inputs, record, gathered=gathered, main_check=main_check,
                              other_share=([(1, 1, 0.1, 1)], [], False, NO_RECORDS))
    assert ran == [("c.jpg", "c")]  # position 1 of rank 0's [a, c]; not b.jpg, position 1 of its own [a, b, c]
    assert code == 1  # rank 0's failure to read b.jpg is the run's: every rank exits 1
    assert "rank 1: the inputs' check here differs from rank 0's for " + inputs[1] in capsys.readouterr().err


def test_agree_on_inputs_takes_rank_0s_list(monkeypatch):
    from tdmi import sharding
    from tdmi.inference.infer_command import agree_on_inputs

    sent: list = []

    def broadcast(obj, info):  # rank 0's value, whatever the others pass
        sent.append(obj)
        return (["a", "c"], ["b: cannot be read"]) if info.rank else obj

    monkeypatch.setattr(sharding, "broadcast_from_main", broadcast)
    assert agree_on_inputs(["a", "c"], ["b: cannot be read"], DistInfo(0, 2, 0)) == (["a", "c"],
                                                                                   ["b: cannot be read"])
    assert agree_on_inputs(["a", "b", "c"], [], DistInfo(1, 2, 1)) == (["a", "c"], ["b: cannot be read"])
    assert len(sent) == 2  # every rank takes part in the broadcast


def test_broadcast_from_main_is_rank_0s_value(monkeypatch):
    from tdmi import sharding

    def broadcast_object_list(box, src):
        assert src == 0
        box[0] = "rank 0's"

    monkeypatch.setattr(sharding.dist, "broadcast_object_list", broadcast_object_list)
    assert sharding.broadcast_from_main("mine", DistInfo(1, 2, 1)) == "rank 0's"
    assert sharding.broadcast_from_main("mine", DistInfo(0, 1, 0)) == "mine"  # one process: nothing sent
