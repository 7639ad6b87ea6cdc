"""scripts/benchmark_result.py: one finished benchmark run -> its committed result file (val, subsets, counterfactual
sets, test-time substitutions, costs, epochs from the run's own step counter)."""

from __future__ import annotations

import json

import torch

from tdmi.cli import main
from tdmi.data.synthetic import generate_synthtrack
from tdmi.data.synthetic.writer import generate_counterfactual
from tdmi.models.checkpoints import save_checkpoint
from tdmi.models.hrnet import HRNet
from script_helpers import load_script

TINY = ["model.backbone.width=4", "model.input_size=[32,64]", "model.heatmap_size=[8,16]",
        "model.tde.channels=8", "model.tde.deform_groups=4", "model.tde.blocks_per_stage=[1,1,1,1]",
        "model.fusion_blocks=1", "data.sigma=1.0", "train.batch_size=3", "train.epochs=2", "train.amp=none",
        "train.channels_last=false", "train.feature_cache_draws=1", "test.batch_size=16"]


def _script():
    return load_script("benchmark_result")


def test_a_tiny_run_becomes_a_complete_result_file(tmp_path, capsys):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    generate_synthtrack(data, sequences=1, frames=6, seed=5, size=(128, 96), split="train", progress=False)
    generate_synthtrack(data, sequences=2, frames=6, seed=6, size=(128, 96), split="val", progress=False)
    generate_counterfactual(data, sequences=2, frames=6, seed=7, size=(128, 96), progress=False)
    torch.manual_seed(0)
    backbone = save_checkpoint(tmp_path / "backbone.safetensors", HRNet(width=4, num_joints=17).state_dict(),
                               {"config": {}})
    run = tmp_path / "run"
    settings = [*TINY, f"data.root={data}", f"model.backbone.pretrained={backbone}",
                f"train.feature_cache={tmp_path / 'cache'}"]
    assert main(["train", "--config", "bench_tdmi_w8", "--out", str(run), "--device", "cpu",
                 *(x for s in settings for x in ("--set", s))]) == 0
    (run / "cpu_time.txt").write_text("10.5 1.5\n3.0 0.0\n")  # two invocations (a resumed run), as the runner writes
    out = tmp_path / "result" / "seed0.json"
    assert _script().main([str(run), "--arm", "tdmi", "--seed", "0", "--data", str(data), "--substitutions",
                           "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["arm"] == "tdmi" and record["seed"] == 0 and record["config"]["model"]["backbone"]["width"] == 4
    samples = json.loads((tmp_path / "cache" / "manifest.json").read_text())["num_samples"]
    assert samples % 3  # the last batch of each epoch is partial ...
    assert record["epochs_from_steps"] == 2.0  # ... and still the run's steps are two whole epochs
    # the trainer's own CPU count (summed over resumes), not the runner's file, which misses killed invocations
    assert record["train_cpu_source"] == "trainer" and record["trainable_parameters"] > 0
    assert record["train_cpu_seconds"] == record["training"]["cpu_seconds"] > 0
    assert set(record["counterfactual"]) == {"clean", "distractor", "background"}
    assert set(record["substitutions"]) == {"key_frame", "other_sequence"}
    assert set(record["val"]["subsets"]) >= {"none"} and "stats" in record["val"]
    assert f"val Mean {record['val']['table']['Mean']:.2f}" in capsys.readouterr().out


def test_code_commit_skips_result_only_commits_and_sees_uncommitted_code(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "model.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-q", "-m", "code")
    code = git("rev-parse", "HEAD")
    (tmp_path / "docs" / "results" / "runs").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "runs" / "seed0.json").write_text("{}")
    git("add", "-A")
    git("commit", "-q", "-m", "result")
    assert git("rev-parse", "HEAD") != code
    assert _script().code_commit(tmp_path) == (code, False)
    (tmp_path / "model.py").write_text("x = 2\n")
    assert _script().code_commit(tmp_path) == (code, True)


def test_code_commit_outside_a_checkout_is_unknown(tmp_path):
    assert _script().code_commit(tmp_path) == ("", None)
