"""Builders of real test media, so no binary files live in the repository.

Every clip is made with PyAV from frames rendered here, in the formats vhsup
meets in the field: interlaced MPEG-2 in a DVD-style program stream with
AC-3, DV in AVI with PCM, FFV1 at odd sizes, H.264 in MP4 with AAC, variable
frame rate Matroska, MPEG-2 transport streams, subtitles and chapters.

The pictures carry what a test needs to check an output without trusting the
code under test:

* **Frame identity.** A row of ten large black/white cells across the middle
  band spells the frame's index in binary. The cells are a fixed fraction of
  the picture, identical in both fields, so ``read_index`` finds them after
  lossy coding, scaling, deinterlacing or cropping a few pixels.
* **Motion.** A box slides across the top band and is rendered at *field*
  rate for interlaced clips (the two fields of a frame come from two
  instants), so deinterlacers see real combing.
* **Sync marks.** Every ``flash_every`` frames (from ``flash_offset``) the
  picture outside the code band turns white, and every audio stream carries a
  short loud burst starting at exactly that frame's presentation time over a
  quiet steady tone. ``find_flashes`` and ``find_clicks`` return those times
  from any file, so a test can measure A/V sync in an output.
* **Colour reference.** The bottom band is 75% colour bars plus a skin tone
  (``BARS``), converted to YUV with the matrix the clip is tagged with.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np

NTSC_RATE = Fraction(30000, 1001)
PAL_RATE = Fraction(25)

# Layout, as fractions of the picture height/width. Kept in one place so the
# renderer and the readers cannot drift apart.
TOP_BAND = (0.0, 0.36)  # moving box; white on flash frames
CODE_BAND = (0.40, 0.60)  # frame-index cells on mid grey
CODE_X = (0.08, 0.92)
CODE_BITS = 10
BARS_BAND = (0.64, 1.0)  # colour bars; white on flash frames
FLASH_PROBE = (0.04, 0.32)  # rows averaged by find_flashes

CODE_GREY = 128
# 75% colour bars (white, yellow, cyan, green, magenta, red, blue) and a skin
# tone: the hues where a wrong BT.601/BT.709 matrix shows most.
BARS = np.array(
    [
        (191, 191, 191),
        (191, 191, 0),
        (0, 191, 191),
        (0, 191, 0),
        (191, 0, 191),
        (191, 0, 0),
        (0, 0, 191),
        (224, 172, 140),
    ],
    dtype=np.uint8,
)

TONE_AMPLITUDE = 0.1  # -20 dBFS steady tone
CLICK_AMPLITUDE = 0.8
CLICK_SECONDS = 0.008
CLICK_HZ = 3000.0
CLICK_THRESHOLD = 0.4  # between the tone peak and the click peak
TONE_HZ = (440.0, 660.0, 550.0, 330.0)  # one per audio stream

# What each audio codec wants, so callers only name the codec.
_AUDIO_FRAME_SIZE = {"pcm_s16le": 1024, "pcm_s16be": 1024, "flac": 4608}

# Extensions PyAV does not map to the container we want.
_FORMAT_BY_SUFFIX = {".vob": "vob", ".mpg": "vob", ".mpeg": "vob", ".ts": "mpegts", ".m2ts": "mpegts"}

# Per-ms frame durations for variable frame rate clips: irregular on purpose
# (phone captures, dropped-frame captures) and whole milliseconds so that
# Matroska's 1 ms clock stores them exactly.
VFR_PATTERN_MS = (33, 34, 33, 50, 17, 67, 33, 40)

ATTACHMENT_NAME = "captions.ttf"
ATTACHMENT_DATA = b"\x00\x01\x00\x00not a real font, but bytes that must survive"


@dataclass(frozen=True)
class SubtitleCue:
    start: Fraction  # seconds on the clip's clock
    end: Fraction
    text: str


@dataclass(frozen=True)
class ClipInfo:
    """What a built clip contains, as intended and as measured after muxing.

    Times named ``*_times`` are seconds on the file's own clock as intended
    (``start_time`` included). Containers may shift them: MPEG-PS/TS muxers
    add their own start offset, so ``video_start``/``audio_starts`` are the
    first timestamps actually read back from the file, and ``shift`` is the
    difference the muxer introduced (add it to an intended time to get the
    file time).
    """

    path: Path
    container: str
    vcodec: str
    width: int
    height: int
    pix_fmt: str
    rate: Fraction
    frames: int
    sar: Fraction
    field_order: str | None  # 'tff', 'bff' or None (progressive)
    frame_times: tuple[Fraction, ...]
    frame_durations: tuple[Fraction, ...]
    start_time: Fraction
    vfr: bool
    flash_frames: tuple[int, ...]
    audio: tuple[str, ...]
    audio_channels: int
    audio_rate: int
    audio_offset: Fraction
    subtitles: tuple[SubtitleCue, ...]
    chapters: tuple[tuple[Fraction, Fraction, str], ...]
    colorspace: str  # 'bt601' or 'bt709': the matrix the pixels were made with
    colour_tagged: bool
    video_start: float
    audio_starts: tuple[float, ...]
    reported_field_order: int  # codec_context.field_order as PyAV reads it back
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame's start to the last frame's end."""
        return self.frame_times[-1] + self.frame_durations[-1] - self.frame_times[0]

    @property
    def dar(self) -> Fraction:
        return Fraction(self.width, self.height) * self.sar

    @property
    def shift(self) -> float:
        return self.video_start - float(self.frame_times[0])

    @property
    def flash_times(self) -> tuple[Fraction, ...]:
        """Intended times of flash frames (= click times)."""
        return tuple(self.frame_times[i] for i in self.flash_frames)


# --------------------------------------------------------------------------
# Pictures


def flash_frames(frames: int, flash_every: int = 15, flash_offset: int = 5) -> tuple[int, ...]:
    return tuple(range(flash_offset, frames, flash_every)) if flash_every else ()


def code_cells(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x0, x1, y0, y1) of each index cell, most significant bit first."""
    y0, y1 = round(CODE_BAND[0] * height), round(CODE_BAND[1] * height)
    span = CODE_X[1] - CODE_X[0]
    cells = []
    for k in range(CODE_BITS):
        x0 = round((CODE_X[0] + span * k / CODE_BITS) * width)
        x1 = round((CODE_X[0] + span * (k + 1) / CODE_BITS) * width)
        cells.append((x0, x1, y0, y1))
    return cells


def bar_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x0, x1, y0, y1) of each colour bar's inner area (away from edges, where
    chroma subsampling and scaling blur the transitions)."""
    y0, y1 = round(BARS_BAND[0] * height), height
    n = len(BARS)
    boxes = []
    for k in range(n):
        x0 = k * width / n
        x1 = (k + 1) * width / n
        w = x1 - x0
        boxes.append(
            (round(x0 + 0.3 * w), round(x1 - 0.3 * w), round(y0 + 0.25 * (y1 - y0)), round(y1 - 0.25 * (y1 - y0)))
        )
    return boxes


def _box_x(width: int, box: int, t: float) -> int:
    """Left edge of the moving box at instant t: a 2 s back-and-forth sweep."""
    phase = (t / 2.0) % 1.0
    tri = 2 * phase if phase < 0.5 else 2 - 2 * phase
    return round(tri * (width - box))


