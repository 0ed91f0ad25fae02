"""Switched convolutions: the reference, the CPU path, the custom op, the layer.

Everything here is small and single-threaded: on this shared machine two
torch threads on tiny tensors spend most of their time waiting for each
other (measured 70x slower than one thread), and the point is correctness.
"""

from __future__ import annotations

import copy
import io
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vhsup.arch.switched import (
    SwitchedConv2d,
    SwitchNormBufferWarning,
    convert_to_switched,
    hard_route,
    switched_layers,
)
from vhsup.errors import VhsupError
from vhsup.kernels import available_impls, pick_impl, switched_conv2d
from vhsup.kernels.op import switched_conv2d_op


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_forced_impl(monkeypatch):
    monkeypatch.delenv("VHSUP_SWITCHED_IMPL", raising=False)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def every_expert_index(n, ho, wo, breadth, gen):
    """A random expert map in which every expert appears (asserted, so a test
    built on it cannot pass by never exercising an expert)."""
    index = torch.randint(0, breadth, (n, ho, wo), generator=gen)
    flat = index.view(-1)
    flat[:breadth] = torch.randperm(breadth, generator=gen)  # each expert at least once
    assert torch.bincount(flat, minlength=breadth).min() > 0
    return index


# -- the kernels: CPU path against the reference --------------------------------------------

CASES = [  # (cin, cout, k, stride, padding, h, w)
    (5, 6, 3, 1, 1, 9, 11),
    (5, 6, 3, 2, 1, 9, 11),
    (4, 7, 1, 1, 0, 6, 5),
    (4, 7, 1, 2, 0, 7, 6),
    (3, 4, 3, 1, 0, 8, 7),  # "valid" conv
    (3, 4, 3, 2, 2, 8, 7),  # padding larger than k // 2
    (3, 4, 5, 1, 2, 9, 9),
]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "cin{}-cout{}-k{}-s{}-p{}".format(*c[:5]))
def test_cpu_path_matches_reference_forward_and_grads(case, dtype, tol):
    cin, cout, k, stride, padding, h, w = case
    breadth = 4
    gen = torch.Generator().manual_seed(hash(case) % 2**31)
    x = (torch.randn(2, cin, h, w, generator=gen) + 0.5).to(dtype)
    weight = torch.randn(breadth, cout, cin, k, k, generator=gen).to(dtype)
    bias = torch.randn(breadth, cout, generator=gen).to(dtype)
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    index = every_expert_index(2, ho, wo, breadth, gen)
    grad = torch.randn(2, cout, ho, wo, generator=gen)

    def run(impl, dt):
        leaves = [t.detach().to(dt).requires_grad_() for t in (x, weight, bias)]
        out = switched_conv2d(*leaves, index, stride=stride, padding=padding, impl=impl)
        out.backward(grad.to(dt))
        return [out.detach()] + [t.grad for t in leaves]

    # The oracle runs in float64 on the same (already rounded) inputs.
    want = run("reference", torch.float64)
    got = run("cpu", dtype)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    for name, g, r in zip(("out", "grad_x", "grad_w", "grad_b"), got, want):
        assert rel_err(g, r) < tol, f"{name}: relative error {rel_err(g, r):.2e}"


def test_cpu_path_without_bias_and_with_an_absent_expert():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 6, 6, generator=gen, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, 3, generator=gen, requires_grad=True)
    index = torch.randint(0, 4, (1, 6, 6), generator=gen)  # expert 4 never chosen
    out = switched_conv2d(x, weight, None, index, padding=1, impl="cpu")
    out.square().sum().backward()
    ref_x, ref_w = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    switched_conv2d(ref_x, ref_w, None, index, padding=1, impl="reference").square().sum().backward()
    assert rel_err(x.grad, ref_x.grad) < 1e-4 and rel_err(weight.grad, ref_w.grad) < 1e-4
    assert weight.grad[4].abs().max() == 0  # an unused expert learns nothing
    assert weight.grad[:4].abs().amax(dim=(1, 2, 3, 4)).min() > 0


