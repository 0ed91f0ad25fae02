"""Discriminators for GAN training: SRGAN's classifier and Real-ESRGAN's U-Net.

They are only used while training a generator; inference never loads them.
Both take RGB in [0, 1] (the generator's output scale) and return raw logits
(no sigmoid), so the loss can use the numerically stable
``binary_cross_entropy_with_logits``.

* :class:`SRGANDiscriminator` says "real or fake" once per picture.
* :class:`UNetDiscriminatorSN` says it for every pixel, which Real-ESRGAN
  found necessary for pictures degraded in many local ways; spectral norm
  keeps its training stable against a strong generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class SRGANDiscriminator(nn.Module):
    """The SRGAN discriminator (Ledig et al. 2017, figure 4), for any input size.

    A first conv with LeakyReLU(0.2) and no BatchNorm, then seven
    conv-BN-LeakyReLU blocks: stride 2 on blocks 1, 3, 5, 7 (halving the
    size each time) and twice the channels on blocks 2, 4, 6, giving
    64, 64/2, 128, 128/2, 256, 256/2, 512, 512/2. The paper then flattens a
    fixed 6x6 map (96 px patches) into Linear(1024) - LeakyReLU - Linear(1);
    here an adaptive average pool to ``pool`` x ``pool`` comes first, so any
    input size gives one logit per picture (at 96 px and pool 6 the pool is
    the identity).

    Args:
        num_in_ch: channels of the pictures judged (3).
        num_feat: channels of the first conv (64); the last block has 8x.
        first_kernel: kernel of the first conv. The vhsup issue asks for 9
            (the generator's first conv is 9x9 too); the paper uses 3.
        pool: side of the pooled map fed to the classifier.
        hidden: width of the hidden fully connected layer (1024).

    Keys: ``conv_first``, ``body.N.{conv, bn}`` (N = 0..6), ``fc1``, ``fc2``.
    """

    def __init__(
        self, num_in_ch: int = 3, num_feat: int = 64, first_kernel: int = 9, pool: int = 6, hidden: int = 1024
    ):
        super().__init__()
        if first_kernel % 2 == 0 or min(num_in_ch, num_feat, first_kernel, pool, hidden) < 1:
            raise ValueError("SRGANDiscriminator sizes must be positive and first_kernel odd")
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, first_kernel, 1, first_kernel // 2)
        blocks = []
        channels = num_feat
        for i in range(7):
            out = num_feat * 2 ** ((i + 1) // 2)
            stride = 2 if i % 2 == 0 else 1
            blocks.append(_ConvBNAct(channels, out, stride))
            channels = out
        self.body = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc1 = nn.Linear(channels * pool * pool, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1) logits."""
        feat = F.leaky_relu(self.conv_first(x), 0.2)
        feat = self.pool(self.body(feat)).flatten(1)
        return self.fc2(F.leaky_relu(self.fc1(feat), 0.2))


class _ConvBNAct(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        # No conv bias: the BatchNorm right after it has its own shift.
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), 0.2)


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral normalisation.

    conv0 (3x3) at full size; conv1..conv3 are 4x4 stride-2 convs down to
    1/8 size with 2x, 4x, 8x the features; conv4..conv6 are 3x3 convs each
    after a bilinear x2 upsample, adding the matching encoder output (skip);
    conv7, conv8 refine and conv9 gives one logit per pixel. Every conv but
    the first and the last is spectrally normalised (torch's
    ``nn.utils.spectral_norm``, which stores ``weight_orig``, ``weight_u``
    and ``weight_v`` - the key names of Real-ESRGAN's ``*_netD.pth``
    checkpoints, so those load with ``strict=True``).

    Any input size works: each upsample goes to the exact size of the skip
    it meets, which for sizes divisible by 8 is the plain x2 of the original.

    Args:
        num_in_ch: channels of the pictures judged (3).
        num_feat: channels of conv0 (64 in Real-ESRGAN).
        skip_connection: add the encoder features on the way up (True).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        if min(num_in_ch, num_feat) < 1:
            raise ValueError("UNetDiscriminatorSN sizes must be positive")
        f = num_feat
        self.skip_connection = skip_connection

        def sn(in_ch: int, out_ch: int, k: int, s: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(in_ch, out_ch, k, s, 1, bias=False))

        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.conv1 = sn(f, 2 * f, 4, 2)
        self.conv2 = sn(2 * f, 4 * f, 4, 2)
        self.conv3 = sn(4 * f, 8 * f, 4, 2)
        self.conv4 = sn(8 * f, 4 * f, 3, 1)
        self.conv5 = sn(4 * f, 2 * f, 3, 1)
        self.conv6 = sn(2 * f, f, 3, 1)
        self.conv7 = sn(f, f, 3, 1)
        self.conv8 = sn(f, f, 3, 1)
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def _up(self, conv: nn.Module, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = F.leaky_relu(conv(x), 0.2)
        return x + skip if self.skip_connection else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H, W) logits."""
        x0 = F.leaky_relu(self.conv0(x), 0.2)
        x1 = F.leaky_relu(self.conv1(x0), 0.2)
        x2 = F.leaky_relu(self.conv2(x1), 0.2)
        x3 = F.leaky_relu(self.conv3(x2), 0.2)
        y = self._up(self.conv4, x3, x2)
        y = self._up(self.conv5, y, x1)
        y = self._up(self.conv6, y, x0)
        y = F.leaky_relu(self.conv7(y), 0.2)
        y = F.leaky_relu(self.conv8(y), 0.2)
        return self.conv9(y)


__all__ = ["SRGANDiscriminator", "UNetDiscriminatorSN"]