def render(width: int, height: int, index: int, t: float, flash: bool = False) -> np.ndarray:
    """One progressive RGB picture of frame ``index`` at instant ``t`` seconds."""
    if index >= 1 << CODE_BITS:
        raise ValueError(f"frame index {index} does not fit in {CODE_BITS} bits")
    rgb = np.empty((height, width, 3), np.uint8)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    # Top band and everything outside the code/bars bands: a dark gradient.
    rgb[..., 0] = (40 + 80 * x).astype(np.uint8)
    rgb[..., 1] = 50
    rgb[..., 2] = (120 - 60 * x).astype(np.uint8)
    top1 = round(TOP_BAND[1] * height)
    box = max(3, round(0.22 * height))
    bx = _box_x(width, min(box, width - 1), t)
    by = max(0, round(0.07 * height))
    rgb[by : min(by + box, top1), bx : bx + box] = (230, 200, 60)
    # Colour bars.
    b0 = round(BARS_BAND[0] * height)
    n = len(BARS)
    for k in range(n):
        rgb[b0:, round(k * width / n) : round((k + 1) * width / n)] = BARS[k]
    if flash:
        rgb[:] = 255
    # Code band last: it must survive flashes.
    c0, c1 = round(CODE_BAND[0] * height), round(CODE_BAND[1] * height)
    rgb[c0:c1] = CODE_GREY
    for k, (x0, x1, y0, y1) in enumerate(code_cells(width, height)):
        bit = (index >> (CODE_BITS - 1 - k)) & 1
        rgb[y0:y1, x0:x1] = 255 if bit else 0
    return rgb


def render_frame(
    width: int, height: int, index: int, t: float, field_dt: float, field_order: str | None, flash: bool
) -> np.ndarray:
    """Frame ``index``; interlaced frames weave two renders ``field_dt`` apart.

    The earlier field goes on the even lines for TFF and on the odd lines for
    BFF, which is what the field-order flag tells a deinterlacer.
    """
    early = render(width, height, index, t, flash)
    if field_order is None:
        return early
    late = render(width, height, index, t + field_dt, flash)
    out = early.copy()
    if field_order == "tff":
        out[1::2] = late[1::2]
    elif field_order == "bff":
        out[0::2] = late[0::2]
    else:
        raise ValueError(f"field order must be 'tff', 'bff' or None, not {field_order!r}")
    return out


