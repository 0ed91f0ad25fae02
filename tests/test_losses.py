"""Training losses: perceptual backbones from torchvision files, pixel, GAN, translational.

The backbone files here hold random weights under torchvision's key names
(written out from the published layouts, not from vhsup's own modules), so
a naming mistake in vhsup's stacks fails these tests.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vhsup.errors import VhsupError
from vhsup.train import perceptual
from vhsup.train.losses import GANLoss, PerceptualLoss, pixel_loss, translational_consistency
from vhsup.train.perceptual import download_checked, find_backbone_weights

# torchvision vgg19 `features` conv indices and (in, out) channels.
VGG19_CONVS = [
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    (16, 256, 256),
    (19, 256, 512),
    (21, 512, 512),
    (23, 512, 512),
    (25, 512, 512),
    (28, 512, 512),
    (30, 512, 512),
    (32, 512, 512),
    (34, 512, 512),
]


def vgg19_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {}
    for i, cin, cout in VGG19_CONVS:
        # torchvision's init (kaiming, fan_out) keeps activations alive 16 convs deep.
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * math.sqrt(2 / (cout * 9))
        state[f"features.{i}.bias"] = torch.zeros(cout)
    state["classifier.6.bias"] = torch.zeros(1000)  # ignored by vhsup, present in the real file
    return state


def resnet18_state(gen: torch.Generator, *, with_tracked: bool = True) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=gen) * math.sqrt(2 / (cout * k * k))

    def bn(name, c):
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=gen)
        if with_tracked:
            state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for layer, c in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            p = f"layer{layer}.{b}"
            conv(f"{p}.conv1", c, cin if b == 0 else c, 3)
            bn(f"{p}.bn1", c)
            conv(f"{p}.conv2", c, c, 3)
            bn(f"{p}.bn2", c)
            if b == 0 and layer > 1:
                conv(f"{p}.downsample.0", c, cin, 1)
                bn(f"{p}.downsample.1", c)
        cin = c
    state["fc.weight"] = 0.01 * torch.randn(1000, 512, generator=gen)
    state["fc.bias"] = torch.zeros(1000)
    return state


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a random-weight vgg19-dcbb9e9d.pth."""
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(vgg19_state(torch.Generator().manual_seed(1)), ckpt / "vgg19-dcbb9e9d.pth")
    return home


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resnet") / "resnet18-f37072fd.pth"
    torch.save(resnet18_state(torch.Generator().manual_seed(2)), path)
    return path


@pytest.fixture
def vgg_loss(torch_home, monkeypatch) -> PerceptualLoss:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return PerceptualLoss(allow_download=False)


