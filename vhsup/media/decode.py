"""Open an input safely and decode its video stream as a stream of frames.

Nothing is held beyond the frame being handed on: memory stays flat for a
45-minute tape. Decode errors are counted, never hidden, so a truncated
capture is upscaled as far as it decodes and the user is told how much.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from vhsup.errors import VhsupError


def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open ``path`` read-only, turning every way it can be unusable into one line.

    Raises:
        VhsupError: missing path, a directory, an empty or unreadable file,
            a file FFmpeg cannot parse, or a file with no video stream.
    """
    p = Path(path)
    if not p.exists():
        raise VhsupError("no such file", p)
    if p.is_dir():
        raise VhsupError("is a directory, not a video file", p)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:  # read access check without trusting FFmpeg's message
            fh.read(1)
    except PermissionError:
        raise VhsupError("permission denied: cannot read the file", p) from None
    except OSError as exc:
        raise VhsupError(f"cannot read the file ({exc.strerror or exc})", p) from None
    if size == 0:
        raise VhsupError("the file is empty", p)
    try:
        container = av.open(str(p), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise VhsupError(f"not a video file FFmpeg can read ({reason})", p) from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        what = "audio-only file" if kinds == ["audio"] else "no video stream"
        raise VhsupError(f"{what}: nothing to upscale", p)
    return container


@dataclass
class DecodeStats:
    """What the decoder saw. ``errors`` counts packets FFmpeg could not decode
    plus frames it flagged as corrupt (error-concealed)."""

    packets: int = 0
    frames: int = 0
    errors: int = 0
    corrupt_frames: int = 0
    messages: list[str] = field(default_factory=list)

    def note(self, msg: str) -> None:
        if len(self.messages) < 20:
            self.messages.append(msg)


def video_frames(
    container: av.container.InputContainer,
    *,
    start: float | None = None,
    threads: int = 0,
    stats: DecodeStats | None = None,
    preroll: float = 1.0,
) -> Iterator[av.VideoFrame]:
    """Decode the first video stream in presentation order.

    Args:
        container: an input from :func:`open_input`.
        start: seek to this source-clock time (seconds) minus ``preroll``; the
            caller trims exactly, after deinterlacing, which needs the frames
            just before the range.
        threads: codec threads (0 = FFmpeg's choice). ``thread_type = AUTO``
            lets FFmpeg use frame threading, which decodes faster than the
            default slice threading.
        stats: filled in as decoding goes.

    Frames without a pts (some AVI and raw streams) get one from the
    previous frame plus its duration, so every frame has a time.
    """
    stats = stats if stats is not None else DecodeStats()
    stream = container.streams.video[0]
    # Threading can only be set before the codec opens; a second pass over
    # the same container (auto-crop's samples, a re-seek) finds it open, and
    # PyAV raises "Cannot change thread_type after codec is open".
    if not stream.codec_context.is_open:
        stream.thread_type = "AUTO"
        stream.thread_count = threads
    tb = stream.time_base or Fraction(1, 90000)
    if start is not None and start > 0:
        target = max(0.0, start - preroll)
        try:
            container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as exc:
            stats.note(f"seek failed ({exc}); decoding from the start")
            container.seek(0, stream=stream)
    rate = stream.average_rate or stream.guessed_rate or Fraction(30000, 1001)
    step = int(round(1 / (rate * tb))) or 1
    last_pts: int | None = None

    def stamp(frame: av.VideoFrame) -> av.VideoFrame:
        nonlocal last_pts
        if frame.pts is None:
            frame.pts = 0 if last_pts is None else last_pts + step
        frame.time_base = tb
        last_pts = frame.pts
        stats.frames += 1
        if frame.is_corrupt:
            stats.corrupt_frames += 1
            stats.errors += 1
        return frame

    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            break
        except av.error.EOFError:
            break
        except av.error.FFmpegError as exc:
            # A damaged container: count it and stop reading rather than loop.
            stats.errors += 1
            stats.note(f"demux error: {exc}")
            break
        stats.packets += 1 if packet.size else 0
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            stats.errors += 1
            stats.note(f"decode error at packet {stats.packets}: {exc}")
            continue
        for frame in frames:
            yield stamp(frame)
