"""Videos -> a folder of training frames: diverse, progressive, square-pixel 8-bit RGB PNGs.

Two passes keep a 45-minute tape cheap and memory flat:

1. **Scan.** Decode at reduced resolution (MPEG-2, DV and MJPEG decoders
   skip most of the IDCT work with ``lowres``), and skip B-frames where
   candidates are sparser than reference frames anyway; keep, for up to
   six candidate frames a second, only numbers: the time, a 64-bit
   DCT hash, a scene-change score (how much the picture differs from the
   previous candidate) and whether it is black or flat. No deinterlacing:
   the fields of one frame average out in a 64x48 grey thumbnail.
2. **Write.** Choose frames (below), then decode just those times through
   the same media path ``vhsup upscale`` uses (seek, deinterlace or inverse
   telecine, crop, the source's colour matrix), resample the width so the
   pixels are square, and write each PNG atomically.

Choosing: each source gets a share of ``count`` in proportion to its
duration (or one frame per ``every`` seconds). Its duration is cut into
that many equal slots; each slot takes its candidate with the largest
scene-change score, i.e. the first picture of a new shot, so the frames are
spread over the whole tape and favour new scenes. A candidate is refused if
it is black or flat, if it is closer than ``min_gap`` seconds to a frame
already chosen from the same source, or if its hash is within
``DUPLICATE_DISTANCE`` bits of any frame already kept (in this run or
already in the folder), and the slot then tries its next best candidate.
Slots that end up empty are made up for by further rounds over all slots,
so a static stretch gives its share to busier parts of the tape.

The folder gets ``NNNNNN.png`` files and ``manifest.jsonl`` (MANIFEST_NAME),
one JSON object per frame, in writing order::

    {"frame": "000001.png", "source": "/abs/ep1.vob", "time": 12.346,
     "source_time": 12.879, "width": 640, "height": 480, "hash": "c3a1...",
     "deinterlace": "bwdif tff, frame rate -> 29.970p", "crop": "0,0,0,0",
     "sar": "8:9", "square_pixels": true}

``time`` is seconds from the start of the video stream; ``source_time`` is
the same instant on the container's own clock (DVD program streams start
theirs at a few tenths of a second). With ``--ivtc`` both are on the
23.976p clock of the inverse-telecined video. ``hash`` is the scan hash
used for de-duplication, so a later ``--append`` run can skip frames that
are already there without reading the PNGs back.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from vhsup.atomic import replacing
from vhsup.errors import Interrupted, VhsupError
from vhsup.media.colour import source_colour
from vhsup.media.decode import DecodeStats, decode_from, open_input, video_frames
from vhsup.media.filters import frame_time, progressive_frames, to_rgb
from vhsup.media.geometry import Crop, fit
from vhsup.media.probe import VideoInfo, probe
from vhsup.options import Options
from vhsup.pipeline import Plan, make_plan
from vhsup.stages import Worker
from vhsup.wording import plural

Notice = Callable[[str], None]
# progress(phase, done, total): phase "scan" counts seconds of video scanned, "write" PNGs written.
Progress = Callable[[str, int, int], None]

MANIFEST_NAME = "manifest.jsonl"
FRAME_RE = re.compile(r"^(\d{6,})\.png$")

THUMB_W, THUMB_H = 64, 48  # scene scores and flatness are measured on this grey thumbnail
DUPLICATE_DISTANCE = 10  # hashes this many bits apart or fewer are the same picture
BLACK_P99 = 40.0  # luma 99th percentile at or below this: a black (or nearly black) frame
FLAT_STD = 6.0  # luma standard deviation below this: a flat frame (blue screen, grey, a fade)
CANDIDATES_PER_SECOND = 6  # upper bound on scanned candidates; short clips use every frame
CANDIDATES_PER_PICK = 8  # what the stride aims for, so every slot has alternatives
SCAN_MIN_WIDTH = 160  # the scan's reduced decode never goes narrower than this
RUN_GAP = 3.0  # picks closer than this are decoded in one pass instead of seeking to each
MANIFEST_EVERY = 25  # rewrite the manifest after this many new frames (and at the end)

MEDIA_OPTIONS = ("deinterlace", "field_order", "ivtc", "force_ivtc", "crop", "decode_threads")


@dataclass
class ExtractReport:
    """What ``extract_frames`` did (``vhsup extract --json`` prints it).

    Attributes:
        out: the frames folder.
        manifest: its manifest file.
        frames: PNGs written by this run.
        requested: the count asked for (with ``every``: the number of slots).
        per_source: frames written per source path.
        skipped_flat: scanned candidates that were black or flat (never chosen).
        skipped_duplicate: candidates refused as near-duplicates of a kept frame.
        files: the PNGs written, in order.
        existing: frames already in the folder and kept (``append``).
        notices: what the user was told along the way.
    """

    out: Path
    manifest: Path
    frames: int
    requested: int
    per_source: dict[str, int]
    skipped_flat: int
    skipped_duplicate: int
    files: list[Path] = field(default_factory=list)
    existing: int = 0
    decode_errors: int = 0
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data["out"], data["manifest"] = str(self.out), str(self.manifest)
        data["files"] = [str(f) for f in self.files]
        return data


# --------------------------------------------------------------------------
# Picture measures (pure numpy; tests and the trainer may use them)


def frame_hash(grey: np.ndarray) -> int:
    """64-bit perceptual hash of a grey picture of any size.

    The 8x8 lowest DCT frequencies of a 32x32 reduction, each compared with
    their median: robust to noise, compression and small shifts, and blind
    to brightness offsets, so two frames of the same shot hash alike.
    """
    small = cv2.resize(np.asarray(grey, np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # DC excluded from the median: it is the brightness
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Differing bits between two hashes."""
    return (int(a) ^ int(b)).bit_count()


