"""The VapourSynth bridge: decoded PyAV frames through a VapourSynth filter chain and back, in memory.

VapourSynth pulls frames (a filter asks for frame n and its neighbours);
the decoder pushes them. The bridge joins the two with a source clip whose
frames are made on request from a window of decoded frames: a request for
frame n decodes up to n, and frames far behind the output are let go, so
memory stays flat however long the tape. The source clip is declared very
long, because the number of frames is known only at the end; the output
stops at the last frame decoded. A request past the end gets the last
frame again, which is what VapourSynth does itself at a clip's end.

PyAV keeps the frame accounting: every output frame gets its time from the
decoded frames' own timestamps (one output per input frame, or two for a
field-rate chain, the second half-way to the next frame), never from a
frame rate. A chain that drops frames (inverse telecine's decimation)
says the rate it gives instead: its output is timed on that rate's grid
from the time of the first output's source frame, as FFmpeg's ``decimate``
times it; every source frame carries its number (``VhsupFrame``), so the
bridge knows which source frame each output came from, and where the
input ended. Field order goes in as ``_FieldBased`` and the sample aspect
as ``_SARNum``/``_SARDen`` on every frame; the pixel format is the
source's (4:1:1 comes back as 4:2:2: VapourSynth's motion search does not
take 4:1:1).

:func:`check` tells whether the ``restore`` extra is installed and works,
as one line: the extra missing, VapourSynth not loading, a plugin missing,
or a plugin that loads but breaks the chain (vapoursynth-mvutensils 10).
"""

from __future__ import annotations

import functools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from vhsup.errors import VhsupError
from vhsup.workers import cores

if TYPE_CHECKING:
    import vapoursynth as vs

#: How users install it; every "needs the extra" message names this.
INSTALL = "pip install 'vhsup[restore]'"

#: The plugins the restore stages load, by VapourSynth namespace, and the package that ships each.
PLUGINS = {
    "mv": "vapoursynth-mvtools",
    "mvu": "vapoursynth-mvutensils==9",
    "znedi3": "vapoursynth-znedi3",
    "resize2": "vapoursynth-resize2",
    "akarin": "vapoursynth-akarin",
    "vszip": "vapoursynth-vszip",
    "zsmooth": "vapoursynth-zsmooth",
}

#: The frame property that carries each source frame's number through the chain.
FRAME_PROP = "VhsupFrame"

#: The source clip's declared length: 10 million frames (over 90 hours at 29.97); field-rate chains double it.
_LENGTH = 10_000_000
#: Decoded frames kept behind the oldest frame still to come out: more than any chain's temporal reach.
_BEHIND = 32
_CACHE_MB = 1024

# PyAV pixel format -> (VapourSynth preset name, PyAV format of the output).
_FORMATS = {
    "yuv420p": ("YUV420P8", "yuv420p"),
    "yuvj420p": ("YUV420P8", "yuvj420p"),
    "yuv422p": ("YUV422P8", "yuv422p"),
    "yuvj422p": ("YUV422P8", "yuvj422p"),
    "yuv444p": ("YUV444P8", "yuv444p"),
    "yuvj444p": ("YUV444P8", "yuvj444p"),
    "yuv411p": ("YUV411P8", "yuv422p"),
    "yuv420p10le": ("YUV420P10", "yuv420p10le"),
    "yuv422p10le": ("YUV422P10", "yuv422p10le"),
    "yuv444p10le": ("YUV444P10", "yuv444p10le"),
}
_OTHER = "yuv422p"  # packed and other formats are repacked to this first (no vertical chroma resampling)


def _missing_extra(reason: str) -> str:
    return f"{reason}: install the restore extra with {INSTALL} (Python 3.12 or newer)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


def check(plugins: dict[str, str] | None = None) -> str | None:
    """None when the restore extra works, else why not, in one line (what is missing and how to install it).

    ``plugins`` overrides :data:`PLUGINS` (the namespaces required).
    """
    if plugins is None:
        return _check_default()
    return _check(tuple(plugins.items()))


@functools.lru_cache(maxsize=1)
def _check_default() -> str | None:
    return _check(tuple(PLUGINS.items()))


