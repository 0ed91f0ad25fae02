"""Turn decoded frames into progressive RGB pictures.

libavfilter does the field work: ``bwdif`` (or ``yadif`` where a build lacks
it) deinterlaces, ``fieldmatch`` + ``decimate`` undo 3:2 telecine. QTGMC,
the restorers' deinterlacer, runs through VapourSynth where the ``restore``
extra is installed (:mod:`vhsup.restore.qtgmc`): ``--deinterlace auto``
takes it there, bwdif elsewhere. ``--ivtc`` likewise takes VIVTC's VFM +
VDecimate there (:mod:`vhsup.restore.ivtc`), fieldmatch + decimate
elsewhere. Then each
frame is converted to full-range RGB with the source's own matrix and
cropped. Models treat combing as texture, so getting this step right matters
more than any model choice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import numpy as np

from vhsup.errors import VhsupError
from vhsup.media.colour import ColourSpec
from vhsup.media.geometry import Crop
from vhsup.media.picture import Picture
from vhsup.media.probe import VideoInfo

DEINTERLACERS = ("bwdif", "yadif")  # bwdif first: better and ~2.7x faster
#: --deinterlace: auto and on take QTGMC where the restore extra works, bwdif elsewhere.
DEINTERLACE_CHOICES = ("auto", "on", "off", "qtgmc", "bwdif")


@dataclass(frozen=True)
class FilterPlan:
    """What happens to fields before the SR.

    Attributes:
        deinterlace: run a deinterlacer.
        method: 'qtgmc' (VapourSynth), or 'bwdif' or 'yadif' (whichever this FFmpeg build has);
            with ``ivtc``: 'vivtc' (VapourSynth), else the FFmpeg deinterlacer that cleans the
            frames fieldmatch leaves combed (None where the build has none).
        parity: 'tff' or 'bff'.
        double_rate: one output frame per field (59.94p from 29.97i).
        only_flagged: deinterlace only frames flagged interlaced (mixed content).
        ivtc: inverse telecine (VIVTC, or fieldmatch + decimate) to 4/5 of the rate.
        rate: output frame rate.
        notes: what the user should be told about these decisions (flags
            overruled by the pictures, an inverse telecine that may not fit).
        preset: QTGMC's preset (method 'qtgmc' only).
        fallback: why auto did not take QTGMC, or ``ivtc`` VIVTC, for ``describe`` ('' when it did or
            was not asked).
    """

    deinterlace: bool
    method: str | None
    parity: str
    double_rate: bool
    only_flagged: bool
    ivtc: bool
    rate: Fraction
    notes: tuple[str, ...] = ()
    preset: str | None = None
    fallback: str = ""

    def describe(self) -> str:
        why = f" ({self.fallback})" if self.fallback else ""
        if self.ivtc:
            how = (
                f"VIVTC VFM {self.parity} + VDecimate"
                if self.method == "vivtc"
                else f"fieldmatch {self.parity} + decimate"
            )
            return f"inverse telecine ({how}) -> {float(self.rate):.3f}p{why}"
        if not self.deinterlace:
            return "none (progressive)"
        what = "field rate" if self.double_rate else "frame rate"
        scope = ", flagged frames only" if self.only_flagged else ""
        name = f"{self.method} {self.preset}" if self.preset else self.method
        return f"{name} {self.parity}, {what} -> {float(self.rate):.3f}p{scope}{why}"


def available_deinterlacer() -> str | None:
    have = av.filter.filters_available
    return next((name for name in DEINTERLACERS if name in have), None)


def plan_filters(
    info: VideoInfo,
    *,
    deinterlace: str = "auto",
    field_rate: str = "single",
    ivtc: bool = False,
    field_order: str = "auto",
    force_ivtc: bool = False,
    qtgmc_preset: str = "slower",  # vhsup.restore.qtgmc.DEFAULT_PRESET
) -> FilterPlan:
    """Decide the field handling from the probe and the user's options.

    ``field_order`` 'auto' takes the probe's verdict (the pictures' order
    where they clearly contradict the flags); 'tff'/'bff' force one, for the
    deinterlacer and for inverse telecine alike. ``ivtc`` is refused on a
    picture that clearly is not telecined unless ``force_ivtc``: it would
    drop a fifth of the frames. The plan's ``notes`` also name every option
    that will not do what it says.

    ``deinterlace`` 'auto' and 'on' take QTGMC where the restore extra works
    (and the picture is wholly interlaced: mixed content keeps bwdif on the
    flagged frames), bwdif elsewhere; 'qtgmc' and 'bwdif' name one.
    ``ivtc`` takes VIVTC where the extra works (with its VIVTC plugin),
    FFmpeg's fieldmatch + decimate elsewhere, with a notice where the extra
    is installed but VIVTC cannot run.
    """
    plan = _decide(info, deinterlace, field_rate, ivtc, field_order, force_ivtc, qtgmc_preset)
    notes = _option_notes(info, plan, deinterlace=deinterlace, field_rate=field_rate, field_order=field_order)
    return replace(plan, notes=plan.notes + tuple(notes)) if notes else plan


def _decide(
    info: VideoInfo,
    deinterlace: str,
    field_rate: str,
    ivtc: bool,
    field_order: str,
    force_ivtc: bool,
    qtgmc_preset: str = "slower",  # vhsup.restore.qtgmc.DEFAULT_PRESET
) -> FilterPlan:
    if deinterlace not in DEINTERLACE_CHOICES:
        raise VhsupError(f"--deinterlace must be one of {', '.join(DEINTERLACE_CHOICES)}, not {deinterlace!r}")
    if field_rate not in ("single", "double"):
        raise VhsupError(f"--field-rate must be single or double, not {field_rate!r}")
    if field_order not in ("auto", "tff", "bff"):
        raise VhsupError(f"--field-order must be auto, tff or bff, not {field_order!r}")
    verdict = info.interlace
    notes: list[str] = []
    if field_order != "auto":
        parity = field_order
    else:
        parity = (
            verdict.field_order
            if verdict.field_order in ("tff", "bff")
            else ("bff" if info.field_order == "bff" else "tff")
        )
        if verdict.order_overruled:
            notes.append(
                f"{info.path}: the stream is flagged {info.field_order.upper()} but the pictures are "
                f"{parity.upper()} (idet); using {parity.upper()} (--field-order {info.field_order} "
                "follows the flags; vhsup probe shows the evidence)"
            )
    if ivtc:
        tc = info.telecine
        if tc.telecined is False and not force_ivtc:
            raise VhsupError(
                f"--ivtc refused: the picture does not look telecined ({tc.evidence}; 3:2 pulldown "
                "repeats a field in 2 of every 5 frames) and inverse telecine would drop one frame in "
                "five; leave --ivtc off, or add --force-ivtc to run it anyway",
                info.path,
            )
        if not tc.telecined:
            notes.append(
                f"{info.path}: --ivtc drops one frame in five, and the picture "
                f"{'does not look' if tc.telecined is False else 'may not be'} telecined ({tc.evidence})"
            )
        from vhsup.restore import ivtc as vivtc

        film_rate = info.fps * Fraction(vivtc.CYCLE - 1, vivtc.CYCLE)
        why = vivtc.unusable(info.width, info.height)
        if why is None:
            return FilterPlan(False, "vivtc", parity, False, False, True, film_rate, tuple(notes))
        missing = [f for f in ("fieldmatch", "decimate") if f not in av.filter.filters_available]
        if missing:
            raise VhsupError(
                f"--ivtc needs the {' and '.join(missing)} filter, which this FFmpeg build lacks, or VIVTC ({why})"
            )
        if vivtc.not_installed(why):
            fallback = f"VIVTC: {vivtc.INSTALL}"
        else:
            fallback = "not VIVTC: see the notice"
            notes.append(f"--ivtc: FFmpeg's fieldmatch + decimate, not VIVTC: {why}")
        return FilterPlan(
            False, available_deinterlacer(), parity, False, False, True, film_rate, tuple(notes), fallback=fallback
        )
    wanted = deinterlace in ("on", "bwdif", "qtgmc") or (deinterlace == "auto" and verdict.interlaced)
    if not wanted:
        return FilterPlan(False, None, parity, False, False, False, info.fps)
    double = field_rate == "double"
    rate = info.fps * (2 if double else 1)
    only_flagged = deinterlace == "auto" and verdict.mixed and not double
    fallback = ""
    if deinterlace == "qtgmc" or (deinterlace in ("auto", "on") and not only_flagged):
        from vhsup.restore import qtgmc

        if qtgmc_preset not in qtgmc.PRESETS:
            raise VhsupError(f"--qtgmc-preset must be one of {', '.join(qtgmc.PRESETS)}, not {qtgmc_preset!r}")
        why = qtgmc.unusable(info.width, info.height)
        if why is None:
            return FilterPlan(True, "qtgmc", parity, double, False, False, rate, tuple(notes), preset=qtgmc_preset)
        if deinterlace == "qtgmc":
            raise VhsupError(f"--deinterlace qtgmc: {why}", info.path)
        if qtgmc.not_installed(why):
            fallback = f"QTGMC: {qtgmc.INSTALL}"
        else:
            fallback = "not QTGMC: see the notice"
            notes.append(f"--deinterlace {deinterlace}: bwdif, not QTGMC: {why}")
    method = available_deinterlacer()
    if method is None:
        raise VhsupError("this FFmpeg build has neither bwdif nor yadif; use --deinterlace off", info.path)
    return FilterPlan(True, method, parity, double, only_flagged, False, rate, tuple(notes), fallback=fallback)


def _option_notes(
    info: VideoInfo, plan: FilterPlan, *, deinterlace: str, field_rate: str, field_order: str
) -> list[str]:
    """What the user asked for that the plan will not do, or will do badly, in words."""
    notes = []
    if field_order != "auto" and not plan.deinterlace and not plan.ivtc:
        notes.append(
            f"--field-order {field_order} does nothing: the picture is not deinterlaced"
            + (" (--deinterlace off)" if deinterlace == "off" else " (it looks progressive)")
        )
    if deinterlace == "off" and info.interlace.interlaced and not plan.ivtc:
        notes.append(
            f"--deinterlace off, but the source looks interlaced ({info.interlace.evidence}): "
            "the combing will be upscaled as if it were detail"
        )
    if field_rate == "double" and not plan.double_rate:
        why = (
            "with --ivtc"
            if plan.ivtc
            else "with --deinterlace off"
            if deinterlace == "off"
            else "on progressive input (no fields to split)"
        )
        notes.append(f"--field-rate double does nothing {why}; the output stays at {float(plan.rate):.3f} fps")
    return notes


def _buffer_args(stream: av.video.stream.VideoStream, pix_fmt: str | None = None) -> str:
    """Buffer-source arguments from the stream itself (``pix_fmt``: the frames' own, where a stage
    before the graph changed it, e.g. 4:1:1 DV out of a VapourSynth stage as 4:2:2).

    ``Graph.add_buffer(template=stream)`` passes no frame rate (fieldmatch and
    decimate refuse to configure without one) and hard-codes SAR 1:1, so
    the source is described here in full.
    """
    cc = stream.codec_context
    tb = stream.time_base or Fraction(1, 90000)
    rate = stream.average_rate or stream.guessed_rate or Fraction(30000, 1001)
    sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio or Fraction(1)
    sar = Fraction(sar) if Fraction(sar) > 0 else Fraction(1)
    fmt = pix_fmt or (cc.format.name if cc.format else "yuv420p")
    return (
        f"video_size={cc.width}x{cc.height}:pix_fmt={fmt}:time_base={tb.numerator}/{tb.denominator}"
        f":frame_rate={rate.numerator}/{rate.denominator}:pixel_aspect={sar.numerator}/{sar.denominator}"
    )


class FieldFilter:
    """A libavfilter graph fed frame by frame: ``feed(frame)`` then ``flush()``.

    ``pix_fmt``: the frames' pixel format where it is not the stream's.
    """

    def __init__(
        self, stream: av.video.stream.VideoStream, plan: FilterPlan, threads: int = 1, pix_fmt: str | None = None
    ):
        self.plan = plan
        self.graph = av.filter.Graph()
        self.graph.threads = threads
        chain: list[tuple[str, str]] = []
        if plan.ivtc:
            chain.append(("fieldmatch", f"order={plan.parity}:combmatch=full"))
            if plan.method:
                # Frames fieldmatch could not match are still combed: clean
                # only those (deint=interlaced obeys fieldmatch's flag).
                chain.append((plan.method, "mode=send_frame:parity=auto:deint=interlaced"))
            chain.append(("decimate", "cycle=5"))
        elif plan.deinterlace:
            assert plan.method is not None  # plan_filters names one whenever it deinterlaces
            mode = "send_field" if plan.double_rate else "send_frame"
            deint = "interlaced" if plan.only_flagged else "all"
            chain.append((plan.method, f"mode={mode}:parity={plan.parity}:deint={deint}"))
        self.active = bool(chain)
        if not self.active:
            return
        node = self.graph.add("buffer", _buffer_args(stream, pix_fmt))
        for name, args in chain:
            nxt = self.graph.add(name, args)
            node.link_to(nxt)
            node = nxt
        sink = self.graph.add("buffersink")
        node.link_to(sink)
        self.graph.configure()

    def _drain(self) -> list[av.VideoFrame]:
        out = []
        while True:
            try:
                out.append(self.graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out

    def feed(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        if not self.active:
            return [frame]
        self.graph.vpush(frame)
        return self._drain()

    def flush(self) -> list[av.VideoFrame]:
        if not self.active:
            return []
        self.graph.vpush(None)
        return self._drain()


def progressive_frames(
    frames: Iterable[av.VideoFrame], stream: av.video.stream.VideoStream, plan: FilterPlan, threads: int = 1
) -> Iterator[av.VideoFrame]:
    """Apply the field plan to a frame stream (an identity for progressive input).

    The frames may come out of a stage before this one (``--dedot``/``--derainbow``) in another pixel
    format than the stream's: FFmpeg's graph is set up for the first frame's.
    """
    if plan.method == "qtgmc" and plan.deinterlace:
        from vhsup.restore import qtgmc

        yield from qtgmc.deinterlace(iter(frames), stream, plan)
        return
    if plan.method == "vivtc" and plan.ivtc:
        from vhsup.restore import ivtc

        yield from ivtc.inverse_telecine(iter(frames), stream, plan)
        return
    it = iter(frames)
    try:
        first = next(it, None)
        if first is None:
            return
        filt = FieldFilter(stream, plan, threads, pix_fmt=first.format.name)
        yield from filt.feed(first)
        for frame in it:
            yield from filt.feed(frame)
        yield from filt.flush()
    finally:
        close = getattr(it, "close", None)  # a VapourSynth stage before this one: its workers finish first
        if callable(close):
            close()


def frame_time(frame: av.VideoFrame) -> Fraction:
    """The exact presentation time of a frame, in seconds."""
    tb = frame.time_base
    if frame.pts is None or tb is None:
        raise VhsupError("a decoded frame has no timestamp")
    return frame.pts * Fraction(tb)


def to_rgb(frame: av.VideoFrame, colour: ColourSpec, crop: Crop, threads: int = 1) -> np.ndarray:
    """Full-range RGB with the source's matrix, cropped; C-contiguous."""
    rgb = frame.reformat(
        format="rgb24",
        src_colorspace=colour.matrix,
        dst_colorspace=colour.matrix,
        src_color_range="JPEG" if colour.full_range else "MPEG",
        dst_color_range="JPEG",
        interpolation="BICUBIC",
        threads=threads,
    ).to_ndarray()
    if crop:
        h, w = rgb.shape[:2]
        rgb = rgb[crop.top : h - crop.bottom, crop.left : w - crop.right]
    return np.ascontiguousarray(rgb)


def pictures(
    frames: Iterable[av.VideoFrame],
    colour: ColourSpec,
    crop: Crop,
    *,
    start: Fraction | None = None,
    end: Fraction | None = None,
    limit: int | None = None,
    threads: int = 1,
) -> Iterator[Picture]:
    """Number and convert progressive frames inside [start, end), at most ``limit``.

    Frames before ``start`` are the deinterlacer's pre-roll; they are
    dropped here, after filtering, so the first output frame is complete.
    """
    index = 0
    for frame in frames:
        t = frame_time(frame)
        if start is not None and t < start:
            continue
        if end is not None and t >= end:
            break
        if limit is not None and index >= limit:
            break
        yield Picture(to_rgb(frame, colour, crop, threads), t, index)
        index += 1
