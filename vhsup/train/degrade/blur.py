"""Blur kernels of Real-ESRGAN's degradation model, built in float64 on the CPU.

Six bivariate families share one quadratic form Q = x^T S^-1 x, with S the
covariance of a (possibly rotated, anisotropic) Gaussian:

    gaussian      exp(-Q / 2)
    generalized   exp(-Q^beta / 2)   beta < 1: heavy tails; > 1: flat top
    plateau       1 / (1 + Q^beta)   a flat top with slow tails

plus the circular low-pass ("sinc") kernel, the ideal 2-D low-pass cut off
at ``omega`` radians per pixel, which rings the way over-sharpened or
aggressively resampled pictures do. Kernels are small (<= 41 x 41) and
drawn per sample, so they are made on the CPU and copied to the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vhsup.train.degrade.draw import Draw


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def bivariate(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 1.0) -> torch.Tensor:
    """A normalised (size, size) kernel of family ``kind`` ('gaussian', 'generalized', 'plateau')."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    # Rotate the grid into the kernel's principal axes: Q = u^2/sx^2 + v^2/sy^2.
    u = c * xx + s * yy
    v = -s * xx + c * yy
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if kind == "gaussian":
        k = torch.exp(-0.5 * q)
    elif kind == "generalized":
        k = torch.exp(-0.5 * q.pow(beta))
    elif kind == "plateau":
        k = 1.0 / (1.0 + q.pow(beta))
    else:
        raise ValueError(f"unknown kernel family {kind!r}")
    return k / k.sum()


def circular_lowpass(omega: float, size: int) -> torch.Tensor:
    """The 2-D ideal low-pass with cut-off ``omega`` (rad/pixel), truncated to size x size."""
    xx, yy = _grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    centre = r == 0
    r_safe = torch.where(centre, torch.ones_like(r), r)
    k = omega * torch.special.bessel_j1(omega * r_safe) / (2 * math.pi * r_safe)
    k = torch.where(centre, torch.full_like(r, omega**2 / (4 * math.pi)), k)
    return k / k.sum()


def _beta(draw: Draw, rng: tuple[float, float]) -> float:
    """Shape parameter: half the time below 1, half above (within the range)."""
    lo, hi = rng
    if lo < 1.0 < hi:
        return draw.uniform(lo, 1.0) if draw.chance(0.5) else draw.uniform(1.0, hi)
    return draw.uniform(lo, hi)


def random_kernel(draw: Draw, order) -> torch.Tensor:
    """A blur kernel for one sample, as an ``OrderSpec`` asks."""
    size = draw.odd(*order.kernel_size)
    if draw.chance(order.sinc_prob):
        # Small kernels cannot hold a low cut-off without truncation artefacts.
        omega = draw.uniform(math.pi / 3, math.pi) if size < 13 else draw.uniform(math.pi / 5, math.pi)
        return circular_lowpass(omega, size)
    name = order.kernel_list[draw.pick(order.kernel_prob)]
    family = {"iso": "gaussian", "aniso": "gaussian", "generalized": "generalized", "plateau": "plateau"}[
        name.split("_")[0]
    ]
    sx = draw.uniform(*order.blur_sigma)
    if name.endswith("iso") and not name.endswith("aniso"):
        sy, theta = sx, 0.0
    else:
        sy = draw.uniform(*order.blur_sigma)
        theta = draw.uniform(-math.pi, math.pi)
    beta = 1.0
    if family == "generalized":
        beta = _beta(draw, order.betag_range)
    elif family == "plateau":
        beta = _beta(draw, order.betap_range)
    return bivariate(family, size, sx, sy, theta, beta)


def final_sinc(draw: Draw) -> torch.Tensor:
    """The last sinc filter (Real-ESRGAN: 7-21 taps, cut-off pi/3..pi)."""
    size = draw.odd(7, 21)
    return circular_lowpass(draw.uniform(math.pi / 3, math.pi), size)


# From this kernel size on, an FFT convolution beats the direct one on a
# 256x256 patch (measured on one CPU core: 21 taps 3.8 ms vs 10 ms).
FFT_FROM = 17


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of x (N, C, H, W) with one 2-D kernel, mirrored edges."""
    _, c, h, w = x.shape
    k = kernel.shape[-1]
    p = k // 2
    mode = "reflect" if p < h and p < w else "replicate"
    xp = F.pad(x, (p, p, p, p), mode=mode)
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    if k < FFT_FROM:
        return F.conv2d(xp, kernel.expand(c, 1, k, k), groups=c)
    # Circular convolution of the padded picture with the kernel centred on
    # the origin; the border p wide, where it wraps, is cropped away.
    hp, wp = xp.shape[-2:]
    idx = torch.arange(-p, p + 1, device=x.device)
    full = torch.zeros(hp, wp, device=x.device, dtype=x.dtype)
    full[(idx % hp)[:, None], (idx % wp)[None, :]] = kernel.flip(0, 1)
    y = torch.fft.irfft2(torch.fft.rfft2(xp) * torch.fft.rfft2(full), s=(hp, wp))
    return y[..., p : hp - p, p : wp - p].contiguous()
