"""Export a loaded model to ONNX, for onnxruntime (CPU, CUDA, TensorRT).

What every file written here has in common, and why:

* **Dynamic batch, height and width.** The engine stacks tiles and frames
  into batches whose size and tile shape change with the video and with
  out-of-memory backoff, so nothing about the input shape may be baked in.
  The check below runs two different shapes to catch a tracer that froze a
  shape into a constant.
* **float32 input and output, always.** An fp16 export keeps its weights and
  arithmetic in fp16 but casts at the edges, so a caller (and IO binding)
  never has to know which precision a file holds.
* **Metadata** (``vhsup.*`` keys in ``metadata_props``): model name, arch,
  scale, precision and the whole descriptor as JSON, so a bare ``.onnx``
  file loads with the right scale, tile context and size multiple.
* **Checked before it is kept.** ``onnx.checker`` and a comparison against
  torch on random input; a file that fails never appears under its name
  (it is written through :func:`vhsup.atomic.replacing`).

The exporter is torch's TorchScript-based one (``dynamo=False``): on torch
2.13 without onnxscript it is the one that exports these nets with dynamic
shapes; it warns that it is deprecated, which is silenced here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vhsup.atomic import replacing
from vhsup.errors import VhsupError
from vhsup.registry import LoadedModel, ModelDescriptor

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PRECISIONS",
    "ExportReport",
    "cache_key",
    "descriptor_from_metadata",
    "export_onnx",
    "read_metadata",
]

#: Opset 17 runs on every onnxruntime since 1.13 and on TensorRT 8.6 and 10,
#: and has every op these nets use (Conv, PRelu, Resize, DepthToSpace).
DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
PRECISIONS = ("fp32", "fp16")
#: Bumped when what an export writes changes, so cached files are rebuilt.
EXPORT_FORMAT = 1
META_PREFIX = "vhsup."
#: Largest |onnx - torch| accepted by the check. fp32 should agree to float
#: rounding; fp16 is compared against the fp32 torch model, so the bound
#: only has to catch broken graphs and overflow, not rounding (compact-x4
#: measured 1.2e-3 on noise).
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how well it matched torch.

    ``max_abs_error`` is the largest difference from the fp32 torch model
    over ``checked_shapes`` (random input in [0, 1]); None when ``check`` was
    off.
    """

    path: Path
    name: str
    arch: str
    scale: int
    precision: str
    opset: int
    size_bytes: int
    max_abs_error: float | None
    checked_shapes: tuple[tuple[int, int, int, int], ...]
    seconds: float

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


