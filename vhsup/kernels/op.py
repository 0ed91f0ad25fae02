"""The ``vhsup::switched_conv2d`` custom op and the choice of implementation.

The fast paths (``cpu``: vhsup/kernels/cpu.py; ``cuda``: the Triton kernels
in vhsup/kernels/triton_switched.py) are plain functions without autograd.
Registering them as one torch custom op, with a fake implementation and an
autograd formula whose backward is itself a custom op, lets them sit inside
``torch.compile`` graphs (the compiler sees two opaque nodes with known
output shapes) and under autograd. The reference path needs none of this: it
is ordinary differentiable torch.

Which path runs: ``VHSUP_SWITCHED_IMPL`` when set, else the best one for the
device (CUDA tensor: the Triton kernel when it imports, else the reference,
which :func:`switched_fallback` words for a notice; anything else: the CPU
path).

fp32 products follow torch's TF32 setting for convolutions
(:func:`fp32_conv_precision`), as cuDNN's dense convolutions do, so a
switched conv and a dense one compute alike.
"""

from __future__ import annotations

import os

import torch

from vhsup.errors import VhsupError

from . import cpu, reference

IMPLS = ("reference", "cpu", "cuda")
ENV = "VHSUP_SWITCHED_IMPL"

_triton_state: list = []  # [module or None, why not], filled on first use


def _triton():
    """vhsup.kernels.triton_switched, or None where it (or triton) does not import.

    Imported lazily: triton is optional, slow to import, and reads
    TRITON_INTERPRET when its kernels are defined."""
    if not _triton_state:
        why = None
        try:
            from . import triton_switched

            if triton_switched.triton is None:
                why = f"triton did not import ({triton_switched.IMPORT_ERROR})"
                triton_switched = None
        except Exception as exc:  # noqa: BLE001 - any failure means "no cuda path", not a crash
            triton_switched = None
            why = f"the Triton kernels did not import ({_one_line(exc)})"
        _triton_state.extend([triton_switched, why])
    return _triton_state[0]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fp32_conv_precision() -> str:
    """How torch runs fp32 convolutions on CUDA: "tf32" or "ieee" (exact fp32).

    torch's own setting for cuDNN convolutions: ``torch.backends.cudnn.conv.fp32_precision``
    (torch >= 2.9; "none" defers to ``torch.backends.cudnn.fp32_precision``,
    then ``torch.backends.fp32_precision``, and means exact when all say
    "none"), else ``torch.backends.cudnn.allow_tf32``. Both default to TF32,
    which Ampere and later GPUs run on tensor cores. The Triton switched-conv
    kernel takes the same setting, so its fp32 products are the dense convs' kind.
    """
    try:
        chain = (
            torch.backends.cudnn.conv.fp32_precision,  # type: ignore[attr-defined]
            torch.backends.cudnn.fp32_precision,  # type: ignore[attr-defined]
            torch.backends.fp32_precision,  # type: ignore[attr-defined]
        )
    except (AttributeError, RuntimeError):  # torch before the fp32_precision API
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    for p in chain:
        if p != "none":
            return "tf32" if p == "tf32" else "ieee"
    return "ieee"


def _cuda_ok(device: torch.device) -> bool:
    mod = _triton()
    if mod is None:
        return False
    try:
        return bool(mod.available(device))
    except Exception:  # noqa: BLE001
        return False


def available_impls(device) -> list[str]:
    """Implementations that can run on ``device``, best first."""
    device = torch.device(device)
    out = []
    if device.type == "cuda" and _cuda_ok(device):
        out.append("cuda")
    out.append("cpu")  # plain torch ops: runs anywhere, best on the CPU
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") == "1" and _cuda_ok(device):
        out.append("cuda")  # the Triton kernel under its CPU interpreter: for tests only
    out.append("reference")
    return out