@pytest.mark.parametrize("stride", [1, 2])
def test_stacked_form_for_onnx_is_the_same_function(stride):
    # What ONNX export writes: one conv over all kernels, then a per-pixel pick.
    from vhsup.kernels.reference import switched_conv2d as one_by_one
    from vhsup.kernels.reference import switched_conv2d_stacked

    gen = torch.Generator().manual_seed(stride)
    x = torch.randn(2, 3, 9, 7, generator=gen)
    weight, bias = torch.randn(4, 5, 3, 3, 3, generator=gen), torch.randn(4, 5, generator=gen)
    ho, wo = (9 + 2 - 3) // stride + 1, (7 + 2 - 3) // stride + 1
    index = torch.randint(0, 4, (2, ho, wo), generator=gen)
    want = one_by_one(x, weight, bias, index, stride, 1)
    assert rel_err(switched_conv2d_stacked(x, weight, bias, index, stride, 1), want) < 1e-6
    weight[3] = float("inf")  # an expert that overflows must not reach pixels routed elsewhere
    got = switched_conv2d_stacked(x, weight, bias, index, stride, 1)
    assert torch.isfinite(got[(index != 3).unsqueeze(1).expand_as(got)]).all()


def test_bad_index_shape_is_refused():
    x, weight = torch.randn(1, 3, 8, 8), torch.randn(2, 4, 3, 3, 3)
    with pytest.raises(ValueError, match="index"):
        switched_conv2d(x, weight, None, torch.zeros(1, 8, 8, dtype=torch.long), stride=2, padding=1)


# -- the custom op: registration, fake tensors, torch.compile -------------------------------


def test_custom_op_passes_opcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=gen, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3, 3, generator=gen, requires_grad=True)
    bias = torch.randn(3, 4, generator=gen, requires_grad=True)
    index = every_expert_index(2, 3, 3, 3, gen)
    result = torch.library.opcheck(switched_conv2d_op, (x, weight, bias, index, 2, 1, "cpu"))
    assert set(result.values()) == {"SUCCESS"}, result


def test_fake_tensor_gives_the_output_shape_without_computing():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 3, 17, 15)
        out = switched_conv2d(
            x,
            torch.empty(8, 5, 3, 3, 3),
            torch.empty(8, 5),
            torch.zeros(2, 9, 8, dtype=torch.long),
            stride=2,
            padding=1,
            impl="cpu",
        )
        assert tuple(out.shape) == (2, 5, 9, 8)


