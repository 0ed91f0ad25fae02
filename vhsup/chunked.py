"""One long video upscaled in chunks, in parallel, with exact frame accounting.

Splitting a video by seconds and re-encoding the pieces is how frames get
lost or doubled at the seams and the sound drifts. Here:

* **Boundaries are picture times.** The source's keyframe times are read by
  demuxing (no decoding) and the chunks meet at some of them. Chunk k owns
  the output pictures whose source-clock time t satisfies
  ``start_k <= t < start_k+1``, and the ranges abut, so after deinterlacing
  (single or double rate) each output picture lands in exactly one chunk.
* **Seams are decoded, not cut.** Each chunk decodes from a little before its
  start (the deinterlacer needs the previous fields; a seek that lands late
  is retried further back, see :func:`vhsup.media.decode.decode_from`) and
  past its end (it needs the next ones), then trims exactly. A chunk's pictures are the same pixels
  the unchunked run would make.
* **The video is joined losslessly.** Every chunk is encoded with the final
  codec and settings into its own video-only NUT file (NUT keeps the
  encoder's timestamps exactly; each chunk starts with a keyframe because
  every encode does), on the whole video's clock. The join copies packets;
  nothing is re-encoded.
* **Audio and subtitles are muxed once**, from the source, over the whole
  span, by the same code and the same origin as the unchunked pipeline, so
  sync is exactly as good as ``upscale_video``'s.
* **Chunks run side by side** in the worker processes of
  :class:`vhsup.workers.Pool` (one GPU each where there are several; see
  there for the rule), or in this process with one worker.
* **Resume by chunk.** Chunks live in a work folder beside the output
  (``.NAME.vhsup-chunks/``). A chunk is finished when its file has been
  renamed into place and its JSON sidecar (frame count, time range, the
  settings key) written; a rerun with the same input and settings skips it.
  The folder is removed once the output is complete.

Frame accounting is checked, not assumed: the expected picture count of
every chunk comes from the packet scan, every chunk file is counted again
when it is joined, consecutive chunks must not overlap, and the total must
match.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import cast

import av

from vhsup.errors import Interrupted, VhsupError
from vhsup.media.autocrop import auto_crop
from vhsup.media.decode import decode_from, open_input, slot_timed
from vhsup.media.filters import frame_time, progressive_frames
from vhsup.media.geometry import Crop, parse_crop
from vhsup.media.probe import VideoInfo, probe
from vhsup.options import Options, model_name, output_settings
from vhsup.pipeline import Result, check_outputs, default_output, field_plan, source_range
from vhsup.restore import preset as restore_preset
from vhsup.restore.chroma import plan_shift
from vhsup.workers import Pool, throttled

Notice = Callable[[str], None]
Progress = Callable[[int, int], None]

CHUNK_EXT = ".nut"
_PLAN_FILE = "plan.json"
_FORMAT_VERSION = 1


def work_dir(dst: Path) -> Path:
    """Where the chunks of ``dst`` are kept until it is complete."""
    return dst.with_name(f".{dst.name}.vhsup-chunks")


@dataclass(frozen=True)
class Chunk:
    """One chunk: the output pictures with source time in [start, end).

    ``start`` None is "from the first picture" (no seek) and ``end`` None "to
    the end of the file", exactly as an unchunked run without a range.
    ``frames`` is the expected number of output pictures (-1: unknown, e.g.
    inverse telecine, whose output count is only known after filtering).
    """

    index: int
    start: Fraction | None
    end: Fraction | None
    frames: int

    def to_json(self) -> dict:
        return {"index": self.index, "start": _fs(self.start), "end": _fs(self.end), "frames": self.frames}

    @classmethod
    def from_json(cls, d: dict) -> Chunk:
        return cls(int(d["index"]), _fp(d["start"]), _fp(d["end"]), int(d["frames"]))


@dataclass
class ChunkPlan:
    """How a video is cut, decided from a packet scan before any decoding.

    Attributes:
        chunks: in order; consecutive ranges abut.
        origin: source time of the first output picture (output time 0).
        frames_in: source frames inside the range.
        total: expected output pictures (-1 where unknown).
        end: source time the audio and subtitles are cut at (None: the end).
        key: hash of the input and every setting that changes the output.
        estimate: output pictures to expect, for progress.
    """

    chunks: list[Chunk]
    origin: Fraction
    frames_in: int
    total: int
    end: Fraction | None
    key: str
    estimate: int = 0

    def to_json(self) -> dict:
        return {
            "version": _FORMAT_VERSION,
            "key": self.key,
            "origin": _fs(self.origin),
            "frames_in": self.frames_in,
            "total": self.total,
            "end": _fs(self.end),
            "chunks": [c.to_json() for c in self.chunks],
            "estimate": self.estimate,
        }

    @classmethod
    def from_json(cls, d: dict) -> ChunkPlan:
        return cls(
            [Chunk.from_json(c) for c in d["chunks"]],
            Fraction(d["origin"]),
            int(d["frames_in"]),
            int(d["total"]),
            _fp(d["end"]),
            str(d["key"]),
            int(d["estimate"]),
        )


def _fs(x: Fraction | None) -> str | None:
    return None if x is None else f"{x.numerator}/{x.denominator}"


def _fp(s: str | None) -> Fraction | None:
    return None if s is None else Fraction(s)


# -- planning ----------------------------------------------------------------


@dataclass
class PacketScan:
    """Video packet times of a file, in presentation order (seconds, exact)."""

    times: list[Fraction]
    keyframes: list[Fraction]
    untimed: int  # packets with neither pts nor dts


def scan_video(src: Path) -> PacketScan:
    """Read every video packet's time and keyframe flag; nothing is decoded.

    Reading packets of a two-hour DVD takes seconds, against hours of
    upscaling, and gives the exact grid the chunks are cut on.
    """
    times: list[Fraction] = []
    keys: list[Fraction] = []
    untimed = 0
    container = open_input(src)
    try:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base or Fraction(1, 90000))
        by_slot = slot_timed(container)  # AVI: decoding times pictures by chunk slot, i.e. dts
        try:
            for pkt in container.demux(stream):
                if not pkt.size:
                    continue
                ts = pkt.dts if by_slot else (pkt.pts if pkt.pts is not None else pkt.dts)
                if ts is None:
                    untimed += 1
                    continue
                t = ts * tb
                times.append(t)
                if pkt.is_keyframe:
                    keys.append(t)
        except av.FFmpegError:
            pass  # a damaged tail: the decoder will stop there too
    finally:
        container.close()
    times.sort()
    return PacketScan(times, sorted(set(keys)), untimed)


def first_picture_time(src: Path, filters, start: Fraction | None, end: Fraction | None) -> Fraction | None:
    """The source time of the first output picture, as an unchunked run
    finds it: decoded and filtered from the top (or from ``start``). It is
    the output's time zero, which every chunk must share before the first
    chunk has run; decoding up to the first good frame takes a moment."""
    container = open_input(src)
    try:
        stream = container.streams.video[0]
        frames = decode_from(container, start)
        try:
            for frame in progressive_frames(frames, stream, filters):
                t = frame_time(frame)
                if start is not None and t < start:
                    continue
                return t if end is None or t < end else None
        finally:
            frames.close()
    finally:
        container.close()
    return None


def _settings_key(src: Path, opts: Options, fmt: str) -> str:
    """Hash of the input and of the settings that change the output (the rule of ``output_settings``)."""
    st = src.stat()
    from vhsup import __version__

    blob = json.dumps(
        {
            "src": str(src.resolve()),
            "size": st.st_size,
            "mtime": st.st_mtime_ns,
            "opts": output_settings(opts),
            "fmt": fmt,
            "vhsup": __version__,
            "format": _FORMAT_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def plan_chunks(
    src: Path,
    opts: Options,
    *,
    pieces: int,
    chunk_seconds: float | None,
    info: VideoInfo,
    key: str,
    notice: Notice | None = None,
) -> ChunkPlan:
    """Cut the (range of the) video into about ``pieces`` chunks at keyframes,
    or into chunks of about ``chunk_seconds`` when that is given."""
    say = notice or (lambda _m: None)
    filters = field_plan(info, opts)
    start, end, limit = source_range(info, opts)
    scan = scan_video(src)
    origin = first_picture_time(src, filters, start, end)
    if origin is None:
        raise VhsupError("no video frames in the chosen range", src)
    # Frames before the first picture the decoder gives (the head of a file
    # cut mid-GOP references what was cut away) are no output, chunked or not.
    inside = [t for t in scan.times if t >= origin and (end is None or t < end)]
    if not inside:
        inside = [origin]
    per_frame = 2 if filters.double_rate else 1
    step = (inside[-1] - inside[0]) / (len(inside) - 1) if len(inside) > 1 else 1 / info.fps
    span_end = inside[-1] + step
    if chunk_seconds is not None:
        if chunk_seconds <= 0:
            raise VhsupError("the chunk length must be positive")
        wanted = max(1, math.ceil(float(span_end - origin) / chunk_seconds))
    else:
        wanted = max(1, pieces)
    if limit is not None:
        wanted = 1  # a frame limit is a preview-sized run; one chunk keeps it exact
    if filters.ivtc and wanted > 1:
        # decimate drops one frame in five counted from the first frame it
        # is fed: chunks starting elsewhere would pick other frames at seams.
        say("--ivtc: the video is upscaled as one chunk (inverse telecine cannot be split exactly)")
        wanted = 1
    if scan.untimed and wanted > 1:
        say(f"{src}: {scan.untimed} video packets carry no timestamp; the video is upscaled as one chunk")
        wanted = 1
    candidates = [k for k in scan.keyframes if origin < k < span_end and (end is None or k < end)]
    bounds: list[Fraction] = []
    for k in range(1, wanted):
        ideal = origin + (span_end - origin) * k / wanted
        later = [c for c in candidates if not bounds or c > bounds[-1]]
        if not later:
            break
        best = min(later, key=lambda c: abs(c - ideal))
        bounds.append(best)
    if wanted > 1 and len(bounds) + 1 < wanted:
        say(f"{src}: only {len(bounds) + 1} chunks: the video has too few keyframes to cut it into {wanted}")
    starts: list[Fraction | None] = [start, *bounds]
    ends: list[Fraction | None] = [*bounds, end]
    exact = not filters.ivtc and not scan.untimed
    chunks = []
    for i, (a, b) in enumerate(zip(starts, ends)):
        n = sum(1 for t in inside if (a is None or t >= a) and (b is None or t < b)) * per_frame
        if limit is not None:
            n = min(n, limit)
        chunks.append(Chunk(i, a, b, n if exact else -1))
    total = sum(c.frames for c in chunks) if exact else -1
    aux_end = end if limit is None else origin + Fraction(limit) / filters.rate
    estimate = total if total >= 0 else int(len(inside) * filters.rate / info.fps)
    return ChunkPlan(chunks, origin, len(inside), total, aux_end, key, estimate)


# -- one chunk -----------------------------------------------------------------


def _chunk_paths(work: Path, index: int) -> tuple[Path, Path]:
    return work / f"chunk-{index:04d}{CHUNK_EXT}", work / f"chunk-{index:04d}.json"


def _read_sidecar(work: Path, chunk: Chunk, key: str) -> dict | None:
    """The sidecar of a finished chunk made with these settings, else None."""
    video, side = _chunk_paths(work, chunk.index)
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key or meta.get("chunk") != chunk.to_json() or not video.is_file():
        return None
    if video.stat().st_size != meta.get("bytes"):
        return None
    return meta


def _count_chunk(path: Path, origin: Fraction) -> tuple[int, Fraction, Fraction]:
    """(packets, first time, last time) of a chunk file on the source clock."""
    n = 0
    lo: Fraction | None = None
    hi: Fraction | None = None
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        for pkt in c.demux(st):
            if not pkt.size:
                continue
            assert pkt.pts is not None  # our own chunk files: every picture has a pts
            t = origin + pkt.pts * Fraction(pkt.time_base)
            lo = t if lo is None or t < lo else lo
            hi = t if hi is None or t > hi else hi
            n += 1
    if n == 0:
        raise RuntimeError(f"{path}: chunk holds no video")
    assert lo is not None and hi is not None  # set by the first packet
    return n, lo, hi


def run_chunk(job: dict, report: Callable[[tuple], None]) -> dict:
    """Upscale one chunk into its NUT file and write its sidecar.

    ``job`` is plain data (it crosses into a spawned process): src, work,
    fmt, key, origin, chunk, options. ``report`` receives ('progress', index,
    frames) and ('notice', index, text) messages. Returns the sidecar.
    """
    from vhsup.pipeline import Run

    chunk = Chunk.from_json(job["chunk"])
    origin = Fraction(job["origin"])
    video, side = _chunk_paths(Path(job["work"]), chunk.index)
    opts = Options(**job["options"])
    progress = throttled(lambda done, _total: report(("progress", chunk.index, done)), 0.2)
    run = Run(
        Path(job["src"]),
        opts,
        notice=lambda m: report(("notice", chunk.index, m)),
        progress=progress,
        span=(chunk.start, chunk.end),
    )
    result = run.write(video, stage_for=job["fmt"], origin=origin)
    frames, first, last_t = _count_chunk(video, origin)
    if frames != result.frames_out:
        raise RuntimeError(f"chunk {chunk.index}: {result.frames_out} pictures encoded, {frames} in the file")
    meta = {
        "key": job["key"],
        "chunk": chunk.to_json(),
        "frames": frames,
        "first": _fs(first),
        "last": _fs(last_t),
        "bytes": video.stat().st_size,
        "sar": _fs(run.plan.geometry.out_sar),
        "result": result.to_json(),
    }
    tmp = side.with_name(f".{side.name}.{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, side)
    report(("progress", chunk.index, frames))
    return meta


# -- the whole run ---------------------------------------------------------------


class _Messages:
    """What the chunks report, passed on to the caller: frames summed over the chunks, each notice once."""

    def __init__(self, done_frames: int, total: int, notice: Notice, progress: Progress | None):
        self.base = done_frames
        self.total = total
        self.running: dict[int, int] = {}
        self.notice = notice
        self.progress = progress
        self._seen: set[str] = set()

    def __call__(self, msg: tuple) -> None:
        kind, index, body = msg
        if kind == "progress":
            self.running[index] = int(body)
            if self.progress:
                self.progress(self.base + sum(self.running.values()), self.total)
        elif kind == "notice" and body not in self._seen:
            self._seen.add(body)
            self.notice(body)


def _run_chunks(jobs: list[dict], workers: int, device: str, messages: _Messages) -> dict[int, dict]:
    """Run the unfinished chunks, in this process with one worker, else in a worker
    pool; returns their sidecars by chunk index. A chunk that fails stops the run."""
    metas: dict[int, dict] = {}
    workers = min(workers, len(jobs))
    if workers <= 1:
        for job in jobs:
            metas[job["chunk"]["index"]] = run_chunk(job, messages)
        return metas
    pool = Pool(run_chunk, workers, device=device, name="vhsup-chunk")
    try:
        for event in pool.run((job["chunk"]["index"], job) for job in jobs):
            if event.kind == "message":
                messages(event.body)
            elif event.kind == "done":
                metas[cast(int, event.key)] = event.body
            elif event.kind == "failed":
                failure = event.body
                if failure.kind == "VhsupError":
                    raise VhsupError(failure.text, failure.path)
                raise RuntimeError(f"chunk {event.key} failed: {failure.kind}: {failure.text}\n{failure.trace}")
            elif event.kind == "died":
                where = f" while chunk {event.key} was running" if event.key is not None else ""
                raise RuntimeError(f"a chunk worker stopped (exit {event.body}){where}")
    finally:
        pool.stop()  # on an interrupt or a failure: the chunks in hand are aborted, their partial files removed
    if len(metas) != len(jobs):
        raise RuntimeError(f"{len(jobs) - len(metas)} chunks were not run")
    return metas


def _check_accounting(plan: ChunkPlan, metas: dict[int, dict], notice: Notice) -> None:
    """Every chunk holds exactly its pictures; together, all of them once.

    A chunk short of pictures is only accepted where the unchunked run
    would be short too: where the decoder reported broken frames.
    """
    prev_last: Fraction | None = None
    for chunk in plan.chunks:
        meta = metas[chunk.index]
        first, last = Fraction(meta["first"]), Fraction(meta["last"])
        if chunk.start is not None and first < chunk.start or chunk.end is not None and last >= chunk.end:
            raise RuntimeError(f"chunk {chunk.index} holds pictures outside its range")
        if prev_last is not None and first <= prev_last:
            raise RuntimeError(f"chunks {chunk.index - 1} and {chunk.index} overlap")
        if chunk.frames >= 0 and meta["frames"] != chunk.frames:
            short = chunk.frames - meta["frames"]
            errors = meta["result"].get("decode_errors", 0)
            if not errors:
                raise RuntimeError(
                    f"chunk {chunk.index} has {meta['frames']} pictures where the source has {chunk.frames}"
                )
            notice(f"{short} of {chunk.frames} pictures of chunk {chunk.index} are missing ({errors} decode errors)")
        prev_last = last
    for a, b in zip(plan.chunks, plan.chunks[1:]):
        if a.end != b.start:
            raise RuntimeError(f"chunks {a.index} and {b.index} do not abut")


def _join(
    src: Path,
    dst: Path,
    work: Path,
    plan: ChunkPlan,
    metas: dict[int, dict],
    opts: Options,
    info: VideoInfo,
    notice: Notice,
):
    """Copy the chunks' packets into ``dst`` and mux the source's other streams
    once over the whole span. Returns the encoder's report."""
    from vhsup.media.colour import output_colour, source_colour
    from vhsup.media.encode import EncodeSettings, VideoEncoder, remove_own_temp_files

    first = metas[plan.chunks[0].index]["result"]
    width, height = int(first["width"]), int(first["height"])
    sar = Fraction(metas[plan.chunks[0].index]["sar"])
    rate = Fraction(first["output_rate"])
    colour = output_colour(source_colour(info.height, info.colorspace, info.color_range), height)
    settings = EncodeSettings(codec=opts.codec, crf=opts.crf, preset=opts.preset, pix_fmt=opts.pix_fmt)
    head = av.open(str(_chunk_paths(work, 0)[0]))
    encoder = None
    try:
        template = head.streams.video[0]
        extradata = bytes(template.codec_context.extradata or b"")
        encoder = VideoEncoder(
            dst,
            src=src,
            width=width,
            height=height,
            rate=rate,
            sar=sar,
            colour=colour,
            settings=settings,
            time_range=(Fraction(metas[plan.chunks[0].index]["first"]), plan.end),
            origin=plan.origin,
            overwrite=opts.overwrite,
            notice=notice,
            template=template,
        )
        last_dts: int | None = None
        copied = 0
        for chunk in plan.chunks:
            path = _chunk_paths(work, chunk.index)[0]
            with av.open(str(path)) as c:
                st = c.streams.video[0]
                if bytes(st.codec_context.extradata or b"") != extradata:
                    raise RuntimeError(f"chunk {chunk.index} was encoded with other codec headers; cannot join it")
                assert st.time_base is not None  # a demuxed stream always has one
                tb = Fraction(st.time_base)
                step = max(1, round(1 / (rate * tb)))
                pending: list[av.Packet] = []
                n = 0
                for pkt in c.demux(st):
                    if not pkt.size:
                        continue
                    n += 1
                    if not pkt.duration:
                        pkt.duration = step  # NUT leaves it out; the last frame's length comes from it
                    if pkt.dts is None:
                        # NUT stores no dts for the first packets of a stream
                        # with reordering (B-frames): rebuild them backwards
                        # from the first known one, one frame apart, as the
                        # encoder made them.
                        pending.append(pkt)
                        continue
                    if pending:
                        for back, p in enumerate(reversed(pending), start=1):
                            p.dts = min(p.pts, pkt.dts - back * step)
                        for p in pending:
                            last_dts = _put(encoder, p, plan.origin, last_dts)
                        pending.clear()
                    last_dts = _put(encoder, pkt, plan.origin, last_dts)
                for p in pending:  # a stream too short to reveal any dts
                    p.dts = p.pts
                    last_dts = _put(encoder, p, plan.origin, last_dts)
            if n != metas[chunk.index]["frames"]:
                raise RuntimeError(
                    f"chunk {chunk.index}: sidecar says {metas[chunk.index]['frames']} pictures, the file holds {n}"
                )
            copied += n
        expected = sum(metas[c.index]["frames"] for c in plan.chunks)
        if copied != expected:
            raise RuntimeError(f"joined {copied} pictures where the chunks hold {expected}")
        report = encoder.close()
        encoder = None
        return report
    finally:
        if encoder is not None:
            encoder.abort()
        remove_own_temp_files(dst)  # an interrupt as the encoder was made; nothing after a close
        head.close()


