"""ONNX export and the onnxruntime backend: the exported graph computes what
torch computes at any batch and size, the engine gives the same frames with
either backend (tiled or not), precision and out-of-memory handling reach
onnxruntime, files are cached and self-describing, and user mistakes are
one-line errors.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import mediagen
from vhsup.arch import Bicubic, RRDBNet
from vhsup.backends.onnx import (
    CPU,
    CUDA,
    TRT,
    UNKNOWN_CONTEXT,
    OnnxModule,
    Profile,
    load_onnx_model,
    needs_sync,
    open_session,
    provider_chain,
    trt_dirs,
)
from vhsup.engine import SREngine
from vhsup.errors import VhsupError
from vhsup.export import TOLERANCE, export_onnx, read_metadata
from vhsup.registry import LoadedModel, ModelDescriptor, load_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: one torch (and so onnxruntime) thread is as fast
    on a quiet machine, and avoids OpenMP spin-wait stalls (measured 200x)
    when other processes share the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def compact():
    return load_model("compact-x4")


@pytest.fixture(scope="module")
def compact_onnx(compact, tmp_path_factory):
    """compact-x4 through the cache, as the CLI's --backend onnx would load it."""
    return load_onnx_model(compact, cache_dir=tmp_path_factory.mktemp("onnx-cache"))


def rrdb(scale: int) -> LoadedModel:
    """A two-block RRDBNet with weights drawn so the signal survives its depth
    (the default init makes a near-constant net that would hide mistakes)."""
    torch.manual_seed(scale)
    net = RRDBNet(scale=scale, num_feat=16, num_block=2, num_grow_ch=8)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2 / 1.04) / math.sqrt(m.weight[0].numel()))
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        net.conv_last.weight.mul_(0.25 / net(torch.rand(1, 3, 32, 32)).std())
        net.conv_last.bias.fill_(0.5)
    multiple = {4: 1, 2: 2}[scale]
    return LoadedModel(net.eval(), ModelDescriptor(f"rrdb-x{scale}", "rrdbnet", scale, size_multiple=multiple))


def frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    return mediagen.wave_frames(n, h, w, seed, period=15, amplitude=90, grain=20)


