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
from torch import nn

from .rrdbnet import (
    OUTER_KEYS,
    RRDB,
    ResidualDenseBlock,
    RRDBNet,
    outer_hyper,
    trunk_blocks,
    trunk_context,
    trunk_multiple,
)
from .spec import ArchSpec, PathArg, StateDict, read_int, unknown


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


class MobileDenseBlock(ResidualDenseBlock):
    """ESRGAN's residual dense block with bottlenecks for its five convs.

    Args:
        num_feat: channels entering and leaving the block.
        num_grow_ch: channels each of conv1..conv4 adds to the running concat.
        expand_ratio: expansion of every bottleneck.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32, expand_ratio: int = 1):
        self.expand_ratio = expand_ratio  # read by _conv during the parent's __init__
        super().__init__(num_feat, num_grow_ch)

    def _conv(self, in_ch: int, out_ch: int) -> nn.Module:
        return InvertedResidual(in_ch, out_ch, self.expand_ratio)


class MobileRRDB(RRDB):
    """Three mobile dense blocks and a scaled skip, as ESRGAN's RRDB.

    Args:
        num_feat: channels of the trunk.
        num_grow_ch: growth channels of each dense block.
        expand_ratio: expansion of every bottleneck.
    """

    def __init__(self, num_feat: int, num_grow_ch: int = 32, expand_ratio: int = 1):
        self.expand_ratio = expand_ratio
        super().__init__(num_feat, num_grow_ch)

    def _dense_block(self, num_feat: int, num_grow_ch: int) -> nn.Module:
        return MobileDenseBlock(num_feat, num_grow_ch, self.expand_ratio)


class MESRGAN(RRDBNet):
    """Mobile ESRGAN generator: RRDBNet's trunk and upsampler around mobile RRDB blocks.

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
        if expand_ratio < 1:
            raise ValueError("MESRGAN sizes must be positive")
        self.expand_ratio = expand_ratio
        super().__init__(num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)

    def _block(self, num_feat: int, num_grow_ch: int) -> nn.Module:
        return MobileRRDB(num_feat, num_grow_ch, self.expand_ratio)


def _read_hyper(sd: StateDict, path: PathArg) -> dict:
    """RRDBNet's outer layout; the blocks hold bottlenecks."""
    hyper = outer_hyper(sd, path)
    expand = sd[_BLOCK_KEY]
    project = sd.get("body.0.rdb1.conv1.project.weight")
    if expand.ndim != 4 or project is None or project.ndim != 4:
        raise unknown(path, "MESRGAN block without 1x1 expand/project conv weights")
    in_ch, hidden = int(expand.shape[1]), int(expand.shape[0])
    if hidden % in_ch:
        raise unknown(path, f"MESRGAN expand conv widens {in_ch} to {hidden} channels, not a whole multiple")
    return {**hyper, "num_grow_ch": int(project.shape[0]), "expand_ratio": hidden // in_ch}


# MESRGAN has every RRDBNet key outside the blocks; this one tells them apart.
_BLOCK_KEY = "body.0.rdb1.conv1.expand.weight"

# The trunk is as deep as RRDBNet's, so it borrows RRDBNet's measured reach.
SPEC = ArchSpec(
    name="mesrgan",
    title="MESRGAN",
    modules=(MESRGAN,),
    build=MESRGAN,
    scale=read_int("scale"),
    context=trunk_context,
    size_multiple=trunk_multiple,
    keys=(*OUTER_KEYS, _BLOCK_KEY),
    read_hyper=_read_hyper,
    recompute=trunk_blocks,
    plain_convs=("conv_up*", "conv_hr"),
)

__all__ = ["MESRGAN", "SPEC", "InvertedResidual", "MobileDenseBlock", "MobileRRDB"]
