"""Run an exported model with onnxruntime, behind a torch-module face.

:class:`OnnxModule` is an ``nn.Module`` whose forward runs an onnxruntime
session, so :class:`vhsup.engine.SREngine` uses it exactly as it uses a
torch network (no engine changes): it moves nothing on ``.to(device)`` (it
has no parameters) and instead looks at the device of each input tensor.

* **Providers.** A CPU tensor runs on the CPU provider with numpy arrays. A
  CUDA tensor runs on TensorRT, then CUDA, then CPU, whichever this
  onnxruntime build has; on a GPU provider the tensor's device memory is
  bound directly (IO binding), so the frame never visits the host. A CUDA
  tensor with a CPU-only onnxruntime is copied over and back, with one
  notice. The providers a session actually got are compared with those
  asked for: a provider that did not load (TensorRT or CUDA libraries
  missing, an option it refuses) is one notice naming what runs instead,
  and onnxruntime's own fallback banner is kept off stdout.
* **Streams.** A session runs on torch's current CUDA stream when that is
  not the default one (``user_compute_stream``); torch's default stream has
  handle 0, which onnxruntime reads as "none given" and replaces with a
  stream of its own, so then torch's queued work (the upload, casts, the
  batch's concatenation) is waited for before the session reads its input
  (:func:`needs_sync`).
* **Precision follows the engine.** The engine runs the module inside
  ``torch.autocast`` for fp16/bf16 and plainly for fp32 (including its NaN
  retry). The module reads that: under autocast it runs the fp16 model
  (TensorRT: the fp32 model with its fp16 builder flag), otherwise the fp32
  model. So ``--precision``, the NaN guard and its switch to fp32 all work
  unchanged. bf16 runs as fp16 (onnxruntime has no bf16 convolutions on
  CUDA); a single ``.onnx`` file runs at its own precision whatever is asked.
* **TensorRT shapes.** TensorRT compiles an engine per optimisation
  profile. The first batch seen fixes the profile (batch 1..N at that tile
  size); a later shape outside it (after an out-of-memory backoff) widens the
  profile and builds once more. Engines and the timing cache are kept under
  the user cache dir (``$VHSUP_CACHE_DIR/trt`` when set), so each is built
  once per GPU, model, precision and profile.
* **Out of memory.** onnxruntime reports allocation failures as plain
  ``Fail`` errors; they are re-raised as :class:`vhsup.errors.OutOfMemory`,
  which the engine's backoff catches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vhsup.errors import OutOfMemory, VhsupError
from vhsup.registry import LoadedModel, ModelDescriptor

__all__ = [
    "CACHE_ENV",
    "OnnxModule",
    "Profile",
    "cache_root",
    "load_onnx_model",
    "needs_sync",
    "onnxruntime_available",
    "open_session",
    "provider_chain",
    "trt_dirs",
]

CACHE_ENV = "VHSUP_CACHE_DIR"
TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Tile context for an ONNX file with no vhsup metadata: the value the
#: registry uses for user RRDBNet files, the deepest family it knows.
UNKNOWN_CONTEXT = 72
#: How onnxruntime words an allocation failure (BFC arena, CUDA, the C++
#: runtime). Matched in lower case.
_ORT_OOM_WORDS = (
    "failed to allocate memory",
    "out of memory",
    "available memory of",
    "bfcarena",
    "bfc_arena",
    "cudaerrormemoryallocation",
    "cuda_error_out_of_memory",
    "bad_alloc",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
)
_NP_DTYPES: dict[str, type[np.floating[Any]]] = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_TORCH_DTYPES: dict[type[np.floating[Any]], torch.dtype] = {np.float32: torch.float32, np.float16: torch.float16}


def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported (the CLI can say so up front)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise VhsupError(
            "the onnx backend needs onnxruntime: pip install 'vhsup[onnx]' (or 'vhsup[onnx-gpu]' on NVIDIA machines)"
        ) from None
    return onnxruntime


def cache_root() -> Path:
    """$VHSUP_CACHE_DIR, else the user cache dir of vhsup. Exports go in
    ``onnx/`` and TensorRT engines in ``trt/`` beneath it."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vhsup"))


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:240] if text else type(exc).__name__


