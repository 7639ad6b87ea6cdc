"""Training engine: data order, schedule, resume bit-identity, DDP replicas, NaN guard, Ctrl-C checkpoint."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from tdmi.config import load_config
from tdmi.engine.train import EpochSampler, NonFiniteLossError, lr_at_epoch, train

REPO = Path(__file__).resolve().parents[1]


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    a = EpochSampler(10, batch_size=3, seed=7)
    b = EpochSampler(10, batch_size=3, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)


def test_epoch_sampler_resumes_mid_epoch():
    full = EpochSampler(11, batch_size=2, seed=1)
    full.set_epoch(4)
    tail = EpochSampler(11, batch_size=2, seed=1)
    tail.set_epoch(4, start_batch=3)
    assert list(tail) == list(full)[6:]
    assert len(tail) == len(full) - 6


def test_epoch_sampler_shards_cover_everything_once_per_rank():
    shards = [EpochSampler(10, 2, seed=0, rank=r, world_size=3) for r in range(3)]
    for s in shards:
        s.set_epoch(0)
    indices = [i for s in shards for i in s]
    assert len(indices) == 12 and set(indices) == set(range(10))  # padded by wrapping, like DistributedSampler
    assert len({len(list(s)) for s in shards}) == 1


def test_paper_schedule():
    cfg = load_config(None)
    assert [lr_at_epoch(cfg, e) for e in (0, 5, 6, 11, 12, 18, 19)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 1e-6])


# ---------------------------------------------------------------------------------------------- end to end on tiny data

TINY = [
    "model.backbone.width=4", "model.input_size=[32,64]", "model.heatmap_size=[8,16]", "model.delta=1",
    "model.tde.channels=12", "model.tde.deform_groups=3", "model.tde.blocks_per_stage=[1,1,1,1]",
    "model.fusion_blocks=1", "model.st_blocks=1", "model.backbone.freeze=false", "data.sigma=1.0",
    "data.workers=0", "train.batch_size=2", "train.val_every=0", "train.lr=1e-3",
]


class TinyClips(torch.utils.data.Dataset):
    """Random clips with a fixed per-index generator: what matters here is determinism, not learning."""

    def __init__(self, n: int = 6, frames: int = 3):
        self.n, self.frames = n, frames
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        heatmaps = torch.rand(17, 16, 8, generator=g)
        return {"frames": torch.randn(self.frames, 3, 64, 32, generator=g), "heatmaps": heatmaps,
                "target_weight": (torch.rand(17, generator=g) > 0.3).float(), "meta": {"index": i}}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from tdmi.models.checkpoints import load_checkpoint

    return load_checkpoint(run / "last.safetensors")[0]


def test_resume_is_bit_identical(tmp_path):
    straight = load_config(None, TINY + [f"train.out_dir={tmp_path / 'a'}", "train.epochs=2"])
    train(straight, device="cpu", train_dataset=TinyClips())
    first_half = load_config(None, TINY + [f"train.out_dir={tmp_path / 'b'}", "train.epochs=2", "train.max_steps=4"])
    halfway = train(first_half, device="cpu", train_dataset=TinyClips())
    second_half = load_config(None, TINY + [f"train.out_dir={tmp_path / 'b'}", "train.epochs=2"])
    progress = train(second_half, resume=str(tmp_path / "b"), device="cpu", train_dataset=TinyClips())
    assert progress["step"] == 6 and progress["epoch"] == 2
    # the CPU seconds of training carry over a resume (the benchmark's cost column reads them)
    assert 0 < halfway["cpu_seconds"] < progress["cpu_seconds"]
    from tdmi.models.checkpoints import load_checkpoint

    saved = load_checkpoint(tmp_path / "b" / "last.safetensors")[1]["training"]
    assert saved["cpu_seconds"] == progress["cpu_seconds"]
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.epochs=2"])

    class Poisoned(TinyClips):
        def __getitem__(self, i):
            sample = super().__getitem__(i)
            if self.epoch == 1:
                sample["frames"][:] = float("nan")
            return sample

    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 2"):
        train(cfg, device="cpu", train_dataset=Poisoned())
    assert (tmp_path / "last.safetensors").is_file()  # epoch 1's checkpoint survives


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_config(None, TINY + [f"train.out_dir={out}", "train.epochs=1", "train.max_steps=2"])
    from tdmi.engine import train as engine

    captured = {}
    original = engine._run_epochs

    def spy(cfg_, info, dev, wrapped, step_module, *rest):
        original(cfg_, info, dev, wrapped, step_module, *rest)
        # Parameters, not buffers: DDP broadcasts rank 0's BN statistics at the start of every forward, so after the
        # last step each rank's running statistics legitimately reflect its own last batch.
        captured["state"] = {k: v.detach().clone() for k, v in step_module.named_parameters()}

    engine._run_epochs = spy
    try:
        train(cfg, device="cpu", train_dataset=TinyClips(n=8))
    finally:
        engine._run_epochs = original
        torch.distributed.destroy_process_group()
    torch.save(captured["state"], os.path.join(out, f"rank{rank}.pt"))


def test_ddp_two_cpu_processes_hold_identical_weights(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    initial = load_config(None, TINY)
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    from tdmi.engine.train import build_train_step

    torch.manual_seed(initial.train.seed)
    fresh = dict(build_train_step(initial).named_parameters())
    assert any(not torch.equal(fresh[k], r0[k]) for k in r0 if r0[k].is_floating_point())  # it did train


class NanOnRankOne(TinyClips):
    """NaN frames on rank 1 only, from the second batch on: rank 0's own loss stays finite."""

    def __getitem__(self, i):
        sample = super().__getitem__(i)
        if os.environ.get("RANK") == "1" and getattr(self, "calls", 0) >= 2:
            sample["frames"][:] = float("nan")
        self.calls = getattr(self, "calls", 0) + 1
        return sample


