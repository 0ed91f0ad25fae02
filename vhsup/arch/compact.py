"""SRVGGNetCompact, Real-ESRGAN's small VGG-style network (animevideov3).

A plain stack of 3x3 convs with activations at low resolution, one
pixel-shuffle at the end, and the nearest-upsampled input added back. It is
about 29x cheaper per pixel than RRDBNet-23, which is why it is the CPU
default. Parameter names (``body.0`` conv, ``body.1`` PReLU, ...) match
Real-ESRGAN's checkpoints.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .spec import Activation, ArchSpec, Blocks, PathArg, StateDict, read_int, unknown

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


_BODY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


def _read_hyper(sd: StateDict, path: PathArg) -> dict:
    index = {}
    for key, value in sd.items():
        m = _BODY.match(key)
        if not m:
            raise unknown(path, f"unexpected key {key!r} beside body.N layers")
        if m.group(2) == "weight":
            index[int(m.group(1))] = value
    convs = sorted(i for i, w in index.items() if w.ndim == 4)
    slopes = sorted(i for i, w in index.items() if w.ndim == 1)
    n = len(convs)
    if n < 2 or convs != list(range(0, 2 * n, 2)):
        raise unknown(path, "body.N convs are not at body.0, body.2, ...")
    if not slopes:
        # ReLU and LeakyReLU leave no weights, so they cannot be told apart.
        raise unknown(path, "Compact model without PReLU weights (activation cannot be determined)")
    if slopes != list(range(1, 2 * n - 2, 2)):
        raise unknown(path, "PReLU weights are not at body.1, body.3, ...")
    first, last = index[0], index[convs[-1]]
    num_in_ch, num_feat = int(first.shape[1]), int(first.shape[0])
    # The checkpoints do not record the output channels separately from the
    # shuffle factor; like Real-ESRGAN, take the output to have as many
    # channels as the input.
    ratio = last.shape[0] / num_in_ch
    upscale = math.isqrt(int(ratio)) if ratio == int(ratio) else 0
    if upscale < 1 or upscale * upscale != ratio:
        raise unknown(path, f"last conv has {last.shape[0]} outputs, not {num_in_ch} x a square")
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_in_ch,
        "num_feat": num_feat,
        "num_conv": n - 2,
        "upscale": upscale,
        "act": "prelu",
    }


def _conv_act_pairs(net: nn.Module) -> Blocks:
    """Each conv with the activation after it (the last conv has none)."""
    layers = list(net.body)  # type: ignore[arg-type]
    return [(layers[i], layers[i + 1]) for i in range(0, len(layers) - 1, 2)]


SPEC = ArchSpec(
    name="compact",
    title="SRVGGNetCompact",
    modules=(SRVGGNetCompact,),
    build=SRVGGNetCompact,
    scale=read_int("upscale"),
    # One pixel per 3x3 conv: the receptive field, exactly.
    context=lambda h: int(h["num_conv"]) + 2,
    keys=("body.0.weight",),
    claims=lambda sd: all(k.startswith("body.") for k in sd),
    read_hyper=_read_hyper,
    # A plain conv stack keeps about four 64-channel maps alive; the
    # pixel-shuffle carries only 3 * scale**2 channels (four such tensors).
    activation=Activation(features=64 * 4, upsampled=3 * 4),
    recompute=_conv_act_pairs,
)

__all__ = ["ACTIVATIONS", "SPEC", "SRVGGNetCompact"]