def is_ort_oom(exc: BaseException) -> bool:
    """Whether an onnxruntime error is an allocation failure."""
    text = str(exc).lower()
    return any(w in text for w in _ORT_OOM_WORDS)


# --- TensorRT profiles and provider options (pure) ---------------------------


Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimisation profile: the input shapes one engine accepts."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def for_shape(cls, shape: Sequence[int]) -> Profile:
        """Batches of 1..N at one tile size: what the engine sends while its
        plan holds (the last batch of a clip may be short)."""
        s = tuple(int(v) for v in shape)
        return cls((1, *s[1:]), s, s)  # type: ignore[arg-type]

    def contains(self, shape: Sequence[int]) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, shape, self.max))

    def widened(self, shape: Sequence[int]) -> Profile:
        """The smallest profile holding this one and ``shape``, tuned for ``shape``."""
        s = tuple(int(v) for v in shape)
        lo = tuple(min(a, b) for a, b in zip(self.min, s))
        hi = tuple(max(a, b) for a, b in zip(self.max, s))
        return Profile(lo, s, hi)  # type: ignore[arg-type]

    def options(self, input_name: str) -> dict[str, str]:
        def fmt(s: Shape) -> str:
            return f"{input_name}:{'x'.join(map(str, s))}"

        return {
            "trt_profile_min_shapes": fmt(self.min),
            "trt_profile_opt_shapes": fmt(self.opt),
            "trt_profile_max_shapes": fmt(self.max),
        }

    @property
    def tag(self) -> str:
        """A folder name: engines built for different profiles never mix."""
        return "_".join(f"{a}-{b}" for a, b in zip(self.min, self.max)) + f"_opt{'x'.join(map(str, self.opt))}"