def _ddp_nan_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # a short collective timeout: a rank left waiting in a collective would fail the test in seconds, not hang it
    cfg = load_config(None, TINY + [f"train.out_dir={out}", "train.epochs=1", "train.batch_size=1",
                                    "train.dist_timeout_minutes=0.5", "data.workers=0"])
    outcome = "finished"
    try:
        train(cfg, device="cpu", train_dataset=NanOnRankOne(n=8))
    except NonFiniteLossError:
        outcome = "NonFiniteLossError"
    except Exception as error:  # noqa: BLE001  (reported to the test, which names it)
        outcome = f"{type(error).__name__}: {error}"[:300]
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(outcome)


def test_ddp_a_nan_on_one_rank_stops_every_rank(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_nan_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert outcomes == ["NonFiniteLossError", "NonFiniteLossError"], outcomes


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, signame):
    import signal

    class InterruptOnce(TinyClips):
        fired = False

        def __getitem__(self, i):
            if self.epoch == 0 and not InterruptOnce.fired and i == 0:
                InterruptOnce.fired = True
                # as if the user pressed Ctrl-C (or torchrun / a scheduler stopped the job) mid-epoch
                os.kill(os.getpid(), getattr(signal, signame))
            return super().__getitem__(i)

    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path / 'b'}", "train.epochs=2"])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, device="cpu", train_dataset=InterruptOnce())
    state = torch.load(tmp_path / "b" / "last.state.pt", weights_only=True)
    assert 0 < state["progress"]["batch_in_epoch"] < 3 and state["progress"]["epoch"] == 0
    train(cfg, resume=str(tmp_path / "b"), device="cpu", train_dataset=TinyClips())
    straight = load_config(None, TINY + [f"train.out_dir={tmp_path / 'a'}", "train.epochs=2"])
    train(straight, device="cpu", train_dataset=TinyClips())
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps_stay_finite(tmp_path, amp):
    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.epochs=1", "train.max_steps=2",
                                    f"train.amp={amp}"])
    progress = train(cfg, device="cpu", train_dataset=TinyClips())
    assert progress["step"] == 2
    weights = _weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_gradient_accumulation_steps_once_per_k_batches(tmp_path):
    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.epochs=1", "train.grad_accum=2"])
    progress = train(cfg, device="cpu", train_dataset=TinyClips(n=8))  # 4 batches -> 2 optimizer steps
    assert progress["step"] == 2