def torch_out(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.module(x)


def worst(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    assert len(a) == len(b)
    return max(int(np.abs(p.astype(np.int16) - q).max()) for p, q in zip(a, b))


# --- the exported graph --------------------------------------------------------------


def test_compact_x4_export_matches_torch_at_any_batch_and_size(compact, tmp_path):
    report = export_onnx(compact, tmp_path / "compact.onnx")
    assert report.max_abs_error is not None and report.max_abs_error < TOLERANCE["fp32"]
    assert report.size_bytes == (tmp_path / "compact.onnx").stat().st_size > 2_000_000  # 621k fp32 params

    module = OnnxModule({"fp32": tmp_path / "compact.onnx"}, 4)
    for shape in [(3, 3, 31, 47), (1, 3, 17, 9)]:  # odd sizes and batches the trace never saw
        x = torch.rand(shape, generator=torch.Generator().manual_seed(shape[2]))
        y = module(x)
        assert y.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4) and y.dtype == torch.float32
        assert float((y - torch_out(compact, x)).abs().max()) < 1e-3


@pytest.mark.parametrize("scale,shape", [(4, (2, 3, 21, 33)), (2, (3, 3, 22, 34))])
def test_random_rrdbnet_export_matches_torch(tmp_path, scale, shape):
    model = rrdb(scale)
    report = export_onnx(model, tmp_path / "rrdb.onnx")
    assert report.max_abs_error < 1e-3
    x = torch.rand(shape, generator=torch.Generator().manual_seed(7))
    ref = torch_out(model, x)
    assert float(ref.std()) > 0.05  # the net really depends on its input
    y = OnnxModule({"fp32": tmp_path / "rrdb.onnx"}, scale)(x)
    assert float((y - ref).abs().max()) < 1e-3


def test_switched_models_export_with_standard_operators(tmp_path):
    # vhsup's switched-conv op cannot live in an ONNX graph: the export
    # computes the same function with Conv/Equal/Where/ReduceSum, and routes
    # every pixel to the same kernel as torch does.
    from vhsup.arch.switched import SwitchedConv2d, switched_layers
    from vhsup.registry import build_model

    model = build_model("switched-x4", seed=3)
    with torch.no_grad():
        for _name, layer in switched_layers(model.module):
            # an uneven usage history, so the switch norm takes part, and
            # sharper selectors: an untrained one picks nearly one kernel
            layer.norm.history[:4] = torch.linspace(0.5, 1.5, layer.breadth)
            layer.norm.count.fill_(4)
            layer.selector.weight.mul_(30)
    report = export_onnx(model, tmp_path / "sw.onnx")
    assert report.max_abs_error < 1e-4
    proto = onnx.load(str(tmp_path / "sw.onnx"))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    x = torch.rand(3, 3, 19, 26, generator=torch.Generator().manual_seed(5))
    ref = torch_out(model, x)
    used = [m.last_index.unique().numel() for m in model.module.modules() if isinstance(m, SwitchedConv2d)]
    assert min(used) >= 3  # routing really varies from pixel to pixel
    y = OnnxModule({"fp32": tmp_path / "sw.onnx"}, 4)(x)
    assert y.shape == ref.shape and float((y - ref).abs().max()) < 1e-4


def test_fp16_export_keeps_float32_input_and_output(compact, tmp_path):
    path = tmp_path / "half.onnx"
    report = export_onnx(compact, path, precision="fp16")
    proto = onnx.load(str(path))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [f32]
    weights = [t for t in proto.graph.initializer if len(t.dims) == 4]  # conv kernels
    assert weights and all(t.data_type == f16 for t in weights)
    assert report.size_bytes < 0.6 * export_onnx(compact, tmp_path / "full.onnx", check=False).size_bytes
    assert read_metadata(path)["precision"] == "fp16"
    assert 0 < report.max_abs_error < TOLERANCE["fp16"]

    x = torch.rand(2, 3, 19, 27, generator=torch.Generator().manual_seed(3))
    y = OnnxModule({"fp16": path}, 4)(x)  # plain float32 in, float32 out
    assert y.dtype == torch.float32
    assert float((y - torch_out(compact, x)).abs().max()) < 2e-2


# --- through the engine ----------------------------------------------------------------


@pytest.mark.parametrize("tile", [0, 24])
def test_engine_gives_the_same_frames_with_onnx(compact, compact_onnx, tile):
    clip = frames(3, 45, 61)
    ref = SREngine(compact, device="cpu", tile=tile, batch=2).upscale(clip)
    engine = SREngine(compact_onnx, device="cpu", tile=tile, batch=2)
    got = engine.upscale(clip)
    assert engine.describe()["tile"] == tile
    assert got[0].shape == (180, 244, 3)
    assert worst(ref, got) <= 1
    assert compact_onnx.module.last == {"precision": "fp32", "providers": [CPU]}
    assert engine.describe()["providers"] == [CPU]


def test_half_precision_in_the_engine_runs_the_fp16_export(compact, tmp_path):
    """The engine's autocast picks the fp16 file (made on first use), and its
    fp32 path (the NaN retry, or --precision fp32) picks the fp32 one."""
    loaded = load_onnx_model(compact, cache_dir=tmp_path)
    assert [p.name.endswith("-fp32.onnx") for p in tmp_path.iterdir()] == [True]
    clip = frames(2, 33, 41, seed=1)
    ref = SREngine(compact, device="cpu", tile=0, batch=2).upscale(clip)

    half = SREngine(loaded, device="cpu", precision="bf16", tile=0, batch=2).upscale(clip)
    assert loaded.module.last["precision"] == "fp16"
    assert sorted(p.name[-9:] for p in tmp_path.iterdir()) == ["fp16.onnx", "fp32.onnx"]
    assert 0 < worst(ref, half) <= 3

    assert worst(ref, SREngine(loaded, device="cpu", precision="fp32", tile=0, batch=2).upscale(clip)) <= 1
    assert loaded.module.last["precision"] == "fp32"


@pytest.fixture(scope="module")
def capped_allocator():
    """A process-wide onnxruntime CPU arena capped at 8 MB, used only by
    sessions that opt in with session.use_env_allocators."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(8_000_000, 1, -1, -1))
    return {"session.use_env_allocators": "1"}


def test_onnxruntime_out_of_memory_makes_the_engine_back_off(compact, compact_onnx, capped_allocator):
    module = OnnxModule({"fp32": compact_onnx.module.file("fp32")}, 4, session_config=capped_allocator)
    with pytest.raises(RuntimeError, match="failed to allocate memory"):
        module(torch.rand(2, 3, 96, 128))

    clip = frames(2, 96, 128, seed=2)
    notices: list[str] = []
    engine = SREngine(LoadedModel(module, compact.descriptor), device="cpu", tile=0, batch=2, notice=notices.append)
    got = engine.upscale(clip)
    assert engine.stats["oom_backoffs"] >= 2 and engine.batch == 1 and engine.tile > 0
    assert any("out of memory" in n for n in notices)
    assert worst(SREngine(compact, device="cpu", tile=0, batch=2).upscale(clip), got) <= 1


# --- loading and the cache ----------------------------------------------------------------


def test_cache_reuses_exports_and_keeps_models_apart(tmp_path):
    """compact-x2 and -x4 share their weights; each still gets its own file."""
    x4 = load_onnx_model("compact-x4", cache_dir=tmp_path)
    first = x4.module.file("fp32")
    stamp = first.stat().st_mtime_ns
    again = load_onnx_model("compact-x4", cache_dir=tmp_path)
    assert again.module.file("fp32") == first and first.stat().st_mtime_ns == stamp

    x2 = load_onnx_model("compact-x2", cache_dir=tmp_path)
    assert x2.module.file("fp32") != first and x2.descriptor.scale == 2
    x = torch.rand(1, 3, 23, 29, generator=torch.Generator().manual_seed(5))
    y = x2.module(x)
    assert y.shape == (1, 3, 46, 58)
    assert float((y - torch_out(load_model("compact-x2"), x)).abs().max()) < 1e-3


def test_an_exported_file_loads_with_its_descriptor(compact, tmp_path):
    path = tmp_path / "mine.onnx"
    export_onnx(compact, path)
    loaded = load_onnx_model(path)
    assert loaded.descriptor.source == str(path)
    assert {**vars(loaded.descriptor), "source": ""} == {**vars(compact.descriptor), "source": ""}
    clip = frames(1, 20, 28, seed=4)
    assert (
        worst(
            SREngine(compact, device="cpu", tile=0).upscale(clip), SREngine(loaded, device="cpu", tile=0).upscale(clip)
        )
        <= 1
    )


def _foreign_export(module: nn.Module, path, dynamic: bool) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.rand(1, 3, 16, 16),),
            str(path),
            dynamo=False,
            input_names=["pixels"],
            output_names=["big"],
            opset_version=17,
            dynamic_axes={"pixels": {0: "n", 2: "h", 3: "w"}} if dynamic else None,
        )


def test_a_foreign_onnx_file_gets_its_scale_from_a_test_run(tmp_path):
    path = tmp_path / "someone-elses.onnx"
    _foreign_export(Bicubic(3).eval(), path, dynamic=True)
    loaded = load_onnx_model(path)
    assert (loaded.descriptor.scale, loaded.descriptor.arch, loaded.descriptor.context) == (3, "onnx", UNKNOWN_CONTEXT)
    clip = frames(2, 25, 31, seed=5)
    bicubic = LoadedModel(Bicubic(3).eval(), loaded.descriptor)
    assert (
        worst(
            SREngine(bicubic, device="cpu", tile=0, batch=2).upscale(clip),
            SREngine(loaded, device="cpu", tile=0, batch=2).upscale(clip),
        )
        <= 1
    )

    fixed = tmp_path / "fixed.onnx"
    _foreign_export(Bicubic(3).eval(), fixed, dynamic=False)
    with pytest.raises(VhsupError, match="fixed size") as err:
        load_onnx_model(fixed)
    assert str(fixed) in str(err.value) and "\n" not in str(err.value)


# --- errors a user can cause ----------------------------------------------------------------


class _Svd(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x)[0]


class _ThroughNumpy(nn.Module):
    """Leaves the graph: the tracer records the result as a constant."""

    def forward(self, x):
        return torch.from_numpy(x.numpy() * 2)


def test_export_errors_are_one_line_and_leave_old_files_alone(compact, tmp_path, monkeypatch):
    missing = tmp_path / "no" / "such" / "dir" / "m.onnx"
    with pytest.raises(VhsupError, match="cannot write") as err:
        export_onnx(compact, missing)
    assert str(missing) in str(err.value)

    existing = tmp_path / "keep.onnx"
    existing.write_bytes(b"previous export")
    for module, words in [(_Svd(), "cannot be exported"), (_ThroughNumpy(), "frozen")]:
        model = LoadedModel(module, ModelDescriptor("odd", "custom", 1))
        with pytest.raises(VhsupError, match=words) as err:
            export_onnx(model, existing)
        assert str(existing) in str(err.value) and "\n" not in str(err.value)
        assert existing.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]  # no temp files left

    no_half = LoadedModel(compact.module, ModelDescriptor("no-half", "compact", 4, supports_half=False))
    with pytest.raises(VhsupError, match="fp16"):
        export_onnx(no_half, tmp_path / "h.onnx", precision="fp16")

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    with pytest.raises(VhsupError, match=r"pip install 'vhsup\[onnx\]'"):
        export_onnx(compact, tmp_path / "x.onnx")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(VhsupError, match="not found"):
        load_onnx_model(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(VhsupError) as err:
        load_onnx_model(junk)
    assert str(junk) in str(err.value)


# --- providers and TensorRT profiles (pure logic; the GPU runs are below) ---------------


def test_provider_chain_prefers_tensorrt_then_cuda_and_keeps_cpu_tensors_on_cpu(tmp_path):
    everything = [TRT, CUDA, CPU]
    assert provider_chain(everything, "cpu") == [(CPU, {})]
    assert provider_chain(["AzureExecutionProvider", CPU], "cuda:0") == [(CPU, {})]

    profile = Profile.for_shape((4, 3, 96, 120))
    chain = provider_chain(
        everything,
        "cuda:1",
        fp16=True,
        profile=profile,
        input_name="input",
        trt_engine_dir=tmp_path / "e",
        trt_timing_dir=tmp_path,
        stream=1234,
    )
    assert [name for name, _ in chain] == [TRT, CUDA, CPU]
    trt, cuda = chain[0][1], chain[1][1]
    assert trt["device_id"] == cuda["device_id"] == "1"
    assert trt["user_compute_stream"] == cuda["user_compute_stream"] == "1234"
    assert trt["trt_fp16_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "e") and trt["trt_timing_cache_path"] == str(tmp_path)
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_opt_shapes"], trt["trt_profile_max_shapes"]) == (
        "input:1x3x96x120",
        "input:4x3x96x120",
        "input:4x3x96x120",
    )
    assert [n for n, _ in provider_chain([CUDA, CPU], "cuda")] == [CUDA, CPU]
    assert provider_chain(everything, "cuda", fp16=False)[0][1]["trt_fp16_enable"] == "False"


def test_provider_options_give_a_stream_only_when_there_is_one():
    """TensorRT's option parser refuses ``has_user_compute_stream`` (onnxruntime
    then prints an "EP Error" banner and drops TensorRT for CUDA), and the CUDA
    provider derives it from ``user_compute_stream``: only that is passed, and
    only for a real stream (torch's default stream is handle 0, "none")."""
    for stream in (1234, 0, None):
        chain = provider_chain([TRT, CUDA, CPU], "cuda:0", stream=stream, profile=Profile.for_shape((2, 3, 8, 8)))
        for name, opts in chain[:2]:
            assert "has_user_compute_stream" not in opts, name
            assert opts.get("user_compute_stream") == (str(stream) if stream else None), (name, stream)


def test_torch_default_stream_is_waited_for_before_onnxruntime_reads():
    # torch's default stream is handle 0: a session given no stream runs on
    # its own one, which does not wait for torch's upload, cast and cat.
    assert needs_sync(0, 0) and needs_sync(0, None)
    assert needs_sync(77, None) and needs_sync(77, 0) and needs_sync(77, 78) and needs_sync(0, 77)
    assert not needs_sync(77, 77)  # the session runs on torch's very stream


def test_a_provider_that_does_not_load_is_one_notice_and_stdout_stays_clean(compact_onnx, capfd):
    """onnxruntime's own fallback (the path TensorRT's refusal of an option
    took) prints a banner to stdout, which would break ``--json``, and gives
    no sign in the result: open_session catches the banner, compares the
    providers obtained with those asked for and says what runs instead."""
    path = compact_onnx.module.file("fp32")
    so = ort.SessionOptions()
    so.log_severity_level = 4
    notes: list[str] = []
    capfd.readouterr()
    sess, used = open_session(path, so, [("NoSuchExecutionProvider", {}), (CPU, {})], name="m", notice=notes.append)
    assert used == sess.get_providers() == [CPU]
    assert capfd.readouterr().out == ""
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith("onnxruntime could not use NoSuchExecutionProvider for m (Unknown Provider Type")
    assert notes[0].endswith("; running on CPUExecutionProvider")
    # What was asked for and got: no notice.
    open_session(path, so, [(CPU, {})], notice=notes.append)
    assert len(notes) == 1


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="needs an onnxruntime without CUDA")
def test_gpu_providers_that_do_not_load_fall_back_with_a_notice_naming_the_cpu(compact_onnx, capfd):
    """A CUDA tensor's session asked of an onnxruntime whose GPU providers do
    not load (here: a CPU-only build, as where CUDA's libraries are missing)
    runs on the CPU, with one notice, and records what ran for describe();
    TensorRT is not asked again."""
    notes: list[str] = []
    module = OnnxModule({"fp32": compact_onnx.module.file("fp32")}, 4, name="m", notice=notes.append)
    profile = Profile.for_shape((2, 3, 16, 16))
    capfd.readouterr()
    runner = module._open("fp32", False, torch.device("cuda"), [TRT, CUDA, CPU], profile, 0)
    assert capfd.readouterr().out == ""
    assert runner.providers == [CPU] and not runner.bound and runner.profile is None
    assert module._trt_failed
    fallback = [n for n in notes if n.startswith("onnxruntime could not use")]
    assert fallback == [
        "onnxruntime could not use TensorrtExecutionProvider, CUDAExecutionProvider for m; running on CPUExecutionProvider"
    ]
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert float((module._run_host(runner, x) - torch_out(load_model("compact-x4"), x)).abs().max()) < 1e-3
    module._open("fp32", False, torch.device("cuda"), [TRT, CUDA, CPU], profile, 0)  # another session
    assert [n for n in notes if n.startswith("onnxruntime could not use")] == fallback  # not said twice