class _Half(nn.Module):
    """fp16 weights and arithmetic behind a float32 interface."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


def _onnx():
    try:
        import onnx
    except ImportError:
        raise VhsupError("exporting to ONNX needs the onnx package: pip install 'vhsup[onnx]'") from None
    return onnx


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise VhsupError(f"unknown ONNX precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def _shapes(desc: ModelDescriptor) -> tuple[tuple[int, int, int, int], ...]:
    """Input shapes for tracing and checking: unequal sides, not multiples of
    8 unless the model demands a multiple, and two batch sizes."""
    m = max(int(desc.size_multiple), 1)

    def up(n: int) -> int:
        return -(-n // m) * m

    return ((1, 3, up(27), up(35)), (2, 3, up(19), up(23)))


def _metadata(desc: ModelDescriptor, precision: str, opset: int) -> dict[str, str]:
    return {
        f"{META_PREFIX}format": str(EXPORT_FORMAT),
        f"{META_PREFIX}name": desc.name,
        f"{META_PREFIX}arch": desc.arch,
        f"{META_PREFIX}scale": str(int(desc.scale)),
        f"{META_PREFIX}precision": precision,
        f"{META_PREFIX}opset": str(opset),
        f"{META_PREFIX}io_dtype": "float32",
        f"{META_PREFIX}descriptor": json.dumps(dataclasses.asdict(desc), sort_keys=True),
    }


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``vhsup.*`` metadata of an ONNX file, keys without the prefix;
    empty for a file that vhsup did not write."""
    onnx = _onnx()
    path = Path(path)
    try:
        # Weights are not needed for metadata; skip loading external data.
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise VhsupError("ONNX model not found", path) from None
    except Exception as exc:  # noqa: BLE001 - protobuf raises many kinds
        raise VhsupError(f"not a readable ONNX model: {_first_line(exc)}", path) from None
    return {p.key[len(META_PREFIX) :]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def descriptor_from_metadata(meta: dict[str, str]) -> ModelDescriptor | None:
    """The ModelDescriptor stored by :func:`export_onnx`, or None."""
    raw = meta.get("descriptor")
    if not raw:
        return None
    try:
        fields = json.loads(raw)
    except ValueError:
        return None
    known = {f.name for f in dataclasses.fields(ModelDescriptor)}
    try:
        return ModelDescriptor(**{k: v for k, v in fields.items() if k in known})
    except TypeError:
        return None


def cache_key(model: LoadedModel, precision: str, opset: int | None = None) -> str:
    """A hex digest that changes whenever the exported file would.

    Weights alone are not enough: compact-x2, -x3 and -x4 share their
    weights and differ only in the resize after the net, which the module's
    structure and the descriptor capture.
    """
    from vhsup.weights.sources import exact_sha256

    desc = dataclasses.asdict(model.descriptor)
    desc.pop("source", None)  # where the weights came from does not change them
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "format": EXPORT_FORMAT,
                "precision": precision,
                "opset": opset or DEFAULT_OPSET,
                "torch": torch.__version__.split("+")[0],
                "descriptor": desc,
                "structure": repr(model.module),
                "types": sorted({type(m).__qualname__ for m in model.module.modules()}),
            },
            sort_keys=True,
        ).encode()
    )
    h.update(exact_sha256(model.module.state_dict()).encode())
    return h.hexdigest()


# torch >= 2.5 has two exporters and wants to be told; older ones have only
# the TorchScript one and no such argument.
_LEGACY: dict[str, Any] = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def _export(net: nn.Module, example: torch.Tensor, path: Path, opset: int, name: str, final: Path) -> None:
    try:
        # The exporter prints the whole TorchScript graph to stdout when it
        # fails; the one-line error below says what the user needs.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (example,),
                str(path),
                **_LEGACY,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                do_constant_folding=True,
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
                },
            )
    except Exception as exc:  # the exporter raises many kinds
        raise VhsupError(f"model {name} cannot be exported to ONNX (opset {opset}): {_first_line(exc)}", final) from exc


def _check_interface(proto, name: str, final: Path) -> None:
    """One input that the graph really reads, with free batch, height and width.

    A model that leaves torch (through numpy, say) traces to constants: its
    graph has no input left, or one whose sizes were frozen.
    """
    inputs = [i.name for i in proto.graph.input]
    if inputs != [INPUT_NAME]:
        raise VhsupError(
            f"the export of {name} does not read its input (the model leaves torch while "
            "tracing, so its result was frozen into a constant)",
            final,
        )
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [i for i in (0, 2, 3) if not dims[i].dim_param]
    if fixed:
        raise VhsupError(
            f"the export of {name} has frozen input sizes (dimensions {fixed}); vhsup needs "
            "dynamic batch, height and width",
            final,
        )


