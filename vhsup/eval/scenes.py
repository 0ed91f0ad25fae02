"""Clean progressive clips whose motion is known: the benchmark's ground truth.

A scene is a camera moving over pictures that ship with scikit-image (and
one line chart drawn here), rendered at any instant by an affine warp of
the picture. The motion between two instants is then known exactly: a
point of the later frame came from the point of the earlier frame that
the same picture pixel was drawn at. :meth:`Scene.motion` gives it as a
dense flow field with a visibility mask, so temporal metrics need no
estimated optical flow for the truth.

Geometry. A truth frame is the *display* area of the SD frame the tape
module makes from it (720x480, SAR 8:9, display 4:3): W x H pixels whose
aspect ratio is ``DISPLAY_ASPECT * H / W`` (8:9 at the default 2880x1920,
which is exactly the grid of vhsup's x4 output of that SD frame, so output
pixel (x, y) is truth pixel (x, y)). Positions on screen are "display
units": x in [0, 4/3], y in [0, 1]; pixel centres sit at integers, so
truth pixel (i, j) is the display point ((i + 0.5) * 4/3 / W, (j + 0.5) / H).

Motion. ``flow[y, x] = (dx, dy)`` says that pixel (x, y) of the *later*
frame shows what the *earlier* frame shows at (x + dx, y + dy): warping
the earlier frame with ``cv2.remap(earlier, x + dx, y + dy, ...)``
reproduces the later one (backward flow, in truth pixels). ``visible`` is
False where that is not true: the point was covered by another layer or
on a blended edge in either frame, it lies outside the earlier frame (or
within 2 pixels of its edge, where a cubic warp reaches outside), or the
two frames are in different shots (a cut).

Sharpness. The pictures are 300-1411 pixels, smaller than a 2880x1920
truth, so each scene's truth holds about as much detail as a clean SD
frame (:meth:`Scene.magnification` says how many truth pixels one picture
pixel spans). The benchmark therefore scores restoration - noise, chroma,
halos, deinterlacing, steadiness - rather than detail invented beyond SD.
When a picture is drawn smaller than it is, it is low-passed first
(a Gaussian of (s - 1) / 2 picture pixels for s picture pixels per truth
pixel), so that small test renders do not alias.

Every scene is deterministic: the same name, size, length and seed give
the same frames, and the seed only varies the camera path (direction,
speed, phase).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import cv2
import numpy as np

from vhsup.errors import VhsupError

FRAME_RATE = Fraction(30000, 1001)
DISPLAY_ASPECT = Fraction(4, 3)
TRUTH_SIZE = (2880, 1920)  # 4x the 720x480 SD grid: vhsup's x4 output of the SD clip
SECONDS = 3.0

#: How scikit-image documents each picture's licence (its ``skimage.data``
#: docstrings); only public-domain and CC0 pictures are used. "chart" is
#: drawn here.
PICTURES: dict[str, str] = {
    "astronaut": "public domain: 'No known copyright restrictions, released into the public domain' (NASA)",
    "brick": "CC0: 'downloaded from CC0Textures and licensed under the Creative Commons CC0 License'",
    "chelsea": "CC0: 'No copyright restrictions. CC0 by the photographer (Stefan van der Walt)'",
    "coffee": "CC0: 'No copyright restrictions. CC0 by the photographer (Rachel Michetti)'",
    "grass": "CC0: 'downloaded from DeviantArt and licensed under the Creative Commons CC0 License'",
    "gravel": "CC0: 'downloaded from CC0Textures and licensed under the Creative Commons CC0 License'",
    "hubble_deep_field": "public domain: 'captured by NASA and may be freely used in the public domain'",
    "retina": "CC0: 'made available under the Creative Commons CC0 1.0 Universal Public Domain Dedication'",
    "rocket": "public domain: 'captured by SpaceX and released in the public domain'",
    "text": "public domain: 'No known copyright restrictions, released into the public domain'",
    "chart": "drawn by vhsup (lines, bars and lettering; part of this project)",
}

# Greyscale pictures get a colour, so that chroma has something to carry.
_TINTS = {
    "grass": (0.62, 0.88, 0.40),
    "gravel": (0.95, 0.88, 0.78),
    "brick": (1.0, 0.58, 0.46),
    "text": (1.0, 0.97, 0.9),
}

Pictures = Callable[[str], np.ndarray]
#: t (seconds) -> 3x3 matrix taking display units to picture pixel coordinates.
Camera = Callable[[float], np.ndarray]

_EDGE = 2  # pixels a cubic warp reaches around the point it samples


# --------------------------------------------------------------------------
# Pictures.


@lru_cache(maxsize=16)
def load_picture(name: str) -> np.ndarray:
    """The picture ``name`` (a key of :data:`PICTURES`) as float32 RGB 0-255, read-only."""
    if name not in PICTURES:
        raise VhsupError(f"unknown benchmark picture {name!r}; the pictures are {', '.join(PICTURES)}")
    if name == "chart":
        img = _chart()
    else:
        try:
            from skimage import data
        except ImportError:  # scikit-image is the 'demo' extra
            raise VhsupError("the benchmark's pictures come from scikit-image: pip install 'vhsup[demo]'") from None
        raw = getattr(data, name)()
        img = raw[..., :3].astype(np.float32)
        if raw.ndim == 2:
            img = raw.astype(np.float32)[..., None] * np.array(_TINTS[name], np.float32)
    img = np.ascontiguousarray(img, dtype=np.float32)
    img.setflags(write=False)
    return img


def _chart() -> np.ndarray:
    """Fine lines, bars and lettering, black and colour on paper (896x560)."""
    w, h = 896, 560
    img = np.full((h, w, 3), 236, np.uint8)
    ink, red, blue = (20, 20, 24), (200, 30, 30), (30, 50, 190)
    lines = (
        ("VHSUP TEST CHART 1996", 1.4, 2, ink),
        ("The quick brown fox jumps over the lazy dog 0123456789", 0.8, 1, ink),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz", 0.6, 1, blue),
        ("PLAY  REW  FF  STOP  REC  SP  LP  EP  CH 03  TRACKING", 0.5, 1, red),
    )
    y = 40
    for text, scale, thick, colour in lines:
        cv2.putText(img, text, (24, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
        y += int(46 * scale) + 14
    # A fan of lines converging to a point: every spatial frequency at once.
    apex = (660, 200)
    for k in range(25):
        x = 440 + k * 18
        cv2.line(img, apex, (x, h - 20), red if k % 6 == 0 else ink, 1, cv2.LINE_AA)
    # Bar groups: vertical and horizontal, periods 2 to 8 pixels.
    x = 24
    for period in (2, 3, 4, 6, 8):
        for i in range(0, 72, period):
            img[220:300, x + i : x + i + period // 2] = ink
            img[320 + i : 320 + i + period // 2, x : x + 72] = blue if period == 4 else ink
        x += 84
    cv2.rectangle(img, (24, 420), (400, 520), red, 2, cv2.LINE_AA)
    cv2.circle(img, (212, 470), 40, blue, 2, cv2.LINE_AA)
    return img.astype(np.float32)


def _sprite(pictures: Pictures) -> tuple[np.ndarray, np.ndarray]:
    """Chelsea's face in a disc: premultiplied RGB and alpha (a 1-pixel soft rim)."""
    face = np.asarray(pictures("chelsea"), np.float32)[5:295, 80:370]
    d = face.shape[0]
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32)
    r = np.hypot(xx - (d - 1) / 2, yy - (d - 1) / 2)
    alpha = np.clip(d / 2 - 1.0 - r, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(face * alpha[..., None]), alpha


# --------------------------------------------------------------------------
# Cameras: display units -> picture pixels.


def affine(centre: tuple[float, float], scale: float, angle: float, anchor: tuple[float, float]) -> np.ndarray:
    """3x3: the display point ``anchor`` shows picture point ``centre``; one display
    unit spans ``scale`` picture pixels; the picture is turned by ``angle`` radians."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    ax, ay = anchor
    return np.array(
        [[c, -s, centre[0] - (c * ax - s * ay)], [s, c, centre[1] - (s * ax + c * ay)], [0.0, 0.0, 1.0]], np.float64
    )


def view(cx: float, cy: float, height: float, angle: float = 0.0, dar: Fraction = DISPLAY_ASPECT) -> np.ndarray:
    """A camera looking at picture point (cx, cy), the frame ``height`` picture pixels tall."""
    return affine((cx, cy), height, angle, (float(dar) / 2, 0.5))


def _smooth(u: float) -> float:
    """0 -> 0 and 1 -> 1 with zero speed at both ends (a camera operator's ease)."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


# --------------------------------------------------------------------------
# Scenes.


@dataclass(frozen=True)
class Layer:
    """A picture on screen.

    Attributes:
        image: float32 (h, w, 3), 0-255; premultiplied by ``alpha`` when that is given.
        camera: where the picture is at each instant.
        alpha: float32 (h, w) in [0, 1] for a foreground cut-out; None for the
            background, which is opaque and must cover the frame.
        picture: the :data:`PICTURES` name(s) it was made from, for the record.
    """

    image: np.ndarray
    camera: Camera
    alpha: np.ndarray | None = None
    picture: str = ""


@dataclass(frozen=True)
class Shot:
    """Layers (back to front) from ``start`` seconds until the next shot."""

    start: float
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Motion:
    """Backward flow from a later frame to an earlier one (see the module notes).

    Attributes:
        flow: float32 (H, W, 2), (dx, dy) in truth pixels.
        visible: bool (H, W), where the flow is exact.
    """

    flow: np.ndarray
    visible: np.ndarray


class Scene:
    """A clip: shots of layers, rendered at ``size`` (W, H) and ``rate`` frames per second."""

    def __init__(
        self,
        name: str,
        shots: Sequence[Shot],
        frames: int,
        *,
        size: tuple[int, int] = TRUTH_SIZE,
        rate: Fraction = FRAME_RATE,
        dar: Fraction = DISPLAY_ASPECT,
        seed: int = 0,
        window: tuple[int, int, int, int] | None = None,
    ):
        w, h = (int(v) for v in size)
        if w < 8 or h < 8:
            raise VhsupError(f"scene {name!r}: a truth size of {w}x{h} is too small (8x8 at least)")
        if frames < 1 or not shots or shots[0].start > 0:
            raise VhsupError(f"scene {name!r}: needs frames and a first shot starting at 0")
        x0, y0, ww, wh = (0, 0, w, h) if window is None else (int(v) for v in window)
        if x0 < 0 or y0 < 0 or ww < 8 or wh < 8 or x0 + ww > w or y0 + wh > h:
            raise VhsupError(
                f"scene {name!r}: a window of {ww}x{wh} at ({x0}, {y0}) does not fit in {w}x{h} (8x8 at least)"
            )
        self.name, self.shots, self.frames = name, tuple(shots), int(frames)
        self.full_size, self.window = (w, h), (x0, y0, ww, wh)
        self.size, self.rate, self.dar, self.seed = (ww, wh), Fraction(rate), Fraction(dar), seed
        # truth pixel index (of the window) -> display units, and back
        self._to_display = np.array(
            [[float(dar) / w, 0.0, 0.5 * float(dar) / w], [0.0, 1.0 / h, 0.5 / h], [0.0, 0.0, 1.0]], np.float64
        ) @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]], np.float64)
        self._from_display = np.linalg.inv(self._to_display)

    def at_size(self, size: tuple[int, int]) -> Scene:
        """The same clip's whole frame rendered at another size (the SD camera, a smaller truth)."""
        return Scene(self.name, self.shots, self.frames, size=size, rate=self.rate, dar=self.dar, seed=self.seed)

    def windowed(self, left: int, top: int, width: int, height: int) -> Scene:
        """Only the ``width`` x ``height`` pixels at (``left``, ``top``) of the whole frame.

        Frames are exactly what cropping the whole frame there gives, and
        motion is the whole frame's flow there (pixel (x, y) of the window is
        pixel (x + left, y + top) of the frame). Visibility is the window's
        own: content that comes from outside the window (or from within 2
        pixels of its edge) was not seen in the earlier window frame.
        """
        window = (left, top, width, height)
        return Scene(
            self.name,
            self.shots,
            self.frames,
            size=self.full_size,
            rate=self.rate,
            dar=self.dar,
            seed=self.seed,
            window=window,
        )

    # -- time -------------------------------------------------------------

    def time(self, n: float) -> float:
        """Seconds at frame ``n`` (a fraction of a frame for fields: n + 0.5)."""
        return float(n / self.rate)

    def shot_at(self, t: float) -> int:
        """Index of the shot on screen at ``t`` seconds."""
        k = 0
        for i, shot in enumerate(self.shots):
            if shot.start <= t + 1e-9:
                k = i
        return k

    @property
    def cuts(self) -> tuple[int, ...]:
        """Frames that begin a new shot (the first frame of each shot after the first)."""
        return tuple(n for n in range(1, self.frames) if self.shot_at(self.time(n)) != self.shot_at(self.time(n - 1)))

    @property
    def seconds(self) -> float:
        return float(self.frames / self.rate)

    @property
    def pixel_aspect(self) -> Fraction:
        """Aspect ratio of one truth pixel (8:9 at 2880x1920, like the SD frame's samples)."""
        return self.dar * self.full_size[1] / self.full_size[0]

    # -- pictures -----------------------------------------------------------

    def _matrix(self, layer: Layer, t: float) -> np.ndarray:
        """3x3: truth pixel index -> picture pixel coordinates at ``t``."""
        return layer.camera(t) @ self._to_display

    def _warp(self, layer: Layer, t: float) -> tuple[np.ndarray, np.ndarray | None]:
        m = self._matrix(layer, t)
        img = layer.image if layer.alpha is None else np.dstack([layer.image, layer.alpha])
        step = max(math.hypot(m[0, 0], m[1, 0]), math.hypot(m[0, 1], m[1, 1]))  # picture px per truth px
        if step > 1.0:
            img = cv2.GaussianBlur(img, (0, 0), (step - 1.0) / 2, borderType=cv2.BORDER_REFLECT_101)
        border = cv2.BORDER_REFLECT_101 if layer.alpha is None else cv2.BORDER_CONSTANT
        out = cv2.warpAffine(
            np.ascontiguousarray(img, dtype=np.float32),
            m[:2],
            self.size,
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=border,
            borderValue=(0.0, 0.0, 0.0, 0.0),
        )
        if layer.alpha is None:
            return out, None
        return out[..., :3], np.clip(out[..., 3], 0.0, 1.0)

    def render(self, t: float) -> np.ndarray:
        """The truth at ``t`` seconds: float32 RGB (H, W, 3) in 0-255."""
        layers = self.shots[self.shot_at(t)].layers
        out, _ = self._warp(layers[0], t)
        for layer in layers[1:]:
            fg, alpha = self._warp(layer, t)
            assert alpha is not None  # only the first layer is opaque
            out = out * (1.0 - alpha[..., None]) + fg
        return np.clip(out, 0.0, 255.0)

    def frame(self, n: int) -> np.ndarray:
        """Truth frame ``n`` (at ``n / rate`` seconds): uint8 RGB (H, W, 3)."""
        return np.round(self.render(self.time(n))).astype(np.uint8)

    def truth(self) -> Iterator[np.ndarray]:
        """Every truth frame in order."""
        for n in range(self.frames):
            yield self.frame(n)

    def magnification(self) -> float:
        """The most truth pixels one picture pixel spans, over the clip (> 1: the picture is enlarged)."""
        worst = 0.0
        for n in range(self.frames):
            t = self.time(n)
            for layer in self.shots[self.shot_at(t)].layers:
                m = self._matrix(layer, t)
                step = min(math.hypot(m[0, 0], m[1, 0]), math.hypot(m[0, 1], m[1, 1]))
                worst = max(worst, 1.0 / step)
        return worst

    # -- motion -----------------------------------------------------------

    def motion(self, t_from: float, t_to: float) -> Motion:
        """Where each pixel of the frame at ``t_to`` was in the frame at ``t_from``."""
        w, h = self.size
        shot = self.shot_at(t_to)
        if shot != self.shot_at(t_from):
            return Motion(np.zeros((h, w, 2), np.float32), np.zeros((h, w), bool))
        layers = self.shots[shot].layers
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        # Layer masks come from the window grown by the erosion's reach, so
        # that the window's pixels see what lies beyond its edges as the
        # whole frame's do.
        grown, (gx, gy) = self._grown()

        def cut(masks: list) -> list:
            return [m if m is None else m[gy : gy + h, gx : gx + w] for m in masks]

        alpha_grown = grown._alphas(layers, t_to)
        alpha_to = cut(alpha_grown)
        pure_to = cut(grown._pure(alpha_grown))
        pure_from = cut(grown._pure(grown._alphas(layers, t_from)))
        # The layer on top (alpha >= 1/2) owns a pixel's flow.
        owner = np.zeros((h, w), np.int64)
        for i, a in enumerate(alpha_to):
            if a is not None:
                owner[a >= 0.5] = i
        flow = np.zeros((h, w, 2), np.float64)
        visible = np.zeros((h, w), bool)
        for i, layer in enumerate(layers):
            m_to = self._matrix(layer, t_to)
            back = np.linalg.inv(self._matrix(layer, t_from)) @ m_to  # later pixel -> earlier pixel
            qx = back[0, 0] * xs + back[0, 1] * ys + back[0, 2]
            qy = back[1, 0] * xs + back[1, 1] * ys + back[1, 2]
            mine = owner == i
            flow[mine, 0] = (qx - xs)[mine]
            flow[mine, 1] = (qy - ys)[mine]
            inside = (qx >= _EDGE) & (qx <= w - 1 - _EDGE) & (qy >= _EDGE) & (qy <= h - 1 - _EDGE)
            ok = pure_to[i] & inside
            if layer.alpha is None:
                ok &= self._in_picture(layer, m_to, xs, ys)
            qi = np.clip(np.round(qx).astype(np.int64), 0, w - 1)
            qj = np.clip(np.round(qy).astype(np.int64), 0, h - 1)
            ok &= pure_from[i][qj, qi]
            visible |= ok
        return Motion(flow.astype(np.float32), visible)

    def pair(self, n: int) -> Motion:
        """Motion from frame ``n + 1`` back to frame ``n``."""
        return self.motion(self.time(n), self.time(n + 1))

    def _grown(self) -> tuple[Scene, tuple[int, int]]:
        """This window grown by ``_EDGE`` pixels on each side (within the whole
        frame), and where the window starts inside it."""
        x0, y0, w, h = self.window
        fw, fh = self.full_size
        gx0, gy0 = max(0, x0 - _EDGE), max(0, y0 - _EDGE)
        gx1, gy1 = min(fw, x0 + w + _EDGE), min(fh, y0 + h + _EDGE)
        if (gx0, gy0, gx1 - gx0, gy1 - gy0) == self.window:
            return self, (0, 0)
        return self.windowed(gx0, gy0, gx1 - gx0, gy1 - gy0), (x0 - gx0, y0 - gy0)

    def _alphas(self, layers: tuple[Layer, ...], t: float) -> list[np.ndarray | None]:
        return [None if layer.alpha is None else self._warp(layer, t)[1] for layer in layers]

    def _pure(self, alphas: list[np.ndarray | None]) -> list[np.ndarray]:
        """Per layer, where the frame shows that layer alone, with a margin of
        ``_EDGE`` pixels (what a cubic warp there reads)."""
        w, h = self.size
        kernel = np.ones((2 * _EDGE + 1, 2 * _EDGE + 1), np.uint8)

        def erode(mask: np.ndarray) -> np.ndarray:
            out: np.ndarray = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1)
            return out.astype(bool)

        clear = [np.ones((h, w), bool) if a is None else erode(a == 0.0) for a in alphas]
        pure = []
        for i, a in enumerate(alphas):
            mask = np.ones((h, w), bool) if a is None else erode(a >= 1.0 - 1e-5)
            for above in clear[i + 1 :]:
                mask &= above
            pure.append(mask)
        return pure

    def _in_picture(self, layer: Layer, m: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Where the warp reads inside the picture (not its mirrored border)."""
        ph, pw = layer.image.shape[:2]
        px = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        py = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        return (px >= _EDGE) & (px <= pw - 1 - _EDGE) & (py >= _EDGE) & (py <= ph - 1 - _EDGE)

    # -- the record ---------------------------------------------------------

    def describe(self) -> dict:
        """What the sidecar says about the truth (JSON-ready)."""
        names = sorted({p for shot in self.shots for layer in shot.layers for p in layer.picture.split("+") if p})
        return {
            "scene": self.name,
            "seed": self.seed,
            "size": list(self.full_size),
            "pixel_aspect": str(self.pixel_aspect),
            "display_aspect": str(self.dar),
            "rate": str(self.rate),
            "frames": self.frames,
            "seconds": round(self.seconds, 6),
            "cuts": list(self.cuts),
            "magnification": round(self.magnification(), 3),
            "pictures": {p: PICTURES[p] for p in names if p in PICTURES},
        }


# --------------------------------------------------------------------------
# The catalogue.


@dataclass(frozen=True)
class _Ctx:
    seconds: float
    frames: int
    rng: np.random.Generator
    pictures: Pictures
    dar: Fraction

    def pic(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self.pictures(name), dtype=np.float32)

    def sign(self) -> float:
        return 1.0 if self.rng.random() < 0.5 else -1.0


def _bg(ctx: _Ctx, name: str, camera: Camera, image: np.ndarray | None = None) -> Layer:
    return Layer(ctx.pic(name) if image is None else image, camera, picture=name)


def _pan(ctx: _Ctx) -> list[Shot]:
    """A slow, steady horizontal pan across a cup of coffee on wood (about 1.6 SD px per frame)."""
    d, T = ctx.sign(), ctx.seconds
    x0, x1 = (246.0, 353.0) if d > 0 else (353.0, 246.0)
    cy = 200.0 + ctx.rng.uniform(-10, 10)

    def cam(t: float) -> np.ndarray:
        return view(x0 + (x1 - x0) * t / T, cy, 360.0, dar=ctx.dar)

    return [Shot(0.0, (_bg(ctx, "coffee", cam),))]


def _zoom(ctx: _Ctx) -> list[Shot]:
    """A push-in (or pull-out) on the rocket on its pad, eased at both ends."""
    far, near = 400.0, ctx.rng.uniform(230.0, 280.0)
    a, b = (far, near) if ctx.rng.random() < 0.5 else (near, far)
    T = ctx.seconds

    def cam(t: float) -> np.ndarray:
        return view(318.0, 213.0, a * (b / a) ** _smooth(t / T), dar=ctx.dar)

    return [Shot(0.0, (_bg(ctx, "rocket", cam),))]


def _rotate(ctx: _Ctx) -> list[Shot]:
    """The Hubble deep field turning slowly about the frame's centre (6-12 degrees)."""
    total = ctx.sign() * math.radians(ctx.rng.uniform(6.0, 12.0))
    start = ctx.rng.uniform(-0.5, 0.5)
    T = ctx.seconds

    def cam(t: float) -> np.ndarray:
        return view(499.5, 435.5, 480.0, start + total * t / T, dar=ctx.dar)

    return [Shot(0.0, (_bg(ctx, "hubble_deep_field", cam),))]


def _occlusion(ctx: _Ctx) -> list[Shot]:
    """A cat's face in a disc crossing the frame in front of a slowly tilting retina photo."""
    T, dar = ctx.seconds, float(ctx.dar)
    d = ctx.sign()
    tilt = ctx.sign() * 60.0
    sprite, alpha = _sprite(ctx.pictures)
    size = 0.5  # display units tall
    x0, x1 = (0.22, dar - 0.22) if d > 0 else (dar - 0.22, 0.22)
    phase = ctx.rng.uniform(0, 2 * math.pi)
    centre = ((sprite.shape[1] - 1) / 2, (sprite.shape[0] - 1) / 2)

    def back(t: float) -> np.ndarray:
        return view(705.0, 705.0 + tilt * (t / T - 0.5), 900.0, dar=ctx.dar)

    def front(t: float) -> np.ndarray:
        u = t / T
        anchor = (x0 + (x1 - x0) * u, 0.5 + 0.08 * math.sin(2 * math.pi * u + phase))
        return affine(centre, sprite.shape[0] / size, 0.3 * d * u, anchor)

    fg = Layer(sprite, front, alpha, picture="chelsea")
    return [Shot(0.0, (_bg(ctx, "retina", back), fg))]


def _cut(ctx: _Ctx) -> list[Shot]:
    """A tilt down the astronaut, then a hard cut to the rocket pulling out."""
    T = ctx.seconds
    cut = float((ctx.frames // 2) / FRAME_RATE)  # the cut falls between two frames
    up = ctx.sign()

    def first(t: float) -> np.ndarray:
        u = t / max(cut, 1e-6)
        return view(243.0 + 26.0 * u, 240.0 + up * 20.0 * (u - 0.5), 360.0, dar=ctx.dar)

    def second(t: float) -> np.ndarray:
        u = (t - cut) / max(T - cut, 1e-6)
        return view(318.0, 213.0, 280.0 * (380.0 / 280.0) ** u, dar=ctx.dar)

    return [Shot(0.0, (_bg(ctx, "astronaut", first),)), Shot(cut, (_bg(ctx, "rocket", second),))]


def _talking_head(ctx: _Ctx) -> list[Shot]:
    """Head and shoulders of the astronaut, swaying by under half an SD pixel."""
    p = ctx.rng.uniform(0, 2 * math.pi, 3)

    def cam(t: float) -> np.ndarray:
        dx = 0.30 * math.sin(2 * math.pi * t / 2.9 + p[0])
        dy = 0.20 * math.sin(2 * math.pi * t / 3.7 + p[1])
        angle = 0.0015 * math.sin(2 * math.pi * t / 4.3 + p[2])
        return view(228.0 + dx, 160.0 + dy, 300.0, angle, dar=ctx.dar)

    return [Shot(0.0, (_bg(ctx, "astronaut", cam),))]


def _texture(ctx: _Ctx) -> list[Shot]:
    """Grass, gravel and brick side by side, drifting diagonally (fine texture)."""
    canvas = np.ascontiguousarray(np.hstack([ctx.pic("grass"), ctx.pic("gravel"), ctx.pic("brick")]))
    d, T = ctx.sign(), ctx.seconds
    x0, x1 = (560.0, 900.0) if d > 0 else (900.0, 560.0)
    dy = ctx.sign() * 20.0

    def cam(t: float) -> np.ndarray:
        u = t / T
        return view(x0 + (x1 - x0) * u, 256.0 + dy * (u - 0.5), 440.0, dar=ctx.dar)

    return [Shot(0.0, (Layer(canvas, cam, picture="grass+gravel+brick"),))]


def _text(ctx: _Ctx) -> list[Shot]:
    """Handwritten formulas over a drawn chart of lines and lettering, scrolling like credits."""
    text = ctx.pic("text")
    chart = ctx.pic("chart")
    big = cv2.resize(text, (chart.shape[1], 2 * text.shape[0]), interpolation=cv2.INTER_CUBIC)
    canvas = np.ascontiguousarray(np.vstack([big, chart]))
    top, bottom = 333.0, canvas.shape[0] - 333.0
    a, b = (top, bottom) if ctx.rng.random() < 0.5 else (bottom, top)
    T = ctx.seconds

    def cam(t: float) -> np.ndarray:
        return view(447.5, a + (b - a) * t / T, 660.0, dar=ctx.dar)

    return [Shot(0.0, (Layer(canvas, cam, picture="text+chart"),))]


_BUILDERS: dict[str, Callable[[_Ctx], list[Shot]]] = {
    "pan": _pan,
    "zoom": _zoom,
    "rotate": _rotate,
    "occlusion": _occlusion,
    "cut": _cut,
    "talking_head": _talking_head,
    "texture": _texture,
    "text": _text,
}
SCENES: tuple[str, ...] = tuple(_BUILDERS)

#: Where each scene's action is, as (left, top, width, height) in samples of
#: the 720x480 SD frame (whatever the seed): the region ``vhsup eval run``
#: scores by default, 240x160 so that a GAN model runs on it in reasonable
#: time on a CPU. All lie above the bottom 120 lines (clear of a VHS clip's
#: head-switching tear).
WINDOWS: dict[str, tuple[int, int, int, int]] = {
    "pan": (300, 200, 240, 160),  # the cup's rim, coffee and saucer sliding by
    "zoom": (240, 160, 240, 160),  # the rocket's nose and the sky around it
    "rotate": (420, 60, 240, 160),  # stars far from the centre of the turn, where they move most
    "occlusion": (240, 160, 240, 160),  # the middle of the disc's path: both its edges cross it
    "cut": (250, 40, 240, 160),  # the astronaut's face, then the rocket's nose after the cut
    "talking_head": (280, 112, 240, 160),  # the face
    "texture": (240, 160, 240, 160),  # gravel, with grass or brick drifting in
    "text": (240, 160, 240, 160),  # formulas, then the chart's lettering scrolling up
}


def make_scene(
    name: str,
    *,
    size: tuple[int, int] = TRUTH_SIZE,
    seconds: float = SECONDS,
    seed: int = 0,
    pictures: Pictures = load_picture,
) -> Scene:
    """The catalogue scene ``name`` (one of :data:`SCENES`).

    Args:
        size: truth (W, H); the display is always 4:3.
        seconds: length, rounded to whole frames at 30000/1001 fps.
        seed: varies the camera path; the same seed gives the same clip.
        pictures: name -> RGB picture; the default loads :data:`PICTURES`
            (tests pass smooth stand-ins of the same sizes).
    """
    if name not in _BUILDERS:
        raise VhsupError(f"unknown scene {name!r}; the scenes are {', '.join(SCENES)}")
    if not 0 < seconds <= 60:
        raise VhsupError(f"scene {name!r}: length must be between 0 and 60 s, not {seconds}")
    frames = max(2, round(seconds * FRAME_RATE))
    exact = float(frames / FRAME_RATE)
    rng = np.random.default_rng([int(seed), SCENES.index(name)])
    shots = _BUILDERS[name](_Ctx(exact, frames, rng, pictures, DISPLAY_ASPECT))
    return Scene(name, shots, frames, size=size, seed=seed)
