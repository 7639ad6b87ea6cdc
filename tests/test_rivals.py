"""The comparison methods (tdmi.models.rivals, issue 24): DCPose and FAMI-Pose as first-class models."""

from __future__ import annotations

import pytest
import torch

from tdmi.config import ConfigError, load_config
from tdmi.models.blocks import count_parameters
from tdmi.models.rivals.dcpose import DILATIONS, DCPose, PoseCorrection, ResidualStepsBlock, rsb_chain
from tdmi.models.rivals.fami_pose import FAMI_TERMS, FAMIObjective, FAMIPose, GlobalTranslation, translate
from tdmi.models.tdmi import build_model

SMALL = ["model.backbone.width=4", "model.input_size=[64,64]", "model.heatmap_size=[16,16]"]
TINY = ["model.arch=dcpose", "model.delta=1", *SMALL]
TINY_FAMI = ["model.arch=fami_pose", "model.delta=2", *SMALL]
FRAMES = {"dcpose": 3, "fami_pose": 5}


def tiny_dcpose(seed: int = 0) -> DCPose:
    torch.manual_seed(seed)
    return build_model(load_config(None, TINY).model)


def tiny_fami(seed: int = 0) -> FAMIPose:
    torch.manual_seed(seed)
    return build_model(load_config(None, TINY_FAMI).model)


def tiny_rival(arch: str, seed: int = 0):
    return tiny_dcpose(seed) if arch == "dcpose" else tiny_fami(seed)


@pytest.mark.parametrize("arch", ["dcpose", "fami_pose"])
def test_shapes_gradients_and_the_frozen_backbone(arch):
    model = tiny_rival(arch).train()
    frames = FRAMES[arch]
    out = model(torch.randn(2, frames, 3, 64, 64))
    assert out.heatmaps.shape == out.static_heatmaps.shape == (2, 17, 16, 16)
    out.heatmaps.pow(2).sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(not n.startswith("backbone.") for n, _ in trainable)
    assert all(p.grad is not None for _, p in trainable)
    wrong = 8 - frames  # 5 for DCPose, 3 for FAMI-Pose
    with pytest.raises(ValueError, match=f"T = 2\\*delta \\+ 1 = {frames}"):
        model(torch.randn(1, wrong, 3, 64, 64))


def test_delta_other_than_one_is_refused():
    with pytest.raises(ConfigError, match="delta 1"):
        build_model(load_config(None, TINY + ["model.delta=2"]).model)


def test_residual_steps_block_wiring_and_widths():
    block = ResidualStepsBlock(68, 34, project=True)
    assert block.branch == 68 * 26 // 64 == 27
    assert [len(chain) for chain in block.steps] == [1, 2, 3, 4]  # branch k takes k steps
    assert block(torch.randn(2, 68, 8, 8)).shape == (2, 34, 8, 8)
    with pytest.raises(ValueError, match="keeps the width"):
        ResidualStepsBlock(34, 17, project=False)
    chain = rsb_chain(51, 64, 2)
    assert chain[0].shortcut is not None and chain[1].shortcut is None


def test_pcn_with_identity_weights_zero_offsets_and_unit_masks_returns_the_ptm_output():
    """Issue 24's check of DCPose's initialisation: identity weights give back the PTM heatmaps only with a mask of
    1; DCPose's raw masks are predicted near 0 at step 0, so its output then starts near 0."""
    pcn = PoseCorrection(17, 64)
    pcn.identity_init_()
    for conv in pcn.offsets:
        torch.nn.init.zeros_(conv.weight)
    for conv in pcn.masks:  # a constant mask of 1: zero weights cannot give it, so feed a feature that does
        torch.nn.init.zeros_(conv.weight)
    ptm, combined = torch.rand(2, 17, 12, 10), torch.randn(2, 64, 12, 10)
    assert pcn(ptm, combined).abs().max() == 0  # mask 0: nothing passes
    ones = [lambda c, n=m.out_channels: torch.ones(c.shape[0], n, *c.shape[2:]) for m in pcn.masks]
    warped = [warp(ptm, offset(combined), mask(combined)) for offset, mask, warp in zip(pcn.offsets, ones, pcn.warps)]
    torch.testing.assert_close(torch.stack(warped).mean(0), ptm, rtol=0, atol=1e-6)
    model = tiny_dcpose().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 3, 64, 64))
    assert out.heatmaps.abs().max() < 1e-6  # DCPose at step 0