def check_plugins(plugins: dict[str, str]) -> str | None:
    """None when VapourSynth loads with every plugin of ``plugins`` (namespace -> package), else why not.

    Only that: :func:`check` also runs QTGMC's chain. For a stage whose
    plugin is optional within the extra (VIVTC), so that its absence
    disables that stage alone.
    """
    return _plugins(tuple(plugins.items()))


def _plugins(plugins: tuple[tuple[str, str], ...]) -> str | None:
    try:
        import vapoursynth as vs
    except ModuleNotFoundError:
        return _missing_extra("VapourSynth is not installed")
    except Exception as exc:  # a wheel for another Python, a missing shared library
        return f"VapourSynth is installed but does not load ({_first_line(exc)}); reinstall it with {INSTALL}"
    have = {p.namespace for p in vs.core.plugins()}
    missing = [package for name, package in plugins if name not in have]
    if missing:
        return (
            f"VapourSynth is installed but its plugin(s) {', '.join(missing)} are missing or failed to load; "
            f"reinstall them with {INSTALL}"
        )
    return None


def _check(plugins: tuple[tuple[str, str], ...]) -> str | None:
    why = _plugins(plugins)
    if why is not None:
        return why
    import vapoursynth as vs

    try:
        from vsdeinterlace import QTempGaussMC
    except ModuleNotFoundError:
        return _missing_extra("vsjetpack is not installed")
    except Exception as exc:
        return f"vsjetpack is installed but does not load ({_first_line(exc)}); reinstall it with {INSTALL}"
    # A plugin can load and still break the chain (vapoursynth-mvutensils 10 dropped an argument
    # QTGMC passes): run it once on a small grey clip.
    try:
        clip = vs.core.std.BlankClip(width=128, height=128, format=vs.YUV420P8, length=6, color=[128, 128, 128])
        QTempGaussMC().bob(vs.core.std.SetFieldBased(clip, 2)).get_frame(5)
    except Exception as exc:
        return (
            f"the restore extra is installed but QTGMC does not run ({_first_line(exc)}); reinstall it with "
            f"{INSTALL} (vapoursynth-mvutensils must be 9)"
        )
    return None


def _plane(plane: Any, dtype: type) -> np.ndarray:
    """A plane of a PyAV frame as a (height, width) array over its own memory."""
    item = np.dtype(dtype).itemsize
    rows: np.ndarray = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // item)
    return rows[:, : plane.width]


class _Source:
    """Decoded frames for VapourSynth's requests: a window, filled on demand, emptied behind the output.

    Requests come from VapourSynth's worker threads; decoding happens in
    whichever thread asks first. Two locks: ``decoding`` lets one thread at
    a time pull on ``frames``, and ``lock`` guards the window for the
    moment it is read or changed. A frame already in the window is handed
    out without waiting for a decode in progress: when ``frames`` is another
    bridge's output, pulling on it waits for VapourSynth's workers, and a
    worker blocked behind that pull would never let it finish.
    """

    def __init__(self, frames: Iterator[av.VideoFrame], first: av.VideoFrame, av_format: str, sar: Fraction):
        self.frames = frames
        self.av_format = av_format
        self.width, self.height = first.width, first.height
        self.sar = sar
        self.window: dict[int, av.VideoFrame] = {}
        self.times: dict[int, int] = {}  # frame number -> pts, kept as long as the frame
        self.time_base = first.time_base
        self.count = 0  # frames decoded so far
        self.ended = False
        self.floor = 0  # frames below this were let go
        self.last: av.VideoFrame | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.lock = threading.Lock()
        self.decoding = threading.Lock()
        self._take(first)

    def _take(self, frame: av.VideoFrame) -> None:
        if frame.format.name != self.av_format or frame.width != self.width or frame.height != self.height:
            frame_pts, frame_tb = frame.pts, frame.time_base
            frame = frame.reformat(width=self.width, height=self.height, format=self.av_format, threads=1)
            frame.pts, frame.time_base = frame_pts, frame_tb
        assert frame.pts is not None  # decode stamps every frame
        with self.lock:
            self.window[self.count] = frame
            self.times[self.count] = frame.pts
            self.last = frame
            self.count += 1

    def _has(self, n: int) -> bool:
        with self.lock:
            return n < self.count or self.ended or self.closed

    def fill(self, n: int) -> None:
        """Decode until frame ``n`` is in (or the input ends)."""
        if self._has(n):
            return
        with self.decoding:
            while not self.ended and self.count <= n and not self.closed:
                try:
                    frame = next(self.frames)
                except StopIteration:
                    with self.lock:
                        self.ended = True
                    break
                self._take(frame)

    def exists(self, n: int) -> bool:
        self.fill(n)
        with self.lock:
            return n < self.count

    def pts(self, n: int) -> int | None:
        """Frame ``n``'s pts, None past the end."""
        self.fill(n)
        with self.lock:
            return self.times.get(n) if n < self.count else None

    def release(self, below: int) -> None:
        with self.lock:
            for k in range(self.floor, max(self.floor, below)):
                self.window.pop(k, None)
                self.times.pop(k, None)
            self.floor = max(self.floor, below)

    def get(self, n: int) -> av.VideoFrame:
        try:
            self.fill(n)
        except BaseException as exc:  # a decode failure: handed to the output side, which raises it
            self.error = self.error or exc
            raise
        with self.lock:
            if n >= self.count or self.closed:
                assert self.last is not None
                return self.last
            if n < self.floor:
                raise RuntimeError(
                    f"VapourSynth asked for source frame {n} after it was let go (window from {self.floor})"
                )
            return self.window[n]


