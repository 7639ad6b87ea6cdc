"""Tests for the DCNv2 op (tdmi.models.deform_conv) against an independent, direct implementation of the rule in
docs/facts/model-facts.md (c), F.conv2d, gradcheck and (when it works) torchvision."""

from __future__ import annotations

import itertools
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tdmi.models import deform_conv
from tdmi.models.deform_conv import ModulatedDeformConv2d, deform_conv2d


@pytest.fixture(autouse=True)
def pure_torch_backend():
    """Every test runs the pure-PyTorch path unless it switches explicitly; the global choice is restored."""
    with deform_conv.use_backend("torch"):
        yield


# ---------------------------------------------------------------------------------------------------------------
# Reference: the kernels' rule, one sample at a time (float64, loops)


def bilinear_zero_border(image: np.ndarray, y: float, x: float) -> float:
    """DCN kernels' sampling: 0 outside (-1, H) x (-1, W); otherwise in-image neighbours of the 4 corners."""
    height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    value = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wy * wx * image[yy, xx]
    return value


def reference_deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask):
    x, off, w = input.double().numpy(), offset.double().numpy(), weight.double().numpy()
    m = None if mask is None else mask.double().numpy()
    B, Cin, H, W = x.shape
    Cout, Cin_g, kh, kw = w.shape
    K, groups = kh * kw, Cin // Cin_g
    G = off.shape[1] // (2 * K)
    Ho, Wo = off.shape[2:]
    out = np.zeros((B, Cout, Ho, Wo))
    for b, c, yo, xo in itertools.product(range(B), range(Cin), range(Ho), range(Wo)):
        g = c // (Cin // G)  # offset group of this input channel
        conv_group = c // Cin_g
        for i, j in itertools.product(range(kh), range(kw)):
            k = i * kw + j
            y = yo * stride - padding + i * dilation + off[b, g * 2 * K + 2 * k, yo, xo]
            x_ = xo * stride - padding + j * dilation + off[b, g * 2 * K + 2 * k + 1, yo, xo]
            value = bilinear_zero_border(x[b, c], y, x_)
            if m is not None:
                value *= m[b, g * K + k, yo, xo]
            outs = range(conv_group * (Cout // groups), (conv_group + 1) * (Cout // groups))
            for o in outs:
                out[b, o, yo, xo] += w[o, c - conv_group * Cin_g, i, j] * value
    if bias is not None:
        out += bias.double().numpy()[None, :, None, None]
    return torch.from_numpy(out)


def make_case(B=2, Cin=4, Cout=4, H=5, W=6, k=3, stride=1, padding=1, dilation=1, G=1, groups=1, mask=True,
              bias=True, offset_range=3.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ho = (H + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    Wo = (W + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    x = torch.randn(B, Cin, H, W, generator=g, dtype=dtype)
    offset = (torch.rand(B, 2 * G * k * k, Ho, Wo, generator=g, dtype=dtype) * 2 - 1) * offset_range
    m = torch.rand(B, G * k * k, Ho, Wo, generator=g, dtype=dtype) if mask else None
    w = torch.randn(Cout, Cin // groups, k, k, generator=g, dtype=dtype)
    b = torch.randn(Cout, generator=g, dtype=dtype) if bias else None
    return dict(input=x, offset=offset, weight=w, bias=b, stride=stride, padding=padding, dilation=dilation, mask=m)


def sample_rows(case) -> torch.Tensor:
    """All sample y coordinates of a case (for checking that the band cases are covered)."""
    off, w = case["offset"], case["weight"]
    kh, kw = w.shape[-2:]
    K = kh * kw
    Ho = off.shape[2]
    dy = off.view(off.shape[0], -1, K, 2, *off.shape[2:])[:, :, :, 0]  # [B, G, K, Ho, Wo]
    base = (torch.arange(Ho, dtype=off.dtype)[:, None] * case["stride"] - case["padding"]
            + (torch.arange(K) // kw).to(off.dtype)[:, None, None] * case["dilation"])  # [K, Ho, 1]
    return base + dy


# ---------------------------------------------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("stride,dilation,G,groups", [(1, 1, 1, 1), (2, 1, 2, 1), (1, 3, 4, 1), (2, 3, 2, 2),
                                                      (1, 1, 4, 2), (2, 3, 1, 2)])
@pytest.mark.parametrize("mask,bias", [(True, True), (False, False), (True, False)])
def test_matches_reference_rule(stride, dilation, G, groups, mask, bias):
    case = make_case(H=6, W=7, stride=stride, padding=dilation, dilation=dilation, G=G, groups=groups, mask=mask,
                     bias=bias, seed=stride * 100 + dilation * 10 + G + groups)
    rows = sample_rows(case)
    assert ((rows > -1) & (rows < 0)).any(), "case must cover the partial-corner band -1 < y < 0"
    assert (rows <= -1).any() and (rows >= case["input"].shape[2]).any(), "case must sample outside the image"
    expected = reference_deform_conv2d(**case)
    torch.testing.assert_close(deform_conv2d(**case), expected, rtol=1e-10, atol=1e-10)


def test_matches_reference_float32_and_non_square_shapes():
    case = make_case(B=1, Cin=6, Cout=3, H=4, W=9, G=3, padding=2, dilation=2, dtype=torch.float32, seed=7)
    expected = reference_deform_conv2d(**case).float()
    torch.testing.assert_close(deform_conv2d(**case), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("H,W", [(1, 5), (4, 1), (1, 1)])
def test_single_row_or_column_inputs(H, W):
    """grid_sample's normalisation is undefined for size 1; the op must still follow the kernels' rule."""
    case = make_case(B=1, Cin=2, Cout=2, H=H, W=W, G=2, offset_range=1.5, seed=H * 10 + W)
    torch.testing.assert_close(deform_conv2d(**case), reference_deform_conv2d(**case), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 3, 3, 2), (1, 0, 2, 4)])
def test_zero_offsets_and_unit_mask_equal_conv2d(stride, padding, dilation, groups):
    case = make_case(B=2, Cin=8, Cout=4, H=9, W=8, stride=stride, padding=padding, dilation=dilation, G=2,
                     groups=groups, seed=3)
    case["offset"] = torch.zeros_like(case["offset"])
    case["mask"] = torch.ones_like(case["mask"])
    expected = F.conv2d(case["input"], case["weight"], case["bias"], stride, padding, dilation, groups)
    torch.testing.assert_close(deform_conv2d(**case), expected, rtol=1e-12, atol=1e-12)
    case["mask"] = None
    torch.testing.assert_close(deform_conv2d(**case), expected, rtol=1e-12, atol=1e-12)


def test_chunked_batches_match_one_chunk(monkeypatch):
    case = make_case(B=5, Cin=4, Cout=4, H=5, W=6, G=2, groups=2, seed=11)
    leaves = ["input", "offset", "weight", "bias", "mask"]

    def run():
        inputs = {k: (v.clone().requires_grad_() if k in leaves else v) for k, v in case.items()}
        out = deform_conv2d(**inputs)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        return [out.detach()] + [inputs[k].grad for k in leaves]

    whole = run()
    monkeypatch.setattr(deform_conv, "_CHUNK_BYTES", 1)  # one sample per chunk
    for a, b in zip(whole, run()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _outputs_and_grads(case, leaves=("input", "offset", "weight", "bias", "mask")):
    inputs = {k: (v.clone().requires_grad_() if k in leaves and v is not None else v) for k, v in case.items()}
    out = deform_conv2d(**inputs)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    return [out.detach()] + [inputs[k].grad if k in leaves and inputs[k] is not None else None for k in leaves]


@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_kept_columns_and_recomputed_columns_agree(monkeypatch, with_mask, chunk_bytes):
    """Backward either reuses forward's sampled columns or samples again; both must give the same gradients."""
    case = make_case(B=3, Cin=4, Cout=6, H=5, W=6, G=2, groups=2, mask=with_mask, seed=31)
    if chunk_bytes is not None:
        monkeypatch.setattr(deform_conv, "_CHUNK_BYTES", chunk_bytes)
    kept = _outputs_and_grads(case)
    monkeypatch.setattr(deform_conv, "_SAVE_COLUMNS_BYTES", 0)
    recomputed = _outputs_and_grads(case)
    for a, b in zip(kept, recomputed):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("leaf", ["input", "offset", "weight", "bias", "mask"])
def test_each_gradient_alone_matches_all_gradients(leaf):
    """Backward skips the work of gradients nobody asked for; what it does compute must not change."""
    case = make_case(B=2, G=2, groups=2, seed=37)
    everything = dict(zip(["out", "input", "offset", "weight", "bias", "mask"], _outputs_and_grads(case)))
    alone = _outputs_and_grads(case, leaves=(leaf,))
    torch.testing.assert_close(alone[1], everything[leaf], rtol=1e-12, atol=1e-12)


def test_float32_gradients_match_float64():
    case = make_case(B=2, Cin=8, Cout=4, H=7, W=6, G=4, padding=2, dilation=2, seed=41)
    case["offset"] = away_from_integers(case["offset"])
    expected = _outputs_and_grads(case)
    single = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    for a, b in zip(_outputs_and_grads(single), expected):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
def test_onednn_contraction_matches_matmul(monkeypatch):
    """float32 on CPU contracts with oneDNN 1x1 convolutions; they must give the matmul path's results."""
    case = make_case(B=3, Cin=8, Cout=5, H=6, W=7, G=4, padding=2, dilation=2, dtype=torch.float32, seed=43)
    calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *args: calls.append(1) or real(*args))
    with_onednn = _outputs_and_grads(case)
    assert calls, "the float32 CPU case should have used the oneDNN contraction"
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    calls.clear()
    with_matmul = _outputs_and_grads(case)
    assert not calls
    for a, b in zip(with_onednn, with_matmul):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs():
    """Offsets and masks are usually channel slices of one predictor output; inputs may be channels-last."""
    case = make_case(G=2, seed=29)
    expected = deform_conv2d(**case)
    predicted = torch.cat([case["offset"], case["mask"]], dim=1)
    offset, mask = predicted.split([case["offset"].shape[1], case["mask"].shape[1]], dim=1)
    assert not offset.is_contiguous() and not mask.is_contiguous()
    case.update(offset=offset, mask=mask, input=case["input"].to(memory_format=torch.channels_last))
    torch.testing.assert_close(deform_conv2d(**case), expected)


def test_mixed_precision_inputs_follow_promotion():
    case = make_case(dtype=torch.float32, seed=5)
    expected = deform_conv2d(**case)
    case["input"] = case["input"].to(torch.bfloat16)
    out = deform_conv2d(**case)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.1)


# ---------------------------------------------------------------------------------------------------------------
# Gradients


def away_from_integers(offset: torch.Tensor) -> torch.Tensor:
    """Fractional parts in [0.1, 0.9]: every sample point is at least 0.1 px from the kinks of bilinear sampling."""
    return offset.floor() + 0.1 + 0.8 * torch.rand_like(offset)


@pytest.mark.parametrize("with_mask", [True, False])
def test_gradcheck(with_mask):
    case = make_case(B=1, Cin=4, Cout=2, H=4, W=5, G=2, groups=2, mask=with_mask, offset_range=2.0, seed=13)
    case["offset"] = away_from_integers(case["offset"])
    names = ["input", "offset", "weight", "bias"] + (["mask"] if with_mask else [])
    tensors = [case[n].clone().requires_grad_() for n in names]

    def fn(*args):
        kwargs = dict(case, **dict(zip(names, args)))
        return deform_conv2d(**kwargs)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7)


def test_gradients_only_for_requested_inputs():
    case = make_case(B=2, seed=17)
    case["input"].requires_grad_()
    out = deform_conv2d(**case)
    (grad_input,) = torch.autograd.grad(out.sum(), [case["input"]])
    assert grad_input.shape == case["input"].shape and grad_input.abs().sum() > 0


def test_module_forward_and_identity_init_behaviour():
    layer = ModulatedDeformConv2d(4, 6, kernel_size=3, padding=3, dilation=3, groups=2).double()
    x = torch.randn(2, 4, 7, 8, dtype=torch.float64)
    offset = torch.zeros(2, 2 * 2 * 9, 7, 8, dtype=torch.float64)
    expected = F.conv2d(x, layer.weight, layer.bias, padding=3, dilation=3, groups=2)
    torch.testing.assert_close(layer(x, offset), expected)
    assert layer(x, offset, torch.ones(2, 18, 7, 8, dtype=torch.float64)).shape == (2, 6, 7, 8)


def test_shape_errors_name_the_problem():
    case = make_case()
    with pytest.raises(ValueError, match="offset has"):
        deform_conv2d(**dict(case, offset=case["offset"][:, :-1]))
    with pytest.raises(ValueError, match="mask shape"):
        deform_conv2d(**dict(case, mask=case["mask"][:, :-1]))
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d(**dict(case, offset=case["offset"][..., :-1]))


# ---------------------------------------------------------------------------------------------------------------
# Backends


def test_backend_selection_validates_names(monkeypatch):
    with pytest.raises(ValueError, match="auto"):
        deform_conv.set_backend("cuda")
    monkeypatch.setenv("TDMI_DCN_BACKEND", "fast")
    with pytest.raises(ValueError, match="TDMI_DCN_BACKEND"):
        deform_conv._backend_from_env()
    monkeypatch.setenv("TDMI_DCN_BACKEND", "Torch")
    assert deform_conv._backend_from_env() == "torch"
    with deform_conv.use_backend("auto"):
        assert deform_conv.get_backend() == "auto"
    assert deform_conv.get_backend() == "torch"


def test_auto_rule_torchvision_on_cuda_only_for_its_dtypes_and_the_pure_path_on_cpu(monkeypatch):
    """With a stand-in torchvision module: the probe runs per device type, a broken op is never used, 'auto' never
    takes torchvision on CPU (slower there), and bf16 never goes to torchvision."""
    calls = []

    def working(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
        calls.append((input.dtype, weight.dtype))
        with deform_conv.use_backend("torch"):
            return deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)

    def broken(*args, **kwargs):
        raise RuntimeError("operator torchvision::deform_conv2d does not exist")

    case = make_case(seed=19)
    for op, used in ((working, True), (broken, False)):
        fake_tv, fake_ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        fake_ops.deform_conv2d, fake_tv.ops = op, fake_ops
        monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
        monkeypatch.setitem(sys.modules, "torchvision.ops", fake_ops)
        monkeypatch.setattr(deform_conv, "_torchvision_ok", {})
        calls.clear()
        assert deform_conv.torchvision_available("cpu") is used
        assert len(calls) == int(used)  # the probe
        with deform_conv.use_backend("auto"):
            out = deform_conv2d(**case)
        torch.testing.assert_close(out, reference_deform_conv2d(**case))
        assert len(calls) == int(used)  # auto on CPU: the pure path, never torchvision
        assert not deform_conv.auto_uses_torchvision("cpu", torch.float32)
        if used:
            with deform_conv.use_backend("torchvision"):  # asked for explicitly: used, with promoted dtypes
                deform_conv2d(**dict(case, input=case["input"].to(torch.bfloat16)))
            assert calls[-1] == (torch.float64, torch.float64)
            monkeypatch.setitem(deform_conv._torchvision_ok, "cuda", True)
            assert deform_conv.auto_uses_torchvision("cuda", torch.float32)
            assert deform_conv.auto_uses_torchvision("cuda", torch.float16)
            assert not deform_conv.auto_uses_torchvision("cuda", torch.bfloat16)
        else:
            with pytest.raises(RuntimeError, match="torchvision"):
                deform_conv.set_backend("torchvision")


def test_half_precision_inputs_are_sampled_in_float32():
    """A bf16 call (all tensors bf16, no autocast) samples on a float32 grid: close to the float32 result."""
    case = make_case(H=16, W=12, stride=1, padding=3, dilation=3, G=2, groups=1, seed=29)
    case = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    case["offset"] = case["offset"] * 3 + 5.3  # large offsets: where a bf16 grid quantises coordinates
    rounded = {k: (v.to(torch.bfloat16) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    half = deform_conv2d(**rounded)
    assert half.dtype == torch.bfloat16
    # the same bf16 inputs computed in float32: only the output's own bf16 rounding may differ (a bf16 grid would
    # move samples near x ~ 8 by up to 1/32 px)
    exact = deform_conv2d(**{k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in rounded.items()})
    torch.testing.assert_close(half.float(), exact, rtol=8e-3, atol=8e-3 * float(exact.abs().max()))


def _real_torchvision_works() -> bool:
    if "torchvision" in sys.modules and not hasattr(sys.modules["torchvision"], "__file__"):
        return False
    return deform_conv.torchvision_available()


@pytest.mark.skipif(not _real_torchvision_works(), reason="torchvision.ops.deform_conv2d not importable/runnable")
@pytest.mark.parametrize("stride,dilation,G,groups", [(1, 1, 1, 1), (2, 3, 2, 2), (1, 3, 4, 1)])
def test_torchvision_agrees_with_pure_path(stride, dilation, G, groups):
    case = make_case(H=7, W=6, stride=stride, padding=dilation, dilation=dilation, G=G, groups=groups, seed=23)
    case["offset"] = away_from_integers(case["offset"])
    results = {}
    for backend in ("torch", "torchvision"):
        inputs = {k: (v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
        with deform_conv.use_backend(backend):
            out = deform_conv2d(**inputs)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype))
        results[backend] = [out.detach()] + [inputs[k].grad for k in ("input", "offset", "weight", "bias", "mask")]
    for a, b in zip(results["torch"], results["torchvision"]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_channels_last_input_gives_a_channels_last_output():
    case = make_case(H=8, W=6, stride=1, padding=1, dilation=1, G=1, groups=1, seed=31)
    nchw = deform_conv2d(**case)
    cl = deform_conv2d(**dict(case, input=case["input"].contiguous(memory_format=torch.channels_last)))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, nchw)


def test_torchvision_path_also_hands_back_channels_last(monkeypatch):
    """torchvision's op returns NCHW: the channels-last restore applies to its path too (the CUDA default)."""
    def nchw_only(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
        with deform_conv.use_backend("torch"):
            return deform_conv2d(input.contiguous(), offset, weight, bias, stride, padding, dilation, mask)

    fake_tv, fake_ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    fake_ops.deform_conv2d, fake_tv.ops = nchw_only, fake_ops
    monkeypatch.setitem(sys.modules, "torchvision", fake_tv)
    monkeypatch.setitem(sys.modules, "torchvision.ops", fake_ops)
    monkeypatch.setattr(deform_conv, "_torchvision_ok", {"cpu": True})
    case = make_case(H=8, W=6, stride=1, padding=1, dilation=1, G=1, groups=1, seed=37)
    with deform_conv.use_backend("torchvision"):
        assert deform_conv.sampling_path("cpu", torch.float64) == "torchvision"
        out = deform_conv2d(**dict(case, input=case["input"].contiguous(memory_format=torch.channels_last)))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference_deform_conv2d(**case))


# ---------------------------------------------------------------------------------------------------------------
# Deterministic mode on GPUs: the gather path


@pytest.mark.parametrize("stride,dilation,G,groups,H,W,mask", [(1, 3, 4, 1, 6, 7, True), (2, 1, 2, 2, 6, 7, False),
                                                               (1, 1, 2, 1, 1, 5, True), (1, 2, 1, 2, 4, 1, True),
                                                               (1, 1, 1, 1, 5, 6, True)])
def test_gather_path_matches_the_reference_and_the_hand_written_gradients(stride, dilation, G, groups, H, W, mask):
    """Offsets up to 3 px reach past every border (partial corners, samples wholly outside), so the zero-border
    rule and its gradients are exercised; the float64 gradients equal the hand-written backward's."""
    case = make_case(H=H, W=W, stride=stride, padding=dilation, dilation=dilation, G=G, groups=groups, mask=mask,
                     bias=True, seed=41 + G + H)
    leaves = {k: v.clone().requires_grad_() for k, v in case.items() if isinstance(v, torch.Tensor)}
    eager = deform_conv2d(**{**case, **leaves})
    eager_grads = torch.autograd.grad(eager.square().sum(), list(leaves.values()))
    args = {**case, **leaves}
    gathered = deform_conv.gather_deform_conv2d(args["input"], args["offset"], args["weight"], args["bias"],
                                                args["mask"], (stride, stride), (dilation, dilation),
                                                (dilation, dilation))
    gathered_grads = torch.autograd.grad(gathered.square().sum(), list(leaves.values()))
    torch.testing.assert_close(gathered, reference_deform_conv2d(**case), rtol=1e-10, atol=1e-10)
    for name, a, b in zip(leaves, eager_grads, gathered_grads):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9, msg=name)


def test_deterministic_mode_takes_the_gather_path_on_gpus_only(monkeypatch):
    with deform_conv.use_backend("torch"):  # not deterministic: the usual paths
        assert deform_conv.sampling_path("cuda", torch.float32) == "pure"
        assert deform_conv.sampling_path("cuda", torch.float32, compiling=True) == "traceable"
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        for backend in ("auto", "torch"):
            with deform_conv.use_backend(backend):
                assert deform_conv.sampling_path("cuda", torch.float32) == "gather"
                assert deform_conv.sampling_path("cuda", torch.float16, compiling=True) == "gather"
                assert deform_conv.sampling_path("cpu", torch.float32) == "pure"  # deterministic on the CPU
        # the dispatch follows the rule: a call sent down the gather path never reaches the autograd function
        monkeypatch.setattr(deform_conv, "sampling_path", lambda *args, **kwargs: "gather")
        monkeypatch.setattr(deform_conv._DeformConv2dFunction, "apply", None)
        case = make_case(H=7, W=6, stride=1, padding=2, dilation=2, G=2, groups=1, seed=43)
        torch.testing.assert_close(deform_conv2d(**case), reference_deform_conv2d(**case), rtol=1e-10, atol=1e-10)
    finally:
        torch.use_deterministic_algorithms(previous)


# ---------------------------------------------------------------------------------------------------------------
# torch.compile: the traceable path


@pytest.mark.parametrize("stride,dilation,G,groups,H,W", [(1, 3, 4, 1, 6, 7), (2, 1, 2, 2, 6, 7), (1, 1, 2, 1, 1, 5),
                                                          (1, 2, 1, 2, 4, 1)])
def test_traceable_path_matches_the_reference_and_the_hand_written_gradients(monkeypatch, stride, dilation, G,
                                                                              groups, H, W):
    case = make_case(H=H, W=W, stride=stride, padding=dilation, dilation=dilation, G=G, groups=groups, mask=True,
                     bias=True, seed=11 + G)
    leaves = {k: v.clone().requires_grad_() for k, v in case.items() if isinstance(v, torch.Tensor)}
    eager = deform_conv2d(**{**case, **leaves})
    eager_grads = torch.autograd.grad(eager.square().sum(), list(leaves.values()))
    monkeypatch.setattr(deform_conv.torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(deform_conv._DeformConv2dFunction, "apply", None)  # while compiling it must not be used
    traced = deform_conv2d(**{**case, **leaves})
    traced_grads = torch.autograd.grad(traced.square().sum(), list(leaves.values()))
    torch.testing.assert_close(traced, reference_deform_conv2d(**case), rtol=1e-10, atol=1e-10)
    for name, a, b in zip(leaves, eager_grads, traced_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def test_compiled_module_has_no_graph_breaks_and_matches_eager():
    torch.manual_seed(0)
    module = ModulatedDeformConv2d(12, 12, kernel_size=3, padding=3, dilation=3)
    x = torch.randn(2, 12, 9, 8)
    offset, mask = torch.randn(2, 54, 9, 8), torch.rand(2, 27, 9, 8)
    explanation = torch._dynamo.explain(module)(x, offset, mask)
    assert explanation.graph_break_count == 0, [str(b.reason)[:200] for b in explanation.break_reasons]
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager")
    torch.testing.assert_close(compiled(x, offset, mask), module(x, offset, mask), rtol=1e-5, atol=1e-5)


def test_plain_paths_compute_in_float32_under_autocast_and_nan_offsets_give_nan():
    """The gather and traceable paths' matmuls do not follow a caller's bf16 autocast; a NaN offset gives a NaN
    output (for the training loop's NaN check) instead of an out-of-bounds gather."""
    case = make_case(H=7, W=6, stride=1, padding=2, dilation=2, G=2, groups=1, seed=47, dtype=torch.float32)
    reference = reference_deform_conv2d(**{k: v.double() if isinstance(v, torch.Tensor) else v
                                           for k, v in case.items()})
    for path in ("gather", "traceable"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(deform_conv, "sampling_path", lambda *args, path=path, **kwargs: path)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = deform_conv2d(**case)
        assert out.dtype == torch.float32, path
        torch.testing.assert_close(out.double(), reference, rtol=1e-5, atol=1e-5, msg=path)
    offset = case["offset"].clone()
    offset[0, 0, 3, 3] = float("nan")
    out = deform_conv.gather_deform_conv2d(case["input"], offset, case["weight"], case["bias"], case["mask"],
                                           (1, 1), (2, 2), (2, 2))
    assert torch.isnan(out[0, :, 3, 3]).all() and torch.isfinite(out[1]).all()
