"""``vhsup bench``: how close the whole pipeline runs to the model's own speed.

Model-only fps times the SR engine on frames that are already decoded,
deinterlaced and in memory: after a warm-up at the batch size it will run
(so TensorRT's engine build and cuDNN's autotuning happen there, not in the
timed part), over every decoded frame and at least :data:`TIMED_BATCHES`
batches (the decoded frames again, in turn, where they are fewer). End-to-end fps times the full pipeline on the
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

#: Fewest forward passes (batches) the model-only timing covers.
TIMED_BATCHES = 3


#: What a user can do when a stage holds the run back (``slowest_stage``).
ADVICE = {
    "decode": "decode-bound: decoding, deinterlacing and restoring run on the CPU; "
    "--deinterlace bwdif or fewer restore stages are faster",
    "model": "model-bound: a lighter model (compact-x4), a GPU, or --precision fp16/bf16 on one",
    "stabilise": "stabiliser-bound: --temporal off skips the stabiliser",
    "encode": "encode-bound: try a faster --preset (e.g. faster, veryfast) or a smaller --height (e.g. 1080)",
}


def _encode_seconds(run: Run, source: list, outputs: list, dst: Path) -> float:
    """Seconds the run's encoder takes for ``outputs`` alone (resize to the output size included)."""
    from vhsup.media.geometry import fit
    from vhsup.media.picture import Picture

    g = run.plan.geometry
    t0 = time.perf_counter()
    encoder = run.open_encoder(dst, source[0].time, stage_for="matroska")
    try:
        for pic, sr in zip(source, outputs):
            encoder.write(Picture(fit(sr, g.out_w, g.out_h), pic.time, pic.index))
        encoder.close()
    except BaseException:
        encoder.abort()
        raise
    return time.perf_counter() - t0


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
    **options: object,
) -> dict:
    """Model-only and end-to-end fps on ``file`` (one JSON-ready dict).

    ``options``: the other fields of :class:`vhsup.pipeline.Options` that
    ``vhsup bench`` offers (``detail``, ``temporal``).
    """
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
        **options,  # type: ignore[arg-type]
    )
    run = Run(Path(file), opts)
    engine = run.engine
    t0 = time.perf_counter()
    source = list(run.source_pictures())
    decode_s = time.perf_counter() - t0
    if not source:
        raise RuntimeError(f"{file}: no frames decoded")
    rgb = [p.rgb for p in source]
    # Frames per call: enough for one full batch (of frames, or of their tiles).
    per_frame = engine.items_per_frame(rgb[0].shape[:2])  # settles the automatic tile and batch
    step = max(1, -(-engine.batch // per_frame))
    # Each forward pass's batch size, seen at the module itself.
    sizes: list[int] = []
    hook = engine.module.register_forward_pre_hook(lambda _m, args: sizes.append(int(args[0].shape[0])))
    try:
        # Warm-up at the real batch: allocations, cuDNN's autotuning and
        # TensorRT's engine (built for the largest batch it is first given).
        engine.upscale([rgb[i % len(rgb)] for i in range(step)])
        warmup = list(sizes)
        passes = engine.stats["forward_passes"]
        # Every decoded frame, and at least TIMED_BATCHES full batches.
        timed = -(-max(len(rgb), -(-TIMED_BATCHES * engine.batch // per_frame)) // step) * step
        t0 = time.perf_counter()
        outputs: list = []  # the model's output of each source frame, once (for the later stages)
        for i in range(0, timed, step):
            got = engine.upscale([rgb[k % len(rgb)] for k in range(i, i + step)])
            outputs += got[: max(0, len(rgb) - len(outputs))]
        model_s = time.perf_counter() - t0
        timed_batches = engine.stats["forward_passes"] - passes
    finally:
        hook.remove()
    n = len(source)
    stage_fps = {"decode": n / decode_s, "model": timed / model_s}
    steady = run.stabiliser()
    if steady is not None:
        t0 = time.perf_counter()
        for k, (pic, sr) in enumerate(zip(source, outputs)):
            outputs[k] = steady.push(k, pic.rgb, sr)
        stage_fps["stabilise"] = n / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        stage_fps["encode"] = n / _encode_seconds(run, source, outputs, Path(tmp) / "encode.mkv")
        t0 = time.perf_counter()
        result = run.write(Path(tmp) / "bench.mkv")
        e2e_s = time.perf_counter() - t0
    slowest = min(stage_fps, key=lambda k: stage_fps[k])
    desc = engine.describe()
    extra = {k: desc[k] for k in ("fp32_convs", "switched_conv", "providers") if k in desc}
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
        "warmup_batch": max(warmup, default=0),
        "timed_frames": timed,
        "timed_batches": timed_batches,
        "input_size": f"{g.in_w}x{g.in_h}",
        "output_size": f"{g.out_w}x{g.out_h}",
        "codec": codec,
        "temporal": run.plan.temporal,
        # The restore stages timed within "decode" (stage_fps).
        "deinterlace": run.plan.filters.describe(),
        "denoise": run.plan.denoise.label(),
        **extra,
        "model_only_fps": round(timed / model_s, 4),
        "end_to_end_fps": round(result.frames_out / e2e_s, 4),
        # Both for the same input frames: the pipeline's overhead.
        "end_to_end_over_model_time": round(e2e_s / (model_s * n / timed), 4),
        # Each stage alone on the same frames (decode: decode, deinterlace,
        # restore and the conversion to RGB; encode: the resize to the output
        # size, RGB->YUV and the encoder): the run goes no faster than the slowest.
        "stage_fps": {k: round(v, 4) for k, v in stage_fps.items()},
        "slowest_stage": slowest,
        "end_to_end_over_slowest_stage": round(result.frames_out / e2e_s / stage_fps[slowest], 4),
        "advice": ADVICE[slowest],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "notices": list(run.notices),
    }
