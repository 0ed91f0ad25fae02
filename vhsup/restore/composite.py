"""Composite-video artefacts removed before deinterlacing (``--dedot``, ``--derainbow``).

A composite signal carries the colour on a subcarrier inside the luma's
band, and a comb filter that separates them imperfectly leaves two
artefacts, each the other's mirror:

* dot crawl (cross-luminance): chroma read as luma, a fine chequer that
  crawls along colour edges. Its phase flips every frame, so on a still
  part of the picture frame n matches n-2 and n+2 but not n-1 and n+1.
  ``--dedot`` runs Dedot (``vapoursynth-dedot``) and keeps its luma only.
* rainbows (cross-colour): luma detail read as chroma, false colour
  shimmering over fine stripes and text, likewise flipping every frame.
  ``--derainbow`` runs Bifrost (``vapoursynth-bifrost``), which averages
  the chroma over neighbouring frames where the luma stays still.

Both compare frames, leave moving parts alone, and work on the picture as
captured: they run on the decoded frames, before any deinterlacer or
inverse telecine (QTGMC, VIVTC, bwdif, fieldmatch) and before the chroma
move and the denoise; Bifrost is told whether the picture is interlaced
(the probed field order). There is no FFmpeg fallback: without the
``restore`` extra or the flag's plugin the flag fails in one line naming
the install. Each plugin is checked on its own (not in
:data:`vhsup.restore.vs.PLUGINS`), so a missing one only stops its flag.

Frames, timestamps and size are kept. What comes out is the bridge's
pixel format (4:1:1 DV comes back 4:2:2), with each frame's interlaced
flag set again as the plan's field order says (:func:`composite_frames`),
so FFmpeg's field filters read the frames as they read decoded ones.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av

from vhsup.errors import VhsupError
from vhsup.restore import vs as bridge

if TYPE_CHECKING:
    import vapoursynth as vs

    from vhsup.media.filters import FilterPlan
    from vhsup.media.probe import VideoInfo

INSTALL = bridge.INSTALL
#: flag -> (VapourSynth namespace, the package that ships it).
PLUGINS = {"dedot": ("dedot", "vapoursynth-dedot"), "derainbow": ("bifrost", "vapoursynth-bifrost")}
#: flag -> (source frames before, source frames after) that its filter reads for frame n (measured: Dedot
#: reads n-2..n+2, Bifrost n-2..n+3).
REACH = {"dedot": (2, 2), "derainbow": (2, 3)}
#: Dedot's thresholds: its own defaults (luma spatial, luma temporal); its chroma pass is not used.
_DEDOT = {"luma_2d": 20, "luma_t": 20}


@dataclass(frozen=True)
class Composite:
    """The composite-artefact filters a run does, and the field order they see.

    Attributes:
        dedot: Dedot's luma pass (dot crawl).
        derainbow: Bifrost (rainbows).
        fields: 'tff' or 'bff' where the picture is interlaced, else 'progressive'.
    """

    dedot: bool = False
    derainbow: bool = False
    fields: str = "progressive"

    @property
    def on(self) -> bool:
        return self.dedot or self.derainbow

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name in ("dedot", "derainbow") if getattr(self, name))

    @property
    def back(self) -> int:
        """Source frames before frame n that its output reads (the filters chained: their reaches add)."""
        return sum(REACH[name][0] for name in self.names)

    @property
    def ahead(self) -> int:
        """Source frames after frame n that its output reads."""
        return sum(REACH[name][1] for name in self.names)

    def describe(self) -> str:
        """What probe prints: each filter and what it sees."""
        if not self.on:
            return "off"
        what = {"dedot": "dedot (Dedot, luma: dot crawl)", "derainbow": "derainbow (Bifrost, chroma: rainbows)"}
        seen = f"interlaced {self.fields.upper()}" if self.fields != "progressive" else "progressive"
        return (
            f"{' + '.join(what[n] for n in self.names)}, on the decoded frames ({seen}) before deinterlacing, "
            f"{self.back} frame(s) back and {self.ahead} ahead"
        )

    def label(self) -> str:
        """Short form for ``--json``: 'off', 'dedot', 'derainbow' or 'dedot+derainbow'."""
        return "+".join(self.names) or "off"

    def to_json(self) -> dict:
        return {
            "dedot": self.dedot,
            "derainbow": self.derainbow,
            "fields": self.fields,
            "reach": [self.back, self.ahead],
        }


def unusable(flag: str) -> str | None:
    """Why ``--<flag>`` ('dedot', 'derainbow') cannot run here (one line naming the install), or None."""
    return _check(flag)


@functools.cache
def _check(flag: str) -> str | None:
    namespace, package = PLUGINS[flag]
    why = bridge.check_plugins({namespace: package})
    if why is not None:
        return why
    import vapoursynth as vs

    # It loads; run it once on a small grey clip (a plugin can load and still fail).
    try:
        clip = vs.core.std.BlankClip(width=64, height=64, format=vs.YUV420P8, length=8, color=[128, 128, 128])
        plan = Composite(dedot=flag == "dedot", derainbow=flag == "derainbow", fields="tff")
        chain(plan)(vs.core.std.SetFieldBased(clip, 2)).get_frame(4)
    except Exception as exc:
        return (
            f"the restore extra is installed but its {package} does not run ({bridge._first_line(exc)}); "
            f"reinstall it with {INSTALL}"
        )
    return None


def plan_composite(dedot: bool, derainbow: bool, info: VideoInfo, filters: FilterPlan) -> Composite:
    """The composite filters ``--dedot``/``--derainbow`` give on ``info``; a VhsupError where one cannot run.

    The field order is the one the field plan uses, where the picture is
    interlaced (the probe says so, or the plan deinterlaces or undoes
    telecine); progressive otherwise.
    """
    if not (dedot or derainbow):
        return Composite()
    for flag, asked in (("dedot", dedot), ("derainbow", derainbow)):
        if not asked:
            continue
        why = unusable(flag)
        if why is not None:
            raise VhsupError(f"--{flag} needs VapourSynth's {PLUGINS[flag][1]} (no FFmpeg filter does it): {why}")
    if info.width % 2 or info.height % 4:
        raise VhsupError(
            f"--dedot and --derainbow need an even width and a height divisible by 4, not {info.width}x{info.height}",
            info.path,
        )
    interlaced = info.interlace.interlaced or filters.deinterlace or filters.ivtc
    return Composite(dedot, derainbow, filters.parity if interlaced else "progressive")


def _dedot(clip: vs.VideoNode) -> vs.VideoNode:
    """Dedot's luma pass on ``clip``; above 8 bits, on an 8-bit copy, its change added back at full depth."""
    import vapoursynth as vs

    core = vs.core
    depth = clip.format.bits_per_sample
    if depth == 8:
        cleaned = core.dedot.Dedot(clip, chroma_t1=0, chroma_t2=255, **_DEDOT)
        return core.std.ShufflePlanes([cleaned, clip], [0, 1, 2], vs.YUV)
    eight = core.resize.Point(clip, format=clip.format.replace(bits_per_sample=8).id, dither_type="none")
    cleaned = core.dedot.Dedot(eight, chroma_t1=0, chroma_t2=255, **_DEDOT)
    shift = 1 << (depth - 8)
    luma = core.std.Expr([clip, cleaned, eight], [f"x y z - {shift} * +", ""])
    return core.std.ShufflePlanes([luma, clip], [0, 1, 2], vs.YUV)


