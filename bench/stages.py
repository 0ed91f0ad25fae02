"""Ceilings of the CPU stages around the model: how fast a GPU could be fed.

    .venv/bin/python bench/stages.py [--frames 8] [--presets ultrafast,veryfast,medium]

Each stage alone, in this process, on the demo's 720x480 VHS-like DV sample:

- ``decode``: PyAV decode + bwdif + conversion to RGB (``Run.source_pictures``);
- ``rgb->yuv420p``: swscale's conversion of an RGB frame (PyAV ``reformat``,
  one thread, as the encoder runs it) at 2880x1920 and 1440x1080;
- ``x264 <preset>``: vhsup's encoder (the resize-free path: frames already at
  the output size), conversion included, at both sizes.

Frames per second, one markdown table line per row. A run can go no faster
than its slowest stage; ``vhsup bench --json`` names it for a given file.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vhsup.media.colour import output_colour, source_colour  # noqa: E402
from vhsup.media.encode import EncodeSettings, VideoEncoder  # noqa: E402
from vhsup.media.picture import Picture  # noqa: E402
from vhsup.pipeline import Options, Run  # noqa: E402
from vhsup.samples import make_vhs_sample  # noqa: E402

SIZES = ((2880, 1920), (1440, 1080))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--presets", default="ultrafast,veryfast,medium")
    args = p.parse_args()
    print(f"# {platform.processor() or platform.machine()}, PyAV {av.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| stage | size | fps |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        sample = make_vhs_sample(Path(tmp) / "tape.avi", seconds=args.frames / 29.97 + 0.5).path
        run = Run(sample, Options(model="bicubic", frames=args.frames, deinterlace="bwdif"))
        t0 = time.perf_counter()
        pics = list(run.source_pictures())
        print(f"| decode + bwdif + RGB | 720x480 | {len(pics) / (time.perf_counter() - t0):.1f} |", flush=True)
        for w, h in SIZES:
            frames = [cv2.resize(pic.rgb, (w, h), interpolation=cv2.INTER_CUBIC) for pic in pics]
            colour = output_colour(source_colour(480, None, None), h)
            t0 = time.perf_counter()
            for f in frames:
                av.VideoFrame.from_ndarray(f, format="rgb24").reformat(
                    format="yuv420p", src_colorspace=colour.matrix, dst_colorspace=colour.matrix, threads=1
                )
            print(f"| rgb->yuv420p (swscale, 1 thread) | {w}x{h} | {len(frames) / (time.perf_counter() - t0):.1f} |")
            for preset in args.presets.split(","):
                enc = VideoEncoder(
                    Path(tmp) / f"x-{w}-{preset}.mkv",
                    src=sample,
                    width=w,
                    height=h,
                    rate=Fraction(30000, 1001),
                    sar=Fraction(1),
                    colour=colour,
                    settings=EncodeSettings(codec="libx264", preset=preset),
                    stage_for="matroska",
                )
                t0 = time.perf_counter()
                for k, (pic, f) in enumerate(zip(pics, frames)):
                    enc.write(Picture(np.ascontiguousarray(f), pic.time, k))
                enc.close()
                fps = len(frames) / (time.perf_counter() - t0)
                print(f"| x264 {preset} (conversion included) | {w}x{h} | {fps:.2f} |", flush=True)


if __name__ == "__main__":
    main()
