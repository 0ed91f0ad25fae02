"""Open an input safely and decode its video stream as a stream of frames.

Nothing is held beyond the frame being handed on: memory stays flat for a
45-minute tape. Decode errors are counted, never hidden, so a truncated
capture is upscaled as far as it decodes and the user is told how much.

AVI stores no presentation times, only one chunk per frame slot in decoding
order. FFmpeg rebuilds times for it (``genpts``, which PyAV always turns on)
with MPEG-2's rule: a picture is shown when the next reference picture
arrives. For AVI that is one slot late for H.264 (B-frames or not) and for
MPEG-4 Part 2 with B-frames, out of order for H.264's B-frames, and out of
order again for DivX/Xvid "packed" B-frames (an anchor and a B-frame in one
chunk, a placeholder chunk later). The audio then leads the picture by a
frame or two. So AVI pictures are timed by their slots instead, as players
do: the decoder hands pictures on in display order, and the n-th picture
takes the n-th chunk's slot (see ``_SlotClock``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Generator, Iterator
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
    # AVI chunks that gave no picture and raised no error (a "not coded"
    # drop frame, a picture the decoder skipped): the previous picture
    # stays on screen for their slots.
    no_picture: int = 0
    messages: list[str] = field(default_factory=list)

    def note(self, msg: str) -> None:
        if len(self.messages) < 20:
            self.messages.append(msg)


def slot_timed(container: av.container.InputContainer) -> bool:
    """Whether the container's pictures are timed by chunk slot (AVI) rather
    than by stored presentation times; chunk slot = packet dts."""
    return container.format.name == "avi"


_B_PICTURES = (3, 7)  # AV_PICTURE_TYPE_B, AV_PICTURE_TYPE_BI
_HEAD_PACKETS = 48  # chunks decoded twice where decoding starts: more than any run of leading B-frames


class _SlotClock:
    """Presentation times for pictures of a container without them (AVI).

    Each chunk is one frame slot (its dts), and the slots in decoding order
    are also the display slots in display order: the n-th picture the
    decoder hands on takes the n-th slot. Every chunk sent to the decoder is
    tagged with its ordinal in the packet's pts, which FFmpeg hands on to
    the picture decoded from it, and the tags make two cases exact:

    * A chunk that gives no picture (a "not coded" drop frame, damage)
      must not pull the following pictures a slot early. An I or P picture
      is shown after every chunk decoded before it, and after the B-frames
      decoded after it that came out before it; so its slot is its own
      ordinal plus that count, and unused slots below it are dropped there.
    * After a seek (or at a file that starts mid-GOP) the decoder cannot
      make the B-frames that follow the keyframe but show before it (they
      refer to the previous GOP) and says nothing. ``head`` (the run of
      such chunks, counted by decoding the first chunks once beforehand)
      moves the first picture past their slots.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.pending: deque[tuple[int, int]] = deque()  # (ordinal, dts) of chunks without a picture yet
        self.recent: deque[int] = deque(maxlen=64)  # ordinals of the pictures handed on lately
        self.head = 0  # set from _leading_skips before the first picture
        self.first = True
        self.last_dts: int | None = None
        self.dropped = 0

    def send(self, packet: av.Packet) -> None:
        dts = packet.dts if packet.dts is not None else (0 if self.last_dts is None else self.last_dts + 1)
        self.last_dts = dts
        self.pending.append((self.sent, dts))
        packet.pts = self.sent
        self.sent += 1

    def failed(self, packet: av.Packet) -> None:
        """The chunk raised a decode error: no picture will come for it."""
        for item in self.pending:
            if item[0] == packet.pts:
                self.pending.remove(item)
                break

    def place(self, frame: av.VideoFrame) -> int:
        """The slot (dts) of the next picture in display order."""
        tag = frame.pts
        floor = None
        if tag is not None:
            if self.first:
                floor = tag + self.head
            if int(frame.pict_type) not in _B_PICTURES:
                floor = max(floor or 0, tag + sum(1 for t in self.recent if t > tag))
            self.recent.append(tag)
        while floor is not None and self.pending and self.pending[0][0] < floor:
            self.pending.popleft()
            self.dropped += 0 if self.first else 1  # the first picture's are ``head``'s, expected
        self.first = False
        if self.pending:
            return self.pending.popleft()[1]
        # More pictures than chunks: keep counting slots.
        self.last_dts = (self.last_dts if self.last_dts is not None else -1) + 1
        return self.last_dts

    def finish(self) -> int:
        """Chunks that gave no picture, found at the end."""
        left = len(self.pending)
        self.pending.clear()
        return self.dropped + left