def flatness(grey: np.ndarray) -> str | None:
    """'black', 'flat' or None for a grey (luma) thumbnail."""
    g = np.asarray(grey, np.float32)
    if float(np.percentile(g, 99)) <= BLACK_P99:
        return "black"
    if float(g.std()) < FLAT_STD:
        return "flat"
    return None


# --------------------------------------------------------------------------
# Pass 1: scan


@dataclass
class _Scan:
    """One source's candidates: parallel arrays, a few dozen bytes each."""

    path: Path
    info: VideoInfo
    plan: Plan
    times: np.ndarray  # float64 seconds on the source clock
    scores: np.ndarray  # float32 scene-change score (mean |thumbnail difference| / 255)
    hashes: np.ndarray  # uint64
    flat: np.ndarray  # bool
    first: float  # first frame's time
    end: float  # last frame's time + one frame
    decode_errors: int = 0

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.first)


def _lowres(width: int) -> int:
    """How many halvings the scan's decoder may apply and stay >= SCAN_MIN_WIDTH wide."""
    k = 0
    while k < 3 and (width >> (k + 1)) >= SCAN_MIN_WIDTH:
        k += 1
    return k


def _thumb(frame: av.VideoFrame, crop: Crop, full_w: int, full_h: int) -> np.ndarray:
    grey = frame.reformat(format="gray", threads=1).to_ndarray()
    if crop:
        sx, sy = frame.width / full_w, frame.height / full_h
        h, w = grey.shape
        t, b = int(crop.top * sy), h - int(crop.bottom * sy)
        lft, r = int(crop.left * sx), w - int(crop.right * sx)
        if b - t >= 4 and r - lft >= 4:
            grey = grey[t:b, lft:r]
    return cv2.resize(grey, (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA).astype(np.float32)


def _scan(path: Path, info: VideoInfo, plan: Plan, stride: int, tick: Callable[[float], None] | None) -> _Scan:
    """Decode ``path`` once at low cost and measure a frame every ``stride`` frame periods.

    ``tick(seconds)`` reports how far into the video the scan is.
    """
    container = open_input(path)
    times: list[float] = []
    scores: list[float] = []
    hashes: list[int] = []
    flat: list[bool] = []
    stats = DecodeStats()
    first: float | None = None
    last: float | None = None
    period = float(1 / info.fps) if info.fps else 1 / 30
    step = (stride - 0.5) * period  # candidates at least this far apart
    try:
        stream = container.streams.video[0]
        level = _lowres(info.width)
        if level:
            # Codecs without lowres support (H.264, FFV1 at some sizes) ignore it.
            stream.codec_context.options = {"lowres": str(level)}
        if stride >= 3:
            # Candidates are sparser than the reference frames anyway: skip
            # decoding B-frames (about 2/3 of a DVD's frames; 2.6x faster).
            stream.codec_context.skip_frame = "NONREF"
        prev: np.ndarray | None = None
        next_report = 0.0
        for frame in video_frames(container, threads=1, stats=stats):
            t = float(frame_time(frame))
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
            if not times or t - times[-1] >= step:
                g = _thumb(frame, plan.geometry.crop, info.width, info.height)
                times.append(t)
                scores.append(0.0 if prev is None else float(np.abs(g - prev).mean()) / 255.0)
                hashes.append(frame_hash(g))
                flat.append(flatness(g) is not None)
                prev = g
            if tick and t - first >= next_report:
                tick(t - first)
                next_report = t - first + 1.0
        if tick and first is not None:
            assert last is not None  # set with first
            tick(last + period - first)
    finally:
        container.close()
    if first is None:
        raise VhsupError(f"no decodable video frames ({stats.errors} decode errors)", path)
    assert last is not None  # set with first
    return _Scan(
        path,
        info,
        plan,
        np.array(times, np.float64),
        np.array(scores, np.float32),
        np.array(hashes, np.uint64),
        np.array(flat, bool),
        first,
        last + period,
        stats.errors,
    )


# --------------------------------------------------------------------------
# Choosing


class _Kept:
    """Hashes of every frame kept so far, for near-duplicate checks."""

    def __init__(self, hashes: list[int]):
        self.values = np.zeros(max(64, len(hashes) * 2), np.uint64)
        self.n = 0
        for h in hashes:
            self.add(h)

    def add(self, h: int) -> None:
        if self.n == len(self.values):
            self.values = np.concatenate([self.values, np.zeros_like(self.values)])
        self.values[self.n] = np.uint64(h)
        self.n += 1

    def near(self, h: int) -> bool:
        if not self.n:
            return False
        d = np.bitwise_count(self.values[: self.n] ^ np.uint64(h))
        return bool(d.min() <= DUPLICATE_DISTANCE)


@dataclass
class _Slot:
    source: int
    position: float  # centre of the slot as a fraction of its source: interleaves sources
    order: np.ndarray  # candidate indices, best first
    next: int = 0


def _shares(durations: list[float], count: int) -> list[int]:
    """Split ``count`` in proportion to ``durations`` (largest remainders)."""
    total = sum(durations)
    if total <= 0:
        raw = [count / len(durations)] * len(durations)
    else:
        raw = [count * d / total for d in durations]
    shares = [int(math.floor(r)) for r in raw]
    rest = count - sum(shares)
    for i in sorted(range(len(raw)), key=lambda i: (shares[i] - raw[i], i))[:rest]:
        shares[i] += 1
    return shares


def _choose(
    scans: list[_Scan], slots_per_source: list[int], *, min_gap: float, kept: _Kept, target: int, refill: bool
) -> tuple[list[list[int]], int]:
    """Candidate indices chosen per source (time order) and the duplicates refused."""
    slots: list[_Slot] = []
    for s, (scan, n) in enumerate(zip(scans, slots_per_source)):
        if n <= 0 or not len(scan.times):
            continue
        span = max(scan.duration, 1e-9)
        which = np.clip(((scan.times - scan.first) / span * n).astype(np.int64), 0, n - 1)
        for k in range(n):
            idx = np.nonzero((which == k) & ~scan.flat)[0]
            # Best scene-change score first; among equals, the earlier frame.
            order = idx[np.lexsort((scan.times[idx], -scan.scores[idx]))]
            slots.append(_Slot(s, (k + 0.5) / n, order))
    slots.sort(key=lambda sl: (sl.position, sl.source))
    picks: list[list[int]] = [[] for _ in scans]
    pick_times: list[list[float]] = [[] for _ in scans]
    duplicates = 0
    total = 0

    def take(slot: _Slot) -> bool:
        nonlocal duplicates, total
        scan, times = scans[slot.source], pick_times[slot.source]
        while slot.next < len(slot.order):
            i = int(slot.order[slot.next])
            slot.next += 1
            t = float(scan.times[i])
            j = bisect.bisect_left(times, t)
            if (j > 0 and t - times[j - 1] < min_gap) or (j < len(times) and times[j] - t < min_gap):
                continue
            h = int(scan.hashes[i])
            if kept.near(h):
                duplicates += 1
                continue
            kept.add(h)
            times.insert(j, t)
            picks[slot.source].insert(j, i)
            total += 1
            return True
        return False

    for slot in slots:
        if total >= target:
            break
        take(slot)
    while refill and total < target:
        progressed = False
        for slot in slots:
            if total >= target:
                break
            progressed |= take(slot)
        if not progressed:
            break
    return picks, duplicates


# --------------------------------------------------------------------------
# The folder: manifest, numbering, refusal to overwrite


def read_manifest(out: str | os.PathLike[str]) -> list[dict]:
    """The entries of a frames folder's manifest (empty when there is none).

    A line that is not a JSON object (a hand edit, a hard crash mid-write of
    an older tool) is skipped rather than making the folder unusable.
    """
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        return []
    entries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise VhsupError(f"cannot read the manifest ({exc.strerror or exc})", path) from None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("frame"), str):
            entries.append(entry)
    return entries


