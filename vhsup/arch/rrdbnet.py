"""RRDBNet, the generator of ESRGAN and Real-ESRGAN.

Parameter names follow Real-ESRGAN's published checkpoints exactly
(``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) so that their
``.pth`` files load with ``load_state_dict(strict=True)`` and no renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The network always upsamples x4 internally (two nearest x2 steps). Scales 2
# and 1 are reached, as in Real-ESRGAN, by first folding the input into
# channels with pixel-unshuffle by 2 or 4.
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output.

    Args:
        num_feat: channels entering and leaving the block.
        num_grow_ch: channels each of conv1..conv4 adds to the running concat.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        g = num_grow_ch
        self.conv1 = self._conv(num_feat, g)
        self.conv2 = self._conv(num_feat + g, g)
        self.conv3 = self._conv(num_feat + 2 * g, g)
        self.conv4 = self._conv(num_feat + 3 * g, g)
        self.conv5 = self._conv(num_feat + 4 * g, num_feat)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def _conv(self, in_ch: int, out_ch: int) -> nn.Module:
        """One of the block's five convs (a subclass may build them differently)."""
        return nn.Conv2d(in_ch, out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        # Residual scaling 0.2 keeps the very deep stack stable (ESRGAN 3.2).
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a scaled skip.

    Args:
        num_feat: channels of the trunk.
        num_grow_ch: growth channels of each dense block.
    """

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = self._dense_block(num_feat, num_grow_ch)
        self.rdb2 = self._dense_block(num_feat, num_grow_ch)
        self.rdb3 = self._dense_block(num_feat, num_grow_ch)

    def _dense_block(self, num_feat: int, num_grow_ch: int) -> nn.Module:
        return ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator.

    Args:
        num_in_ch: channels of the input picture (3 for RGB).
        num_out_ch: channels of the output picture.
        scale: 4, 2 or 1. Scales 2 and 1 pixel-unshuffle the input by 2 or 4
            first, so H and W must then be multiples of 2 or 4.
        num_feat: trunk channels (64 in the published models).
        num_block: number of RRDB blocks (23 for x4plus, 6 for the anime model).
        num_grow_ch: growth channels inside the dense blocks (32).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ):
        super().__init__()
        name = type(self).__name__
        if scale not in _UNSHUFFLE:
            raise ValueError(f"{name} supports scale 4, 2 or 1, not {scale!r}")
        if min(num_in_ch, num_out_ch, num_feat, num_block, num_grow_ch) < 1:
            raise ValueError(f"{name} sizes must be positive")
        self.scale = scale
        self.unshuffle = _UNSHUFFLE[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(self._block(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def _block(self, num_feat: int, num_grow_ch: int) -> nn.Module:
        """One trunk block (MESRGAN swaps in its mobile version)."""
        return RRDB(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
