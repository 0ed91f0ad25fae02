"""SRVGGNetCompact, Real-ESRGAN's small VGG-style network (animevideov3).

A plain stack of 3x3 convs with activations at low resolution, one
pixel-shuffle at the end, and the nearest-upsampled input added back. It is
about 29x cheaper per pixel than RRDBNet-23, which is why it is the CPU
default. Parameter names (``body.0`` conv, ``body.1`` PReLU, ...) match
Real-ESRGAN's checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("prelu", "relu", "leakyrelu")


class SRVGGNetCompact(nn.Module):
    """Compact super-resolution network.

    Args:
        num_in_ch: channels of the input picture (3 for RGB).
        num_out_ch: channels of the output picture.
        num_feat: channels of every hidden conv (64 in animevideov3).
        num_conv: hidden 3x3 convs between the first and the last conv (16).
        upscale: pixel-shuffle factor; the last conv has num_out_ch*upscale**2
            outputs.
        act: 'prelu' (per-channel slopes, stored as ``body.<odd>.weight``),
            'relu' or 'leakyrelu' (slope 0.1); the published models use PReLU.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act: str = "prelu",
    ):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}, not {act!r}")
        if upscale < 1 or num_conv < 0 or min(num_in_ch, num_out_ch, num_feat) < 1:
            raise ValueError("SRVGGNetCompact sizes must be positive")
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), self._act(act, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), self._act(act, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        # A ModuleList (not Sequential) keeps the key names body.N while the
        # forward below stays explicit about the residual.
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    @staticmethod
    def _act(act: str, num_feat: int) -> nn.Module:
        if act == "prelu":
            return nn.PReLU(num_parameters=num_feat)
        if act == "relu":
            return nn.ReLU(inplace=True)
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        # The network only learns the residual over a nearest upscale, so a
        # flat colour passes through unchanged.
        return out + F.interpolate(x, scale_factor=float(self.upscale), mode="nearest")