def pick_impl(device) -> str:
    """The implementation ``switched_conv2d`` uses on ``device`` when none is named:
    ``VHSUP_SWITCHED_IMPL`` if set (checked), else "cuda" or "reference" on a
    CUDA device and "cpu" elsewhere."""
    device = torch.device(device)
    forced = os.environ.get(ENV, "").strip()
    if forced:
        return check_impl(forced, device, source=f"{ENV}={forced}")
    if device.type == "cuda":
        return "cuda" if _cuda_ok(device) else "reference"
    return "cpu"


def switched_fallback(device) -> str | None:
    """A one-line notice when switched convs on ``device`` fall back to the
    (slow, memory-hungry) reference implementation; None when they do not.

    Only a CUDA device falls back (the CPU path runs anywhere); a user who
    chose the reference with ``VHSUP_SWITCHED_IMPL`` gets no notice.
    """
    device = torch.device(device)
    if device.type != "cuda" or os.environ.get(ENV, "").strip() or pick_impl(device) != "reference":
        return None
    mod = _triton()
    if mod is None:
        why = _triton_state[1] or "the Triton kernels did not import"
    elif not torch.cuda.is_available():
        why = "this torch has no CUDA"
    else:
        why = "the Triton kernels do not run on this device"
    return (
        f"switched convs on {device} run the reference implementation (slow, more memory): {why}; "
        "pip install triton, or set VHSUP_SWITCHED_IMPL=reference to silence this"
    )


def check_impl(impl: str, device, *, source: str | None = None) -> str:
    """``impl`` if it is known and runs on ``device``; else a one-line VhsupError."""
    what = source or f"impl={impl!r}"
    if impl not in IMPLS:
        raise VhsupError(f"{what}: unknown switched-conv implementation; choose one of {', '.join(IMPLS)}")
    if impl not in available_impls(device):
        why = "not available here"
        if impl == "cuda":
            _triton()
            why = _triton_state[1] or "the Triton kernel does not run on this device"
        raise VhsupError(
            f"{what}: the {impl!r} switched-conv implementation cannot run on {torch.device(device)} ({why})"
        )
    return impl


def _backend(impl: str):
    if impl == "cuda":
        mod = _triton()
        if mod is None:
            raise RuntimeError("switched conv: the Triton implementation is not importable")
        return mod
    return cpu


def _out_hw(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int):
    kh, kw = weight.shape[-2:]
    return (x.shape[2] + 2 * padding - kh) // stride + 1, (x.shape[3] + 2 * padding - kw) // stride + 1


@torch.library.custom_op("vhsup::switched_conv2d", mutates_args=())
def switched_conv2d_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    stride: int,
    padding: int,
    impl: str,
) -> torch.Tensor:
    """One expert per output pixel (see vhsup.kernels.switched_conv2d)."""
    return _backend(impl).forward(x, weight, bias, index, stride, padding)


def _memory_format(impl: str, device) -> torch.memory_format:
    """The layout the real implementation returns, which the fake one must copy
    (compiled graphs trust the fake's strides): the Triton kernels write
    channels-last on CUDA, the CPU path contiguous NCHW."""
    mod = _triton() if impl == "cuda" else None
    fmt = getattr(mod, "output_memory_format", None)
    return fmt(device) if fmt is not None else torch.contiguous_format


@switched_conv2d_op.register_fake
def _(x, weight, bias, index, stride, padding, impl):
    ho, wo = _out_hw(x, weight, stride, padding)
    return x.new_empty(x.shape[0], weight.shape[1], ho, wo).contiguous(memory_format=_memory_format(impl, x.device))