def test_resume_from_the_run_folder_alone_and_clear_errors(tmp_path, capsys):
    from tdmi.cli import main

    with pytest.raises(Exception, match="not found"):
        train(load_config(None, TINY + [f"train.out_dir={tmp_path}"]), resume=str(tmp_path / "missing"),
              device="cpu", train_dataset=TinyClips())
    assert main(["train"]) == 2 and "--resume RUN_DIR" in capsys.readouterr().err
    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path / 'run'}", "train.epochs=1", "train.max_steps=1"])
    train(cfg, device="cpu", train_dataset=TinyClips())
    other = load_config(None, TINY + [f"train.out_dir={tmp_path / 'run'}", "train.epochs=1",
                                      "model.backbone.width=8"])
    with pytest.raises(Exception, match="does not fit the model of this config"):
        train(other, resume=str(tmp_path / "run"), device="cpu", train_dataset=TinyClips())


def test_short_last_accumulation_group_is_averaged_over_its_own_batches(tmp_path):
    """3 batches with grad_accum=2: the second step's gradient must be that batch's mean loss, not half of it."""
    from tdmi.engine import train as engine

    seen = []
    original = torch.Tensor.backward

    def spy(self, *args, **kwargs):
        seen.append(float(self.detach()))
        return original(self, *args, **kwargs)

    torch.Tensor.backward = spy
    try:
        cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.epochs=1", "train.grad_accum=2"])
        losses = []
        orig_forward = engine.TrainStep.forward

        def record(self, *a):
            terms = orig_forward(self, *a)
            losses.append(float(terms["loss"].detach()))
            return terms

        engine.TrainStep.forward = record
        try:
            progress = train(cfg, device="cpu", train_dataset=TinyClips(n=6))
        finally:
            engine.TrainStep.forward = orig_forward
    finally:
        torch.Tensor.backward = original
    assert progress["step"] == 2
    assert seen == pytest.approx([losses[0] / 2, losses[1] / 2, losses[2] / 1])


def test_cosine_schedule_with_warmup_and_the_step_schedule_per_optimizer_step():
    from tdmi.engine.train import lr_multiplier

    cfg = load_config(None, ["train.schedule=cosine", "train.epochs=10", "train.warmup_epochs=1",
                             "train.min_lr_factor=0.01"])
    values = [lr_multiplier(cfg, s, steps_per_epoch=10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)  # linear warmup over epoch 1
    assert all(a >= b for a, b in zip(values[9:], values[10:]))                   # then non-increasing
    assert values[54] == pytest.approx(0.01 + 0.99 * 0.5, abs=0.02)               # half-way down the cosine
    assert values[-1] == pytest.approx(0.01, abs=1e-3)
    step = load_config(None, [])
    assert [lr_multiplier(step, e * 7, 7) for e in (0, 5, 6, 12, 18)] == pytest.approx(
        [lr_at_epoch(step, e) / step.train.lr for e in (0, 5, 6, 12, 18)])


def test_plateau_rule_stops_training_and_resume_does_not_restart_it(tmp_path):
    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.epochs=10", "train.val_every=1",
                                    "train.plateau_window=3", "train.plateau_min_epochs=2"])
    scores = iter([10.0, 20.0, 30.0, 30.5, 30.2, 30.9, 50.0, 50.0])
    progress = train(cfg, device="cpu", train_dataset=TinyClips(), val_fn=lambda m, c, e: {"Mean": next(scores)})
    assert progress["stopped"] == "plateau" and progress["epoch"] == 5  # 30.0, 30.5, 30.2 agree within 1
    assert [m for _, m in progress["val_history"]] == [10.0, 20.0, 30.0, 30.5, 30.2]
    again = train(cfg, resume=str(tmp_path), device="cpu", train_dataset=TinyClips())
    assert again["epoch"] == 5


def test_losses_are_float32_under_bf16_autocast():
    from tdmi.engine.train import build_train_step

    cfg = load_config(None, TINY + ["train.amp=bf16", "model.mi.formulation=balanced"])
    step = build_train_step(cfg)
    data = TinyClips(n=2)
    batch = [data[0], data[1]]
    terms = step(torch.stack([b["frames"] for b in batch]), torch.stack([b["heatmaps"] for b in batch]),
                 torch.stack([b["target_weight"] for b in batch]))
    assert all(v.dtype == torch.float32 for v in terms.values())
    terms["loss"].backward()


