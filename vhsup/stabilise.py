"""Temporal stabiliser: the stage between SR and encode that stops per-frame shimmer.

An upscaler run one frame at a time invents its texture anew in every
frame, and passes on whatever noise the tape put there, so a still face
"boils". This stage carries the previous output forward along the picture's
motion and blends it into the new one wherever the two show the same thing:

1. **Motion, at input resolution** (cheap): OpenCV's DIS optical flow on
   the luma of the model's input pictures, measured backward (for each
   pixel of picture t, where it was in picture t-1).
2. **Trust, at input resolution**: the previous input picture warped by
   that motion is compared with the new one after a low-pass (so that
   noise averages out and only structure counts). Where they differ more
   than the noise explains - an occlusion, a flash, motion the flow got
   wrong - the new frame is used as it is. A pair that differs almost
   everywhere (a scene cut, a jump) resets the stage: the first frame
   after a cut is exactly the per-frame output.
3. **Blend, at output resolution** (on the engine's device): the running
   output is warped by the motion scaled up and mixed with the new SR
   frame, ``state = sr + w * (warp(state) - sr)`` with ``w`` up to the
   mode's strength where the pair is trusted.

Finite memory, so that chunked runs give the frames one process gives.
A recursive blend remembers every frame it ever saw a little, which a
chunk that starts later could never reproduce. So two running outputs
are kept, restarted in turn every :data:`PERIOD` frames (at picture
numbers 0 and PERIOD/2 modulo PERIOD, numbered by presentation time), and
the frame written is a cross-fade between them that gives a running output
no weight at its restart. A frame therefore depends only on the PERIOD
pictures before it, and a chunk that starts PERIOD pictures early (its
warm-up) gives the same frames as one long run.

Nothing here looks ahead: each output frame is written as its SR frame
arrives, so the encoder's queue holds nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MODES", "PERIOD", "Stabiliser", "resolve_mode"]

#: Frames between restarts of each running output (and a chunk's warm-up).
PERIOD = 32

#: Mode -> largest share of the carried-forward output in a frame.
STRENGTH = {"light": 0.6, "auto": 0.8, "strong": 0.9}
MODES = ("auto", "off", "light", "strong")

_FLOW_BLUR = 1.0  # input pixels: luma is softened before flow, so noise does not drive it
_LOWPASS_SIGMA = 1.5  # input pixels: the scale at which structure must agree
# Trust, in 8-bit code values of the low-passed difference (mean over RGB). The
# frame's median difference is what noise alone leaves (most of a picture is
# where the flow is right); a pixel is trusted fully below _T_NOISE times it
# (at least _T_MIN) and not at all above twice that.
_T_MIN = 2.0
_T_NOISE = 2.0
_CUT_LEVEL = 20.0  # a median difference above this: another picture (a cut)
_FADE_LEVEL = 3.0  # a mean (signed) difference above this: the light changed (fade, flash)


def resolve_mode(mode: str, classical: bool) -> str:
    """The mode a run uses: ``auto`` is off for classical resamplers (nothing invented to steady)."""
    if mode not in MODES:
        raise ValueError(f"unknown temporal mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "auto":
        return "off" if classical else "auto"
    return mode


@dataclass
class Trust:
    """What the input pair says: motion (backward, input pixels), per-pixel trust 0..1 and whether it is a cut."""

    flow: np.ndarray  # h x w x 2 float32
    trust: np.ndarray  # h x w float32
    cut: bool
    maps: tuple[np.ndarray, np.ndarray]  # the flow as cv2.remap's absolute positions


_MEAN_RGB = np.full((1, 3), 1.0 / 3.0, np.float32)


def _difference(carried: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The low-passed difference of two h x w x 3 float32 pictures, and its
    mean absolute value over RGB (h x w): noise averages out, structure counts."""
    d3 = cv2.GaussianBlur(carried - current, (0, 0), _LOWPASS_SIGMA)
    return d3, cv2.transform(np.abs(d3), _MEAN_RGB)


def _noise(d: np.ndarray) -> float:
    """The median of a difference map (every fourth pixel: the same level for a quarter of the cost)."""
    return float(np.median(d[::2, ::2]))


def _trusted(d: np.ndarray, noise: float) -> np.ndarray:
    """0..1 per pixel of a difference map: 1 up to what noise explains, 0 from twice that."""
    t1 = max(_T_MIN, _T_NOISE * noise)
    return np.clip((2.0 * t1 - d) / t1, 0.0, 1.0)