def _leading_skips(stream: av.video.stream.VideoStream, head: list[av.Packet]) -> int:
    """Decode ``head`` (tagged by ``_SlotClock.send``) once, then reset the
    decoder: how many chunks right after the first picture's own gave no
    picture. Those are the B-frames shown before it that the decoder could
    not make without the previous GOP."""
    cc = stream.codec_context
    if cc.is_open:
        cc.flush_buffers()  # nothing left over from an earlier pass
    tags: list[int | None] = []
    for packet in head:
        try:
            tags += [f.pts for f in packet.decode()]
        except av.error.FFmpegError:
            pass
    try:
        tags += [f.pts for f in cc.decode(None)]
    except av.error.FFmpegError:
        pass
    cc.flush_buffers()
    seen = {t for t in tags if t is not None}
    if not tags or tags[0] is None:
        return 0
    run = 0
    for ordinal in range(tags[0] + 1, len(head)):
        if ordinal in seen:
            break
        run += 1
    return run


def video_frames(
    container: av.container.InputContainer,
    *,
    start: float | None = None,
    threads: int = 0,
    stats: DecodeStats | None = None,
    preroll: float = 1.0,
) -> Generator[av.VideoFrame, None, None]:
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

    Frames without a pts (raw streams) get one from the previous frame
    plus its duration, so every frame has a time. AVI pictures get the
    time of their frame slot (see the module docstring).
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
    clock = _SlotClock() if slot_timed(container) else None

    def stamp(frame: av.VideoFrame) -> av.VideoFrame:
        nonlocal last_pts
        if clock is not None:
            frame.pts = clock.place(frame)
        elif frame.pts is None:
            frame.pts = 0 if last_pts is None else last_pts + step
        frame.time_base = tb
        last_pts = frame.pts
        stats.frames += 1
        if frame.is_corrupt:
            stats.corrupt_frames += 1
            stats.errors += 1
        return frame

    demux = container.demux(stream)
    head: list[av.Packet] = []
    head_error: av.error.FFmpegError | None = None
    if clock is not None:
        # Tag the first chunks and count the pictures the decoder cannot
        # make at this entry point; they are decoded again below.
        try:
            for packet in demux:
                head.append(packet)
                if packet.size:
                    clock.send(packet)
                elif packet.dts is None:
                    break  # the end of the stream
                if len(head) >= _HEAD_PACKETS:
                    break
        except av.error.FFmpegError as exc:
            head_error = exc  # reported by the loop below, after the chunks read so far
        clock.head = _leading_skips(stream, [p for p in head if p.size])

    def packets() -> Iterator[av.Packet]:
        yield from head
        if head_error is not None:
            raise head_error
        for packet in demux:
            if clock is not None and packet.size:
                clock.send(packet)
            yield packet

    source = packets()
    while True:
        try:
            packet = next(source)
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
            if clock is not None and packet.size:
                clock.failed(packet)
            continue
        for frame in frames:
            yield stamp(frame)
    if clock is not None:
        lost = clock.finish()
        if lost:
            stats.no_picture += lost
            stats.note(f"{lost} AVI chunks gave no picture; the picture before each stays on screen")


def decode_from(
    container: av.container.InputContainer,
    start: Fraction | None,
    *,
    threads: int = 0,
    stats: DecodeStats | None = None,
) -> Generator[av.VideoFrame, None, None]:
    """Decoded frames from a little before ``start`` (all of them if None).

    A seek can land after its target (imprecise indexes in program streams
    and AVI); the deinterlacer and the exact trim need frames from before
    the start, so when the first frame is already past it, seek again
    further back, and in the end decode from the beginning. ``stats`` counts
    the attempt that is used.
    """
    stats = stats if stats is not None else DecodeStats()
    preroll = 1.0
    while True:
        DecodeStats.__init__(stats)  # count only the attempt that is kept
        at = float(start) if start is not None else None
        frames = video_frames(container, start=at, threads=threads, stats=stats, preroll=preroll)
        first = next(frames, None)
        from_top = at is None or at - preroll <= 0
        late = False  # the first frame is already past the start: seek further back
        if first is not None and start is not None and not from_top:
            assert first.pts is not None and first.time_base is not None  # video_frames stamps every frame
            late = first.pts * Fraction(first.time_base) >= start
        if not late:
            if first is not None:
                yield first
            yield from frames
            return
        frames.close()
        preroll *= 8
