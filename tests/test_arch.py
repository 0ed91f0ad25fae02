"""Architectures: key names, sizes, costs and the classical resamplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vhsup.arch import Bicubic, Lanczos, Rescaled, RRDBNet, SRVGGNetCompact, build


def conv_macs_per_px(module: torch.nn.Module, size: int = 8) -> float:
    """Count conv multiply-accumulates with forward hooks on a small input."""
    total = 0

    def hook(conv, inputs, output):
        nonlocal total
        k = conv.kernel_size[0] * conv.kernel_size[1]
        total += output.numel() // output.shape[0] * (conv.in_channels // conv.groups) * k

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        module(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total / (size * size)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_rrdbnet_key_names_match_real_esrgan():
    keys = set(RRDBNet(num_block=2).state_dict())
    assert {
        "conv_first.weight",
        "conv_body.bias",
        "conv_up1.weight",
        "conv_up2.weight",
        "conv_hr.weight",
        "conv_last.bias",
    } <= keys
    assert {f"body.1.rdb3.conv{i}.weight" for i in range(1, 6)} <= keys
    assert len(keys) == 2 * (6 + 2 * 15)


def test_compact_key_names_match_real_esrgan():
    sd = SRVGGNetCompact(num_conv=2).state_dict()
    assert list(sd) == [
        "body.0.weight",
        "body.0.bias",
        "body.1.weight",
        "body.2.weight",
        "body.2.bias",
        "body.3.weight",
        "body.4.weight",
        "body.4.bias",
        "body.5.weight",
        "body.6.weight",
        "body.6.bias",
    ]
    assert sd["body.6.weight"].shape[0] == 3 * 16


@pytest.mark.parametrize(
    "module, params, macs",
    [
        (lambda: RRDBNet(), 16_697_987, 17.93e6),
        (lambda: RRDBNet(num_block=6), 4_467_779, 5.71e6),
        (lambda: SRVGGNetCompact(), 621_424, 0.62e6),
    ],
    ids=["rrdb23", "rrdb6", "compact"],
)
def test_published_sizes_and_costs(module, params, macs):
    with torch.device("meta"):  # skip weight init: only shapes matter here
        m = module()
    m = m.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()  # to_empty leaves garbage; denormals would crawl
    assert n_params(m) == params
    assert conv_macs_per_px(m) == pytest.approx(macs, rel=2e-3)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_scales(scale):
    net = RRDBNet(scale=scale, num_block=1, num_feat=8, num_grow_ch=4).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 8, 12))
    assert y.shape == (2, 3, 8 * scale, 12 * scale)


@pytest.mark.parametrize("scale", [3, 8, 0])
def test_rrdbnet_rejects_unsupported_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(scale=scale)


def test_compact_is_a_residual_over_nearest():
    """With the last conv silenced the network must return the nearest upscale."""
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=3).eval()
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
        x = torch.rand(1, 3, 5, 7)
        y = net(x)
    assert y.shape == (1, 3, 15, 21)
    assert torch.equal(y, x.repeat_interleave(3, 2).repeat_interleave(3, 3))


def test_build_by_name():
    assert isinstance(build("compact", {"num_conv": 1}), SRVGGNetCompact)
    assert build("classical", {"kind": "lanczos", "scale": 2}).scale == 2
    with pytest.raises(ValueError, match="unknown architecture"):
        build("swinir", {})


def _photo(h=20, w=24) -> np.ndarray:
    from skimage import data

    return (data.camera()[200 : 200 + h, 200 : 200 + w] / 255.0).astype(np.float32)


def test_lanczos_matches_pillow_away_from_edges():
    # Pillow's Lanczos is the same sinc(x)sinc(x/3) filter; it renormalises at
    # the edges instead of clamping, so only the interior must agree.
    img = _photo()
    for scale in (2, 3, 4):
        ours = Lanczos(scale)(torch.from_numpy(img)[None, None])[0, 0].numpy()
        ref = np.asarray(
            Image.fromarray(img, mode="F").resize((img.shape[1] * scale, img.shape[0] * scale), Image.LANCZOS)
        )
        m = 3 * scale
        assert ours.shape == ref.shape
        assert np.abs(ours[m:-m, m:-m] - ref[m:-m, m:-m]).max() < 1e-5


def test_bicubic_matches_opencv():
    import cv2

    img = _photo()
    ours = Bicubic(4)(torch.from_numpy(img)[None, None])[0, 0].numpy()
    ref = cv2.resize(img, (img.shape[1] * 4, img.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    assert np.abs(ours[8:-8, 8:-8] - ref[8:-8, 8:-8]).max() < 1e-4


@pytest.mark.parametrize("cls", [Bicubic, Lanczos])
def test_classical_keeps_flat_colour_and_identity(cls):
    flat = torch.full((1, 3, 6, 9), 0.37)
    assert torch.allclose(cls(3)(flat), torch.full((1, 3, 18, 27), 0.37), atol=1e-6)
    x = torch.rand(1, 3, 5, 5)
    assert torch.equal(cls(1)(x), x)
    with pytest.raises(ValueError):
        cls(9)


def test_lanczos_is_sharper_than_bicubic():
    x = torch.from_numpy(_photo(32, 32))[None, None]

    def energy(y):
        return (y.diff(dim=-1) ** 2).mean() + (y.diff(dim=-2) ** 2).mean()

    assert energy(Lanczos(4)(x)) > energy(Bicubic(4)(x))


def test_rescaled_is_net_then_bicubic():
    net = SRVGGNetCompact(num_feat=4, num_conv=1, upscale=4).eval()
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        y = Rescaled(net, 4, 3)(x)
        ref = F.interpolate(net(x), scale_factor=0.75, mode="bicubic", align_corners=False)
    assert y.shape == (1, 3, 21, 27)
    assert torch.allclose(y, ref, atol=1e-6)
