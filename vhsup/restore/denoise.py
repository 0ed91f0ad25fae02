"""Temporal denoise before SR (``--denoise off|light|medium|strong``).

Tape noise changes in every frame; the picture does not. Averaging each
pixel with the same spot in its neighbouring frames, followed along the
motion, removes the noise and keeps the picture, and the model is then
given a picture instead of grain it would turn into texture.

With the ``restore`` extra, MVTools does it (``mv.Degrain``): block motion
vectors searched on a lightly blurred copy (so that noise does not steer
the search), then each block averaged with its motion-compensated
counterparts up to ``radius`` frames back and forth, weighted down where
the match is poor (``thsad``): an occlusion, a cut or a flash keeps the
current frame's block. The levels set the radius and that threshold.

Without the extra, FFmpeg's ``atadenoise`` (in PyAV's build) runs
instead, with a notice: it averages each pixel over neighbouring frames
where the values stay close, without motion compensation, so it takes
grain out of still parts and can soften moving detail (on a panning
texture it does more harm than good; MVTools halves the error there). (``hqdn3d`` is GPL and absent from PyAV's build.)

Both keep every frame and its timestamp; neither changes the size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av

from vhsup.errors import VhsupError
from vhsup.restore import vs as bridge

if TYPE_CHECKING:
    import vapoursynth as vs

LEVELS = ("off", "light", "medium", "strong")

#: level -> (temporal radius in frames, MVTools thSAD: the block mismatch, per 8x8 block, above which a
#: neighbour's block gets no weight; MVTools' own default is 400). Grain of 8 codes alone gives a SAD
#: near 400, so a lower threshold would leave heavy grain in; tuned in tests/test_restore.py's clips.
MV_LEVELS = {"light": (1, 400), "medium": (2, 500), "strong": (3, 700)}
#: Motion-search blocks at SD: 16x16, overlapping by half.
_BLOCK, _OVERLAP = 16, 8

#: level -> atadenoise options: frames averaged (odd) and the per-plane thresholds (fractions of full scale).
#: Kept low: without motion compensation, higher thresholds smear a panning texture (tests/test_denoise.py).
ATA_LEVELS = {
    "light": "s=5:0a=0.02:0b=0.04:1a=0.02:1b=0.04:2a=0.02:2b=0.04",
    "medium": "s=9:0a=0.03:0b=0.06:1a=0.03:1b=0.06:2a=0.03:2b=0.06",
    "strong": "s=13:0a=0.04:0b=0.08:1a=0.04:1b=0.08:2a=0.04:2b=0.08",
}


@dataclass(frozen=True)
class Denoise:
    """The denoise a run does: ``level`` by ``method`` ('mvtools', 'atadenoise'; '' when off)."""

    level: str = "off"
    method: str = ""

    @property
    def on(self) -> bool:
        return self.level != "off"

    @property
    def radius(self) -> int:
        """Frames each side the filter looks at."""
        if self.method == "mvtools":
            return MV_LEVELS[self.level][0]
        if self.method == "atadenoise":
            return int(ATA_LEVELS[self.level].split(":")[0][2:]) // 2
        return 0

    def describe(self) -> str:
        """What probe prints: the level, the filter and its reach."""
        if not self.on:
            return "off"
        how = "MVTools motion-compensated degrain" if self.method == "mvtools" else "FFmpeg atadenoise"
        return f"{self.level}: {how}, {self.radius} frame(s) each side"

    def label(self) -> str:
        """Short form for ``--json``: 'off', or e.g. 'medium (mvtools)'."""
        return f"{self.level} ({self.method})" if self.on else "off"


def plan_denoise(level: str, width: int, height: int) -> tuple[Denoise, list[str]]:
    """The denoise ``--denoise level`` gives on a ``width`` x ``height`` source here, and notices.

    MVTools where the restore extra works; FFmpeg's atadenoise with a notice where it does not.
    """
    level = (level or "off").strip().lower()
    if level not in LEVELS:
        raise VhsupError(f"--denoise must be one of {', '.join(LEVELS)}, not {level!r}")
    if level == "off":
        return Denoise(), []
    why = bridge.check()
    if why is None and (width % 2 or height % 2):
        why = f"MVTools needs an even picture size, not {width}x{height}"
    if why is None:
        return Denoise(level, "mvtools"), []
    return Denoise(level, "atadenoise"), [
        f"--denoise {level}: using FFmpeg's atadenoise, which does not follow motion and may soften moving "
        f"detail ({why})"
    ]


def _degrain(radius: int, thsad: int):
    """The clip -> clip function MVTools degrain over ``radius`` frames each side is, for the bridge."""

    def run(clip: vs.VideoNode) -> vs.VideoNode:
        import vapoursynth as vs

        core = vs.core
        clip = core.std.SetFieldBased(clip, 0)
        # The search sees a softened picture, so block matches follow the picture rather than its grain.
        soft = core.std.Convolution(clip, matrix=[1, 2, 1, 2, 4, 2, 1, 2, 1], planes=[0])
        search = core.mv.Super(soft, pel=2, sharp=2)
        render = core.mv.Super(clip, pel=2, sharp=2, levels=1)
        vectors: list[Any] = []
        for delta in range(1, radius + 1):
            common = {"blksize": _BLOCK, "overlap": _OVERLAP, "delta": delta, "truemotion": True}
            vectors += [core.mv.Analyse(search, isb=True, **common), core.mv.Analyse(search, isb=False, **common)]
        degrain = getattr(core.mv, f"Degrain{radius}")
        return degrain(clip, render, *vectors, thsad=thsad, thsadc=thsad)

    return run


def _ata(frames: Iterator[av.VideoFrame], first: av.VideoFrame, options: str) -> Iterator[av.VideoFrame]:
    """``frames`` through FFmpeg's atadenoise, timestamps kept."""
    graph = av.filter.Graph()
    assert first.time_base is not None  # decode stamps every frame
    src = graph.add_buffer(width=first.width, height=first.height, format=first.format, time_base=first.time_base)
    node = graph.add("atadenoise", options)
    sink = graph.add("buffersink")
    src.link_to(node)
    node.link_to(sink)
    graph.configure()

    def drain() -> Iterator[av.VideoFrame]:
        while True:
            try:
                out = graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            out.time_base = first.time_base
            yield out

    for frame in frames:
        graph.vpush(frame)
        yield from drain()
    graph.vpush(None)
    yield from drain()


def denoise_frames(
    frames: Iterable[av.VideoFrame], plan: Denoise, *, sar: Fraction, rate: Fraction
) -> Iterator[av.VideoFrame]:
    """Progressive ``frames`` denoised as ``plan`` says (the same frames when it is off).

    ``sar`` and ``rate`` are the progressive stream's (after deinterlacing).
    """
    it = iter(frames)
    if not plan.on:
        yield from it
        return
    first = next(it, None)
    if first is None:
        return

    def again() -> Iterator[av.VideoFrame]:
        yield first
        yield from it

    if plan.method == "atadenoise":
        yield from _ata(again(), first, ATA_LEVELS[plan.level])
        return
    radius, thsad = MV_LEVELS[plan.level]
    yield from bridge.stream(
        again(), _degrain(radius, thsad), field_based=0, sar=sar, rate=rate, per_frame=1, reach=radius
    )
