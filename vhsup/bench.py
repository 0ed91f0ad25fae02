"""``vhsup bench``: how close the whole pipeline runs to the model's own speed.

Model-only fps times the SR engine on frames that are already decoded,
deinterlaced and in memory. End-to-end fps times the full pipeline on the
same frames, from the file to a real encoded output (the temporal
stabiliser included, when the run's ``temporal`` mode is on). Their ratio is the
pipeline's overhead: with decode and encode in their own threads it should
stay close to 1.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

from vhsup.pipeline import Options, Run


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_bench(
    file: str | os.PathLike[str],
    *,
    model: str | None = None,
    frames: int = 8,
    backend: str = "torch",
    device: str = "auto",
    precision: str = "auto",
    tile: int | str = "auto",
    batch: int | str = "auto",
    codec: str = "libx264",
    preset: str | None = None,
) -> dict:
    opts = Options(
        model=model,
        backend=backend,
        device=device,
        precision=precision,
        tile=tile,
        batch=batch,
        codec=codec,
        preset=preset,
        frames=frames,
        overwrite=True,
    )
    run = Run(Path(file), opts)
    engine = run.engine
    source = list(run.source_pictures())
    if not source:
        raise RuntimeError(f"{file}: no frames decoded")
    engine.upscale([source[0].rgb])  # warm-up: allocations, autotuning
    step = max(1, engine.batch)
    t0 = time.perf_counter()
    for i in range(0, len(source), step):
        engine.upscale([p.rgb for p in source[i : i + step]])
    model_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run.write(Path(tmp) / "bench.mkv")
        e2e_s = time.perf_counter() - t0
    n = len(source)
    desc = engine.describe()
    g = run.plan.geometry
    return {
        "input": str(file),
        "model": run.model_name,
        "backend": backend,
        "device": str(desc.get("device")),
        "precision": str(desc.get("precision")),
        "tile": desc.get("tile"),
        "batch": desc.get("batch"),
        "frames": n,
        "input_size": f"{g.in_w}x{g.in_h}",
        "output_size": f"{g.out_w}x{g.out_h}",
        "codec": codec,
        "temporal": run.plan.temporal,
        "model_only_fps": round(n / model_s, 4),
        "end_to_end_fps": round(result.frames_out / e2e_s, 4),
        "end_to_end_over_model_time": round(e2e_s / model_s, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
