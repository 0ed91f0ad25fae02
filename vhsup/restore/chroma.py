"""Chroma shift (``--chroma-shift auto|off|X,Y``): the chroma-to-luma delay measured and undone.

A VHS deck plays the colour back through its own, slower path, so the
chroma arrives late: it sits 2-6 pixels right of the luma at 720 wide, and
DVDs mastered from such tapes keep the lag. Restorers move it back before
any smoothing or upscaling.

**Measuring** (:func:`measure`, once per file). Frames sampled across the
file are read as decoded, in their own planes (no RGB round trip, no
deinterlacer: each line is measured on its own). On every line the edge
gradient of the (slightly softened) luma, dY/dx, is cross-correlated with
the gradient of each chroma plane, upsampled to luma positions with the
chroma co-sited with the first luma sample of its group (MPEG-2, DV and
4:2:2 siting), over 32-pixel segments. Across one edge the chroma is an
affine function of the luma, so a segment's correlation is coherent, but
its sign is not (a red-to-blue edge may brighten or darken): each
segment's sum is squared before the sums over segments, lines and frames.
That curve peaks at the lag, and a parabola through the peak and its
neighbours gives the fraction of a pixel. Luma texture without a chroma
partner cancels within its segment. The deck's chroma low-pass blurs the
chroma symmetrically, so it widens the peak without moving it. A file whose chroma does not follow its luma (black and white,
or noise only) is reported as not measurable, and nothing is moved.

**Moving** (:func:`shift_frames`). FFmpeg's ``chromashift`` filter (in
PyAV's build) moves chroma by whole chroma samples only: 2 luma pixels in
4:2:2, 4 in DV's 4:1:1, so a 4.5 pixel lag would be left 0.5-1.5 pixels
off. The move here is exact to the sub-pixel: each chroma plane is
resampled with one fixed Lanczos-3 filter per axis (a whole-sample move is
a plain copy), edges repeated, in the frame's own format and bit depth,
after the field handling and before the conversion to RGB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from vhsup.errors import VhsupError
from vhsup.media.decode import open_input, video_frames
from vhsup.media.probe import VideoInfo

#: Largest lag searched, in luma pixels (VHS shows 2-6 at 720 wide).
MAX_LAG = 16
#: A measured lag smaller than this is no lag: nothing is moved (well under what the eye sees).
NEGLIGIBLE = 0.25
#: Below this normalised correlation at the peak, the chroma does not follow the luma.
MIN_MATCH = 0.05
#: Lines and columns left out at each side (borders, head-switching tears).
_MARGIN = 8
_SMOOTH_SIGMA = 2.0  # px: the luma is softened towards the chroma's bandwidth before its edges are taken
_BLOCK = 32  # px: luma line segments whose correlation with the chroma is summed with its sign, then squared
_LOBES = 3


@dataclass(frozen=True)
class ChromaShift:
    """How the chroma planes are moved, in source luma pixels (right and down positive).

    Attributes:
        x, y: the move.
        source: 'off', 'user' or 'auto'.
        lag: with 'auto', the measured lag of chroma behind luma (px, right
            positive; the move is its opposite), None when not measurable.
        match: with 'auto', the normalised edge correlation at the peak (0-1).
        frames: with 'auto', the frames measured.
    """

    x: float = 0.0
    y: float = 0.0
    source: str = "off"
    lag: float | None = None
    match: float = 0.0
    frames: int = 0

    @property
    def moves(self) -> bool:
        return bool(self.x or self.y)

    def label(self) -> str:
        """The move as ``--chroma-shift`` takes it, or 'off'."""
        return f"{self.x:.2f},{self.y:.2f}" if self.moves else "off"

    def describe(self) -> str:
        """probe's line."""
        move = f"move chroma {self.x:+.2f},{self.y:+.2f} px" if self.moves else "nothing moved"
        if self.source == "off":
            return "off"
        if self.source == "user":
            return move
        if self.lag is None:
            return f"auto: not measurable (chroma edges do not follow luma, match {self.match:.2f}); nothing moved"
        return f"auto: chroma lags luma {self.lag:+.2f} px (match {self.match:.2f}, {self.frames} frames); " + (
            move if self.moves else "negligible, nothing moved"
        )

    def to_json(self) -> dict:
        return {
            "x": round(self.x, 3),
            "y": round(self.y, 3),
            "source": self.source,
            "lag": None if self.lag is None else round(self.lag, 3),
            "match": round(self.match, 3),
            "frames": self.frames,
        }


def parse(text: str | None) -> tuple[float, float] | str:
    """``--chroma-shift``: 'off', 'auto', or 'X,Y' (a lone X means X,0) in source luma pixels."""
    value = (text or "off").strip().lower()
    if value in ("off", "auto"):
        return value
    parts = value.split(",")
    try:
        if len(parts) > 2:
            raise ValueError
        x, y = (float(p) for p in (parts + ["0"])[:2])
    except ValueError:
        raise VhsupError(f"--chroma-shift must be auto, off or X,Y pixels (e.g. -3.5,0), not {text!r}") from None
    if not all(math.isfinite(v) and abs(v) <= 64 for v in (x, y)):
        raise VhsupError(f"--chroma-shift {text}: each move must be within 64 pixels")
    return x, y


