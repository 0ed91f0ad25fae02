"""Classical resamplers as weightless modules, and a resize after a network.

``Bicubic`` and ``Lanczos`` are the baselines a GAN upscale is judged
against, and they let the whole pipeline run with no weights at all. Both
treat pixels as areas (pixel centres at i + 0.5, ``align_corners=False``) and
clamp at the picture edge, so a tile cut out with enough context gives the
same pixels as the whole picture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import Activation, ArchSpec, read_int

MAX_SCALE = 8
LANCZOS_LOBES = 3


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be an integer 1..{MAX_SCALE}, not {scale!r}")
    return scale


class Bicubic(nn.Module):
    """Bicubic upscale (Keys kernel, a = -0.75, as OpenCV and torch use).

    Args:
        scale: integer factor 1..8.
    """

    kind = "bicubic"

    def __init__(self, scale: int = 4):
        super().__init__()
        self.scale = _check_scale(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return x.clone()
        return F.interpolate(x, scale_factor=float(self.scale), mode="bicubic", align_corners=False)


def _lanczos_phases(scale: int, lobes: int) -> torch.Tensor:
    """Filter taps for each of the ``scale`` output phases.

    For an integer upscale the output pixel j = scale*q + p samples the input
    at q + d_p with d_p = (p + 0.5)/scale - 0.5, which lies in (-0.5, 0.5).
    So every output phase p is one fixed 2*lobes+1 tap filter centred on input
    q; the taps are normalised to sum to one so flat areas stay flat.
    """
    taps = torch.arange(-lobes, lobes + 1, dtype=torch.float64)
    rows = []
    for p in range(scale):
        d = (p + 0.5) / scale - 0.5
        t = d - taps  # distance from the sample point to each input pixel
        w = torch.where(t.abs() < lobes, torch.sinc(t) * torch.sinc(t / lobes), torch.zeros_like(t))
        rows.append(w / w.sum())
    return torch.stack(rows)  # (scale, 2*lobes+1)


class Lanczos(nn.Module):
    """Separable Lanczos-3 upscale built from torch convolutions.

    torch has no Lanczos mode, so each axis is done as one grouped 1-D conv
    producing ``scale`` phase images that are then interleaved. Edges are
    replicated, like torch's bicubic.

    Args:
        scale: integer factor 1..8.
    """

    kind = "lanczos"
    taps: torch.Tensor

    def __init__(self, scale: int = 4):
        super().__init__()
        self.scale = _check_scale(scale)
        self.lobes = LANCZOS_LOBES
        self.register_buffer("taps", _lanczos_phases(self.scale, self.lobes).float(), persistent=False)

    def _along_width(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s, k = self.scale, self.lobes
        flat = F.pad(x.reshape(n * c, 1, h, w), (k, k, 0, 0), mode="replicate")
        weight = self.taps.to(dtype=x.dtype, device=x.device).view(s, 1, 1, 2 * k + 1)
        phases = F.conv2d(flat, weight)  # (n*c, s, h, w): phase p of every column
        return phases.permute(0, 2, 3, 1).reshape(n, c, h, w * s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return x.clone()
        wide = self._along_width(x)
        return self._along_width(wide.transpose(2, 3)).transpose(2, 3).contiguous()


class Rescaled(nn.Module):
    """A network followed by a bicubic resize to a smaller overall scale.

    The animevideov3 x2 and x3 ncnn models are the x4 network with a bicubic
    resize by 0.5 / 0.75 after it (their .param ends in ``Interp 0=3``); this
    module reproduces that. The resize works on whole output pixels, so tiles
    whose input origin is an integer sample the same positions as the whole
    picture.

    Args:
        net: a module whose output is ``net_scale`` times its input.
        net_scale: the scale of ``net``.
        scale: the overall scale wanted (smaller than net_scale).
    """

    def __init__(self, net: nn.Module, net_scale: int, scale: int):
        super().__init__()
        if not 1 <= _check_scale(scale) < net_scale:
            raise ValueError(f"Rescaled needs 1 <= scale < net_scale, got {scale} and {net_scale}")
        self.net = net
        self.net_scale = net_scale
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.net(x)
        return F.interpolate(y, size=(h * self.scale, w * self.scale), mode="bicubic", align_corners=False)


def resample_macs_per_px(kind: str, scale: int, channels: int = 3) -> float:
    """Multiply-accumulates per input pixel, counted as these modules compute.

    torch's bicubic takes 4x4 taps per output pixel (scale**2 of them per
    input pixel); the Lanczos here is separable: a 7-tap width pass making
    scale outputs per input pixel, then a 7-tap height pass making scale**2.
    """
    if scale == 1:
        return 0.0
    if kind == "bicubic":
        return float(channels * 16 * scale * scale)
    if kind == "lanczos":
        return float(channels * (2 * LANCZOS_LOBES + 1) * (scale + scale * scale))
    raise ValueError(f"unknown resampler {kind!r}")


RESAMPLERS: dict[str, type[Bicubic | Lanczos]] = {"bicubic": Bicubic, "lanczos": Lanczos}
# Input pixels each side an output pixel reads: half of bicubic's 4 taps,
# Lanczos' lobes. Tiles with this context equal the whole picture exactly.
_REACH = {"bicubic": 2, "lanczos": LANCZOS_LOBES}


def _build(kind: str, scale: int) -> nn.Module:
    return RESAMPLERS[kind](int(scale))


def _hyper_of(net: nn.Module) -> dict:
    if not isinstance(net, Bicubic | Lanczos):
        raise TypeError(f"not a classical resampler: {type(net).__name__}")
    return {"kind": net.kind, "scale": net.scale}


SPEC = ArchSpec(
    name="classical",
    title="classical resampler",
    modules=(Bicubic, Lanczos),
    build=_build,
    scale=read_int("scale"),
    context=lambda h: _REACH[str(h["kind"])],
    hyper_of=_hyper_of,
    macs_per_px=lambda h: resample_macs_per_px(str(h["kind"]), int(h["scale"])),
    # A resampling filter has no feature maps, only the upscaled picture.
    activation=Activation(features=0, upsampled=3 * 2),
    weightless=True,
)


__all__ = ["MAX_SCALE", "RESAMPLERS", "SPEC", "Bicubic", "Lanczos", "Rescaled", "resample_macs_per_px"]
