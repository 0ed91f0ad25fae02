"""What vhsup sees in a file: geometry, timing, fields, colour and other streams.

The interlace verdict weighs three kinds of evidence: the stream's field
order, the decoded frames' interlaced flags, and libavfilter's ``idet`` on
sampled frames. Capture-card files (huffyuv, FFV1, MJPEG) are often
interlaced yet carry no flag at all, and captures and re-encodes are often
flagged with the wrong field order (deinterlaced with it, motion jitters
back and forth at field rate), which is why the pictures are always checked
and win over the flags when they clearly disagree. idet's repeated-field
counts also tell whether the picture is 3:2 telecined film.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vhsup.errors import VhsupError
from vhsup.media.colour import source_colour
from vhsup.media.decode import DecodeStats, open_input, video_frames

# FFmpeg's AVFieldOrder values as PyAV reports them.
_FIELD_ORDER = {0: "unknown", 1: "progressive", 2: "tff", 3: "bff", 4: "tff", 5: "bff"}


@dataclass
class StreamInfo:
    index: int
    kind: str  # audio | subtitle | data | attachment
    codec: str
    language: str | None = None
    channels: int | None = None
    sample_rate: int | None = None
    title: str | None = None


@dataclass
class InterlaceVerdict:
    """Whether to deinterlace, and why.

    Attributes:
        interlaced: the content is interlaced (fields from two instants).
        field_order: 'tff' or 'bff' when interlaced, else 'progressive'.
        source: which evidence decided: 'stream', 'frames' or 'idet'.
        evidence: a short human-readable account for ``vhsup probe``.
        flagged_fraction: share of sampled frames flagged interlaced.
        mixed: some frames flagged progressive, some interlaced (e.g. a DVD
            mixing film and video): deinterlace only the flagged ones.
        order_overruled: the stream is flagged with one field order but the
            pictures clearly have the other; ``field_order`` is the pictures'.
    """

    interlaced: bool
    field_order: str
    source: str
    evidence: str
    flagged_fraction: float = 0.0
    mixed: bool = False
    order_overruled: bool = False


@dataclass
class TelecineVerdict:
    """Whether the picture looks 3:2 telecined (film on NTSC video).

    3:2 pulldown repeats a field in 2 of every 5 frames, i.e. in about 40% of
    the frames that move; interlaced video and progressive pictures repeat
    none. Inverse telecine drops one frame in five, so on anything else it
    throws away a fifth of the tape.

    Attributes:
        telecined: True or False, or None when the sample moves too little to tell.
        repeated_fields: sampled frames in which idet found a field repeated
            from the previous frame.
        moving_frames: sampled frames that differ visibly from the previous one.
        frames: frames sampled.
        evidence: a short human-readable account for ``vhsup probe``.
    """

    telecined: bool | None
    repeated_fields: int
    moving_frames: int
    frames: int
    evidence: str


@dataclass
class VideoInfo:
    path: str
    container: str
    codec: str
    width: int
    height: int
    pix_fmt: str
    sar: Fraction
    dar: Fraction
    fps: Fraction
    time_base: Fraction
    start_time: float
    duration: float | None
    frames: int
    frames_exact: bool
    field_order: str
    interlace: InterlaceVerdict
    telecine: TelecineVerdict
    colour: str
    colorspace: int | None
    color_range: int | None
    bit_rate: int | None
    audio: list[StreamInfo] = field(default_factory=list)
    subtitles: list[StreamInfo] = field(default_factory=list)
    other_streams: list[StreamInfo] = field(default_factory=list)
    chapters: int = 0

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("sar", "dar", "fps", "time_base"):
            value = getattr(self, key)
            out[key] = f"{value.numerator}:{value.denominator}" if key in ("sar", "dar") else str(value)
        return out


def _fraction(value, default: Fraction) -> Fraction:
    try:
        if value is None:
            return default
        f = Fraction(value)
        return f if f > 0 else default
    except (TypeError, ValueError, ZeroDivisionError):
        return default


def _sar(stream: av.video.stream.VideoStream) -> Fraction:
    # The stream (container) value wins over the codec's when both are set,
    # as FFmpeg's own guess does; 0:1 means unknown, i.e. square pixels.
    for value in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        f = _fraction(value, Fraction(0))
        if f > 0:
            return f
    return Fraction(1)


def _lang(stream) -> str | None:
    md = stream.metadata or {}
    return md.get("language") or md.get("LANGUAGE")


def _count_packets(path: str, budget_s: float) -> int | None:
    """Count the video packets by demuxing only (no decode).

    Exact for the containers vhsup meets (one packet per frame), and needed
    because ``nb_frames`` is often missing. Gives up after ``budget_s`` so
    that probing a long file stays quick; the count is then estimated.
    """
    deadline = time.monotonic() + budget_s
    n = 0
    with av.open(path, metadata_errors="ignore") as c:
        s = c.streams.video[0]
        try:
            for packet in c.demux(s):
                if packet.size:
                    n += 1
                if (n & 1023) == 0 and time.monotonic() > deadline:
                    return None
        except av.error.FFmpegError:
            pass
    return n


def _idet(container: av.container.InputContainer, frames: list[av.VideoFrame]) -> dict[str, int]:
    """Run libavfilter's idet over consecutive frames; return its totals.

    tff/bff/progressive/undetermined are its multiple-frame verdicts (which
    field each frame's other field belongs with in time: the content's field
    order, whatever the flags say); ``repeated`` counts frames with a field
    repeated from the previous frame (top or bottom).
    """
    if len(frames) < 4:
        return {"tff": 0, "bff": 0, "progressive": 0, "undetermined": 0, "repeated": 0}
    stream = container.streams.video[0]
    graph = av.filter.Graph()
    src = graph.add_buffer(template=stream)
    det = graph.add("idet")
    sink = graph.add("buffersink")
    src.link_to(det)
    det.link_to(sink)
    graph.configure()
    last: dict[str, str] = {}
    for fr in frames + [None]:
        graph.vpush(fr)
        while True:
            try:
                out = graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            last = dict(out.metadata)
    keys = ("tff", "bff", "progressive", "undetermined")
    counts = {k: int(float(last.get(f"lavfi.idet.multiple.{k}", 0))) for k in keys}
    counts["repeated"] = sum(int(float(last.get(f"lavfi.idet.repeated.{k}", 0))) for k in ("top", "bottom"))
    return counts


def _moving_frames(frames: list[av.VideoFrame]) -> int:
    """Frames that differ visibly from the previous one (a repeated field only shows where there is motion)."""
    moving, prev = 0, None
    for f in frames:
        # Every line (both fields: in a telecine one of them may be repeated), every other column.
        luma = f.reformat(format="gray", threads=1).to_ndarray()[:, ::2].astype(np.int16)
        # At least 0.2% of the pixels changed by more than 12 levels: more than coding noise.
        if prev is not None and prev.shape == luma.shape and np.mean(np.abs(luma - prev) > 12) > 0.002:
            moving += 1
        prev = luma
    return moving


def _telecine_verdict(counts: dict[str, int], moving: int, n: int) -> TelecineVerdict:
    rep = counts["repeated"]
    ev = f"idet: {rep} of {n} sampled frames repeat a field; {moving} move"
    if moving < 8:
        return TelecineVerdict(None, rep, moving, n, ev + " (too little motion to tell)")
    if rep >= 0.25 * moving:
        return TelecineVerdict(True, rep, moving, n, ev + " (3:2 pulldown repeats one in 2 of every 5 frames)")
    if rep <= 0.1 * moving:
        return TelecineVerdict(False, rep, moving, n, ev)
    return TelecineVerdict(None, rep, moving, n, ev + " (no clear 3:2 pattern)")


def _interlace_verdict(field_order: str, frames: list[av.VideoFrame], counts: dict[str, int]) -> InterlaceVerdict:
    n = len(frames)
    flagged = sum(1 for f in frames if f.interlaced_frame)
    frac = flagged / n if n else 0.0
    flags = f"stream field order {field_order}; {flagged}/{n} sampled frames flagged interlaced"
    inter = counts["tff"] + counts["bff"]
    decided = inter + counts["progressive"]
    ev = (
        f"{flags}; idet over {n} frames: tff {counts['tff']}, bff {counts['bff']}, "
        f"progressive {counts['progressive']}, undetermined {counts['undetermined']}"
    )
    idet_order = "tff" if counts["tff"] >= counts["bff"] else "bff"
    if field_order in ("tff", "bff") and frac >= 0.1:
        mixed = frac < 0.9
        other = "bff" if field_order == "tff" else "tff"
        against, agree = counts[other], counts[field_order]
        if against >= 4 * max(agree, 1) and against >= min(8, n // 2):
            # The pictures clearly have the other order: a mislabelled capture
            # or re-encode. Deinterlaced by the flags, motion would jitter.
            ev += f"; the flags say {field_order} but the pictures are {other}: flags overruled"
            return InterlaceVerdict(True, other, "idet", ev, frac, mixed=mixed, order_overruled=True)
        if not mixed:
            # Both kinds of flag agree on interlaced: the usual case (DVD video, DV).
            return InterlaceVerdict(True, field_order, "stream", ev, frac)
        return InterlaceVerdict(True, field_order, "frames", ev + " (mixed content)", frac, mixed=True)
    # Everything else is decided by the pictures. Flags that say
    # "progressive" are often just an encoder's default: a VHS capture
    # re-encoded without interlace flags still has combing in every frame.
    says_progressive = field_order == "progressive" or (field_order in ("tff", "bff") and n > 0)
    if says_progressive:
        # Overrule the flags only on strong evidence: most sampled frames combed.
        if n and inter >= 0.7 * n:
            return InterlaceVerdict(True, idet_order, "idet", ev + " (flags overruled)", frac)
        return InterlaceVerdict(False, "progressive", "frames" if field_order != "progressive" else "stream", ev, frac)
    if decided and inter >= 0.5 * decided and inter >= 3:
        return InterlaceVerdict(True, idet_order, "idet", ev, frac)
    if flagged and frac >= 0.9:
        # Frames say interlaced, the stream gives no order and idet cannot
        # tell (static content): assume top field first, FFmpeg's default.
        return InterlaceVerdict(True, "tff", "frames", ev, frac)
    return InterlaceVerdict(False, "progressive", "idet", ev, frac)


def sample_frames(
    container: av.container.InputContainer, count: int, *, start: float | None = None
) -> list[av.VideoFrame]:
    """Decode ``count`` consecutive frames from ``start`` (seconds) or the beginning."""
    out: list[av.VideoFrame] = []
    stats = DecodeStats()
    if start:
        gen = video_frames(container, start=start, stats=stats, preroll=0.0)
    else:
        gen = video_frames(container, stats=stats)
    try:
        for frame in gen:
            out.append(frame)
            if len(out) >= count:
                break
    finally:
        gen.close()
    return out


def probe(path: str | os.PathLike[str], *, analyse_frames: int = 48, count_budget_s: float = 5.0) -> VideoInfo:
    """Describe ``path`` without changing it.

    Args:
        analyse_frames: frames decoded (from a tenth of the way in, where
            titles and black leaders are over) to judge interlacing.
        count_budget_s: time allowed for counting packets when the
            container does not record its frame count.
    """
    p = Path(path)
    container = open_input(p)
    try:
        stream = container.streams.video[0]
        cc = stream.codec_context
        fps = _fraction(stream.average_rate, Fraction(0)) or _fraction(stream.guessed_rate, Fraction(30000, 1001))
        tb = _fraction(stream.time_base, Fraction(1, 90000))
        start = (
            float(stream.start_time * tb)
            if stream.start_time is not None
            else (container.start_time / 1e6 if container.start_time is not None else 0.0)
        )
        if stream.duration:
            duration: float | None = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / 1e6
        else:
            duration = None
        frames_exact = bool(stream.frames)
        frames = int(stream.frames) if stream.frames else 0
        if not frames:
            counted = _count_packets(str(p), count_budget_s)
            if counted is not None:
                frames, frames_exact = counted, True
            elif duration:
                frames = int(round(duration * fps))
        # Sample a little way in; fall back to the start for short files.
        offset = start + duration / 10 if duration and duration > 20 else None
        sampled = sample_frames(container, analyse_frames, start=offset)
        if not sampled and offset:
            container.seek(0)
            sampled = sample_frames(container, analyse_frames)
        if not sampled:
            raise VhsupError("no decodable video frames", p)
        first = sampled[0]
        width, height = first.width, first.height
        field_order = _FIELD_ORDER.get(int(cc.field_order or 0), "unknown") if cc.field_order is not None else "unknown"
        if field_order == "unknown" and cc.name == "dvvideo":
            # AVI has no field-order field; DV itself is always bottom field first.
            field_order = "bff"
        counts = _idet(container, sampled)
        verdict = _interlace_verdict(field_order, sampled, counts)
        telecine = _telecine_verdict(counts, _moving_frames(sampled), len(sampled))
        sar = _sar(stream)
        dar = sar * Fraction(width, height)
        colorspace = int(first.colorspace) if first.colorspace is not None else None
        color_range = int(first.color_range) if first.color_range is not None else None
        colour = source_colour(height, colorspace, color_range).name

        def info(s, kind: str) -> StreamInfo:
            ctx = s.codec_context
            return StreamInfo(
                index=s.index,
                kind=kind,
                codec=ctx.name if ctx else "unknown",
                language=_lang(s),
                channels=getattr(ctx, "channels", None) if kind == "audio" else None,
                sample_rate=getattr(ctx, "sample_rate", None) if kind == "audio" else None,
                title=(s.metadata or {}).get("title"),
            )

        others = [info(s, s.type) for s in container.streams if s.type not in ("video", "audio", "subtitle")]
        others += [info(s, "video") for s in container.streams.video[1:]]
        return VideoInfo(
            path=str(p),
            container=container.format.name,
            codec=cc.name,
            width=width,
            height=height,
            pix_fmt=first.format.name,
            sar=sar,
            dar=dar,
            fps=fps,
            time_base=tb,
            start_time=start,
            duration=duration,
            frames=frames,
            frames_exact=frames_exact,
            field_order=field_order,
            interlace=verdict,
            telecine=telecine,
            colour=colour,
            colorspace=colorspace,
            color_range=color_range,
            bit_rate=container.bit_rate or None,
            audio=[info(s, "audio") for s in container.streams.audio],
            subtitles=[info(s, "subtitle") for s in container.streams.subtitles],
            other_streams=others,
            chapters=len(container.chapters()) if hasattr(container, "chapters") else 0,
        )
    finally:
        container.close()
