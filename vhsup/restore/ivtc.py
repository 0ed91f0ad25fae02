"""Inverse telecine through VIVTC (``--ivtc`` where the restore extra works).

3:2 pulldown spreads four film frames over five video frames (ten fields):
two of the five weave fields of two film frames, and one film frame's
fields come twice. Inverse telecine undoes it in two steps, as VIVTC
(VapourSynth's port of TIVTC) does them:

* ``VFM`` matches fields: it keeps each frame's field of the stream's
  first order and pairs it with the opposite field of the previous, the
  same or the next frame, whichever combs least. Every frame then shows one
  film frame whole, and the film frame whose fields came twice shows twice.
  A frame no match makes clean (an orphan field left by an edit, a stretch
  of real video) is marked ``_Combed``; it is replaced by NNEDI3's
  interpolation of its kept field alone (``znedi3``), VIVTC's documented
  post-processing, so no combing reaches the model.
* ``VDecimate`` drops the frame in each cycle of five that differs least
  from the one before it: the repeat. 29.97i becomes 23.976p.

FFmpeg's ``fieldmatch`` + ``decimate`` (what ``--ivtc`` runs without the
extra) are ports of the same two filters; combed frames there go through
bwdif, which also looks at the neighbouring frames, of other film frames.

Timing: decimation changes the rate, so the bridge times the output on the
23.976 grid from the time of the first output frame's source frame, rounded
to that grid, as FFmpeg's ``decimate`` does: both paths give the same times.

``vapoursynth-vivtc`` is part of the extra but checked on its own (not in
:data:`vhsup.restore.vs.PLUGINS`): without it ``--ivtc`` runs FFmpeg's
filters, and QTGMC and the denoiser still work.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING

import av

from vhsup.restore import vs as bridge

if TYPE_CHECKING:
    import vapoursynth as vs

    from vhsup.media.filters import FilterPlan

INSTALL = bridge.INSTALL
#: The plugin, by VapourSynth namespace, and the package that ships it.
PLUGIN = {"vivtc": "vapoursynth-vivtc"}
#: One frame in CYCLE is dropped: 3:2 pulldown's five video frames per four film frames.
CYCLE = 5
#: Source frames past the one at an output's time that the chain reads: the rest of its cycle, and
#: the next frame (VFM's next-field match; VDecimate compares each frame with the one before it).
REACH = CYCLE + 2


def unusable(width: int, height: int) -> str | None:
    """Why VIVTC cannot run on a ``width`` x ``height`` picture here (one line), or None when it can."""
    if width % 2 or height % 4:
        return f"VIVTC needs an even width and a height divisible by 4 (4:2:0 fields), not {width}x{height}"
    return bridge.check() or _check()


def works() -> bool:
    """Whether VIVTC runs here (on a picture size it takes)."""
    return bridge.check() is None and _check() is None


def not_installed(reason: str) -> bool:
    """Whether ``reason`` (from :func:`unusable`) is the extra not being installed, rather than broken."""
    return "is not installed" in reason


@functools.lru_cache(maxsize=1)
def _check() -> str | None:
    why = bridge.check_plugins(PLUGIN)
    if why is not None:
        return why
    import vapoursynth as vs

    # It loads; run it once on a small grey clip (a plugin can load and still fail).
    try:
        clip = vs.core.std.BlankClip(width=64, height=64, format=vs.YUV420P8, length=12, color=[128, 128, 128])
        chain(tff=True)(vs.core.std.SetFieldBased(clip, 2)).get_frame(4)
    except Exception as exc:
        return (
            f"the restore extra is installed but VIVTC does not run ({bridge._first_line(exc)}); "
            f"reinstall it with {INSTALL}"
        )
    return None


def chain(tff: bool):
    """The clip -> clip function VIVTC's field matching and decimation are, for the bridge."""
    field = 1 if tff else 0

    def run(clip: vs.VideoNode) -> vs.VideoNode:
        import vapoursynth as vs

        core = vs.core
        matched = core.vivtc.VFM(clip, order=field, mode=1)
        interpolated = core.znedi3.nnedi3(matched, field=field)

        def clean(n: int, f: vs.VideoFrame) -> vs.VideoNode:
            return interpolated if f.props.get("_Combed") else matched

        cleaned = core.std.FrameEval(matched, clean, prop_src=matched)
        return core.vivtc.VDecimate(cleaned, cycle=CYCLE)

    return run


def inverse_telecine(
    frames: Iterator[av.VideoFrame], stream: av.video.stream.VideoStream, plan: FilterPlan
) -> Iterator[av.VideoFrame]:
    """Film frames from decoded telecined ``frames``: one in five dropped, timed on the 4/5 rate's grid."""
    cc = stream.codec_context
    sar = Fraction(stream.sample_aspect_ratio or cc.sample_aspect_ratio or 1)
    rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(30000, 1001))
    return bridge.stream(
        frames,
        chain(plan.parity == "tff"),
        field_based=2 if plan.parity == "tff" else 1,
        sar=sar,
        rate=rate,
        reach=REACH,
        output_rate=rate * Fraction(CYCLE - 1, CYCLE),
    )