def plan_shift(text: str | None, path: str | os.PathLike[str], info: VideoInfo) -> ChromaShift:
    """The move ``--chroma-shift text`` asks for on ``path`` (measured once for 'auto')."""
    asked = parse(text)
    if asked == "off":
        return ChromaShift()
    if asked == "auto":
        return measure(path, info)
    assert isinstance(asked, tuple)
    return ChromaShift(asked[0], asked[1], "user")


# -- measuring ---------------------------------------------------------------


def _planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, Cb, Cr as float32 arrays at their own sizes (other layouts converted to 4:4:4 first)."""
    if not _planar_yuv(frame):
        frame = frame.reformat(format="yuv444p")
    y, cb, cr = (_read(frame, i) for i in range(3))
    return y.astype(np.float32), cb.astype(np.float32), cr.astype(np.float32)


def _gauss(sigma: float) -> np.ndarray:
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _rows_filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Filter every row with ``kernel`` (odd length), edges repeated."""
    r = len(kernel) // 2
    padded = np.pad(x, ((0, 0), (r, r)), mode="edge")
    out = np.zeros_like(x)
    for k, w in enumerate(kernel):
        out += w * padded[:, k : k + x.shape[1]]
    return out


def _edges(p: np.ndarray) -> np.ndarray:
    """d/dx by central differences (edges repeated)."""
    padded = np.pad(p, ((0, 0), (1, 1)), mode="edge")
    return (padded[:, 2:] - padded[:, :-2]) * 0.5


def _upsample_rows(c: np.ndarray, width: int) -> np.ndarray:
    """Chroma rows to ``width`` luma positions: sample j sits on luma x = j * factor (co-sited), linear between."""
    factor = width / c.shape[1]
    if factor == 1:
        return c
    pos = np.arange(width, dtype=np.float32) / factor
    i0 = np.minimum(np.floor(pos).astype(np.int64), c.shape[1] - 1)
    i1 = np.minimum(i0 + 1, c.shape[1] - 1)
    f = pos - i0
    return c[:, i0] * (1 - f) + c[:, i1] * f