def pictures(n=2, size=32, seed=0):
    """A smooth 'hr' picture and a degraded 'sr' (blurred plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    hr = F.interpolate(
        torch.rand(n, 3, size // 4, size // 4, generator=gen), size=(size, size), mode="bicubic", align_corners=False
    ).clamp(0, 1)
    sr = (F.avg_pool2d(hr, 3, 1, 1) + 0.05 * torch.randn(hr.shape, generator=gen)).clamp(0, 1)
    return sr, hr


# ---------------------------------------------------------------- VGG19


def test_vgg19_from_hub_cache_separates_pictures(vgg_loss, torch_home):
    assert vgg_loss.weights_path == torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    sr, hr = pictures()
    diff = vgg_loss(sr, hr)
    assert torch.isfinite(diff) and diff.item() > 1e-3
    assert set(vgg_loss.last_terms) == {"conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"}
    assert all(v.item() > 0 for v in vgg_loss.last_terms.values())
    assert vgg_loss(hr, hr.clone()).item() < 1e-6
    # The loaded weights are the file's, not a fresh init.
    state = torch.load(vgg_loss.weights_path, weights_only=True)
    assert torch.equal(vgg_loss.backbone.features[34].weight, state["features.34.weight"])


def test_vgg19_gradients_reach_sr_not_backbone(vgg_loss):
    sr, hr = pictures()
    sr.requires_grad_(True)
    vgg_loss.train()
    assert not vgg_loss.backbone.training
    vgg_loss(sr, hr).backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    params = list(vgg_loss.backbone.parameters())
    assert params and all(not p.requires_grad and p.grad is None for p in params)
    assert not any(p.requires_grad for p in vgg_loss.parameters())


def test_vgg19_runs_in_fp32_under_autocast(vgg_loss):
    sr, hr = pictures()
    sr16, hr16 = sr.bfloat16(), hr.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = vgg_loss(sr16, hr16)
    plain = vgg_loss(sr16.float(), hr16.float())
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, plain, rtol=1e-6, atol=0)


def test_shallow_taps_build_only_needed_layers(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    loss = PerceptualLoss(layer_weights={"conv2_2": 1.0}, allow_download=False)
    assert len(loss.backbone.features) == 8  # indices 0..7; conv2_2 is features.7
    sr, hr = pictures()
    assert loss(sr, hr).item() > 0


def test_unknown_layer_is_refused_before_looking_for_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VhsupError, match="conv9_9"):
        PerceptualLoss(layer_weights={"conv9_9": 1.0}, allow_download=False)


def test_offline_without_file_names_both_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(VhsupError) as err:
        PerceptualLoss(allow_download=False)
    text = str(err.value)
    assert "\n" not in text
    assert "--perceptual-weights" in text and "--no-perceptual" in text
    assert "vgg19-dcbb9e9d.pth" in text
    with pytest.raises(VhsupError, match="--no-perceptual"):
        find_backbone_weights("resnet18", None, allow_download=False)


def test_explicit_path_missing_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(VhsupError, match="nope.pth"):
        PerceptualLoss(weights=missing, allow_download=False)


def test_truncated_file_is_named(torch_home, tmp_path):
    good = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    bad = tmp_path / "half-vgg19.pth"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(VhsupError) as err:
        PerceptualLoss(weights=bad, allow_download=False)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_wrong_keys_or_shapes_are_named(tmp_path, resnet_file):
    # Zero-filled stand-ins: expand() shares one element, so the files are tiny.
    def zeros(*shape):
        return torch.zeros(1).expand(*shape)

    state = {f"features.{i}.weight": zeros(o, c, 3, 3) for i, c, o in VGG19_CONVS}
    state.update({f"features.{i}.bias": zeros(o) for i, c, o in VGG19_CONVS})
    bad_shape = dict(state, **{"features.34.weight": zeros(256, 512, 3, 3)})
    path = tmp_path / "odd.pth"
    torch.save(bad_shape, path)
    with pytest.raises(VhsupError, match=r"odd\.pth.*features\.34\.weight"):
        PerceptualLoss(weights=path, allow_download=False)

    vgg16 = {k: v for k, v in state.items() if not k.startswith(("features.32.", "features.34."))}
    path16 = tmp_path / "vgg16.pth"
    torch.save(vgg16, path16)
    with pytest.raises(VhsupError, match=r"vgg16\.pth.*missing features\.32"):
        PerceptualLoss(weights=path16, allow_download=False)

    # A ResNet file where a VGG19 one is expected, and the other way round.
    with pytest.raises(VhsupError, match=r"resnet18-f37072fd\.pth.*VGG19"):
        PerceptualLoss("vgg19", weights=resnet_file, allow_download=False)
    with pytest.raises(VhsupError, match=r"odd\.pth.*ResNet-18"):
        PerceptualLoss("resnet18", weights=path, allow_download=False)


def test_download_checks_sha256_prefix(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    src.mkdir()
    payload = b"not really vgg19 weights"
    (src / "vgg19-dcbb9e9d.pth").write_bytes(payload)
    monkeypatch.setattr(perceptual, "BASE_URL", src.as_uri() + "/")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    ckpt = tmp_path / "home" / "hub" / "checkpoints"
    # The bytes do not hash to dcbb9e9d...: refused, and nothing is left in the cache.
    with pytest.raises(VhsupError, match="sha256") as err:
        find_backbone_weights("vgg19", None, allow_download=True)
    assert "--perceptual-weights" in str(err.value)
    assert not any(ckpt.iterdir())
    # With the right prefix the file lands under its final name.
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    dest = ckpt / "x.pth"
    assert download_checked((src / "vgg19-dcbb9e9d.pth").as_uri(), dest, prefix) == dest
    assert dest.read_bytes() == payload and [p.name for p in ckpt.iterdir()] == ["x.pth"]
    # No network at all reads like the offline case.
    monkeypatch.setattr(perceptual, "BASE_URL", (tmp_path / "gone").as_uri() + "/")
    with pytest.raises(VhsupError, match="--no-perceptual"):
        find_backbone_weights("resnet18", None, allow_download=True)


# ---------------------------------------------------------------- ResNet-18


def test_resnet18_taps_and_pixel_term(resnet_file):
    loss = PerceptualLoss("resnet18", weights=resnet_file, allow_download=False)
    assert loss.pixel_weight > 0
    bn_before = loss.backbone.bn1.running_mean.clone()
    loss.train()
    sr, hr = pictures(size=64)
    sr.requires_grad_(True)
    value = loss(sr, hr)
    value.backward()
    assert torch.isfinite(value) and value.item() > 1e-3
    assert set(loss.last_terms) == {"conv3", "conv6", "pixel"}
    assert all(v.item() > 0 for v in loss.last_terms.values())
    assert loss(hr, hr.clone()).item() < 1e-6
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.backbone.parameters())
    # BatchNorm stayed in eval mode: ImageNet statistics, not the batch's.
    assert torch.equal(loss.backbone.bn1.running_mean, bn_before)
    state = torch.load(resnet_file, weights_only=True)
    assert torch.equal(loss.backbone.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])


def test_resnet18_conv3_matches_a_hand_computation(resnet_file):
    """conv3 = layer1.0.bn2(conv2(relu(bn1(conv1(maxpool(relu(bn1(conv1(x))))))))), ImageNet-normalised x."""
    s = torch.load(resnet_file, weights_only=True)
    net = perceptual.ResNet18Features(("conv3",)).load_file(resnet_file)

    def bn(x, p):
        return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"])

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    z = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    z = F.max_pool2d(F.relu(bn(F.conv2d(z, s["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    z = F.relu(bn(F.conv2d(z, s["layer1.0.conv1.weight"], padding=1), "layer1.0.bn1"))
    z = bn(F.conv2d(z, s["layer1.0.conv2.weight"], padding=1), "layer1.0.bn2")
    assert torch.allclose(net(x)["conv3"], z, atol=1e-5)


def test_resnet18_file_without_num_batches_tracked(tmp_path):
    path = tmp_path / "old-resnet18.pth"
    torch.save(resnet18_state(torch.Generator().manual_seed(4), with_tracked=False), path)
    loss = PerceptualLoss("resnet18", weights=path, allow_download=False)
    sr, hr = pictures(size=32)
    assert loss(sr, hr).item() > 0


# ---------------------------------------------------------------- pixel and GAN


def test_charbonnier_is_l1_for_large_errors_and_smooth_at_zero():
    l1, charb = pixel_loss("l1"), pixel_loss("charbonnier", eps=1e-3)
    hr = torch.zeros(1, 3, 4, 4)
    big = torch.full_like(hr, 0.5)
    assert abs(charb(big, hr).item() - l1(big, hr).item()) < 1e-5
    assert l1(big, hr).item() == pytest.approx(0.5)

    def grad(loss, d):
        sr = torch.full_like(hr, d, requires_grad=True)
        loss(sr, hr).backward()
        return sr.grad[0, 0, 0, 0].item() * hr.numel()

    # L1's gradient jumps from -1 to +1 across 0; Charbonnier's passes through 0 smoothly.
    assert grad(l1, 1e-6) == pytest.approx(1) and grad(l1, -1e-6) == pytest.approx(-1)
    assert abs(grad(charb, 1e-6)) < 0.01 and abs(grad(charb, -1e-6)) < 0.01
    assert grad(charb, 1e-3) == pytest.approx(1 / math.sqrt(2), rel=1e-3)
    assert charb(hr, hr).item() == pytest.approx(1e-3)
    with pytest.raises(VhsupError, match="huber"):
        pixel_loss("huber")


def test_gan_loss_matches_bce_with_logits():
    logits = torch.tensor([[-3.0, -0.5], [0.0, 2.5]])
    xs = logits.flatten().tolist()
    real = sum(math.log1p(math.exp(-x)) for x in xs) / len(xs)  # -log(sigmoid(x))
    fake = sum(math.log1p(math.exp(x)) for x in xs) / len(xs)  # -log(1 - sigmoid(x))
    gan = GANLoss()
    assert gan(logits, True).item() == pytest.approx(real, rel=1e-6)
    assert gan(logits, False).item() == pytest.approx(fake, rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gan(logits.bfloat16(), True)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(real, rel=1e-2)


# ---------------------------------------------------------------- translational consistency


class Equivariant(nn.Module):
    """Per-pixel 1x1 conv then PixelShuffle: the same content gives the same output anywhere."""

    def __init__(self, scale):
        super().__init__()
        self.conv = nn.Conv2d(3, 3 * scale * scale, 1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.up(self.conv(x))


class FixedPattern(Equivariant):
    """Adds a texture tied to the position in the input window (a GAN artefact)."""

    def forward(self, x):
        out = super().forward(x)
        yy = torch.arange(out.shape[-2]).view(-1, 1)
        xx = torch.arange(out.shape[-1]).view(1, -1)
        return out + 0.05 * torch.sin(0.7 * yy + 1.3 * xx)


class Padded(nn.Module):
    """Two zero-padded 3x3 convs (receptive radius 2) then nearest upsampling."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return F.interpolate(x + self.body(x), scale_factor=self.scale, mode="nearest")


