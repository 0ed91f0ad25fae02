"""The rest of the generator family (SRResNet/SRGAN, MESRGAN, residual U-Net)
and the discriminators: layouts, detection from saved files, costs, tiling
reach, trainability, and the named models that have no weights yet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vhsup import registry
from vhsup.arch import (
    MESRGAN,
    ResUNet,
    RRDBNet,
    SRGANDiscriminator,
    SRResNet,
    SRVGGNetCompact,
    UNetDiscriminatorSN,
    build,
    build_discriminator,
    conv_macs_per_px,
)
from vhsup.engine import SREngine
from vhsup.errors import VhsupError
from vhsup.weights.detect import detect
from vhsup.weights.safeload import load_state_dict_file

UNTRAINED = ["mesrgan-x4", "srgan-x4", "srresnet-x4", "switched-x4", "unet-x4"]


pytestmark = pytest.mark.usefixtures("two_threads")


def randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BatchNorm statistics, so that eval-mode BN is not
    the identity and a wrongly loaded tensor shows in the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.15)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def conv_macs(net: torch.nn.Module, shape: tuple[int, int]) -> float:
    """Conv MACs per input pixel from a real forward pass (groups-aware)."""
    total = 0

    def hook(conv, inputs, out):
        nonlocal total
        total += out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, *shape))
    for h in handles:
        h.remove()
    return total / (shape[0] * shape[1])


def n_params(net: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


# --- every architecture survives a save, a detection and a load, exactly ---------------

# (arch, constructor arguments, input size): odd sizes, few blocks, every scale.
ROUND_TRIPS = [
    ("srresnet", {"num_feat": 5, "num_block": 2, "upscale": 2}, (9, 7)),
    ("srresnet", {"num_feat": 7, "num_block": 1, "upscale": 4}, (6, 9)),
    ("srresnet", {"num_feat": 3, "num_block": 0, "upscale": 8}, (5, 4)),
    ("mesrgan", {"scale": 4, "num_feat": 6, "num_block": 2, "num_grow_ch": 3, "expand_ratio": 2}, (7, 5)),
    ("mesrgan", {"scale": 2, "num_feat": 5, "num_block": 1, "num_grow_ch": 4, "expand_ratio": 3}, (6, 8)),
    ("mesrgan", {"scale": 1, "num_feat": 7, "num_block": 1, "num_grow_ch": 2, "expand_ratio": 1}, (8, 12)),
    ("resunet", {"upscale": 4, "channels": [5, 7, 9, 11], "blocks_per_stage": 2}, (6, 10)),
    ("resunet", {"upscale": 3, "channels": [3, 6], "blocks_per_stage": 3}, (7, 5)),
    ("resunet", {"upscale": 2, "channels": [4, 5, 6], "blocks_per_stage": 1}, (9, 11)),
    ("resunet", {"upscale": 1, "channels": [6, 4, 8, 5, 3], "blocks_per_stage": 1}, (17, 33)),
    ("resunet", {"upscale": 8, "channels": [3, 5, 7], "blocks_per_stage": 1}, (3, 4)),
    ("compact", {"num_feat": 9, "num_conv": 3, "upscale": 3, "act": "prelu"}, (5, 6)),
]


@pytest.mark.parametrize("arch, kwargs, hw", ROUND_TRIPS, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(ROUND_TRIPS)])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_saved_models_are_redetected_and_compute_the_same(tmp_path, arch, kwargs, hw, suffix):
    net = randomise(build(arch, {"num_in_ch": 3, "num_out_ch": 3, **kwargs}), seed=len(kwargs) + hw[0])
    path = tmp_path / f"model{suffix}"
    state = {k: v.clone() for k, v in net.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)

    loaded = load_state_dict_file(path)
    assert detect(loaded, path) == (arch, {"num_in_ch": 3, "num_out_ch": 3, **kwargs})

    m = registry.load_model(str(path))
    scale = kwargs.get("scale", kwargs.get("upscale"))
    assert (m.descriptor.arch, m.descriptor.scale, m.descriptor.source) == (arch, scale, str(path))
    assert m.descriptor.params == n_params(net)
    assert m.descriptor.macs_per_px == pytest.approx(conv_macs(net, (16, 16)))
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        want = net(x)
        got = m.module(x)
    assert want.shape == (2, 3, hw[0] * scale, hw[1] * scale)
    assert torch.equal(got, want)


def test_detection_tells_the_rrdb_family_apart():
    """MESRGAN has every RRDBNet outer key; the block keys decide."""
    plain = RRDBNet(num_feat=4, num_block=1, num_grow_ch=2).state_dict()
    mobile = MESRGAN(num_feat=4, num_block=1, num_grow_ch=2).state_dict()
    assert {k for k in plain if not k.startswith("body.")} == {k for k in mobile if not k.startswith("body.")}
    assert detect(plain)[0] == "rrdbnet" and detect(mobile)[0] == "mesrgan"


@pytest.mark.parametrize("scale, in_ch", [(4, 3), (2, 12), (1, 48)])
def test_real_esrgan_x2_x1_checkpoint_shapes_are_detected(scale, in_ch):
    # RealESRGAN_x2plus / x1 sizes (23 blocks, 64 features) built on the meta
    # device: detection reads only names and shapes, so no weights are made.
    with torch.device("meta"):
        sd = RRDBNet(scale=scale).state_dict()
    assert sd["conv_first.weight"].shape[1] == in_ch
    assert detect(sd) == (
        "rrdbnet",
        {"num_in_ch": 3, "num_out_ch": 3, "scale": scale, "num_feat": 64, "num_block": 23, "num_grow_ch": 32},
    )


def test_general_x4v3_shape_is_detected_and_loads(tmp_path):
    """realesr-general-x4v3: Compact with 32 hidden convs of 64 features."""
    net = randomise(SRVGGNetCompact(num_feat=64, num_conv=32, upscale=4), seed=3)
    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": net.state_dict()}, path)
    m = registry.load_model(str(path))
    # 34 convs of 64 features (3 in, 48 out at the ends) and 33 PReLUs:
    # the published 1.21 M.
    params = (27 * 64 + 64) + 32 * (9 * 64 * 64 + 64) + (9 * 64 * 48 + 48) + 33 * 64
    assert (m.descriptor.arch, m.descriptor.scale, m.descriptor.params) == ("compact", 4, params)
    assert round(params / 1e6, 2) == 1.21
    assert m.descriptor.context == 34  # 34 3x3 convs: exactly the receptive field
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(m.module(x), net(x))


def test_resunet_weights_for_another_scale_are_refused():
    sd = ResUNet(upscale=2, channels=[3, 4]).state_dict()
    with pytest.raises(RuntimeError, match="weights are for x2"):
        ResUNet(upscale=4, channels=[3, 4]).load_state_dict(sd)


# --- behaviour that follows from each design ---------------------------------------


def test_srresnet_output_is_on_the_unit_scale():
    net = randomise(SRResNet(num_feat=8, num_block=2), seed=1)
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        y = net(x)
        assert y.min() >= 0 and y.max() <= 1 and y.std() > 0.05
        # tanh(0) must come out as mid-grey, not black: the [-1, 1] output is
        # mapped onto [0, 1] inside the module.
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
        assert torch.equal(net(x), torch.full((1, 3, 24, 24), 0.5))


def test_srresnet_eval_batchnorm_is_per_picture():
    """In eval mode BatchNorm is a fixed affine map: a picture's result does
    not depend on what else is in the batch (which tiling relies on)."""
    net = randomise(SRResNet(num_feat=6, num_block=2), seed=2)
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        together = net(x)
        alone = net(x[1:2])
        assert torch.allclose(together[1:2], alone, atol=1e-6)
        net.train()
        assert not torch.allclose(net(x)[1:2], net(x[1:2]), atol=1e-3)


def test_resunet_is_a_residual_over_bilinear():
    net = randomise(ResUNet(channels=[4, 6, 8]), seed=4)
    x = torch.rand(1, 3, 6, 10)
    with torch.no_grad():
        assert not torch.allclose(net(x), F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False))
        net.tail.weight.zero_()
        net.tail.bias.zero_()
        y = net(x)
    assert torch.equal(y, F.interpolate(x, size=(24, 40), mode="bilinear", align_corners=False))


def test_mesrgan_blocks_are_depthwise_bottlenecks():
    net = MESRGAN(num_feat=8, num_block=1, num_grow_ch=4, expand_ratio=2)
    conv5 = net.body[0].rdb3.conv5
    assert conv5.expand.kernel_size == (1, 1) and conv5.project.kernel_size == (1, 1)
    assert conv5.depthwise.groups == conv5.depthwise.in_channels == 2 * (8 + 4 * 4)
    assert conv5.project.out_channels == 8
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("srresnet", {"num_feat": 6, "num_block": 2, "upscale": 2}),
        ("mesrgan", {"num_feat": 6, "num_block": 1, "num_grow_ch": 3}),
        ("resunet", {"upscale": 2, "channels": [4, 6, 8]}),
    ],
)
def test_generators_train(arch, kwargs):
    """One optimiser step on an L1 loss reaches every parameter and lowers it."""
    torch.manual_seed(0)
    net = build(arch, kwargs).train()
    scale = kwargs.get("upscale", kwargs.get("scale", 4))
    x = torch.rand(4, 3, 8, 8)
    target = F.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False).clamp(0, 1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.l1_loss(net(x), target)
        loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_resunet_frozen_encoder_stays_put():
    net = ResUNet(upscale=2, channels=[4, 6, 8], freeze_encoder=True).train()
    enc = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(("stem.", "encoder."))}
    assert net.encoder_frozen and not net.encoder.training and net.decoder.training
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = net(torch.rand(2, 3, 8, 8)).square().mean()
    loss.backward()
    opt.step()
    # Neither weights nor BatchNorm running statistics of the encoder moved.
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in enc.items())
    assert all(p.grad is None for p in net.encoder.parameters())
    assert any(p.grad is not None for p in net.decoder.parameters())
    net.freeze_encoder(False)
    assert net.encoder.training and all(p.requires_grad for p in net.parameters())


# --- sizes and costs --------------------------------------------------------------------


def mesrgan_counts(f=64, g=32, nb=23, t=1, c_io=3) -> tuple[int, float]:
    """Parameters and conv MACs per input pixel of an x4 MESRGAN, by hand."""
    params = macs = 0
    for c_in, c_out in [(f, g), (f + g, g), (f + 2 * g, g), (f + 3 * g, g), (f + 4 * g, f)]:
        h = t * c_in
        params += (c_in * h + h) + (9 * h + h) + (h * c_out + c_out)
        macs += c_in * h + 9 * h + h * c_out
    params, macs = params * 3 * nb, macs * 3 * nb
    # RRDBNet's outer convs: first, body, up1 (at 4x the pixels), up2, hr,
    # last (at 16x).
    params += 9 * c_io * f + f + 4 * (9 * f * f + f) + 9 * f * c_io + c_io
    macs += 9 * (c_io * f + f * f + 4 * f * f + 16 * (2 * f * f + f * c_io))
    return params, float(macs)


def test_named_cards_agree_with_the_architecture():
    for name in UNTRAINED:
        c = registry.card(name)
        assert c.untrained and c.weights is None and c.licence and c.attribution and c.notes.strip()
        with torch.device("meta"):
            net = build(c.arch, c.hyper)
        assert c.params == n_params(net), name
        assert c.macs_per_px == conv_macs_per_px(c.arch, c.hyper), name
        assert not registry.has_pretrained_weights(name)
    assert registry.has_pretrained_weights("esrgan-x4")
    # Independent counts: MESRGAN by hand, the U-Net and SRResNet on real
    # forward passes (not the meta device the registry uses).
    assert (registry.card("mesrgan-x4").params, registry.card("mesrgan-x4").macs_per_px) == mesrgan_counts()
    assert registry.card("mesrgan-x4").macs_per_px / registry.card("esrgan-x4").macs_per_px == pytest.approx(
        0.557, abs=0.001
    )
    for name in ("unet-x4", "srresnet-x4"):
        net = registry.build_model(name).module
        assert registry.card(name).macs_per_px == conv_macs(net, (8, 8))


def test_unet_x4_has_about_a_million_trainable_parameters():
    net = registry.build_model("unet-x4").module
    trainable = n_params(net, trainable_only=True)
    assert trainable == n_params(net) == 977_139
    assert 0.95e6 < trainable < 1.05e6
    net.freeze_encoder()
    # Frozen, only the decoder and the tail learn: about a fifth.
    frozen = n_params(net, trainable_only=True)
    assert frozen == n_params(net.decoder) + n_params(net.tail)
    assert 0.15 < frozen / trainable < 0.25


# --- tiles: the cards' context is enough, and less is not --------------------------------


def tile_error(module, x, scale, context, core=8, origin=None):
    """Max |tile - whole| over a core tile cut with ``context`` px around it."""
    h, w = x.shape[-2:]
    y0, x0 = origin or ((h - core) // 2, (w - core) // 2)
    with torch.no_grad():
        whole = module(x)[..., y0 * scale : (y0 + core) * scale, x0 * scale : (x0 + core) * scale]
        crop = x[..., y0 - context : y0 + core + context, x0 - context : x0 + core + context]
        tile = module(crop)[..., context * scale : (context + core) * scale, context * scale : (context + core) * scale]
    return (tile - whole).abs().max().item()


def measured_reach(net, scale: int, size: int, positive: bool) -> int:
    """How far (input px) the centre output pixel's gradient reaches.

    In float64 even the exponentially faint edge of a deep net's receptive
    field gives a non-zero gradient. ``positive`` sets every weight
    positive so that no ReLU can cut a path.
    """
    net = net.double().eval()
    if positive:
        with torch.no_grad():
            for p in net.parameters():
                p.uniform_(0.01, 0.1)
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    c = size // 2
    net(x)[0, :, c * scale, c * scale].sum().backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    return int(max(c - ys.min(), ys.max() - c, c - xs.min(), xs.max() - c))


@pytest.mark.parametrize(
    "name, hyper, positive",
    [
        # The cards' depths and stages; fewer features (the reach does not depend
        # on them) for speed.
        ("srresnet-x4", {"num_feat": 3}, False),
        ("unet-x4", {"channels": [3, 4, 5, 6]}, True),
    ],
)
def test_card_context_is_the_reach_and_makes_tiles_exact(name, hyper, positive):
    c = registry.card(name)
    ctx, mult, scale = c.context, c.size_multiple, c.scale
    torch.manual_seed(5)
    net = build(c.arch, {**c.hyper, **hyper}).double().eval()
    size = 2 * ctx + 8 + 4 * mult
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    origin = (ctx + mult, ctx + 2 * mult)  # crops start on the size multiple
    assert tile_error(net, x, scale, ctx, origin=origin) < 1e-12
    if mult > 1:  # a crop that starts off the stride grid is not exact
        assert tile_error(net, x, scale, ctx, origin=(origin[0] + 1, origin[1] + 1)) > 1e-6
    # And no smaller context can be exact: some input pixel ctx (SRResNet,
    # exact) or ctx - 1 (the U-Net's bound) away still reaches the output.
    reach = measured_reach(build(c.arch, {**c.hyper, **hyper}), scale, 2 * ctx + 9, positive)
    assert reach == ctx if name == "srresnet-x4" else ctx - 1 <= reach <= ctx


@pytest.mark.parametrize("num_block, upscale", [(0, 2), (1, 8), (3, 4)])
def test_srresnet_reach_formula(num_block, upscale):
    from vhsup.arch.srresnet import srresnet_reach

    reach = srresnet_reach(num_block, upscale)
    net = SRResNet(num_feat=3, num_block=num_block, upscale=upscale)
    assert measured_reach(net, upscale, 2 * reach + 9, positive=False) == reach


# --- discriminators ---------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(32, 32), (40, 56), (96, 96), (23, 17)])
def test_srgan_discriminator_gives_one_logit_per_picture(hw):
    torch.manual_seed(0)
    d = SRGANDiscriminator(num_feat=8, hidden=32).train()
    x = torch.rand(3, 3, *hw)
    out = d(x)
    assert out.shape == (3, 1)
    assert d.conv_first.kernel_size == (9, 9)
    # Four stride-2 blocks: 1/16 of the size with 8x the first conv's features.
    assert d.body(torch.rand(1, 8, 64, 48)).shape == (1, 64, 4, 3)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())


REAL_ESRGAN_NETD_KEYS = {"conv0.weight", "conv0.bias", "conv9.weight", "conv9.bias"} | {
    f"conv{i}.weight_{s}" for i in range(1, 9) for s in ("orig", "u", "v")
}


@pytest.mark.parametrize("hw", [(32, 32), (40, 56), (37, 50)])
def test_unet_discriminator_gives_a_map_of_the_input_size(hw):
    torch.manual_seed(0)
    d = build_discriminator("unet", num_feat=8).train()
    x = torch.rand(2, 3, *hw, requires_grad=True)
    out = d(x)
    assert out.shape == (2, 1, *hw)
    out.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())


def test_unet_discriminator_is_spectrally_normalised_with_real_esrgan_keys(tmp_path):
    d = UNetDiscriminatorSN(num_feat=8)
    assert set(d.state_dict()) == REAL_ESRGAN_NETD_KEYS
    # Power iteration in train mode drives each normalised weight's largest
    # singular value to 1, whatever the raw weight's scale.
    with torch.no_grad():
        d.conv4.weight_orig.mul_(50)
        d.train()
        for _ in range(30):
            d(torch.rand(1, 3, 16, 16))
    sigma = torch.linalg.matrix_norm(d.conv4.weight.flatten(1), ord=2).item()
    raw = torch.linalg.matrix_norm(d.conv4.weight_orig.flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.02) and raw > 10
    # A checkpoint saved this way loads strictly into a fresh one and judges alike.
    path = tmp_path / "netD.pth"
    torch.save({"params": d.state_dict()}, path)
    fresh = UNetDiscriminatorSN(num_feat=8)
    fresh.load_state_dict(load_state_dict_file(path), strict=True)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), d.eval()(x), atol=1e-5)


# --- the named models without weights, and user files through the engine ----------------


@pytest.mark.parametrize("name", UNTRAINED)
def test_weightless_names_say_so(name):
    with pytest.raises(VhsupError) as err:
        registry.load_model(name)
    assert (
        str(err.value) == f"{name} has no pretrained weights yet: train one with `vhsup train` or pass a weights file"
    )


def test_build_model_is_untrained_and_repeatable():
    a = registry.build_model("srgan-x4", seed=7)
    b = registry.build_model("srgan-x4", seed=7)
    c = registry.build_model("srgan-x4", seed=8)
    assert a.descriptor.source.startswith("untrained") and a.descriptor.scale == 4
    assert not a.module.training
    sa, sb, sc = a.module.state_dict(), b.module.state_dict(), c.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv_first.weight"], sc["conv_first.weight"])
    assert registry.build_model("compact-x2").descriptor.scale == 2  # carded rescale kept


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("srresnet", {"num_feat": 6, "num_block": 2, "upscale": 4}),
        ("mesrgan", {"num_feat": 6, "num_block": 1, "num_grow_ch": 3, "scale": 2}),
        ("resunet", {"upscale": 4, "channels": [4, 6, 8]}),
    ],
)
def test_user_files_upscale_frames_through_the_engine(tmp_path, arch, kwargs):
    net = randomise(build(arch, kwargs), seed=11)
    path = tmp_path / f"{arch}.safetensors"
    save_file(net.state_dict(), path)
    m = registry.load_model(str(path))
    frame = np.random.default_rng(0).integers(0, 256, (14, 18, 3), dtype=np.uint8)
    scale = m.descriptor.scale
    whole = SREngine(m, device="cpu", precision="fp32", tile=0).upscale([frame])[0]
    assert whole.shape == (14 * scale, 18 * scale, 3) and whole.dtype == np.uint8
    x = torch.from_numpy(frame).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        ref = (net(x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(whole.astype(float) - ref).max() <= 1.0
    assert whole.std() > 5  # a real picture, not a flat fill
    # Reduced precision runs too (bf16 autocast on the CPU) and stays close.
    bf16 = SREngine(m, device="cpu", precision="bf16", tile=0).upscale([frame])[0]
    assert np.abs(bf16.astype(float) - whole).mean() < 4
    if arch == "srresnet":  # tanh hides fp16 overflow from the engine's guard
        with pytest.raises(VhsupError, match="fp16"):
            SREngine(m, device="cpu", precision="fp16")


@pytest.mark.parametrize(
    "arch, kwargs",
    [
        ("srresnet", {"num_feat": 6, "num_block": 2, "upscale": 4}),
        ("resunet", {"upscale": 4, "channels": [4, 6, 8, 10]}),
    ],
)
def test_engine_tiles_match_whole_frames(tmp_path, arch, kwargs):
    """The descriptor's context and size multiple are what the tiler needs."""
    from vhsup import tiling

    torch.manual_seed(12)
    path = tmp_path / f"{arch}.pth"
    torch.save(build(arch, kwargs).state_dict(), path)
    m = registry.load_model(str(path))
    d = m.descriptor
    frame = np.random.default_rng(1).integers(0, 256, (97, 115, 3), dtype=np.uint8)
    whole = SREngine(m, device="cpu", precision="fp32", tile=0).upscale([frame])[0]
    tiled_engine = SREngine(m, device="cpu", precision="fp32", tile=16)
    tiled = tiled_engine.upscale([frame])[0]
    hp, wp = (-(-n // d.size_multiple) * d.size_multiple for n in frame.shape[:2])
    assert len(tiling.plan_tiles(hp, wp, 16, tiled_engine._context, multiple=d.size_multiple)) > 1
    assert tiled.shape == whole.shape
    assert np.abs(tiled.astype(int) - whole).max() <= 1