def shapes_frame(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    """Flat colour with rectangles and rings (uint8, 3 channels): edges a x4
    model can learn to sharpen, for training tests."""
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(40, 200, 3)
    for _ in range(4):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        p0, p1 = (tuple(int(v) for v in rng.integers(0, 60, 2)) for _ in range(2))
        cv2.rectangle(img, p0, p1, c, -1)
        cv2.circle(img, tuple(int(v) for v in rng.integers(0, 60, 2)), int(rng.integers(3, 12)), c, 2)
    return img


def wave_frames(
    n: int, h: int, w: int, seed: int = 0, *, period: float = 20, amplitude: float = 100, grain: float = 25
) -> list[np.ndarray]:
    """RGB uint8 stills of smooth colour waves (periods 3..``period`` px) plus
    noise of sigma ``grain``: structure at every scale, like film grain on
    video (for model tests that need no clip)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        base = (
            np.stack(
                [np.sin(xx / rng.uniform(3, period) + c) * np.cos(yy / rng.uniform(3, period) + c) for c in range(3)],
                -1,
            )
            * amplitude
            + 128
        )
        out.append(np.clip(base + rng.normal(0, grain, base.shape), 0, 255).astype(np.uint8))
    return out


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def read_index(rgb: np.ndarray, strict: bool = True) -> int:
    """The frame index encoded in a picture of any size.

    Cells are sampled in their inner 40% (by fractions of the picture), so
    scaling and a few pixels of cropping do not matter. With ``strict``, a
    cell that is neither clearly black nor clearly white (a blend of two
    frames, or no code at all) raises ValueError.
    """
    h, w = rgb.shape[:2]
    luma = _luma(rgb)
    y0 = int(h * (CODE_BAND[0] + 0.3 * (CODE_BAND[1] - CODE_BAND[0])))
    y1 = max(y0 + 1, int(h * (CODE_BAND[1] - 0.3 * (CODE_BAND[1] - CODE_BAND[0]))))
    span = CODE_X[1] - CODE_X[0]
    value = 0
    for k in range(CODE_BITS):
        x0 = int(w * (CODE_X[0] + span * (k + 0.3) / CODE_BITS))
        x1 = max(x0 + 1, int(w * (CODE_X[0] + span * (k + 0.7) / CODE_BITS)))
        m = float(luma[y0:y1, x0:x1].mean())
        if strict and 70 < m < 185:
            raise ValueError(f"no clear frame code: cell {k} has mean luma {m:.0f}")
        value = (value << 1) | int(m >= 128)
    return value


def is_flash(rgb: np.ndarray) -> bool:
    h = rgb.shape[0]
    band = _luma(rgb[int(FLASH_PROBE[0] * h) : max(int(FLASH_PROBE[1] * h), int(FLASH_PROBE[0] * h) + 1)])
    return float(band.mean()) > 170


# --------------------------------------------------------------------------
# Audio


def audio_signal(
    n: int, rate: int, t0: Fraction, clicks: Sequence[Fraction], tone_hz: float, channels: int
) -> np.ndarray:
    """(channels, n) float32: a steady tone with a burst starting at each click
    time. Sample i is at time t0 + i/rate."""
    t = np.arange(n, dtype=np.float64) / rate
    x = TONE_AMPLITUDE * np.sin(2 * np.pi * tone_hz * (t + float(t0)))
    length = round(CLICK_SECONDS * rate)
    for c in clicks:
        i0 = round((c - t0) * rate)
        if i0 >= n or i0 + length <= 0:
            continue
        a, b = max(i0, 0), min(i0 + length, n)
        x[a:b] = CLICK_AMPLITUDE * np.sin(2 * np.pi * CLICK_HZ * (np.arange(a, b) - i0) / rate)
    return np.repeat(x[None, :].astype(np.float32), channels, axis=0)


def _audio_samples(frame: av.AudioFrame) -> np.ndarray:
    """First channel of a decoded audio frame as float in [-1, 1]."""
    arr = frame.to_ndarray()
    fmt = frame.format
    x = arr[0] if fmt.is_planar else arr.reshape(-1)[:: len(frame.layout.channels)]
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768
    if x.dtype == np.int32:
        return x.astype(np.float32) / 2**31
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128) / 128
    return x.astype(np.float32)


def audio_timeline(path: str | Path, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(times, samples) of one audio stream, decoded: each sample's time in
    seconds on the file's clock, taken from its frame's timestamp."""
    times, samples = [], []
    with av.open(str(path)) as c:
        st = c.streams.audio[stream]
        next_t = None
        for frame in c.decode(st):
            x = _audio_samples(frame)
            t0 = float(frame.pts * frame.time_base) if frame.pts is not None else next_t or 0.0
            times.append(t0 + np.arange(len(x)) / frame.sample_rate)
            samples.append(x)
            next_t = t0 + len(x) / frame.sample_rate
    if not samples:
        return np.zeros(0), np.zeros(0, np.float32)
    return np.concatenate(times), np.concatenate(samples)


def find_clicks(path: str | Path, stream: int = 0) -> list[float]:
    """Onset times (seconds, file clock) of the clicks in audio stream
    ``stream`` (index among the audio streams)."""
    t, x = audio_timeline(path, stream)
    loud = np.flatnonzero(np.abs(x) > CLICK_THRESHOLD)
    onsets = []
    last = -math.inf
    for i in loud:
        if t[i] - last > 0.1:
            onsets.append(float(t[i]))
        last = t[i]
    return onsets


def audio_span(path: str | Path, stream: int = 0) -> tuple[float, float]:
    """(start, end) seconds of the decoded audio of one stream."""
    t, x = audio_timeline(path, stream)
    if len(t) == 0:
        return (0.0, 0.0)
    with av.open(str(path)) as c:
        rate = c.streams.audio[stream].codec_context.sample_rate
    return float(t[0]), float(t[-1] + 1 / rate)


# --------------------------------------------------------------------------
# Video readers


def decode_video(path: str | Path, stream: int = 0):
    """Yield (time_seconds, rgb) for each decoded frame of a video stream."""
    with av.open(str(path)) as c:
        st = c.streams.video[stream]
        for frame in c.decode(st):
            yield float(frame.pts * frame.time_base), frame.to_ndarray(format="rgb24", threads=1)


def read_indices(path: str | Path, stream: int = 0) -> list[tuple[float, int]]:
    """(time, frame index) of every frame in a video file."""
    return [(t, read_index(rgb)) for t, rgb in decode_video(path, stream)]


def find_flashes(path: str | Path, stream: int = 0) -> list[float]:
    """Times (seconds, file clock) of the first frame of each run of flash
    frames in a video stream."""
    out, prev = [], False
    for t, rgb in decode_video(path, stream):
        f = is_flash(rgb)
        if f and not prev:
            out.append(t)
        prev = f
    return out


# --------------------------------------------------------------------------
# Building


def _default_size(vcodec: str, rate: Fraction) -> tuple[int, int]:
    if vcodec == "dvvideo":
        return (720, 576) if rate == PAL_RATE else (720, 480)
    return (160, 120)


def _default_pix_fmt(vcodec: str, rate: Fraction) -> str:
    if vcodec == "dvvideo":
        return "yuv420p" if rate == PAL_RATE else "yuv411p"
    codec = av.codec.Codec(vcodec, "w")
    names = [f.name for f in codec.video_formats or ()]
    for cand in ("yuv420p", "yuv422p", "yuv444p", "yuv411p"):
        if cand in names:
            return cand
    return names[0]


def _video_options(vcodec: str, width: int, height: int, rate: Fraction, interlaced: bool) -> tuple[dict, dict]:
    """(codec options, codec-context attributes) for a quick but realistic encode."""
    if vcodec == "mpeg2video":
        opts = {"g": "15", "bf": "2"}
        if interlaced:
            # Field-based DCT and motion estimation: what DVD encoders do for
            # interlaced material, and what sets progressive_frame=0.
            opts["flags"] = "+ilme+ildct"
            opts["alternate_scan"] = "1"
        return opts, {"bit_rate": max(800_000, int(width * height * float(rate) * 0.5))}
    if vcodec == "libx264":
        opts = {"preset": "veryfast", "crf": "20", "x264-params": "log-level=error"}
        if interlaced:
            opts["flags"] = "+ildct"
        return opts, {}
    if vcodec == "libx265":
        return {"preset": "ultrafast", "crf": "24", "x265-params": "log-level=error"}, {}
    if vcodec == "mpeg4":
        return {}, {"bit_rate": max(400_000, int(width * height * float(rate) * 0.3))}
    return {}, {}


def make_clip(
    path: str | Path,
    *,
    vcodec: str = "libx264",
    size: tuple[int, int] | None = None,
    rate: Fraction = NTSC_RATE,
    frames: int = 30,
    sar: Fraction | None = None,
    interlaced: str | None = None,
    field_flags: str | None = None,
    audio: str | Sequence[str] | None = None,
    audio_channels: int = 2,
    audio_rate: int = 48000,
    audio_offset: Fraction = Fraction(0),
    audio_tail: Fraction = Fraction(0),
    subtitles: bool = False,
    chapters: bool = False,
    attachment: bool = False,
    vfr: bool = False,
    container: str | None = None,
    start_time: Fraction = Fraction(0),
    pix_fmt: str | None = None,
    colorspace: str | None = None,
    colour_tags: bool | None = None,
    flash_every: int = 15,
    flash_offset: int = 5,
    metadata: dict[str, str] | None = None,
    languages: Sequence[str] = ("eng", "fra", "deu", "spa"),
    picture: Callable[[int], np.ndarray] | None = None,
    time_base: Fraction | None = None,
    video_options: dict[str, str] | None = None,
    codec_tag: str | None = None,
) -> ClipInfo:
    """Write a clip and return what it holds.

    Args:
        vcodec: any PyAV video encoder; mpeg2video, dvvideo, ffv1, libx264
            get tuned settings. DV forces 720x480 (NTSC) or 720x576 (PAL),
            bottom field first, yuv411p for NTSC.
        interlaced: None for progressive, 'tff' or 'bff'. Fields are
            rendered 1/(2*rate) apart and the encoder is flagged interlaced.
        field_flags: the field order written in the headers, 'tff' or 'bff'
            (default: ``interlaced``'s). The other order than the content's
            makes a mislabelled clip, as some captures and re-encodes are.
        audio: one codec name or several (one stream each; tones differ,
            clicks are common), e.g. 'ac3', ('ac3', 'pcm_s16le').
        audio_offset: the audio streams start this many seconds after the
            first video frame (negative: before). Clicks stay on the flashes.
        audio_tail: the audio streams end this many seconds after the last
            video frame does (tone only), as on DVD rips whose audio overruns.
        subtitles: one subtitle stream whose cues start on the flash frames
            (subrip in Matroska, mov_text in MP4/MOV).
        chapters: two chapters, at the start and at the middle frame.
        attachment: a (dummy) font attachment, as MKVs with styled
            subtitles carry (ATTACHMENT_NAME, ATTACHMENT_DATA).
        vfr: irregular whole-millisecond frame durations (VFR_PATTERN_MS).
        container: PyAV format name; by default from the extension (.vob/.mpg
            -> 'vob' DVD program stream, .ts -> 'mpegts').
        start_time: presentation time of the first frame on the file clock
            (snapped to the codec clock: 1/rate for MPEG-2 and DV).
        colorspace: 'bt601' or 'bt709' matrix for RGB->YUV; by default BT.601
            up to 576 lines, BT.709 above.
        colour_tags: tag the stream with its matrix/primaries/transfer/range;
            by default yes except for DV, which is untagged in real life.
        picture: frame index -> the whole (woven) RGB frame, instead of the
            standard test picture (then read_index and flashes do not apply).
        time_base: the video codec clock instead of the default below; AVI
            clips as real tools write them use ``1 / rate`` (one tick per
            frame slot).
        video_options: encoder options added to (or replacing) the tuned
            ones, e.g. ``{"bf": "2"}`` for B-frames.
        codec_tag: the stream's fourcc, e.g. 'XVID' or 'DIVX' for MPEG-4
            Part 2 in AVI.
    """
    path = Path(path)
    rate = Fraction(rate)
    start_time = Fraction(start_time)
    audio_offset = Fraction(audio_offset)
    audios: tuple[str, ...] = () if audio is None else ((audio,) if isinstance(audio, str) else tuple(audio))
    fmt_name = container or _FORMAT_BY_SUFFIX.get(path.suffix.lower())

    if vcodec == "dvvideo":
        if rate not in (NTSC_RATE, PAL_RATE):
            raise ValueError("DV is 30000/1001 or 25 frames per second")
        if interlaced == "tff":
            raise ValueError("DV is bottom field first by definition")
        interlaced = "bff"
        if vfr:
            raise ValueError("DV cannot be variable frame rate")
        want = _default_size(vcodec, rate)
        if size is not None and tuple(size) != want:
            raise ValueError(f"DV at this rate is {want[0]}x{want[1]}")
        if sar is None:
            sar = Fraction(8, 9) if rate == NTSC_RATE else Fraction(16, 15)
    if field_flags not in (None, "tff", "bff") or (field_flags and not interlaced):
        raise ValueError("field_flags must be 'tff' or 'bff', and only for interlaced clips")
    flags_order = field_flags or interlaced
    if vfr and vcodec in ("mpeg2video", "mpeg1video"):
        raise ValueError(f"{vcodec} cannot be variable frame rate")
    width, height = size or _default_size(vcodec, rate)
    sar = Fraction(sar) if sar is not None else Fraction(1)
    pix_fmt = pix_fmt or _default_pix_fmt(vcodec, rate)
    colorspace = colorspace or ("bt709" if height > 576 else "bt601")
    if colour_tags is None:
        colour_tags = vcodec != "dvvideo"

    # Codec clock: MPEG-2 and DV derive their frame rate code from it; VFR
    # uses whole milliseconds; everything else gets MPEG's 90 kHz. The start
    # is snapped to it so that intended and stored times agree exactly.
    if vcodec in ("mpeg2video", "mpeg1video", "dvvideo"):
        tb = 1 / rate
    elif vfr:
        tb = Fraction(1, 1000)
    else:
        tb = Fraction(1, 90000)
    if time_base is not None:
        tb = Fraction(time_base)
    start_time = round(start_time / tb) * tb

    # Frame timing, relative to the first frame.
    if vfr:
        durations = [Fraction(VFR_PATTERN_MS[i % len(VFR_PATTERN_MS)], 1000) for i in range(frames)]
    else:
        durations = [1 / rate] * frames
    rel_times = [Fraction(0)]
    for d in durations[:-1]:
        rel_times.append(rel_times[-1] + d)
    times = tuple(start_time + t for t in rel_times)
    flashes = flash_frames(frames, flash_every, flash_offset)
    click_times = [times[i] for i in flashes]
    end_time = times[-1] + durations[-1]

    out = av.open(str(path), "w", format=fmt_name)
    try:
        fmt_name = out.format.name
        opts, attrs = _video_options(vcodec, width, height, rate, interlaced is not None)
        opts = {**opts, **(video_options or {})}
        vs = out.add_stream(vcodec, rate=rate, options=opts)
        if codec_tag is not None:
            vs.codec_tag = codec_tag
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        cc = vs.codec_context
        for k, v in attrs.items():
            setattr(cc, k, v)
        cc.thread_count = 1
        cc.time_base = tb
        vs.time_base = tb
        cc.sample_aspect_ratio = sar
        vs.sample_aspect_ratio = sar
        if interlaced:
            cc.field_order = 2 if flags_order == "tff" else 3  # AV_FIELD_TT / AV_FIELD_BB
        matrix = "itu709" if colorspace == "bt709" else "itu601"
        if colour_tags:
            if colorspace == "bt709":
                cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1
            elif rate == PAL_RATE:
                cc.colorspace, cc.color_primaries, cc.color_trc = 5, 5, 5
            else:
                cc.colorspace, cc.color_primaries, cc.color_trc = 6, 6, 6
            cc.color_range = 1
        out.metadata["title"] = "vhsup test clip"
        for k, v in (metadata or {}).items():
            out.metadata[k] = v

        astreams = []
        for n, acodec in enumerate(audios):
            ast = out.add_stream(acodec, rate=audio_rate)
            ast.layout = "stereo" if audio_channels == 2 else ("mono" if audio_channels == 1 else f"{audio_channels}c")
            if acodec in ("ac3", "aac", "mp2"):
                ast.codec_context.bit_rate = 96_000 * audio_channels
            ast.metadata["language"] = languages[n % len(languages)]
            ast.metadata["title"] = f"Track {n + 1}"
            if n == 0:
                ast.disposition = av.stream.Disposition.default
            astreams.append(ast)

        cues: list[SubtitleCue] = []
        sub = None
        sub_codec = None
        if subtitles:
            sub_codec = "mov_text" if fmt_name in ("mp4", "mov", "ipod") else "subrip"
            sub = out.add_mux_stream(sub_codec)
            sub.metadata["language"] = "eng"
            sub.metadata["title"] = "Flash captions"
            for i in flashes:
                cues.append(SubtitleCue(times[i], min(times[i] + Fraction(3, 10), end_time), f"flash {i}"))
        chapter_list: list[tuple[Fraction, Fraction, str]] = []
        if chapters:
            mid = times[frames // 2]
            chapter_list = [(times[0], mid, "Opening"), (mid, end_time, "Second half")]
            out.set_chapters(
                [
                    {
                        "id": k + 1,
                        "start": round(a * 1000),
                        "end": round(b * 1000),
                        "time_base": Fraction(1, 1000),
                        "metadata": {"title": title},
                    }
                    for k, (a, b, title) in enumerate(chapter_list)
                ]
            )

        if attachment:
            out.add_attachment(ATTACHMENT_NAME, "font/ttf", ATTACHMENT_DATA)

        # setfield marks every frame interlaced with the chosen field order:
        # PyAV cannot set those frame flags itself, and encoders read them.
        graph = sink = bsrc = None
        if interlaced:
            graph = av.filter.Graph()
            bsrc = graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=tb)
            sf = graph.add("setfield", flags_order)
            sink = graph.add("buffersink")
            bsrc.link_to(sf)
            sf.link_to(sink)
            graph.configure()

        out.start_encoding()

        # Audio: generated whole (clips are short), fed in encoder-sized frames
        # as video advances so the muxer can interleave.
        audio_t0 = start_time + audio_offset
        n_audio = max(0, math.ceil((end_time + Fraction(audio_tail) - audio_t0) * audio_rate))
        signals = [
            audio_signal(n_audio, audio_rate, audio_t0, click_times, TONE_HZ[k % len(TONE_HZ)], audio_channels)
            for k in range(len(astreams))
        ]
        apos = [0] * len(astreams)
        audio_tb = Fraction(1, audio_rate)
        a_pts0 = round(audio_t0 * audio_rate)
        layout = astreams[0].layout.name if astreams else None

        def feed_audio(until: Fraction | None) -> None:
            for k, ast in enumerate(astreams):
                fs = ast.codec_context.frame_size or _AUDIO_FRAME_SIZE.get(ast.codec_context.name, 1024)
                limit = n_audio if until is None else min(n_audio, max(0, math.ceil((until - audio_t0) * audio_rate)))
                while apos[k] < limit:
                    chunk = signals[k][:, apos[k] : apos[k] + fs]
                    fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
                    fr.sample_rate = audio_rate
                    fr.pts = a_pts0 + apos[k]
                    fr.time_base = audio_tb
                    apos[k] += chunk.shape[1]
                    out.mux(ast.encode(fr))

        next_cue = 0
        for i in range(frames):
            feed_audio(times[i])
            while sub is not None and next_cue < len(cues) and cues[next_cue].start <= times[i]:
                _mux_cue(out, sub, cues[next_cue], sub_codec == "mov_text")
                next_cue += 1
            if picture is not None:
                rgb = picture(i)
            else:
                rgb = render_frame(
                    width, height, i, float(rel_times[i]), float(durations[i] / 2), interlaced, i in flashes
                )
            vf = to_yuv(rgb, pix_fmt, matrix, interlaced is not None)
            vf.pts = round(times[i] / tb)
            vf.time_base = tb
            vf.duration = round(durations[i] / tb)
            if graph is not None:
                bsrc.push(vf)
                vf = sink.pull()
            out.mux(vs.encode(vf))
        feed_audio(None)
        for ast in astreams:
            out.mux(ast.encode(None))
        out.mux(vs.encode(None))
        while sub is not None and next_cue < len(cues):
            _mux_cue(out, sub, cues[next_cue], sub_codec == "mov_text")
            next_cue += 1
    finally:
        out.close()

    with av.open(str(path)) as c:
        reported = c.streams.video[0].codec_context.field_order
        n_audio_streams = len(c.streams.audio)
    video_start = _first_time(path, "video", 0)
    audio_starts = tuple(_first_time(path, "audio", k) for k in range(n_audio_streams))

    return ClipInfo(
        path=path,
        container=fmt_name,
        vcodec=vcodec,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        rate=rate,
        frames=frames,
        sar=sar,
        field_order=interlaced,
        frame_times=times,
        frame_durations=tuple(durations),
        start_time=start_time,
        vfr=vfr,
        flash_frames=flashes,
        audio=audios,
        audio_channels=audio_channels,
        audio_rate=audio_rate,
        audio_offset=audio_offset,
        subtitles=tuple(cues),
        chapters=tuple(chapter_list),
        colorspace=colorspace,
        colour_tagged=colour_tags,
        video_start=video_start,
        audio_starts=audio_starts,
        reported_field_order=reported,
    )


def _reformat(rgb: np.ndarray, pix_fmt: str, matrix: str) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
        format=pix_fmt, dst_colorspace=matrix, src_color_range="JPEG", dst_color_range="MPEG", threads=1
    )


