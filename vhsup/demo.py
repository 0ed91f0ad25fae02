"""``make demo``: build a VHS-like sample offline and upscale part of it.

The sample is a real DV-in-AVI capture as a DV bridge would record a tape:
720x480 NTSC, bottom field first, 4:1:1 chroma, VHS softness, chroma delay,
noise, dropouts, head-switching lines and a stereo PCM track with a click on
each second's sync flash. Upscaling all of it with a GAN on a 2-core CPU
would take minutes, so on the CPU the demo upscales a window of frames
around the one-second sync cue; on CUDA it does the whole clip.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vhsup.errors import VhsupError
from vhsup.wording import plural


def run_demo(out_dir: Path, *, model: str | None = None, echo: Callable[[str], None] = print) -> dict:
    import torch

    from vhsup.pipeline import upscale_video
    from vhsup.samples import make_vhs_sample

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    sample = make_vhs_sample(out_dir / "vhs-sample.avi", seconds=2.0)
    echo(
        f"built {sample.path}: {plural(sample.frames, 'frame')} of interlaced NTSC DV with stereo PCM "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    window: dict[str, Any] = {} if cuda else {"start": 0.8, "frames": 8}
    dst = out_dir / f"vhs-sample.{model or ('esrgan-x4' if cuda else 'compact-x4')}.mkv"
    still = out_dir / "compare.png"
    what = "the whole clip" if cuda else f"{plural(window['frames'], 'frame')} from {window['start']} s"
    echo(f"upscaling {what} with {model or 'the default model'} on {'CUDA' if cuda else 'the CPU'} ...")

    def notice(msg: str) -> None:
        echo(f"  note: {msg}")

    try:
        result = upscale_video(sample.path, dst, model=model, compare=still, overwrite=True, notice=notice, **window)
    except VhsupError:
        raise
    echo(
        f"wrote {result.output}: {plural(result.frames_out, 'frame')} {result.width}x{result.height} "
        f"(display {result.display_aspect}), {result.deinterlace}, {plural(result.audio_streams, 'audio stream')}, "
        f"{result.fps_out} fps with {result.model} on {result.device}"
    )
    echo(f"side-by-side still (bicubic vs {result.model}): {result.compare}")
    echo(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return result.to_json()