def _compiled_matches_eager(backend: str):
    torch.manual_seed(0)
    layer = SwitchedConv2d(3, 4, 3, breadth=4, impl="cpu").eval()
    x = torch.randn(2, 3, 8, 8)
    twin = copy.deepcopy(layer)
    compiled = torch.compile(twin, backend=backend, fullgraph=False)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), compiled(xb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    assert rel_err(yb, ya) < 1e-5
    assert rel_err(xb.grad, xa.grad) < 1e-4
    assert rel_err(twin.weight.grad, layer.weight.grad) < 1e-4
    assert rel_err(twin.selector.weight.grad, layer.selector.weight.grad) < 1e-4


def test_torch_compile_traces_the_layer_and_the_op():
    # aot_eager runs dynamo, fake tensors and AOT autograd on the custom op and its
    # backward op: everything torch.compile needs from us, without a C++ build.
    _compiled_matches_eager("aot_eager")


@pytest.mark.skipif(
    os.environ.get("VHSUP_TEST_INDUCTOR") != "1",
    reason="inductor's cold C++ build takes about a minute here; set VHSUP_TEST_INDUCTOR=1",
)
def test_torch_compile_inductor():
    _compiled_matches_eager("inductor")


# -- dispatch ---------------------------------------------------------------------------------


def _graph(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``t``: which implementation produced it."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names


def test_dispatch_defaults_and_forcing(monkeypatch):
    assert pick_impl("cpu") == "cpu"
    assert {"cpu", "reference"} <= set(available_impls("cpu"))
    layer = SwitchedConv2d(2, 3, 3, breadth=3)
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    default = layer(x)
    assert any("vhsup_switched_conv2d" in n for n in _graph(default))  # the custom op (CPU path)

    monkeypatch.setenv("VHSUP_SWITCHED_IMPL", "reference")
    assert pick_impl("cpu") == "reference"
    forced = layer(x)
    names = _graph(forced)
    assert not any("vhsup" in n for n in names) and "ConvolutionBackward0" in names  # dense convs
    assert rel_err(forced, default) < 1e-5


def test_bad_or_unavailable_impl_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("VHSUP_SWITCHED_IMPL", "fastest")
    with pytest.raises(VhsupError, match="VHSUP_SWITCHED_IMPL=fastest.*reference, cpu, cuda"):
        SwitchedConv2d(2, 3, 3, breadth=2)(torch.randn(1, 2, 5, 5))
    if "cuda" not in available_impls("cpu"):
        monkeypatch.setenv("VHSUP_SWITCHED_IMPL", "cuda")
        with pytest.raises(VhsupError, match="'cuda'.*cannot run on cpu"):
            pick_impl("cpu")
    monkeypatch.delenv("VHSUP_SWITCHED_IMPL")
    with pytest.raises(VhsupError, match="unknown"):
        switched_conv2d(
            torch.randn(1, 2, 5, 5),
            torch.randn(2, 3, 2, 3, 3),
            None,
            torch.zeros(1, 3, 3, dtype=torch.long),
            impl="gpu",
        )


_INTERPRETED_OP = """
import os
import torch
from vhsup.kernels import available_impls, pick_impl, switched_conv2d
assert "cuda" in available_impls("cpu"), available_impls("cpu")
os.environ["VHSUP_SWITCHED_IMPL"] = "cuda"
assert pick_impl("cpu") == "cuda"
del os.environ["VHSUP_SWITCHED_IMPL"]
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 4, 7, 6, generator=g) + 0.5
w = torch.randn(3, 5, 4, 3, 3, generator=g)
b = torch.randn(3, 5, generator=g)
idx = torch.randint(0, 3, (2, 4, 3), generator=g)
idx.view(-1)[:3] = torch.arange(3)
gr = torch.randn(2, 5, 4, 3, generator=g)
res = {}
for impl in ("reference", "cuda"):
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    out = switched_conv2d(*leaves, idx, stride=2, padding=1, impl=impl)
    out.backward(gr)
    res[impl] = [out.detach()] + [t.grad for t in leaves]
for name, a, r in zip(("out", "grad_x", "grad_w", "grad_b"), res["cuda"], res["reference"]):
    err = ((a - r).abs().max() / r.abs().max()).item()
    assert err < 1e-4, (name, err)
print("OK")
"""


def test_triton_op_through_dispatch_and_autograd_under_the_interpreter(triton_interpreter):
    """The "cuda" implementation wired through the custom op (forward, the
    backward op, the grads autograd hands back) on CPU tensors, with Triton's
    interpreter; in a subprocess because TRITON_INTERPRET must be set before
    triton is imported. The kernels themselves are tested in
    test_switched_triton.py."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    root = Path(__file__).resolve().parents[1]
    if not (root / "vhsup" / "kernels" / "triton_switched.py").exists():
        pytest.skip("vhsup/kernels/triton_switched.py is not there yet")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("VHSUP_SWITCHED_IMPL", None)
    run = subprocess.run(
        [sys.executable, "-c", _INTERPRETED_OP], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]


# -- what runs: TF32 and the fallback ----------------------------------------------------------------


@pytest.fixture
def conv_tf32():
    """Puts torch's TF32 settings for cuDNN back as they were (both ops, so the
    legacy ``allow_tf32`` getter does not see a mix of the two APIs)."""
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv"):
        before = (cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)
        yield
        cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = before
    else:
        before_flag = cudnn.allow_tf32
        yield
        cudnn.allow_tf32 = before_flag


def test_kernel_fp32_precision_follows_torch_tf32_setting_for_convs(conv_tf32):
    """cuDNN's dense convs run fp32 as TF32 unless torch is told otherwise; the
    Triton kernel's tl.dot input precision follows the same setting, so fp32
    switched and dense convs compute alike (and describe() says which)."""
    pytest.importorskip("triton")
    from vhsup.kernels import fp32_conv_precision
    from vhsup.kernels import triton_switched as ts

    matmul = torch.get_float32_matmul_precision()
    try:
        torch.backends.cudnn.allow_tf32 = False  # the legacy switch
        assert fp32_conv_precision() == ts._prec(torch.float32) == "ieee"
        torch.set_float32_matmul_precision("medium")  # matmuls are not convs
        assert ts._prec(torch.float32) == "ieee"
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("highest")
        assert fp32_conv_precision() == ts._prec(torch.float32) == "tf32"
        if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9's per-op setting
            torch.backends.cudnn.conv.fp32_precision = "ieee"
            assert ts._prec(torch.float32) == "ieee"
            torch.backends.cudnn.conv.fp32_precision = "tf32"
            assert ts._prec(torch.float32) == "tf32"
    finally:
        torch.set_float32_matmul_precision(matmul)
    assert ts._prec(torch.float64) == "ieee"  # fp64 is always exact


_NO_TRITON = """
import json, os, sys
sys.modules["triton"] = None  # importing triton now fails, as where it is not installed
import torch
from vhsup.errors import VhsupError
from vhsup.engine import _switched_impls
from vhsup.kernels import available_impls, check_impl, pick_impl, switched_fallback
from vhsup.registry import build_model

out = {"cpu_impls": available_impls("cpu"), "cuda_pick": pick_impl("cuda"), "notice": switched_fallback("cuda")}
out["cpu_notice"] = switched_fallback("cpu")
out["describe_on_cuda"] = sorted(_switched_impls(build_model("switched-x4").module, torch.device("cuda")))
try:
    check_impl("cuda", "cpu")
except VhsupError as exc:
    out["error"] = str(exc)
os.environ["VHSUP_SWITCHED_IMPL"] = "reference"
out["asked_notice"] = switched_fallback("cuda")
print("RESULT " + json.dumps(out))
"""


def test_a_triton_that_does_not_import_is_a_one_line_notice_naming_the_reference():
    """A real import failure (triton's entry in sys.modules set to None), in a
    subprocess under TRITON_INTERPRET=1, where an importable triton would
    make the kernels available on the CPU: the CUDA path falls back to the
    reference, and says so in one line with the reason."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("VHSUP_SWITCHED_IMPL", None)
    run = subprocess.run(
        [sys.executable, "-c", _NO_TRITON], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT ") :])
    assert "cuda" not in res["cpu_impls"] and res["cuda_pick"] == "reference"
    assert res["describe_on_cuda"] == ["reference"]  # describe()'s switched_conv on a GPU
    note = res["notice"]
    assert note is not None and "\n" not in note
    assert "run the reference implementation" in note and "triton did not import (ModuleNotFoundError" in note
    assert res["cpu_notice"] is None and res["asked_notice"] is None  # nothing fell back / chosen on purpose
    assert "triton did not import" in res["error"]


def test_describe_names_the_switched_conv_path_and_fp32_math():
    notices: list[str] = []
    from vhsup.engine import SREngine
    from vhsup.registry import build_model

    d = SREngine(build_model("switched-x4", seed=0), device="cpu", notice=notices.append).describe()
    assert d["switched_conv"] == "cpu" and d["fp32_convs"] == "ieee" and notices == []
    assert "switched_conv" not in SREngine(build_model("compact-x4", seed=0), device="cpu").describe()


# -- the layer: hard routing, selector gradient, gradcheck ----------------------------------


def test_hard_route_forward_is_one_hot_and_backward_divides_by_the_choice():
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]).view(2, 3, 1, 1).requires_grad_()
    gate, index = hard_route(probs)
    assert index.view(-1).tolist() == [1, 0]
    assert gate.view(2, 3).tolist() == [[0, 1, 0], [1, 0, 0]]
    (gate * torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)).sum().backward()
    # Only the chosen entry gets a gradient: the incoming one over the chosen score.
    assert torch.allclose(probs.grad.view(2, 3), torch.tensor([[0, 2 / 0.5, 0], [1 / 0.6, 0, 0]]))


