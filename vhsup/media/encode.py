"""Encoding the upscaled pictures, with the source's other streams, into a
finished file that appears all at once.

The output is written to a hidden temporary file next to the destination and
renamed over it only when the container is complete, so an interrupted run
(Ctrl-C, a crash, a full disk) never leaves a truncated file under the name
the user asked for - half-written videos that look finished are worse than
none.

Colour: pictures arrive as full-range RGB. They are converted to YUV with
the output's matrix (BT.709 for HD, BT.601 for SD) at limited range, and the
stream is tagged with the same matrix, primaries, transfer and range, so
players decode them with the matrix they were encoded with. Converting with
one matrix and tagging (or leaving untagged) another is the classic skin-tone
shift of upscaled video.

Timing: each picture's source-clock time minus ``origin`` becomes its pts in
a fine time base, so variable frame rate sources keep their timing; the
audio and subtitles are shifted by the same ``origin`` (see streams.py).
"""

from __future__ import annotations

import ctypes
import errno as errnos
import io
import logging
import math
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.container
import numpy as np
from av.video.stream import VideoStream

from vhsup.atomic import check_output
from vhsup.errors import VhsupError
from vhsup.media import VIDEO_CODECS
from vhsup.media.colour import ColourSpec
from vhsup.media.picture import Picture
from vhsup.media.streams import AuxStreams, AuxSummary, copy_metadata, rebase_chapters

log = logging.getLogger(__name__)

CODECS = VIDEO_CODECS
NVENC = ("h264_nvenc", "hevc_nvenc")
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
NVENC_PRESETS = tuple(f"p{i}" for i in range(1, 8))
DEFAULT_CRF = 18

# Containers that store one duration per stream rather than per-frame
# timestamps: pictures are placed on the nominal frame grid.
_CFR_FORMATS = {"avi"}
# H.264 and HEVC leave presentation times to the container. AVI has none, so
# readers rebuild them, and FFmpeg's rebuild (AVFMT_FLAG_GENPTS, which PyAV
# always sets, or ``ffmpeg -fflags +genpts``) shows each picture when the
# next one arrives - MPEG-2's rule for B-frames - one frame late against the
# audio, B-frames or not. Intra-only codecs (FFV1) come back on time.
_UNTIMED_IN_CFR = {"libx264", "libx265", "h264_nvenc", "hevc_nvenc"}
_HEVC = {"libx265", "hevc_nvenc"}
# Extension -> muxer where FFmpeg's own guess is not what a user means.
_FORMAT_BY_SUFFIX = {
    "": "matroska",
    ".mkv": "matroska",
    ".mk3d": "matroska",
    ".webm": "webm",
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".avi": "avi",
    ".ts": "mpegts",
    ".m2ts": "mpegts",
    ".mts": "mpegts",
    ".mpg": "vob",
    ".mpeg": "vob",
    ".vob": "vob",
    ".nut": "nut",
}
AV_FIELD_PROGRESSIVE = 1
_GLOBAL_HEADER_FORMAT = 0x0040  # AVFMT_GLOBALHEADER
_GLOBAL_HEADER_CODEC = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER
_TEMP_MARK = ".vhsup-partial-"


@dataclass
class EncodeSettings:
    """Video codec choices.

    Attributes:
        codec: libx264 | libx265 | ffv1 | prores_ks | h264_nvenc | hevc_nvenc.
        crf: quality for x264/x265 (constant rate factor) and NVENC
            (constant quality, ``cq``); None means 18. Ignored by the
            lossless/intra codecs.
        preset: x264/x265 speed preset (default 'medium'); NVENC p1..p7
            (default p5).
        pix_fmt: yuv420p or yuv420p10le. Codecs that cannot take it get the
            nearest format they can (prores_ks -> yuv422p10le, NVENC 10-bit
            -> p010le), with a notice.
        threads: encoder threads, 0 = the codec's default.
    """

    codec: str = "libx264"
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str = "yuv420p"
    threads: int = 0


