"""The Triton switched-conv kernels against a per-expert dense-conv oracle.

Triton decides at import time whether its kernels are compiled or run by the
CPU interpreter (TRITON_INTERPRET=1), and other test modules may import triton
first, so every check runs in a fresh subprocess with the environment it
needs. One subprocess computes all cases (importing torch and triton costs
seconds) and reports relative errors as JSON; each test asserts on its case.

The oracle: for every expert a float64 ``F.conv2d`` with that expert's kernel,
kept where the index picks it; gradients from autograd on that graph with the
same upstream gradient. Inputs are fresh random draws every run (the seed is
in the failure message) with every expert present unless the case says not.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import json, sys
import torch
import torch.nn.functional as F
from vhsup.kernels import triton_switched as ts

mode, seed = sys.argv[1], int(sys.argv[2])
torch.manual_seed(seed)
dev = "cuda" if mode == "cuda" else "cpu"
results = {"available": ts.available(dev)}


def draw(n, cin, cout, h, w, b, k, s, p, dtype, bias, present):
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    x = torch.randn(n, cin, h, w, device=dev).to(dtype)
    wt = (torch.randn(b, cout, cin, k, k, device=dev) / (cin * k * k) ** 0.5).to(dtype)
    bs = torch.randn(b, cout, device=dev).to(dtype) if bias else None
    idx = torch.randint(0, present, (n, ho, wo), device=dev)
    flat = idx.view(-1)
    flat[torch.randperm(flat.numel(), device=dev)[:present]] = torch.arange(present, device=dev)
    go = torch.randn(n, cout, ho, wo, device=dev).to(dtype)
    return x, wt, bs, idx, go


def oracle(x, wt, bs, idx, go, s, p):
    x = x.double().requires_grad_()
    wt = wt.double().requires_grad_()
    bs = bs.double().requires_grad_() if bs is not None else None
    out = None
    for e in range(wt.shape[0]):
        y = F.conv2d(x, wt[e], None if bs is None else bs[e], stride=s, padding=p)
        out = torch.zeros_like(y) if out is None else out
        out = torch.where((idx == e).unsqueeze(1), y, out)
    out.backward(go.double())
    return out.detach(), x.grad, wt.grad, None if bs is None else bs.grad


def rel(a, ref):
    return float((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def case(name, n=2, cin=6, cout=10, h=8, w=8, b=3, k=3, s=1, p=1, dtype=torch.float32, bias=True,
         present=None, via_op=False, deterministic=False, channels_last=False):
    present = b if present is None else present
    x, wt, bs, idx, go = draw(n, cin, cout, h, w, b, k, s, p, dtype, bias, present)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref = oracle(x, wt, bs, idx, go, s, p)
    torch.use_deterministic_algorithms(deterministic)
    if via_op:  # the public op with autograd, as the layer uses it
        from vhsup.kernels import switched_conv2d
        xg, wg = x.clone().requires_grad_(), wt.clone().requires_grad_()
        bg = bs.clone().requires_grad_() if bs is not None else None
        out = switched_conv2d(xg, wg, bg, idx, stride=s, padding=p, impl="cuda")
        out.backward(go)
        got = (out.detach(), xg.grad, wg.grad, None if bg is None else bg.grad)
    else:
        out = ts.forward(x, wt, bs, idx, s, p)
        got = (out,) + ts.backward(go, x, wt, idx, s, p, needs_b=bias)
    torch.use_deterministic_algorithms(False)
    r = {key: rel(g, rf) for key, g, rf in zip(("out", "gx", "gw", "gb"), got, ref) if rf is not None}
    r["dtypes"] = sorted({str(g.dtype) for g in got if g is not None})
    r["shapes_ok"] = all(g is None or tuple(g.shape) == tuple(rf.shape) for g, rf in zip(got, ref) if rf is not None)
    r["gb_is_none"] = got[3] is None
    if present < b:
        r["unused_grad_max"] = max(float(got[2][present:].abs().max()),
                                   float(got[3][present:].abs().max()) if got[3] is not None else 0.0)
    results[name] = r


if mode == "interp":
    case("fp32_k3", cin=20, cout=12, via_op=True)            # Cin spans two K steps
    case("stride2_det", n=2, cin=6, cout=40, h=9, w=9, b=2, s=2, bias=False,
         deterministic=True)                                 # Cout spans two N tiles; per-tap grad_x
    case("k1_channels_last", cin=8, cout=8, h=6, w=6, b=4, k=1, p=0, channels_last=True)
    case("bf16_k3", cin=6, cout=10, h=6, w=6, dtype=torch.bfloat16)
    case("unused_expert", cin=4, cout=6, h=6, w=6, b=4, k=1, p=0, present=3)
else:
    shape = dict(n=4, cin=64, cout=64, h=64, w=64, b=8)     # the bench layer, batch 4
    torch.backends.cudnn.allow_tf32 = True                  # torch's default: fp32 convs as TF32
    case("cuda_fp32_tf32", **shape)
    torch.backends.cudnn.allow_tf32 = False                 # exact fp32, as the fp64 oracle needs
    case("cuda_fp32", **shape, via_op=True)
    case("cuda_fp16", **shape, dtype=torch.float16)
    case("cuda_bf16", **shape, dtype=torch.bfloat16)
    case("cuda_stride2_det", **shape, s=2, deterministic=True)
    case("cuda_k1", **shape, k=1, p=0)
    case("cuda_unused", n=2, cin=64, cout=64, h=32, w=32, b=8, present=5)
print("RESULTS " + json.dumps(results))
"""


