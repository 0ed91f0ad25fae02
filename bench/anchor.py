"""The anchor's speed and what it does to shimmer: vs_temporalfix classic on a synthetic clip.

    .venv/bin/python bench/anchor.py [--size 960x640] [--frames 30] [--sigma 6] [--strength 500] [--tr 6]

Needs the anchor venv (`make anchor-venv`). The clip is a still picture
(scikit-image's astronaut, resized) with fresh per-frame noise, the shimmer
a per-frame upscaler adds where nothing moves. Two kinds of noise, both of
standard deviation ``--sigma`` codes per channel: "grain" (independent per
pixel) and "texture" (the same noise blurred by a 1.5 px Gaussian and
rescaled: coarser, more like the detail a GAN invents anew in every frame).

Prints, per kind: the wall time of :func:`vhsup.eval.anchor.temporalfix`
(staging, the 3.12 worker, reading back: all of it) and its fps; E_warp
under zero motion (the truth's motion: nothing moves) before and after;
their ratio; and PSNR-Y against the clean picture before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np
from skimage import data

from vhsup.eval import anchor
from vhsup.eval.metrics import e_warp, psnr_y


def _noise(kind: str, shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.normal(0.0, 1.0, shape).astype(np.float32)
    if kind == "texture":
        n = cv2.GaussianBlur(n, (0, 0), 1.5)
        n /= n.std()
    return n * sigma


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="960x640")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--sigma", type=float, default=6.0)
    parser.add_argument("--strength", type=int, default=anchor.DEFAULT_STRENGTH)
    parser.add_argument("--tr", type=int, default=anchor.DEFAULT_TR)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    reason = anchor.available()
    if reason is not None:
        print(f"the anchor cannot run: {reason}", file=sys.stderr)
        return 1
    w, h = (int(v) for v in args.size.split("x"))
    pic = cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)
    still = [np.zeros((h, w, 2), np.float32)] * (args.frames - 1)
    print(
        f"{args.frames} frames {w}x{h}, strength {args.strength}, tr {args.tr}, "
        f"threads {args.threads or 'all'} ({os.cpu_count()} cores), noise sigma {args.sigma:g}"
    )
    print("| noise | s | fps | E_warp before | E_warp after | ratio | PSNR-Y before | PSNR-Y after |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("grain", "texture"):
        rng = np.random.default_rng(0)
        noisy = [
            np.clip(np.rint(pic + _noise(kind, pic.shape, args.sigma, rng)), 0, 255).astype(np.uint8)
            for _ in range(args.frames)
        ]
        t0 = time.perf_counter()
        out = anchor.temporalfix(noisy, strength=args.strength, tr=args.tr, threads=args.threads)
        dt = time.perf_counter() - t0
        before, after = e_warp(noisy, still), e_warp(out, still)
        p_before = float(np.mean([psnr_y(f, pic) for f in noisy]))
        p_after = float(np.mean([psnr_y(f, pic) for f in out]))
        print(
            f"| {kind} | {dt:.1f} | {args.frames / dt:.2f} | {before:.3f} | {after:.3f} | {after / before:.3f} "
            f"| {p_before:.2f} | {p_after:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