def _source_frame(frame: vs.VideoFrame) -> int:
    """The number of the source frame an output frame was made from (its :data:`FRAME_PROP`)."""
    n = frame.props.get(FRAME_PROP)
    if n is None:
        raise RuntimeError(f"the VapourSynth chain dropped the {FRAME_PROP} frame property the bridge times by")
    return int(n)


def _nearest(x: Fraction) -> int:
    """``x`` rounded to the nearest integer, halves away from zero (as FFmpeg's av_rescale_q rounds)."""
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


def stream(
    frames: Iterator[av.VideoFrame],
    chain: Callable[[vs.VideoNode], vs.VideoNode],
    *,
    field_based: int,
    sar: Fraction,
    rate: Fraction,
    per_frame: int = 1,
    reach: int = 0,
    threads: int | None = None,
    output_rate: Fraction | None = None,
) -> Iterator[av.VideoFrame]:
    """Run decoded ``frames`` through ``chain`` (a VapourSynth clip -> clip); yield the output as PyAV frames.

    Args:
        frames: decoded frames with pts and time_base (``decode_from``'s).
        chain: builds the filter chain on the source clip.
        field_based: the source's ``_FieldBased``: 2 top field first, 1 bottom field first, 0 progressive.
        sar: the source's sample aspect ratio, set on every frame.
        rate: the source's frame rate: a field after the last frame comes half a frame after it.
        per_frame: output frames per source frame (2 for a field-rate deinterlacer).
        reach: how many source frames past frame n the chain asks for to make output n (with
            ``output_rate``: past the source frame at output n's time). They are decoded in the
            calling thread before n is requested, so VapourSynth's threads never pull on
            ``frames`` (which may itself be another bridge's output) while the input lasts.
        threads: VapourSynth's worker threads (default: the cores this process may use).
        output_rate: for a chain that drops frames (a decimator): the rate it gives. Output k
            is then timed at the time of output 0's source frame rounded to this rate's grid,
            plus k frames (FFmpeg's ``decimate`` times its output so), in a time base of one
            frame; ``per_frame`` is not used. Each output's source frame is read from its
            :data:`FRAME_PROP`, which the chain must keep; the output ends at the first frame
            made from past the input's end (a request past the end gets the last frame again).
    """
    import vapoursynth as vs

    first = next(frames, None)
    if first is None:
        return
    vs_name, av_out = _FORMATS.get(first.format.name, (None, _OTHER))
    av_in = first.format.name if vs_name else _OTHER
    vs_name = vs_name or _FORMATS[_OTHER][0]
    core = vs.core
    core.num_threads = threads or cores()
    core.max_cache_size = min(core.max_cache_size, _CACHE_MB)
    fmt = core.get_video_format(getattr(vs, vs_name))
    if first.width % (1 << fmt.subsampling_w) or first.height % (2 << fmt.subsampling_h):
        raise VhsupError(
            f"VapourSynth cannot hold a {first.width}x{first.height} {first.format.name} picture as fields "
            "(odd size for its chroma); use --deinterlace bwdif"
        )
    dtype = np.uint8 if fmt.bytes_per_sample == 1 else np.uint16
    source = _Source(frames, first, av_in, sar)
    # The first frames a chain reaches for, decoded here: filters may ask for
    # frames while the chain is built, and VapourSynth's workers must not pull
    # on ``frames`` (another bridge's output) themselves.
    source.exists(reach)
    sar = sar if sar > 0 else Fraction(1)
    blank = core.std.BlankClip(
        width=first.width,
        height=first.height,
        format=fmt.id,
        length=_LENGTH,
        fpsnum=rate.numerator,
        fpsden=rate.denominator,
        keep=True,
    )

    def make(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        frame = source.get(n)
        out = f.copy()
        for p in range(fmt.num_planes):
            np.copyto(np.asarray(out[p]), _plane(frame.planes[p], dtype))
        props = out.props
        props[FRAME_PROP] = n
        props["_FieldBased"] = field_based
        props["_SARNum"], props["_SARDen"] = sar.numerator, sar.denominator
        return out

    clip = core.std.ModifyFrame(blank, blank, make)
    if fmt.id == vs.YUV411P8:  # MVTools takes no 4:1:1: widen the chroma (horizontal only, so fields stay apart)
        clip = core.resize.Bicubic(clip, format=vs.YUV422P8)
    out_clip = chain(clip)
    ahead = max(1, core.num_threads)
    pending: deque[Any] = deque()
    asked = 0
    assert first.time_base is not None  # decode stamps every frame
    tb = Fraction(first.time_base)
    step = max(1, round(1 / (rate * tb)))  # one frame in pts units, until two frames give the real step
    origin: int | None = None  # with output_rate: output 0's pts, in frames of the output rate

    def source_of(j: int) -> int:
        """The source frame at output ``j``'s time."""
        return j // per_frame if output_rate is None else int(j * rate // output_rate)

    j = 0
    try:
        while True:
            while (
                len(pending) < ahead
                and asked < out_clip.num_frames
                and source.exists(source_of(asked))
                and (source.exists(source_of(asked) + reach) or source.ended)
            ):
                pending.append(out_clip.get_frame_async(asked))
                asked += 1
            if not pending:
                break
            try:
                vsf = pending.popleft().result()
            except vs.Error:
                if source.error is not None:
                    raise source.error from None
                raise
            if output_rate is not None:
                n, k = _source_frame(vsf), 0
            else:
                n, k = divmod(j, per_frame)
            pts = source.pts(n)
            if pts is None:
                break
            out = av.VideoFrame(vsf.width, vsf.height, av_out)
            for p in range(vsf.format.num_planes):
                np.copyto(_plane(out.planes[p], dtype), np.asarray(vsf[p]))
            if output_rate is not None:
                if origin is None:
                    origin = _nearest(pts * tb * output_rate)
                out.pts, out.time_base = origin + j, 1 / output_rate
            elif per_frame == 1:
                out.pts, out.time_base = pts, tb
            else:
                nxt = source.pts(n + 1)
                if nxt is not None:
                    step = nxt - pts
                out.pts = per_frame * pts + k * step
                out.time_base = tb / per_frame
            yield out
            j += 1
            source.release(n - _BEHIND)
        if not source.ended and asked >= out_clip.num_frames:
            raise VhsupError(f"more than {_LENGTH} frames: too long for the VapourSynth stage")
    finally:
        source.closed = True  # requests still in flight get the last frame, and their results are dropped
        for fut in pending:
            try:
                fut.result()
            except Exception:
                pass
        # A worker may still be decoding for a filter's own request: let it finish, then close
        # what feeds this bridge (another bridge waits for its own requests as it closes), all
        # before the caller closes the file under them.
        with source.decoding:
            close = getattr(frames, "close", None)
            if callable(close):
                close()
