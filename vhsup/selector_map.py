"""Selector maps: which kernel each switched convolution chose, where.

A switched conv picks one of its ``breadth`` kernels at every pixel. Seeing
those choices laid over a real frame is the quickest way to tell whether a
trained model has learnt something about the picture (kernels follow edges,
flat areas, texture) or has collapsed onto one kernel or into noise. This
module runs a model on one picture, reads each switched layer's chosen
kernel index and draws one colour-coded panel per layer, beside the input,
in a single PNG.

Only the layers are needed, not the upscaled picture, so the forward pass
stops as soon as every switched layer has run: for switched-x4 that skips
the costly output-size convs. Pictures larger than ``max_side`` are shrunk
first (there is no tiling here); the maps are then at that size.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from vhsup.arch.switched import switched_layers
from vhsup.errors import VhsupError
from vhsup.preview import BACKGROUND, GAP, caption, caption_height, write_png

MAX_COLUMNS = 4
MAX_SIDE = 512

# Distinct, saturated colours first (readable on the dark canvas and far
# from its greys); beyond them the palette is extended by golden-angle hues.
_BASE_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (23, 190, 207),
    (227, 119, 194),
    (188, 189, 34),
    (140, 86, 75),
    (255, 255, 255),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (158, 218, 229),
)


def palette(breadth: int) -> np.ndarray:
    """``breadth`` distinct RGB colours (uint8, shape (breadth, 3)); kernel k is colour k.

    The same breadth always gives the same colours, and a smaller breadth
    is a prefix of a larger one, so maps of different layers compare.
    """
    if breadth < 1:
        raise ValueError(f"breadth must be positive, not {breadth}")
    colours = list(_BASE_PALETTE[:breadth])
    seen = set(colours) | {BACKGROUND}
    i = 0
    while len(colours) < breadth:
        hue = (i * 0.618033988749895) % 1.0
        light = (0.45, 0.65, 0.3)[(i // 7) % 3]
        red, green, blue = colorsys.hls_to_rgb(hue, light, 0.85)
        rgb = (round(red * 255), round(green * 255), round(blue * 255))
        i += 1
        if rgb not in seen:
            seen.add(rgb)
            colours.append(rgb)
    return np.array(colours, dtype=np.uint8)


@dataclass
class LayerMap:
    """The chosen-kernel index of one switched layer on one picture."""

    name: str
    breadth: int
    index: np.ndarray  # (h, w) int64 at the layer's output resolution

    @property
    def usage(self) -> np.ndarray:
        """Share of the layer's pixels served by each kernel (sums to 1)."""
        counts = np.bincount(self.index.ravel(), minlength=self.breadth).astype(np.float64)
        return counts / max(1, self.index.size)

    @property
    def used(self) -> int:
        """How many kernels serve at least one pixel."""
        return int(np.count_nonzero(self.usage))


@dataclass
class SelectorMap:
    """A composed selector-map picture and what is in it.

    ``boxes`` maps 'input' and each layer name to its panel's (x, y, w, h) on
    ``canvas``; ``legend`` maps kernel index to its swatch's box.
    """

    canvas: np.ndarray
    layers: list[LayerMap]
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    legend: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    shrunk_from: tuple[int, int] | None = None  # (h, w) of the picture before it was capped


class _AllSeen(Exception):
    """Raised from a hook to stop the forward pass once every map is in."""


def index_maps(module: torch.nn.Module, picture: np.ndarray, *, size_multiple: int = 1) -> list[LayerMap]:
    """Run ``module`` on an RGB uint8 picture and return each switched layer's choices.

    Layers come in the order they first ran. ``size_multiple`` crops the
    picture's right and bottom edge to what the model needs.

    Raises:
        VhsupError: the model has no switched convolutions.
    """
    layers = switched_layers(module)
    if not layers:
        raise VhsupError("the model has no switched convolutions, so it has no selector maps")
    m = max(1, int(size_multiple))
    h, w = (picture.shape[0] // m) * m, (picture.shape[1] // m) * m
    if h == 0 or w == 0:
        raise VhsupError(f"the picture is smaller than the {m}-pixel multiple the model needs")
    x = torch.from_numpy(np.ascontiguousarray(picture[:h, :w])).permute(2, 0, 1)[None].float().div(255)
    names = {id(layer): name for name, layer in layers}
    seen: dict[str, LayerMap] = {}

    def hook(layer, _inputs, _output):
        name = names[id(layer)]
        if name not in seen and layer.last_index is not None:
            index = layer.last_index[0].detach().to("cpu", torch.int64).numpy()
            seen[name] = LayerMap(name, int(layer.weight.shape[0]), index)
        if len(seen) == len(layers):
            raise _AllSeen

    handles = [layer.register_forward_hook(hook) for _, layer in layers]
    try:
        with torch.no_grad():
            module.eval()(x)
    except _AllSeen:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values())


