"""The upscale pipeline, top to bottom: probe -> decode -> filter -> restore -> infer -> stabilise -> stitch -> encode.

Three threads share the work. A decode thread demuxes, decodes,
removes composite artefacts (``--dedot``, ``--derainbow``,
:mod:`vhsup.restore.composite`), deinterlaces, moves the chroma back onto the luma (``--chroma-shift``,
:mod:`vhsup.restore.chroma`), removes noise over time (``--denoise``,
:mod:`vhsup.restore.denoise`) and converts to RGB; ``--restore`` fills
those in the restorers' order (:mod:`vhsup.restore.preset`). The calling thread runs
the SR engine in batches (blended with a Lanczos upscale below
``--detail 1``) and the temporal stabiliser (:mod:`vhsup.stabilise`) frame by
frame; an encode thread resizes to the target, converts to YUV, encodes
and muxes (copying the audio and subtitles alongside). Bounded queues
between them keep memory flat however long the tape is.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from vhsup.atomic import check_output
from vhsup.errors import Interrupted, VhsupError
from vhsup.media.autocrop import auto_crop
from vhsup.media.colour import output_colour, source_colour
from vhsup.media.decode import DecodeStats, decode_from, open_input
from vhsup.media.filters import FilterPlan, pictures, plan_filters, progressive_frames
from vhsup.media.geometry import Crop, Geometry, fit, parse_crop, plan_geometry
from vhsup.media.picture import Picture
from vhsup.media.probe import VideoInfo, probe
from vhsup.options import Options, model_name
from vhsup.preview import check_still_name
from vhsup.restore import preset
from vhsup.restore.chroma import ChromaShift, plan_shift, shift_frames
from vhsup.restore.composite import Composite, composite_frames, plan_composite
from vhsup.restore.denoise import Denoise, denoise_frames, plan_denoise
from vhsup.stabilise import PERIOD, Stabiliser, resolve_mode
from vhsup.stages import Background, Worker
from vhsup.wording import aspect_label, plural

if TYPE_CHECKING:
    import av
    import numpy as np

    from vhsup.media.encode import EncodeReport, VideoEncoder

Notice = Callable[[str], None]


@dataclass
class Plan:
    """What a run will do, decided before any frame is upscaled (``vhsup probe`` shows it)."""

    info: VideoInfo
    filters: FilterPlan
    geometry: Geometry
    model: str
    scale: int
    start: Fraction | None
    end: Fraction | None
    limit: int | None
    frames_estimate: int
    crop_source: str  # 'none', 'user' or 'auto'
    notices: list[str] = field(default_factory=list)  # options that will not do what they say
    temporal: str = "off"  # the stabiliser mode that runs (--temporal, with auto resolved)
    chroma: ChromaShift = field(default_factory=ChromaShift)  # before SR (--chroma-shift)
    denoise: Denoise = field(default_factory=Denoise)  # before SR, after the chroma move (--denoise)
    composite: Composite = field(default_factory=Composite)  # on the decoded frames (--dedot, --derainbow)
    restore: str = "off"  # the --restore preset that filled in the restore options
    detail: float = 1.0  # the model's share against a Lanczos upscale (--detail)

    def to_json(self) -> dict:
        g = self.geometry
        return {
            "composite": self.composite.to_json(),
            "deinterlace": self.filters.describe(),
            "output_rate": str(self.filters.rate),
            "crop": str(g.crop),
            "crop_source": self.crop_source,
            "model": self.model,
            "scale": self.scale,
            "temporal": self.temporal,
            "chroma_shift": self.chroma.to_json(),
            "denoise": {"level": self.denoise.level, "method": self.denoise.method, "radius": self.denoise.radius},
            "restore": self.restore,
            "detail": self.detail,
            "model_size": [g.in_w, g.in_h],
            "sr_size": [g.sr_w, g.sr_h],
            "output_size": [g.out_w, g.out_h],
            "output_sar": f"{g.out_sar.numerator}:{g.out_sar.denominator}",
            "display_aspect": aspect_label(g.dar),
            "frames_out_estimate": self.frames_estimate,
            "notices": list(self.notices),
        }


@dataclass
class Result:
    """The ``--json`` summary of a finished run."""

    input: str
    output: str | None
    model: str
    device: str
    precision: str
    tile: int
    frames_in: int
    frames_out: int
    fps_out: float
    width: int
    height: int
    display_aspect: str
    audio_streams: int
    subtitle_streams: int
    decode_errors: int
    seconds: float
    output_rate: str = ""
    deinterlace: str = ""
    crop: str = ""
    transcoded: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    compare: str | None = None
    backend: str = "torch"
    temporal: str = "off"
    chroma_shift: str = "off"
    denoise: str = "off"
    composite: str = "off"
    detail: float = 1.0

    #: The fields that say how a run was set up, the same for every chunk of a chunked run.
    SETUP: ClassVar[tuple[str, ...]] = (
        "model",
        "device",
        "precision",
        "tile",
        "width",
        "height",
        "display_aspect",
        "output_rate",
        "deinterlace",
        "crop",
        "backend",
        "temporal",
        "chroma_shift",
        "denoise",
        "composite",
        "detail",
    )

    @classmethod
    def written(
        cls,
        setup: dict,
        *,
        input: str,
        output: str,
        frames_in: int,
        frames_out: int,
        decode_errors: int,
        seconds: float,
        report: EncodeReport,
        notices: list[str],
        compare: str | None,
    ) -> Result:
        """The summary of a run that wrote ``output``: ``setup`` gives the :attr:`SETUP` fields,
        ``report`` (the encoder's) the streams, ``seconds`` the speed."""
        return cls(
            input=input,
            output=output,
            frames_in=frames_in,
            frames_out=frames_out,
            fps_out=round(frames_out / seconds, 3) if seconds else 0.0,
            audio_streams=report.audio_streams,
            subtitle_streams=report.subtitle_streams,
            decode_errors=decode_errors,
            seconds=round(seconds, 3),
            transcoded=list(report.transcoded),
            notices=list(notices),
            compare=compare,
            **{name: setup[name] for name in cls.SETUP},
        )

    def to_json(self) -> dict:
        return asdict(self)


def default_output(src: Path, model: str) -> Path:
    """``episode.avi`` upscaled with esrgan-x4 -> ``episode.esrgan-x4.mkv`` beside it."""
    label = Path(model).stem if ("/" in model or os.sep in model or Path(model).suffix) else model
    return src.with_name(f"{src.stem}.{label}.mkv")


def source_range(info: VideoInfo, opts: Options) -> tuple[Fraction | None, Fraction | None, int | None]:
    """(start, end, frame limit) on the source clock from --start, --duration and --frames, checked."""
    for name in ("start", "duration"):
        value = getattr(opts, name)
        if value is not None and value < 0:
            raise VhsupError(f"--{name} must not be negative")
    if opts.frames is not None and opts.frames < 1:
        raise VhsupError("--frames must be at least 1")
    if opts.duration is not None and opts.duration <= 0:
        raise VhsupError("--duration must be positive")
    start = end = None
    if opts.start is not None:
        if info.duration is not None and opts.start >= info.duration:
            raise VhsupError(f"--start {opts.start} is past the end ({info.duration:.2f} s)", info.path)
        start = Fraction(info.start_time).limit_denominator(1_000_000) + Fraction(opts.start).limit_denominator(1000)
    if opts.duration is not None:
        base = start if start is not None else Fraction(info.start_time).limit_denominator(1_000_000)
        end = base + Fraction(opts.duration).limit_denominator(1000)
    return start, end, opts.frames


def check_detail(value: float) -> float:
    """``--detail``, checked: a share between 0 and 1."""
    if not 0.0 <= value <= 1.0:
        raise VhsupError(f"--detail must be between 0 and 1 (0: Lanczos, 1: the model), not {value}")
    return float(value)


def field_plan(info: VideoInfo, opts: Options) -> FilterPlan:
    """The field handling (deinterlace, field order, inverse telecine) ``opts`` asks for on ``info``."""
    return plan_filters(
        info,
        deinterlace=opts.deinterlace,
        field_rate=opts.field_rate,
        ivtc=opts.ivtc,
        field_order=opts.field_order,
        force_ivtc=opts.force_ivtc,
        qtgmc_preset=opts.qtgmc_preset,
    )


def make_plan(
    src: str | os.PathLike[str],
    opts: Options,
    *,
    scale: int,
    model: str,
    info: VideoInfo | None = None,
    classical: bool = False,
) -> Plan:
    """Probe and decide fields, crop, range, sizes and the stabiliser for a model of ``scale``
    (``classical``: a resampler such as bicubic, which ``--temporal auto`` leaves alone)."""
    path = Path(src)
    info = info or probe(path)
    opts = preset.resolve(opts, info)
    filters = field_plan(info, opts)
    composite = plan_composite(opts.dedot, opts.derainbow, info, filters)
    crop = opts.crop if isinstance(opts.crop, Crop) else parse_crop(opts.crop)
    crop_source = "none" if not crop else "user"
    if isinstance(crop, str):  # parse_crop's one string: "auto"
        crop = auto_crop(path, info)
        crop_source = "auto"
    geometry = plan_geometry(
        info.width, info.height, info.sar, scale, crop=crop or None, width=opts.width, height=opts.height
    )
    start, end, limit = source_range(info, opts)
    detail = check_detail(opts.detail)
    shift = plan_shift(opts.chroma_shift, path, info)
    denoise, denoise_notes = plan_denoise(opts.denoise, info.width, info.height)
    ratio = filters.rate / info.fps if info.fps else Fraction(1)
    estimate = int(round(info.frames * ratio))
    if start is not None or end is not None:
        t0 = float(start) if start is not None else info.start_time
        t1 = float(end) if end is not None else info.start_time + (info.duration or 0)
        estimate = min(estimate, int(round(max(0.0, t1 - t0) * float(filters.rate))))
    if limit is not None:
        estimate = min(estimate, limit) if estimate else limit
    return Plan(
        info,
        filters,
        geometry,
        model,
        scale,
        start,
        end,
        limit,
        max(estimate, 0),
        crop_source,
        notices=list(filters.notes) + denoise_notes,
        temporal=resolve_mode(opts.temporal, classical),
        chroma=shift,
        denoise=denoise,
        composite=composite,
        restore=opts.restore,
        detail=detail,
    )


def _load(opts: Options, notice: Notice | None = None):
    from vhsup.registry import load_model

    name = model_name(opts)
    is_onnx_file = name.lower().endswith(".onnx")
    if opts.backend not in ("torch", "onnx"):
        raise VhsupError(f"--backend must be torch or onnx, not {opts.backend!r}")
    backend = opts.backend
    if backend == "torch" and is_onnx_file:
        backend = "onnx"
        if notice:
            notice(f"{name} is an ONNX model: running it with onnxruntime (--backend onnx)")
    if backend == "torch":
        return name, load_model(name, allow_download=opts.allow_download)
    from vhsup.backends.onnx import load_onnx_model

    source = name if is_onnx_file else load_model(name, allow_download=opts.allow_download)
    # The engine's precision still applies: the ONNX module follows its autocast.
    return name, load_onnx_model(
        source, precision="fp32" if opts.precision in ("auto", "fp32") else "fp16", notice=notice
    )


def _engine(loaded, opts: Options, notice: Notice):
    from vhsup.engine import SREngine

    return SREngine(
        loaded,
        device=opts.device,
        precision=opts.precision,
        tile=opts.tile,
        batch=opts.batch,
        notice=notice,
        detail=check_detail(opts.detail),
    )


class Run:
    """One upscale run: owns the decode thread, the engine and the encode thread.

    ``run.pictures()`` yields upscaled pictures at the output size (the
    Python API's frame iterator); ``run.write(dst)`` encodes them to a file.

    ``span`` (start, end) replaces the options' range with exact source-clock
    picture times, [start, end): a chunked run gives each chunk its own, so
    that every output picture falls in exactly one chunk.
    """

    def __init__(
        self,
        src: str | os.PathLike[str],
        opts: Options,
        notice: Notice | None = None,
        progress: Callable[[int, int], None] | None = None,
        span: tuple[Fraction | None, Fraction | None] | None = None,
    ):
        self.src = Path(src)
        self.opts = opts
        self.notices: list[str] = []
        self._user_notice = notice
        self.progress = progress
        self.info = probe(self.src)
        self.model_name, loaded = _load(opts, self.notice)
        self.backend = loaded.backend
        self.engine = _engine(loaded, opts, self.notice)
        self.plan = make_plan(
            self.src,
            opts,
            scale=self.engine.scale,
            model=self.model_name,
            info=self.info,
            classical=self.engine.descriptor.arch == "classical",
        )
        for message in self.plan.notices:
            self.notice(message)
        if span is not None:
            p = self.plan
            p.start, p.end = span
            if p.end is not None:
                t0 = p.start if p.start is not None else Fraction(self.info.start_time).limit_denominator(1_000_000)
                p.frames_estimate = max(0, round((p.end - t0) * p.filters.rate))
        self.span = span is not None
        self.stats = DecodeStats()
        self.frames_out = 0
        self.compare_pair: tuple[np.ndarray, np.ndarray] | None = None
        self.origin: Fraction | None = None

    def notice(self, message: str) -> None:
        self.notices.append(message)
        if self._user_notice:
            self._user_notice(message)

    def warm_up_start(self) -> Fraction | None:
        """Where a span's pictures start when a temporal stage must warm up on the ones before it.

        With the stabiliser on, a chunk's first frame depends on the
        :data:`~vhsup.stabilise.PERIOD` pictures before it; with ``--denoise``,
        on the denoiser's radius; with ``--dedot``/``--derainbow``, on the
        source frames they reach back to. Upscaling those too (and not writing them)
        makes a chunked run give the frames one whole run gives. Only spans
        warm up: a --start preview does not pay for it.
        """
        p = self.plan
        back = max(PERIOD if p.temporal != "off" else 0, p.denoise.radius)
        if not self.span or not (back or p.composite.on) or p.start is None:
            return None
        first = Fraction(self.info.start_time).limit_denominator(1_000_000)
        span = (back + Fraction(1, 2)) / p.filters.rate if back else Fraction(0)
        if p.composite.on and self.info.fps:  # in source frames, before any deinterlacer changes the rate
            span = max(span, (p.composite.back + Fraction(1, 2)) / self.info.fps)
        return max(first, p.start - span)

    # probe -> decode -> filter, in the decode thread
    def source_pictures(self, *, warm_up: bool = False) -> Iterator[Picture]:
        """The run's progressive, cropped source pictures, before the model (what the engine is fed).

        With ``warm_up``, the stabiliser's warm-up pictures come first (see
        :meth:`warm_up_start`), numbered -1: they are upscaled, not written.
        (The denoiser's warm-up frames only pass through the denoiser.)
        """
        plan, info = self.plan, self.info
        warm = self.warm_up_start() if warm_up else None
        container = open_input(self.src)
        progressive: Iterator[av.VideoFrame] | None = None
        try:
            stream = container.streams.video[0]
            first = warm if warm is not None else plan.start
            frames = decode_from(container, first, threads=self.opts.decode_threads, stats=self.stats)
            cleaned = composite_frames(frames, plan.composite, sar=info.sar, rate=info.fps)
            progressive = shift_frames(progressive_frames(cleaned, stream, plan.filters), plan.chroma)
            progressive = denoise_frames(progressive, plan.denoise, sar=info.sar, rate=plan.filters.rate)
            colour = source_colour(info.height, info.colorspace, info.color_range)
            if warm is None:
                yield from pictures(
                    progressive, colour, plan.geometry.crop, start=plan.start, end=plan.end, limit=plan.limit
                )
                return
            assert plan.start is not None  # warm_up_start() is None without a start
            index = 0
            for pic in pictures(progressive, colour, plan.geometry.crop, start=warm, end=plan.end):
                if pic.time < plan.start:
                    if plan.temporal != "off":  # the stabiliser's warm-up; the denoiser's needs no model
                        yield Picture(pic.rgb, pic.time, -1)
                    continue
                if plan.limit is not None and index >= plan.limit:
                    break
                yield Picture(pic.rgb, pic.time, index)
                index += 1
        finally:
            # The filter stages first: a VapourSynth stage's workers may still be reading the file.
            close = getattr(progressive, "close", None)
            if callable(close):
                close()
            container.close()

    def stabiliser(self) -> Stabiliser | None:
        """A fresh stabiliser for the plan's mode, on the engine's device (None when off)."""
        if self.plan.temporal == "off":
            return None
        return Stabiliser(self.plan.temporal, device=self.engine.device)

    def _inferred(self) -> Generator[tuple[Picture, np.ndarray], None, None]:
        """Each decoded picture (decode runs in its own thread) with the model's output, in order."""
        batch: list[Picture] = []
        with Background(self.source_pictures(warm_up=True), maxsize=self.opts.queue, name="decode") as source:

            def flush() -> Iterator[tuple[Picture, np.ndarray]]:
                outputs = self.engine.upscale([p.rgb for p in batch])
                if len(outputs) != len(batch):  # the engine's contract; never lose a frame quietly
                    raise RuntimeError(f"engine returned {len(outputs)} frames for {len(batch)}")
                yield from zip(batch, outputs)
                batch.clear()

            for pic in source:
                if self.origin is None and pic.index >= 0:
                    self.origin = pic.time
                batch.append(pic)
                if len(batch) >= max(1, self.engine.batch):
                    yield from flush()
            if batch:
                yield from flush()

    def infer_thread(self) -> bool:
        """Whether inference runs in a thread of its own, apart from the stabiliser:
        on CUDA, so that the stabiliser's CPU work (optical flow, trust maps)
        overlaps the GPU's instead of following it. On the CPU both draw on
        the same cores, and a batch there takes seconds, which an interrupt
        would wait for."""
        return self.plan.temporal != "off" and self.engine.device.type == "cuda"

    # infer, then stabilise in the calling thread (stitch, the resize to the output size, runs in the
    # encode thread: see write)
    def _upscaled(self, want_compare: bool) -> Iterator[tuple[Picture, Picture]]:
        self.stats, self.frames_out, self.origin, self.compare_pair = DecodeStats(), 0, None, None
        target = max(0, self.plan.frames_estimate // 2)
        steady = self.stabiliser()
        rate = self.plan.filters.rate
        gen = self._inferred()
        inferred: Iterator[tuple[Picture, np.ndarray]] = gen
        with contextlib.ExitStack() as stack:
            if self.infer_thread():
                inferred = stack.enter_context(Background(gen, maxsize=2, name="infer"))
            else:
                stack.callback(gen.close)
            for pic, sr in inferred:
                if steady is not None:
                    # numbered by presentation time, so that every chunk numbers a picture alike
                    sr = steady.push(round(pic.time * rate), pic.rgb, sr)
                if pic.index < 0:  # a warm-up picture: it steadies the next ones, and is not written
                    continue
                if want_compare and (pic.index <= target or self.compare_pair is None):
                    self.compare_pair = (pic.rgb, sr)
                self.frames_out += 1
                if self.progress:
                    self.progress(self.frames_out, self.plan.frames_estimate)
                yield pic, Picture(sr, pic.time, pic.index)
        if self.frames_out == 0:
            raise VhsupError(f"no frames decoded in the chosen range ({self.stats.errors} decode errors)", self.src)

    def pictures(self) -> Iterator[Picture]:
        """Upscaled pictures at the output size, in order."""
        g = self.plan.geometry
        for _, sr in self._upscaled(want_compare=False):
            yield Picture(fit(sr.rgb, g.out_w, g.out_h), sr.time, sr.index)

    def open_encoder(
        self, dst: Path, first: Fraction, *, origin: Fraction | None = None, stage_for: str | None = None
    ) -> VideoEncoder:
        """The run's encoder for ``dst``, opened at the first picture's source time ``first``
        (audio and subtitles are cut from there; ``origin``: see :meth:`write`)."""
        from vhsup.media.encode import EncodeSettings, VideoEncoder

        opts, plan, g = self.opts, self.plan, self.plan.geometry
        end = plan.end
        if plan.limit is not None:
            end = first + Fraction(plan.limit) / plan.filters.rate
        return VideoEncoder(
            dst,
            src=self.src,
            width=g.out_w,
            height=g.out_h,
            rate=plan.filters.rate,
            sar=g.out_sar,
            colour=output_colour(source_colour(self.info.height, self.info.colorspace, self.info.color_range), g.out_h),
            settings=EncodeSettings(codec=opts.codec, crf=opts.crf, preset=opts.preset, pix_fmt=opts.pix_fmt),
            time_range=(first, end),
            origin=first if origin is None else origin,
            overwrite=opts.overwrite,
            notice=self.notice,
            stage_for=stage_for,
        )

    def write(self, dst: Path, *, stage_for: str | None = None, origin: Fraction | None = None) -> Result:
        """Encode to ``dst``. ``stage_for`` (a container format name) writes a
        video-only chunk for that container instead (see VideoEncoder);
        ``origin`` fixes the source time of output time 0 (default: the
        first picture's), so that chunks share the whole video's clock."""
        from vhsup.media.encode import remove_own_temp_files

        opts, plan, g = self.opts, self.plan, self.plan.geometry
        t0 = time.perf_counter()
        encoder: VideoEncoder | None = None
        worker: Worker | None = None

        def encode(pic: Picture) -> None:
            assert encoder is not None  # made before the first picture is submitted
            encoder.write(Picture(fit(pic.rgb, g.out_w, g.out_h), pic.time, pic.index))

        try:
            for _, sr in self._upscaled(want_compare=opts.compare is not None):
                if encoder is None:
                    # Opened at the first picture: its time is the output's zero,
                    # and audio and subtitles are cut from the same instant.
                    assert self.origin is not None  # _upscaled sets it before its first picture
                    encoder = self.open_encoder(dst, self.origin, origin=origin, stage_for=stage_for)
                    worker = Worker(encode, maxsize=4, name="encode")
                assert worker is not None  # made with the encoder, at the first picture
                worker.submit(sr)
            # _upscaled raises when no picture came, so both were made
            assert encoder is not None and worker is not None
            worker.finish()
            report = encoder.close()
        except BaseException as exc:
            if worker is not None:
                worker.cancel()
            if encoder is not None:
                encoder.abort()
            remove_own_temp_files(dst)  # also when the interrupt came before ``encoder`` was assigned
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"interrupted; nothing was written to {dst}") from None
            raise
        compare_path = None
        if opts.compare is not None and self.compare_pair is not None:
            from vhsup.preview import write_compare

            src_rgb, sr_rgb = self.compare_pair
            compare_path = str(
                write_compare(
                    Path(opts.compare),
                    src_rgb,
                    sr_rgb,
                    model_name=self.model_name,
                    scale=self.engine.scale,
                    display_sar=g.sar,
                )
            )
        if self.stats.errors:
            self.notice(
                f"{self.src}: {plural(self.stats.errors, 'decode error')}; "
                f"{plural(self.stats.frames, 'frame')} decoded and upscaled"
            )
        if self.stats.no_picture:
            self.notice(
                f"{self.src}: {plural(self.stats.no_picture, 'AVI video chunk')} gave no picture "
                "(not-coded drop frames or damage); the picture before each stays on screen for its slot"
            )
        dev = self.engine.describe()
        setup = {
            "model": self.model_name,
            "device": str(dev.get("device")),
            "precision": str(dev.get("precision")),
            "tile": int(dev.get("tile", 0)),
            "width": g.out_w,
            "height": g.out_h,
            "display_aspect": aspect_label(g.dar),
            "output_rate": str(plan.filters.rate),
            "deinterlace": plan.filters.describe(),
            "crop": str(g.crop),
            "backend": self.backend,
            "temporal": plan.temporal,
            "chroma_shift": plan.chroma.label(),
            "denoise": plan.denoise.label(),
            "composite": plan.composite.label(),
            "detail": plan.detail,
        }
        return Result.written(
            setup,
            input=str(self.src),
            output=str(dst),
            frames_in=self.stats.frames,
            frames_out=self.frames_out,
            decode_errors=self.stats.errors,
            seconds=time.perf_counter() - t0,
            report=report,
            notices=self.notices,
            compare=compare_path,
        )


def check_outputs(src: Path, dst: Path, opts: Options) -> None:
    """Every file the run will write, checked before any work starts."""
    from vhsup.media.encode import check_container

    # Where first (nothing lost or clobbered), then what (formats the names call for).
    check_output(dst, inputs=[src], overwrite=opts.overwrite)
    if opts.compare is not None:
        check_output(opts.compare, what="--compare picture", inputs=[src], others=[dst], overwrite=opts.overwrite)
    check_container(dst, opts.codec)
    if opts.compare is not None:
        check_still_name(Path(opts.compare))


def upscale_video(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    notice: Notice | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: object,
) -> Result:
    """Upscale ``src`` into ``dst`` (default: ``<stem>.<model>.mkv`` beside it).

    Options are the fields of :class:`Options` (the CLI's flags). Returns a
    :class:`Result`; raises :class:`VhsupError` for anything the user can fix.
    """
    opts = Options.from_kwargs(**options)
    src_path = Path(src)
    open_input(src_path).close()  # fail fast, with the input's name, before loading a model
    dst_path = Path(dst) if dst is not None else default_output(src_path, model_name(opts))
    check_outputs(src_path, dst_path, opts)
    run = Run(src_path, opts, notice=notice, progress=progress)
    return run.write(dst_path)


def upscaled_frames(src: str | os.PathLike[str], **options: object) -> Iterator[Picture]:
    """Iterate upscaled pictures (RGB uint8 at the output size) without writing a file."""
    opts = Options.from_kwargs(**options)
    run = Run(Path(src), opts)
    yield from run.pictures()
