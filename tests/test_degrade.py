"""Degradations are measurable: each artefact does what its setting says.

Every test switches on one effect, feeds a picture whose answer is known
(flat grey, a grating, an edge) and measures the output: noise sigma,
filter response at a frequency, edge positions. Pictures are tiny, so the
whole file runs in a few seconds on one core.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vhsup.errors import VhsupError
from vhsup.train.degrade import PRESETS, Degrader, load_spec, show_degradations
from vhsup.train.degrade import grid as grid_mod
from vhsup.train.degrade.blur import bivariate, circular_lowpass, filter2d
from vhsup.train.degrade.mpeg2 import roundtrip
from vhsup.train.degrade.realesrgan import POISSON_PEAK

# -- helpers -----------------------------------------------------------------

_OFF_ORDER = {"blur_prob": 0.0, "resize_prob": [0, 0, 1], "noise_prob": 0.0, "jpeg_prob": 0.0}
_OFF_VHS = {
    "prob": 1.0,
    "luma_mhz": 0,
    "chroma_mhz": 0,
    "chroma_delay_px": 0,
    "luma_noise": 0,
    "chroma_noise": 0,
    "chroma_comb_prob": 0.0,
    "sharpen": 0,
    "jitter_px": 0,
    "dropouts": 0,
    "head_switch_prob": 0.0,
    "interlace_prob": 0.0,
}


def only_vhs(**vhs):
    """A spec with the VHS chain on, every VHS artefact off except ``vhs``, nothing else."""
    return load_spec("none", {"vhs": {**_OFF_VHS, **vhs}})


def only_generic(first=None, second=None, **generic):
    """Real-ESRGAN pipeline with every step off except what is given."""
    return load_spec(
        "generic",
        {
            "generic": {
                "first": {**_OFF_ORDER, **(first or {})},
                "second": {**_OFF_ORDER, **(second or {})},
                "final_sinc_prob": 0.0,
                "second_order_prob": 1.0 if second else 0.0,
                **generic,
            }
        },
    )


def run(spec, hr: np.ndarray | torch.Tensor, scale: int = 1, seed: int = 0) -> np.ndarray:
    """Degrade an (H, W, 3) or (N, 3, H, W) float picture; return (N, H, W, 3) float64 output."""
    t = torch.as_tensor(hr, dtype=torch.float32)
    if t.ndim == 3:
        t = t.permute(2, 0, 1)[None]
    lr = Degrader(spec, scale)(t.contiguous(), torch.Generator().manual_seed(seed))
    return lr.permute(0, 2, 3, 1).double().numpy()


def ycc(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 Y'CbCr of RGB (..., 3)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, (b - y) / 1.772, (r - y) / 1.402], -1)


def rgb_from(y, cb, cr) -> np.ndarray:
    r = y + 1.402 * cr
    b = y + 1.772 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return np.stack([r, g, b], -1)


def amplitude(signal: np.ndarray, period: float) -> float:
    """Amplitude of the sinusoid of ``period`` pixels along the last axis (rows averaged)."""
    x = np.arange(signal.shape[-1])
    s = signal.reshape(-1, signal.shape[-1]).mean(0)
    s = s - s.mean()
    w = 2 * np.pi / period
    return float(2 * np.hypot((s * np.cos(w * x)).mean(), (s * np.sin(w * x)).mean()))


def crossing(row: np.ndarray, level: float) -> float:
    """Sub-pixel position where a rising ``row`` first crosses ``level``."""
    i = int(np.argmax(row >= level))
    a, b = row[i - 1], row[i]
    return i - 1 + (level - a) / (b - a)


def astronaut(size: int) -> np.ndarray:
    """The whole upper body squeezed into size x size: dense detail."""
    from skimage import data

    return cv2.resize(data.astronaut()[40:360, 120:440], (size, size), interpolation=cv2.INTER_AREA)


def sd_patch(size: int) -> np.ndarray:
    """A patch with the detail density of an SD frame (face and suit at 720 lines)."""
    from skimage import data

    sd = cv2.resize(data.astronaut(), (720, 720), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(sd[120 : 120 + size, 320 : 320 + size])


# -- noise ----------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [4.0, 12.0])
def test_gaussian_noise_has_the_asked_sigma(sigma):
    spec = only_generic(
        first={"noise_prob": 1.0, "gaussian_noise_prob": 1.0, "gray_noise_prob": 0.0, "noise_range": [sigma, sigma]}
    )
    out = run(spec, np.full((96, 96, 3), 0.5))
    measured = out.std(axis=(1, 2)).mean() * 255  # per channel
    assert measured == pytest.approx(sigma, rel=0.08)
    # Colour noise: the channels are independent.
    flat = out[0].reshape(-1, 3) - 0.5
    assert abs(np.corrcoef(flat.T)[0, 1]) < 0.1


def test_grey_noise_is_the_same_on_every_channel():
    spec = only_generic(
        first={"noise_prob": 1.0, "gaussian_noise_prob": 1.0, "gray_noise_prob": 1.0, "noise_range": [10, 10]}
    )
    out = run(spec, np.full((64, 64, 3), 0.5))[0]
    assert out.std() * 255 == pytest.approx(10, rel=0.1)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_poisson_noise_grows_with_brightness():
    spec = only_generic(
        first={"noise_prob": 1.0, "gaussian_noise_prob": 0.0, "gray_noise_prob": 0.0, "poisson_scale_range": [3, 3]}
    )
    for level in (0.2, 0.8):
        out = run(spec, np.full((128, 128, 3), level))
        expected = 3 * math.sqrt(level / POISSON_PEAK)
        assert out.std() == pytest.approx(expected, rel=0.12)


def test_vhs_noise_has_the_asked_sigma_after_the_playback_filters():
    out = run(
        only_vhs(luma_noise=6, luma_mhz=2.4, chroma_noise=5, chroma_mhz=0.4, chroma_comb_prob=1.0),
        np.full((96, 128, 3), 0.5),
    )[0]
    planes = ycc(out)
    inner = planes[8:-8, 20:-20]  # away from the edge extension
    assert inner[..., 0].std() * 255 == pytest.approx(6, rel=0.15)
    assert inner[..., 1:].std(axis=(0, 1)).mean() * 255 == pytest.approx(5, rel=0.25)
    # VHS noise is streaky: neighbours along a line are correlated, across lines not.
    y = inner[..., 0] - inner[..., 0].mean()
    along = (y[:, 1:] * y[:, :-1]).mean() / y.var()
    across = (y[1:] * y[:-1]).mean() / y.var()
    assert along > 0.5 and abs(across) < 0.15


# -- bandwidth ------------------------------------------------------------------


def _grating(period: float, plane: str, w: int = 270, h: int = 8) -> np.ndarray:
    x = np.arange(w)[None, :].repeat(h, 0)
    wave = 0.15 * np.sin(2 * np.pi * x / period)
    zero = np.zeros_like(wave)
    if plane == "y":
        return rgb_from(0.5 + wave, zero, zero)
    return rgb_from(np.full_like(wave, 0.5), zero, wave)  # a Cr grating, luma flat


def _response(spec, period: float, plane: str) -> float:
    src = _grating(period, plane)
    out = ycc(run(spec, src)[0])
    k = 0 if plane == "y" else 2
    cut = slice(60, -60)  # far from the edges
    return amplitude(out[:, cut, k], period) / amplitude(ycc(src)[:, cut, k], period)


def test_chroma_bandwidth_is_cut_where_asked_and_luma_keeps_its_own():
    spec = only_vhs(chroma_mhz=0.4, luma_mhz=3.0)

    def period(mhz: float) -> float:
        return 13.5 / mhz  # pixels per cycle on a 720-sample line

    assert _response(spec, period(0.4), "c") == pytest.approx(1 / math.sqrt(2), abs=0.05)  # -3 dB
    assert _response(spec, period(1.0), "c") < 0.15
    assert _response(spec, period(1.0), "y") > 0.95  # luma detail at 1 MHz survives
    assert _response(spec, period(3.0), "y") == pytest.approx(0.5, abs=0.1)  # luma -6 dB point
    assert _response(spec, period(5.0), "y") < 0.1


def test_narrower_line_scales_the_bandwidth():
    # The same 0.4 MHz on a 360-pixel line is half as many pixels per cycle.
    spec = only_vhs(chroma_mhz=0.4, line_width=360.0)
    assert _response(spec, 6.75 / 0.4, "c") == pytest.approx(1 / math.sqrt(2), abs=0.05)


def test_chroma_subsampling_removes_chroma_detail_of_the_right_direction():
    h, w = 16, 32
    rows = np.where(np.arange(h)[:, None] % 2 == 0, 0.1, -0.1).repeat(w, 1)  # Cr stripes line by line
    src = rgb_from(np.full((h, w), 0.5), np.zeros((h, w)), rows)

    def stripes_left(mode):
        spec = load_spec("none", {"chroma": {"subsampling": [mode], "subsampling_prob": [1]}})
        cr = ycc(run(spec, src)[0])[..., 2]
        return np.abs(cr[2:-2, 2:-2]).mean() / 0.1

    assert stripes_left("411") > 0.9  # 4:1:1 keeps every line's colour
    assert stripes_left("420") < 0.1  # 4:2:0 shares chroma between line pairs
    assert stripes_left("444") > 0.95


# -- geometry ---------------------------------------------------------------------


def _chroma_edge(h: int = 8, w: int = 64) -> np.ndarray:
    cr = np.where(np.arange(w) < w // 2, -0.1, 0.1)[None, :].repeat(h, 0)
    return rgb_from(np.full((h, w), 0.5), np.zeros((h, w)), cr)


@pytest.mark.parametrize("delay", [3.0, 1.5])
def test_chroma_delay_moves_colour_right_by_the_asked_samples(delay):
    src = _chroma_edge()
    out = ycc(run(only_vhs(chroma_delay_px=delay), src)[0])
    before = crossing(ycc(src)[4, :, 2], 0.0)
    after = crossing(out[4, :, 2], 0.0)
    assert after - before == pytest.approx(delay, abs=0.1)
    assert np.abs(out[..., 0] - 0.5).max() < 2 / 255  # luma stays put


def test_head_switching_only_touches_the_bottom_lines():
    src = astronaut(64).astype(np.float64) / 255
    out = run(only_vhs(head_switch_prob=1.0, head_switch_lines=[6, 6]), src)[0]
    diff = np.abs(out - src).max(axis=(1, 2))
    assert diff[:-6].max() <= 1.5 / 255  # untouched (8-bit rounding only)
    assert np.abs(out - src)[-6:].mean() > 8 / 255  # torn and noisy


def test_jitter_displaces_lines_by_the_asked_rms():
    h, w = 128, 48
    edge = np.where(np.arange(w) < w // 2, 0.2, 0.8)[None, :].repeat(h, 0)
    src = np.repeat(edge[..., None], 3, 2)
    jit = 1.5
    shifts = []
    for seed in range(3):
        y = ycc(run(only_vhs(jitter_px=jit), src, seed=seed)[0])[..., 0]
        shifts += [crossing(row, 0.5) - crossing(edge[0], 0.5) for row in y]
    rms = float(np.sqrt(np.mean(np.square(shifts))))
    assert rms == pytest.approx(jit, rel=0.3)
    assert len({round(s, 3) for s in shifts}) > 100  # every line has its own error


def test_interlace_combing_offsets_one_field():
    h, w = 16, 48
    edge = np.where(np.arange(w) < w // 2, 0.2, 0.8)[None, :].repeat(h, 0)
    src = np.repeat(edge[..., None], 3, 2)
    out = ycc(run(only_vhs(interlace_prob=1.0, interlace_motion_px=2.0), src)[0])[..., 0]
    pos = np.array([crossing(row, 0.5) for row in out])
    even, odd = pos[0::2], pos[1::2]
    assert np.ptp(even) < 0.05 and np.ptp(odd) < 0.05  # each field is a clean edge
    assert abs(even.mean() - odd.mean()) == pytest.approx(2.0, abs=0.1)


def test_dropouts_are_short_bright_horizontal_streaks():
    src = np.full((64, 200, 3), 0.2)
    out = ycc(run(only_vhs(dropouts=500.0), src)[0])[..., 0]
    bright = out > 0.5
    assert bright.any()
    runs = [len(r) for line in bright for r in "".join("1" if b else "0" for b in line).split("0") if r]
    assert sum(n for n in runs if n >= 4) > 0.9 * sum(runs)  # streaks along lines, not speckle
    assert (bright.sum(axis=1) > 0).sum() < 0.8 * out.shape[0]  # not every line


# -- MPEG-2 --------------------------------------------------------------------------


def test_mpeg2_roundtrip_is_bounded_and_bitrate_matters():
    pic = sd_patch(64)
    low, q_low = roundtrip(pic, 3.0)
    high, q_high = roundtrip(pic, 9.0)
    assert low.shape == high.shape == pic.shape and low.dtype == np.uint8

    def err(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean((a.astype(float) - pic) ** 2)))

    assert 0.5 < err(high) < err(low) < 12  # changed, but still the same picture
    assert q_low > q_high


def test_mpeg2_in_the_degrader_keeps_odd_sizes():
    spec = load_spec("none", {"mpeg2": {"prob": 1.0, "mbps": [4, 4]}})
    src = sd_patch(66).astype(np.float64) / 255
    out = run(spec, src, scale=2)[0]
    assert out.shape == (33, 33, 3)
    plain = run(load_spec("none"), src, scale=2)[0]
    rmse = np.sqrt(np.mean((out - plain) ** 2)) * 255
    assert 0.5 < rmse < 15


# -- the whole thing ----------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale,size", [(4, (64, 48)), (3, (48, 33))])
def test_every_preset_gives_lr_shape_and_range(preset, scale, size):
    h, w = size
    hr = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(5))
    lr = Degrader(load_spec(preset), scale)(hr, torch.Generator().manual_seed(1))
    assert lr.shape == (2, 3, h // scale, w // scale) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)  # 8-bit like every real input
    assert torch.isfinite(lr).all()


def test_the_same_generator_state_gives_the_same_lr():
    spec = load_spec("vhs", {"mpeg2": {"prob": 1.0}, "vhs": {"interlace_prob": 0.5, "head_switch_prob": 0.5}})
    hr = torch.from_numpy(np.stack([astronaut(64), astronaut(64)[::-1].copy()])).permute(0, 3, 1, 2).float() / 255
    deg = Degrader(spec, 4)
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    a = deg(hr, g)
    b = deg(hr, torch.Generator().set_state(state))
    c = deg(hr, g)  # the generator moved on
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_presets_differ_in_character():
    """'none' is a clean downscale; the others are visibly worse in their own ways."""
    src = astronaut(128).astype(np.float64) / 255
    batch = np.repeat(src.transpose(2, 0, 1)[None], 4, 0)
    ref = run(load_spec("none"), batch, scale=2)
    bicubic = cv2.resize(astronaut(128), (64, 64), interpolation=cv2.INTER_AREA) / 255
    assert np.sqrt(np.mean((ref[0] - bicubic) ** 2)) * 255 < 6
    for preset in ("vhs", "dvd", "generic"):
        out = run(load_spec(preset), batch, scale=2, seed=3)
        assert np.sqrt(np.mean((out - ref) ** 2)) * 255 > 3, preset


def test_generic_kernels_blur_as_their_sigma_says():
    k = bivariate("gaussian", 21, 2.0, 2.0, 0.0)
    ax = np.arange(21) - 10
    assert float(k.sum()) == pytest.approx(1.0)
    assert float((k.sum(0).numpy() * ax**2).sum()) == pytest.approx(4.0, rel=0.02)  # variance = sigma^2
    rotated = bivariate("gaussian", 21, 3.0, 1.0, math.pi / 2).numpy()
    assert (rotated.sum(1) * ax**2).sum() == pytest.approx(9.0, rel=0.05)  # long axis now vertical
    # The sinc kernel passes low frequencies and stops high ones.
    sinc = circular_lowpass(math.pi / 2, 21).numpy()
    resp = np.abs(np.fft.fft2(sinc, (64, 64)))
    assert resp[0, 4] > 0.9  # 0.39 rad/px
    assert resp[0, 24] < 0.1  # 2.36 rad/px
    # Filtering with it keeps the mean of a picture.
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    assert float(filter2d(x, torch.from_numpy(sinc)).mean()) == pytest.approx(float(x.mean()), abs=0.01)


# -- the spec ------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_spec_round_trips_through_its_dict(preset):
    spec = load_spec(preset)
    table = spec.to_dict()

    def toml_types(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and toml_types(x) for k, x in v.items())
        if isinstance(v, list):
            return all(toml_types(x) for x in v)
        return isinstance(v, (str, int, float, bool))

    assert toml_types(table)
    assert load_spec("none", table) == spec
    assert table["preset"] == preset


def test_overrides_change_only_what_they_name():
    spec = load_spec("vhs", {"vhs": {"luma_mhz": 2.4}, "generic": {"second": {"jpeg_range": [50, 60]}}})
    base = load_spec("vhs")
    assert spec.vhs.luma_mhz == (2.4, 2.4)
    assert spec.generic.second.jpeg_range == (50, 60)
    assert spec.vhs.chroma_mhz == base.vhs.chroma_mhz and spec.generic.first == base.generic.first


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"vhs": {"luma_mhz_typo": 3}}, "degradation.vhs.luma_mhz_typo"),
        ({"sharpness": 1}, "degradation.sharpness"),
        ({"vhs": {"chroma_mhz": [0.5, 0.3]}}, "degradation.vhs.chroma_mhz"),
        ({"vhs": {"luma_mhz": [1, 9]}}, "degradation.vhs.luma_mhz"),
        ({"mpeg2": {"prob": 1.5}}, "degradation.mpeg2.prob"),
        ({"mpeg2": {"mbps": "fast"}}, "degradation.mpeg2.mbps"),
        ({"generic": {"first": {"kernel_size": [7, 20]}}}, "degradation.generic.first.kernel_size"),
        ({"generic": {"first": {"kernel_prob": [1, 1]}}}, "degradation.generic.first.kernel_prob"),
        ({"generic": {"first": {"kernel_list": ["box"]}}}, "degradation.generic.first.kernel_list"),
        ({"generic": {"second": {"resize_range": [1.1, 1.5]}}}, "degradation.generic.second.resize_range"),
        ({"generic": {"enabled": "yes"}}, "degradation.generic.enabled"),
        ({"generic": 3}, "degradation.generic"),
        ({"preset": "betamax"}, "degradation.preset"),
    ],
)
def test_bad_overrides_name_the_file_and_the_key(tmp_path, overrides, key):
    cfg = tmp_path / "config.toml"
    with pytest.raises(VhsupError) as err:
        load_spec("vhs", overrides, path=cfg)
    msg = str(err.value)
    assert key in msg and str(cfg) in msg and "\n" not in msg


# -- the preview ------------------------------------------------------------------------


def test_show_degradations_writes_the_grid(tmp_path):
    frame = astronaut(80)
    n, patch, scale = 3, 32, 2
    out = show_degradations([frame], load_spec("vhs"), scale, n, tmp_path / "deg.png", seed=4, patch=patch)
    img = cv2.imread(str(out))[:, :, ::-1]
    cols = min(n, grid_mod.PAIRS_PER_ROW) * 2
    rows = math.ceil(n / grid_mod.PAIRS_PER_ROW)
    gap = grid_mod.GAP
    assert img.shape == (rows * patch + (rows + 1) * gap, cols * patch + (cols + 1) * gap, 3)
    assert not list(tmp_path.glob(".*part*"))
    # Each right-hand tile is a real crop of the frame; its left neighbour is its degraded copy.
    for i in range(n):
        r, c = divmod(i, grid_mod.PAIRS_PER_ROW)
        y = gap + r * (patch + gap)
        x_lr = gap + 2 * c * (patch + gap)
        hr_tile = img[y : y + patch, x_lr + patch + gap : x_lr + 2 * patch + gap]
        lr_tile = img[y : y + patch, x_lr : x_lr + patch]
        match = cv2.matchTemplate(frame, np.ascontiguousarray(hr_tile), cv2.TM_SQDIFF)
        assert match.min() == 0
        assert np.array_equal(lr_tile[::scale, ::scale].repeat(scale, 0).repeat(scale, 1), lr_tile)  # nearest-up
        assert np.abs(lr_tile.astype(float) - hr_tile).mean() > 1  # degraded


def test_show_degradations_refuses_a_missing_folder(tmp_path):
    with pytest.raises(VhsupError, match="cannot write"):
        show_degradations([astronaut(64)], load_spec("none"), 2, 1, tmp_path / "nope" / "g.png", patch=32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_degrades_on_the_gpu_and_stays_there():
    hr = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)).cuda()
    for preset in PRESETS:
        spec = load_spec(preset, {"mpeg2": {"prob": 1.0}} if preset != "none" else None)
        a = Degrader(spec, 4)(hr, torch.Generator().manual_seed(2))
        b = Degrader(spec, 4)(hr, torch.Generator().manual_seed(2))
        assert a.device == hr.device and a.shape == (4, 3, 16, 16)
        assert 0 <= float(a.min()) and float(a.max()) <= 1
        assert torch.allclose(a, b, atol=2 / 255)  # same draws; GPU kernels may round differently
