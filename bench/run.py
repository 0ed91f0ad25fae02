"""vhsup benchmarks: pipeline overhead and memory growth. Results go in bench/RESULTS.md.

    .venv/bin/python bench/run.py overhead --model compact-x4 --frames 6
    .venv/bin/python bench/run.py memory --model bicubic --seconds 2 --factor 10

``overhead`` builds a 720x480 interlaced DV sample (the demo's VHS-like
capture) and runs ``vhsup bench`` on it: model-only fps on frames already
decoded vs end-to-end fps from the file to an encoded output. ``memory``
upscales a clip and one ``factor`` times longer in fresh processes and
compares their peak RSS: streaming means memory must not grow with length.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def overhead(args: argparse.Namespace) -> dict:
    from vhsup.bench import run_bench
    from vhsup.samples import make_vhs_sample

    with tempfile.TemporaryDirectory() as tmp:
        sample = make_vhs_sample(Path(tmp) / "tape.avi", seconds=max(1.0, args.frames / 29.97 + 0.5))
        result = run_bench(
            sample.path, model=args.model, frames=args.frames, tile=args.tile, preset=args.preset, codec=args.codec
        )
    result["input"] = "vhs sample 720x480 DV (bff)"
    return result


_CHILD = """
import json, resource, sys, time
from vhsup import upscale_video
t = time.perf_counter()
r = upscale_video(sys.argv[1], sys.argv[2], model=sys.argv[3], preset="ultrafast", overwrite=True)
print(json.dumps({"frames": r.frames_out, "seconds": round(time.perf_counter() - t, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def memory(args: argparse.Namespace) -> dict:
    from vhsup.samples import make_vhs_sample

    out = {"model": args.model, "device": _device()}
    with tempfile.TemporaryDirectory() as tmp:
        for label, seconds in (("short", args.seconds), ("long", args.seconds * args.factor)):
            sample = make_vhs_sample(Path(tmp) / f"{label}.avi", seconds=seconds)
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(sample.path), str(Path(tmp) / f"{label}.mkv"), args.model],
                capture_output=True,
                text=True,
                check=True,
            )
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["rss_growth"] = round(out["long"]["peak_rss_mb"] / out["short"]["peak_rss_mb"] - 1, 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--model", default="compact-x4")
    o.add_argument("--frames", type=int, default=6)
    o.add_argument("--tile", default="auto")
    o.add_argument("--preset", default=None)
    o.add_argument("--codec", default="libx264")
    m = sub.add_parser("memory")
    m.add_argument("--model", default="bicubic")
    m.add_argument("--seconds", type=float, default=2.0)
    m.add_argument("--factor", type=int, default=10)
    args = p.parse_args()
    t0 = time.perf_counter()
    result = overhead(args) if args.what == "overhead" else memory(args)
    result["device"] = result.get("device") or _device()
    result["date"] = time.strftime("%Y-%m-%d")
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