def test_tensorrt_profile_covers_short_batches_and_widens_after_backoff(tmp_path, monkeypatch):
    p = Profile.for_shape((8, 3, 64, 64))
    assert p.contains((1, 3, 64, 64)) and p.contains((5, 3, 64, 64))  # last batch of a clip
    assert not p.contains((8, 3, 32, 64)) and not p.contains((9, 3, 64, 64))
    wider = p.widened((1, 3, 32, 40))  # an out-of-memory backoff halved the tile
    assert wider.min == (1, 3, 32, 40) and wider.max == (8, 3, 64, 64) and wider.opt == (1, 3, 32, 40)
    assert wider.contains((8, 3, 64, 64)) and wider.contains((1, 3, 32, 40))

    monkeypatch.setenv("VHSUP_CACHE_DIR", str(tmp_path))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    e16, timing = trt_dirs(model, p, True)
    e32, _ = trt_dirs(model, p, False)
    ew, _ = trt_dirs(model, wider, True)
    assert timing == tmp_path / "trt" and len({e16, e32, ew}) == 3
    assert all(timing in e.parents for e in (e16, e32, ew))


# --- GPU ----------------------------------------------------------------------------------

gpu_ort = pytest.mark.skipif(
    not torch.cuda.is_available() or CUDA not in ort.get_available_providers(), reason="needs CUDA and onnxruntime-gpu"
)