def test_the_frame_weights_and_interleaving_follow_the_code():
    """Per joint j, the PRF input is [dA_j, dA_j w_p, dB_j, dB_j w_n] and the PTM input [H_c, H_p w_p, H_n w_n]."""
    model = tiny_dcpose().eval()
    seen = {}

    def keep(name):
        def hook(module, inputs, output):  # returns None: the output stays as it was
            seen[name] = inputs[0]
        return hook

    model.residual.register_forward_hook(keep("prf"))
    model.merge.register_forward_hook(keep("ptm"))
    with torch.no_grad():
        features = model.encode(torch.randn(3, 3, 64, 64))
        clip = type(features)(*(f.unsqueeze(0) for f in features))
        model.decode(clip)
        rough = model.rough_heatmaps(clip[-1])[0]
    previous, key, following = rough
    j = 5
    torch.testing.assert_close(seen["prf"][0, 4 * j], key[j] - previous[j])
    torch.testing.assert_close(seen["prf"][0, 4 * j + 1], 0.5 * (key[j] - previous[j]))
    torch.testing.assert_close(seen["prf"][0, 4 * j + 3], 0.5 * (key[j] - following[j]))
    torch.testing.assert_close(seen["ptm"][0, 3 * j], key[j])
    torch.testing.assert_close(seen["ptm"][0, 3 * j + 2], 0.5 * following[j])


