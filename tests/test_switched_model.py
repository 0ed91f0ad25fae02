"""switched-x4 (SwitchedSR): building, saving and loading by detection,
its card's numbers, tiles, selector maps, and a real clip through it."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file

import mediagen
from vhsup import registry, upscale_video
from vhsup.arch import SwitchedSR, build, conv_macs_per_px
from vhsup.arch.switched import (
    SwitchNormBufferWarning,
    convert_to_switched,
    switched_layers,
)
from vhsup.arch.switchedsr import switchedsr_reach
from vhsup.cli import main
from vhsup.engine import SREngine
from vhsup.selector_map import colourise, palette, selector_map
from vhsup.weights.detect import detect
from vhsup.weights.safeload import load_state_dict_file

pytestmark = pytest.mark.usefixtures("two_threads")


def randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights, then a few training-mode passes so that every
    switch norm holds a usage history: a wrongly loaded tensor or buffer
    then shows in the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.15)
        net.train()
        for _ in range(3):
            net(torch.rand(2, 3, 8, 8))
    return net.eval()


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def photo(h: int, w: int) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[60 : 60 + h, 150 : 150 + w])


# --- build, save, detect, load ---------------------------------------------------------

# Odd sizes, every scale, breadths from 1 (a plain conv with a trivial selector) up.
ROUND_TRIPS = [
    ({"num_feat": 5, "num_block": 1, "breadth": 3, "scale": 4}, (7, 5), ".safetensors"),
    ({"num_feat": 7, "num_block": 2, "breadth": 5, "scale": 2}, (6, 9), ".pth"),
    ({"num_feat": 4, "num_block": 3, "breadth": 2, "scale": 1}, (9, 11), ".safetensors"),
    ({"num_feat": 6, "num_block": 1, "breadth": 1, "scale": 8}, (3, 4), ".pth"),
    ({"num_feat": 9, "num_block": 2, "breadth": 8, "scale": 4}, (5, 6), ".pth"),
]


@pytest.mark.parametrize("kwargs, hw, suffix", ROUND_TRIPS, ids=[f"rt{i}" for i in range(len(ROUND_TRIPS))])
def test_saved_switched_models_are_redetected_and_compute_the_same(tmp_path, kwargs, hw, suffix):
    hyper = {"num_in_ch": 3, "num_out_ch": 3, **kwargs}
    net = randomise(build("switchedsr", hyper), seed=kwargs["num_feat"])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert any(k.endswith("norm.history") for k in state)  # the usage history travels with the weights
    path = tmp_path / f"model{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)

    assert detect(load_state_dict_file(path), path) == ("switchedsr", hyper)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwitchNormBufferWarning)
        m = registry.load_model(str(path))
    scale = kwargs["scale"]
    d = m.descriptor
    assert (d.arch, d.scale, d.params, d.context) == (
        "switchedsr",
        scale,
        n_params(net),
        switchedsr_reach(kwargs["num_block"], scale),
    )
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        want = net(x)
        got = m.module(x)
    assert want.shape == (2, 3, hw[0] * scale, hw[1] * scale)
    assert torch.equal(got, want)
    if kwargs["breadth"] > 1:  # the loaded selectors really choose between kernels
        assert max(len(torch.unique(layer.last_index)) for _, layer in switched_layers(m.module)) > 1


@pytest.mark.parametrize(
    "arch, kwargs, pick",
    [
        ("compact", {"num_feat": 6, "num_conv": 2, "upscale": 2, "act": "prelu"}, ("body.2", "body.4")),
        ("srresnet", {"num_feat": 5, "num_block": 1, "upscale": 2}, ("conv_first", "body.0.conv2")),
    ],
)
def test_converted_models_load_by_detection(tmp_path, arch, kwargs, pick):
    """A plain vhsup network with some convs switched (staged training)
    comes back from its file as the same converted network."""
    net = build(arch, {"num_in_ch": 3, "num_out_ch": 3, **kwargs})
    assert convert_to_switched(net, breadth=3, predicate=lambda name, _c: name in pick) == list(pick)
    randomise(net, seed=3)
    path = tmp_path / "converted.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    got_arch, hyper = detect(load_state_dict_file(path), path)
    assert (got_arch, hyper) == (
        arch,
        {"num_in_ch": 3, "num_out_ch": 3, **kwargs, "switched": {"breadth": 3, "layers": sorted(pick)}},
    )
    m = registry.load_model(str(path))
    assert sorted(name for name, _ in switched_layers(m.module)) == sorted(pick)
    x = torch.rand(1, 3, 7, 6)
    with torch.no_grad():
        assert torch.equal(m.module(x), net(x))


def test_a_file_without_the_switch_norm_history_loads_with_a_warning(tmp_path):
    net = randomise(SwitchedSR(num_feat=6, num_block=1, breadth=4, scale=2), seed=4)
    with torch.no_grad():  # a history that strongly favours kernel 0, so that dropping it shows
        for _, layer in switched_layers(net):
            layer.norm.history[:, 0] = 50.0
    path = tmp_path / "nohistory.safetensors"
    save_file({k: v for k, v in net.state_dict().items() if ".norm." not in k}, path)
    assert detect(load_state_dict_file(path)) == (
        "switchedsr",
        {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 6, "num_block": 1, "breadth": 4, "scale": 2},
    )
    with pytest.warns(SwitchNormBufferWarning, match="switch-norm"):
        m = registry.load_model(str(path))
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.isfinite(m.module(x)).all()
        assert not torch.equal(m.module(x), net(x))  # the history decides the routing


def test_detection_refuses_mixed_breadths(tmp_path):
    net = SwitchedSR(num_feat=4, num_block=2, breadth=3, scale=2)
    state = net.state_dict()
    state["body.1.conv2.weight"] = torch.zeros(5, 4, 4, 3, 3)
    from vhsup.errors import VhsupError

    with pytest.raises(VhsupError, match="different breadths"):
        detect(state, tmp_path / "x.pth")


# --- shapes, card, cost, reach -----------------------------------------------------------


@pytest.mark.parametrize("scale, hw", [(2, (5, 7)), (4, (6, 3)), (1, (4, 4)), (8, (2, 3))])
def test_forward_shape_and_an_untrained_network_starts_near_bilinear(scale, hw):
    torch.manual_seed(scale)
    net = SwitchedSR(num_feat=8, num_block=2, breadth=4, scale=scale).eval()
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, hw[0] * scale, hw[1] * scale) and y.dtype == torch.float32
    base = x if scale == 1 else F.interpolate(x, scale_factor=float(scale), mode="bilinear", align_corners=False)
    diff = (y - base).abs().mean().item()
    assert 0 < diff < 0.05


def test_card_matches_the_network_and_costs_one_kernel_per_switched_conv():
    c = registry.card("switched-x4")
    assert c.untrained and c.weights is None and c.licence and c.notes.strip()
    assert any("Betker" in a for a in c.attribution)
    assert "switched-x4" in registry.model_names() and not registry.has_pretrained_weights("switched-x4")
    m = registry.build_model("switched-x4", seed=0)
    assert m.descriptor.scale == 4 and m.descriptor.context == c.context
    assert c.params == n_params(m.module)
    # By hand: 64 features, 5 blocks of two switched convs (one 3x3 kernel
    # applied + a 1x1 selector to 8 scores each), plain convs at 1x (first,
    # trunk), 4x (up1) and 16x (up2, hr, last) the input pixels.
    f, c_io = 64, 3
    switched = 10 * (9 * f * f + f * 8)
    plain = 9 * (c_io * f + f * f + 4 * f * f + 16 * (2 * f * f + f * c_io))
    assert c.macs_per_px == switched + plain == conv_macs_per_px(c.arch, c.hyper)
    # The breadth multiplies the parameters, not the cost.
    wide = conv_macs_per_px("switchedsr", {**c.hyper, "breadth": 16})
    assert wide - c.macs_per_px == 10 * f * 8


def _reach(net: torch.nn.Module, scale: int, size: int) -> int:
    """How far (input px) the gradient of the centre output pixel reaches,
    worst case over the scale x scale output pixels of the centre input pixel."""
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    c = size // 2
    net(x)[0, :, c * scale : (c + 1) * scale, c * scale : (c + 1) * scale].sum().backward()
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    return int(max(c - ys.min(), ys.max() - c, c - xs.min(), xs.max() - c))


@pytest.mark.parametrize("num_block, scale", [(5, 4), (2, 2), (1, 8)])
def test_reach_formula_is_the_measured_reach(num_block, scale):
    torch.manual_seed(6)
    net = SwitchedSR(num_feat=3, num_block=num_block, breadth=3, scale=scale).double().eval()
    reach = switchedsr_reach(num_block, scale)
    assert _reach(net, scale, 2 * reach + 7) == reach


def test_tiles_with_the_card_context_equal_the_whole_picture():
    c = registry.card("switched-x4")
    ctx, core = c.context, 6
    torch.manual_seed(7)
    net = randomise(build("switchedsr", {**c.hyper, "num_feat": 4}), seed=7).double()
    size = 2 * ctx + core + 4
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    y0 = x0 = ctx + 2

    def tile_error(context: int) -> float:
        with torch.no_grad():
            whole = net(x)[..., y0 * 4 : (y0 + core) * 4, x0 * 4 : (x0 + core) * 4]
            crop = x[..., y0 - context : y0 + core + context, x0 - context : x0 + core + context]
            tile = net(crop)[..., context * 4 : (context + core) * 4, context * 4 : (context + core) * 4]
        return (tile - whole).abs().max().item()

    assert tile_error(ctx) < 1e-12
    assert tile_error(ctx - 1) > 1e-9


# --- selector maps -----------------------------------------------------------------------


def test_palette_colours_are_distinct_and_stable():
    for b in (1, 8, 16, 40):
        p = palette(b)
        assert p.shape == (b, 3) and p.dtype == np.uint8
        assert len({tuple(c) for c in p}) == b
    assert np.array_equal(palette(40)[:8], palette(8))


def test_selector_map_of_a_photo_through_an_untrained_switched_x4(tmp_path):
    pic = photo(40, 56)
    src = tmp_path / "frame.png"
    assert cv2.imwrite(str(src), cv2.cvtColor(pic, cv2.COLOR_RGB2BGR))
    out = tmp_path / "map.png"
    r = CliRunner().invoke(
        main, ["models", "selector-map", str(src), "--model", "switched-x4", "--untrained", "-o", str(out), "--json"]
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    names = [f"body.{b}.conv{i}" for b in range(5) for i in (1, 2)]
    assert [row["layer"] for row in report["layers"]] == names
    assert all((row["height"], row["width"]) == (40, 56) for row in report["layers"])

    written = cv2.cvtColor(cv2.imread(str(out), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    # The same untrained model (seed 0) gives the same picture through the API,
    # which also says where each panel is.
    expected = selector_map(registry.build_model("switched-x4", seed=0).module, pic)
    assert np.array_equal(written, expected.canvas)
    assert list(expected.boxes) == ["input", *names]
    colours = {tuple(c) for c in palette(8)}
    x, y, w, h = expected.boxes["input"]
    assert np.array_equal(written[y : y + h, x : x + w], pic)
    used = []
    for layer in expected.layers:
        x, y, w, h = expected.boxes[layer.name]
        panel = written[y : y + h, x : x + w]
        assert {tuple(c) for c in panel.reshape(-1, 3)} <= colours
        assert np.array_equal(panel, colourise(layer.index, 8))
        used.append(layer.used)
    assert max(used) > 1  # some layer routes different pixels to different kernels
    assert [row["kernels_used"] for row in report["layers"]] == used


def test_selector_map_refusals(tmp_path):
    pic = tmp_path / "frame.png"
    cv2.imwrite(str(pic), photo(16, 16))
    plain = tmp_path / "compact.safetensors"
    save_file(build("compact", {"num_feat": 4, "num_conv": 1, "upscale": 2}).state_dict(), plain)
    runner = CliRunner()

    def run(*args):
        r = runner.invoke(main, ["models", "selector-map", str(pic), "-o", str(tmp_path / "map.png"), *args])
        assert r.exit_code == 2, r.output
        assert len(r.stderr.strip().splitlines()) == 1
        return r.stderr

    assert "no switched convolutions" in run("--model", str(plain))
    assert "--untrained" in run("--model", "switched-x4")  # no weights: say how to map it anyway
    assert "--untrained needs a model name" in run("--model", str(plain), "--untrained")
    (tmp_path / "map.png").write_bytes(b"x")
    assert "--overwrite" in run("--model", "switched-x4", "--untrained")
    assert not (tmp_path / "map2.png").exists()
    (tmp_path / "junk.png").write_bytes(b"not a picture")
    r = runner.invoke(
        main,
        [
            "models",
            "selector-map",
            str(tmp_path / "junk.png"),
            "--model",
            "switched-x4",
            "--untrained",
            "-o",
            str(tmp_path / "map2.png"),
        ],
    )
    assert r.exit_code == 2 and "cannot decode" in r.stderr
    assert not (tmp_path / "map2.png").exists()


# --- listed, and upscaling a real clip ---------------------------------------------------


def test_models_list_shows_switched_x4():
    r = CliRunner().invoke(main, ["models", "list", "--json"])
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    row = rows["switched-x4"]
    assert (row["arch"], row["scale"], row["weights"], row["params"]) == ("switchedsr", 4, "none", 3_110_675)
    assert row["hyper"]["breadth"] == 8


def test_a_saved_switched_x4_upscales_a_clip_end_to_end(clips, tmp_path):
    clip = clips.make("tiny.mkv", vcodec="ffv1", size=(48, 32), frames=2)
    net = registry.build_model("switched-x4", seed=3).module
    randomise_history = torch.rand(2, 3, 16, 16)
    with torch.no_grad():  # a usage history, as a trained file would carry
        net.train()
        net(randomise_history)
        net.eval()
    weights = tmp_path / "switched-x4-mine.safetensors"
    save_file(net.state_dict(), weights)
    dst = tmp_path / "out.mkv"
    r = upscale_video(clip.path, dst, model=str(weights), preset="ultrafast", overwrite=True)
    assert (r.frames_out, r.width, r.height) == (2, 192, 128)
    assert [i for _, i in mediagen.read_indices(dst)] == [0, 1]
    # The picture is the model's: compare the first output frame with the
    # network run directly on the decoded input frame.
    (_, src), (_, got) = next(iter(mediagen.decode_video(clip.path))), next(iter(mediagen.decode_video(dst)))
    x = torch.from_numpy(src).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        want = (net(x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(got.astype(float) - want).mean() < 4  # x264 and 4:2:0 chroma, nothing more


def test_engine_bf16_stays_close_to_fp32(tmp_path):
    """The card allows bf16: autocast changes the kernel choice only at near
    ties, so the output barely moves."""
    net = registry.build_model("switched-x4", seed=9).module
    with torch.no_grad():
        net.conv_last.weight.mul_(10)  # undo the small start: a full-strength correction
        net.train()
        net(torch.rand(2, 3, 16, 16))
        net.eval()
    path = tmp_path / "s.safetensors"
    save_file(net.state_dict(), path)
    m = registry.load_model(str(path))
    frame = photo(24, 32)
    fp32 = SREngine(m, device="cpu", precision="fp32", tile=0).upscale([frame])[0].astype(float)
    bf16 = SREngine(m, device="cpu", precision="bf16", tile=0).upscale([frame])[0].astype(float)
    assert fp32.shape == bf16.shape == (96, 128, 3)
    diff = np.abs(bf16 - fp32)
    assert diff.mean() < 1 and diff.max() < 16
