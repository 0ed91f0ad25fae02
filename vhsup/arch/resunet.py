"""Residual U-Net upscaler: a bilinear upscale plus a learned correction.

The input is first upscaled bilinearly to the output size; a U-Net then
works on that picture and predicts only what bilinear gets wrong (the
residual to the true high-resolution picture). An untrained or lightly
trained network therefore already gives a plain bilinear upscale, and the
U-Net sees the whole scene at four resolutions, which suits the soft,
large-scale blur of VHS better than a net that sees a few pixels.

The encoder stages are ResNet-18 BasicBlocks (two per stage, the first one
halving the size), so it can be initialised from, or frozen like, a
classification backbone: :meth:`ResUNet.freeze_encoder`. The decoder stages
are residual blocks fed with the upsampled deeper features concatenated
with the encoder's skip at that size.

With the defaults (16/32/72/128 channels, three stages) it has 0.98 M
parameters, all trainable unless the encoder is frozen.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .spec import (
    ArchSpec,
    Hyper,
    PathArg,
    StateDict,
    contiguous,
    numbered,
    one_by_one,
    read_int,
    unknown,
)


class BasicBlock(nn.Module):
    """ResNet-18's block: conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, ReLU.

    Args:
        in_ch: channels in.
        out_ch: channels out.
        stride: 2 halves the size (the shortcut is then a strided 1x1 conv
            with BN, as in ResNet's downsampling blocks).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class DecoderBlock(nn.Module):
    """Residual block joining upsampled features with an encoder skip.

    Args:
        in_ch: channels of the concatenation (deeper + skip).
        out_ch: channels out (those of the skip).
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResUNet(nn.Module):
    """Residual U-Net upscaler.

    Args:
        num_in_ch: channels of the input picture (3 for RGB).
        num_out_ch: channels of the output; must equal num_in_ch, since the
            network adds its output to the upscaled input.
        upscale: integer output scale, 1..8.
        channels: features at full size, then after each encoder stage; its
            length minus one is the number of stages (each halves the size).
        blocks_per_stage: BasicBlocks per encoder stage (2, as ResNet-18).
        freeze_encoder: start with the stem and encoder frozen.

    Keys: ``out_scale`` (the upscale, an int64 buffer), ``stem.{0,1}`` (conv, BN), ``encoder.S.B.{conv1, bn1, conv2, bn2,
    downsample.{0,1}}``, ``decoder.S.{conv1, bn1, conv2, bn2, shortcut}``
    (decoder.0 is the deepest), ``tail``.

    The encoder halves the output-size picture len(channels) - 1 times, so a
    tile must start on a multiple of 2**stages output pixels to see the same
    sampling grid as the whole picture: see :func:`resunet_size_multiple`.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        upscale: int = 4,
        channels: tuple[int, ...] | list[int] = (16, 32, 72, 128),
        blocks_per_stage: int = 2,
        freeze_encoder: bool = False,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if num_out_ch != num_in_ch:
            raise ValueError("ResUNet adds its output to the upscaled input: num_out_ch must equal num_in_ch")
        if not 1 <= upscale <= 8:
            raise ValueError(f"ResUNet supports upscale 1..8, not {upscale!r}")
        if len(channels) < 2 or min(channels) < 1 or num_in_ch < 1 or blocks_per_stage < 1:
            raise ValueError("ResUNet needs at least two positive channel counts and one block per stage")
        self.upscale = upscale
        self.channels = channels
        # No weight shape depends on the scale (it only sets the first
        # bilinear upscale), so a saved state dict records it here for the
        # detector. forward uses the int; loading checks the two agree.
        self.register_buffer("out_scale", torch.tensor(upscale, dtype=torch.int64))
        self.stem = nn.Sequential(nn.Conv2d(num_in_ch, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]))
        self.encoder = nn.ModuleList(
            nn.Sequential(
                BasicBlock(c_in, c_out, stride=2),
                *(BasicBlock(c_out, c_out) for _ in range(blocks_per_stage - 1)),
            )
            for c_in, c_out in itertools.pairwise(channels)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(deep + skip, skip) for deep, skip in zip(channels[:0:-1], channels[-2::-1])
        )
        self.tail = nn.Conv2d(channels[0], num_out_ch, 3, 1, 1)
        self.encoder_frozen = False
        self.freeze_encoder(freeze_encoder)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        saved = state_dict.get(prefix + "out_scale")
        if saved is not None and saved.numel() == 1 and int(saved.item()) != self.upscale:
            error_msgs.append(f"out_scale: the weights are for x{int(saved.item())}, this ResUNet is x{self.upscale}")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def freeze_encoder(self, frozen: bool = True) -> ResUNet:
        """Stop (or restart) training the stem and encoder.

        Frozen parameters get no gradients, and the frozen BatchNorms stay in
        eval mode even under ``.train()``, so their running statistics do not
        drift while the decoder learns.
        """
        self.encoder_frozen = bool(frozen)
        for module in (self.stem, self.encoder):
            for p in module.parameters():
                p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> ResUNet:
        super().train(mode)
        if self.encoder_frozen:
            self.stem.eval()
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        base = F.interpolate(x, size=(h * self.upscale, w * self.upscale), mode="bilinear", align_corners=False)
        skips = [F.relu(self.stem(base))]
        for stage in self.encoder:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            # Up to the skip's exact size: sizes not divisible by 2**stages
            # round up on the way down (stride-2 convs with padding 1).
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat((y, skip), 1))
        return base + self.tail(y)


