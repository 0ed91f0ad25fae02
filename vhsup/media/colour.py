"""Colour matrices, ranges and tags for SD sources and SD/HD outputs.

SD video is BT.601 at limited range: NTSC tags smpte170m, PAL bt470bg. HD
video is BT.709. Decoding with one matrix and encoding with another, or
leaving an HD stream untagged, shifts skin tones - the most common colour
complaint about upscalers - so the matrix is chosen once here and used for
both the conversion and the stream tags.
"""

from __future__ import annotations

from dataclasses import dataclass

# Values are FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic
# / AVColorRange numbers, which PyAV exposes as plain ints on frames and codec
# contexts.
SPACE_BT709, SPACE_BT470BG, SPACE_SMPTE170M, SPACE_UNSPECIFIED = 1, 5, 6, 2
PRIM_BT709, PRIM_BT470BG, PRIM_SMPTE170M = 1, 5, 6
TRC_BT709, TRC_GAMMA28, TRC_SMPTE170M = 1, 5, 6
RANGE_UNSPECIFIED, RANGE_TV, RANGE_PC = 0, 1, 2

HD_MIN_HEIGHT = 720  # outputs at least this tall are HD and get BT.709


@dataclass(frozen=True)
class ColourSpec:
    """How RGB maps to YUV for one stream.

    Attributes:
        name: 'bt601-ntsc', 'bt601-pal' or 'bt709'.
        matrix: swscale colorspace name for ``reformat`` ('itu601' or 'itu709').
        space, primaries, trc: FFmpeg enum values for the stream tags.
        full_range: True for JPEG (0-255) range, False for 16-235.
    """

    name: str
    matrix: str
    space: int
    primaries: int
    trc: int
    full_range: bool = False

    @property
    def range_tag(self) -> int:
        return RANGE_PC if self.full_range else RANGE_TV


BT601_NTSC = ColourSpec("bt601-ntsc", "itu601", SPACE_SMPTE170M, PRIM_SMPTE170M, TRC_SMPTE170M)
BT601_PAL = ColourSpec("bt601-pal", "itu601", SPACE_BT470BG, PRIM_BT470BG, TRC_GAMMA28)
BT709 = ColourSpec("bt709", "itu709", SPACE_BT709, PRIM_BT709, TRC_BT709)


def source_colour(height: int, colorspace: int | None, color_range: int | None) -> ColourSpec:
    """The colour spec a decoded stream really uses.

    Untagged streams (the norm for DV and many DVDs) are guessed from the
    frame height the way players do: up to 576 lines is BT.601 (576-line
    sources are PAL), anything taller is BT.709.
    """
    full = color_range == RANGE_PC
    if colorspace == SPACE_BT709:
        spec = BT709
    elif colorspace == SPACE_BT470BG:
        spec = BT601_PAL
    elif colorspace == SPACE_SMPTE170M:
        spec = BT601_NTSC
    elif height >= HD_MIN_HEIGHT:
        spec = BT709
    elif height > 480:
        spec = BT601_PAL
    else:
        spec = BT601_NTSC
    if full:
        spec = ColourSpec(spec.name, spec.matrix, spec.space, spec.primaries, spec.trc, True)
    return spec


def output_colour(source: ColourSpec, height: int) -> ColourSpec:
    """HD outputs are BT.709; SD outputs keep the source's BT.601 flavour.

    Outputs are always limited range, as every delivery format expects.
    """
    if height >= HD_MIN_HEIGHT:
        return BT709
    if source.name == "bt709":
        return BT709
    return BT601_PAL if source.name == "bt601-pal" else BT601_NTSC