def provider_chain(
    available: Sequence[str],
    device: str | torch.device,
    *,
    fp16: bool = False,
    profile: Profile | None = None,
    input_name: str = "input",
    trt_engine_dir: Path | None = None,
    trt_timing_dir: Path | None = None,
    stream: int | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """Execution providers and their options for a tensor on ``device``.

    TensorRT, then CUDA, then CPU, keeping only what ``available`` (from
    ``onnxruntime.get_available_providers()``) lists; CPU tensors get CPU
    only. ``stream`` is torch's current CUDA stream handle: a non-zero one is
    passed as ``user_compute_stream`` (which both GPU providers take, and
    which alone tells them a stream is given), so onnxruntime works in order
    with torch; 0 (torch's default stream) or None passes nothing, and the
    session makes its own stream (see :func:`needs_sync`). No
    ``has_user_compute_stream``: the CUDA provider derives it, and the
    TensorRT provider's option parser refuses it, which made onnxruntime
    drop TensorRT for every session. ``fp16`` asks TensorRT to build in
    fp16 (the CUDA provider runs whatever precision the file has).
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return [(CPU, {})]
    index = str(dev.index or 0)
    shared: dict[str, str] = {"device_id": index}
    if stream:
        shared["user_compute_stream"] = str(int(stream))
    chain: list[tuple[str, dict[str, str]]] = []
    if TRT in available:
        opts = dict(shared) | {
            "trt_fp16_enable": "True" if fp16 else "False",
            "trt_engine_cache_enable": "True",
            "trt_timing_cache_enable": "True",
        }
        if trt_engine_dir is not None:
            opts["trt_engine_cache_path"] = str(trt_engine_dir)
        if trt_timing_dir is not None:
            opts["trt_timing_cache_path"] = str(trt_timing_dir)
        if profile is not None:
            opts |= profile.options(input_name)
        chain.append((TRT, opts))
    if CUDA in available:
        chain.append(
            (
                CUDA,
                dict(shared)
                | {
                    # Tiles shrink after an out-of-memory error; an arena that grows
                    # by exactly what is asked wastes less than one that doubles.
                    "arena_extend_strategy": "kSameAsRequested",
                    # Shapes are fixed for a whole video: a one-off search pays off.
                    "cudnn_conv_algo_search": "EXHAUSTIVE",
                },
            )
        )
    chain.append((CPU, {}))
    return chain


def needs_sync(torch_stream: int, session_stream: int | None) -> bool:
    """Whether torch's current stream must be synchronised before a session
    reads device memory torch wrote.

    ``torch_stream`` is the handle of torch's current stream,
    ``session_stream`` the one the session was given (None or 0: none, so
    onnxruntime runs on a stream of its own). Only a session on torch's very
    stream (a non-zero handle, passed as ``user_compute_stream``) sees
    torch's work in order; any other, including both handles being 0
    (torch's default stream, which onnxruntime does not take as a user
    stream), needs torch's queued work finished first.
    """
    return not session_stream or int(torch_stream) != int(session_stream)


def open_session(
    path: Path,
    options: Any,
    chain: Sequence[tuple[str, Mapping[str, str]]],
    *,
    name: str = "onnx",
    notice: Callable[[str], None] | None = None,
) -> tuple[Any, list[str]]:
    """An onnxruntime session for ``path`` on the providers of ``chain``, and
    the providers it actually got (best first).

    When a provider fails to load (TensorRT refusing an option, a GPU
    provider whose libraries are missing, an unknown name), onnxruntime
    prints a banner to stdout and retries on a fixed fallback list without
    any provider options (so on GPU 0, and on no given stream). stdout must
    stay clean for ``--json``: the banner is caught, and the session is made
    again on the providers that did load, with their options. A provider
    that is not available at all is dropped by onnxruntime without a word.
    Either way, when the providers obtained are not those asked for,
    ``notice`` gets one line naming what runs instead (and why, where
    onnxruntime said); the caller records the list for ``describe()``.
    """
    ort = _ort()
    asked = [n for n, _ in chain]

    def make(links: Sequence[tuple[str, Mapping[str, str]]]) -> tuple[Any, str]:
        banner = io.StringIO()
        with contextlib.redirect_stdout(banner), warnings.catch_warnings():
            # "Specified provider ... is not in available provider names":
            # said once below, in vhsup's words.
            warnings.simplefilter("ignore", UserWarning)
            sess = ort.InferenceSession(
                str(path), options, providers=[n for n, _ in links], provider_options=[dict(o) for _, o in links]
            )
        return sess, banner.getvalue()

    sess, banner = make(chain)
    used = list(sess.get_providers())
    why = ""
    if "EP Error" in banner:
        line = next((ln for ln in banner.splitlines() if ln.startswith("EP Error")), "")
        why = " ".join(line.removeprefix("EP Error").strip(" :").split(" when using ")[0].split())[:200]
        kept = [(n, o) for n, o in chain if n in used]
        if kept and [n for n, _ in kept] != [n for n, _ in chain]:
            sess, _ = make(kept)
            used = list(sess.get_providers())
    if used != asked and notice is not None:
        missing = [p for p in asked if p not in used]
        reason = f" ({why})" if why else ""
        notice(
            f"onnxruntime could not use {', '.join(missing) or 'the providers asked for'} for {name}{reason}; "
            f"running on {', '.join(used)}"
        )
    return sess, used


# --- the module ------------------------------------------------------------------


@dataclass
class _Runner:
    session: object
    device: torch.device
    in_name: str
    out_name: str
    in_dtype: type[np.floating[Any]]
    out_dtype: type[np.floating[Any]]
    bound: bool  # device memory bound directly (a GPU provider)
    stream: int | None
    profile: Profile | None
    precision: str
    providers: list[str]


class OnnxModule(nn.Module):
    """An onnxruntime model as a torch module for the engine.

    Args:
        files: precision ('fp32'/'fp16') -> an ONNX file, or a zero-argument
            function that writes one and returns its path (called the first
            time that precision is needed).
        scale: output size / input size.
        name: for messages.
        out_channels: channels of the output (3).
        threads: CPU threads per session; torch's thread count when None.
        session_config: extra ``SessionOptions`` config entries.
        notice: called with one-line messages for the user (slow one-off
            TensorRT builds, a host round trip).
    """

    def __init__(
        self,
        files: Mapping[str, Path | str | Callable[[], Path]],
        scale: int,
        *,
        name: str = "onnx",
        out_channels: int = 3,
        threads: int | None = None,
        session_config: Mapping[str, str] | None = None,
        notice: Callable[[str], None] | None = None,
    ):
        super().__init__()
        if not files:
            raise ValueError("OnnxModule needs at least one file")
        self._files: dict[str, Path | Callable[[], Path]] = {
            p: (Path(f) if isinstance(f, (str, os.PathLike)) else f) for p, f in files.items()
        }
        self.scale = int(scale)
        self.name = name
        self.out_channels = int(out_channels)
        self.threads = threads
        self.session_config = dict(session_config or {})
        self.notice = notice or (lambda _msg: None)
        self._runners: dict[tuple, _Runner] = {}
        self._noticed: set[str] = set()
        # onnxruntime-gpu lists TensorRT even where its libraries are
        # missing; after one session falls back, TensorRT is not asked again.
        self._trt_failed = False
        #: What ran last: precision and the providers the session got (for
        #: --json / describe; fewer than asked for after a fallback).
        self.last: dict[str, object] = {}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, scale={self.scale}, precisions={sorted(self._files)}"

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(sorted(self._files))

    # -- choosing -----------------------------------------------------------

    def file(self, precision: str) -> Path:
        """The file for ``precision``, exporting it first if it is lazy."""
        f = self._files[precision]
        if not isinstance(f, Path):
            f = self._files[precision] = Path(f())
        return f

    @staticmethod
    def _autocast(device_type: str) -> bool:
        try:
            return bool(torch.is_autocast_enabled(device_type))
        except TypeError:  # torch < 2.4 had per-device functions
            if device_type == "cpu":
                return bool(torch.is_autocast_cpu_enabled())
            return bool(torch.is_autocast_enabled())

    def _choose(self, device: torch.device, available: Sequence[str]) -> tuple[str, bool]:
        """(file precision, TensorRT fp16 flag) for this call."""
        wanted = "fp16" if self._autocast(device.type) else "fp32"
        if device.type == "cuda" and TRT in available:
            # TensorRT makes its own fp16 engine from the fp32 graph, which
            # keeps its fp32 fallback layers exact.
            precision = "fp32" if "fp32" in self._files else "fp16"
            return precision, wanted == "fp16" or precision == "fp16"
        precision = wanted if wanted in self._files else next(iter(sorted(self._files)))
        return precision, False

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._noticed:
            self._noticed.add(key)
            self.notice(message)

    def _runner(self, x: torch.Tensor) -> _Runner:
        ort = _ort()
        available = [p for p in ort.get_available_providers() if not (p == TRT and self._trt_failed)]
        device = x.device
        precision, trt_fp16 = self._choose(device, available)
        gpu = device.type == "cuda" and (TRT in available or CUDA in available)
        if device.type == "cuda" and not gpu:
            self._say_once(
                "host",
                "this onnxruntime has no CUDA or TensorRT provider; running the model "
                "on the CPU (pip install onnxruntime-gpu)",
            )
        # torch's current stream: its handle (0 for the default stream) keys
        # the session, which runs on it when non-zero (see needs_sync).
        stream = torch.cuda.current_stream(device).cuda_stream if gpu else None
        trt = gpu and TRT in available
        key = (device.type if gpu else "cpu", device.index if gpu else None, precision, trt_fp16, stream)
        runner = self._runners.get(key)
        shape = tuple(x.shape)
        if runner is not None and (runner.profile is None or runner.profile.contains(shape)):
            return runner
        profile = None
        if trt:
            profile = Profile.for_shape(shape) if runner is None else runner.profile.widened(shape)  # type: ignore[union-attr]
            # Drop the old engine before building a wider one: both at once
            # may not fit, and this is typically after an out-of-memory error.
            self._runners.pop(key, None)
        runner = self._open(precision, trt_fp16, device if gpu else torch.device("cpu"), available, profile, stream)
        self._runners[key] = runner
        return runner

    def _open(
        self,
        precision: str,
        trt_fp16: bool,
        device: torch.device,
        available: Sequence[str],
        profile: Profile | None,
        stream: int | None,
    ) -> _Runner:
        ort = _ort()
        path = self.file(precision)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = int(self.threads or max(1, torch.get_num_threads()))
        so.inter_op_num_threads = 1
        # Errors come back as exceptions; the log would repeat them in red
        # (and an out-of-memory error is handled by the engine's backoff).
        so.log_severity_level = 4
        for k, v in self.session_config.items():
            so.add_session_config_entry(k, v)
        engine_dir = timing_dir = None
        if profile is not None:
            engine_dir, timing_dir = trt_dirs(path, profile, trt_fp16)
            try:
                engine_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise VhsupError(f"cannot create the TensorRT cache: {exc.strerror or exc}", engine_dir) from exc
            self.notice(
                f"preparing TensorRT for {self.name} at input {'x'.join(map(str, profile.max))} "
                f"({'fp16' if trt_fp16 else 'fp32'}); the first build takes minutes, then it is cached"
            )
        # Input name first from the file, so foreign files work too.
        chain = provider_chain(
            available,
            device,
            fp16=trt_fp16,
            profile=profile,
            input_name=_input_name(path),
            trt_engine_dir=engine_dir,
            trt_timing_dir=timing_dir,
            stream=stream,
        )
        try:
            # Said once: the fp16 and fp32 sessions would repeat it word for word.
            sess, used = open_session(path, so, chain, name=self.name, notice=lambda m: self._say_once(m, m))
        except Exception as exc:  # onnxruntime raises its own kinds
            if is_ort_oom(exc):
                raise RuntimeError(
                    f"onnxruntime failed to allocate memory (out of memory) loading {self.name}: {_first_line(exc)}"
                ) from exc
            raise VhsupError(f"onnxruntime cannot load this model: {_first_line(exc)}", path) from exc
        inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
        in_dtype, out_dtype = _NP_DTYPES.get(inp.type), _NP_DTYPES.get(out.type)
        if in_dtype is None or out_dtype is None:
            raise VhsupError(f"model input {inp.type} / output {out.type}: vhsup needs float or float16 tensors", path)
        bound = device.type == "cuda" and used[0] in (TRT, CUDA)
        if used[0] != TRT:
            if profile is not None:
                # Not asked again (each try would cost a failed build);
                # open_session has said why and what runs instead.
                self._trt_failed = True
            # No profile to outgrow, so no rebuilds on new shapes.
            profile = None
        return _Runner(
            sess,
            device,
            inp.name,
            out.name,
            in_dtype,
            out_dtype,
            bound,
            stream,
            profile,
            "fp16" if (trt_fp16 and used[0] == TRT) else precision,
            used,
        )

    # -- running --------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float (N,C,H,W) on CPU or CUDA -> float32 (N,3,H*s,W*s) on the same device."""
        if x.dim() != 4:
            raise ValueError(f"OnnxModule expects (N,C,H,W), got shape {tuple(x.shape)}")
        runner = self._runner(x)
        self.last = {"precision": runner.precision, "providers": runner.providers}
        try:
            if runner.bound:
                return self._run_bound(runner, x)
            return self._run_host(runner, x)
        except Exception as exc:  # only allocation failures are translated
            if is_ort_oom(exc):
                # onnxruntime's arena keeps what it grew; dropping the session
                # gives it back before the engine retries with smaller input.
                self._runners = {k: v for k, v in self._runners.items() if v is not runner}
                del runner
                raise OutOfMemory(f"onnxruntime failed to allocate memory: {_first_line(exc)}") from exc
            raise

    def _run_host(self, r: _Runner, x: torch.Tensor) -> torch.Tensor:
        xs = x.detach().to("cpu", _TORCH_DTYPES[r.in_dtype]).contiguous().numpy()
        y = r.session.run([r.out_name], {r.in_name: xs})[0]  # type: ignore[attr-defined]
        return torch.from_numpy(y).to(x.device, torch.float32)

    def _run_bound(self, r: _Runner, x: torch.Tensor) -> torch.Tensor:
        dev = r.device
        # NCHW and dense: the engine hands over channels-last batches.
        xs = x.detach().to(dev, _TORCH_DTYPES[r.in_dtype]).contiguous()
        n, _, h, w = xs.shape
        out_shape = (n, self.out_channels, h * self.scale, w * self.scale)
        y = torch.empty(out_shape, dtype=_TORCH_DTYPES[r.out_dtype], device=dev)
        binding = r.session.io_binding()  # type: ignore[attr-defined]
        idx = dev.index or 0
        binding.bind_input(r.in_name, "cuda", idx, r.in_dtype, tuple(xs.shape), xs.data_ptr())
        binding.bind_output(r.out_name, "cuda", idx, r.out_dtype, out_shape, y.data_ptr())
        current = torch.cuda.current_stream(dev)
        if needs_sync(current.cuda_stream, r.stream):
            # onnxruntime runs on a stream of its own (or another one): finish
            # torch's work (the input's upload, cast and concatenation, and
            # whatever last used the output's memory) before it starts.
            current.synchronize()
        r.session.run_with_iobinding(binding)  # type: ignore[attr-defined]
        return y.float()


def _input_name(path: Path) -> str:
    """The first graph input's name, read without loading the weights."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return proto.graph.input[0].name
    except Exception:  # noqa: BLE001 - fall back to vhsup's own name
        return "input"


def trt_dirs(model_file: Path, profile: Profile, fp16: bool) -> tuple[Path, Path]:
    """(engine cache folder, timing cache folder) for one TensorRT build.

    Engines are specific to the model file, profile and precision, so each
    gets its own folder; the timing cache holds per-layer kernel timings that
    any build on the same GPU can reuse, so it is shared.
    """
    timing = cache_root() / "trt"
    return timing / _file_tag(model_file) / f"{profile.tag}-{'fp16' if fp16 else 'fp32'}", timing


def _file_tag(path: Path) -> str:
    """A folder name for a model file's TensorRT engines: the stem plus a
    hash of where it is and which version it is."""
    try:
        st = path.stat()
        ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        ident = str(path)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60]
    return f"{stem}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


# --- loading ---------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "model"


def cached_export(model: LoadedModel, precision: str, folder: Path | None = None, opset: int | None = None) -> Path:
    """The cached ONNX export of ``model`` at ``precision``, made if missing.

    Keyed by :func:`vhsup.export.cache_key` (weights, structure, descriptor,
    precision, opset, torch version), so a changed model is never served an
    old file; writes are atomic, so two processes at once are harmless.
    """
    from vhsup.export import cache_key, export_onnx

    folder = Path(folder) if folder is not None else cache_root() / "onnx"
    key = cache_key(model, precision, opset)
    path = folder / f"{_slug(model.descriptor.name)}-{key[:16]}-{precision}.onnx"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VhsupError(f"cannot create the ONNX cache: {exc.strerror or exc}", folder) from exc
    export_onnx(model, path, precision=precision, opset=opset, check=True)
    return path


def _probe_scale(path: Path) -> int:
    """Scale of an ONNX file with no vhsup metadata, from a 16x16 run."""
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        sess = ort.InferenceSession(str(path), so, providers=[CPU])
    except Exception as exc:
        raise VhsupError(f"onnxruntime cannot load this model: {_first_line(exc)}", path) from exc
    inp = sess.get_inputs()[0]
    dims = list(inp.shape)
    if len(dims) != 4 or dims[1] not in (3, "3") and not isinstance(dims[1], str):
        raise VhsupError(f"model input has shape {dims}; vhsup needs (N,3,H,W) RGB", path)
    if isinstance(dims[2], int) or isinstance(dims[3], int):
        raise VhsupError(
            f"model input has a fixed size {dims}; vhsup needs dynamic height and width "
            "(export it with 'vhsup models export')",
            path,
        )
    dtype = _NP_DTYPES.get(inp.type)
    if dtype is None:
        raise VhsupError(f"model input is {inp.type}; vhsup needs float or float16", path)
    side = 16  # a multiple of 4, so x2/x1 RRDBNets (pixel-unshuffle) accept it
    try:
        y = sess.run(None, {inp.name: np.full((1, 3, side, side), 0.5, dtype)})[0]
    except Exception as exc:
        raise VhsupError(f"model fails on a 16x16 test input: {_first_line(exc)}", path) from exc
    if y.ndim != 4 or y.shape[1] != 3 or y.shape[2] != y.shape[3] or y.shape[2] % side:
        raise VhsupError(
            f"model turns a 16x16 RGB input into {tuple(y.shape)}; vhsup needs RGB out at a whole-number scale", path
        )
    return y.shape[2] // side


def _load_file(path: Path, *, threads: int | None, notice) -> LoadedModel:
    from vhsup.export import descriptor_from_metadata, read_metadata

    if not path.is_file():
        raise VhsupError("ONNX model not found", path)
    meta = read_metadata(path)
    desc = descriptor_from_metadata(meta)
    if desc is None:
        desc = ModelDescriptor(
            name=path.stem,
            arch="onnx",
            scale=_probe_scale(path),
            context=UNKNOWN_CONTEXT,
            licence="unknown (user file)",
            source=str(path),
        )
    else:
        desc = dataclasses.replace(desc, source=str(path))
    precision = meta.get("precision", "fp32")
    module = OnnxModule(
        {precision: path}, desc.scale, name=desc.name, out_channels=desc.out_channels, threads=threads, notice=notice
    )
    return LoadedModel(module, desc, backend="onnx")


def load_onnx_model(
    spec: LoadedModel | str | os.PathLike[str],
    *,
    precision: str = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
    opset: int | None = None,
    threads: int | None = None,
    notice: Callable[[str], None] | None = None,
) -> LoadedModel:
    """A model run by onnxruntime, ready for :class:`vhsup.engine.SREngine`.

    Args:
        spec: a LoadedModel from the registry, a model name or weights path
            (loaded with :func:`vhsup.registry.load_model`), or a ``.onnx``
            file (descriptor from its vhsup metadata; else the scale is
            found by a test run and the tile context is a safe
            :data:`UNKNOWN_CONTEXT`).
        precision: the precision the engine will mostly run at ('fp32',
            'fp16', 'bf16' or 'auto'); that export is made now (so errors show
            up before decoding starts), the other one only if the engine asks
            for it (an fp16 run's NaN retry needs fp32). bf16 means fp16
            here; 'auto' means fp32.
        cache_dir: where exports are cached; ``cache_root()/onnx`` when None.
        opset: ONNX opset for new exports.
        threads: CPU threads per session; torch's when None.
        notice: one-line messages for the user.

    The descriptor is the torch model's (same scale, context, size
    multiple), so tiling and batching plans are unchanged.
    """
    if precision not in ("fp32", "fp16", "bf16", "auto"):
        raise VhsupError(f"unknown precision {precision!r}; use one of fp32, fp16, bf16, auto")
    _ort()
    if not isinstance(spec, LoadedModel):
        text = os.fspath(spec)
        if text.lower().endswith(".onnx"):
            return _load_file(Path(text).expanduser(), threads=threads, notice=notice)
        from vhsup.registry import load_model

        spec = load_model(text)
    desc = spec.descriptor
    eager = "fp16" if precision in ("fp16", "bf16") and desc.supports_half else "fp32"
    folder = Path(cache_dir) if cache_dir is not None else None
    files: dict[str, Path | Callable[[], Path]] = {}
    for p in ("fp32", "fp16"):
        if p == "fp16" and not desc.supports_half:
            continue
        files[p] = functools.partial(cached_export, spec, p, folder, opset)
    files[eager] = cached_export(spec, eager, folder, opset)
    module = OnnxModule(
        files, desc.scale, name=desc.name, out_channels=desc.out_channels, threads=threads, notice=notice
    )
    return LoadedModel(module, desc, backend="onnx")
