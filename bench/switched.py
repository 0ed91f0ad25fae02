"""Switched convolution cost: each implementation against one dense conv of the same shape.

    .venv/bin/python bench/switched.py                      # issue #5 shape: b=8, 64->64, 3x3, batch 16, 64 and 128 px
    .venv/bin/python bench/switched.py --batch 4 --size 64  # a quick run
    .venv/bin/python bench/switched.py --device cuda --dtype bf16

Rows: ``dense`` (F.conv2d, one kernel), ``reference`` (breadth dense convs +
mask), ``cpu`` (grouped-GEMM path), ``cuda`` (the Triton op, on a CUDA
device), and ``layer`` (the whole SwitchedConv2d with the default
implementation: selector, softmax, switch norm, routing included). Columns:
forward time (no autograd), forward+backward time (grads for x, weight,
bias), and the bytes autograd saves for backward during the forward
(``saved_tensors_hooks``, each storage counted once; the input and weights
themselves are included since every row saves them). Ratios are against the
dense row. The expert map is uniform random per pixel, the least friendly
case for locality; trained maps are spatially coherent.

Times are medians of ``--repeat`` runs after one warm-up. This machine is
shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vhsup.arch.switched import SwitchedConv2d  # noqa: E402
from vhsup.kernels import available_impls, switched_conv2d  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeat: int) -> float:
    fn()
    _sync(device)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1000


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves while ``fn`` runs its forward."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[(st.data_ptr(), st.nbytes())] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def bench_shape(batch, size, channels, breadth, k, device, dtype, repeat, impls):
    gen = torch.Generator(device="cpu").manual_seed(0)
    x0 = torch.randn(batch, channels, size, size, generator=gen).to(device, dtype)
    w0 = (torch.randn(breadth, channels, channels, k, k, generator=gen) * 0.05).to(device, dtype)
    b0 = torch.randn(breadth, channels, generator=gen).to(device, dtype)
    index = torch.randint(0, breadth, (batch, size, size), generator=gen).to(device)
    x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
    # The dense row gets its own one-kernel weight, so its saved bytes are not
    # inflated by the storage of all breadth kernels.
    w_dense, b_dense = w0[0].clone().requires_grad_(), b0[0].clone().requires_grad_()
    grad = torch.randn(batch, channels, size, size, generator=gen).to(device, dtype)
    layer = SwitchedConv2d(channels, channels, k, breadth=breadth).to(device, dtype)

    def run(name):
        if name == "dense":
            return F.conv2d(x, w_dense, b_dense, padding=k // 2)
        if name == "layer":
            return layer(x)
        return switched_conv2d(x, w, b, index, padding=k // 2, impl=name)

    rows = []
    for name in ["dense", *impls, "layer"]:

        def fwd(name: str = name) -> None:
            with torch.no_grad():
                run(name)

        def fwd_bwd(name: str = name) -> None:
            for t in (x, w, b, w_dense, b_dense):
                t.grad = None
            run(name).backward(grad)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        row = {
            "impl": name,
            "fwd_ms": _time(fwd, device, repeat),
            "fwd_bwd_ms": _time(fwd_bwd, device, repeat),
            "saved_mb": _saved_bytes(lambda name=name: run(name)) / 2**20,
        }
        if device.type == "cuda":
            row["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, nargs="+", default=[64, 128])
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--breadth", type=int, nargs="+", default=[8])
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--impls", default=None, help="comma list; default: every available one")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    impls = (
        args.impls.split(",")
        if args.impls
        else [i for i in ("reference", "cpu", "cuda") if i in available_impls(device)]
    )
    print(
        f"# switched conv bench: {device} {args.dtype}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {time.strftime('%Y-%m-%d')}"
    )
    if device.type == "cuda":
        print(f"# {torch.cuda.get_device_name(device)}")
    for breadth in args.breadth:
        for size in args.size:
            rows = bench_shape(
                args.batch, size, args.channels, breadth, args.kernel, device, DTYPES[args.dtype], args.repeat, impls
            )
            dense = rows[0]
            print(
                f"\n### b={breadth}, {args.channels}->{args.channels}, {args.kernel}x{args.kernel}, "
                f"batch {args.batch}, {size}x{size}\n"
            )
            peak = device.type == "cuda"
            print(
                "| impl | fwd ms | x dense | fwd+bwd ms | x dense | saved MB | x dense |"
                + (" peak MB |" if peak else "")
            )
            print("|---|---|---|---|---|---|---|" + ("---|" if peak else ""))
            for r in rows:
                line = (
                    f"| {r['impl']} | {r['fwd_ms']:.1f} | {r['fwd_ms'] / dense['fwd_ms']:.2f} | "
                    f"{r['fwd_bwd_ms']:.1f} | {r['fwd_bwd_ms'] / dense['fwd_bwd_ms']:.2f} | "
                    f"{r['saved_mb']:.1f} | {r['saved_mb'] / dense['saved_mb']:.2f} |"
                )
                if peak:
                    line += f" {r['peak_mb']:.0f} |"
                print(line, flush=True)


if __name__ == "__main__":
    main()