class _Probe(SwitchedConv2d):
    """The layer with a finite-difference handle on its routing, for gradcheck.

    The hard routing's forward is piecewise constant (a one-hot), so finite
    differences see no slope there, while its backward deliberately passes
    ``grad / score``. To check that backward numerically, add to the gate a
    *detached* term ``score / recorded - 1``: it is 0 at the checked point
    and does not touch autograd, but under perturbation it gives the gate
    the slope ``1 / recorded`` that the custom backward claims. Everything
    else (selector, softmax, switch norm, kernels) is the real layer.
    """

    recorded: torch.Tensor | None = None

    def route(self, probs):
        gate, index = super().route(probs)
        chosen = probs.gather(1, index.unsqueeze(1))
        if self.recorded is None:
            self.recorded = chosen.detach().clone()
        bump = (chosen / self.recorded - 1).detach()
        return gate + torch.zeros_like(gate).scatter(1, index.unsqueeze(1), bump), index


def test_reference_layer_passes_gradcheck_including_hard_routing():
    torch.manual_seed(7)
    layer = _Probe(2, 3, 3, breadth=3, stride=1, impl="reference").double().eval()
    with torch.no_grad():  # a non-trivial usage history, so the norm's division is exercised
        layer.norm.history[:5] = torch.tensor([[0.5, 1.2, 1.3]], dtype=torch.float64)
        layer.norm.count.fill_(5)
        layer.selector.weight.mul_(3)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    names = ["weight", "bias", "selector.weight", "selector.bias"]
    params = dict(layer.named_parameters())

    def f(x, *tensors):
        return torch.func.functional_call(layer, {**params, **dict(zip(names, tensors))}, (x,))

    inputs = (x.requires_grad_(),) + tuple(params[n].detach().clone().requires_grad_() for n in names)
    # The routing must not flip under gradcheck's perturbations, and must use every kernel.
    with torch.no_grad():
        logits = layer.selector(x)
        scores = layer.norm(torch.softmax(logits, 1)).sort(dim=1, descending=True).values
    assert (scores[:, 0] - scores[:, 1]).min() > 1e-4
    f(*inputs)
    assert layer.last_index.unique().numel() == 3
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_selector_learns_from_the_chosen_kernel_output():
    # Analytic check of the selector gradient on one pixel: d loss / d score_e =
    # sum_c grad_out * out / score_e for the chosen e, nothing for the rest.
    torch.manual_seed(1)
    layer = SwitchedConv2d(2, 2, 1, breadth=3, switch_norm=False, impl="reference")
    x = torch.randn(1, 2, 1, 1)
    probs = torch.softmax(layer.selector(x), 1)
    e = int(probs.argmax(1))
    out = layer(x)
    (out * torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)).sum().backward()
    upstream = (out.detach().view(2) * torch.tensor([1.0, -2.0])).sum() / probs[0, e, 0, 0].detach()
    dprobs = torch.zeros(3)
    dprobs[e] = upstream
    p = probs.detach().view(3)
    dlogits = p * (dprobs - (dprobs * p).sum())  # softmax backward
    assert torch.allclose(layer.selector.bias.grad, dlogits, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("stride", [1, 2])
def test_layer_cpu_path_matches_reference_all_gradients(stride, dtype, tol):
    # Same layer, same dtype, two kernels: the selector computes the same routing
    # in both, so every difference below comes from the switched conv itself.
    torch.manual_seed(11 + stride)
    layer = SwitchedConv2d(4, 5, 3, stride=stride, breadth=4, impl="cpu").to(dtype)
    with torch.no_grad():
        layer.selector.weight.mul_(4)  # sharper scores so every kernel wins somewhere
    oracle = copy.deepcopy(layer)
    oracle.impl = "reference"
    x = (torch.randn(2, 4, 10, 10) + 0.3).to(dtype)
    grad = torch.randn(2, 5, *layer.output_size(10, 10)).to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), oracle(xb)
    ya.backward(grad)
    yb.backward(grad)
    assert layer.last_index.unique().numel() == 4
    assert torch.equal(layer.last_index, oracle.last_index)
    assert rel_err(ya.detach(), yb.detach()) < tol
    assert rel_err(xa.grad, xb.grad) < tol
    for (name, pa), (_, pb) in zip(layer.named_parameters(), oracle.named_parameters()):
        assert pb.grad.abs().max() > 0, name
        assert rel_err(pa.grad, pb.grad) < tol, name
    assert torch.equal(layer.norm.history, oracle.norm.history) and layer.norm.count.item() == 1