def _put(encoder, pkt: av.Packet, origin: Fraction, last_dts: int | None) -> int:
    tb = Fraction(pkt.time_base)
    assert pkt.dts is not None and pkt.pts is not None  # the join fills in every missing dts first
    if last_dts is not None and pkt.dts <= last_dts:
        pkt.dts = last_dts + 1  # muxers need strictly increasing dts across the seams
    t = origin + pkt.pts * tb
    encoder.copy_packet(pkt, t)
    return pkt.dts


def upscale_chunked(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    workers: int,
    chunk_seconds: float | None = None,
    notice: Notice | None = None,
    progress: Progress | None = None,
    **options: object,
) -> Result:
    """Upscale ``src`` into ``dst`` in chunks run by ``workers`` processes.

    The video is cut at keyframes into ``workers`` chunks (or chunks of about
    ``chunk_seconds``), each upscaled in a spawned process (one GPU each
    where there are several) and encoded with the final settings; the
    chunks are joined without re-encoding and the source's audio and
    subtitles muxed once. Interrupted runs resume from the finished chunks.
    Options and the returned Result are those of ``upscale_video``.
    """
    t0 = time.perf_counter()
    if workers < 1:
        raise VhsupError("--workers must be at least 1")
    opts = Options.from_kwargs(**options)
    src_path = Path(src)
    open_input(src_path).close()
    dst_path = Path(dst) if dst is not None else default_output(src_path, model_name(opts))
    check_outputs(src_path, dst_path, opts)
    from vhsup.media.encode import container_format

    fmt = container_format(dst_path)
    notices: list[str] = []

    def say(message: str) -> None:
        if message not in notices:
            notices.append(message)
            if notice:
                notice(message)

    info = probe(src_path)
    crop = opts.crop if isinstance(opts.crop, Crop) else parse_crop(opts.crop)
    if crop == "auto":
        # Decided once for the whole video, not once per chunk.
        crop = auto_crop(src_path, info)
    opts = replace(restore_preset.resolve(opts, info), crop=crop or None)
    if (opts.chroma_shift or "").strip().lower() == "auto":  # measured once for the whole video too
        shift = plan_shift("auto", src_path, info)
        opts = replace(opts, chroma_shift=f"{shift.x},{shift.y}")
    key = _settings_key(src_path, replace(opts, crop=str(crop) if crop else None), fmt)

    work = work_dir(dst_path)
    plan: ChunkPlan | None = None
    try:
        saved = json.loads((work / _PLAN_FILE).read_text())
        if saved.get("key") == key and saved.get("version") == _FORMAT_VERSION:
            plan = ChunkPlan.from_json(saved)  # same cut as before, whatever the worker count now
    except (OSError, ValueError, KeyError):
        plan = None
    if plan is None:
        if work.exists():
            shutil.rmtree(work)
        plan = plan_chunks(src_path, opts, pieces=workers, chunk_seconds=chunk_seconds, info=info, key=key, notice=say)
        try:
            work.mkdir()
            (work / _PLAN_FILE).write_text(json.dumps(plan.to_json(), indent=1))
        except OSError as exc:
            raise VhsupError(f"cannot create the chunk folder: {exc.strerror or exc}", work) from exc

    metas: dict[int, dict] = {}
    for chunk in plan.chunks:
        meta = _read_sidecar(work, chunk, key)
        if meta is not None:
            metas[chunk.index] = meta
    if metas:
        say(f"{dst_path}: resuming; {len(metas)} of {len(plan.chunks)} chunks were already done")

    middle = plan.chunks[len(plan.chunks) // 2].index
    limit = opts.frames
    jobs = []
    for chunk in plan.chunks:
        if chunk.index in metas:
            continue
        chunk_opts = replace(
            opts,
            start=None,
            duration=None,
            frames=limit,
            overwrite=True,
            compare=opts.compare if chunk.index == middle else None,
        )
        jobs.append(
            {
                "src": str(src_path),
                "work": str(work),
                "fmt": fmt,
                "key": key,
                "origin": _fs(plan.origin),
                "chunk": chunk.to_json(),
                "options": {**asdict(chunk_opts), "crop": str(crop) if crop else None},
            }
        )

    messages = _Messages(sum(m["frames"] for m in metas.values()), plan.estimate, say, progress)
    try:
        metas.update(_run_chunks(jobs, workers, opts.device, messages))
    except (KeyboardInterrupt, Interrupted):
        kept = sum(1 for c in plan.chunks if _read_sidecar(work, c, key) is not None)
        raise Interrupted(
            f"interrupted; nothing was written to {dst_path}; {kept} of {len(plan.chunks)} chunks are kept in "
            f"{work.name} and a rerun resumes from them"
        ) from None

    _check_accounting(plan, metas, say)
    report = _join(src_path, dst_path, work, plan, metas, opts, info, say)
    shutil.rmtree(work, ignore_errors=True)

    results = [metas[c.index]["result"] for c in plan.chunks]
    for r in results:
        for text in r.get("notices", []):
            say(text)
    return Result.written(
        results[0],
        input=str(src_path),
        output=str(dst_path),
        frames_in=plan.frames_in,
        frames_out=sum(metas[c.index]["frames"] for c in plan.chunks),
        decode_errors=sum(r["decode_errors"] for r in results),
        seconds=time.perf_counter() - t0,
        report=report,
        notices=notices,
        compare=next((r["compare"] for r in results if r.get("compare")), None),
    )
