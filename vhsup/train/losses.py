"""The generator's losses: pixel, perceptual, adversarial, translational consistency.

Every loss returns an unweighted scalar; the trainer applies the weights
(Real-ESRGAN's: L1 1.0, perceptual 1.0, GAN 0.1; translational consistency
2.0 once it is switched on). All of them compute in float32 whatever the
autocast state, because a bf16/fp16 difference of two nearly equal pictures
loses most of its bits and the losses are tiny next to the pictures.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vhsup.errors import VhsupError
from vhsup.train.perceptual import BACKBONES, build_backbone, check_taps, find_backbone_weights

# Real-ESRGAN's perceptual layer weights (conv outputs before their ReLU).
VGG19_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
# For the residual U-Net (whose encoder is ResNet-18 blocks): two shallow
# taps, after the 3rd and 6th convs (1/4 and 1/8 size). Deeper ResNet
# features mostly encode object classes, which say little about texture at
# the patch sizes we train on.
RESNET18_LAYER_WEIGHTS = {"conv3": 1.0, "conv6": 1.0}
# The small pixel term that comes with the ResNet taps. The shallow taps are
# blind to slow colour shifts (BatchNorm removes most of the mean), so a
# little L1 on the pixels pins the colours; 0.1 keeps it below the features.
RESNET18_PIXEL_WEIGHT = 0.1


def _fp32_off_autocast(device: torch.device):
    """A context with autocast disabled on ``device``'s type."""
    return torch.autocast(device_type=device.type, enabled=False)


class _PixelLoss(nn.Module):
    def __init__(self, kind: str, eps: float):
        super().__init__()
        self.kind = kind
        self.eps = float(eps)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        diff = sr.float() - hr.float()
        if self.kind == "l1":
            return diff.abs().mean()
        # Charbonnier: sqrt(d^2 + eps^2) is |d| for large errors but has a
        # gradient that goes smoothly to 0 at d = 0 instead of jumping from
        # -1 to +1, which calms the last steps of pixel-only training.
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", eps={self.eps:g}" if self.kind == "charbonnier" else "")


def pixel_loss(kind: str = "l1", eps: float = 1e-6) -> nn.Module:
    """The stage-1 (and stage-2 content) pixel loss: ``"l1"`` or ``"charbonnier"``.

    The module's ``forward(sr, hr)`` returns the mean over all elements, in
    float32. ``eps`` is the Charbonnier smoothing width, in pixel units of
    the [0, 1] range.
    """
    if kind not in ("l1", "charbonnier"):
        raise VhsupError(f"unknown pixel loss {kind!r}; use l1 or charbonnier")
    if not eps > 0:
        raise VhsupError(f"Charbonnier eps must be positive, got {eps}")
    return _PixelLoss(kind, eps)


