"""``tdmi export`` (tdmi.inference.export): the export-friendly DCN equals the training one, and the two ONNX graphs
match PyTorch in onnxruntime (skipped when onnx/onnxruntime are not installed)."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline_helpers import one_torch_thread, tiny_model  # noqa: F401 (one_torch_thread: autouse fixture)
from tdmi.cli import main
from tdmi.inference.export import OPSET, export_onnx, exportable_copy, functional_deform_conv2d
from tdmi.models.deform_conv import deform_conv2d, use_backend


@pytest.mark.parametrize("groups, offset_groups, stride, padding, dilation, size, with_mask", [
    (1, 4, 1, 3, 3, (9, 11), True),    # the TDE's layout: 12 offset groups at W48, dilation 3 (here 4 groups)
    (2, 2, 2, 1, 1, (7, 6), True),     # conv groups and stride
    (1, 1, 1, 1, 1, (1, 5), False),    # size-1 axis (padded) and DCNv1 (no mask)
])
def test_functional_deform_conv_equals_the_training_implementation(groups, offset_groups, stride, padding, dilation,
                                                                   size, with_mask):
    generator = torch.Generator().manual_seed(0)
    cin, cout, k = 8, 6, 3
    x = torch.randn(2, cin, *size, generator=generator)
    weight = torch.randn(cout, cin // groups, k, k, generator=generator)
    bias = torch.randn(cout, generator=generator)
    out_h = (size[0] + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    out_w = (size[1] + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    offset = 2.0 * torch.randn(2, 2 * offset_groups * k * k, out_h, out_w, generator=generator)
    mask = torch.rand(2, offset_groups * k * k, out_h, out_w, generator=generator) if with_mask else None
    with use_backend("torch"):
        expected = deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    actual = functional_deform_conv2d(x, offset, weight, bias, (stride, stride), (padding, padding),
                                      (dilation, dilation), mask)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_exportable_copy_predicts_what_the_model_predicts():
    model, cfg = tiny_model(delta=1)
    clip = torch.randn(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), use_backend("torch"):
        expected = model(clip).heatmaps
        actual = exportable_copy(model)(clip).heatmaps
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_onnx_graphs_match_pytorch_with_other_batch_sizes(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model, cfg = tiny_model(delta=1)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    report = export_onnx(model, (64, 64), 3, tmp_path)
    assert not model.training
    assert all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())
    assert report["verified_with_onnxruntime"]
    assert max(report["relative_errors"].values()) <= report["tolerance"]
    assert set(report["relative_errors"]) == {"encoder.s1", "encoder.s2", "encoder.s3", "encoder.s4",
                                              "decoder.heatmaps"}
    decoder = onnx.load(str(tmp_path / "decoder.onnx"))
    assert any(op.domain in ("", "ai.onnx") and op.version >= 16 for op in decoder.opset_import)
    assert "GridSample" in {node.op_type for node in decoder.graph.node}
    first_input = decoder.graph.input[0].type.tensor_type.shape.dim
    assert first_input[0].dim_param == "b" and first_input[1].dim_value == 3
    assert json.loads((tmp_path / "export.json").read_text())["opset"] == OPSET


def test_export_cli_with_a_checkpoint(tmp_path, capsys):
    pytest.importorskip("onnx")
    from tdmi.config import to_dict
    from tdmi.models.checkpoints import checkpoint_metadata, save_checkpoint

    model, cfg = tiny_model(delta=1)
    meta = checkpoint_metadata(to_dict(cfg), joint_set="posetrack17", input_size=cfg.model.input_size,
                               heatmap_size=cfg.model.heatmap_size, delta=1)
    path = save_checkpoint(tmp_path / "tiny", model.state_dict(), meta)
    assert main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("export: 2 ONNX graphs") and "RANDOM" not in last
    assert (tmp_path / "onnx" / "encoder.onnx").stat().st_size > 0


def test_export_without_onnx_names_the_extra_to_install(monkeypatch, tmp_path, capsys):
    import importlib.util

    from tdmi.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["export", "--out", str(tmp_path / "onnx")]) == 2
    assert "pip install 'tdmi[onnx]'" in capsys.readouterr().err
