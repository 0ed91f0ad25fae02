"""Carrying a source's audio, subtitle and attachment streams into the output.

The video is re-encoded; everything else should arrive untouched: the same
packets, the same metadata, in sync. This module owns a second, read-only
demuxer on the source so it can hand the muxer audio in step with the video
(the file comes out interleaved, and the muxer's buffer stays small) without
disturbing the decoder's demuxer.

Timing rules, shared with the video encoder:

* Output time = source time - ``origin``, for every stream, so the audio
  keeps exactly the offset it had against the video in the source.
* Audio is cut to the span of the output video (and to the user's range):
  a packet is kept when its midpoint lies inside, so each end is right to
  within half a packet (AC-3: 16 ms, AAC: 11 ms) and the output audio lasts
  as long as the video to within one frame. Transcoded audio is cut to the
  sample.
* Subtitles are kept when they start inside the span.
* Audio that runs on past the last video frame is cut there, with a notice
  saying how much (DVD rips often carry a second or more of it).

Not every container holds every codec. Before any byte is written each
stream is tried alone in an in-memory muxer of the output format (header, a
few of its real packets, trailer), because some refusals only surface at the
trailer (PCM in MP4). Audio that does not fit is transcoded (AAC for MP4/MOV,
FLAC for Matroska, AC-3 for DVD program streams). Text subtitles that do not
fit are converted cue by cue to the container's text format (mov_text for
MP4/MOV, SubRip for Matroska, WebVTT for WebM), with their timing; bitmap
subtitles (DVD, Blu-ray PGS, DVB) cannot become text and are dropped, as is
anything else a container cannot hold, each with a notice.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import av.container
from av.audio.stream import AudioStream
from av.stream import AttachmentStream
from av.subtitles.stream import SubtitleStream

from vhsup.errors import VhsupError

if TYPE_CHECKING:
    from av.container.core import Chapter

# Subtitle codecs a program/transport stream can really carry. FFmpeg's
# muxers accept others without complaint and write data a player cannot use
# (subrip in a VOB comes back as a broken dvdsub stream, in a TS as data).
_PS_FORMATS = {"vob", "dvd", "mpeg", "svcd", "vcd"}
_SUBTITLES_ALLOWED = {
    "mpegts": {"dvb_subtitle", "dvb_teletext"},
    **{f: {"dvd_subtitle"} for f in _PS_FORMATS},
}
# Audio that a container's muxer takes but its players do not.
_AUDIO_REFUSED = {
    # FFmpeg writes PCM into MP4 as ISO 'ipcm', which few players read, and
    # its mov muxer rejects it at the trailer in some versions anyway.
    "mp4": lambda codec: codec.startswith("pcm_"),
}
# Preferred codec when a source audio stream must be re-encoded.
_TRANSCODE_TARGET = {
    "mp4": "aac",
    "mov": "aac",
    "ipod": "aac",
    "3gp": "aac",
    "ismv": "aac",
    "matroska": "flac",
    "webm": "libopus",
    "mpegts": "aac",
    "avi": "pcm_s16le",
    **{f: "ac3" for f in _PS_FORMATS},
}
_FALLBACK_TARGETS = ("flac", "aac", "ac3", "mp2", "libopus", "pcm_s16le")
# The text subtitle format of each container, for text subtitles it cannot hold.
_SUBTITLE_TARGET = {
    "mp4": "mov_text",
    "mov": "mov_text",
    "ipod": "mov_text",
    "3gp": "mov_text",
    "matroska": "subrip",
    "webm": "webvtt",
}
# Keys the muxers write themselves; copying them would describe the source.
_SKIP_METADATA = {
    "encoder",
    "duration",
    "number_of_frames",
    "number_of_bytes",
    "major_brand",
    "minor_version",
    "compatible_brands",
    "handler_name",
    "vendor_id",
}


# How far past the cut finish() reads for stragglers of other streams.
_READ_PAST_END = 10
# Audio longer than the video by more than this gets a notice; less is the
# last audio packet overhanging the last frame.
_OVERRUN_NOTICE = Fraction(1, 10)


def _keep_key(key: str, value: str) -> bool:
    k = key.lower()
    if k == "software" and str(value).startswith("Lavf"):
        return False  # FFmpeg naming itself, not the capture application
    return k not in _SKIP_METADATA and not k.startswith("_statistics")


def copy_metadata(src: dict, dst: dict) -> None:
    """Copy user-facing metadata (title, language, dates, comments)."""
    for k, v in src.items():
        if _keep_key(k, v):
            try:
                dst[k] = v
            except (ValueError, TypeError):  # undecodable keys/values
                pass


def describe(stream: av.stream.Stream) -> str:
    """'#1 audio ac3 (eng, "Commentary")' - how notices name a stream."""
    codec = getattr(stream, "name", None) if stream.type == "attachment" else _codec_name(stream)
    extra = []
    lang = stream.metadata.get("language")
    if lang and lang != "und":
        extra.append(lang)
    title = stream.metadata.get("title")
    if title:
        extra.append(f'"{title}"')
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"#{stream.index} {stream.type} {codec}{tail}"


def _codec_name(stream: av.stream.Stream) -> str:
    cc = getattr(stream, "codec_context", None)
    if cc is not None:
        return cc.name
    return getattr(stream, "codec_name", None) or "unknown"


def _packet_start(pkt: av.Packet) -> int | None:
    return pkt.pts if pkt.pts is not None else pkt.dts


def muxer_accepts(fmt_name: str, src: Path, index: int, packets: int = 3) -> str | None:
    """None if a muxer of ``fmt_name`` takes the source stream as it is, else
    the reason it does not.

    Tried in memory with up to ``packets`` real packets and the trailer,
    because some refusals only come when a packet is written or the file is
    finished.
    """
    with av.open(str(src)) as inp:
        stream = inp.streams[index]
        codec = _codec_name(stream)
        allowed = _SUBTITLES_ALLOWED.get(fmt_name)
        if stream.type == "subtitle" and allowed is not None and codec not in allowed:
            return f"{fmt_name} cannot carry {codec} subtitles"
        refuse = _AUDIO_REFUSED.get(fmt_name)
        if stream.type == "audio" and refuse is not None and refuse(codec):
            return f"{fmt_name} players do not support {codec} audio"
        out = av.open(io.BytesIO(), "w", format=fmt_name)
        try:
            try:
                ostream = out.add_stream_from_template(stream)
            except ValueError:  # the muxer has no tag for the codec at all
                return f"{fmt_name} cannot carry {codec}"
            out.start_encoding()
            if stream.type == "audio":
                sent = 0
                # Bounded: audio starts near the beginning of any sane file.
                for pkt in itertools.islice(inp.demux(stream), 500):
                    if pkt.size == 0:
                        continue
                    pkt.stream = ostream
                    out.mux(pkt)
                    sent += 1
                    if sent >= packets:
                        break
            out.close()
        except (ValueError, OSError, av.FFmpegError) as e:
            return f"{fmt_name} cannot carry {codec}: {e}"
        finally:
            try:
                out.close()
            except Exception:  # already failed above; nothing more to learn
                pass
    return None


@dataclass
class _Copy:
    """One source stream copied packet by packet."""

    src: av.stream.Stream
    out: av.stream.Stream
    origin_ticks: int
    last_dts: int | None = None
    next_start: int | None = None  # expected start of the next packet, for packets with no timestamp


@dataclass
class _Subtitles:
    """One source text subtitle stream converted cue by cue."""

    src: SubtitleStream
    out: SubtitleStream
    origin_ticks: int


@dataclass
class _Transcode:
    """One source audio stream decoded and re-encoded."""

    src: AudioStream
    out: AudioStream
    resampler: av.AudioResampler
    rate: int
    next_pts: int | None = None  # output pts (1/rate) of the next sample


@dataclass
class AuxSummary:
    audio_streams: int = 0
    subtitle_streams: int = 0
    transcoded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class AuxStreams:
    """The source's non-video streams, fed to an output container as the
    video advances.

    Create it after the video stream and before ``start_encoding`` (it adds
    its streams), call ``pump`` as pictures are written, ``finish`` once the
    video has ended, and ``close`` in every case.

    Args:
        src: the input file, opened here a second time, read-only.
        output: the output container (not yet started).
        origin: source time that maps to output time 0.
        start, end: source-clock span to keep; ``start`` None means "from the
            first video frame" and is fixed by ``begin``.
        skip: source stream indices handled elsewhere (the main video).
        notice: receives one line per stream that is transcoded or dropped.
    """

    def __init__(
        self,
        src: Path,
        output: av.container.OutputContainer,
        *,
        origin: Fraction,
        start: Fraction | None,
        end: Fraction | None,
        skip: set[int],
        notice: Callable[[str], None],
    ):
        self.summary = AuxSummary()
        self._origin = Fraction(origin)
        self._lo = start
        self._end = end
        self._notice = notice
        self._output = output
        self._copies: dict[int, _Copy] = {}
        self._transcodes: dict[int, _Transcode] = {}
        self._subtitles: dict[int, _Subtitles] = {}
        self._audio_ends: dict[int, Fraction] = {}  # per audio stream: end of the last packet read past the cut
        self._unread_tail = False
        self._held: av.Packet | None = None
        self._done = False
        fmt = output.format.name
        try:
            self._input = av.open(str(src))
        except (OSError, av.FFmpegError) as e:
            raise VhsupError(f"cannot read the input for its audio/subtitles: {e}", src) from e
        try:
            self._plan(src, fmt, skip)
        except BaseException:
            self._input.close()
            raise
        wanted = [self._input.streams[i] for i in self._wanted()]
        self._packets = self._input.demux(wanted) if wanted else iter(())

    def _wanted(self) -> list[int]:
        return [*self._copies, *self._transcodes, *self._subtitles]

    # -- planning ----------------------------------------------------------

    def _plan(self, src: Path, fmt: str, skip: set[int]) -> None:
        for stream in self._input.streams:
            if stream.index in skip:
                continue
            label = describe(stream)
            if isinstance(stream, AudioStream):
                reason = muxer_accepts(fmt, src, stream.index)
                if reason is None:
                    self._add_copy(stream)
                else:
                    target = self._add_transcode(stream, fmt, reason)
                    msg = f"{label} re-encoded as {target}: {reason}"
                    self.summary.transcoded.append(f"{label} -> {target}")
                    self._notice(msg)
                self.summary.audio_streams += 1
            elif isinstance(stream, SubtitleStream):
                reason = muxer_accepts(fmt, src, stream.index)
                text_target = None if reason is None else self._add_subtitle_conversion(stream, fmt)
                if reason is None:
                    self._add_copy(stream)
                elif text_target is not None:
                    self.summary.transcoded.append(f"{label} -> {text_target}")
                    self._notice(f"{label} converted to {text_target}: {reason}")
                else:
                    bitmap = stream.codec_context.codec.bitmap_sub
                    self._drop(label, f"{reason}; bitmap subtitles cannot be converted to text" if bitmap else reason)
                    continue
                self.summary.subtitle_streams += 1
            elif isinstance(stream, AttachmentStream) and fmt in ("matroska", "webm"):
                # Fonts for ASS subtitles live here; without them the
                # subtitles render in a fallback font.
                name, mimetype = stream.name, stream.mimetype
                if name is None or mimetype is None:
                    self._drop(label, "cannot copy attachment: it has no file name or MIME type")
                    continue
                try:
                    self._output.add_attachment(name, mimetype, stream.data)
                except (ValueError, OSError, av.FFmpegError, AttributeError) as e:
                    self._drop(label, f"cannot copy attachment: {e}")
            else:
                what = {"video": "extra video streams are not upscaled", "data": "data streams are not kept"}
                self._drop(label, what.get(stream.type, f"{fmt} cannot carry it"))

    def _drop(self, label: str, reason: str) -> None:
        self.summary.dropped.append(label)
        self._notice(f"{label} dropped: {reason}")

    def _add_copy(self, stream: av.stream.Stream) -> None:
        out = self._output.add_stream_from_template(stream)
        copy_metadata(stream.metadata, out.metadata)
        try:
            out.disposition = stream.disposition
        except (AttributeError, ValueError, TypeError):
            pass
        tb = stream.time_base
        assert tb is not None  # demuxed streams always have one
        self._copies[stream.index] = _Copy(stream, out, round(self._origin / tb))

    def _add_subtitle_conversion(self, stream: SubtitleStream, fmt: str) -> str | None:
        """A text subtitle stream re-encoded in the container's text format;
        None for bitmap subtitles and containers with no text format."""
        target = _SUBTITLE_TARGET.get(fmt)
        dec = stream.codec_context
        if target is None or dec is None or not dec.codec.text_sub:
            return None
        try:
            dec.open(strict=False)
            out = self._output.add_stream(target)
        except (ValueError, OSError, av.FFmpegError):
            return None
        assert isinstance(out, SubtitleStream)  # target is a subtitle encoder
        if dec.subtitle_header:  # the source's styles, as far as the target has them
            out.codec_context.subtitle_header = dec.subtitle_header
        copy_metadata(stream.metadata, out.metadata)
        try:
            out.disposition = stream.disposition
        except (AttributeError, ValueError, TypeError):
            pass
        assert stream.time_base is not None  # demuxed streams always have one
        self._subtitles[stream.index] = _Subtitles(stream, out, round(self._origin / stream.time_base))
        return target

    def _add_transcode(self, stream: AudioStream, fmt: str, reason: str) -> str:
        cc = stream.codec_context
        candidates = [_TRANSCODE_TARGET.get(fmt)] + [c for c in _FALLBACK_TARGETS if c != _TRANSCODE_TARGET.get(fmt)]
        for target in filter(None, candidates):
            try:
                codec = av.codec.Codec(target, "w")
            except (ValueError, av.FFmpegError):
                continue
            rates = codec.audio_rates
            rate = cc.sample_rate if not rates or cc.sample_rate in rates else 48000
            layout = _named_layout(cc)
            if not _encoder_fits(fmt, target, rate, layout):
                continue
            out = self._output.add_stream(target, rate=rate)
            assert isinstance(out, AudioStream)  # target is an audio encoder
            out.layout = layout
            enc = out.codec_context
            if target in ("aac", "ac3", "mp2", "libopus"):
                # Transparent-quality rates: these streams replace a lossless
                # or high-rate original.
                per_channel = {"aac": 128_000, "ac3": 96_000, "mp2": 128_000, "libopus": 96_000}[target]
                enc.bit_rate = min(per_channel * cc.channels, 640_000)
            fmts = [f.name for f in codec.audio_formats or ()]
            want_fmt = fmts[0] if fmts else "s16"
            if target == "flac" and cc.format.bytes > 2 and "s32" in fmts:
                want_fmt = "s32"  # keep 24-bit sources 24-bit
            enc.format = want_fmt
            copy_metadata(stream.metadata, out.metadata)
            resampler = av.AudioResampler(format=want_fmt, layout=layout, rate=rate)
            self._transcodes[stream.index] = _Transcode(stream, out, resampler, rate)
            return target
        raise VhsupError(f"no audio codec fits both {describe(stream)} and the {fmt} container ({reason})")

    # -- feeding -----------------------------------------------------------

    def begin(self, first_video_time: Fraction) -> None:
        """Fix the lower cut when no range start was given: the audio starts
        with the first video frame, so both last equally long."""
        if self._lo is None:
            self._lo = Fraction(first_video_time)
        self._maybe_seek()

    def _maybe_seek(self) -> None:
        # A range far into a long file: skip the demuxer ahead rather than
        # read hours of packets. Seeking lands on or before the target.
        if self._lo is None or not self._wanted():
            return
        start = self._input.start_time / av.time_base if self._input.start_time is not None else 0
        if self._lo - Fraction(start) < 10:
            return
        try:
            self._input.seek(max(0, int((self._lo - 5) * av.time_base)), backward=True)
        except (OSError, av.FFmpegError, ValueError):
            self._input.seek(0)
        wanted = [self._input.streams[i] for i in self._wanted()]
        self._packets = self._input.demux(wanted)
        self._held = None

    def pump(self, until: Fraction) -> None:
        """Copy the packets whose midpoint lies before source time ``until``."""
        if self._done:
            return
        self._drain(Fraction(until), final=False)

    def finish(self, video_end: Fraction) -> None:
        """Copy everything up to ``video_end`` (or the range end if earlier)
        and flush the transcoders."""
        if self._done:
            return
        hi = Fraction(video_end) if self._end is None else min(Fraction(video_end), self._end)
        self._drain(hi, final=True)
        if self._end is None:  # the video ran to its end; a range end cuts on purpose
            self._tell_overrun(hi)
        for tr in self._transcodes.values():
            try:
                tail = tr.src.codec_context.decode(None)
            except (av.FFmpegError, ValueError):
                tail = []
            for fr in tail:
                trimmed = self._trim(fr, hi)
                if trimmed is not None:
                    self._encode_frames(tr, tr.resampler.resample(trimmed), first_time=self._frame_time(trimmed))
            self._encode_frames(tr, tr.resampler.resample(None))
            self._output.mux(tr.out.encode(None))
        self._done = True

    def _tell_overrun(self, video_end: Fraction) -> None:
        for idx in (*self._copies, *self._transcodes):
            stream = self._input.streams[idx]
            if stream.type != "audio":
                continue
            end = self._audio_ends.get(idx, video_end)
            if self._unread_tail:  # reading stopped long before the audio did
                end = max(end, self._declared_end(stream) or end)
            if end - video_end > _OVERRUN_NOTICE:
                self._notice(
                    f"{describe(stream)} runs {float(end - video_end):.2f} s past the last video frame; that part was cut"
                )

    def _declared_end(self, stream: av.stream.Stream) -> Fraction | None:
        tb = stream.time_base
        if stream.duration is not None and stream.start_time is not None and tb is not None:
            return (stream.start_time + stream.duration) * tb
        c = self._input
        if c.duration is not None:
            return Fraction(c.duration + (c.start_time or 0), av.time_base)
        return None

    def _drain(self, limit: Fraction, final: bool) -> None:
        if self._end is not None:
            limit = min(limit, self._end)
        while True:
            pkt = self._held
            self._held = None
            if pkt is None:
                try:
                    pkt = next(self._packets)
                except StopIteration:
                    self._packets = iter(())
                    return
                except (OSError, av.FFmpegError) as e:
                    # A damaged tail in the source: keep what was copied.
                    self._notice(f"stopped copying audio/subtitles early: {e}")
                    self._packets = iter(())
                    return
            if pkt.size == 0:  # demuxer flush packet, not data
                continue
            idx = pkt.stream.index
            copy = self._copies.get(idx)
            tr = self._transcodes.get(idx)
            start = _packet_start(pkt)
            if start is None and copy is not None:
                start = copy.next_start
            if start is None:
                if tr is not None:  # decoders can place untimed audio themselves
                    self._transcode(tr, pkt, limit if final else None)
                continue
            tb = pkt.time_base
            t0 = start * tb
            t1 = (start + (pkt.duration or 0)) * tb
            if tr is not None:
                # Transcoded audio is trimmed to the sample later, so take
                # every packet that overlaps the span.
                first_edge, last_edge = max(t0, t1), t0
            elif pkt.stream.type == "audio":
                first_edge = last_edge = (t0 + t1) / 2
            else:
                first_edge = last_edge = t0
            if final and pkt.stream.type == "audio":
                self._audio_ends[idx] = max(self._audio_ends.get(idx, t1), t1)
            if last_edge >= limit:
                if not final:
                    self._held = pkt
                    return
                if t0 > limit + _READ_PAST_END:
                    self._unread_tail = True
                    return  # files interleave within seconds; the rest is later still
                continue  # past the end, but a packet of another stream may still be due
            if self._lo is not None and (first_edge <= self._lo if tr is not None else first_edge < self._lo):
                continue
            if copy is not None:
                self._copy(copy, pkt, start)
            elif tr is not None:
                self._transcode(tr, pkt, limit if final else None)
            else:
                self._convert(self._subtitles[idx], pkt, start)

    def _copy(self, c: _Copy, pkt: av.Packet, start: int) -> None:
        # pts and dts move by the same amount, so B-frame-style reordering
        # (pts != dts) and the offset against the video both survive.
        pts_out = start - c.origin_ticks
        dts_out = (pkt.dts if pkt.dts is not None else start) - c.origin_ticks
        if c.last_dts is not None and dts_out <= c.last_dts and pkt.stream.type == "audio":
            return  # a duplicate or backwards packet; muxers refuse it
        c.next_start = start + (pkt.duration or 0)
        c.last_dts = dts_out
        pkt.pts = pts_out
        pkt.dts = dts_out
        pkt.stream = c.out
        self._output.mux(pkt)

    def _convert(self, c: _Subtitles, pkt: av.Packet, start: int) -> None:
        label = describe(c.src)
        try:
            cue = c.src.codec_context.decode2(pkt)
            if cue is None or len(cue) == 0:  # e.g. the empty samples MP4 puts between cues
                return
            out = c.out.codec_context.encode_subtitle(cue)
        except (av.FFmpegError, ValueError) as e:
            self._notice(f"{label}: skipped a cue that could not be converted ({e})")
            return
        duration = pkt.duration or round(Fraction(cue.end_display_time - cue.start_display_time, 1000) / pkt.time_base)
        out.stream = c.out
        out.time_base = pkt.time_base
        out.pts = out.dts = start - c.origin_ticks
        out.duration = duration
        self._output.mux(out)

    def _transcode(self, tr: _Transcode, pkt: av.Packet, hi: Fraction | None) -> None:
        try:
            frames = tr.src.codec_context.decode(pkt)
        except (av.FFmpegError, ValueError) as e:
            self._notice(f"{describe(tr.src)}: skipped an undecodable packet ({e})")
            return
        kept = []
        for fr in frames:
            trimmed = self._trim(fr, hi)
            if trimmed is not None:
                kept.append(trimmed)
        for fr in kept:
            self._encode_frames(tr, tr.resampler.resample(fr), first_time=self._frame_time(fr))

    @staticmethod
    def _frame_time(fr: av.AudioFrame) -> Fraction | None:
        return fr.pts * fr.time_base if fr.pts is not None and fr.time_base is not None else None

    def _trim(self, fr: av.AudioFrame, hi: Fraction | None) -> av.AudioFrame | None:
        """Cut a decoded frame to [lo, hi) at sample precision."""
        t0 = self._frame_time(fr)
        if t0 is None:
            return fr
        rate = fr.sample_rate
        a = 0
        b = fr.samples
        if self._lo is not None and t0 < self._lo:
            a = min(b, math.ceil((self._lo - t0) * rate))
        if hi is not None:
            b = max(a, min(b, math.floor((hi - t0) * rate)))
        if a == 0 and b == fr.samples:
            return fr
        if b <= a:
            return None
        arr = fr.to_ndarray()
        arr = arr[:, a:b] if fr.format.is_planar else arr[:, a * len(fr.layout.channels) : b * len(fr.layout.channels)]
        # from_ndarray needs C-contiguous samples; copy() (order "C") gives them.
        out = av.AudioFrame.from_ndarray(arr.copy(), format=fr.format.name, layout=fr.layout.name)
        out.sample_rate = rate
        out.time_base = Fraction(1, rate)
        out.pts = round((t0 + Fraction(a, rate)) * rate)
        return out

    def _encode_frames(self, tr: _Transcode, frames: list[av.AudioFrame], first_time: Fraction | None = None) -> None:
        for fr in frames:
            if tr.next_pts is None:
                t = first_time if first_time is not None else (self._lo or self._origin)
                tr.next_pts = round((t - self._origin) * tr.rate)
            # Timestamps run on from the first sample: the encoder's frame
            # chunking needs contiguous audio, and gaps in a source's audio
            # are not worth a desync-prone reconstruction.
            fr.pts = tr.next_pts
            fr.time_base = Fraction(1, tr.rate)
            tr.next_pts += fr.samples
            self._output.mux(tr.out.encode(fr))

    def close(self) -> None:
        try:
            self._input.close()
        except (OSError, av.FFmpegError):
            pass


def _named_layout(cc: av.audio.codeccontext.AudioCodecContext) -> str:
    """The stream's channel layout, or the standard one for its channel
    count when the container did not say which channel is which (PCM in AVI
    is just '2 channels'); encoders such as AAC refuse unnamed layouts."""
    name = cc.layout.name
    if name.endswith("channels"):
        return av.AudioLayout(f"{cc.channels}c").name  # "Nc": the default layout for N
    return name


def _encoder_fits(fmt: str, codec: str, rate: int, layout: str) -> bool:
    """Whether the output format takes this encoder's stream (header and
    trailer, no packets: encoded audio is always valid for its codec)."""
    if fmt == "mp4" and codec.startswith("pcm_"):
        return False
    out = av.open(io.BytesIO(), "w", format=fmt)
    try:
        s = out.add_stream(codec, rate=rate)
        assert isinstance(s, AudioStream)  # codec is an audio encoder
        s.layout = layout
        out.start_encoding()
        out.close()
        return True
    except (ValueError, OSError, av.FFmpegError):
        return False
    finally:
        try:
            out.close()
        except Exception:
            pass


def rebase_chapters(
    chapters: list[Chapter], origin: Fraction, lo: Fraction | None, hi: Fraction | None
) -> list[Chapter]:
    """Chapters moved to the output clock and clipped to the kept span;
    chapters wholly outside it are left out."""
    out: list[Chapter] = []
    for ch in chapters:
        tb = ch.get("time_base") or Fraction(1, 1_000_000_000)
        a = ch["start"] * tb
        b = ch["end"] * tb
        if lo is not None:
            a = max(a, lo)
        if hi is not None:
            b = min(b, hi)
        if b <= a:
            continue
        out.append(
            {
                "id": len(out) + 1,
                "start": round((a - origin) * 1000),
                "end": round((b - origin) * 1000),
                "time_base": Fraction(1, 1000),
                "metadata": dict(ch.get("metadata") or {}),
            }
        )
    return out
