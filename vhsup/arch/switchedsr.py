"""SwitchedSR: a shallow super-resolution generator built from switched convs.

A switched convolution holds ``breadth`` kernels and a learned selector picks
one of them at every pixel, so the layer has ``breadth`` times the
parameters of a plain conv at roughly the arithmetic of one. Stacking a few
of them gives a network that is wide in parameters but shallow and cheap in
compute: five switched residual blocks at breadth 8 carry about as many
weights as a mid-size RRDBNet while costing a tenth of esrgan-x4 per pixel.

Layout (names are the state-dict keys; see :data:`SPEC`)::

    conv_first              plain 3x3, picture -> num_feat
    body.N.conv1/.conv2     switched 3x3 + LeakyReLU between, plus a skip
    conv_body               plain 3x3, added to conv_first's output
    conv_up.J               nearest x2 then a plain 3x3 + LeakyReLU, log2(scale) times
    conv_hr, conv_last      plain 3x3s at the output size
    + the input upscaled bilinearly

The first conv stays plain: a selector on raw RGB would only see colour, and
the 3-channel kernel is too small for extra copies to buy anything. The
network learns the residual over a bilinear upscale, so an untrained or
barely trained one already gives a sane picture, and training starts from a
smooth image instead of from grey.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VhsupError
from .spec import (
    ArchSpec,
    PathArg,
    StateDict,
    contiguous,
    one_by_one,
    read_int,
    unknown,
)
from .switched import SwitchedConv2d

SCALES = (1, 2, 4, 8)


class SwitchedResBlock(nn.Module):
    """conv-LReLU-conv with a skip, both convs switched.

    Args:
        num_feat: channels in and out.
        breadth: kernels per switched conv.
    """

    def __init__(self, num_feat: int, breadth: int):
        super().__init__()
        self.conv1 = SwitchedConv2d(num_feat, num_feat, 3, padding=1, breadth=breadth)
        self.conv2 = SwitchedConv2d(num_feat, num_feat, 3, padding=1, breadth=breadth)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.lrelu(self.conv1(x)))


class SwitchedSR(nn.Module):
    """Shallow SR generator whose trunk is switched residual blocks.

    Input float32 (N, num_in_ch, H, W) in [0, 1]; output (N, num_out_ch,
    H*scale, W*scale), not clamped.

    Args:
        num_in_ch: channels of the input picture (3 for RGB).
        num_out_ch: channels of the output; must equal num_in_ch, since the
            network adds its output to the bilinearly upscaled input.
        num_feat: trunk channels (64 for switched-x4).
        num_block: switched residual blocks (5); each holds two switched convs.
        breadth: kernels per switched conv (8); 1 makes every switched conv
            an ordinary conv with a trivial selector.
        scale: 1, 2, 4 or 8: that many nearest-x2 + conv steps (log2(scale)).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 5,
        breadth: int = 8,
        scale: int = 4,
    ):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"SwitchedSR supports scale {', '.join(map(str, SCALES))}, not {scale!r}")
        if min(num_in_ch, num_out_ch, num_feat, num_block, breadth) < 1:
            raise ValueError("SwitchedSR sizes must be positive (and at least one block)")
        if num_out_ch != num_in_ch:
            raise ValueError("SwitchedSR adds its output to the upscaled input: num_out_ch must equal num_in_ch")
        self.scale = scale
        self.breadth = breadth
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(SwitchedResBlock(num_feat, breadth) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        # The scale shows in the state dict as the number of conv_up.J
        # entries, so detection can read it back without a metadata tensor.
        self.conv_up = nn.ModuleList(nn.Conv2d(num_feat, num_feat, 3, 1, 1) for _ in range(int(math.log2(scale))))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        # The correction starts small, so the untrained network is close to
        # the bilinear upscale and early training does not fight a noisy base.
        with torch.no_grad():
            self.conv_last.weight.mul_(0.1)
            assert self.conv_last.bias is not None  # nn.Conv2d's default bias=True
            self.conv_last.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in self.conv_up:
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        if self.scale == 1:
            return out + x
        return out + F.interpolate(x, scale_factor=float(self.scale), mode="bilinear", align_corners=False)


def switchedsr_reach(num_block: int, scale: int) -> int:
    """Input pixels an output pixel depends on, on each side (exact).

    Followed backwards from an output pixel: conv_last and conv_hr reach 2
    output-grid pixels, each conv_up one pixel of its own grid, each nearest
    x2 halves (rounding down) the index range, and at the input grid
    conv_first, the 2 * num_block switched convs and conv_body add one pixel
    each (the selectors are 1x1 and add nothing). The bilinear skip reaches
    one input pixel, always less. The result is the worst case over the
    ``scale`` output pixels that share an input pixel.
    """
    steps = int(math.log2(scale))
    worst = 0
    for q in range(scale):
        lo, hi = q - 2, q + 2
        for _ in range(steps):
            lo, hi = (lo - 1) // 2, (hi + 1) // 2
        trunk = 2 + 2 * num_block
        worst = max(worst, trunk - lo, hi + trunk, 1)
    return worst


_BLOCK = re.compile(r"^body\.(\d+)\.conv([12])\.weight$")
_UP = re.compile(r"^conv_up\.(\d+)\.weight$")


def _read_hyper(sd: StateDict, path: PathArg) -> dict:
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    if first.ndim != 4 or last.ndim != 4:
        raise unknown(path, "conv_first/conv_last are not conv weights")
    convs = {(int(m.group(1)), m.group(2)): sd[k] for k in sd if (m := _BLOCK.match(k))}
    blocks = {b for b, _ in convs}
    if not contiguous(blocks) or len(convs) != 2 * len(blocks):
        raise unknown(path, "SwitchedSR keys without contiguous body.N.conv1/conv2 numbering")
    if any(w.ndim != 5 for w in convs.values()):
        raise unknown(path, "SwitchedSR block convs are not all switched (5-D weights)")
    breadths = {int(w.shape[0]) for w in convs.values()}
    if len(breadths) != 1:
        raise VhsupError(
            f"SwitchedSR with switched convs of different breadths {sorted(breadths)} is not supported", path
        )
    ups = {int(m.group(1)) for k in sd if (m := _UP.match(k))}
    if not contiguous(ups):
        raise unknown(path, "SwitchedSR keys without contiguous conv_up.N numbering")
    if len(ups) > 3:
        raise VhsupError(
            f"SwitchedSR with {len(ups)} upsampling steps (x{2 ** len(ups)}) is not supported; only x1..x8", path
        )
    return {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": int(last.shape[0]),
        "num_feat": int(first.shape[0]),
        "num_block": len(blocks),
        "breadth": breadths.pop(),
        "scale": 2 ** len(ups),
    }


# Plain outer convs around switched blocks. A switched conv's weight is 5-D
# (breadth, out, in, kh, kw), which no other vhsup layer has.
SPEC = ArchSpec(
    name="switchedsr",
    title="SwitchedSR",
    modules=(SwitchedSR,),
    build=SwitchedSR,
    scale=read_int("scale"),
    context=lambda h: switchedsr_reach(int(h["num_block"]), int(h["scale"])),
    keys=("conv_first.weight", "body.0.conv1.weight", "conv_body.weight", "conv_hr.weight", "conv_last.weight"),
    claims=lambda sd: sd["body.0.conv1.weight"].ndim == 5,
    read_hyper=_read_hyper,
    recompute=lambda net: one_by_one(net.body),  # type: ignore[arg-type]
    plain_convs=("conv_up*", "conv_hr"),
    switched_native=True,
)

__all__ = ["SCALES", "SPEC", "SwitchedResBlock", "SwitchedSR", "switchedsr_reach"]
