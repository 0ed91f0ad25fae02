"""vs_temporalfix's classic mode on a clip of RGB frames: the anchor's side of :mod:`vhsup.eval.anchor`.

This file runs as a script under the anchor venv's Python 3.12
(``make anchor-venv``), never in vhsup's own venv. It imports only numpy,
vapoursynth and vs_temporalfix, and nothing of vhsup, so that the 3.12 venv
needs neither torch nor vhsup installed::

    python temporalfix_worker.py run IN.npy OUT.npy --strength 500 --tr 6
    python temporalfix_worker.py check

``run`` reads an N x H x W x 3 uint8 RGB ``.npy`` (memory-mapped, so a long
clip is never held twice), and writes the same shape to ``OUT.npy`` one frame
at a time, in order. ``check`` builds the filter on a small clip and renders
a frame of it: it fails exactly where a real run would, for example with
vapoursynth-mvutensils 10, whose ``AnalyseMany`` refuses the ``fields``
argument vs_temporalfix passes.

**Colour.** Frames go into VapourSynth as RGB24 tagged full range
(``_Range`` = full, ``_Matrix`` = RGB), as an RGB upscaler's output is. That
is the input vs_temporalfix is written for: it converts RGB itself to
16-bit YUV 4:4:4 (BT.709 matrix, full range; no chroma subsampling, so no
chroma resampling), filters there, and converts back to RGB24 with
error-diffusion dither. The round trip through 16 bits is exact on a clip it
leaves alone (a static clip, or any clip at strength 0): every code comes
back as it went in.

**Small clips.** Classic mode refuses clips under 4 frames or under 64
pixels wide or high. Such a clip is grown here by repeating its last frame,
or its last column or row, and the result cut back to the input's count and
size, so any clip of at least one frame goes through.

Errors are reported as one line on stderr, starting with ``error:``, and
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

try:
    import numpy as np
except ImportError as e:  # the one import the script needs before it can report in its own way
    print(f"error: cannot import numpy: {e}", file=sys.stderr)
    sys.exit(2)

# The clip's rate: only a tag for the filter (it never looks at time).
_FPS = (30000, 1001)

# The smallest clip vs_temporalfix's classic mode takes: its motion mask
# shifts the clip by up to 3 frames, and its motion search needs 64 pixels
# each way (the message is mvtools' "block size has no multiple that will
# process the entire frame").
MIN_FRAMES = 4
MIN_SIZE = 64


class WorkerError(Exception):
    """A problem with the request or the environment, reported in one line."""


def _vapoursynth() -> Any:
    try:
        import vapoursynth as vs  # type: ignore[import-not-found,unused-ignore]
    except Exception as e:
        raise WorkerError(f"cannot import vapoursynth: {e}") from e
    return vs


def _classic() -> Any:
    try:
        from vs_temporalfix.temporalfix_classic import classic  # type: ignore[import-not-found,unused-ignore]
    except Exception as e:
        raise WorkerError(f"cannot import vs_temporalfix: {e}") from e
    return classic


def _source(vs: Any, frames: np.ndarray) -> Any:
    """A VapourSynth RGB24 clip of ``frames``, read when the filter asks, grown to the filter's minimum.

    Frame n is ``frames[n]``. A clip shorter than ``MIN_FRAMES`` repeats its
    last frame; a picture smaller than ``MIN_SIZE`` repeats its last column
    or row (see the module notes). :func:`temporalfix_clip` trims both off.
    """
    count, h, w, _ = frames.shape
    pad_h, pad_w = max(0, MIN_SIZE - h), max(0, MIN_SIZE - w)
    core = vs.core
    blank = core.std.BlankClip(
        width=w + pad_w,
        height=h + pad_h,
        format=vs.RGB24,
        length=max(count, MIN_FRAMES),
        fpsnum=_FPS[0],
        fpsden=_FPS[1],
    )
    blank = core.std.SetFrameProps(blank, _Range=int(vs.RANGE_FULL), _Matrix=int(vs.MATRIX_RGB), _FieldBased=0)

    def load(n: int, f: Any) -> Any:  # ModifyFrame passes n and f by name
        frame = frames[min(n, count - 1)]
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frame[:, :, p])
        return out

    return core.std.ModifyFrame(blank, blank, load)


def temporalfix_clip(vs: Any, frames: np.ndarray, *, strength: int, tr: int, threads: int | None = None) -> Any:
    """vs_temporalfix's classic mode over ``frames`` (N x H x W x 3 uint8): a clip of the input's count and size."""
    classic = _classic()
    if threads:
        vs.core.num_threads = threads
    n, h, w, _ = frames.shape
    fixed = classic(_source(vs, frames), strength=strength, tr=tr)
    if fixed.format.id != vs.RGB24:
        raise WorkerError(f"vs_temporalfix returned {fixed.format.name}, expected RGB24")
    if fixed.num_frames > n:
        fixed = fixed[:n]
    if (fixed.width, fixed.height) != (w, h):
        fixed = vs.core.std.Crop(fixed, right=fixed.width - w, bottom=fixed.height - h)
    if fixed.num_frames != n:
        raise WorkerError(f"vs_temporalfix returned {fixed.num_frames} frames, expected {n}")
    return fixed


def run(src: str, dst: str, *, strength: int, tr: int, threads: int | None) -> None:
    vs = _vapoursynth()
    frames = np.load(src, mmap_mode="r")
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise WorkerError(f"{src}: expected N x H x W x 3 uint8 frames, got {frames.dtype} {frames.shape}")
    fixed = temporalfix_clip(vs, frames, strength=strength, tr=tr, threads=threads)
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=np.uint8, shape=frames.shape)
    for n, frame in enumerate(fixed.frames()):  # in order, rendered ahead on the core's threads
        for p in range(3):
            out[n, :, :, p] = np.asarray(frame[p])
    out.flush()
    del out


def check() -> None:
    """Build the filter on a small clip and render one frame: the import and every plugin it calls."""
    vs = _vapoursynth()
    rng = np.random.default_rng(0)
    # 128 px: at 96x64 mvutensils 10 stops on "frame is too small" before the real break ("fields").
    frames = rng.integers(0, 256, size=(8, 128, 128, 3), dtype=np.uint8)
    fixed = temporalfix_clip(vs, frames, strength=500, tr=2, threads=1)
    fixed.get_frame(4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run")
    p_run.add_argument("src")
    p_run.add_argument("dst")
    p_run.add_argument("--strength", type=int, required=True)
    p_run.add_argument("--tr", type=int, required=True)
    p_run.add_argument("--threads", type=int, default=None)
    sub.add_parser("check")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check()
        else:
            run(args.src, args.dst, strength=args.strength, tr=args.tr, threads=args.threads)
    except WorkerError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except Exception as e:  # vapoursynth's own errors (vs.Error, a plugin's message) and vs_temporalfix's checks
        # vs.Error carries the traceback of a failed Python callback in its text: its last line is the reason.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        kind = "" if type(e).__name__ == "Error" else f"{type(e).__name__}: "  # vs.Error's text names the filter
        print(f"error: {kind}{lines[-1] if lines else 'no message'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