def _write_manifest(out: Path, entries: list[dict]) -> Path:
    path = out / MANIFEST_NAME
    with replacing(path, "manifest") as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for e in entries:
                fh.write(json.dumps(e, separators=(", ", ": ")) + "\n")
    return path


def _numbered(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if FRAME_RE.match(p.name) and p.is_file())


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with replacing(path, "frame") as tmp:
        ok = cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise VhsupError("cannot write the frame (PNG encoder failed)", path)


# --------------------------------------------------------------------------
# Pass 2: decode the chosen times through the full media path


def _square_size(plan: Plan, keep_sar: bool) -> tuple[int, int]:
    """Cropped size, with the width resampled to the display aspect (height never resampled)."""
    g = plan.geometry
    if keep_sar:
        return g.in_w, g.in_h
    return max(1, int(round(g.in_w * g.sar))), g.in_h


def _runs(times: list[float]) -> list[list[float]]:
    """Group sorted times so that neighbours closer than RUN_GAP share one decode."""
    runs: list[list[float]] = []
    for t in times:
        if runs and t - runs[-1][-1] < RUN_GAP:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _render(scan: _Scan, times: list[float], threads: int):
    """Yield (wanted time, picture time, rgb) for each wanted time that decodes.

    A pick is served by the first progressive frame at or after it (less
    half a frame): deinterlacing keeps frame times, inverse telecine drops
    one frame in five and may move the pick to its neighbour.
    """
    info, plan = scan.info, scan.plan
    colour = source_colour(info.height, info.colorspace, info.color_range)
    tol = 0.5 / float(plan.filters.rate or info.fps or 30)
    for run in _runs(times):
        # A fresh container per run: a codec's threading is fixed once it is
        # open, and the decoder sets it each time it starts.
        container = open_input(scan.path)
        frames = prog = None
        try:
            stream = container.streams.video[0]
            start = Fraction(run[0]).limit_denominator(1_000_000)
            frames = decode_from(container, start, threads=threads)
            prog = progressive_frames(frames, stream, plan.filters)
            pending = list(run)
            for frame in prog:
                t = float(frame_time(frame))
                if t < pending[0] - tol:
                    continue
                wanted = pending.pop(0)
                while pending and pending[0] - tol <= t:
                    pending.pop(0)  # two picks landed on one frame: the frame is written once
                yield wanted, t, to_rgb(frame, colour, plan.geometry.crop)
                if not pending:
                    break
        finally:
            for gen in (prog, frames):
                if isinstance(gen, Generator):  # both are generators (progressive_frames is annotated Iterator)
                    gen.close()
            container.close()