@dataclass
class EncodeReport:
    frames: int
    audio_streams: int
    subtitle_streams: int
    transcoded: list[str]
    dropped_streams: list[str]
    video_duration: float
    path: Path
    notices: list[str] = field(default_factory=list)


def container_format(dst: Path) -> str:
    """The muxer for an output name; files with no extension get Matroska."""
    suffix = dst.suffix.lower()
    if suffix in _FORMAT_BY_SUFFIX:
        return _FORMAT_BY_SUFFIX[suffix]
    # FFmpeg guesses a muxer from a file name; nothing is created until a
    # container starts encoding, so a name that is never written will do.
    probe_name = os.path.join(tempfile.gettempdir(), f"vhsup-format-probe{suffix}")
    try:
        with av.open(probe_name, "w") as probe:
            return probe.format.name
    except (ValueError, OSError, av.FFmpegError) as e:
        raise VhsupError(f"unknown container extension {suffix!r}; use .mkv, .mp4, .mov or .avi", dst) from e


def check_container(dst: Path, codec: str, fmt: str | None = None) -> str:
    """The muxer for ``dst`` (or ``fmt``), once it is known to hold and time
    ``codec``'s video; a VhsupError saying what to use instead otherwise.
    Cheap: nothing is written, so callers can check before any work."""
    fmt = fmt or container_format(dst)
    if fmt in _CFR_FORMATS and codec in _UNTIMED_IN_CFR:
        raise VhsupError(
            f"{fmt} stores no presentation times: readers that rebuild them (PyAV, ffmpeg -fflags +genpts) "
            f"show {codec} video a frame late against the audio; use .mkv or .mp4, or --codec ffv1 for {fmt}",
            dst,
        )
    trial = av.open(io.BytesIO(), "w", format=fmt)
    try:
        trial.add_stream(codec)
    except (ValueError, av.FFmpegError) as e:
        better = {"prores_ks": ".mov or .mkv", "ffv1": ".mkv"}.get(codec, ".mkv or .mp4")
        raise VhsupError(f"{fmt} cannot hold {codec} video; use {better}", dst) from e
    finally:
        try:
            trial.close()
        except (ValueError, OSError, av.FFmpegError):  # never started; nothing to finish
            pass
    return fmt


def temp_path(dst: Path) -> Path:
    """A hidden sibling of dst for the file being written.

    Same directory (so the final rename is atomic and never crosses file
    systems), same extension (so nothing guesses another format), and the
    writer's pid in the name so a later run can tell a crashed run's leftover
    from a file another process is still writing.
    """
    return dst.with_name(f".{dst.stem}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{dst.suffix}")


def sane_dts(packets: list[av.Packet]) -> list[av.Packet]:
    """Drop a decode time that falls after its packet's presentation time.

    libx265 (through FFmpeg) now and then gives the first packet of a very
    short encode a garbage dts (seen: pts 0, dts 6.5e16, in about one of ten
    two-frame encodes on a busy machine), and the muxer then refuses the
    file. A dts after the pts is never valid; without one, libavformat
    derives it from the pts, as it does for encoders that give none.
    """
    for p in packets:
        if p.dts is not None and p.pts is not None and p.dts > p.pts:
            p.dts = None
    return packets


def remove_own_temp_files(dst: Path) -> None:
    """Remove this process's temp files for ``dst``.

    An encoder that is interrupted just as its constructor returns (a signal
    handled between the file being created and the caller holding the
    encoder) cannot be told to abort; its caller's clean-up calls this.
    """
    mark = f".{dst.stem}{_TEMP_MARK}{os.getpid()}-"
    try:
        candidates = list(dst.parent.iterdir())
    except OSError:
        return
    for p in candidates:
        if p.name.startswith(mark) and p.name.endswith(dst.suffix):
            try:
                p.unlink()
            except OSError:
                pass


