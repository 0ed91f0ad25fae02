"""MESRGAN ("mobile ESRGAN"): RRDBNet with MobileNetV2 bottlenecks.

Every 3x3 conv inside the dense blocks becomes an inverted-residual
bottleneck (Sandler et al., MobileNetV2, 2018): a 1x1 conv expanding the
channels, a depthwise 3x3 conv, and a linear 1x1 projection. LeakyReLU(0.2)
replaces MobileNetV2's ReLU6 (ESRGAN's activation; ReLU6 clips the bright
end, which an upscaler must not do), and there is no BatchNorm, as in
ESRGAN. The bottleneck has no shortcut of its own: the dense block's
concatenations and scaled residuals already provide one.

Everything outside the dense blocks (conv_first, conv_body, the two
nearest-neighbour x2 steps, conv_hr, conv_last) is RRDBNet's, with the same
key names, so a detector tells the two apart only by the ``expand`` /
``depthwise`` / ``project`` keys in the blocks.

Cost: the dense block's inputs are already wide (64 to 192 channels at the
defaults), so expansion is expensive here. With expansion ``t`` a bottleneck
costs ``t * c_in * (c_in + 9 + c_out)`` MACs against ``9 * c_in * c_out``
for the plain 3x3 conv: over one dense block that is 0.52x at t = 1, 1.04x
at t = 2 and 3.1x at MobileNetV2's t = 6. Only t = 1 saves work, so it is
the default (the expand conv is kept at t = 1 so every model has the same
layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rrdbnet import _UNSHUFFLE


class InvertedResidual(nn.Module):
    """1x1 expand - LeakyReLU - depthwise 3x3 - LeakyReLU - 1x1 project.

    Args:
        in_ch: channels in.
        out_ch: channels out (no activation after the projection).
        expand_ratio: hidden channels = expand_ratio * in_ch.
    """

    def __init__(self, in_ch: int, out_ch: int, expand_ratio: int = 1):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.expand = nn.Conv2d(in_ch, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.project = nn.Conv2d(hidden, out_ch, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.lrelu(self.depthwise(self.lrelu(self.expand(x)))))


class MobileDenseBlock(nn.Module):
    """ESRGAN's residual dense block with bottlenecks for its five convs.

    Args:
        num_feat: channels entering and leaving the block.
        num_grow_ch: channels each of conv1..conv4 adds to the running concat.
        expand_ratio: expansion of every bottleneck.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, expand_ratio: int = 1):
        super().__init__()
        f, g, t = num_feat, num_grow_ch, expand_ratio
        self.conv1 = InvertedResidual(f, g, t)
        self.conv2 = InvertedResidual(f + g, g, t)
        self.conv3 = InvertedResidual(f + 2 * g, g, t)
        self.conv4 = InvertedResidual(f + 3 * g, g, t)
        self.conv5 = InvertedResidual(f + 4 * g, f, t)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class MobileRRDB(nn.Module):
    """Three mobile dense blocks and a scaled skip, as ESRGAN's RRDB.

    Args:
        num_feat: channels of the trunk.
        num_grow_ch: growth channels of each dense block.
        expand_ratio: expansion of every bottleneck.
    """

    def __init__(self, num_feat: int, num_grow_ch: int = 32, expand_ratio: int = 1):
        super().__init__()
        self.rdb1 = MobileDenseBlock(num_feat, num_grow_ch, expand_ratio)
        self.rdb2 = MobileDenseBlock(num_feat, num_grow_ch, expand_ratio)
        self.rdb3 = MobileDenseBlock(num_feat, num_grow_ch, expand_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class MESRGAN(nn.Module):
    """Mobile ESRGAN generator.

    Args:
        num_in_ch: channels of the input picture (3 for RGB).
        num_out_ch: channels of the output picture.
        scale: 4, 2 or 1; as in RRDBNet, 2 and 1 pixel-unshuffle the input by
            2 or 4 first, so H and W must then be multiples of 2 or 4.
        num_feat: trunk channels (64).
        num_block: number of mobile RRDB blocks (23, as esrgan-x4).
        num_grow_ch: growth channels inside the dense blocks (32).
        expand_ratio: bottleneck expansion (1; see the module docstring).

    Keys: RRDBNet's, with ``body.N.rdbK.convJ.{expand, depthwise, project}``
    in place of ``body.N.rdbK.convJ``.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        expand_ratio: int = 1,
    ):
        super().__init__()
        if scale not in _UNSHUFFLE:
            raise ValueError(f"MESRGAN supports scale 4, 2 or 1, not {scale!r}")
        if min(num_in_ch, num_out_ch, num_feat, num_block, num_grow_ch, expand_ratio) < 1:
            raise ValueError("MESRGAN sizes must be positive")
        self.scale = scale
        self.unshuffle = _UNSHUFFLE[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(MobileRRDB(num_feat, num_grow_ch, expand_ratio) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


__all__ = ["MESRGAN", "InvertedResidual", "MobileDenseBlock", "MobileRRDB"]