def _agreement(carried: np.ndarray, current: np.ndarray) -> np.ndarray:
    """0..1 per pixel: 1 where the carried picture shows what the current one does, up to noise.

    Both are h x w x 3 float32. The picture's median difference is taken as
    what noise alone leaves (most of a picture is where the motion is right).
    """
    d = _difference(carried, current)[1]
    return _trusted(d, _noise(d))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class Stabiliser:
    """Steadies upscaled frames one at a time (see the module docstring).

    ``push(number, src, sr)`` takes picture ``number`` (its place in the
    video by presentation time), the model's input ``src`` (h x w x 3
    uint8) and its output ``sr`` (h*scale x w*scale x 3 uint8), and returns
    the steadied output frame. Frames must come in order; a gap in the
    numbers restarts the stage.
    """

    def __init__(self, mode: str, *, device: torch.device | str = "cpu", period: int = PERIOD):
        if mode not in STRENGTH:
            raise ValueError(f"temporal mode {mode!r} has no strength; choose one of {', '.join(STRENGTH)}")
        if period < 2 or period % 2:
            raise ValueError("the period must be an even number of frames")
        self.mode = mode
        self.strength = STRENGTH[mode]
        self.device = torch.device(device)
        self.period = period
        self._dis = cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_FAST)
        self._prev: tuple[int, np.ndarray, np.ndarray] | None = None  # number, src float, luma for flow
        self._states: torch.Tensor | None = None  # 2 x 3 x H x W float32: the running outputs
        self._low: list[np.ndarray] = []  # their input-size mirrors, h x w x 3 float32
        self._grid: torch.Tensor | None = None
        self._pixels: tuple[np.ndarray, np.ndarray] | None = None  # x and y of each input pixel
        self.cuts = 0

    def reset(self) -> None:
        self._prev = None
        self._states = None
        self._low = []

    # -- input resolution --------------------------------------------------

    def trust(self, prev_src: np.ndarray, prev_y: np.ndarray, src: np.ndarray, y: np.ndarray) -> Trust:
        """Motion from picture t back to t-1, and where warping t-1 by it shows picture t."""
        h, w = y.shape
        flow: np.ndarray = self._dis.calc(y, prev_y, None)  # type: ignore[call-overload]
        if self._pixels is None or self._pixels[0].shape != (h, w):
            self._pixels = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        xs, ys = self._pixels
        mx, my = xs + flow[..., 0], ys + flow[..., 1]
        warped = cv2.remap(prev_src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff, d = _difference(warped, src)
        level = _noise(d)  # what noise alone leaves
        shift = abs(float(diff.mean()))  # a fade or a flash moves the whole picture's level
        cut = level > _CUT_LEVEL or shift > _FADE_LEVEL
        trust = _trusted(d, level)
        trust[(mx < 0) | (mx > w - 1) | (my < 0) | (my > h - 1)] = 0.0  # came from outside the picture
        return Trust(flow, trust.astype(np.float32), cut, (mx, my))

    # -- output resolution -------------------------------------------------

    def _base_grid(self, height: int, width: int) -> torch.Tensor:
        if self._grid is None or self._grid.shape[1:3] != (height, width):
            ys = (torch.arange(height, dtype=torch.float32, device=self.device) + 0.5) * (2.0 / height) - 1.0
            xs = (torch.arange(width, dtype=torch.float32, device=self.device) + 0.5) * (2.0 / width) - 1.0
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            self._grid = torch.stack([gx, gy], dim=-1)[None]
        return self._grid

    def push(self, number: int, src: np.ndarray, sr: np.ndarray) -> np.ndarray:
        h, w = src.shape[:2]
        H, W = sr.shape[:2]
        src_f = src.astype(np.float32)
        y = cv2.GaussianBlur(_luma(src), (0, 0), _FLOW_BLUR)
        sr_low = cv2.resize(sr, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        cur = torch.from_numpy(sr).to(self.device).permute(2, 0, 1).contiguous().float()  # 3 x H x W
        prev = self._prev
        self._prev = (number, src_f, y)
        if prev is None or prev[0] != number - 1 or self._states is None or self._states.shape[-2:] != (H, W):
            return self._restart(cur, sr, sr_low)
        t = self.trust(prev[1], prev[2], src_f, y)
        if t.cut:
            self.cuts += 1
            return self._restart(cur, sr, sr_low)
        phase, half = number % self.period, self.period // 2
        # Each running output also agrees with the new frame where it is carried (its input-size
        # mirror, steadied alike, says so): a trail left by an earlier mistake is not carried on.
        weights = []
        for k, low in enumerate(self._low):
            carried = cv2.remap(low, *t.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            weight = np.minimum(t.trust, _agreement(carried, sr_low)) * self.strength
            restart = phase == (0 if k == 0 else half)
            self._low[k] = sr_low if restart else sr_low + weight[..., None] * (carried - sr_low)
            weights.append(np.zeros_like(weight) if restart else weight)
        # Motion (as grid_sample's -1..1 offsets) and weights, brought to the output size in one pass.
        low = np.dstack([t.flow[..., 0] * (2.0 / w), t.flow[..., 1] * (2.0 / h), *weights])
        up = F.interpolate(
            torch.from_numpy(low).to(self.device).permute(2, 0, 1).contiguous()[None],
            size=(H, W),
            mode="bilinear",
            align_corners=False,
        )[0]
        grid = self._base_grid(H, W) + up[:2].permute(1, 2, 0)[None]
        states = F.grid_sample(
            self._states, grid.expand(2, -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=False
        )
        torch.lerp(cur[None], states, up[2:4, None], out=states)  # sr + w * (carried - sr), w = 0 at a restart
        self._states = states
        lam = 1.0 - abs(phase - half) / half  # share of state 0: none at its restart, all at the other's
        out = torch.lerp(states[1], states[0], lam).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
        return out.permute(1, 2, 0).contiguous().cpu().numpy()

    def _restart(self, cur: torch.Tensor, sr: np.ndarray, sr_low: np.ndarray) -> np.ndarray:
        self._states = torch.stack([cur, cur])
        self._low = [sr_low, sr_low]
        return sr