def test_heads_and_mi_terms_under_bf16_autocast_are_computed_in_float32():
    """Under bf16 autocast the backbone, TDE and RDM run in bf16, but the heatmap heads and every loss term are
    float32 computations: each equals the same computation done in float32 on the (upcast) features, exactly.
    With the autocast-off blocks removed the heads and the MI heads would round to bf16 (~1e-3 relative)."""
    from tdmi.engine.train import build_train_step

    cfg = load_config(None, TINY + ["train.amp=bf16", "model.mi.formulation=balanced", "model.rdm.init_std=0.1"])
    step = build_train_step(cfg)
    torch.manual_seed(3)
    with torch.no_grad():  # heads large enough that their outputs and the MI terms are far from 0
        for head in (step.model.head, step.model.backbone.final_layer):
            head.weight.normal_(0.0, 0.2)
    data = TinyClips(n=2)
    frames = torch.stack([data[i]["frames"] for i in range(2)])
    heatmaps = torch.stack([data[i]["heatmaps"] for i in range(2)])
    weight = torch.stack([data[i]["target_weight"] for i in range(2)])
    with torch.no_grad():
        terms = step(frames, heatmaps, weight)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = step.model(frames)
        assert output.fused.dtype == torch.bfloat16  # autocast did reach the body of the model
        assert output.heatmaps.dtype == torch.float32 and output.static_heatmaps.dtype == torch.float32
        assert torch.equal(output.heatmaps, step.model.head(output.fused.float()))
        assert output.heatmaps.abs().max() > 1e-3
        upcast = output._replace(**{k: v.float() for k, v in output._asdict().items()
                                    if isinstance(v, torch.Tensor) and v.is_floating_point()})
        expected = step.mi_objective(upcast, heatmaps.float(), weight.float())
    mi_names = [name for name in expected if name != "total"]
    assert mi_names and any(expected[name].abs() > 1e-6 for name in mi_names)
    for name in mi_names:
        assert torch.equal(terms[name], expected[name]), name


def test_mi_diagnostics_report_gradients_and_gate_statistics(tmp_path):
    import json

    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.epochs=1", "train.mi_diagnostics_every=1",
                                    "model.mi.formulation=balanced", "model.rdm.init_std=0.1"])
    train(cfg, device="cpu", train_dataset=TinyClips())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    diag = [r for r in records if r["kind"] == "mi_diag"]
    assert len(diag) == 3  # one per optimizer step
    first = diag[0]
    for group in ("tde", "useful_gate", "noisy_gate"):
        assert first[f"{group}.heatmap.norm"] >= 0
        for term in ("mi_useful_noisy", "mi_motion_useful", "mi_useful_label", "mi_visual_label"):
            assert -1.0 - 1e-6 <= first[f"{group}.{term}.cos"] <= 1.0 + 1e-6
    assert first["tde.heatmap.norm"] > 0 and first["noisy_gate.mi_useful_noisy.norm"] > 0
    assert 0.0 <= first["useful_gate.saturated"] <= 1.0 and first["useful_gate.per_sample_std"] >= 0
    # the diagnostic forward leaves the BatchNorm statistics as the training step left them
    from tdmi.engine.mi_diagnostics import mi_diagnostics
    from tdmi.engine.train import build_train_step

    step = build_train_step(cfg).train()
    data = TinyClips(n=2)
    batch = [data[0], data[1]]
    before = {k: v.clone() for k, v in step.model.named_buffers()}
    mi_diagnostics(step, torch.stack([b["frames"] for b in batch]), torch.stack([b["heatmaps"] for b in batch]),
                   torch.stack([b["target_weight"] for b in batch]))
    assert all(torch.equal(before[k], v) for k, v in step.model.named_buffers())


def test_resume_refuses_another_world_size(tmp_path):
    from tdmi.errors import CheckpointError

    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.epochs=2", "train.max_steps=1"])
    train(cfg, device="cpu", train_dataset=TinyClips())
    state_path = tmp_path / "last.state.pt"
    state = torch.load(state_path, weights_only=True)
    assert state["progress"]["world_size"] == 1
    state["progress"]["world_size"] = 4
    torch.save(state, state_path)
    with pytest.raises(CheckpointError, match="4 process"):
        train(cfg, resume=str(tmp_path), device="cpu", train_dataset=TinyClips())


