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


def _even(x: float) -> int:
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
            out_w = _even(width)
            out_h = _even(out_w / dar)
        out_sar = Fraction(1)
    return Geometry(src_w, src_h, sar, crop, in_w, in_h, scale, sr_w, sr_h, out_w, out_h, out_sar,
                    Fraction(out_w, out_h) * out_sar)


def detect_crop(samples: list[np.ndarray], *, vhs_bottom: bool = True, black: int = 24, max_frac: float = 0.25) -> Crop:
    """Find black borders and VHS head-switching lines in sampled RGB frames.

    A row or column is border when it stays dark (luma below ``black``) in
    every sample. Head-switching noise is the band of bottom lines that are
    horizontally torn: their line-to-line difference is several times the
    picture's typical one. Crops are even so 4:2:0 chroma stays aligned.
    """
    if not samples:
        return Crop()
    h, w = samples[0].shape[:2]
    luma = np.stack([s.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) for s in samples])
    row_max = np.percentile(luma, 98, axis=2).max(axis=0)  # per row, worst case across samples
    col_max = np.percentile(luma, 98, axis=1).max(axis=0)

    def edge(profile: np.ndarray, limit: int) -> int:
        n = 0
        while n < limit and profile[n] < black:
            n += 1
        return n

    lim_h, lim_w = int(h * max_frac), int(w * max_frac)
    top, bottom = edge(row_max, lim_h), edge(row_max[::-1], lim_h)
    left, right = edge(col_max, lim_w), edge(col_max[::-1], lim_w)
    if vhs_bottom and h >= 200:
        # diff[r] is the mean |row r+1 - row r| over samples and width. Torn
        # lines differ from their neighbours several times more than the
        # picture just above them does; count them up from the bottom edge.
        diff = np.abs(np.diff(luma, axis=1)).mean(axis=(0, 2))
        last = h - 2 - bottom  # the pair (last, last + 1) ends at the picture's bottom row
        # The reference is the calmer of the picture's middle and the lines
        # just above the band (captions or a date stamp there raise the latter).
        body = float(np.median(diff[h // 4 : 3 * h // 4]))
        near = float(np.median(diff[max(0, last - 60) : last - 20]))
        reference = min(body, near) + 1e-3
        n, misses = 0, 0
        for i in range(16):
            if diff[last - i] > 1.6 * reference:
                n, misses = i + 1, 0
            else:
                misses += 1
                if misses > 1:
                    break
        bottom += n
    even = lambda v: (v + 1) // 2 * 2  # noqa: E731
    return Crop(even(left), even(top), even(right), even(bottom))


def fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to exactly ``width`` x ``height``: area when shrinking, Lanczos when growing."""
    import cv2

    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    shrink = width * height < w * h
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
