"""Sizes, crops and aspect ratios from source to output.

SD video rarely has square pixels: NTSC 720x480 is 4:3 with SAR 10:11 or
8:9 and 16:9 with SAR 40:33 or 32:27. Every size decision here keeps the
display aspect ratio (DAR = width x SAR / height) of the cropped picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from vhsup.errors import VhsupError


@dataclass(frozen=True)
class Crop:
    """Pixels removed from each edge of the source picture."""

    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0

    def __bool__(self) -> bool:
        return any((self.left, self.top, self.right, self.bottom))

    def __str__(self) -> str:
        return f"{self.left},{self.top},{self.right},{self.bottom}"


def parse_crop(text: str | None) -> Crop | str | None:
    """``None``/'none' -> no crop, 'auto' -> detect, 'L,T,R,B' -> a Crop."""
    if text is None or text.strip().lower() in ("", "none", "0", "off"):
        return None
    if text.strip().lower() == "auto":
        return "auto"
    parts = text.replace(" ", "").split(",")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != 4 or min(values) < 0:
        raise VhsupError(f"--crop takes 'auto' or four non-negative integers L,T,R,B, not {text!r}")
    return Crop(*values)


@dataclass(frozen=True)
class Geometry:
    """The size at every step.

    Attributes:
        src_w, src_h, sar: the decoded picture and its sample aspect ratio.
        crop: removed before the SR.
        in_w, in_h: the picture the model sees.
        sr_w, sr_h: the model's output (in x scale).
        out_w, out_h, out_sar: the encoded picture and the SAR it is tagged with.
        dar: display aspect ratio of the output (equal to the cropped source's).
    """

    src_w: int
    src_h: int
    sar: Fraction
    crop: Crop
    in_w: int
    in_h: int
    scale: int
    sr_w: int
    sr_h: int
    out_w: int
    out_h: int
    out_sar: Fraction
    dar: Fraction

    @property
    def resized(self) -> bool:
        return (self.out_w, self.out_h) != (self.sr_w, self.sr_h)


def _even(x: Fraction | float) -> int:
    return max(2, int(round(x / 2)) * 2)


def plan_geometry(
    src_w: int,
    src_h: int,
    sar: Fraction,
    scale: int,
    *,
    crop: Crop | None = None,
    width: int | None = None,
    height: int | None = None,
) -> Geometry:
    """Plan sizes.

    With no target size the SR output is kept (rounded to even dimensions,
    which 4:2:0 encoders need) and tagged with the SAR that preserves the
    display aspect. With ``width`` and/or ``height`` the output has square
    pixels at that size, aspect kept (both given: fit inside the box).
    """
    crop = crop or Crop()
    in_w = src_w - crop.left - crop.right
    in_h = src_h - crop.top - crop.bottom
    if in_w < 8 or in_h < 8:
        raise VhsupError(f"crop {crop} leaves {in_w}x{in_h} of a {src_w}x{src_h} picture")
    for name, value in (("width", width), ("height", height)):
        if value is not None and not 16 <= value <= 16384:
            raise VhsupError(f"--{name} must be between 16 and 16384, not {value}")
    dar = Fraction(in_w, in_h) * sar
    sr_w, sr_h = in_w * scale, in_h * scale
    if width is None and height is None:
        out_w, out_h = _even(sr_w), _even(sr_h)
        out_sar = (dar * Fraction(out_h, out_w)).limit_denominator(1000)
    else:
        if width is not None and height is not None:
            if Fraction(width, height) > dar:
                width = None
            else:
                height = None
        if height is not None:
            out_h = _even(height)
            out_w = _even(out_h * dar)
        else:
            assert width is not None  # one of the two is given here
            out_w = _even(width)
            out_h = _even(out_w / dar)
        out_sar = Fraction(1)
    return Geometry(
        src_w, src_h, sar, crop, in_w, in_h, scale, sr_w, sr_h, out_w, out_h, out_sar, Fraction(out_w, out_h) * out_sar
    )


# Auto-crop thresholds, in full-range luma levels (0-255) of the sampled RGB.
_BLACK_MEAN = 5.0  # a black line averages at most this (noise on black clips at 0)...
_BLACK_PEAK = 24.0  # ...and its 98th percentile stays below this (codec ringing, not stars or credits)
_BLANK_MEAN = 64.0  # a blank line (end of blanking, a dark grey line) is dark...
_BLANK_CORR = 0.5  # ...and unlike the picture next to it: correlation with the next lines below this
_BOX = 9  # positions averaged before that correlation
_TORN_ZONE = 20  # head-switching lies in the bottom lines of a VHS frame


def _continuity(lines: np.ndarray) -> np.ndarray:
    """Per sample and line, how much it looks like the picture inwards of it:
    the larger correlation with the next line and the one after (the same
    field when lines are rows of interlaced video).

    Picture is continuous from line to line; noise on a blanking line, or a
    constant one, is not. Lines are first averaged over ``_BOX`` positions:
    that keeps the picture's shapes and drops most of the noise, which would
    otherwise hide a dark picture's continuity. ``lines`` is (samples,
    lines, positions along a line); the result has two lines fewer.
    """
    box = max(1, min(_BOX, lines.shape[2] // 4))
    c = np.cumsum(lines, axis=2, dtype=np.float64)
    lines = c[:, :, box:] - c[:, :, :-box]
    centred = lines - lines.mean(axis=2, keepdims=True)
    norm = np.sqrt((centred * centred).sum(axis=2)) + 1e-2 * box * lines.shape[2]

    def corr(step: int) -> np.ndarray:
        a, b = centred[:, : centred.shape[1] - 2], centred[:, step : centred.shape[1] - 2 + step]
        return (a * b).sum(axis=2) / (norm[:, : a.shape[1]] * norm[:, step : step + a.shape[1]])

    return np.maximum(corr(1), corr(2))


def _border_lines(lines: np.ndarray, limit: int, torn: np.ndarray | None = None) -> int:
    """How many lines, counted from index 0 inwards, are not picture.

    A line is border when every sample shows it black (bars, blanking), or
    when every sample shows it blank - dark, and not continuous with the
    lines inwards of it - at the same level all through the file (the dark
    grey line at the end of a VHS frame's vertical blanking). Picture,
    however dark, continues into its neighbours in some sample, or changes
    with the scene. ``torn`` marks head-switching lines, also border. The
    run ends at two picture lines in a row. A run that reaches ``limit`` is
    a dark picture or a black file, not a border: then nothing is border.
    """
    n = min(limit + 1, lines.shape[1] - 2)
    head = lines[:, :n]
    mean = head.mean(axis=2)
    peak = np.percentile(head, 98, axis=2)
    black = ((mean <= _BLACK_MEAN) & (peak <= _BLACK_PEAK)).all(axis=0)
    blank = ((mean <= _BLANK_MEAN) & (_continuity(lines[:, : n + 2]) < _BLANK_CORR)).all(axis=0)
    top = mean.max(axis=0)
    steady = top - mean.min(axis=0) <= 3 + 0.15 * top
    border = black | (blank & steady)
    if torn is not None:
        border |= torn[:n]
    # A lone picture-like line between border lines is border too: a ringing
    # lobe of the picture edge (VCR peaking, codec ringing) inside a bar.
    count = 0
    while count < n and (border[count] or (count + 1 < n and border[count + 1])):
        count += 1
    return 0 if count >= limit else count


def _torn_lines(luma: np.ndarray, skip: int) -> np.ndarray:
    """Head-switching lines, as a mask over the lines counted from the bottom.

    They are looked for among the ``_TORN_ZONE`` lines above the ``skip``
    bottom lines that are border already (a capture may show black lines
    below the tape's picture). A torn line is the picture shifted sideways,
    with noise, so it differs from the line two above it (the same field:
    combing does not count) 1.3 times more than the 32 lines above it differ
    from theirs - in the median sample, so that one scene's horizontal edge
    does not count. The window above holds the picture even when the
    band below the line is torn: a median ignores up to 15 torn lines.
    """
    h = luma.shape[1]
    d = np.abs(luma[:, 2:] - luma[:, :-2]).mean(axis=2)  # d[:, i - 2]: line i against line i - 2
    torn = np.zeros(h, bool)
    for j in range(skip, min(skip + _TORN_ZONE, h - 36)):
        i = h - 1 - j
        ref = np.maximum(np.median(d[:, i - 2 - 32 : i - 2], axis=1), 2.0)
        torn[j] = np.median(d[:, i - 2] / ref) > 1.3
    return torn


def detect_crop(samples: list[np.ndarray], *, vhs_bottom: bool = True, max_frac: float = 0.25) -> Crop:
    """Find black borders, blanking lines and VHS head-switching in sampled RGB frames.

    Side bars are measured on the middle half of the rows (inside any
    letterbox), then top and bottom on the columns between the bars. Each
    edge counts lines from the outside in until the first one that is
    picture (see ``_border_lines``), and with ``vhs_bottom`` the torn
    head-switching lines at the bottom count as border too.

    The crop is exact to the line, odd values included: it is applied to
    RGB after the chroma has been upsampled, so no 4:2:0 (or 4:1:1) grid
    constrains it, and ``plan_geometry`` makes the encoded size even. A
    rounded crop would trim a line of picture or leave a line of border.
    """
    if not samples or min(samples[0].shape[:2]) < 16:
        return Crop()  # no room for a border worth measuring
    luma = np.stack([s.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) for s in samples])
    _, h, w = luma.shape
    lim_h, lim_w = int(h * max_frac), int(w * max_frac)
    columns = luma[:, h // 4 : 3 * h // 4].transpose(0, 2, 1)
    left = _border_lines(columns, lim_w)
    right = _border_lines(columns[:, ::-1], lim_w)
    rows = luma[:, :, left : w - right]
    top = _border_lines(rows, lim_h)
    bottom = _border_lines(rows[:, ::-1], lim_h)
    if vhs_bottom and h >= 200:
        bottom = _border_lines(rows[:, ::-1], lim_h, _torn_lines(rows, bottom))
    return Crop(left, top, right, bottom)


def fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to exactly ``width`` x ``height``: area when shrinking, Lanczos when growing."""
    import cv2

    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    shrink = width * height < w * h
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