def _compare(net: nn.Module, path: Path, shapes, name: str, final: Path) -> float:
    """Largest |onnxruntime - torch fp32| over ``shapes``; raises if a shape
    comes out wrong."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise VhsupError(
            "checking an ONNX export needs onnxruntime: pip install 'vhsup[onnx]' (or turn the check off)"
        ) from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise VhsupError(f"onnxruntime cannot load the export of {name}: {_first_line(exc)}", final) from exc
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(shape, generator=gen)
        with torch.inference_mode():
            ref = net(x).float().numpy()
        try:
            got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        except Exception as exc:
            raise VhsupError(
                f"the export of {name} fails in onnxruntime at input {shape}: {_first_line(exc)}", final
            ) from exc
        if got.shape != ref.shape:
            raise VhsupError(
                f"the export of {name} gives shape {got.shape} for input {shape}, torch gives "
                f"{ref.shape} (a shape was frozen while tracing?)",
                final,
            )
        if not np.isfinite(got).all():
            raise VhsupError(
                f"the export of {name} gives inf/NaN at input {shape} (overflow in fp16? export fp32)", final
            )
        worst = max(worst, float(np.abs(got.astype(np.float64) - ref).max()))
    return worst


def export_onnx(
    model: LoadedModel,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    opset: int | None = None,
    check: bool = True,
) -> ExportReport:
    """Write ``model`` as an ONNX file with dynamic batch, height and width.

    Args:
        model: a model from :func:`vhsup.registry.load_model` (its module may
            have been moved to another device; a copy is exported from CPU).
        path: the ``.onnx`` file to write; replaced only if everything passes.
        precision: 'fp32', or 'fp16' (fp16 weights and arithmetic; input and
            output stay float32).
        opset: ONNX opset; :data:`DEFAULT_OPSET` when None.
        check: run ``onnx.checker`` and compare with torch on random input at
            two shapes; the error bound is :data:`TOLERANCE`.

    Raises:
        VhsupError: onnx (or, with ``check``, onnxruntime) is missing, the
            path cannot be written, the model cannot be exported, or the
            export does not match torch.
    """
    started = time.perf_counter()
    onnx = _onnx()
    precision = _check_precision(precision)
    opset = int(opset or DEFAULT_OPSET)
    desc = model.descriptor
    final = Path(path)
    if precision == "fp16" and not desc.supports_half:
        raise VhsupError(f"model {desc.name} does not work in fp16; export it in fp32", final)
    shapes = _shapes(desc)
    # A private CPU fp32 copy: the caller's module may be on a GPU or in use.
    ref = copy.deepcopy(model.module).to("cpu", torch.float32).eval()
    net = _Half(copy.deepcopy(ref)) if precision == "fp16" else ref
    with _plain_fp32():
        return _export_checked(onnx, ref, net, final, desc, precision, opset, shapes, check, started)


@contextlib.contextmanager
def _plain_fp32():
    """No autocast while tracing and checking.

    The onnx backend exports lazily, from inside the engine's autocast when
    an fp16 run first needs a file; traced under autocast, the graph would
    pick up the autocast dtype's casts.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.no_grad())
        yield


def _export_checked(
    onnx,
    ref: nn.Module,
    net: nn.Module,
    final: Path,
    desc: ModelDescriptor,
    precision: str,
    opset: int,
    shapes,
    check: bool,
    started: float,
) -> ExportReport:
    error = None
    with replacing(final, "ONNX model") as tmp:
        _export(net, torch.rand(shapes[0]), tmp, opset, desc.name, final)
        proto = onnx.load(str(tmp))
        _check_interface(proto, desc.name, final)
        for key, value in _metadata(desc, precision, opset).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "vhsup"
        proto.doc_string = (
            f"vhsup {desc.name}: {desc.arch} x{desc.scale}, {precision} "
            "weights, float32 input (N,3,H,W) RGB in [0,1], float32 output unclamped"
        )
        try:
            onnx.save(proto, str(tmp))
        except OSError as exc:
            raise VhsupError(f"cannot write the ONNX model: {exc.strerror or exc}", final) from exc
        if check:
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except Exception as exc:  # checker and shape inference errors
                raise VhsupError(
                    f"the export of {desc.name} is not a valid ONNX model: {_first_line(exc)}", final
                ) from exc
            error = _compare(ref, tmp, shapes, desc.name, final)
            if error > TOLERANCE[precision]:
                raise VhsupError(
                    f"the {precision} export of {desc.name} differs from torch by {error:.3g} "
                    f"(more than {TOLERANCE[precision]:g})",
                    final,
                )
    return ExportReport(
        path=final,
        name=desc.name,
        arch=desc.arch,
        scale=int(desc.scale),
        precision=precision,
        opset=opset,
        size_bytes=final.stat().st_size,
        max_abs_error=error,
        checked_shapes=shapes if check else (),
        seconds=time.perf_counter() - started,
    )
