"""What the temporal stabiliser costs next to the model it follows, per frame, in one run.

    .venv/bin/python bench/stabilise.py [--model compact-x4] [--size 720x480] [--frames 4] [--device cpu]

Times the SR engine and the stabiliser on the same frames (a still picture
with fresh grain in every frame, so the stabiliser does its full work: no
cut, everything trusted), alternating them so that a busy machine slows
both alike, and prints one JSON object: ms per frame for each and their
ratio. The issue's target is a stabiliser under 10% of compact-x4's CPU
time per frame. On CUDA both run on the device and are synchronised
before each clock read.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from vhsup.engine import SREngine
from vhsup.registry import load_model
from vhsup.stabilise import Stabiliser


def grainy_frames(n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 60 * np.sin(xx / (9 + 4 * c) + yy / 13) for c in range(3)], -1)
    return [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="compact-x4")
    ap.add_argument("--size", default="720x480")
    ap.add_argument("--frames", type=int, default=4, help="timed frames (after one warm-up frame)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mode", default="auto", choices=["light", "auto", "strong"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    engine = SREngine(load_model(args.model), device=args.device, precision="fp32", tile=0, batch=1)
    stab = Stabiliser(args.mode, device=engine.device)
    frames = grainy_frames(args.frames + 1, width, height)

    def sync() -> None:
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)

    model_s = stab_s = 0.0
    for i, src in enumerate(frames):
        sync()
        t0 = time.perf_counter()
        sr = engine.upscale([src])[0]
        sync()
        t1 = time.perf_counter()
        stab.push(i, src, sr)
        sync()
        t2 = time.perf_counter()
        if i:  # frame 0: warm-up for both (allocations; the stabiliser has nothing to carry yet)
            model_s += t1 - t0
            stab_s += t2 - t1
    if stab.cuts:
        raise SystemExit("the stabiliser saw a cut in a still picture: the timing is not of its full work")
    n = args.frames
    print(
        json.dumps(
            {
                "model": args.model,
                "mode": args.mode,
                "device": str(engine.device),
                "threads": args.threads,
                "input": f"{width}x{height}",
                "output": f"{width * engine.scale}x{height * engine.scale}",
                "frames": n,
                "model_ms_per_frame": round(1000 * model_s / n, 1),
                "stabiliser_ms_per_frame": round(1000 * stab_s / n, 1),
                "stabiliser_over_model": round(stab_s / model_s, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