def _run(mode: str) -> dict:
    seed = secrets.randbelow(2**31)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "VHSUP_SWITCHED_IMPL")}
    if mode == "interp":
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, str(seed)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"seed {seed}: kernel script failed:\n{proc.stderr[-4000:]}"
    res = json.loads(lines[-1][len("RESULTS ") :])
    res["seed"] = seed
    return res


@pytest.fixture(scope="module")
def interp(triton_interpreter):
    return _run("interp")


FP32, TF32, BF16 = 1e-4, 5e-3, 2e-2


def _assert_close(res: dict, name: str, tol: float, keys=("out", "gx", "gw", "gb")):
    r = res[name]
    assert r["shapes_ok"], r
    for key in keys:
        assert r[key] <= tol, f"{name} {key}: relative error {r[key]:.3g} > {tol} (seed {res['seed']})"


def test_interpreter_makes_kernels_available_on_cpu(interp):
    assert interp["available"] is True


def test_fp32_3x3_through_the_op_matches_dense_convs(interp):
    # forward, grad_x, grad_w, grad_b through vhsup::switched_conv2d and autograd
    _assert_close(interp, "fp32_k3", FP32)
    assert interp["fp32_k3"]["dtypes"] == ["torch.float32"]


def test_stride2_without_bias_deterministic_grad_x(interp):
    _assert_close(interp, "stride2_det", FP32, keys=("out", "gx", "gw"))
    assert interp["stride2_det"]["gb_is_none"]


def test_pointwise_conv_on_channels_last_input(interp):
    _assert_close(interp, "k1_channels_last", FP32)


def test_bf16_within_tolerance_and_stays_bf16(interp):
    _assert_close(interp, "bf16_k3", BF16)
    assert interp["bf16_k3"]["dtypes"] == ["torch.bfloat16"]


def test_expert_without_pixels_gets_zero_gradient(interp):
    _assert_close(interp, "unused_expert", FP32)
    assert interp["unused_expert"]["unused_grad_max"] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernels_match_dense_convs_at_bench_size():
    res = _run("cuda")
    assert res["available"] is True
    _assert_close(res, "cuda_fp32", FP32)
    _assert_close(res, "cuda_k1", FP32)
    _assert_close(res, "cuda_stride2_det", FP32)
    _assert_close(res, "cuda_fp16", BF16)
    _assert_close(res, "cuda_bf16", BF16)
    _assert_close(res, "cuda_unused", FP32)
    assert res["cuda_unused"]["unused_grad_max"] == 0.0
    # torch's default TF32 for convs: the kernel's fp32 products are TF32 too
    # (about 1e-3 relative; exact fp32 where the GPU has no TF32).
    _assert_close(res, "cuda_fp32_tf32", TF32)