def resunet_size_multiple(upscale: int, stages: int) -> int:
    """Input-pixel multiple a tile origin needs so the strided convs line up.

    Output pixel o lands on every stride-2 grid when o is a multiple of
    2**stages; input pixel i maps to o = i * upscale.
    """
    step = 2**stages
    return step // math.gcd(step, upscale)


def resunet_reach(upscale: int, stages: int, blocks_per_stage: int) -> int:
    """Input pixels an output pixel can depend on, on each side (an upper bound).

    In output pixels: the stem's 3x3 (1); encoder stage s (input grid 2**(s-1))
    its strided conv (2**(s-1)), its second conv (2**s) and 2 * 2**s for each
    further block; the way back, per stage, the bilinear x2 (at most one
    coarse pixel, 2**s) and the decoder block's two 3x3s (2 * 2**(s-1)); the
    tail's 3x3 (1). Divided by the scale, plus one input pixel for the
    initial bilinear upscale. A tile with this much context equals the
    untiled picture exactly (tests/test_arch_family.py measures the true
    reach with gradients and checks the bound).
    """
    reach = 2
    for s in range(1, stages + 1):
        reach += 2 ** (s - 1) + 2**s + (blocks_per_stage - 1) * 2 ** (s + 1)
        reach += 2**s + 2**s
    return math.ceil(reach / upscale) + 1


# The scale only sets the first bilinear upscale, so no weight shape shows
# it; the module keeps it in this buffer.
SCALE_KEY = "out_scale"


def _read_hyper(sd: StateDict, path: PathArg) -> dict:
    stem, tail = sd["stem.0.weight"], sd["tail.weight"]
    if stem.ndim != 4 or tail.ndim != 4:
        raise unknown(path, "stem/tail are not conv weights")
    stages = numbered(sd, "encoder")
    if not stages or not contiguous(stages):
        raise unknown(path, "ResUNet keys without a contiguous encoder.N numbering")
    channels = [int(stem.shape[0])]
    for s in range(len(stages)):
        w = sd.get(f"encoder.{s}.0.conv1.weight")
        if w is None:
            raise unknown(path, f"ResUNet stage encoder.{s} without a first block")
        channels.append(int(w.shape[0]))
    blocks = numbered(sd, "encoder.0", part=2)
    # The scale is nowhere in the weights (the network runs after a
    # bilinear upscale), so it is read from the file's metadata tensor.
    scale = sd.get(SCALE_KEY)
    if scale is None or scale.numel() != 1:
        raise unknown(path, f"ResUNet weights without the {SCALE_KEY!r} entry that records its scale")
    return {
        "num_in_ch": int(stem.shape[1]),
        "num_out_ch": int(tail.shape[0]),
        "upscale": int(scale.item()),
        "channels": channels,
        "blocks_per_stage": len(blocks),
    }


def _stages(hyper: Hyper) -> int:
    return len(hyper["channels"]) - 1


SPEC = ArchSpec(
    name="resunet",
    title="ResUNet",
    modules=(ResUNet,),
    build=ResUNet,
    scale=read_int("upscale"),
    context=lambda h: resunet_reach(int(h["upscale"]), _stages(h), int(h["blocks_per_stage"])),
    size_multiple=lambda h: resunet_size_multiple(int(h["upscale"]), _stages(h)),
    keys=("stem.0.weight", "encoder.0.0.conv1.weight", "decoder.0.conv1.weight", "tail.weight"),
    read_hyper=_read_hyper,
    recompute=lambda net: one_by_one([m for m in net.modules() if isinstance(m, BasicBlock | DecoderBlock)]),
    perceptual="resnet18",
)

__all__ = ["SPEC", "BasicBlock", "DecoderBlock", "ResUNet", "resunet_reach", "resunet_size_multiple"]