class _Writer:
    """Writes chosen pictures as numbered PNGs and keeps the manifest in step.

    A manifest entry is added only after its PNG is in place, and the
    manifest is rewritten (atomically) every MANIFEST_EVERY frames and at
    the end, so an interrupted run leaves a folder that ``--append`` can
    continue.
    """

    def __init__(
        self, out: Path, entries: list[dict], number: int, keep_sar: bool, progress: Progress | None, total: int
    ):
        self.out, self.entries, self.number, self.keep_sar = out, entries, number, keep_sar
        self.progress, self.total = progress, total
        self.files: list[Path] = []
        self.per_source: dict[str, int] = {}
        self.saved = len(entries)

    def write(self, item: tuple[_Scan, int, float, np.ndarray]) -> None:
        scan, phash, t, rgb = item
        w, h = _square_size(scan.plan, self.keep_sar)
        if (rgb.shape[1], rgb.shape[0]) != (w, h):
            rgb = fit(rgb, w, h)
        name = f"{self.number:06d}.png"
        _write_png(self.out / name, rgb)
        self.number += 1
        self.files.append(self.out / name)
        key = str(scan.path)
        self.per_source[key] = self.per_source.get(key, 0) + 1
        g = scan.plan.geometry
        self.entries.append(
            {
                "frame": name,
                "source": str(scan.path.resolve()),
                "time": round(t - scan.info.start_time, 6),
                "source_time": round(t, 6),
                "width": w,
                "height": h,
                "hash": f"{phash:016x}",
                "deinterlace": scan.plan.filters.describe(),
                "crop": str(g.crop),
                "sar": f"{g.sar.numerator}:{g.sar.denominator}",
                "square_pixels": not self.keep_sar or g.sar == 1,
            }
        )
        if self.progress:
            self.progress("write", len(self.files), self.total)
        if len(self.entries) - self.saved >= MANIFEST_EVERY:
            self.save()

    def save(self) -> Path:
        path = _write_manifest(self.out, self.entries)
        self.saved = len(self.entries)
        return path