def colourise(index: np.ndarray, breadth: int) -> np.ndarray:
    """An (h, w) kernel-index map as an RGB uint8 picture in :func:`palette` colours."""
    return palette(breadth)[np.asarray(index, dtype=np.int64)]


def compose_selector_map(picture: np.ndarray, layers: list[LayerMap]) -> SelectorMap:
    """The grid picture: the input, then one captioned panel per layer, then a legend.

    Every panel is the input's size; maps at another resolution are
    resized with nearest-neighbour so that the colours stay exact palette
    colours.
    """
    h, w = picture.shape[:2]
    panels: list[tuple[str, str, np.ndarray]] = [("input", f"input {w}x{h}", picture)]
    for layer in layers:
        img = colourise(layer.index, layer.breadth)
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
        top = float(layer.usage.max())
        panels.append((layer.name, f"{layer.name}: {layer.used}/{layer.breadth} kernels, top {top:.0%}", img))

    cols = min(len(panels), MAX_COLUMNS)
    rows = -(-len(panels) // cols)
    cap_h = caption_height(w)
    breadth = max((layer.breadth for layer in layers), default=1)
    width = cols * w + (cols - 1) * GAP
    swatch = max(cap_h, 14)
    per_row = max(1, (width + GAP) // (2 * swatch + GAP))
    legend_rows = -(-breadth // per_row)
    height = rows * (cap_h + h) + (rows - 1) * GAP + GAP + legend_rows * (swatch + GAP)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for i, (key, text, img) in enumerate(panels):
        x, y = (i % cols) * (w + GAP), (i // cols) * (cap_h + h + GAP)
        caption(canvas, text, x, y, w, cap_h)
        canvas[y + cap_h : y + cap_h + h, x : x + w] = img
        boxes[key] = (x, y + cap_h, w, h)

    # Legend: a colour swatch per kernel index, with the index beside it.
    legend: dict[int, tuple[int, int, int, int]] = {}
    colours = palette(breadth)
    y0 = rows * (cap_h + h) + (rows - 1) * GAP + GAP
    for k in range(breadth):
        x = (k % per_row) * (2 * swatch + GAP)
        y = y0 + (k // per_row) * (swatch + GAP)
        canvas[y : y + swatch, x : x + swatch] = colours[k]
        legend[k] = (x, y, swatch, swatch)
        caption(canvas, str(k), x + swatch, y, swatch, swatch)
    return SelectorMap(canvas, layers, boxes, legend)


def read_picture(path: Path) -> np.ndarray:
    """An image file as RGB uint8 (16-bit and alpha are reduced to 8-bit RGB)."""
    path = Path(path)
    if not path.is_file():
        raise VhsupError("no such picture", path)
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise VhsupError("cannot decode the picture (expected PNG, JPEG, TIFF, BMP or WebP)", path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def cap_size(picture: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (area-average) so that the longer side is at most ``max_side``."""
    h, w = picture.shape[:2]
    if max(h, w) <= max_side:
        return picture
    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def selector_map(
    module: torch.nn.Module, picture: np.ndarray, *, size_multiple: int = 1, max_side: int = MAX_SIDE
) -> SelectorMap:
    """Maps of every switched layer of ``module`` on ``picture`` (RGB uint8), composed."""
    original = picture.shape[:2]
    small = cap_size(picture, max_side)
    layers = index_maps(module, small, size_multiple=size_multiple)
    m = max(1, int(size_multiple))
    small = small[: (small.shape[0] // m) * m, : (small.shape[1] // m) * m]
    result = compose_selector_map(small, layers)
    if small.shape[:2] != original:
        result.shrunk_from = original
    return result


def write_selector_map(
    path: Path, module: torch.nn.Module, picture: np.ndarray, *, size_multiple: int = 1, max_side: int = MAX_SIDE
) -> SelectorMap:
    """Compute the selector maps and write them as one PNG (atomically)."""
    result = selector_map(module, picture, size_multiple=size_multiple, max_side=max_side)
    write_png(Path(path), result.canvas)
    return result


__all__ = [
    "MAX_SIDE",
    "LayerMap",
    "SelectorMap",
    "cap_size",
    "colourise",
    "compose_selector_map",
    "index_maps",
    "palette",
    "read_picture",
    "selector_map",
    "write_selector_map",
]