def _tensorrt_loads() -> bool:
    import ctypes

    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return False


@gpu_ort
def test_cuda_io_binding_matches_cpu_without_leaving_the_gpu(compact, compact_onnx):
    # TensorRT's fp32 may use TF32 matmuls, hence the looser bounds.
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(9))
    ref = compact_onnx.module(x)
    notes: list[str] = []
    compact_onnx.module.notice = notes.append
    y = compact_onnx.module(x.cuda().contiguous(memory_format=torch.channels_last))
    # Every provider this onnxruntime lists for the GPU is the one that runs:
    # TensorRT where its libraries load (no silent fallback to CUDA), then CUDA.
    asked = [p for p in (TRT, CUDA) if p in ort.get_available_providers()] + [CPU]
    got = compact_onnx.module.last["providers"]
    assert y.device.type == "cuda"
    if TRT in asked and not _tensorrt_loads():  # onnxruntime-gpu lists it regardless
        assert got == asked[1:] and any("could not use TensorrtExecutionProvider" in n for n in notes), notes
    else:
        assert got == asked and not [n for n in notes if "could not use" in n], notes
    assert float((y.cpu() - ref).abs().max()) < 1e-2
    clip = frames(2, 45, 61)
    assert (
        worst(
            SREngine(compact, device="cpu", tile=0).upscale(clip),
            SREngine(compact_onnx, device="cuda", precision="fp32", tile=24, batch=4).upscale(clip),
        )
        <= 2
    )


@gpu_ort
def test_onnxruntime_waits_for_work_queued_on_torch_default_stream(compact_onnx):
    """torch's default stream (handle 0) is not given to onnxruntime, whose own
    stream would read the input before torch has written it: a copy queued
    behind a long sleep on torch's stream must still be what the model sees."""
    module = compact_onnx.module
    x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    ref = module(x)
    src = x.cuda()
    module(src)  # the session exists (and TensorRT has built) before the race
    assert torch.cuda.current_stream().cuda_stream == 0
    torch.cuda.synchronize()
    for _ in range(3):
        dst = torch.zeros_like(src)
        torch.cuda._sleep(200_000_000)  # keeps torch's stream busy for a while
        dst.copy_(src)  # queued behind the sleep
        y = module(dst)
        assert float((y.cpu() - ref).abs().max()) < 1e-2