def to_yuv(rgb: np.ndarray, pix_fmt: str, matrix: str, interlaced: bool) -> av.VideoFrame:
    """RGB -> limited-range YUV with the given matrix.

    Interlaced 4:2:0 is subsampled per field, as real interlaced encoders
    do: averaging chroma across the two fields would smear colour between
    two instants, which is a defect of bad sources, not of a DVD.
    """
    h, w = rgb.shape[:2]
    if not (interlaced and pix_fmt == "yuv420p" and h % 4 == 0):
        return _reformat(rgb, pix_fmt, matrix)
    planes = []
    for start in (0, 1):
        arr = _reformat(rgb[start::2], pix_fmt, matrix).to_ndarray()
        hf = h // 2
        y = arr[:hf]
        u = arr[hf : hf + hf // 4].reshape(hf // 2, w // 2)
        v = arr[hf + hf // 4 :].reshape(hf // 2, w // 2)
        planes.append((y, u, v))
    y = np.empty((h, w), np.uint8)
    u = np.empty((h // 2, w // 2), np.uint8)
    v = np.empty((h // 2, w // 2), np.uint8)
    for start, (fy, fu, fv) in enumerate(planes):
        y[start::2], u[start::2], v[start::2] = fy, fu, fv
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")


def _mux_cue(out: av.container.OutputContainer, stream: av.stream.Stream, cue: SubtitleCue, mov_text: bool) -> None:
    text = cue.text.encode()
    if mov_text:  # tx3g samples are length-prefixed
        text = struct.pack(">H", len(text)) + text
    pkt = av.Packet(text)
    pkt.stream = stream
    pkt.time_base = Fraction(1, 1000)
    pkt.pts = pkt.dts = round(cue.start * 1000)
    pkt.duration = round((cue.end - cue.start) * 1000)
    out.mux(pkt)


def _first_time(path: Path, kind: str, n: int) -> float:
    """Earliest packet time of a stream on the file clock (for audio this
    includes encoder priming, e.g. -1024 samples for AAC). Read from packets
    of a freshly opened file: seeking back to 0 in Matroska lands on the
    first video keyframe and skips audio that precedes it."""
    best = None
    with av.open(str(path)) as c:
        stream = getattr(c.streams, kind)[n]
        for k, pkt in enumerate(c.demux(stream)):
            if pkt.pts is not None and pkt.size:
                t = float(pkt.pts * pkt.time_base)
                best = t if best is None else min(best, t)
            if k > 40:
                break
        if best is None and stream.start_time is not None:
            best = float(stream.start_time * stream.time_base)
    return best if best is not None else 0.0


# --------------------------------------------------------------------------
# Named clips shared by the test suite (tests/conftest.py builds them once).

PRESETS: dict[str, tuple[str, dict]] = {
    # DVD: interlaced TFF MPEG-2 in a program stream with AC-3. Half-D1 is a
    # real DVD size and keeps the clip small; SAR 10:11 makes it 4:3.
    "dvd": (
        "dvd.vob",
        dict(vcodec="mpeg2video", size=(352, 240), interlaced="tff", sar=Fraction(10, 11), audio="ac3", frames=30),
    ),
    # DV bridge capture: 720x480 4:1:1 BFF with PCM in AVI.
    "dv": ("dv.avi", dict(vcodec="dvvideo", audio="pcm_s16le", frames=24)),
    # Capture-card FFV1 at an odd size with FLAC.
    "odd": ("odd.mkv", dict(vcodec="ffv1", size=(99, 67), audio="flac", frames=24)),
    # Phone/camcorder H.264 in MP4 with AAC.
    "mp4": ("h264.mp4", dict(vcodec="libx264", size=(160, 120), audio="aac", frames=30)),
    # Variable frame rate H.264 in Matroska, starting at 10 s.
    "vfr": (
        "vfr.mkv",
        dict(vcodec="libx264", size=(160, 120), audio="aac", vfr=True, frames=40, start_time=Fraction(10)),
    ),
    # Broadcast/DVR transport stream: interlaced MPEG-2 with MP2.
    "ts": ("tape.ts", dict(vcodec="mpeg2video", size=(160, 120), interlaced="tff", audio="mp2", frames=30)),
    # Two audio tracks (AC-3 and PCM), subtitles, chapters, a font
    # attachment; the video starts at 0.5 s and the audio 0.1 s before it.
    "subs": (
        "subs.mkv",
        dict(
            vcodec="ffv1",
            size=(128, 96),
            audio=("ac3", "pcm_s16le"),
            subtitles=True,
            chapters=True,
            attachment=True,
            frames=36,
            audio_offset=Fraction(-1, 10),
            start_time=Fraction(1, 2),
        ),
    ),
}


def make_audio_only(path: str | Path, seconds: float = 0.1) -> Path:
    """A WAV file with a stereo PCM stream and no video at all."""
    path = Path(path)
    n = int(48000 * seconds)
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_s16le", rate=48000, layout="stereo")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 2 * n), np.int16), format="s16", layout="stereo")
        f.sample_rate = 48000
        for p in s.encode(f):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def make_preset(name: str, directory: str | Path) -> ClipInfo:
    filename, kwargs = PRESETS[name]
    return make_clip(Path(directory) / filename, **kwargs)


# --------------------------------------------------------------------------
# Bordered pictures: what auto-crop has to find, line for line.


@dataclass(frozen=True)
class Borders:
    """What surrounds the picture of a bordered clip, counted from each edge.

    Attributes:
        left, right: black side bars (samples outside the ~704 picture).
        top_black, bottom_black: black bars (a letterboxed film).
        top_dark: dark grey noisy lines under ``top_black``: the end of the
            vertical blanking that a VHS capture often shows.
        head_switch: torn lines at the very bottom, as a VCR's head
            switching leaves them: shifted further right line by line, a
            black gap on the left, heavy noise.
    """

    left: int = 0
    right: int = 0
    top_black: int = 0
    top_dark: int = 0
    bottom_black: int = 0
    head_switch: int = 0

    @property
    def crop(self) -> tuple[int, int, int, int]:
        """The exact crop (left, top, right, bottom) that keeps all the picture and nothing else."""
        return (self.left, self.top_black + self.top_dark, self.right, self.bottom_black + self.head_switch)


def bordered_picture(
    width: int, height: int, borders: Borders, *, field_order: str | None = None, fade: int = 0, seed: int = 0
) -> Callable[[int], np.ndarray]:
    """Frame index -> RGB frame: a textured, panning scene framed by ``borders``.

    The scene is dark (luma about 2-18, still textured) in a band along
    every edge of the picture, so a fixed black threshold mistakes picture
    for border, and brighter in the middle with a bright disc moving across.
    The first ``fade`` frames fade the scene to near black (the borders stay
    as they are, as on a tape). Luma noise is everywhere. Interlaced frames
    weave two instants half a frame apart (the earlier field on the odd
    lines for BFF, on the even lines for TFF).
    """
    import cv2

    b = borders
    rng = np.random.default_rng(seed)
    pan = 5  # samples per frame
    big_h, big_w = height + 64, width + 64 + pan * 200
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (big_h, big_w)).astype(np.float32), (0, 0), 7)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (big_h, big_w)).astype(np.float32), (0, 0), 1.5)
    tex = coarse / coarse.std() + 0.8 * fine / fine.std()
    tex = (tex - tex.mean()) / tex.std()
    # Distance of each pixel from the nearest picture edge, for the dark band.
    y0, y1 = b.top_black + b.top_dark, height - b.bottom_black - b.head_switch
    x0, x1 = b.left, width - b.right
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    d = np.minimum(np.minimum(yy - y0, y1 - 1 - yy), np.minimum(xx - x0, x1 - 1 - xx))
    bright = np.clip(d / 16, 0, 1)
    bright[y1:] = 1  # the torn lines carry the picture's own lines, mistimed
    yy -= height / 2
    xx -= width / 2

    def scene(t: float, gain: float) -> np.ndarray:
        ox, oy = round(32 + pan * t), round(32 + 12 * np.sin(t / 5))
        window = tex[oy : oy + height, ox : ox + width]
        luma = (1 - bright) * np.clip(10 + 5 * window, 2, 18) + bright * np.clip(130 + 40 * window, 40, 225)
        cx = (t * 11) % (width - 300) - (width - 300) / 2
        luma[(xx - cx) ** 2 + (yy - 30 * np.sin(t / 3)) ** 2 < 45**2] = 235
        return luma * gain

    def frame(i: int) -> np.ndarray:
        gain = 0.03 + 0.97 * min(1.0, i / fade) if fade else 1.0
        luma = scene(float(i), gain)
        if field_order is not None:
            late = scene(i + 0.5, gain)
            rows = slice(0, None, 2) if field_order == "bff" else slice(1, None, 2)
            luma[rows] = late[rows]
        luma += rng.normal(0, 3, luma.shape)
        black = np.abs(rng.normal(0, 1.5, luma.shape))
        luma[:, :x0] = black[:, :x0]
        luma[:, x1:] = black[:, x1:]
        luma[: b.top_black] = black[: b.top_black]
        luma[b.top_black : y0, x0:x1] = rng.normal(28, 5, (b.top_dark, x1 - x0))
        luma[y1 : height - b.head_switch] = black[y1 : height - b.head_switch]
        for j in range(b.head_switch):
            r = height - b.head_switch + j
            shift = 3 + 5 * j + int(rng.integers(0, 4))
            torn = np.zeros(width, np.float32)
            torn[shift:] = luma[r, : width - shift]
            luma[r] = torn + rng.normal(0, 14, width)
        luma = np.clip(luma, 0, 255)
        return np.clip(luma[..., None] * np.array([1.04, 1.0, 0.9], np.float32), 0, 255).astype(np.uint8)

    return frame


def make_bordered_clip(path: str | Path, borders: Borders, *, fade: int = 0, seed: int = 0, **clip) -> ClipInfo:
    """``make_clip`` with ``bordered_picture`` frames (same keyword arguments)."""
    vcodec = clip.get("vcodec", "libx264")
    width, height = clip.get("size") or _default_size(vcodec, Fraction(clip.get("rate", NTSC_RATE)))
    order = "bff" if vcodec == "dvvideo" else clip.get("interlaced")
    picture = bordered_picture(width, height, borders, field_order=order, fade=fade, seed=seed)
    return make_clip(path, picture=picture, **clip)


FILM_RATE = Fraction(24000, 1001)


def make_telecined_clip(
    path: str | Path, film_frames: int = 24, *, vcodec: str = "ffv1", size: tuple[int, int] = (320, 240)
) -> Path:
    """23.976p film made into 29.97i with FFmpeg's telecine filter (3:2 pulldown, top field first).

    Film frame i carries index i, so an inverse telecine must give back
    0..film_frames-1, each once. ``vcodec`` 'mpeg2video' makes a hard-telecined
    DVD-style program stream (lossy, flagged interlaced TFF) instead of
    lossless FFV1 in Matroska.
    """
    width, height = size
    video_rate = Fraction(30000, 1001)
    mpeg2 = vcodec == "mpeg2video"
    opts, attrs = _video_options(vcodec, width, height, video_rate, interlaced=mpeg2)
    with av.open(str(path), "w") as out:
        s = out.add_stream(vcodec, rate=video_rate, options=opts)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for k, v in attrs.items():
            setattr(s.codec_context, k, v)
        s.codec_context.time_base = 1 / video_rate
        if mpeg2:
            s.codec_context.field_order = 2  # AV_FIELD_TT
        g = av.filter.Graph()
        src = g.add("buffer", f"video_size={width}x{height}:pix_fmt=yuv420p:time_base=1001/24000:frame_rate=24000/1001")
        chain = [g.add("telecine", "first_field=top:pattern=23")]
        if mpeg2:
            chain.append(g.add("setfield", "tff"))  # the encoder writes the frames' field order into the headers
        chain.append(g.add("buffersink"))
        node = src
        for nxt in chain:
            node.link_to(nxt)
            node = nxt
        g.configure()
        n = 0

        def drain() -> None:
            nonlocal n
            while True:
                try:
                    f = g.vpull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                f.pts, f.time_base = n, 1 / video_rate
                n += 1
                out.mux(s.encode(f))

        for i in range(film_frames):
            rgb = render(width, height, i, float(i / FILM_RATE))
            vf = to_yuv(rgb, "yuv420p", "itu601", interlaced=False)
            vf.pts, vf.time_base = i, 1 / FILM_RATE
            g.vpush(vf)
            drain()
        g.vpush(None)
        drain()
        out.mux(s.encode(None))
    return Path(path)


# --------------------------------------------------------------------------
# MPEG-4 Part 2 in AVI as DivX and Xvid (Video for Windows) write it.

DIVX_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"  # the trailing 'p' announces packed B-frames


def vop_type(data: bytes) -> str | None:
    """'I', 'P', 'B' or 'S' of the first MPEG-4 VOP in a chunk."""
    i = data.find(b"\x00\x00\x01\xb6")
    return None if i < 0 or i + 4 >= len(data) else "IPBS"[data[i + 4] >> 6]


def not_coded_vop(time_bits: int) -> bytes:
    """An N-VOP: a P-VOP header with vop_coded = 0, "show the previous
    picture again". DivX writes them for dropped frames, and packed AVIs
    use them as placeholders."""
    bits = "01" + "0" + "1" + "0" * time_bits + "1" + "0"  # type, modulo, marker, increment, marker, coded
    bits += "0" + "1" * ((-len(bits) - 1) % 8)  # stuffing to the byte boundary
    return b"\x00\x00\x01\xb6" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _rewrite_mpeg4_avi(src: Path, dst: Path, rewrite: Callable[[list[bytes], bytes], list[bytes]], fourcc: str) -> Path:
    """Copy an MPEG-4 Part 2 AVI with its video chunks replaced by
    ``rewrite(chunks, n_vop)``, one chunk per frame slot, and its audio
    copied. The stream headers stay in the first chunk only (no extradata),
    as in DivX/Xvid files: FFmpeg then reads them from that chunk."""
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        tb = Fraction(vin.time_base)
        chunks = rewrite(
            [bytes(p) for p in inp.demux(vin) if p.size], not_coded_vop(max(1, (tb.denominator - 1).bit_length()))
        )
        inp.seek(0)
        audio = sorted(
            ((p.pts or 0) * Fraction(p.time_base), n, p)
            for n, p in enumerate(inp.demux(audio=0) if inp.streams.audio else ())
            if p.size
        )
        with av.open(str(dst), "w", format="avi") as out:
            vout = out.add_stream_from_template(vin)
            vout.codec_tag = fourcc
            vout.codec_context.extradata = None
            aouts = {s.index: out.add_stream_from_template(s) for s in inp.streams.audio}
            q = 0
            for slot, data in enumerate(chunks):
                while q < len(audio) and audio[q][0] <= slot * tb:
                    pkt = audio[q][2]
                    pkt.stream = aouts[pkt.stream.index]
                    out.mux(pkt)
                    q += 1
                pkt = av.Packet(data)
                pkt.stream, pkt.time_base = vout, tb
                pkt.pts = pkt.dts = slot
                pkt.is_keyframe = vop_type(data) == "I"
                out.mux(pkt)
            for _, _, pkt in audio[q:]:
                pkt.stream = aouts[pkt.stream.index]
                out.mux(pkt)
    return dst


def pack_bframes(src: str | Path, dst: str | Path, fourcc: str = "DX50") -> Path:
    """Rewrite an MPEG-4 Part 2 AVI with B-frames (``make_clip(vcodec='mpeg4',
    video_options={'bf': '2'}, time_base=1/rate)``) in "packed bitstream".

    Video for Windows turns one chunk into one picture, in display order,
    so DivX 5 and Xvid put each anchor together with the first B-frame shown
    before it, keep the other B-frames, and add an N-VOP chunk where the
    anchor is due: I0 | P3 B1 | B2 | N-VOP. There are as many chunks as
    frames.
    """

    def pack(video: list[bytes], nvop: bytes) -> list[bytes]:
        first = video[0]
        at = min(i for i in (first.find(b"\x00\x00\x01\xb3"), first.find(b"\x00\x00\x01\xb6")) if i >= 0)
        video = [first[:at] + DIVX_USER_DATA + first[at:], *video[1:]]
        chunks: list[bytes] = []
        k = 0
        while k < len(video):
            anchor, k = video[k], k + 1
            bs = []
            while k < len(video) and vop_type(video[k]) == "B":
                bs.append(video[k])
                k += 1
            chunks += [anchor + bs[0], *bs[1:], nvop] if bs else [anchor]
        return chunks

    return _rewrite_mpeg4_avi(Path(src), Path(dst), pack, fourcc)


def drop_to_not_coded(src: str | Path, dst: str | Path, slots: Sequence[int], fourcc: str = "DIVX") -> Path:
    """Replace the chunks at ``slots`` of an MPEG-4 Part 2 AVI without
    B-frames by N-VOPs, as DivX does for frames it drops. Pick slots just
    before a keyframe so that no later picture refers to a replaced one;
    each replaced slot then shows the picture before it."""

    def drop(video: list[bytes], nvop: bytes) -> list[bytes]:
        return [nvop if n in slots else data for n, data in enumerate(video)]

    return _rewrite_mpeg4_avi(Path(src), Path(dst), drop, fourcc)


def _coverage(x0: np.ndarray, a: float, b: float) -> np.ndarray:
    """How much of each pixel [x0, x0 + 1) the interval [a, b) covers (an exact box-filtered edge)."""
    return np.clip(np.minimum(x0 + 1, b) - np.maximum(x0, a), 0.0, 1.0)


def chroma_delay_planes(
    width: int, height: int, delay: float, *, seed: int = 0, frame: int = 0, boxes: int = 40
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-resolution limited-range Y, Cb, Cr (float) of coloured boxes, the chroma ``delay`` pixels right of the luma.

    Every box edge is drawn box-filtered at its exact position, the chroma's
    at that position plus ``delay``, so the true lag is exactly ``delay``.
    The boxes drift 3 pixels a frame. The chroma is then softened by a
    Gaussian (sigma 1.5 px, as a tape's colour-under path does), which
    blurs without moving.
    """
    rng = np.random.default_rng(seed)
    x0 = np.arange(width, dtype=np.float64)
    y = np.full((height, width), 0.5)
    cb = np.zeros((height, width))
    cr = np.zeros((height, width))
    for _ in range(boxes):
        bw, bh = rng.uniform(min(20, width / 4), width / 3), int(rng.integers(min(16, height // 4), height // 3))
        left = rng.uniform(-bw / 2, width - bw / 2) + 3 * frame
        top = int(rng.integers(0, height - bh))
        r, g, b = rng.uniform(0, 1, 3)
        luma = 0.299 * r + 0.587 * g + 0.114 * b
        rows = slice(top, top + bh)
        for plane, value, shift in ((y, luma, 0.0), (cb, (b - luma) / 1.772, delay), (cr, (r - luma) / 1.402, delay)):
            cover = _coverage(x0 - shift, left, left + bw)
            plane[rows] = plane[rows] * (1 - cover) + value * cover
    k = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    k /= k.sum()
    for plane in (cb, cr):
        padded = np.pad(plane, ((0, 0), (5, 5)), mode="edge")
        plane[:] = sum(w * padded[:, i : i + width] for i, w in enumerate(k))
    return 16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr


def make_chroma_delay_clip(
    path: str | Path,
    delay: float,
    *,
    frames: int = 6,
    size: tuple[int, int] = (720, 480),
    pix_fmt: str = "yuv422p",
    vcodec: str = "ffv1",
    rate: Fraction = Fraction(30000, 1001),
    seed: int = 0,
) -> Path:
    """A clip whose chroma lags its luma by exactly ``delay`` pixels (see :func:`chroma_delay_planes`).

    The chroma is decimated co-sited (sample j at luma x = j * factor), as
    MPEG-2, DV and 4:2:2 place it; ``pix_fmt`` is a planar 8-bit YUV layout
    (yuv444p, yuv422p, yuv411p, yuv420p).
    """
    path = Path(path)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(vcodec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for n in range(frames):
            planes = chroma_delay_planes(w, h, delay, seed=seed, frame=n)
            vf = av.VideoFrame(w, h, pix_fmt)
            fx = w // vf.planes[1].width
            fy = h // vf.planes[1].height
            for plane, data in zip(vf.planes, (planes[0], planes[1][::fy, ::fx], planes[2][::fy, ::fx])):
                buf = np.zeros((plane.height, plane.line_size), np.uint8)
                buf[:, : data.shape[1]] = np.clip(np.round(data), 0, 255).astype(np.uint8)
                plane.update(buf.tobytes())
            vf.pts = n
            vf.time_base = 1 / rate
            for pkt in stream.encode(vf):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def grainy_render(width: int, height: int, sigma: float) -> Callable[[int], np.ndarray]:
    """``picture=`` for make_clip: :func:`render`'s moving picture with fresh Gaussian grain
    (``sigma`` codes, seeded by the frame) in every frame, as a tape gives; sigma 0 is its truth."""

    def picture(index: int) -> np.ndarray:
        clean = render(width, height, index, index * float(1 / NTSC_RATE))
        if not sigma:
            return clean
        grain = np.random.default_rng(1000 + index).normal(0.0, sigma, clean.shape)
        return np.clip(np.round(clean + grain), 0, 255).astype(np.uint8)

    return picture


def grainy_pan(width: int, height: int, sigma: float, step: int = 2) -> Callable[[int], np.ndarray]:
    """``picture=`` for make_clip: a detailed texture panning ``step`` pixels a frame, with fresh
    grain (``sigma`` codes, seeded by the frame) in every frame; sigma 0 is its truth. Only a
    filter that follows the motion can average the grain away without smearing the texture."""
    rng = np.random.default_rng(7)
    wide = width + 64 * step
    field = rng.normal(0.0, 1.0, (height // 4 + 2, wide // 4 + 2, 3))
    # smooth blobs of a few pixels: detail a deck keeps, coarser than the grain
    texture = np.kron(field, np.ones((4, 4, 1)))[:height, :wide]
    for axis in (0, 1):
        texture = (np.roll(texture, 1, axis) + 2 * texture + np.roll(texture, -1, axis)) / 4
    texture = 128 + 40 * texture / texture.std()

    def picture(index: int) -> np.ndarray:
        x = (index * step) % (wide - width)
        clean = texture[:, x : x + width]
        grain = np.random.default_rng(2000 + index).normal(0.0, sigma, clean.shape) if sigma else 0.0
        return np.clip(np.round(clean + grain), 0, 255).astype(np.uint8)

    return picture


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Full-range BT.601 Y (0-255) and U, V (centred on 0) -> RGB uint8 (make_clip's ``picture``)."""
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def composite_scene(width: int, height: int, *, step: int = 0) -> Callable[[int], tuple[np.ndarray, ...]]:
    """frame index -> the clean (Y, U, V, edge mask, detail mask) of a scene a composite capture shows badly.

    Coloured patches with sharp edges (where a comb filter leaves dot crawl)
    above a band of fine diagonal luma stripes on flat grey (where it
    leaves rainbows). ``step``: the scene pans that many pixels a frame.
    The masks are 1 where each artefact belongs (a few pixels each side of
    a colour edge; over the stripes).
    """
    rng = np.random.default_rng(11)
    wide = width + 32 * step
    xs = np.arange(wide)[None, :].astype(np.float64)
    ys = np.arange(height)[:, None].astype(np.float64)
    cols, rows = max(1, wide // 40), 3
    band = int(height * 0.6)
    y = np.zeros((height, wide))
    u = np.zeros((height, wide))
    v = np.zeros((height, wide))
    for r in range(rows):
        for c in range(cols):
            sl = (slice(r * band // rows, (r + 1) * band // rows), slice(c * wide // cols, (c + 1) * wide // cols))
            y[sl], u[sl], v[sl] = rng.uniform(80, 170), rng.uniform(-45, 45), rng.uniform(-45, 45)
    y[band:] = 128 + 45 * np.cos(2 * np.pi * (xs + ys) / 3.0)[band:]
    grad = np.zeros((height, wide))
    for plane in (u, v):
        grad[:, 1:] += np.abs(np.diff(plane, axis=1))
        grad[1:, :] += np.abs(np.diff(plane, axis=0))
    edges = (grad > 10).astype(np.float64)
    for _ in range(3):  # widen to a few pixels each side
        edges = np.maximum.reduce(
            [edges, np.roll(edges, 1, 0), np.roll(edges, -1, 0), np.roll(edges, 1, 1), np.roll(edges, -1, 1)]
        )
    detail = np.zeros((height, wide))
    detail[band:] = 1.0

    def scene(index: int) -> tuple[np.ndarray, ...]:
        x = (index * step) % (wide - width + 1)
        cut = slice(x, x + width)
        return y[:, cut], u[:, cut], v[:, cut], edges[:, cut], detail[:, cut]

    return scene


def composite_picture(
    width: int, height: int, *, dots: float = 0.0, rainbows: float = 0.0, step: int = 0
) -> Callable[[int], np.ndarray]:
    """``picture=`` for make_clip: :func:`composite_scene` (still, or panning ``step`` px a frame) with
    composite artefacts whose phase flips every frame, as NTSC's subcarrier does:

    * dot crawl: a luma chequer of ``dots`` codes (period ~3.8 px across, opposite sign on the next line)
      along the colour edges;
    * rainbows: a U and V wave of ``rainbows`` codes (diagonal bands 16 px apart) over the fine stripes.

    With both 0 it is the clean truth.
    """
    scene = composite_scene(width, height, step=step)
    xs = np.arange(width)[None, :].astype(np.float64)
    ys = np.arange(height)[:, None].astype(np.float64)
    chequer = np.cos(2 * np.pi * xs / 3.77 + np.pi * ys)
    wave = 2 * np.pi * (xs / 16 + ys / 24)

    def picture(index: int) -> np.ndarray:
        y, u, v, edges, detail = scene(index)
        sign = -1.0 if index % 2 else 1.0
        y = y + sign * dots * edges * chequer
        u = u + sign * rainbows * detail * np.cos(wave)
        v = v + sign * rainbows * detail * np.sin(wave)
        return _yuv_to_rgb(y, u, v)

    return picture