# --------------------------------------------------------------------------
# The API


def _stride(info: VideoInfo, wanted: float) -> int:
    fps = float(info.fps or 30)
    frames = info.frames or int((info.duration or 0) * fps)
    cap = max(1, int(round(fps / CANDIDATES_PER_SECOND)))
    if wanted <= 0 or frames <= 0:
        return cap
    return max(1, min(cap, int(frames // (CANDIDATES_PER_PICK * wanted))))


def extract_frames(
    sources: list[Path],
    out: Path,
    *,
    count: int | None = None,
    every: float | None = None,
    min_gap: float = 0.5,
    keep_sar: bool = False,
    append: bool = False,
    overwrite: bool = False,
    notice: Notice | None = None,
    progress: Progress | None = None,
    **media_options: object,
) -> ExtractReport:
    """Write diverse training frames from ``sources`` into the folder ``out``.

    Args:
        count: frames to write in all, shared by the sources in proportion
            to their durations (default 1000 when ``every`` is not given).
        every: instead of a count, one frame per this many seconds of each source.
        min_gap: never two frames from one source closer than this (seconds).
        keep_sar: keep the source's pixel shape instead of resampling the
            width to square pixels.
        append: the folder already has frames: number on after them and
            skip near-duplicates of them.
        overwrite: the folder already has frames: delete them (the PNGs
            its manifest lists and any NNNNNN.png) and start again.
        notice: called with one-line messages for the user.
        progress: ``progress(phase, done, total)``: "scan" in seconds of video, "write" in frames.
        media_options: ``deinterlace`` (auto/on/off), ``field_order`` (auto/tff/bff),
            ``ivtc``, ``force_ivtc``, ``crop``
            (None, 'auto' or 'L,T,R,B') and ``decode_threads``, as for ``vhsup upscale``.

    Raises:
        VhsupError: a bad option, an unreadable input (nothing is written),
            a folder that already holds frames without ``append``/``overwrite``.
    """
    t_start = time.perf_counter()
    unknown = sorted(set(media_options) - set(MEDIA_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    notices: list[str] = []

    def tell(msg: str) -> None:
        notices.append(msg)
        if notice:
            notice(msg)

    if count is not None and every is not None:
        raise VhsupError("give --count or --every, not both")
    if every is None and count is None:
        count = 1000
    if count is not None and count < 1:
        raise VhsupError("--count must be at least 1")
    if every is not None and not every > 0:
        raise VhsupError("--every must be a positive number of seconds")
    if min_gap < 0:
        raise VhsupError("--min-gap must not be negative")
    if append and overwrite:
        raise VhsupError("give --append or --overwrite, not both")
    if not sources:
        raise VhsupError("no input files")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VhsupError("is a file, not a folder for frames", out)

    # The folder's state is checked before any decoding: a refusal is instant.
    old_entries = read_manifest(out)
    old_files = _numbered(out)
    existing = len({e["frame"] for e in old_entries} | {p.name for p in old_files})
    if existing and not (append or overwrite):
        raise VhsupError(
            f"already holds {existing} extracted frames; pass --append to add more "
            "(near-duplicates of them are skipped) or --overwrite to replace them",
            out,
        )

    # Every input is opened and probed before anything is written. Among
    # several, one that cannot be read is skipped with a notice (as batch
    # does); a single unreadable input is an error.
    opts = Options.from_kwargs(**{k: v for k, v in media_options.items() if k in MEDIA_OPTIONS})
    paths: list[Path] = []
    infos: list[VideoInfo] = []
    plans: list[Plan] = []
    seen: set[Path] = set()
    for src in sources:
        p = Path(src)
        key = p.resolve()
        if key in seen:
            tell(f"{p}: given twice; extracting from it once")
            continue
        seen.add(key)
        try:
            open_input(p).close()
            info = probe(p)
            plan = make_plan(p, opts, scale=1, model="extract", info=info)
        except VhsupError as exc:
            if len(sources) == 1:
                raise
            tell(f"{exc.path or p}: skipped: {exc.reason}")
            continue
        paths.append(p)
        infos.append(info)
        plans.append(plan)
    if not paths:
        raise VhsupError(f"none of the {plural(len(seen), 'input')} can be read (see the notices above)")
    for p, plan in zip(paths, plans):
        for message in plan.notices:
            tell(message)
        if plan.crop_source == "auto":
            tell(f"{p}: crop {plan.geometry.crop} (auto)")

    # Pass 1.
    est = [i.duration or (i.frames / float(i.fps) if i.fps else 0.0) for i in infos]
    if every is not None:
        wanted = [d / every for d in est]
    else:
        assert count is not None  # 1000 when neither was given
        wanted = [count * d / sum(est) if sum(est) > 0 else count / len(est) for d in est]
    total_seconds = max(1, int(round(sum(est))))
    done = {"before": 0.0}

    def tick(seconds: float) -> None:
        if progress:
            now = int(done["before"] + seconds)
            progress("scan", now, max(total_seconds, now))

    scans = []
    for p, info, plan, w in zip(paths, infos, plans, wanted):
        scans.append(_scan(p, info, plan, _stride(info, w), tick))
        done["before"] += scans[-1].duration
    if progress:
        progress("scan", max(total_seconds, int(done["before"])), max(total_seconds, int(done["before"])))
    decode_errors = sum(s.decode_errors for s in scans)
    for s in scans:
        if s.decode_errors:
            tell(f"{s.path}: {plural(s.decode_errors, 'decode error')} while scanning")
    skipped_flat = int(sum(int(s.flat.sum()) for s in scans))
    if all(s.flat.all() for s in scans):
        where = scans[0].path if len(scans) == 1 else None
        raise VhsupError("nothing to extract: every sampled picture is black or flat", where)

    # Choose.
    if every is not None:
        slots = [max(1, int(round(s.duration / every))) for s in scans]
        target, refill = sum(slots), False
    else:
        assert count is not None  # 1000 when neither was given
        slots = _shares([s.duration for s in scans], count)
        target, refill = count, True
    keep = [e for e in old_entries if (out / e["frame"]).exists()] if append else []
    kept = _Kept([int(e["hash"], 16) for e in keep if isinstance(e.get("hash"), str)])
    picks, skipped_duplicate = _choose(scans, slots, min_gap=min_gap, kept=kept, target=target, refill=refill)
    chosen = sum(len(p) for p in picks)

    # The point of no return: clear an old set only now that the inputs have proved readable.
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in {e["frame"] for e in old_entries} | {p.name for p in old_files}:
            victim = out / name
            if FRAME_RE.match(victim.name) and victim.is_file():
                victim.unlink()
        old_files = []
    number = 1 + max(
        [int(m.group(1)) for p in old_files if (m := FRAME_RE.match(p.name))]
        + [int(m.group(1)) for e in keep if (m := FRAME_RE.match(e["frame"]))]
        + [0]
    )

    # Pass 2: this thread decodes; a writer thread resamples and encodes PNGs
    # (cv2 releases the GIL), so the two overlap.
    writer = _Writer(out, list(keep), number, keep_sar, progress, chosen)
    threads = int(opts.decode_threads or 0)
    worker = Worker(writer.write, maxsize=4, name="png")
    try:
        for scan, idx in zip(scans, picks):
            writer.per_source[str(scan.path)] = 0
            if not idx:
                continue
            by_time = {float(scan.times[i]): i for i in idx}
            served = 0
            for wanted_t, t, rgb in _render(scan, sorted(by_time), threads):
                worker.submit((scan, int(scan.hashes[by_time[wanted_t]]), t, rgb))
                served += 1
            if served < len(idx):
                tell(f"{scan.path}: {len(idx) - served} chosen frames could not be decoded")
        worker.finish()
    except BaseException as exc:
        worker.cancel()
        writer.save()  # the frames already written stay listed and usable
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(
                f"interrupted; the {plural(len(writer.files), 'frame')} written are listed in {out / MANIFEST_NAME}"
            ) from None
        raise
    manifest = writer.save()
    files, per_source = writer.files, writer.per_source
    if len(files) < target:
        why = []
        if skipped_duplicate:
            why.append(plural(skipped_duplicate, "near-duplicate"))
        if skipped_flat:
            why.append(plural(skipped_flat, "black or flat candidate"))
        tell(
            f"wrote {len(files)} of {plural(target, 'frame')}: the sources have too few distinct pictures"
            + (f" ({', '.join(why)} skipped)" if why else "")
        )
    return ExtractReport(
        out=out,
        manifest=manifest,
        frames=len(files),
        requested=target,
        per_source=per_source,
        skipped_flat=skipped_flat,
        skipped_duplicate=skipped_duplicate,
        files=files,
        existing=len(keep),
        decode_errors=decode_errors,
        seconds=round(time.perf_counter() - t_start, 3),
        notices=notices,
    )