def lr_patch(seed=0):
    return torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(seed))


def test_tc_is_zero_for_a_shift_equivariant_generator():
    torch.manual_seed(0)
    g = Equivariant(2)
    lr = lr_patch()
    assert translational_consistency(g, lr, shift=4, scale=2).item() < 1e-6
    rng = torch.Generator().manual_seed(5)
    for _ in range(6):  # random corner pairs, including same-row and same-column ones
        assert translational_consistency(g, lr, shift=4, scale=2, rng=rng).item() < 1e-6


def test_tc_penalises_position_tied_artefacts_and_trains_them_away():
    torch.manual_seed(0)
    g = FixedPattern(2)
    lr = lr_patch()
    loss = translational_consistency(g, lr, shift=4, scale=2, margin=2)
    assert loss.item() > 0.01
    loss.backward()
    assert g.conv.weight.grad is not None


def test_tc_margin_skips_zero_padding_border_effects():
    torch.manual_seed(0)
    g = Padded(3)
    lr = lr_patch(1)
    assert translational_consistency(g, lr, shift=4, scale=3).item() > 1e-3
    assert translational_consistency(g, lr, shift=4, scale=3, margin=2).item() < 1e-6


def test_tc_is_deterministic_from_its_generator_and_checks_sizes():
    torch.manual_seed(0)
    g = FixedPattern(2)
    lr = lr_patch()
    a = [
        translational_consistency(g, lr, shift=3, scale=2, rng=torch.Generator().manual_seed(7)).item()
        for _ in range(2)
    ]
    assert a[0] == a[1]
    with pytest.raises(ValueError, match="shared region"):
        translational_consistency(g, lr, shift=10, scale=2)
    with pytest.raises(ValueError, match="expected x4"):
        translational_consistency(g, lr, shift=4, scale=4)
