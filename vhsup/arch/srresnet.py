"""SRResNet, the generator of SRGAN (Ledig et al., CVPR 2017).

The same network is trained two ways: with a pixel loss alone it is
``srresnet-x4``, with a perceptual + adversarial loss ``srgan-x4``. It is a
plain stack of convs (no dense connections, no attention), so its receptive
field is exact and small, which makes it cheap to tile.

Two things differ from the rest of vhsup's networks and are handled inside
the module so that callers see the usual contract (RGB in [0, 1] in, RGB on
the [0, 1] scale out):

* The paper feeds the low-resolution picture in [0, 1] and ends in tanh,
  whose output in [-1, 1] is compared with the high-resolution picture
  mapped to [-1, 1]. ``forward`` returns ``(tanh + 1) / 2``, so the output
  is on the [0, 1] scale (and, because of tanh, never outside it).
* Every block has BatchNorm. In eval mode it is a fixed per-channel affine
  map, so inference is per-pixel and tiles like a plain conv net; in train
  mode it uses batch statistics as in the paper. Call ``.eval()`` to infer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import VhsupError
from .spec import (
    ArchSpec,
    PathArg,
    StateDict,
    contiguous,
    numbered,
    one_by_one,
    read_int,
    unknown,
)

SCALES = (2, 4, 8)


class ResidualBlockBN(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity.

    Args:
        num_feat: channels in and out.
    """

    def __init__(self, num_feat: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(num_feat)
        self.act = nn.PReLU(num_parameters=num_feat)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SubPixelUp(nn.Module):
    """conv3x3 to 4x the channels, PixelShuffle(2), PReLU: one x2 step.

    Args:
        num_feat: channels in and out.
    """

    def __init__(self, num_feat: int):
        super().__init__()
        self.conv = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(num_parameters=num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """SRResNet / SRGAN generator.

    Args:
        num_in_ch: channels of the input picture (3 for RGB).
        num_out_ch: channels of the output picture.
        num_feat: trunk channels (64 in the paper).
        num_block: residual blocks in the trunk (16 in the paper).
        upscale: 2, 4 or 8: one sub-pixel x2 step per factor of two.

    Key names: ``conv_first`` (9x9) and ``act_first``; ``body.N.{conv1, bn1,
    act, conv2, bn2}``; ``conv_body``/``bn_body`` before the long skip;
    ``upsample.N.{conv, act}``; ``conv_last`` (9x9). PReLUs have one slope
    per channel.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        upscale: int = 4,
    ):
        super().__init__()
        if upscale not in SCALES:
            raise ValueError(f"SRResNet supports upscale 2, 4 or 8, not {upscale!r}")
        if min(num_in_ch, num_out_ch, num_feat) < 1 or num_block < 0:
            raise ValueError("SRResNet sizes must be positive")
        self.upscale = upscale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 9, 1, 4)
        self.act_first = nn.PReLU(num_parameters=num_feat)
        self.body = nn.Sequential(*(ResidualBlockBN(num_feat) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.bn_body = nn.BatchNorm2d(num_feat)
        self.upsample = nn.Sequential(*(SubPixelUp(num_feat) for _ in range(int(math.log2(upscale)))))
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 9, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.act_first(self.conv_first(x))
        trunk = self.bn_body(self.conv_body(self.body(feat)))
        out = self.conv_last(self.upsample(feat + trunk))
        # tanh's [-1, 1] onto vhsup's [0, 1] (see the module docstring).
        return (torch.tanh(out) + 1.0) * 0.5


def srresnet_reach(num_block: int, upscale: int) -> int:
    """Input pixels an output pixel depends on, on each side (exact).

    conv_first 9x9 reaches 4 px, each block's two 3x3 convs 2, conv_body 1;
    the k-th sub-pixel conv runs at 2**k times the input grid (1/2**k input
    px), and conv_last's 4 px are at the output grid (4/upscale input px).
    A tile with this much context equals the untiled picture exactly.
    """
    steps = int(math.log2(upscale))
    reach = 4 + 2 * num_block + 1 + sum(0.5**k for k in range(steps)) + 4 / upscale
    return math.ceil(reach)


def _read_hyper(sd: StateDict, path: PathArg) -> dict:
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    if first.ndim != 4 or last.ndim != 4:
        raise unknown(path, "conv_first/conv_last are not conv weights")
    blocks, ups = numbered(sd, "body"), numbered(sd, "upsample")
    if not contiguous(blocks) or not contiguous(ups):
        raise unknown(path, "SRResNet keys without contiguous body.N / upsample.N numbering")
    if len(ups) not in (1, 2, 3):
        raise VhsupError(
            f"SRResNet with {len(ups)} sub-pixel steps (x{2 ** len(ups)}) is not supported; only x2, x4, x8", path
        )
    return {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": int(last.shape[0]),
        "num_feat": int(first.shape[0]),
        "num_block": len(blocks),
        "upscale": 2 ** len(ups),
    }


SPEC = ArchSpec(
    name="srresnet",
    title="SRResNet/SRGAN",
    modules=(SRResNet,),
    build=SRResNet,
    scale=read_int("upscale"),
    context=lambda h: srresnet_reach(int(h["num_block"]), int(h["upscale"])),
    keys=("conv_first.weight", "act_first.weight", "conv_body.weight", "bn_body.weight", "conv_last.weight"),
    read_hyper=_read_hyper,
    # tanh turns an fp16 overflow into plain white instead of the NaN the
    # engine's guard looks for; bf16 has fp32's range.
    supports_half=False,
    recompute=lambda net: one_by_one(net.body),  # type: ignore[arg-type]
    plain_convs=("upsample.*",),
)

__all__ = ["SCALES", "SPEC", "ResidualBlockBN", "SRResNet", "SubPixelUp", "srresnet_reach"]