@pytest.mark.parametrize("arch", ["dcpose", "fami_pose"])
@pytest.mark.parametrize("seed", [0, 1])
def test_each_rival_overfits_a_tiny_batch(arch, seed):
    """Every trainable part can learn, whatever the seed. DCPose's own init (N(0, 0.001) everywhere, raw masks)
    starts at a saddle where the output and its gradients are ~0 until the rough heatmaps carry signal, so its masks
    start larger here."""
    from tdmi.models.losses import JointsMSELoss

    model = tiny_rival(arch, seed).train()
    if arch == "dcpose":
        for conv in model.correction.masks:
            torch.nn.init.normal_(conv.weight, std=0.05)
    frames_per_clip = FRAMES[arch]
    frames = torch.randn(2, frames_per_clip, 3, 64, 64)
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    target = torch.exp(-((xs - 8) ** 2 + (ys - 8) ** 2) / 8).expand(2, 17, 16, 16).clone()  # a sigma-2 peak
    weight = torch.ones(2, 17)
    loss_fn = JointsMSELoss(factor=1.0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with torch.no_grad():
        features = model.encode(frames.flatten(0, 1))
    clip = type(features)(*(f.unflatten(0, (2, frames_per_clip)) for f in features))
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(model.decode(clip).heatmaps, target, weight)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # measured over seeds 0-3: DCPose 0.03-0.05 of the first loss after 20 steps, FAMI-Pose 0.07-0.14
    assert losses[-1] < 0.3 * losses[0], losses


def save_tiny_rival(arch: str, folder, seed: int = 3):
    """A tiny rival whose new layers are perturbed off their init (so a wrong load shows), saved as a checkpoint."""
    from tdmi.config import to_dict
    from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint

    cfg = load_config(None, TINY if arch == "dcpose" else TINY_FAMI)
    model = tiny_rival(arch, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("backbone."):
                p.add_(0.05 * torch.randn_like(p))
    meta = checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                               heatmap_size=cfg.model.heatmap_size, delta=cfg.model.delta)
    return model.eval(), save_checkpoint(folder / arch, model.state_dict(), meta)


@pytest.mark.parametrize("arch, cls", [("dcpose", DCPose), ("fami_pose", FAMIPose)])
def test_checkpoint_round_trip(tmp_path, arch, cls):
    from tdmi.engine.test import load_model_for_test
    from tdmi.models.checkpoints import load_checkpoint

    model, path = save_tiny_rival(arch, tmp_path)
    loaded = load_model_for_test(path, device="cpu")
    assert isinstance(loaded.model, cls)
    assert load_checkpoint(path)[1]["config"]["model"]["arch"] == arch  # the checkpoint carries its arch
    frames = torch.randn(1, FRAMES[arch], 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(frames).heatmaps, model(frames).heatmaps)
    assert count_parameters(loaded.model, trainable_only=True) == count_parameters(model, trainable_only=True)
    if arch == "dcpose":
        assert len(DILATIONS) == len(loaded.model.correction.warps) == 5


@pytest.mark.parametrize("arch", ["dcpose", "fami_pose"])
def test_onnx_export_matches_pytorch(tmp_path, arch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tdmi.inference.export import export_onnx

    model, _ = save_tiny_rival(arch, tmp_path)
    report = export_onnx(model, (64, 64), FRAMES[arch], tmp_path / "onnx")
    assert report["verified_with_onnxruntime"]
    assert report["relative_errors"]["decoder.heatmaps"] <= report["tolerance"]
    assert list(report["decoder"]["inputs"]) == ["s4"]  # the rivals read the last stage only


@pytest.mark.parametrize("arch", ["dcpose", "fami_pose"])
@pytest.mark.parametrize("mode", ["tube", "warp", "exact"])
def test_infer_runs_a_rival_checkpoint(tmp_path, arch, mode, capsys):
    import json

    import cv2
    import numpy as np

    from tdmi.cli import main

    _, path = save_tiny_rival(arch, tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    boxes = []
    for t in range(6):
        cv2.imwrite(str(frames / f"{t:06d}.jpg"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
        boxes.append({"image_id": t, "bbox": [30 + 2 * t, 10, 40, 70], "score": 0.9})
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / f"out_{mode}"
    assert main(["infer", str(frames), "--checkpoint", str(path), "--boxes", str(tmp_path / "boxes.json"),
                 "--out", str(out), "--mode", mode, "--device", "cpu"]) == 0
    assert arch in capsys.readouterr().out
    written = json.loads(next(out.glob("*.json")).read_text())
    assert len(written["annotations"]) == 6
    assert all(len(a["keypoints"]) == 17 * 3 for a in written["annotations"])


def test_fami_loss_terms_and_their_weights():
    model = tiny_fami().train()
    out = model(torch.randn(2, 5, 3, 64, 64))
    assert out.motion.shape == out.visual.shape == out.fused.shape == (2, 4, 16, 16)
    objective = FAMIObjective(label_probe=model.backbone.final_layer)
    terms = objective(out, torch.rand(2, 17, 16, 16), torch.ones(2, 17))
    assert [name for name, *_ in FAMI_TERMS] == [k for k in terms if k != "total"]
    # kl6 repeats kl2's estimate (the code's I(z_t; z~) twice, with weights +0.1 and -1)
    torch.testing.assert_close(terms["kl2_key_fused"], terms["kl6_key_fused"])
    expected = 0.5 * sum(c * terms[name] for name, _, _, _, c in FAMI_TERMS)
    torch.testing.assert_close(terms["total"], expected)
    terms["total"].backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_fami_terms_reach_only_their_student_side():
    """The teacher side of every term is detached, as the code's ``.detach()``: the label terms move the heatmaps
    only, the feature terms z~ only (checked on independent leaf tensors, so no path runs through the model)."""
    from tdmi.models.tdmi import TDMIOutput

    model = tiny_fami()
    leaves = {name: torch.randn(2, 4, 16, 16, requires_grad=True) for name in ("visual", "motion", "fused")}
    leaves["heatmaps"] = torch.randn(2, 17, 16, 16, requires_grad=True)
    output = TDMIOutput(useful=None, noisy=None, static_heatmaps=leaves["heatmaps"].detach(), **leaves)
    terms = FAMIObjective(label_probe=model.backbone.final_layer)(output, torch.rand(2, 17, 16, 16),
                                                                  torch.ones(2, 17))
    for name, teacher, student, kind, _ in FAMI_TERMS:
        grads = dict(zip(leaves, torch.autograd.grad(terms[name], list(leaves.values()), allow_unused=True,
                                                     retain_graph=True)))
        assert grads[student] is not None and grads[student].abs().sum() > 0, name
        assert all(g is None for key, g in grads.items() if key != student), name


def test_fami_global_alignment_with_zero_translation_is_the_identity():
    features = torch.randn(3, 8, 12, 10)
    torch.testing.assert_close(translate(features, torch.zeros(3, 2)), features, rtol=0, atol=1e-5)
    shifted = translate(features, torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    torch.testing.assert_close(shifted[0, :, :, 1:], features[0, :, :, :-1], rtol=0, atol=1e-5)  # right by 1
    torch.testing.assert_close(shifted[1, :, 2:], features[1, :, :-2], rtol=0, atol=1e-5)  # down by 2
    torch.testing.assert_close(shifted[2, :, :-1, :-1], features[2, :, 1:, 1:], rtol=0, atol=1e-5)
    assert shifted[0, :, :, 0].abs().max() < 1e-6  # zeros come in from outside (to float rounding)
    half = translate(features, torch.tensor([[0.5, 0.0]] * 3))
    torch.testing.assert_close(half[:, :, :, 1:], 0.5 * (features[:, :, :, 1:] + features[:, :, :, :-1]),
                               rtol=0, atol=1e-5)
    # a model whose translation network outputs zero aligns nothing: the aggregated feature is the supports' own
    model = tiny_fami().eval()
    for layer in model.global_alignment.regress:
        torch.nn.init.zeros_(layer.weight)
    s4 = torch.randn(1, 5, 4, 16, 16)
    with torch.no_grad():
        _, aggregated = model.align_supports(s4)
        unshifted = model.support_aggregation(torch.cat([s4[:, i] for i in (0, 1, 3, 4)], dim=1))
    torch.testing.assert_close(aggregated, unshifted, rtol=0, atol=1e-5)


def test_fami_translation_in_bf16_samples_in_float32():
    features = torch.randn(2, 8, 96, 72).bfloat16()
    shifted = translate(features, torch.zeros(2, 2))
    assert shifted.dtype == torch.bfloat16
    torch.testing.assert_close(shifted, features, rtol=0, atol=0.02)  # a bf16 grid was off by up to 2.2 here


def test_fami_refuses_a_last_batch_of_one_clip_before_training():
    model = build_model(load_config(None, TINY_FAMI + ["model.input_size=[96,128]",
                                                       "model.heatmap_size=[24,32]"]).model)
    assert model.global_alignment.final_hw == (1, 1)
    with pytest.raises(ConfigError, match="train.batch_size=4: the 9 training clips per process leave a last batch"):
        model.check_batches(9, 4)
    model.check_batches(10, 4)  # a last batch of two is fine
    paper_size = build_model(load_config(None, TINY_FAMI + ["model.input_size=[288,384]",
                                                            "model.heatmap_size=[72,96]"]).model)
    assert paper_size.global_alignment.final_hw == (3, 3)
    paper_size.check_batches(9, 4)  # 96x72 ends at 3x3: any batch trains


def test_fami_translation_network_sizes_follow_the_feature():
    assert GlobalTranslation(48, (96, 72)).regress[0].in_features == 16 * 3 * 3  # the code's 144 at W48
    small = GlobalTranslation(8, (32, 24))
    assert small.regress[0].in_features == 16 and small.final_hw == (1, 1)
    with pytest.raises(ValueError, match="batch of one clip"):  # BatchNorm over a single value, said plainly
        small.train()(torch.randn(1, 8, 32, 24))
    assert small.eval()(torch.randn(1, 8, 32, 24)).shape == (1, 2)
    with pytest.raises(ConfigError, match="multiple of 4"):
        build_model(load_config(None, TINY_FAMI + ["model.backbone.width=6"]).model)


def test_fami_objective_is_what_training_uses_and_switches_off():
    from tdmi.engine.train import build_train_step

    on = build_train_step(load_config(None, TINY_FAMI))
    assert isinstance(on.mi_objective, FAMIObjective)
    assert build_train_step(load_config(None, TINY_FAMI + ["model.mi.enabled=false"])).mi_objective is None
    assert build_train_step(load_config(None, TINY)).mi_objective is None  # DCPose: the heatmap loss only


@pytest.fixture(scope="module")
def tiny_synthtrack(tmp_path_factory):
    from tdmi.data.synthetic import generate_synthtrack

    root = tmp_path_factory.mktemp("rivals") / "data"
    generate_synthtrack(root, sequences=1, frames=8, seed=4, size=(128, 96), split="train", progress=False)
    generate_synthtrack(root, sequences=1, frames=8, seed=5, size=(128, 96), split="val", progress=False)
    return root


@pytest.mark.parametrize("arch", ["dcpose", "fami_pose"])
def test_train_and_test_a_rival_from_its_config(tmp_path, tiny_synthtrack, arch, capsys):
    """``tdmi train --config bench_<arch>_w8`` and ``tdmi test`` run a rival like TDMI (tiny sizes, one epoch)."""
    import json

    from tdmi.cli import main

    run = tmp_path / "run"
    sizes = ["model.backbone.width=4", "model.backbone.pretrained=null", "model.input_size=[32,64]",
             "model.heatmap_size=[8,16]", f"data.root={tiny_synthtrack}", "train.feature_cache=null",
             "train.epochs=1", "train.batch_size=64", "train.amp=none", "train.channels_last=false"]
    args = ["train", "--config", f"bench_{arch}_w8", "--out", str(run), "--device", "cpu"]
    assert main([*args, *(x for s in sizes for x in ("--set", s))]) == 0
    assert main(["test", "--checkpoint", str(run / "last.safetensors"), "--boxes", "gt", "--out",
                 str(tmp_path / "test"), "--set", "data.workers=0"]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert f"test: {arch} from" in printed and "GT boxes, flip test off, argmax decoding" in printed
    assert 0 <= json.loads((tmp_path / "test" / "results.json").read_text())["Mean"] <= 100
