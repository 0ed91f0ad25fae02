"""RRDBNet, the generator of ESRGAN and Real-ESRGAN.

Parameter names follow Real-ESRGAN's published checkpoints exactly
(``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) so that their
``.pth`` files load with ``load_state_dict(strict=True)`` and no renaming.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnknownArchitecture
from .spec import (
    ArchSpec,
    Blocks,
    Hyper,
    PathArg,
    StateDict,
    contiguous,
    in_groups,
    numbered,
    read_int,
    unknown,
)

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


# --- what the rest of vhsup knows about it ------------------------------------------

OUTER_KEYS = (
    "conv_first.weight",
    "conv_body.weight",
    "conv_up1.weight",
    "conv_up2.weight",
    "conv_hr.weight",
    "conv_last.weight",
)
#: The convs a LeakyReLU(0.2) follows: conv1..conv4 of every dense block and
#: the three upsampler convs (how ncnn's fused activations pin its convs down).
LEAKY_CONVS = re.compile(r"(^|\.)(conv[1-4]|conv_up1|conv_up2|conv_hr)$")
#: Tile context of an RRDB trunk (input px at x4). Its reach is hundreds of
#: pixels but fades; this is what esrgan-x4, the deepest published one,
#: needs to keep tiles within 1/255 (its card has the measurement).
TRUNK_CONTEXT = 72

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")


def convert_old_esrgan(sd: StateDict, path: PathArg = None) -> dict[str, torch.Tensor] | None:
    """The original ESRGAN layout renamed to these key names; None if ``sd`` is not in it.

    In the old layout ``model`` is a Sequential: 0 conv_first, 1 a shortcut
    block whose ``sub`` holds the RRDBs and then conv_body, then for x4
    upsample/conv/lrelu twice (convs at 3 and 6), conv_hr at 8, conv_last at
    10. Only x4 exists in RRDBNet's fixed layout, so other scales are refused.
    """
    if "model.0.weight" not in sd or not any(k.startswith("model.1.sub.") for k in sd):
        return None
    rdbs = {m.group(1) for k in sd if (m := _OLD_RDB.match(k))}
    body_idx = [int(m.group(1)) for k in sd if (m := _OLD_BODY.match(k))]
    tops = sorted({int(m.group(1)) for k in sd if (m := _OLD_TOP.match(k))} - {0})
    if not rdbs or len(set(body_idx)) != 1:
        raise unknown(path, "old ESRGAN layout without RRDB blocks and one trunk conv")
    num_block = len(rdbs)
    if set(map(int, rdbs)) != set(range(num_block)) or body_idx[0] != num_block:
        raise unknown(path, "old ESRGAN layout with gaps in its RRDB numbering")
    if len(tops) != 4:
        n_up = max(len(tops) - 2, 0)
        raise UnknownArchitecture(
            f"old-style ESRGAN model with {n_up} upsampling convs (scale {2**n_up}) is not "
            "supported by vhsup's own loader; only x4",
            path,
        )
    names = dict(zip(tops, ("conv_up1", "conv_up2", "conv_hr", "conv_last")))
    names[0] = "conv_first"
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if m := _OLD_RDB.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif m := _OLD_BODY.match(key):
            out[f"conv_body.{m.group(2)}"] = value
        elif (m := _OLD_TOP.match(key)) and int(m.group(1)) in names:
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = value
        else:
            raise unknown(path, f"unexpected key {key!r} in an old ESRGAN layout")
    return out


def outer_hyper(sd: StateDict, path: PathArg) -> dict:
    """Channels, scale and trunk width from the convs RRDBNet and MESRGAN share."""
    first = sd["conv_first.weight"]
    last = sd["conv_last.weight"]
    if first.ndim != 4 or last.ndim != 4:
        raise unknown(path, "conv_first/conv_last are not conv weights")
    num_feat, in_first = first.shape[0], first.shape[1]
    num_out_ch = last.shape[0]
    # Real-ESRGAN x2/x1 fold the picture into channels with pixel-unshuffle,
    # so conv_first sees 4x or 16x the picture's channels; the output side
    # tells how many channels the picture has.
    if in_first == 16 * num_out_ch:
        scale, num_in_ch = 1, in_first // 16
    elif in_first == 4 * num_out_ch:
        scale, num_in_ch = 2, in_first // 4
    else:
        scale, num_in_ch = 4, in_first
    if any(k.startswith("conv_up3") for k in sd):
        raise UnknownArchitecture(
            "RRDBNet with a third upsampling conv (x8) is not supported by vhsup's own loader", path
        )
    blocks = numbered(sd, "body")
    if not blocks or not contiguous(blocks):
        raise unknown(path, "RRDBNet keys without a contiguous body.N numbering")
    return {
        "num_in_ch": int(num_in_ch),
        "num_out_ch": int(num_out_ch),
        "scale": scale,
        "num_feat": int(num_feat),
        "num_block": len(blocks),
    }


def _read_hyper(sd: StateDict, path: PathArg) -> dict:
    hyper = outer_hyper(sd, path)
    grow = sd.get("body.0.rdb1.conv1.weight")
    if grow is None:
        raise unknown(path, "RRDBNet keys without body.0.rdb1.conv1")
    return {**hyper, "num_grow_ch": int(grow.shape[0])}


def trunk_multiple(hyper: Hyper) -> int:
    """x2/x1 nets run their trunk on a 2x/4x coarser grid (pixel-unshuffle):
    frames and tiles must be multiples of that."""
    return _UNSHUFFLE[int(hyper["scale"])]


def trunk_context(hyper: Hyper) -> int:
    """The measured trunk reach, in input pixels: the same reach in trunk
    pixels spans 2x/4x as many input pixels on the coarser grid of x2/x1."""
    return TRUNK_CONTEXT * trunk_multiple(hyper)


def trunk_blocks(net: nn.Module) -> Blocks:
    """The RRDB trunk, three blocks a segment: one RRDB holds little
    activation next to its recompute cost."""
    return in_groups(net.body, 3)  # type: ignore[arg-type]


SPEC = ArchSpec(
    name="rrdbnet",
    title="RRDBNet (ESRGAN/Real-ESRGAN)",
    modules=(RRDBNet,),
    build=RRDBNet,
    scale=read_int("scale"),
    context=trunk_context,
    size_multiple=trunk_multiple,
    keys=OUTER_KEYS,
    read_hyper=_read_hyper,
    legacy=convert_old_esrgan,
    recompute=trunk_blocks,
    plain_convs=("conv_up*", "conv_hr"),
)

__all__ = ["RRDB", "SPEC", "RRDBNet", "ResidualDenseBlock", "convert_old_esrgan", "outer_hyper"]