class _Correlator:
    """The blockwise edge cross-correlation, summed over lines and frames."""

    def __init__(self) -> None:
        self.curve = np.zeros(2 * MAX_LAG + 1)
        self.norm = 0.0
        self.frames = 0

    def add(self, frame: av.VideoFrame) -> None:
        y, cb, cr = _planes(frame)
        h, w = y.shape
        ch = cb.shape[0]
        lo = MAX_LAG + _MARGIN
        blocks = (w - 2 * lo) // _BLOCK
        if blocks < 1 or h <= 2 * _MARGIN:
            return
        hi = lo + blocks * _BLOCK
        if ch != h:  # vertical subsampling: each chroma row stands for h/ch luma rows
            rows = np.minimum(np.arange(h) * ch // h, ch - 1)
            cb, cr = cb[rows], cr[rows]
        lines = slice(_MARGIN, h - _MARGIN)
        gy = _edges(_rows_filter(y[lines], _gauss(_SMOOTH_SIGMA)))[:, lo:hi]
        gy = gy.reshape(gy.shape[0], blocks, _BLOCK)
        luma_energy = (gy**2).sum(-1)
        for c in (cb, cr):
            gc = _edges(_upsample_rows(c[lines], w))
            for k, lag in enumerate(range(-MAX_LAG, MAX_LAG + 1)):
                moved = gc[:, lo + lag : hi + lag].reshape(gy.shape)
                self.curve[k] += float(((gy * moved).sum(-1) ** 2).sum())
            self.norm += float((luma_energy * (gc[:, lo:hi].reshape(gy.shape) ** 2).sum(-1)).sum())
        self.frames += 1

    def result(self) -> tuple[float | None, float]:
        """(lag in luma pixels or None, the peak's share of what the edges could give, 0-1)."""
        c = self.curve
        if not self.norm or not self.frames:
            return None, 0.0
        p = int(np.argmax(c))
        match = float(c[p]) / self.norm
        if match < MIN_MATCH or p in (0, len(c) - 1):
            return None, match
        a, b, d = c[p - 1], c[p], c[p + 1]
        bend = a - 2 * b + d
        frac = 0.5 * (a - d) / bend if bend < 0 else 0.0
        return p - MAX_LAG + float(frac), match


def _sample_points(info: VideoInfo, spots: int = 8) -> list[float | None]:
    span = info.duration or 0
    if span > spots:
        return [info.start_time + span * (k + 0.5) / spots for k in range(spots)]
    return [None]


def measure(path: str | os.PathLike[str], info: VideoInfo, *, frames: int = 24) -> ChromaShift:
    """Measure the chroma lag of ``path`` on about ``frames`` frames spread across it (see the module docstring)."""
    points = _sample_points(info)
    per_point = max(1, frames // len(points))
    corr = _Correlator()
    container = open_input(path)
    try:
        for point in points:
            gen = video_frames(container, start=point, preroll=0.0)
            try:
                for got, frame in enumerate(gen):
                    if got >= per_point * 2:
                        break
                    if got % 2 == 0:  # every other frame: more of the picture for the same work
                        corr.add(frame)
            finally:
                gen.close()
    finally:
        container.close()
    lag, match = corr.result()
    if lag is None:
        return ChromaShift(source="auto", lag=None, match=match, frames=corr.frames)
    move = -lag if abs(lag) >= NEGLIGIBLE else 0.0
    return ChromaShift(move, 0.0, "auto", lag=lag, match=match, frames=corr.frames)


# -- moving ------------------------------------------------------------------


def _planar_yuv(frame: av.VideoFrame) -> bool:
    fmt = frame.format
    return (
        fmt.name.startswith("yuv")
        and len(fmt.components) == 3
        and len(frame.planes) == 3
        and all(c.bits <= 16 for c in fmt.components)
    )


def _dtype(frame: av.VideoFrame) -> np.dtype:
    bits = frame.format.components[0].bits
    return np.dtype(np.uint8) if bits <= 8 else np.dtype("<u2")


def _read(frame: av.VideoFrame, index: int) -> np.ndarray:
    plane = frame.planes[index]
    dtype = _dtype(frame)
    rows = np.frombuffer(memoryview(plane), dtype=dtype, count=plane.line_size // dtype.itemsize * plane.height)
    return rows.reshape(plane.height, -1)[:, : plane.width].copy()


def _taps(move: float) -> tuple[int, np.ndarray]:
    """out[x] = sum_k taps[k] * in[x + base + k] samples the input at x - move (Lanczos-3)."""
    base = math.floor(-move)
    t = -move - base
    if t == 0:
        return base, np.array([1.0])
    k = np.arange(-_LOBES + 1, _LOBES + 1, dtype=np.float64)
    d = t - k
    w = np.sinc(d) * np.sinc(d / _LOBES)
    return base - _LOBES + 1, w / w.sum()


def _shift_axis(p: np.ndarray, move: float, axis: int) -> np.ndarray:
    base, taps = _taps(move)
    n = p.shape[axis]
    index = np.clip(np.arange(n)[:, None] + base + np.arange(len(taps))[None, :], 0, n - 1)
    out = np.zeros(p.shape, np.float64)
    for k, w in enumerate(taps):
        out += w * np.take(p, index[:, k], axis=axis)
    return out


def shift_planes(cb: np.ndarray, cr: np.ndarray, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Move two chroma planes by (x, y) of their own samples; same dtype, rounded and clipped."""
    top = np.iinfo(cb.dtype).max
    out = []
    for p in (cb, cr):
        q = p.astype(np.float64)
        if x:
            q = _shift_axis(q, x, 1)
        if y:
            q = _shift_axis(q, y, 0)
        out.append(np.clip(np.round(q), 0, top).astype(p.dtype))
    return out[0], out[1]


def shift_frame(frame: av.VideoFrame, x: float, y: float) -> av.VideoFrame:
    """A copy of ``frame`` with its chroma moved (x, y) luma pixels; luma, time and tags kept."""
    if not _planar_yuv(frame):
        frame = frame.reformat(format="yuv444p16le" if frame.format.components[0].bits > 8 else "yuv444p")
    luma = frame.planes[0]
    cw, chh = frame.planes[1].width, frame.planes[1].height
    fx, fy = luma.width / cw, luma.height / chh
    cb, cr = shift_planes(_read(frame, 1), _read(frame, 2), x / fx, y / fy)
    out = av.VideoFrame(frame.width, frame.height, frame.format.name)
    dtype = _dtype(frame)
    for index, data in enumerate((_read(frame, 0), cb, cr)):
        plane = out.planes[index]
        buf = np.zeros((plane.height, plane.line_size // dtype.itemsize), dtype)
        buf[:, : data.shape[1]] = data
        plane.update(buf.tobytes())
    out.pts, out.time_base = frame.pts, frame.time_base
    out.color_range, out.colorspace = frame.color_range, frame.colorspace
    return out


def shift_frames(frames: Iterable[av.VideoFrame], shift: ChromaShift) -> Iterator[av.VideoFrame]:
    """The frames with ``shift`` applied (the same frames when it moves nothing)."""
    if not shift.moves:
        yield from frames
        return
    it = iter(frames)
    try:
        for frame in it:
            yield shift_frame(frame, shift.x, shift.y)
    finally:  # closed early: close what feeds it too (a VapourSynth stage waits for its workers)
        close = getattr(it, "close", None)
        if callable(close):
            close()
