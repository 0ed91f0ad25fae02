"""Tile geometry and blend weights for running an SR model on part of a frame.

Pure geometry: no torch, no devices. The engine asks for a tile plan, runs
the model on each tile's *crop*, and adds ``output * weight`` into the
output frame. Why it is laid out this way:

* A frame is cut into *cores* that cover it exactly once. A model must see
  ``context`` pixels beyond what it is trusted for, so each crop is the core
  grown by ``feather + context`` on each side. Where the grown crop would
  leave the frame it is *shifted* inwards, not padded: the untiled run only
  has zero padding at the true frame border, and a tile must not see any
  padding the untiled run does not see.
* Neighbouring tiles are cross-faded over a band of ``2 * feather`` pixels
  centred on the core boundary, with half-sine / raised-cosine ramps
  (``sin^2`` rising, ``cos^2`` falling). The two ramps add up to one, so the
  weights form a partition of unity and no normalisation pass is needed.
  Every pixel with non-zero weight lies at least ``context`` pixels inside
  its crop (or the crop reaches the frame border there), so each tile's
  value there already matches the untiled result; the fade only hides what
  little difference remains.
* All crops along an axis have the same length, so crops from several
  tiles and frames stack into one batch.
* A model whose input must be a multiple of ``multiple`` gets crops that
  start and end on multiples of it; the engine pads the whole frame to a
  multiple first, exactly as it would for an untiled run.

Coordinates are input pixels unless a name says ``out``; ranges are
half-open ``[start, stop)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Span",
    "Tile",
    "default_feather",
    "split_axis",
    "plan_tiles",
    "axis_weights",
    "tile_weights",
    "crop_size",
]


@dataclass(frozen=True, slots=True)
class Span:
    """One tile's extent along one axis.

    Attributes:
        core0, core1: the pixels this tile owns; the cores of an axis
            partition ``[0, size)``.
        crop0, crop1: what the model is given; same length for every span of
            an axis.
        blend0, blend1: where the tile's weight is non-zero, i.e. the core
            grown by the feather on each side that has a neighbour.
    """

    core0: int
    core1: int
    crop0: int
    crop1: int
    blend0: int
    blend1: int


@dataclass(frozen=True, slots=True)
class Tile:
    """A rectangle of a frame: a span along y and a span along x."""

    y: Span
    x: Span

    @property
    def crop(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of the model's input."""
        return self.y.crop0, self.y.crop1, self.x.crop0, self.x.crop1


def default_feather(context: int) -> int:
    """Half-width of the cross-fade band for a given context.

    The context already makes tiles agree with the untiled run, so the fade
    only has to soften the last fraction of a grey level; a quarter of the
    context, 2 to 8 px, does that without growing every crop by much.
    """
    return max(2, min(8, context // 4))


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def split_axis(size: int, tile: int, context: int, feather: int | None = None, multiple: int = 1) -> list[Span]:
    """Cut one axis of ``size`` pixels into spans with cores of at most ``tile``.

    Args:
        size: axis length; must already be a multiple of ``multiple``.
        tile: largest core length; 0 (or >= size) means one span.
        context: pixels a crop must extend beyond the blend band.
        feather: half-width of the cross-fade; default from the context.
            It is reduced where cores are too short to hold two ramps.
        multiple: crops start and end on multiples of this.

    Returns:
        Spans in order along the axis.
    """
    if size <= 0:
        raise ValueError(f"axis size must be positive, got {size}")
    if multiple < 1 or size % multiple:
        raise ValueError(f"axis size {size} is not a multiple of {multiple}")
    if tile < 0 or context < 0:
        raise ValueError("tile and context must not be negative")
    if tile == 0 or tile >= size:
        return [Span(0, size, 0, size, 0, size)]

    n = math.ceil(size / tile)
    bounds = [round(i * size / n) for i in range(n + 1)]
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    shortest = min(b - a for a, b in zip(bounds, bounds[1:]))
    f = default_feather(context) if feather is None else feather
    # Both ramps of a tile must fit inside its core, or the weights would no
    # longer add up to one.
    f = max(0, min(f, shortest // 2))
    margin = f + context
    # (multiple - 1) of slack: rounding a crop's start down to a multiple
    # must not cut into the far side's context.
    length = min(size, _round_up(longest + 2 * margin + multiple - 1, multiple))
    if length >= size:
        return [Span(0, size, 0, size, 0, size)]

    spans = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        start = (a - margin) // multiple * multiple
        start = min(max(start, 0), size - length)
        spans.append(
            Span(
                core0=a,
                core1=b,
                crop0=start,
                crop1=start + length,
                blend0=a - f if i > 0 else 0,
                blend1=b + f if i < n - 1 else size,
            )
        )
    return spans


def plan_tiles(
    height: int, width: int, tile: int, context: int, feather: int | None = None, multiple: int = 1
) -> list[Tile]:
    """All tiles of a ``height x width`` frame, row by row.

    Every tile's crop has the same shape, so the crops can be stacked into a
    batch. ``tile`` 0 gives one tile covering the whole frame.
    """
    ys = split_axis(height, tile, context, feather, multiple)
    xs = split_axis(width, tile, context, feather, multiple)
    return [Tile(y, x) for y in ys for x in xs]


def crop_size(
    height: int, width: int, tile: int, context: int, feather: int | None = None, multiple: int = 1
) -> tuple[int, int]:
    """Shape ``(h, w)`` of every crop :func:`plan_tiles` would give."""
    ys = split_axis(height, tile, context, feather, multiple)
    xs = split_axis(width, tile, context, feather, multiple)
    return ys[0].crop1 - ys[0].crop0, xs[0].crop1 - xs[0].crop0


def axis_weights(span: Span, scale: int) -> np.ndarray:
    """Weights of one span over its output crop, ``(crop1 - crop0) * scale`` long.

    Output pixel ``p`` sits at input position ``(p + 0.5) / scale``. Inside
    a band of half-width ``f`` around a core boundary ``b`` the tile on the
    far side rises as ``sin^2(pi/2 * t)`` and this one falls as
    ``cos^2(pi/2 * t)``, with ``t = (u - (b - f)) / (2f)``; they sum to one.
    The feather is recovered from the blend range, so a span carries all a
    caller needs.
    """
    out = np.arange(span.crop0 * scale, span.crop1 * scale, dtype=np.float64)
    u = (out + 0.5) / scale
    w = np.ones_like(u)
    if span.blend0 < span.core0:  # a neighbour before: rising ramp
        f = span.core0 - span.blend0
        t = np.clip((u - span.blend0) / (2 * f), 0.0, 1.0)
        w *= np.sin(0.5 * np.pi * t) ** 2
    if span.blend1 > span.core1:  # a neighbour after: falling ramp
        f = span.blend1 - span.core1
        t = np.clip((u - (span.core1 - f)) / (2 * f), 0.0, 1.0)
        w *= np.cos(0.5 * np.pi * t) ** 2
    # Exactly zero where the crop lacks context (cos^2(pi/2) is only ~1e-33).
    w[(u < span.blend0) | (u >= span.blend1)] = 0.0
    return w.astype(np.float32)


def tile_weights(tile: Tile, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(wy, wx)``: the tile's weight over its output crop is ``wy[:, None] * wx``."""
    return axis_weights(tile.y, scale), axis_weights(tile.x, scale)