def chain(plan: Composite):
    """The clip -> clip function the plan's filters are, for the bridge (Dedot first, then Bifrost)."""

    def run(clip: vs.VideoNode) -> vs.VideoNode:
        import vapoursynth as vs

        if plan.dedot:
            clip = _dedot(clip)
        if plan.derainbow:
            clip = vs.core.bifrost.Bifrost(clip, interlaced=plan.fields != "progressive")
        return clip

    return run


def _flagged(frames: Iterator[av.VideoFrame], flags: dict[int, bool]) -> Iterator[av.VideoFrame]:
    """``frames``, each one's interlaced flag noted by pts in ``flags``."""
    try:
        for frame in frames:
            assert frame.pts is not None  # decode stamps every frame
            flags[frame.pts] = bool(frame.interlaced_frame)
            yield frame
    finally:
        close = getattr(frames, "close", None)
        if callable(close):
            close()


class _Fields:
    """Sets each frame's field flags as libavfilter's ``setfield`` does: two graphs, one per verdict."""

    def __init__(self, first: av.VideoFrame, fields: str):
        self.graphs: dict[bool, tuple[av.filter.Graph, object, object]] = {}
        self.first, self.fields = first, fields

    def _graph(self, interlaced: bool):
        if interlaced not in self.graphs:
            graph = av.filter.Graph()
            f = self.first
            assert f.time_base is not None
            src = graph.add_buffer(width=f.width, height=f.height, format=f.format, time_base=f.time_base)
            node = graph.add("setfield", self.fields if interlaced else "prog")
            sink = graph.add("buffersink")
            src.link_to(node)
            node.link_to(sink)
            graph.configure()
            self.graphs[interlaced] = (graph, src, sink)
        return self.graphs[interlaced]

    def set(self, frame: av.VideoFrame, interlaced: bool) -> av.VideoFrame:
        graph, _, _ = self._graph(interlaced)
        graph.vpush(frame)
        out = graph.vpull()
        out.pts, out.time_base = frame.pts, frame.time_base
        return out


def composite_frames(
    frames: Iterable[av.VideoFrame], plan: Composite, *, sar: Fraction, rate: Fraction
) -> Iterator[av.VideoFrame]:
    """Decoded ``frames`` with the plan's composite filters (the same frames when it is off).

    ``sar`` and ``rate`` are the source's. Each output frame keeps its
    source frame's pts and interlaced flag (with the plan's field order),
    which FFmpeg's bwdif (``deint=interlaced``) and fieldmatch read.
    """
    it = iter(frames)
    if not plan.on:
        yield from it
        return
    flags: dict[int, bool] = {}
    field_based = {"tff": 2, "bff": 1}.get(plan.fields, 0)
    out = bridge.stream(
        _flagged(it, flags),
        chain(plan),
        field_based=field_based,
        sar=sar,
        rate=rate,
        reach=plan.ahead,
    )
    setter: _Fields | None = None
    try:
        for frame in out:
            assert frame.pts is not None  # the bridge times every frame
            interlaced = flags.pop(frame.pts, plan.fields != "progressive")
            if plan.fields == "progressive":
                yield frame
                continue
            setter = setter or _Fields(frame, plan.fields)
            yield setter.set(frame, interlaced)
    finally:
        close = getattr(out, "close", None)  # the bridge's workers finish, and it closes what feeds it
        if callable(close):
            close()