def test_layer_under_cpu_autocast_matches_reference_and_keeps_fp32_grads():
    torch.manual_seed(4)
    layer = SwitchedConv2d(4, 5, 3, breadth=4, impl="cpu")
    with torch.no_grad():
        layer.selector.weight.mul_(4)
    oracle = copy.deepcopy(layer)
    oracle.impl = "reference"
    x = torch.randn(2, 4, 10, 10) + 0.3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = layer(x), oracle(x)
    assert ya.dtype == torch.bfloat16
    ya.float().square().sum().backward()
    yb.float().square().sum().backward()
    assert torch.equal(layer.last_index, oracle.last_index) and layer.last_index.unique().numel() == 4
    assert rel_err(ya.detach(), yb.detach()) < 2e-2
    for (name, pa), (_, pb) in zip(layer.named_parameters(), oracle.named_parameters()):
        assert pa.grad.dtype == torch.float32, name
        assert rel_err(pa.grad, pb.grad) < 2e-2, name


# -- conversion -------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 1, bias=False), nn.ReLU()
        )
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.grouped(self.body(self.head(x))))


def test_conversion_keeps_the_output():
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.rand(2, 3, 12, 12)
    before = model(x).detach()
    names = convert_to_switched(model, breadth=4)
    assert names == ["head", "body.0", "body.2", "tail"]  # the grouped conv is left alone
    assert [n for n, _ in switched_layers(model)] == names
    assert model.body[2].bias is None and model.body[0].stride == 2
    for mode in (model.eval, model.train):
        mode()
        assert (model(x) - before).abs().max().item() < 1e-5
    # The usual inference preparation works on the converted model too.
    model.eval().to(memory_format=torch.channels_last)
    assert model.head.weight.shape == (4, 8, 3, 3, 3)
    assert (model(x.contiguous(memory_format=torch.channels_last)) - before).abs().max().item() < 1e-5
    assert model.to(torch.bfloat16).head.norm.history.dtype == torch.float32
    model.float()
    # Routing really varies, so the equality is not one kernel doing all the work.
    assert model.head.last_index.unique().numel() > 1
    assert convert_to_switched(model, breadth=4) == []  # selectors are not converted again
    with pytest.raises(ValueError, match="grouped"):
        convert_to_switched(model, predicate=lambda name, conv: name == "grouped")


