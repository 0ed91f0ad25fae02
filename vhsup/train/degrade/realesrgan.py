"""Real-ESRGAN's second-order degradation, one sample at a time.

Two rounds of blur -> resize -> noise -> JPEG, then the resize to the LR
size together with a final sinc filter, with the last JPEG either before or
after that pair (the other orders produce twisted lines, Real-ESRGAN's
authors found). Real-ESRGAN draws the resize factor once per batch; here
every parameter is drawn per sample, so the intermediate sizes differ and
each sample runs through on its own. Torch ops run on the tensor's device;
JPEG goes through OpenCV on the CPU.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vhsup.train.degrade.blur import filter2d, final_sinc, random_kernel
from vhsup.train.degrade.draw import Draw

# Poisson noise is shot noise of a picture whose white holds this many
# "photons". Real-ESRGAN derives the count from how many distinct values
# the picture has (2**ceil(log2(n))), which for a float LR patch of 64x64
# lands at 2**14; fixing it keeps the noise level independent of patch size.
POISSON_PEAK = 2.0**14

_LUMA = (0.299, 0.587, 0.114)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain antialiased bicubic downscale by an integer factor (the 'none' preset)."""
    if scale == 1:
        return x
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)


def grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


def add_noise(x: torch.Tensor, order, draw: Draw) -> torch.Tensor:
    """Gaussian or Poisson noise, luma-only ('grey', the same on R, G, B) or per channel."""
    if not draw.chance(order.noise_prob):
        return x
    is_grey = draw.chance(order.gray_noise_prob)
    n, _, h, w = x.shape
    if draw.chance(order.gaussian_noise_prob):
        sigma = draw.uniform(*order.noise_range) / 255.0
        noise = draw.randn((n, 1 if is_grey else 3, h, w), x.device) * sigma
    else:
        scale = draw.uniform(*order.poisson_scale_range)
        src = (grey(x) if is_grey else x).clamp(0.0, 1.0)
        counts = torch.poisson(src * POISSON_PEAK, generator=draw.noise_gen(x.device))
        noise = (counts / POISSON_PEAK - src) * scale
    return (x + noise).clamp(0.0, 1.0)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip at ``quality`` (OpenCV, 4:2:0) on the CPU."""
    out = []
    for img in x.clamp(0.0, 1.0):
        rgb = (img.permute(1, 2, 0) * 255.0).round().to(torch.uint8).cpu().numpy()
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:  # cannot happen for a valid 8-bit picture
            raise RuntimeError("OpenCV failed to encode a JPEG")
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        assert bgr is not None  # the JPEG it encoded just above
        out.append(torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1))
    return torch.stack(out).to(device=x.device, dtype=x.dtype) / 255.0


def _maybe_jpeg(x: torch.Tensor, order, draw: Draw) -> torch.Tensor:
    if not draw.chance(order.jpeg_prob):
        return x
    return jpeg(x, round(draw.uniform(*order.jpeg_range)))


def _resize_factor(order, draw: Draw) -> float:
    direction = draw.pick(order.resize_prob)  # up, down, keep
    lo, hi = order.resize_range
    if direction == 0:
        return draw.uniform(1.0, hi)
    if direction == 1:
        return draw.uniform(lo, 1.0)
    return 1.0


def second_order(x: torch.Tensor, spec, scale: int, draw: Draw) -> torch.Tensor:
    """One sample (1, 3, H, W) -> (1, 3, H // scale, W // scale), not yet clamped or quantised."""
    h, w = x.shape[-2:]
    modes = spec.resize_modes

    # Round one, on the HR picture.
    o = spec.first
    if draw.chance(o.blur_prob):
        x = filter2d(x, random_kernel(draw, o))
    f = _resize_factor(o, draw)
    x = resize(x, (int(h * f), int(w * f)), modes[draw.integer(0, len(modes) - 1)])
    x = add_noise(x, o, draw)
    x = _maybe_jpeg(x, o, draw)

    # Round two, sized relative to the LR picture.
    last_jpeg = None
    if draw.chance(spec.second_order_prob):
        o = spec.second
        if draw.chance(o.blur_prob):
            x = filter2d(x, random_kernel(draw, o))
        f = _resize_factor(o, draw)
        x = resize(x, (int(h / scale * f), int(w / scale * f)), modes[draw.integer(0, len(modes) - 1)])
        x = add_noise(x, o, draw)
        if draw.chance(o.jpeg_prob):
            last_jpeg = round(draw.uniform(*o.jpeg_range))

    # The resize to LR size and the final sinc belong together; JPEG goes
    # either side of them.
    sinc = final_sinc(draw) if draw.chance(spec.final_sinc_prob) else None
    mode = modes[draw.integer(0, len(modes) - 1)]
    jpeg_first = draw.chance(spec.jpeg_first_prob)
    if last_jpeg is not None and jpeg_first:
        x = jpeg(x, last_jpeg)
    x = resize(x, (h // scale, w // scale), mode)
    if sinc is not None:
        x = filter2d(x, sinc)
    if last_jpeg is not None and not jpeg_first:
        x = jpeg(x, last_jpeg)
    return x
