"""QTGMC, the restorers' deinterlacer, through the VapourSynth bridge (``--deinterlace qtgmc``).

QTGMC bobs each field to a frame (NNEDI3), then smooths the result along
motion vectors over neighbouring fields, so that a still line stops
bobbing and a moving edge keeps its shape. vsjetpack's ``QTempGaussMC``
runs it; its defaults are QTGMC's default preset, "Slower". The presets
here set the three temporal radii as QTGMC's presets of the same names
do: the prefilter's (TR0), the motion-compensated smooth's (TR1) and the
final smooth's (TR2). A larger radius is steadier and slower.

Double rate (``--field-rate double``) gives one frame per field; single
rate keeps every first field's frame, with no motion blur added.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING

import av

from vhsup.restore import vs as bridge

if TYPE_CHECKING:
    import vapoursynth as vs

    from vhsup.media.filters import FilterPlan

#: preset -> (TR0, TR1, TR2), as QTGMC's presets of the same names.
PRESETS = {
    "fast": (2, 1, 0),
    "medium": (2, 1, 1),
    "slower": (2, 2, 1),
    "placebo": (2, 2, 3),
}
DEFAULT_PRESET = "slower"  # QTGMC's own default
INSTALL = bridge.INSTALL


def unusable(width: int, height: int) -> str | None:
    """Why QTGMC cannot run on a ``width`` x ``height`` picture here (one line), or None when it can."""
    if width % 2 or height % 4:
        return f"QTGMC needs an even width and a height divisible by 4 (4:2:0 fields), not {width}x{height}"
    return bridge.check()


def not_installed(reason: str) -> bool:
    """Whether ``reason`` (from :func:`unusable`) is the extra not being installed, rather than broken."""
    return "is not installed" in reason


def chain(preset: str, double_rate: bool):
    """The clip -> clip function QTGMC at ``preset`` is, for the bridge."""
    tr0, tr1, tr2 = PRESETS[preset]

    def run(clip: vs.VideoNode) -> vs.VideoNode:
        from vsdeinterlace import QTempGaussMC

        qtgmc = QTempGaussMC(prefilter_tr=tr0, basic_tr=tr1, final_tr=tr2)
        bobbed = qtgmc.bob(clip)
        return bobbed if double_rate else bobbed[::2]

    return run


def deinterlace(
    frames: Iterator[av.VideoFrame], stream: av.video.stream.VideoStream, plan: FilterPlan
) -> Iterator[av.VideoFrame]:
    """Progressive frames from decoded interlaced ``frames``, field order and rate as ``plan`` says."""
    cc = stream.codec_context
    sar = Fraction(stream.sample_aspect_ratio or cc.sample_aspect_ratio or 1)
    rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(30000, 1001))
    return bridge.stream(
        frames,
        chain(plan.preset or DEFAULT_PRESET, plan.double_rate),
        field_based=2 if plan.parity == "tff" else 1,
        sar=sar,
        rate=rate,
        per_frame=2 if plan.double_rate else 1,
    )
