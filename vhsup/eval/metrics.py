"""Scores of an upscaled clip against its ground truth: fidelity per frame, steadiness over time.

Everything here is numpy/OpenCV on the CPU and needs no learned weights.
Frames are H x W x 3 uint8 RGB, the output and its truth at the same size.

**Fidelity, per frame.** PSNR-Y and SSIM-Y follow the super-resolution
literature, so that numbers compare with published tables: both are
computed on BT.601 luma (the Y of 8-bit studio-range YCbCr, as MATLAB's
``rgb2ycbcr``: 16..235, not rounded), PSNR with a peak of 255, SSIM with
the 11x11 Gaussian window of sigma 1.5 and K1 = 0.01, K2 = 0.03, averaged
where the whole window lies inside the picture. ``border`` pixels are
cropped from each edge first; use the model's scale, as those papers do,
because an upscaler's outer pixels see a padded picture.

HaarPSI (Reisenhofer, Bosse, Kutyniok and Wiegand, "A Haar wavelet-based
perceptual similarity index for image quality assessment", Signal
Processing: Image Communication 61, 2018) is the perceptual full-reference
score: 1 for identical pictures, lower as structure is lost or invented.
It is the paper's greyscale form on the same BT.601 luma stretched to
0..255, with the paper's constants (C = 30, alpha = 4.2, three Haar
scales, a 2x2 mean and subsampling first for viewing distance, zero
padding at the edges as in the authors' reference code). Chroma is not
scored: all three fidelity scores are luma scores.

**Steadiness, over frame pairs.** Motion is given per frame pair (t, t+1)
as a *backward* flow at the frame's own resolution: an H x W x 2 float
array whose ``[y, x]`` is the (dx, dy) in pixels such that frame t+1 at
(x, y) shows what frame t showed at (x + dx, y + dy) - the flow in
OpenCV's layout, laid on frame t+1's grid, pointing into frame t. With it
comes a visibility mask on the same grid: True where that content was
visible in frame t (False where it was occluded, or is new at an edge, and
everywhere on the pair across a scene cut). Pixels whose source position
falls outside frame t are dropped as well, whatever the mask says.

- :func:`warp_error` (E_warp of Lai et al., "Learning blind video temporal
  consistency", ECCV 2018, with an absolute rather than squared
  difference): the mean of |frame[t+1] - warp(frame[t])| over the pixels
  that stay visible and over the three channels, in 8-bit code values.
  ``warp`` samples frame t at the flow's positions with ``cv2.remap``,
  bilinear. OpenCV quantises remap positions to 1/32 pixel, which the
  truth and the output share. A pair with no visible pixel scores NaN and
  is left out of clip means.
- :func:`flicker_ratio`: E_warp of the output over E_warp of the truth,
  both warped by the truth's own (known) motion. 1.0 is as steady as the
  truth; per-frame shimmer raises it, a frozen or over-smoothed output
  lowers it. When the truth is perfectly steady (E_warp exactly 0) the
  ratio is 1.0 for an equally steady output and infinite otherwise.
- :func:`tof` (TecoGAN's tOF): the mean end-point distance, in pixels,
  between the optical flow measured on the output's frame pair and on the
  truth's, both with OpenCV's DIS flow (preset MEDIUM) on luma, measured
  backward like the motion so that the same visibility mask applies.

**Resolution.** The benchmark renders its truth at the output's resolution,
so the motion (and the mask) come at the size of the frames scored and are
used as they are; a size mismatch is an error. Motion known at another
size is brought to the frames' size by :func:`resize_motion` (vectors
scaled per axis, fields resampled pixel-centre to pixel-centre, the mask
kept only where every truth pixel under an output pixel was visible).

:class:`ClipScorer` scores a clip frame by frame with only the previous
pair in memory, into a JSON-serialisable :class:`ClipScores`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "ClipScorer",
    "ClipScores",
    "check_rgb",
    "e_warp",
    "flicker_ratio",
    "haarpsi",
    "json_float",
    "luma",
    "optical_flow",
    "psnr_y",
    "resize_motion",
    "ssim_y",
    "tof",
    "tof_pairs",
    "warp",
    "warp_error",
    "warp_errors",
]

# BT.601 luma of 8-bit RGB into studio range 16..235, as in the SR literature.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_SSIM_RADIUS = 5  # 11x11 window
_SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_PEAK = 255.0

# HaarPSI constants from the paper (tuned for luma in 0..255).
_HAAR_C = 30.0
_HAAR_ALPHA = 4.2


# --- checks and luma -----------------------------------------------------------


def check_rgb(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` as an array, or ValueError unless it is a non-empty H x W x 3 uint8 picture."""
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or 0 in a.shape:
        raise ValueError(f"{what} must be an H x W x 3 uint8 RGB array, not {a.dtype} {a.shape}")
    return a


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (16..235, float64, not rounded) of an H x W x 3 uint8 RGB picture."""
    rgb = check_rgb(rgb, "picture")
    return rgb.astype(np.float64) @ _Y_WEIGHTS + 16.0


def _full_range(y: np.ndarray) -> np.ndarray:
    """Studio-range luma stretched to 0..255 (0.299 R + 0.587 G + 0.114 B)."""
    return (y - 16.0) * (255.0 / 219.0)


def _luma8(rgb: np.ndarray) -> np.ndarray:
    """Full-range luma rounded to uint8, the single plane optical flow reads."""
    return np.clip(np.rint(_full_range(luma(rgb))), 0, 255).astype(np.uint8)


def _check_border(border: int, height: int, width: int) -> int:
    border = int(border)
    if border < 0 or 2 * border >= min(height, width):
        raise ValueError(f"border {border} leaves nothing of a {width}x{height} picture")
    return border


def _crop(a: np.ndarray, border: int) -> np.ndarray:
    return a[border:-border, border:-border] if border else a


def _pair_y(a: np.ndarray, b: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = check_rgb(a, "first picture"), check_rgb(b, "second picture")
    if a.shape != b.shape:
        raise ValueError(f"pictures differ in size: {a.shape} vs {b.shape}")
    border = _check_border(border, *a.shape[:2])
    return luma(_crop(a, border)), luma(_crop(b, border))


# --- fidelity ------------------------------------------------------------------


def psnr_y(a: np.ndarray, b: np.ndarray, *, border: int = 0) -> float:
    """PSNR in dB on BT.601 luma, peak 255; ``inf`` for identical pictures.

    ``a`` and ``b`` are H x W x 3 uint8 RGB of one size; ``border`` pixels
    are dropped from each edge first.
    """
    ya, yb = _pair_y(a, b, border)
    mse = float(np.mean((ya - yb) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(_PEAK * _PEAK / mse)


def _gauss_1d() -> np.ndarray:
    x = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def ssim_y(a: np.ndarray, b: np.ndarray, *, border: int = 0) -> float:
    """Mean SSIM on BT.601 luma (Gaussian 11x11 window, sigma 1.5, K1 .01, K2 .03).

    Local statistics are population (not sample) moments, and the mean is
    taken only where the whole window lies inside the picture, so no edge
    padding enters the score. Pictures must be at least 11 px each way after
    the ``border`` crop.
    """
    ya, yb = _pair_y(a, b, border)
    r = _SSIM_RADIUS
    if min(ya.shape) < 2 * r + 1:
        raise ValueError(f"SSIM needs at least {2 * r + 1}x{2 * r + 1} pixels, got {ya.shape[1]}x{ya.shape[0]}")
    g = _gauss_1d()

    def blur(x: np.ndarray) -> np.ndarray:
        # Only the fully-covered ("valid") part is kept below, so the border
        # mode never matters.
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g)[r:-r, r:-r]

    mu_a, mu_b = blur(ya), blur(yb)
    var_a = blur(ya * ya) - mu_a * mu_a
    var_b = blur(yb * yb) - mu_b * mu_b
    cov = blur(ya * yb) - mu_a * mu_b
    c1, c2 = (_K1 * _PEAK) ** 2, (_K2 * _PEAK) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def _halve(y: np.ndarray) -> np.ndarray:
    """2x2 means at every second sample; an odd last row/column meets zeros."""
    h, w = y.shape
    y = np.pad(y, ((0, h % 2), (0, w % 2)))
    return (y[0::2, 0::2] + y[1::2, 0::2] + y[0::2, 1::2] + y[1::2, 1::2]) / 4.0


def _box_sums(table: np.ndarray, r0: int, c0: int, rows: int, cols: int, h: int, w: int) -> np.ndarray:
    """From the summed-area ``table`` of a picture P: for every (r, c) of an h x w
    output, the sum of P[r0 + r : r0 + r + rows, c0 + c : c0 + c + cols]."""
    return (
        table[r0 + rows : r0 + rows + h, c0 + cols : c0 + cols + w]
        - table[r0 : r0 + h, c0 + cols : c0 + cols + w]
        - table[r0 + rows : r0 + rows + h, c0 : c0 + w]
        + table[r0 : r0 + h, c0 : c0 + w]
    )


def _haar_magnitudes(y: np.ndarray, scales: int = 3) -> list[list[np.ndarray]]:
    """|Haar detail coefficients| of ``y``: ``[orientation][scale]``, each y's size.

    Scale j uses the 2^j x 2^j Haar filter with entries +-2^-j: orientation
    0 differences the upper and lower halves of the window, orientation 1
    the left and right halves. The window of output pixel (r, c) spans
    rows/columns r - 2^(j-1) + 1 .. r + 2^(j-1) (MATLAB's ``conv2(..,
    'same')`` placement), with zeros outside the picture. Window sums come
    from one summed-area table per scale.
    """
    h, w = y.shape
    out: list[list[np.ndarray]] = [[], []]
    for j in range(1, scales + 1):
        k = 2**j
        half = k // 2
        padded = np.pad(y, ((half - 1, half), (half - 1, half)))
        table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1))
        table[1:, 1:] = padded.cumsum(0).cumsum(1)

        top, bottom = _box_sums(table, 0, 0, half, k, h, w), _box_sums(table, half, 0, half, k, h, w)
        left, right = _box_sums(table, 0, 0, k, half, h, w), _box_sums(table, 0, half, k, half, h, w)
        out[0].append(np.abs(bottom - top) / k)
        out[1].append(np.abs(right - left) / k)
    return out


def haarpsi(a: np.ndarray, b: np.ndarray, *, border: int = 0) -> float:
    """HaarPSI of two H x W x 3 uint8 RGB pictures of one size, on luma: 1.0 when identical.

    For each orientation k, the local similarity is the mean over Haar
    scales 1 and 2 of (2 |a_j| |b_j| + C) / (|a_j|^2 + |b_j|^2 + C), and the
    weight is max(|a_3|, |b_3|). The score is
    ``(logit(sum(sigmoid(alpha * sim) * weight) / sum(weight)) / alpha) ** 2``
    over both orientations and all pixels, after ``border`` pixels are
    cropped from each edge.
    """
    ya, yb = _pair_y(a, b, border)
    ha = _haar_magnitudes(_halve(_full_range(ya)))
    hb = _haar_magnitudes(_halve(_full_range(yb)))
    num = den = 0.0
    for ca, cb in zip(ha, hb):
        sim = sum((2 * ca[j] * cb[j] + _HAAR_C) / (ca[j] ** 2 + cb[j] ** 2 + _HAAR_C) for j in (0, 1)) / 2
        weight = np.maximum(ca[2], cb[2])
        num += float((weight / (1.0 + np.exp(-_HAAR_ALPHA * sim))).sum())
        den += float(weight.sum())
    if den == 0.0:  # both pictures all black: no structure anywhere, nothing differs
        return 1.0
    mean = num / den
    return (math.log(mean / (1.0 - mean)) / _HAAR_ALPHA) ** 2


# --- motion and warping -------------------------------------------------------------


def _check_motion(
    flow: np.ndarray, visible: np.ndarray | None, height: int, width: int, what: str
) -> tuple[np.ndarray, np.ndarray | None]:
    flow = np.asarray(flow)
    if flow.shape != (height, width, 2) or not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(
            f"{what}: motion must be a {height} x {width} x 2 float array (the frames' size), "
            f"not {flow.dtype} {flow.shape}; see resize_motion"
        )
    return flow.astype(np.float32, copy=False), _check_visible(visible, height, width, what)


def _check_visible(visible: np.ndarray | None, height: int, width: int, what: str) -> np.ndarray | None:
    if visible is None:
        return None
    visible = np.asarray(visible)
    if visible.shape != (height, width) or visible.dtype != np.bool_:
        raise ValueError(
            f"{what}: the visibility mask must be a {height} x {width} bool array, not {visible.dtype} {visible.shape}"
        )
    return visible


def warp(frame: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` carried onto the next frame's grid by the backward ``flow``, and where that is defined.

    Returns the warped picture (float32, the frame's channels) and a bool
    mask of the pixels whose source position lies inside ``frame``.
    Sampling is bilinear (``cv2.remap``).
    """
    frame = np.asarray(frame)
    h, w = frame.shape[:2]
    flow, _ = _check_motion(flow, None, h, w, "warp")
    map_x = flow[..., 0] + np.arange(w, dtype=np.float32)[None, :]
    map_y = flow[..., 1] + np.arange(h, dtype=np.float32)[:, None]
    warped = cv2.remap(frame.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped.reshape(frame.shape), inside


def _scored(inside: np.ndarray, visible: np.ndarray | None, border: int) -> np.ndarray:
    """The pixels a temporal score averages: visible, sourced inside the frame, off the border."""
    mask = inside if visible is None else inside & visible
    if border:
        cropped = np.zeros_like(mask)
        cropped[border:-border, border:-border] = mask[border:-border, border:-border]
        mask = cropped
    return mask


def warp_error(
    prev: np.ndarray, nxt: np.ndarray, flow: np.ndarray, visible: np.ndarray | None = None, *, border: int = 0
) -> float:
    """E_warp of one pair: mean |nxt - warp(prev, flow)| over the kept pixels and the three channels.

    ``flow`` and ``visible`` describe the pair on ``nxt``'s grid (see the
    module notes); ``visible=None`` keeps every pixel whose source is inside
    ``prev``. In 8-bit code values; NaN when no pixel is kept.
    """
    prev, nxt = check_rgb(prev, "previous frame"), check_rgb(nxt, "next frame")
    if prev.shape != nxt.shape:
        raise ValueError(f"frames differ in size: {prev.shape} vs {nxt.shape}")
    h, w = nxt.shape[:2]
    flow, visible = _check_motion(flow, visible, h, w, "warp error")
    border = _check_border(border, h, w)
    warped, inside = warp(prev, flow)
    mask = _scored(inside, visible, border)
    if not mask.any():
        return math.nan
    diff = np.abs(nxt.astype(np.float32) - warped).mean(axis=2, dtype=np.float64)
    return float(diff[mask].mean())


def _pairs_of(
    frames: Sequence[np.ndarray], motion: Sequence[np.ndarray], visible: Sequence[np.ndarray | None] | None
) -> list[np.ndarray | None]:
    if len(frames) < 2:
        raise ValueError(f"a temporal score needs at least 2 frames, got {len(frames)}")
    if len(motion) != len(frames) - 1:
        raise ValueError(f"{len(frames)} frames need {len(frames) - 1} motion fields (one per pair), got {len(motion)}")
    masks: list[np.ndarray | None] = [None] * len(motion) if visible is None else list(visible)
    if len(masks) != len(motion):
        raise ValueError(f"{len(motion)} motion fields need as many visibility masks, got {len(masks)}")
    return masks


def warp_errors(
    frames: Sequence[np.ndarray],
    motion: Sequence[np.ndarray],
    visible: Sequence[np.ndarray | None] | None = None,
    *,
    border: int = 0,
) -> list[float]:
    """:func:`warp_error` of each pair (t, t+1), with ``motion[t]`` and ``visible[t]`` on frame t+1's grid."""
    masks = _pairs_of(frames, motion, visible)
    return [warp_error(frames[t], frames[t + 1], motion[t], masks[t], border=border) for t in range(len(motion))]


def _finite_mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values (``inf`` counts); NaN when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0.0:
        return 1.0 if num == 0.0 else math.inf
    return num / den


def e_warp(
    frames: Sequence[np.ndarray],
    motion: Sequence[np.ndarray],
    visible: Sequence[np.ndarray | None] | None = None,
    *,
    border: int = 0,
) -> float:
    """Mean E_warp of a clip over its pairs (pairs with nothing visible left out; NaN if all are)."""
    return _finite_mean(warp_errors(frames, motion, visible, border=border))


def flicker_ratio(
    out: Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    motion: Sequence[np.ndarray],
    visible: Sequence[np.ndarray | None] | None = None,
    *,
    border: int = 0,
) -> float:
    """E_warp(out) / E_warp(truth) under the truth's motion: 1.0 is as steady as the truth."""
    if len(out) != len(truth):
        raise ValueError(f"the output has {len(out)} frames and the truth {len(truth)}")
    return _ratio(e_warp(out, motion, visible, border=border), e_warp(truth, motion, visible, border=border))


def resize_motion(
    flow: np.ndarray, visible: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Motion (and mask) known at one resolution, brought to ``size`` = (width, height).

    The field is resampled bilinearly with pixel centres aligned (as
    ``cv2.resize`` does) and its vectors are scaled by the size ratio of
    each axis. An output pixel stays visible only if every source pixel
    under it was visible.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"motion must be an H x W x 2 float array, not {flow.shape}")
    h, w = flow.shape[:2]
    new_w, new_h = (int(v) for v in size)
    if new_w < 1 or new_h < 1:
        raise ValueError(f"cannot resize motion to {new_w}x{new_h}")
    visible = _check_visible(visible, h, w, "resize_motion")
    resized = cv2.resize(flow, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    resized[..., 0] *= new_w / w
    resized[..., 1] *= new_h / h
    if visible is None:
        return resized, None
    shrink = new_w < w or new_h < h
    mask = cv2.resize(
        visible.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return resized, mask >= 1.0 - 1e-6


# --- optical flow (tOF) ----------------------------------------------------------------


def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow.create(cv2.DISOpticalFlow_PRESET_MEDIUM)


def optical_flow(prev: np.ndarray, nxt: np.ndarray, *, dis: cv2.DISOpticalFlow | None = None) -> np.ndarray:
    """DIS optical flow (preset MEDIUM) on luma, backward like the motion: on ``nxt``'s grid, into ``prev``.

    Returns H x W x 2 float32 (dx, dy). ``dis`` reuses an instance (made with
    preset MEDIUM) across pairs.
    """
    prev, nxt = check_rgb(prev, "previous frame"), check_rgb(nxt, "next frame")
    if prev.shape != nxt.shape:
        raise ValueError(f"frames differ in size: {prev.shape} vs {nxt.shape}")
    dis = _dis() if dis is None else dis
    flow = np.zeros((*nxt.shape[:2], 2), np.float32)  # written over (no initial flow is used)
    return np.asarray(dis.calc(_luma8(nxt), _luma8(prev), flow), dtype=np.float32)


def _flow_distance(a: np.ndarray, b: np.ndarray, visible: np.ndarray | None, border: int) -> float:
    mask = _scored(np.ones(a.shape[:2], bool), visible, border)
    if not mask.any():
        return math.nan
    return float(np.hypot(*(a - b).transpose(2, 0, 1))[mask].mean(dtype=np.float64))


def tof_pairs(
    out: Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    visible: Sequence[np.ndarray | None] | None = None,
    *,
    border: int = 0,
) -> list[float]:
    """Per pair (t, t+1): mean |flow(out) - flow(truth)| in pixels (end-point distance).

    ``visible[t]`` (frame t+1's grid, as for E_warp) limits the mean to
    content seen in both frames; NaN for a pair with nothing visible.
    """
    if len(out) != len(truth):
        raise ValueError(f"the output has {len(out)} frames and the truth {len(truth)}")
    if len(truth) < 2:
        raise ValueError(f"a temporal score needs at least 2 frames, got {len(truth)}")
    masks: list[np.ndarray | None] = [None] * (len(truth) - 1) if visible is None else list(visible)
    if len(masks) != len(truth) - 1:
        raise ValueError(f"{len(truth)} frames need {len(truth) - 1} visibility masks, got {len(masks)}")
    dis = _dis()
    scores = []
    for t in range(len(truth) - 1):
        if out[t].shape != truth[t].shape:
            raise ValueError(f"frame {t}: the output is {out[t].shape} and the truth {truth[t].shape}")
        h, w = truth[t].shape[:2]
        mask = _check_visible(masks[t], h, w, f"pair {t}")
        border = _check_border(border, h, w)
        f_out = optical_flow(out[t], out[t + 1], dis=dis)
        f_truth = optical_flow(truth[t], truth[t + 1], dis=dis)
        scores.append(_flow_distance(f_out, f_truth, mask, border))
    return scores


def tof(
    out: Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    visible: Sequence[np.ndarray | None] | None = None,
    *,
    border: int = 0,
) -> float:
    """Mean tOF of a clip over its pairs (see :func:`tof_pairs`)."""
    return _finite_mean(tof_pairs(out, truth, visible, border=border))


# --- a clip's scores ---------------------------------------------------------------------


def json_float(value: float) -> float | str:
    """``value`` for plain JSON: finite floats as they are, else "inf", "-inf" or "nan".

    ``float()`` reads the strings back. An identical frame's PSNR is
    infinite and a clip without a visible pair has a NaN E_warp; both are
    results a reader must see, not invalid JSON.
    """
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


_PER_FRAME = ("psnr_y", "ssim_y", "haarpsi")
_PER_PAIR = ("e_warp", "e_warp_truth", "tof")


@dataclass
class ClipScores:
    """A clip's scores: per frame (fidelity) and per pair of frames (steadiness).

    ``psnr_y[i]`` etc. score frame i; ``e_warp[t]`` (the output's),
    ``e_warp_truth[t]`` and ``tof[t]`` score the pair (t, t+1), so they are
    one shorter. NaN marks a pair with nothing visible (a scene cut).
    """

    clip: str = ""
    border: int = 0
    psnr_y: list[float] = field(default_factory=list)
    ssim_y: list[float] = field(default_factory=list)
    haarpsi: list[float] = field(default_factory=list)
    e_warp: list[float] = field(default_factory=list)
    e_warp_truth: list[float] = field(default_factory=list)
    tof: list[float] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.psnr_y)

    @property
    def flicker(self) -> list[float]:
        """Per pair: the output's E_warp over the truth's."""
        return [_ratio(o, t) for o, t in zip(self.e_warp, self.e_warp_truth)]

    def mean(self) -> dict[str, float]:
        """Clip means: fidelity over frames; E_warp and tOF over the pairs with something visible.

        ``flicker`` is the ratio of the two mean E_warps (not a mean of
        per-pair ratios, which a near-still pair would dominate).
        """
        means = {key: _finite_mean(getattr(self, key)) for key in (*_PER_FRAME, *_PER_PAIR)}
        means["flicker"] = _ratio(means["e_warp"], means["e_warp_truth"])
        return means

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (non-finite numbers as strings, see :func:`json_float`)."""
        return {
            "clip": self.clip,
            "border": self.border,
            "frames": self.frames,
            "mean": {k: json_float(v) for k, v in self.mean().items()},
            "per_frame": {k: [json_float(v) for v in getattr(self, k)] for k in _PER_FRAME},
            "per_pair": {k: [json_float(v) for v in getattr(self, k)] for k in _PER_PAIR}
            | {"flicker": [json_float(v) for v in self.flicker]},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipScores:
        """The scores :meth:`to_dict` wrote (derived means and ratios are recomputed)."""
        lists = {k: [float(v) for v in data["per_frame"][k]] for k in _PER_FRAME}
        lists |= {k: [float(v) for v in data["per_pair"][k]] for k in _PER_PAIR}
        return cls(clip=str(data.get("clip", "")), border=int(data.get("border", 0)), **lists)


class ClipScorer:
    """Scores a clip one frame at a time, holding only the previous frame pair.

    Call :meth:`add` with each output frame and its truth in order; from
    the second frame on, also with the motion and visibility of the pair
    (previous, this) on this frame's grid. :meth:`scores` returns what has
    been gathered. ``border`` pixels are left out of every score.
    """

    def __init__(self, clip: str = "", *, border: int = 0):
        self._scores = ClipScores(clip=clip, border=int(border))
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._dis: cv2.DISOpticalFlow | None = None

    def add(
        self, out: np.ndarray, truth: np.ndarray, motion: np.ndarray | None = None, visible: np.ndarray | None = None
    ) -> None:
        n = self._scores.frames
        out, truth = check_rgb(out, f"output frame {n}"), check_rgb(truth, f"truth frame {n}")
        if out.shape != truth.shape:
            raise ValueError(f"frame {n}: the output is {out.shape} and the truth {truth.shape}")
        border = self._scores.border
        if self._prev is None:
            if motion is not None or visible is not None:
                raise ValueError("the first frame has no previous frame for motion to point into")
        else:
            if motion is None:
                raise ValueError(f"frame {n}: the motion from frame {n - 1} is missing")
            if self._prev[0].shape != out.shape:
                raise ValueError(f"frame {n} is {out.shape}, frame {n - 1} was {self._prev[0].shape}")
            prev_out, prev_truth = self._prev
            e_out = warp_error(prev_out, out, motion, visible, border=border)
            e_truth = warp_error(prev_truth, truth, motion, visible, border=border)
            if self._dis is None:
                self._dis = _dis()
            f_out = optical_flow(prev_out, out, dis=self._dis)
            f_truth = optical_flow(prev_truth, truth, dis=self._dis)
            self._scores.e_warp.append(e_out)
            self._scores.e_warp_truth.append(e_truth)
            self._scores.tof.append(_flow_distance(f_out, f_truth, visible, border))
        self._scores.psnr_y.append(psnr_y(out, truth, border=border))
        self._scores.ssim_y.append(ssim_y(out, truth, border=border))
        self._scores.haarpsi.append(haarpsi(out, truth, border=border))
        self._prev = (out.copy(), truth.copy())  # the caller may reuse its buffers

    def scores(self) -> ClipScores:
        s = self._scores
        return ClipScores(clip=s.clip, border=s.border, **{k: list(getattr(s, k)) for k in (*_PER_FRAME, *_PER_PAIR)})
