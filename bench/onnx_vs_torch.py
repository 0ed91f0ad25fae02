"""onnxruntime's CPU provider against torch on CPU, same model, same threads.

    .venv/bin/python bench/onnx_vs_torch.py                 # compact-x4, 180x120 and 720x480
    .venv/bin/python bench/onnx_vs_torch.py --json out.json --threads 2

For each frame size (width x height) it times, per frame:

* ``torch``: the registry module's forward, float NCHW input;
* ``torch cl``: the same in channels-last, the layout the engine feeds;
* ``onnx``: the cached ONNX export in an onnxruntime CPU session;
* ``engine torch`` / ``engine onnx``: whole frames through SREngine (uint8
  in and out, untiled, batch 1), what ``vhsup upscale`` spends per frame.

One untimed warm-up per size and variant comes first (oneDNN and
onnxruntime pick kernels on the first call of a shape); then the variants
take turns frame by frame and the median is reported. Both runtimes get
the same thread count: ``torch.set_num_threads`` and onnxruntime's
``intra_op_num_threads`` (which OnnxModule takes from torch). The load
average is printed: on a shared machine, compare ratios within one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vhsup.backends.onnx import load_onnx_model
from vhsup.engine import SREngine
from vhsup.registry import load_model


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    """Colour waves plus grain, so the model sees video-like detail."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (
        np.stack([np.sin(xx / rng.uniform(4, 30) + c) * np.cos(yy / rng.uniform(4, 30) + c) for c in range(3)], -1) * 90
        + 128
    )
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _interleaved(variants: dict, n: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds per call of each variant, and its last output.

    Each variant is warmed up once, then the variants take turns frame by
    frame (A B C, A B C, ...): on a shared machine the other processes'
    load then falls on all of them alike, where timing one variant after
    another would hand one of them a busy minute.
    """
    out = {name: fn(0) for name, fn in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(n):
        for name, fn in variants.items():
            t = time.perf_counter()
            out[name] = fn(i)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}, out


def _forward(module, inputs):
    def call(i: int):
        with torch.inference_mode():
            return module(inputs[i])

    return call


def run(model_name: str, sizes: list[tuple[int, int, int]], threads: int) -> dict:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    torch_model = load_model(model_name)
    net = torch_model.module.eval()
    # The engine sets channels-last on the module it is given; the plain
    # NCHW variant gets its own copy so the two layouts do not mix.
    nchw = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        onnx_model = load_onnx_model(torch_model, cache_dir=cache)
        export_s = time.perf_counter() - t
        rows = []
        for w, h, n in sizes:
            pics = [_picture(h, w, i) for i in range(n)]
            xs = [torch.from_numpy(p).permute(2, 0, 1)[None].float().div(255).contiguous() for p in pics]
            xcl = [x.contiguous(memory_format=torch.channels_last) for x in xs]
            e_torch = SREngine(torch_model, device="cpu", tile=0, batch=1)  # makes net channels-last
            e_onnx = SREngine(onnx_model, device="cpu", tile=0, batch=1)
            t, out = _interleaved(
                {
                    "torch": _forward(nchw, xs),
                    "torch_cl": _forward(net, xcl),
                    "onnx": _forward(onnx_model.module, xs),
                    "engine_torch": lambda i, e=e_torch, p=pics: e.upscale([p[i]])[0],
                    "engine_onnx": lambda i, e=e_onnx, p=pics: e.upscale([p[i]])[0],
                },
                n,
            )
            rows.append(
                {
                    "size": f"{w}x{h}",
                    "frames": n,
                    "torch_s": round(t["torch"], 4),
                    "torch_channels_last_s": round(t["torch_cl"], 4),
                    "onnx_s": round(t["onnx"], 4),
                    "onnx_speedup_vs_best_torch": round(min(t["torch"], t["torch_cl"]) / t["onnx"], 3),
                    "engine_torch_fps": round(1 / t["engine_torch"], 3),
                    "engine_onnx_fps": round(1 / t["engine_onnx"], 3),
                    "max_abs_diff_float": float((out["torch_cl"] - out["onnx"]).abs().max()),
                    "max_diff_uint8": int(np.abs(out["engine_torch"].astype(np.int16) - out["engine_onnx"]).max()),
                }
            )
    return {
        "model": model_name,
        "device": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "export_and_check_s": round(export_s, 2),
        # 1-minute load average before and after; this run adds ``threads``.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        (
            f"{result['model']} on {result['device']}, {result['threads']} threads, torch {result['torch']}, "
            f"onnxruntime {result['onnxruntime']} (export + check {result['export_and_check_s']} s, "
            f"load average {result['load_average'][0]} before, {result['load_average'][1]} after)"
        ),
        "",
        (
            "| size | torch s/frame | torch channels-last | onnx CPU EP | onnx speed-up | engine fps torch | "
            "engine fps onnx | max diff (float / uint8) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['size']} | {r['torch_s']} | {r['torch_channels_last_s']} | {r['onnx_s']} | "
            f"{r['onnx_speedup_vs_best_torch']}x | {r['engine_torch_fps']} | {r['engine_onnx_fps']} | "
            f"{r['max_abs_diff_float']:.2g} / {r['max_diff_uint8']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="compact-x4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--small-frames", type=int, default=6, help="timed frames at 180x120")
    ap.add_argument("--large-frames", type=int, default=3, help="timed frames at 720x480")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    if min(args.small_frames, args.large_frames) < 1:
        ap.error("each size needs at least one timed frame")
    result = run(args.model, [(180, 120, args.small_frames), (720, 480, args.large_frames)], args.threads)
    print(json.dumps(result, indent=2))
    print()
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