# Gradients the caller did not ask for come back as empty tensors: a custom op
# cannot return None, and empty placeholders cost nothing.
@torch.library.custom_op("vhsup::switched_conv2d_backward", mutates_args=())
def switched_conv2d_backward_op(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    stride: int,
    padding: int,
    impl: str,
    needs_x: bool,
    needs_w: bool,
    needs_b: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gx, gw, gb = _backend(impl).backward(
        grad_out, x, weight, index, stride, padding, needs_x=needs_x, needs_w=needs_w, needs_b=needs_b
    )
    empty = x.new_empty(0)
    return (
        gx if gx is not None else empty,
        gw if gw is not None else weight.new_empty(0),
        gb if gb is not None else empty,
    )


@switched_conv2d_backward_op.register_fake
def _(grad_out, x, weight, index, stride, padding, impl, needs_x, needs_w, needs_b):
    return (
        torch.empty_like(x, memory_format=_memory_format(impl, x.device)) if needs_x else x.new_empty(0),
        weight.new_empty(weight.shape) if needs_w else weight.new_empty(0),
        weight.new_empty(weight.shape[:2]) if needs_b else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    x, weight, bias, index, stride, padding, impl = inputs
    ctx.save_for_backward(x, weight, index)
    ctx.conf = (stride, padding, impl, bias is not None)


def _backward(ctx, grad_out):
    x, weight, index = ctx.saved_tensors
    stride, padding, impl, has_bias = ctx.conf
    nx, nw, nb = ctx.needs_input_grad[:3]
    nb = bool(nb and has_bias)
    gx, gw, gb = switched_conv2d_backward_op(grad_out, x, weight, index, stride, padding, impl, bool(nx), bool(nw), nb)
    return (gx if nx else None, gw if nw else None, gb if nb else None, None, None, None, None)


switched_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type not in ("cpu", "cuda"):  # meta tensors (shape probes) and the like have no autocast
        return None
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def switched_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    *,
    stride: int = 1,
    padding: int = 0,
    impl: str | None = None,
) -> torch.Tensor:
    """Switched convolution: at output pixel (n, y, x) only expert ``index[n, y, x]``'s kernel applies.

    Args:
        x: (N, Cin, H, W).
        weight: (B, Cout, Cin, kh, kw), one kernel per expert.
        bias: (B, Cout) or None.
        index: (N, Ho, Wo) int64 in [0, B): the expert of each output pixel.
        stride, padding: as for ``F.conv2d`` (one int for both axes).
        impl: "reference", "cpu" or "cuda"; None picks (see ``pick_impl``).

    Differentiable with respect to x, weight and bias (never index).
    """
    if x.dim() != 4 or weight.dim() != 5 or x.shape[1] != weight.shape[2]:
        raise ValueError(f"switched_conv2d: x {tuple(x.shape)} does not fit weight {tuple(weight.shape)}")
    ho, wo = _out_hw(x, weight, stride, padding)
    if tuple(index.shape) != (x.shape[0], ho, wo):
        raise ValueError(f"switched_conv2d: index {tuple(index.shape)} should be {(x.shape[0], ho, wo)}")
    if index.dtype != torch.int64:
        index = index.long()
    if bias is not None and tuple(bias.shape) != tuple(weight.shape[:2]):
        raise ValueError(f"switched_conv2d: bias {tuple(bias.shape)} should be {tuple(weight.shape[:2])}")
    if torch.onnx.is_in_onnx_export():
        # An ONNX graph cannot call vhsup's op; export the standard-op form.
        return reference.switched_conv2d_stacked(x, weight, bias, index, stride, padding)
    impl = pick_impl(x.device) if impl is None else check_impl(impl, x.device)
    dt = _autocast_dtype(x.device) if impl != "reference" else None
    if dt is not None:
        # Under autocast a dense conv runs in the autocast dtype whatever its
        # inputs are; do the same (the casts stay outside the op, so autograd
        # returns fp32 gradients to fp32 parameters).
        x, weight = x.to(dt), weight.to(dt)
        bias = None if bias is None else bias.to(dt)
    if impl == "reference":
        return reference.switched_conv2d(x, weight, bias, index, stride, padding)
    return switched_conv2d_op(x, weight, bias, index, stride, padding, impl)
