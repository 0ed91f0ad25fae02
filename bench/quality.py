"""One honest quality figure for `vhsup train`: held-out PSNR-Y before/after.

    .venv/bin/python bench/quality.py [--minutes 10] [--out /tmp/vhsup-quality]

1. Builds a clip the way the tests build media: a 360x240 MPEG-2 slideshow
   at high bit rate, 3 s per picture with a slow pan, seven real photos
   from scikit-image (the pictures the test suite uses).
2. `vhsup extract`s frames from it (deinterlace/crop/aspect as upscale).
3. Holds out every frame of the last two photos (chelsea, immunohistochemistry)
   as `--val-frames`, so validation pictures were never trained on.
4. Fine-tunes compact-x4 from its pretrained weights with the "vhs"
   degradation preset, pixel loss only (L1: the PSNR-honest objective; the
   GAN stage trades PSNR for texture), for a fixed wall-clock budget.
5. Prints held-out PSNR-Y/SSIM for bicubic, the start model and the
   fine-tuned EMA model, all on the same fixed-seed degraded LR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data as sk

from vhsup.train.config import resolve
from vhsup.train.extract import extract_frames, read_manifest
from vhsup.train.trainer import Trainer

PHOTOS = ["astronaut", "coffee", "rocket", "hubble_deep_field", "retina", "chelsea", "immunohistochemistry"]
HELD_OUT = 2  # the last two photos
SECONDS_EACH = 3
RATE = Fraction(30000, 1001)
W, H = 360, 240


def _slideshow(path: Path) -> None:
    with av.open(str(path), "w", format="mpeg") as out:
        s = out.add_stream("mpeg2video", rate=RATE)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.bit_rate = 8_000_000
        s.codec_context.qmax = 4
        n = int(SECONDS_EACH * RATE)
        for name in PHOTOS:
            img = getattr(sk, name)()
            scale = max(1.25 * W / img.shape[1], 1.25 * H / img.shape[0], 0.0)
            scale = max(scale, min(2 * W / img.shape[1], 2 * H / img.shape[0]))
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            for i in range(n):
                x = round((img.shape[1] - W) * i / (n - 1))
                y = round((img.shape[0] - H) * i / (n - 1))
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[y : y + H, x : x + W]), format="rgb24")
                for p in s.encode(frame):
                    out.mux(p)
        for p in s.encode():
            out.mux(p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/vhsup-quality"))
    ap.add_argument("--frames", type=int, default=70)
    ap.add_argument("--steps-per-check", type=int, default=50)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    clip = args.out / "slideshow.mpg"
    _slideshow(clip)
    frames = args.out / "frames"
    report = extract_frames([clip], frames, count=args.frames, min_gap=0.2)
    val = args.out / "val"
    val.mkdir()
    cut = (len(PHOTOS) - HELD_OUT) * SECONDS_EACH
    for row in read_manifest(frames):
        if row["source_time"] >= cut:
            shutil.move(frames / row["frame"], val / row["frame"])
    n_train, n_val = len(list(frames.glob("*.png"))), len(list(val.glob("*.png")))
    print(f"extracted {report.frames} frames: {n_train} train, {n_val} held out")

    run = args.out / "run"
    base = dict(
        frames=frames,
        val_frames=val,
        model="compact-x4",
        out=run,
        gan=False,
        perceptual="none",
        preset="vhs",
        patch=128,
        batch=4,
        val_every=10**9,
        save_every=10**9,
        quiet=True,
        seed=0,
    )
    t0 = time.monotonic()
    trainer = Trainer(resolve(flags={**base, "steps": 10**6}))
    trainer.validator = trainer._make_validator()  # run() makes it; this loop stops on time, not steps
    budget = args.minutes * 60
    steps = 0
    while time.monotonic() - t0 < budget:
        trainer.train_step(trainer.next_batches())
        steps += 1
    seconds = time.monotonic() - t0
    metrics = trainer.validator.evaluate(trainer.ema)
    print(
        json.dumps(
            {
                "steps": steps,
                "seconds": round(seconds, 1),
                "patch_hr": 128,
                "batch": 4,
                "train_frames": n_train,
                "val_frames": n_val,
                **{k: round(v, 4) for k, v in metrics.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
