"""Frozen ImageNet backbones whose features the perceptual loss compares.

The weights are torchvision's published ImageNet files, read as plain state
dicts: vhsup defines the layer stacks itself (torchvision is not a
dependency) with the same module names, so the files' keys load as they are.

- ``vgg19-dcbb9e9d.pth`` for the VGG19 feature stack (Real-ESRGAN's choice).
  Taps are named like ``conv3_4`` (the conv output, before its ReLU),
  ``relu3_4`` and ``pool3``. Only the layers up to the deepest tap are built.
- ``resnet18-f37072fd.pth`` for the residual U-Net, whose encoder is made of
  ResNet-18 blocks. Taps ``conv1``..``conv6`` are the outputs of the first six
  convolutions on ResNet-18's main path, after their BatchNorm and before the
  ReLU / residual add (the same "before activation" choice as for VGG, which
  keeps the negative half of each response). ``conv3`` is the second conv of
  ``layer1.0`` (64 channels, 1/4 size); ``conv6`` is the first conv of
  ``layer2.0`` (128 channels, 1/8 size).

Both stacks take RGB in [0, 1] and apply ImageNet's mean/std themselves,
because that is what the published weights were trained on.

Where the file comes from (:func:`find_backbone_weights`): an explicit path
(``--perceptual-weights``), else torch's hub cache
(``torch.hub.get_dir()/checkpoints/``, shared with every other torch program
on the machine), else a download from download.pytorch.org when allowed,
checked against the sha256 prefix that torchvision puts in the file name.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vhsup.arch.resunet import BasicBlock
from vhsup.atomic import replacing
from vhsup.errors import VhsupError
from vhsup.weights.safeload import load_state_dict_file

BACKBONES = ("vgg19", "resnet18")

# torchvision's file names; the part after the dash is the sha256 prefix.
FILES = {"vgg19": "vgg19-dcbb9e9d.pth", "resnet18": "resnet18-f37072fd.pth"}
BASE_URL = "https://download.pytorch.org/models/"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- finding the file


def hub_checkpoint_path(backbone: str) -> Path:
    """Where torch's hub cache keeps (or would keep) the backbone's file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FILES[backbone]