def stale_temp_files(dst: Path) -> list[Path]:
    """Leftovers of crashed runs for this destination (their writer is gone)."""
    stale = []
    prefix = f".{dst.stem}{_TEMP_MARK}"
    try:
        candidates = list(dst.parent.iterdir())
    except OSError:
        return []
    for p in candidates:
        if not (p.name.startswith(prefix) and p.name.endswith(dst.suffix)):
            continue
        tail = p.name[len(prefix) : len(p.name) - len(dst.suffix) if dst.suffix else None]
        pid_text = tail.split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stale.append(p)
        except PermissionError:  # alive, someone else's
            pass
    return stale


def _time_base(rate: Fraction) -> Fraction:
    """A clock fine enough for variable frame rate and exact for the nominal
    rate: 1/90000 (MPEG's clock, whole ms and whole NTSC/PAL frames) or a
    multiple of it that also divides the frame duration."""
    den = 90000 * rate.numerator // math.gcd(90000, rate.numerator)
    return Fraction(1, den) if den <= 2_000_000 else Fraction(1, 90000)


def _choose_pix_fmt(codec: av.codec.Codec, wanted: str) -> str:
    names = [f.name for f in codec.video_formats or ()]
    if not names or wanted in names:
        return wanted
    deep = "10" in wanted or "12" in wanted or "16" in wanted
    prefs = (
        ("p010le", "yuv420p10le", "yuv422p10le", "yuv444p10le")
        if deep
        else ("yuv420p", "nv12", "yuv422p", "yuv422p10le", "yuv444p")
    )
    for cand in prefs:
        if cand in names:
            return cand
    return names[0]


def _chroma_shift(pix_fmt: str) -> tuple[int, int]:
    """(horizontal, vertical) chroma subsampling as powers of two."""
    if pix_fmt.startswith(("yuv420", "yuva420", "nv12", "nv21", "p010", "p016")):
        return 1, 1
    if pix_fmt.startswith(("yuv422", "yuva422", "nv16", "p210", "p216")):
        return 1, 0
    if pix_fmt.startswith("yuv411"):
        return 2, 0
    return 0, 0


class _Rational(ctypes.Structure):
    _fields_ = [("num", ctypes.c_int), ("den", ctypes.c_int)]


# Where FFmpeg 6.1+ (libavformat 60.16+) keeps AVStream's index, time_base
# and sample_aspect_ratio, and where PyAV keeps its AVStream pointer: after
# the object header and Cython's method table.
_AVSTREAM_INDEX, _AVSTREAM_TIME_BASE, _AVSTREAM_SAR = 8, 32, 72
_PYAV_STREAM_PTR = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)


def _set_stream_sar(stream: av.video.stream.VideoStream, sar: Fraction) -> bool:
    """Set AVStream.sample_aspect_ratio, which PyAV cannot (assigning
    ``stream.sample_aspect_ratio`` sets the codec's). Matroska writes the
    display size from it and from nothing else.

    The pointer is taken from where PyAV's Stream keeps it and trusted only
    if the AVStream it points to holds the stream's own index and time base
    (set just before); otherwise nothing is written and False returned.
    Only PyAV 18, whose object layout this was checked against, is read
    this way; other releases get the caller's notice instead.
    """
    if not av.__version__.startswith("18.") or av.library_versions["libavformat"] < (60, 16):
        return False
    if stream.time_base is None:
        return False
    ptr = ctypes.c_void_p.from_address(id(stream) + _PYAV_STREAM_PTR).value
    if not ptr:
        return False
    tb = _Rational.from_address(ptr + _AVSTREAM_TIME_BASE)
    if ctypes.c_int.from_address(ptr + _AVSTREAM_INDEX).value != stream.index or (tb.num, tb.den) != (
        stream.time_base.numerator,
        stream.time_base.denominator,
    ):
        return False
    field = _Rational.from_address(ptr + _AVSTREAM_SAR)
    field.num, field.den = sar.numerator, sar.denominator
    return True


