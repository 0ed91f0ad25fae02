"""``--restore vhs|dvd``: the restorers' order of work before SR, in one flag.

Restorers deinterlace first (QTGMC where they can), then move the chroma
back onto the luma, then remove noise over time, and only then upscale:
an upscaler fed raw tape noise turns it into texture.

* ``vhs``: deinterlace (``auto``: QTGMC where the restore extra works,
  bwdif with a notice where it does not), ``--chroma-shift auto``,
  ``--denoise medium``.
* ``dvd``: inverse telecine where the picture is telecined film, else
  deinterlace as ``auto`` does; ``--denoise light``; no chroma move (a DVD
  made from a tape master keeps the lag: add ``--chroma-shift auto``).

The temporal stabiliser after SR is on by default for models either way.
Options given alongside the preset win over it: the preset fills only
those left unset (``--denoise auto``, no ``--chroma-shift``, no ``--ivtc``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vhsup.errors import VhsupError

if TYPE_CHECKING:
    from vhsup.media.probe import VideoInfo
    from vhsup.options import Options

PRESETS = ("off", "vhs", "dvd")
_DENOISE = {"off": "off", "vhs": "medium", "dvd": "light"}


def resolve(opts: Options, info: VideoInfo) -> Options:
    """``opts`` with the preset's choices filled in where the user left them unset (idempotent)."""
    preset = (opts.restore or "off").strip().lower()
    if preset not in PRESETS:
        raise VhsupError(f"--restore must be one of {', '.join(PRESETS)}, not {opts.restore!r}")
    denoise = _DENOISE[preset] if opts.denoise == "auto" else opts.denoise
    chroma = opts.chroma_shift
    if chroma is None:
        chroma = "auto" if preset == "vhs" else "off"
    ivtc = opts.ivtc
    if preset == "dvd" and not ivtc and opts.deinterlace != "off" and info.telecine.telecined is True:
        ivtc = True
    return replace(opts, restore=preset, denoise=denoise, chroma_shift=chroma, ivtc=ivtc)