def test_cuda_rng_states_restore_on_fewer_gpus(monkeypatch):
    """Old states hold one CUDA RNG state per GPU the run saw; a resume on fewer GPUs takes its own device's or the
    last one instead of indexing past the list, and a new single state is restored as it is (CUDA stood in for)."""
    from tdmi.engine.train import _rng_state, _set_rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state: restored.append(int(state[0])))
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(3)]
    for device, expected in ((0, 0), (1, 1), (5, 2)):  # device 5 of a resume that sees more GPUs than were saved
        monkeypatch.setattr(torch.cuda, "current_device", lambda device=device: device)
        rng = _rng_state()
        rng["cuda"] = states
        _set_rng_state(rng)
        assert restored[-1] == expected
    rng["cuda"] = torch.full((16,), 7, dtype=torch.uint8)
    _set_rng_state(rng)
    assert restored[-1] == 7
    rng["cuda"] = []  # nothing to restore
    _set_rng_state(rng)
    assert len(restored) == 4


class TinyUint8Clips(TinyClips):
    """TinyClips with uint8 frames, given as they are (normalised by the train step) or normalised here."""

    def __init__(self, normalised_here: bool):
        super().__init__()
        self.normalised_here = normalised_here

    def __getitem__(self, i: int) -> dict:
        from tdmi.data.transforms import normalize_frames

        sample = super().__getitem__(i)
        g = torch.Generator().manual_seed(77 + i)
        frames = torch.randint(0, 256, (self.frames, 3, 64, 32), generator=g, dtype=torch.uint8)
        sample["frames"] = normalize_frames(frames) if self.normalised_here else frames
        return sample


def test_uint8_frames_train_to_the_same_weights_as_normalised_ones(tmp_path):
    runs = {}
    for normalised_here in (True, False):
        out = tmp_path / str(normalised_here)
        cfg = load_config(None, TINY + [f"train.out_dir={out}", "train.epochs=1"])
        train(cfg, device="cpu", train_dataset=TinyUint8Clips(normalised_here))
        runs[normalised_here] = _weights(out)
    for key, value in runs[True].items():
        assert torch.equal(value, runs[False][key]), key


def test_train_compile_option_compiles_the_step_and_keeps_checkpoint_names(tmp_path, monkeypatch):
    import tdmi.engine.train as train_module

    calls, graphs = [], []
    real_compile = torch.compile

    def count_graphs(graph_module, example_inputs):  # dynamo's graphs, run as traced (no inductor build)
        graphs.append(graph_module)
        return graph_module.forward

    def quick_compile(module, **kwargs):  # inductor takes minutes on a CPU; dynamo alone traces the same
        calls.append(type(module).__name__)
        return real_compile(module, backend=count_graphs)

    monkeypatch.setattr(train_module.torch, "compile", quick_compile)
    runs = {}
    for compiled in (False, True):
        out = tmp_path / str(compiled)
        cfg = load_config(None, TINY + [f"train.out_dir={out}", "train.epochs=1", "train.max_steps=2",
                                        f"train.compile={str(compiled).lower()}"])
        progress = train(cfg, device="cpu", train_dataset=TinyClips())
        assert progress["step"] == 2
        runs[compiled] = _weights(out)
    torch._dynamo.reset()
    assert calls == ["TrainStep"]
    assert len(graphs) == 1, f"{len(graphs)} graphs: the training step has graph breaks (or recompiled)"
    assert runs[True].keys() == runs[False].keys()
    assert all(torch.isfinite(v).all() for v in runs[True].values())


def test_process_group_gets_the_configured_timeout(monkeypatch):
    """Ranks wait in barriers while rank 0 validates and writes checkpoints: the collective timeout is the config's
    (default 120 min), not NCCL's 10-minute watchdog."""
    from datetime import timedelta

    from tdmi.engine import train as train_module

    calls = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(train_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(train_module.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    info, device = train_module.setup_distributed("cpu", timeout_minutes=45)
    assert info.enabled and device.type == "cpu"
    assert calls == [{"backend": "gloo", "timeout": timedelta(minutes=45)}]
    assert load_config(None, TINY).train.dist_timeout_minutes == 120