#: NVIDIA's compute GPUs without a video encoder (NVENC): A100/A800/A30 and H100/H800/H200/H20.
_NO_NVENC = ("A100", "A800", "A30", "H100", "H800", "H200", "H20")


def no_nvenc_on(gpu: str | None) -> str | None:
    """Why NVENC cannot run on the GPU named ``gpu`` (torch's device name), or None."""
    if not gpu:
        return None
    words = gpu.upper().replace("-", " ").split()
    chip = next((w for w in words if w in _NO_NVENC), None)
    if chip is None:
        return None
    return f"the {gpu} here has no NVENC (NVIDIA's {chip}, like the other compute GPUs {', '.join(c for c in _NO_NVENC if c != chip)}, has no video encoder)"


def _cuda_name() -> str | None:
    """The first CUDA device's name, if torch sees one."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA set-up: no name to go by
        return None


class VideoEncoder:
    """Writes pictures to ``dst`` with the source's audio and subtitles.

    Use as a context manager, or call ``close`` on success and ``abort`` on
    failure; leaving the ``with`` block by an exception (KeyboardInterrupt
    included) aborts. Until ``close`` returns, ``dst`` is untouched.

    Args:
        dst: output file; its extension picks the container (none: mkv).
        src: the input; its audio/subtitle streams are read by a separate
            read-only demuxer.
        width, height: size of the pictures that will be written.
        rate: nominal output frame rate (for the codec and stream headers).
        sar: sample aspect ratio to tag, 1 for square pixels.
        colour: matrix and tags of the output (vhsup.media.colour).
        settings: codec choices.
        time_range: (start, end) on the source clock; audio and subtitles
            are cut to it. end None: to the end.
        origin: source-clock time that maps to output time 0.
        overwrite: replace an existing dst (only once the new file is done).
        notice: receives one-line messages about streams that were
            transcoded or dropped and settings that were adjusted.
        reformat_threads: threads for the RGB->YUV conversion. PyAV's default
            is every core, which fights the rest of the pipeline.
        video_stream: index of the source's video stream being replaced (by
            default the first video stream); other video streams are dropped
            with a notice.
        stage_for: a container format name (e.g. 'matroska'): write a
            video-only NUT file whose packets are encoded exactly as they
            would be for that format (codec options, time base, in-band or
            global headers), to be copied into it later by a chunked run.
            NUT keeps every timestamp at the encoder's own clock.
        template: a staged chunk's video stream; the output's video stream
            is made from it and filled with ``copy_packet`` instead of
            ``write`` (no re-encoding), audio and subtitles as usual.
    """

    def __init__(
        self,
        dst: Path,
        *,
        src: Path,
        width: int,
        height: int,
        rate: Fraction,
        sar: Fraction,
        colour: ColourSpec,
        settings: EncodeSettings,
        time_range: tuple[Fraction | None, Fraction | None] | None = None,
        origin: Fraction = Fraction(0),
        overwrite: bool = False,
        notice: Callable[[str], None] | None = None,
        reformat_threads: int = 1,
        video_stream: int | None = None,
        stage_for: str | None = None,
        template: VideoStream | None = None,
    ):
        self.dst = Path(dst)
        self.src = Path(src)
        self._notices: list[str] = []
        self._user_notice = notice
        self._width, self._height = int(width), int(height)
        self._rate = Fraction(rate)
        self._sar = Fraction(sar) if sar else Fraction(1)
        self._colour = colour
        self._settings = settings
        self._origin = Fraction(origin)
        self._range_start = Fraction(time_range[0]) if time_range and time_range[0] is not None else None
        self._range_end = Fraction(time_range[1]) if time_range and time_range[1] is not None else None
        self._overwrite = overwrite
        self._reformat_threads = reformat_threads
        self._out: av.container.OutputContainer | None = None
        self._aux: AuxStreams | None = None
        self._tmp: Path | None = None
        self._state = "new"
        self._frames = 0
        self._last_time: Fraction | None = None
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._bumped = 0
        self._stage = stage_for is not None
        self._template = template

        self._check_paths()
        self._fmt = check_container(self.dst, settings.codec, stage_for)
        if self._rate <= 0:
            raise ValueError(f"frame rate must be positive, not {rate}")
        codec = self._check_codec()
        self._pix_fmt = _choose_pix_fmt(codec, settings.pix_fmt)
        if self._pix_fmt != settings.pix_fmt:
            self._notice(f"{settings.codec} cannot encode {settings.pix_fmt}; using {self._pix_fmt}")
        sx, sy = _chroma_shift(self._pix_fmt)
        if self._width % (1 << sx) or self._height % (1 << sy) or self._width <= 0 or self._height <= 0:
            raise VhsupError(
                f"{self._pix_fmt} needs a width that is a multiple of {1 << sx} and a height that is a multiple "
                f"of {1 << sy}; got {self._width}x{self._height}",
                self.dst,
            )
        cfr = self._fmt in _CFR_FORMATS
        self._tb = 1 / self._rate if cfr else _time_base(self._rate)
        self._frame_ticks = max(1, round(1 / (self._rate * self._tb)))

        for stale in stale_temp_files(self.dst):
            try:
                stale.unlink()
                self._notice(f"removed {stale.name}, left by an interrupted run")
            except OSError:
                pass
        self._tmp = temp_path(self.dst)
        try:
            self._open(video_stream)
        except BaseException:
            self.abort()
            raise
        self._state = "open"

    # -- set-up ------------------------------------------------------------

    def _notice(self, message: str) -> None:
        self._notices.append(message)
        if self._user_notice is not None:
            self._user_notice(message)
        else:
            log.warning("%s", message)

    def _check_paths(self) -> None:
        if not self.src.is_file():
            raise VhsupError("input file not found", self.src)
        check_output(self.dst, inputs=[self.src], overwrite=self._overwrite)

    def _check_codec(self) -> av.codec.Codec:
        s = self._settings
        if s.codec not in CODECS:
            raise VhsupError(f"unsupported video codec {s.codec!r}; choose one of {', '.join(CODECS)}")
        try:
            codec = av.codec.Codec(s.codec, "w")
        except (ValueError, av.FFmpegError) as e:
            raise VhsupError(f"this PyAV build has no {s.codec} encoder") from e
        if s.preset is not None:
            allowed = NVENC_PRESETS if s.codec in NVENC else X26X_PRESETS if s.codec in ("libx264", "libx265") else None
            if allowed is None:
                self._notice(f"{s.codec} has no presets; ignoring preset {s.preset!r}")
            elif s.preset not in allowed:
                raise VhsupError(f"{s.codec} preset must be one of {', '.join(allowed)}, not {s.preset!r}")
        if s.crf is not None:
            if s.codec in ("ffv1", "prores_ks"):
                self._notice(f"{s.codec} does not use crf; ignoring crf {s.crf}")
            elif not 0 <= s.crf <= 51:
                raise VhsupError(f"crf must be between 0 and 51, not {s.crf}")
        return codec

    def _codec_options(self) -> dict[str, str]:
        s = self._settings
        crf = DEFAULT_CRF if s.crf is None else s.crf
        if s.codec == "libx264":
            return {"crf": str(crf), "preset": s.preset or "medium"}
        if s.codec == "libx265":
            return {"crf": str(crf), "preset": s.preset or "medium", "x265-params": "log-level=error"}
        if s.codec == "ffv1":
            # Version 3 with per-slice CRCs and every frame a keyframe: the
            # archival settings, seekable and self-checking.
            return {"level": "3", "slicecrc": "1", "g": "1"}
        if s.codec == "prores_ks":
            return {"profile": "3", "vendor": "apl0"}  # 422 HQ
        # NVENC: constant quality, the counterpart of crf.
        return {
            "preset": s.preset or "p5",
            "tune": "hq",
            "rc": "vbr",
            "cq": str(crf),
            "b": "0",
        }

    def _open(self, video_stream: int | None) -> None:
        try:
            with av.open(str(self.src)) as probe:
                # Read indices while open: PyAV streams dangle after close.
                video_indices = [v.index for v in probe.streams.video]
                src_meta = dict(probe.metadata)
                chapters = probe.chapters() if hasattr(probe, "chapters") else []
                src_duration = Fraction(probe.duration, av.time_base) if probe.duration else None
                start = Fraction(probe.start_time, av.time_base) if probe.start_time is not None else Fraction(0)
        except (OSError, av.FFmpegError) as e:
            raise VhsupError(f"cannot open input: {e}", self.src) from e
        main = video_stream if video_stream is not None else (video_indices[0] if video_indices else None)

        options = {"movflags": "+faststart"} if self._fmt in ("mp4", "mov") and not self._stage else {}
        if self._stage:
            # Keep the encoder's timestamps as they are (B-frames start with
            # a negative dts); by default the muxer would shift them all.
            options = {"avoid_negative_ts": "disabled"}
        self._out = out = av.open(str(self._tmp), "w", format="nut" if self._stage else self._fmt, options=options)
        s = self._settings
        vs: av.stream.Stream
        try:
            if self._template is not None:
                vs = out.add_stream_from_template(self._template)
            else:
                vs = out.add_stream(s.codec, rate=self._rate, options=self._codec_options())
        except (ValueError, av.FFmpegError) as e:
            better = ".mov or .mkv" if s.codec == "prores_ks" else ".mkv"
            raise VhsupError(f"{self._fmt} cannot hold {s.codec} video ({e}); use {better}", self.dst) from e
        assert isinstance(vs, VideoStream)  # s.codec is one of CODECS, all video encoders
        cc = vs.codec_context
        if self._template is None:
            vs.width, vs.height = self._width, self._height
            vs.pix_fmt = self._pix_fmt
        if self._stage:
            # Headers in-band or in extradata as the final container wants,
            # not as NUT would: the staged packets are copied there verbatim.
            wants = av.format.ContainerFormat(self._fmt, "w").flags & _GLOBAL_HEADER_FORMAT
            cc.flags = (cc.flags | _GLOBAL_HEADER_CODEC) if wants else (cc.flags & ~_GLOBAL_HEADER_CODEC)
        cc.time_base = self._tb
        vs.time_base = self._tb
        cc.framerate = self._rate
        # The codec's goes into the H.264/HEVC VUI and MP4/MOV's 'pasp'; the
        # stream's into Matroska's display size. FFV1 and ProRes in Matroska
        # have only the latter.
        cc.sample_aspect_ratio = self._sar
        if self._sar != 1 and not _set_stream_sar(vs, self._sar) and self._fmt in ("matroska", "webm"):
            self._notice(
                f"this PyAV build cannot tag the {self._fmt} track with the pixel aspect ratio "
                f"{self._sar.numerator}:{self._sar.denominator}; players may show {s.codec} video stretched"
            )
        if self._fmt in ("mp4", "mov") and s.codec in _HEVC:
            # FFmpeg tags HEVC 'hev1'; QuickTime, iOS and Safari play only
            # 'hvc1' (parameter sets in the sample entry, as x265 and NVENC
            # put them with global headers).
            cc.codec_tag = "hvc1"
        cc.colorspace = self._colour.space
        cc.color_primaries = self._colour.primaries
        cc.color_trc = self._colour.trc
        cc.color_range = self._colour.range_tag
        # The pictures are deinterlaced (or were progressive): say so, or
        # players may deinterlace them again.
        cc.field_order = AV_FIELD_PROGRESSIVE
        if s.threads:
            cc.thread_count = s.threads
        if s.codec in NVENC:
            cc.bit_rate = 0
        self._video = vs
        if self._stage:
            return self._start(s)

        self._aux = AuxStreams(
            self.src,
            out,
            origin=self._origin,
            start=self._range_start,
            end=self._range_end,
            skip={main} if main is not None else set(),
            notice=self._notice,
        )
        copy_metadata(src_meta, out.metadata)
        if chapters:
            lo = self._range_start if self._range_start is not None else self._origin
            hi = self._range_end if self._range_end is not None else (start + src_duration if src_duration else None)
            kept = rebase_chapters(chapters, self._origin, lo, hi)
            if kept:
                try:
                    out.set_chapters(kept)
                except (ValueError, av.FFmpegError, AttributeError):
                    self._notice(f"{self._fmt} cannot hold chapters; they were left out")
        self._start(s)

    def _start(self, s: EncodeSettings) -> None:
        assert self._out is not None  # opened by _open
        try:
            self._out.start_encoding()
        except (OSError, av.FFmpegError, ValueError) as e:
            if s.codec in NVENC:
                why = no_nvenc_on(_cuda_name())
                if why:
                    raise VhsupError(f"{s.codec}: {why}; use libx264 or libx265") from e
                raise VhsupError(f"{s.codec} needs an NVIDIA GPU with NVENC and its driver: {e}") from e
            mapped = self._mapped(e)
            if mapped is not e:
                raise mapped from e
            raise VhsupError(f"cannot start the {s.codec} encoder in a {self._fmt} file: {e}", self.dst) from e

    # -- writing -----------------------------------------------------------

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.close()
        return False

    @property
    def temp_file(self) -> Path | None:
        """Where the output is being written until close (None after)."""
        return self._tmp if self._state in ("new", "open") else None

    def write(self, picture: Picture) -> None:
        """Encode one picture (H x W x 3 uint8 RGB at the size given)."""
        if self._state != "open":
            raise RuntimeError(f"encoder is {self._state}")
        rgb = picture.rgb
        if rgb.shape != (self._height, self._width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"picture is {rgb.shape} {rgb.dtype}, encoder expects ({self._height}, {self._width}, 3) uint8"
            )
        with self._failing_aborts():
            self._write(picture)

    def copy_packet(self, packet: av.Packet, time: Fraction) -> None:
        """Mux one already encoded packet of the ``template`` stream (its pts
        and dts already on the output clock); ``time`` is its picture's
        source-clock time, which paces the audio and subtitles."""
        if self._state != "open" or self._template is None:
            raise RuntimeError(f"encoder is {self._state}" if self._state != "open" else "no template stream")
        t = Fraction(time)
        with self._failing_aborts():
            if self._frames == 0 and self._aux is not None:
                self._aux.begin(self._range_start if self._range_start is not None else t)
            packet.stream = self._video
            assert self._out is not None  # open
            self._out.mux(packet)
            pts = round((t - self._origin) / self._tb)
            if self._last_time is None or t > self._last_time:
                self._last_time, self._last_pts = t, pts
            self._first_pts = pts if self._first_pts is None else min(self._first_pts, pts)
            self._frames += 1
            if self._aux is not None:
                self._aux.pump(self._last_time)

    def _write(self, picture: Picture) -> None:
        t = Fraction(picture.time)
        if self._frames == 0 and self._aux is not None:
            self._aux.begin(self._range_start if self._range_start is not None else t)
        pts = round((t - self._origin) / self._tb)
        if self._last_pts is not None and pts <= self._last_pts:
            # Equal or backwards times (duplicates, rounding on the CFR grid
            # of AVI): keep pts strictly increasing, as every muxer requires.
            pts = self._last_pts + 1
            self._bumped += 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture.rgb), format="rgb24")
        frame = frame.reformat(
            format=self._pix_fmt,
            src_colorspace=self._colour.matrix,
            dst_colorspace=self._colour.matrix,
            src_color_range="JPEG",
            dst_color_range="JPEG" if self._colour.full_range else "MPEG",
            threads=self._reformat_threads,
        )
        frame.pts = pts
        frame.time_base = self._tb
        # Containers take each frame's length from the next timestamp; only
        # the last frame's comes from here. A picture carries no duration,
        # so that one is the nominal frame length.
        frame.duration = self._frame_ticks
        assert self._out is not None  # open
        self._out.mux(sane_dts(self._video.encode(frame)))
        self._last_time = t
        if self._first_pts is None:
            self._first_pts = pts
        self._last_pts = pts
        self._frames += 1
        if self._aux is not None:
            self._aux.pump(t)

    def close(self) -> EncodeReport:
        """Finish the file and move it to ``dst``."""
        if self._state != "open":
            raise RuntimeError(f"encoder is {self._state}")
        with self._failing_aborts():
            return self._close()

    def _close(self) -> EncodeReport:
        if self._frames == 0:
            raise VhsupError("no pictures were written; nothing to encode", self.dst)
        # Set while open, and by the first picture or packet.
        assert self._out is not None and self._tmp is not None
        assert self._last_time is not None and self._first_pts is not None and self._last_pts is not None
        if self._template is None:
            self._out.mux(sane_dts(self._video.encode(None)))
        video_end = self._last_time + self._frame_ticks * self._tb
        if self._aux is not None:
            self._aux.finish(video_end)
            self._aux.close()
        self._out.close()
        self._out = None
        # The rename is what makes the file appear; make its data durable
        # first so a power cut cannot leave an empty file under the name.
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.dst.exists() and not self._overwrite:
            raise VhsupError("output appeared while encoding; not replacing it", self.dst)
        os.replace(self._tmp, self.dst)
        self._state = "closed"
        if self._bumped:
            self._notice(f"{self._bumped} pictures had repeated or backwards times and were nudged forward")
        summary = self._aux.summary if self._aux is not None else AuxSummary()
        return EncodeReport(
            frames=self._frames,
            audio_streams=summary.audio_streams,
            subtitle_streams=summary.subtitle_streams,
            transcoded=list(summary.transcoded),
            dropped_streams=list(summary.dropped),
            video_duration=float((self._last_pts + self._frame_ticks - self._first_pts) * self._tb),
            path=self.dst,
            notices=list(self._notices),
        )

    def abort(self) -> None:
        """Stop and remove the partial file; dst is never created."""
        if self._state in ("aborted", "closed"):
            return
        self._state = "aborted"
        # Unlink first: closing the container writes its trailer, and for
        # MP4 with faststart that rewrites the whole file - minutes spent on
        # a file being thrown away. Unlinked, the trailer goes nowhere and
        # the rewrite fails at once. (Where an open file cannot be unlinked,
        # the second attempt after closing does it.)
        self._remove_temp()
        try:
            if self._aux is not None:
                self._aux.close()
            if self._out is not None:
                out, self._out = self._out, None
                try:
                    out.close()
                except Exception:  # the file is being thrown away
                    pass
        finally:
            self._remove_temp()

    def _remove_temp(self) -> None:
        if self._tmp is None:
            return
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # e.g. still open on Windows; retried after closing
            pass

    @contextmanager
    def _failing_aborts(self) -> Iterator[None]:
        """Any failure inside removes the temp file, then surfaces as a user error where it is one."""
        try:
            yield
        except BaseException as e:
            self.abort()
            mapped = self._mapped(e)
            if mapped is e:
                raise
            raise mapped from e

    def _mapped(self, e: BaseException) -> BaseException:
        """Errors the user can act on become VhsupError; the rest pass."""
        if isinstance(e, VhsupError) or not isinstance(e, OSError):
            return e
        code = getattr(e, "errno", None)
        if code in _DISK_FULL:
            return VhsupError(f"the disk is full or the file is too large: {e}", self.dst)
        if code in _CANNOT_WRITE:
            return VhsupError(f"cannot write the output: {e}", self.dst)
        return e


_DISK_FULL = {errnos.ENOSPC, errnos.EFBIG, errnos.EDQUOT}
_CANNOT_WRITE = {errnos.EIO, errnos.EACCES, errnos.EROFS, errnos.EPERM}