class PerceptualLoss(nn.Module):
    """L1 between frozen ImageNet-backbone features of the output and the target.

    Args:
        backbone: ``"vgg19"`` (Real-ESRGAN's loss) or ``"resnet18"`` (for
            the residual U-Net, ``unet-x4``).
        weights: the backbone's torchvision file; None finds it in the torch
            hub cache or downloads it (see :func:`find_backbone_weights`).
        layer_weights: tap name -> weight. Defaults: VGG19 conv1_2 0.1,
            conv2_2 0.1, conv3_4 1, conv4_4 1, conv5_4 1 (before ReLU);
            ResNet-18 conv3 1, conv6 1.
        pixel_weight: weight of an extra L1 on the pixels inside this loss.
            None means the backbone's default: 0 for VGG19 (the trainer has
            its own L1), 0.1 for ResNet-18.
        allow_download: whether a missing file may be fetched.

    Inputs are (N, 3, H, W) RGB in [0, 1] in any dtype. The backbone runs in
    float32 with autocast off, once on ``sr`` (with grad) and once on ``hr``
    under ``no_grad``, which stores activations for one picture instead of
    two. Its parameters never require grad and it stays in eval mode.
    Move the module to the training device with ``.to(device)``.

    After each call, ``last_terms`` holds the detached per-tap losses
    (weighted), so a trainer can log which part grew or went NaN.
    """

    def __init__(
        self,
        backbone: str = "vgg19",
        weights: Path | None = None,
        *,
        layer_weights: dict[str, float] | None = None,
        pixel_weight: float | None = None,
        allow_download: bool = True,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise VhsupError(f"unknown perceptual backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
        default = VGG19_LAYER_WEIGHTS if backbone == "vgg19" else RESNET18_LAYER_WEIGHTS
        self.layer_weights = {
            str(k): float(v) for k, v in (layer_weights if layer_weights is not None else default).items()
        }
        if not self.layer_weights:
            raise VhsupError("the perceptual loss needs at least one layer weight")
        if pixel_weight is None:
            pixel_weight = 0.0 if backbone == "vgg19" else RESNET18_PIXEL_WEIGHT
        self.pixel_weight = float(pixel_weight)
        self.backbone_name = backbone
        # Tap names are checked before looking for a file: a typo in the
        # config should not first cost a 548 MB download.
        check_taps(backbone, self.layer_weights)
        self.weights_path = find_backbone_weights(backbone, weights, allow_download=allow_download)
        self.backbone = build_backbone(backbone, self.layer_weights, self.weights_path)
        self.last_terms: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.backbone.eval()  # BatchNorm keeps ImageNet statistics
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with _fp32_off_autocast(sr.device):
            sr = sr.float()
            hr = hr.detach().float()
            with torch.no_grad():
                target = self.backbone(hr)
            feats = self.backbone(sr)
            terms = {name: w * F.l1_loss(feats[name], target[name]) for name, w in self.layer_weights.items() if w}
            if self.pixel_weight:
                terms["pixel"] = self.pixel_weight * F.l1_loss(sr, hr)
            total = sum(terms.values(), sr.new_zeros(()))
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return total


class GANLoss(nn.Module):
    """Vanilla GAN loss: binary cross-entropy on the discriminator's logits.

    ``loss(logits, True)`` is -mean(log sigmoid(logits)); with False,
    -mean(log(1 - sigmoid(logits))). Used for both players: the
    discriminator with real=True on HR and False on SR, the generator with
    real=True on SR. Computed in float32 (autocast may hand in bf16 logits).
    """

    def __init__(self, real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        logits = logits.float()
        target = torch.full_like(logits, self.real_label if target_is_real else self.fake_label)
        with _fp32_off_autocast(logits.device):
            return F.binary_cross_entropy_with_logits(logits, target)


# (row, col) offsets of the four corner crops, in units of ``shift``.
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def translational_consistency(
    generator: nn.Module,
    lr: torch.Tensor,
    *,
    shift: int,
    scale: int,
    rng: torch.Generator | None = None,
    margin: int = 0,
) -> torch.Tensor:
    """L1 between the generator's outputs for two overlapping corner crops of ``lr``.

    GAN training can teach a generator artefacts tied to where a pixel sits
    in its input window rather than to the picture (a fixed texture, a
    checkerboard phase, a bright rim). Such artefacts move with the window,
    so two windows that overlap give different outputs for the same scene
    content. This loss compares them there.

    Args:
        generator: the model, called once on both crops stacked in the batch.
        lr: (N, 3, h, w), the training patch plus ``shift`` LR pixels on each
            axis. Crops are (h - shift, w - shift), taken at the corners.
        shift: the offset between corners, in LR pixels (> 0).
        scale: the generator's upscale factor.
        rng: with a CPU torch.Generator, the two corners are a random
            distinct pair drawn from it (one draw per call); without, the
            top-left and bottom-right corners, which differ on both axes.
        margin: LR pixels dropped from each side of the shared region before
            comparing. A zero-padded conv net is only shift-equivariant
            farther than its receptive radius from a crop border; a margin
            of that radius compares only where a perfect generator would
            agree. With 0 (the default) the loss also asks the generator not
            to depend on how near a border the content is, which is what
            tiled upscaling needs at the seams; it then cannot reach 0
            exactly for a padded net.

    Returns the mean absolute difference in float32, differentiable with
    respect to the generator's parameters through both crops.
    """
    n, c, h, w = lr.shape
    if shift <= 0 or scale <= 0 or margin < 0:
        raise ValueError(f"shift and scale must be positive and margin >= 0, got {shift}, {scale}, {margin}")
    ph, pw = h - shift, w - shift
    if min(ph, pw) - shift - 2 * margin <= 0:
        raise ValueError(f"a {h}x{w} patch with shift {shift} and margin {margin} leaves no shared region to compare")
    if rng is None:
        a, b = CORNERS[0], CORNERS[3]
    else:
        pairs = list(itertools.combinations(CORNERS, 2))
        a, b = pairs[int(torch.randint(len(pairs), (1,), generator=rng))]
    (ya, xa), (yb, xb) = [(r * shift, q * shift) for r, q in (a, b)]
    crops = torch.cat([lr[:, :, ya : ya + ph, xa : xa + pw], lr[:, :, yb : yb + ph, xb : xb + pw]])
    out = generator(crops)
    if tuple(out.shape[-2:]) != (ph * scale, pw * scale):
        raise ValueError(f"generator gave {tuple(out.shape[-2:])} for a {ph}x{pw} crop; expected x{scale}")
    out_a, out_b = out[:n], out[n:]
    # Shared region in LR coordinates of lr, trimmed by the margin.
    y0, y1 = max(ya, yb) + margin, min(ya, yb) + ph - margin
    x0, x1 = max(xa, xb) + margin, min(xa, xb) + pw - margin

    def region(o: torch.Tensor, oy: int, ox: int) -> torch.Tensor:
        return o[:, :, (y0 - oy) * scale : (y1 - oy) * scale, (x0 - ox) * scale : (x1 - ox) * scale]

    with _fp32_off_autocast(out.device):
        return F.l1_loss(region(out_a, ya, xa).float(), region(out_b, yb, xb).float())