def download_checked(url: str, dest: Path, sha256_prefix: str, *, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into ``dest``, keeping it only if its sha256 starts with the prefix.

    The bytes go to a temp name beside ``dest`` and are renamed only after the
    hash matched, so an interrupted or damaged download never sits in the
    cache under the name that later runs trust.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with replacing(dest, "perceptual-loss weights") as tmp:
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise VhsupError(f"download failed: {getattr(exc, 'reason', exc)}", url) from None
        if not digest.hexdigest().startswith(sha256_prefix):
            raise VhsupError(
                f"download has sha256 {digest.hexdigest()[:12]}..., expected {sha256_prefix}... "
                "(damaged or changed upstream)",
                url,
            )
    return dest


def _no_file_error(backbone: str, where: Path, why: str) -> VhsupError:
    return VhsupError(
        f"no {backbone} weights for the perceptual loss ({why}): pass --perceptual-weights PATH "
        f"to a copy of torchvision's {FILES[backbone]}, or train without it using --no-perceptual",
        where,
    )


def find_backbone_weights(backbone: str, path: Path | None, *, allow_download: bool) -> Path:
    """The backbone's weight file: ``path``, else the hub cache, else a download.

    Raises a one-line VhsupError that suggests ``--perceptual-weights`` and
    ``--no-perceptual`` when there is no file and it cannot be downloaded
    (downloads not allowed, or no network).
    """
    if backbone not in FILES:
        raise VhsupError(f"unknown perceptual backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise VhsupError("perceptual-loss weights file not found", path)
        return path
    cached = hub_checkpoint_path(backbone)
    if cached.is_file():
        return cached
    if not allow_download:
        raise _no_file_error(
            backbone, cached, "not in the torch hub cache, and downloads are off: --download allows one"
        )
    name = FILES[backbone]
    prefix = name.rsplit("-", 1)[1].split(".", 1)[0]
    try:
        return download_checked(BASE_URL + name, cached, prefix)
    except VhsupError as exc:
        raise _no_file_error(backbone, cached, f"not in the torch hub cache; {exc}") from exc


# ---------------------------------------------------------------- checking a file


def _check_keys(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str, path: Path, optional: Iterable[str] = ()
) -> None:
    """Refuse a file whose backbone keys or shapes differ from ``expected``."""
    optional = set(optional)
    missing = [k for k in expected if k not in state and k not in optional]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise VhsupError(f"not torchvision's {what} weights: missing {shown}", path)
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != tuple(shape):
            raise VhsupError(
                f"not torchvision's {what} weights: {key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}",
                path,
            )


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std


class _Frozen(nn.Module):
    """A backbone that stays in eval mode with no trainable parameters."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self):
        super().__init__()
        # Non-persistent: the state dict keeps exactly torchvision's key names.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def freeze(self):
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True):
        # BatchNorm must keep ImageNet's running statistics; a trainer that
        # calls .train() on everything must not switch them to batch stats.
        return super().train(False)


# ---------------------------------------------------------------- VGG19

_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _vgg19_layout() -> list[tuple[str, int, int]]:
    """(name, in_ch, out_ch) of every module in torchvision's ``features``, in order.

    Pools and ReLUs have ``in_ch == out_ch == 0``.
    """
    layout: list[tuple[str, int, int]] = []
    block, idx, ch = 1, 1, 3
    for item in _VGG19_CFG:
        if item == "M":
            layout.append((f"pool{block}", 0, 0))
            block, idx = block + 1, 1
        else:
            assert isinstance(item, int)  # a conv's channel count
            layout.append((f"conv{block}_{idx}", ch, item))
            layout.append((f"relu{block}_{idx}", 0, 0))
            ch, idx = item, idx + 1
    return layout


VGG19_LAYERS = tuple(name for name, _, _ in _vgg19_layout())


class VGG19Features(_Frozen):
    """torchvision's VGG19 ``features`` stack, cut after the deepest tap.

    Args:
        taps: layer names whose outputs :meth:`forward` returns, e.g.
            ``("conv1_2", "conv5_4")``; see ``VGG19_LAYERS``.

    Module indices match torchvision's, so ``features.34.weight`` is conv5_4.
    ReLUs are not in-place, so a tapped conv output keeps its negative values.
    """

    def __init__(self, taps: Iterable[str]):
        super().__init__()
        self.taps = check_taps("vgg19", taps)
        last = max(VGG19_LAYERS.index(t) for t in self.taps)
        mods: list[nn.Module] = []
        for name, cin, cout in _vgg19_layout()[: last + 1]:
            if name.startswith("conv"):
                mods.append(nn.Conv2d(cin, cout, 3, padding=1))
            elif name.startswith("relu"):
                mods.append(nn.ReLU(inplace=False))
            else:
                mods.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*mods)
        self._tap_index = {VGG19_LAYERS.index(t): t for t in self.taps}
        self.freeze()

    @staticmethod
    def expected_shapes() -> dict[str, torch.Size]:
        """The full file's ``features.*`` keys and shapes (all 16 convs)."""
        out = {}
        for i, (name, cin, cout) in enumerate(_vgg19_layout()):
            if name.startswith("conv"):
                out[f"features.{i}.weight"] = torch.Size((cout, cin, 3, 3))
                out[f"features.{i}.bias"] = torch.Size((cout,))
        return out

    def load_file(self, path: str | os.PathLike[str]) -> VGG19Features:
        """Load torchvision's ``vgg19-*.pth`` (or a copy) into the stack; returns self.

        Every ``features.*`` key must be VGG19's with the right shape, so a
        VGG16 or a damaged file is refused by name; ``classifier.*`` is ignored.
        """
        path = Path(path)
        state = load_state_dict_file(path)
        expected = self.expected_shapes()
        _check_keys(state, expected, "VGG19", path)
        extra = sorted(k for k in state if k.startswith("features.") and k not in expected)
        if extra:
            raise VhsupError(f"not torchvision's VGG19 weights: unexpected key {extra[0]}", path)
        mine = self.state_dict()
        self.load_state_dict({k: state[k].float() for k in mine}, strict=True)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB in [0, 1], (N, 3, H, W) -> {tap: features}."""
        out = {}
        x = _normalise(x, self.mean, self.std)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._tap_index:
                out[self._tap_index[i]] = x
        return out


# ---------------------------------------------------------------- ResNet-18

RESNET18_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6")


class _ResNet18Trunk(nn.Module):
    """The whole torchvision ResNet-18 (for its key names and shapes only)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        chans = (64, 64, 128, 256, 512)
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            setattr(
                self,
                f"layer{i}",
                nn.Sequential(BasicBlock(chans[i - 1], chans[i], stride), BasicBlock(chans[i], chans[i])),
            )
        self.fc = nn.Linear(512, 1000)


class ResNet18Features(_Frozen):
    """The first convolutions of torchvision's ResNet-18, with BatchNorm frozen.

    Args:
        taps: names from ``RESNET18_LAYERS``: ``convK`` is the K-th conv on the
            main path (conv1; layer1.0.conv1/conv2; layer1.1.conv1/conv2;
            layer2.0.conv1), taken after its BatchNorm, before ReLU and
            before the residual add.

    Only the stem, ``layer1`` and (for ``conv6``) ``layer2.0`` are built.
    """

    def __init__(self, taps: Iterable[str] = ("conv3", "conv6")):
        super().__init__()
        self.taps = check_taps("resnet18", taps)
        self.depth = max(RESNET18_LAYERS.index(t) for t in self.taps) + 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        if self.depth > 1:
            self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        if self.depth > 5:
            self.layer2 = nn.Sequential(BasicBlock(64, 128, 2))
        self.freeze()

    @staticmethod
    def expected_shapes() -> dict[str, torch.Size]:
        """The full file's trunk keys and shapes (``fc`` excluded)."""
        with torch.device("meta"):
            trunk = _ResNet18Trunk()
        return {k: v.shape for k, v in trunk.state_dict().items() if not k.startswith("fc.")}

    def load_file(self, path: str | os.PathLike[str]) -> ResNet18Features:
        """Load torchvision's ``resnet18-*.pth`` (or a copy); returns self.

        The whole trunk (conv1 .. layer4) must be ResNet-18's; ``fc`` is
        ignored, and BatchNorm's ``num_batches_tracked`` may be absent (older
        torchvision files lack it; it is unused in eval mode).
        """
        path = Path(path)
        state = load_state_dict_file(path)
        expected = self.expected_shapes()
        _check_keys(
            state, expected, "ResNet-18", path, optional=[k for k in expected if k.endswith("num_batches_tracked")]
        )
        mine = {}
        for key, value in self.state_dict().items():
            got = state.get(key)
            if got is None:  # an absent num_batches_tracked
                mine[key] = value
            else:
                mine[key] = got if key.endswith("num_batches_tracked") else got.float()
        self.load_state_dict(mine, strict=True)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB in [0, 1], (N, 3, H, W) -> {tap: features}."""
        want = set(self.taps)
        out: dict[str, torch.Tensor] = {}

        def tap(name: str, value: torch.Tensor) -> bool:
            if name in want:
                out[name] = value
            return len(out) == len(want)

        x = _normalise(x, self.mean, self.std)
        y = self.bn1(self.conv1(x))
        if tap("conv1", y):
            return out
        x = F.max_pool2d(F.relu(y), 3, 2, 1)
        k = 2
        for block in self.layer1:
            assert isinstance(block, BasicBlock)
            y = block.bn1(block.conv1(x))
            if tap(f"conv{k}", y):
                return out
            y = block.bn2(block.conv2(F.relu(y)))
            if tap(f"conv{k + 1}", y):
                return out
            x = F.relu(y + x)
            k += 2
        block = self.layer2[0]
        assert isinstance(block, BasicBlock)
        tap("conv6", block.bn1(block.conv1(x)))
        return out


def check_taps(backbone: str, taps: Iterable[str]) -> tuple[str, ...]:
    """``taps`` as a tuple, or a VhsupError naming an unknown layer (e.g. a config typo)."""
    taps = tuple(taps)
    if backbone == "vgg19":
        names, hint = VGG19_LAYERS, "names like conv1_2, relu3_4 or conv5_4"
    elif backbone == "resnet18":
        names, hint = RESNET18_LAYERS, ", ".join(RESNET18_LAYERS)
    else:
        raise VhsupError(f"unknown perceptual backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
    unknown = [t for t in taps if t not in names]
    if unknown or not taps:
        raise VhsupError(f"unknown {backbone} layer {', '.join(unknown) or '(none given)'}; use {hint}")
    return taps


def build_backbone(
    backbone: str, taps: Iterable[str], path: str | os.PathLike[str]
) -> VGG19Features | ResNet18Features:
    """A frozen, loaded feature extractor for ``backbone`` with ``taps``."""
    if backbone == "vgg19":
        return VGG19Features(taps).load_file(path)
    if backbone == "resnet18":
        return ResNet18Features(taps).load_file(path)
    raise VhsupError(f"unknown perceptual backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