def test_converted_copies_diverge_under_training():
    torch.manual_seed(0)
    layer = SwitchedConv2d.from_conv(nn.Conv2d(3, 3, 3, padding=1), breadth=4, impl="cpu")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(2, 3, 8, 8)
        loss = F.mse_loss(layer(x), x.flip(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = layer.weight.detach()
    assert (w[1:] - w[:1]).abs().max() > 1e-3


# -- switch norm ------------------------------------------------------------------------------


def _toy_shares(switch_norm: bool, seed: int, breadth: int = 8, steps: int = 200) -> torch.Tensor:
    """Fit one random 3x3 conv with a switched conv; return each kernel's share
    of the pixels of fresh data afterwards (eval mode).

    One kernel would do, so nothing in the task asks for specialisation; any
    concentration is the routing's rich-get-richer dynamic. The queue is
    scaled down with the run (16 of 200 steps, as 256 is to a long run)."""
    torch.manual_seed(seed)
    layer = SwitchedConv2d(4, 4, 3, breadth=breadth, switch_norm=switch_norm, queue=16, impl="cpu")
    target = torch.randn(4, 4, 3, 3) * 0.3
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.randn(4, 4, 12, 12)
        loss = F.mse_loss(layer(x), F.conv2d(x, target, padding=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05  # it did learn the task
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(16, 4, 16, 16))
    counts = torch.bincount(layer.last_index.flatten(), minlength=breadth).double()
    return counts / counts.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_switch_norm_prevents_collapse(seed):
    breadth = 8
    fair = 1 / breadth
    with_norm = _toy_shares(True, seed, breadth)
    without = _toy_shares(False, seed, breadth)
    effective = lambda s: 1 / (s**2).sum().item()  # noqa: E731 - kernels in use, by perplexity
    # With the norm: no kernel serves more than twice its fair share.
    assert with_norm.max() <= 2 * fair, with_norm
    assert effective(with_norm) > 0.75 * breadth
    # Without it: the routing concentrates on a few kernels and the rest go idle.
    assert without.max() > 2 * fair, without
    assert effective(without) < 0.5 * breadth


_DDP_RANK = """
import json, os, sys
import torch
import torch.distributed as dist
from vhsup.arch.switched import SwitchedConv2d
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)  # the same layer on every rank, as DDP keeps it
layer = SwitchedConv2d(3, 4, 3, breadth=4, impl="cpu")
with torch.no_grad():
    layer.selector.weight.mul_(4)
torch.manual_seed(100 + rank)  # different data on each rank
x = torch.randn(2, 3, 8, 8) + rank
local = torch.softmax(layer.selector(x), 1).mean(dim=(0, 2, 3)) * 4
layer(x)
print(json.dumps({"local": local.tolist(), "pushed": layer.norm.history[0].tolist(),
                  "count": int(layer.norm.count)}))
dist.destroy_process_group()
"""


def test_switch_norm_history_is_averaged_across_ranks():
    import json
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(root),
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _DDP_RANK],
                env=env,
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    a, b = results
    assert a["count"] == b["count"] == 1
    assert a["pushed"] == b["pushed"]  # every rank holds the same history
    mean = [(u + v) / 2 for u, v in zip(a["local"], b["local"])]
    assert max(abs(m - p) for m, p in zip(mean, a["pushed"])) < 1e-5
    assert max(abs(u - v) for u, v in zip(a["local"], b["local"])) > 1e-3  # the ranks did differ


def _trained_layer(steps=5):
    torch.manual_seed(5)
    layer = SwitchedConv2d(3, 4, 3, breadth=4, impl="cpu")
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.randn(2, 3, 8, 8)
        loss = (layer(x) - x.mean(1, keepdim=True)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return layer.eval()


def test_state_dict_carries_the_usage_history_and_reproduces_eval():
    layer = _trained_layer(steps=5)
    sd = layer.state_dict()
    assert sd["norm.count"].item() == 5
    assert sd["norm.history"].shape == (256, 4) and sd["norm.history"][:5].abs().sum() > 0
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = SwitchedConv2d(3, 4, 3, breadth=4, impl="cpu").eval()
    fresh.load_state_dict(torch.load(buf))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))
    assert torch.equal(fresh.last_index, layer.last_index)
    # ...and the history matters: without it the same weights route differently.
    blank = SwitchedConv2d(3, 4, 3, breadth=4, impl="cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SwitchNormBufferWarning)
        blank.load_state_dict({k: v for k, v in sd.items() if not k.startswith("norm.")})
    with torch.no_grad():
        blank(x)
    assert not torch.equal(blank.last_index, layer.last_index)


def test_eval_does_not_update_the_history():
    layer = _trained_layer(steps=3)
    before = layer.norm.history.clone()
    with torch.no_grad():
        layer(torch.randn(2, 3, 8, 8))
    assert torch.equal(layer.norm.history, before) and layer.norm.count.item() == 3


def test_loading_without_the_history_warns_instead_of_failing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    old = {k: v.clone() for k, v in model.state_dict().items()}
    convert_to_switched(model, breadth=2)
    converted = {k: v for k, v in model.state_dict().items() if ".norm." not in k}
    with pytest.warns(SwitchNormBufferWarning, match=r"switched layer \d: .*no switch-norm usage history") as got:
        model.load_state_dict(converted)  # strict by default
    assert sorted(str(w.message).split(":")[0] for w in got) == ["switched layer 0", "switched layer 2"]
    assert torch.equal(model[2].weight, converted["2.weight"])
    # A plain conv state dict still fails loudly: the weights do not fit.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SwitchNormBufferWarning)
        with pytest.raises(RuntimeError, match="size mismatch"):
            model.load_state_dict(old)


# -- GPU ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "dtype,tf32,tol", [(torch.float32, False, 1e-4), (torch.float32, True, 5e-3), (torch.bfloat16, True, 2e-2)]
)
def test_cuda_dispatch_matches_reference(dtype, tf32, tol, conv_tf32):
    # fp32 either exact on both sides (TF32 off) or TF32 on both: the Triton
    # kernel follows torch's setting for convs, as the reference's cuDNN does.
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    layer = SwitchedConv2d(16, 16, 3, breadth=8).cuda()
    with torch.no_grad():
        layer.selector.weight.mul_(4)
    layer = layer.to(dtype)
    oracle = copy.deepcopy(layer)
    oracle.impl = "reference"
    x = torch.randn(2, 16, 32, 32, device="cuda").to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(2, 16, 32, 32, device="cuda").to(dtype)
    ya = layer(xa)
    ya.backward(grad)
    yb = oracle(xb)
    yb.backward(grad)
    assert torch.equal(layer.last_index, oracle.last_index)
    assert rel_err(ya.detach(), yb.detach()) < tol
    assert rel_err(xa.grad, xb.grad) < tol
    for (name, pa), (_, pb) in zip(layer.named_parameters(), oracle.named_parameters()):
        assert rel_err(pa.grad, pb.grad) < tol, name
