"""What vhsup knows about an architecture, in one object beside its network.

Each architecture module (``rrdbnet.py``, ``compact.py``, ...) ends with a
``SPEC = ArchSpec(...)``: how to build the network from its hyperparameters,
how to recognise its state dict and read the hyperparameters back, how far a
tile must look around itself, which precisions it survives, roughly how much
memory a forward pass takes and how large its widest tensor is, which blocks training may recompute and which
convs a switched conversion leaves alone. Detection, the registry, the
engine, the trainer and the card writer ask the spec; none of them knows an
architecture by name.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UnknownArchitecture

StateDict = Mapping[str, torch.Tensor]
Hyper = Mapping[str, Any]
PathArg = str | os.PathLike[str] | None
#: Groups of modules the network runs one after another, each group
#: recomputed as one segment under activation checkpointing.
Blocks = list[tuple[nn.Module, ...]]


@dataclass(frozen=True)
class Activation:
    """Peak activation channels of a forward pass, for memory planning.

    ``features``: channels alive at the input's resolution; ``upsampled``:
    channels alive per output pixel (so ``scale**2`` of them per input
    pixel). An estimate from the architecture's shape, not a measurement
    (see :func:`vhsup.engine.activation_bytes_per_px`).
    """

    features: int
    upsampled: int


#: Deep feature nets that upsample 64 features by interpolation (RRDB-style
#: dense blocks keep about ten 64-channel tensors alive; three 64-channel
#: tensors coexist after the upsampling). Also what an unknown network gets.
DEEP = Activation(features=64 * 10, upsampled=64 * 3)


def unknown(path: PathArg, detail: str) -> UnknownArchitecture:
    """The error detection raises for a state dict it cannot read."""
    return UnknownArchitecture(f"not a model vhsup knows: {detail}", path)


def numbered(sd: StateDict, prefix: str, part: int = 1) -> set[int]:
    """The indices N of keys ``prefix.N...`` (``part``: which dotted field holds N)."""
    return {int(k.split(".")[part]) for k in sd if k.startswith(prefix + ".")}


def contiguous(indices: set[int]) -> bool:
    """Whether the indices are exactly 0..n-1."""
    return indices == set(range(len(indices)))


def one_by_one(modules: Iterable[nn.Module]) -> Blocks:
    """Every module its own recompute segment."""
    return [(m,) for m in modules]


def in_groups(modules: Iterable[nn.Module], size: int) -> Blocks:
    """Consecutive modules in segments of ``size`` (the last may be shorter)."""
    mods = list(modules)
    return [tuple(mods[i : i + size]) for i in range(0, len(mods), size)]


def read_int(key: str) -> Callable[[Hyper], int]:
    """A function reading one whole-number hyperparameter (the scale, say)."""

    def read(hyper: Hyper) -> int:
        return int(hyper[key])

    return read


def _one(_hyper: Hyper) -> int:
    return 1


def _nothing(_net: nn.Module) -> Blocks:
    return []


@dataclass(frozen=True)
class ArchSpec:
    """One architecture as the rest of vhsup sees it.

    Attributes:
        name: the id used in cards, detection results and saved metadata.
        title: how messages name the network ("RRDBNet (ESRGAN/Real-ESRGAN)").
        modules: the classes :attr:`build` returns (looked up by exact type).
        build: makes an untrained network from the hyperparameters (keywords).
        scale: the network's own factor, from its hyperparameters.
        context: input pixels a tile must borrow on each side so that tiled
            equals untiled within 1/255 (exact reach where it can be computed;
            used for files without a card of their own).
        keys: state-dict keys every file of this architecture has.
        claims: a further test on the state dict (None: the keys decide).
        read_hyper: the hyperparameters of a state dict this spec claims
            (raises UnknownArchitecture or VhsupError, naming ``path``);
            None for networks with no weights to detect (classical resamplers).
        legacy: renames an older published key layout of this network to
            its own names, or returns None if the state dict is not one.
        hyper_of: hyperparameters read off a built module, for networks with
            no weights to detect them from.
        size_multiple: input-pixel multiple that tiles and frames need.
        macs_per_px: hand-written cost; None counts convs on the meta device
            (:func:`conv_macs_per_px`).
        widest_per_px: hand-written elements per input pixel of the largest
            tensor a forward pass makes; None counts on the meta device
            (:func:`widest_per_px`).
        supports_half, supports_bfloat16: whether the engine may run it in
            fp16 / bf16 (False where an overflow would go unseen).
        activation: rough activation footprint for memory planning.
        recompute: the blocks activation checkpointing recomputes.
        plain_convs: fnmatch patterns of convs ``--switched`` leaves plain
            by default (its upsampler: large maps, little to gain).
        switched_native: built of switched convs; detected before a
            converted network is unswitched, and not converted again.
        weightless: a fixed filter with no weights: nothing to load,
            detect or train (classical resamplers).
        perceptual: the perceptual-loss backbone training picks by default.
    """

    name: str
    title: str
    modules: tuple[type[nn.Module], ...]
    build: Callable[..., nn.Module]
    scale: Callable[[Hyper], int]
    context: Callable[[Hyper], int]
    keys: tuple[str, ...] = ()
    claims: Callable[[StateDict], bool] | None = None
    read_hyper: Callable[[StateDict, PathArg], dict] | None = None
    legacy: Callable[[StateDict, PathArg], dict[str, torch.Tensor] | None] | None = None
    hyper_of: Callable[[nn.Module], dict] | None = None
    size_multiple: Callable[[Hyper], int] = _one
    macs_per_px: Callable[[Hyper], float] | None = None
    widest_per_px: Callable[[Hyper], float] | None = None
    supports_half: bool = True
    supports_bfloat16: bool = True
    activation: Activation = DEEP
    recompute: Callable[[nn.Module], Blocks] = _nothing
    plain_convs: tuple[str, ...] = ()
    switched_native: bool = False
    weightless: bool = False
    perceptual: str = "vgg19"

    def detects(self, sd: StateDict) -> bool:
        """Whether this state dict looks like one of this architecture's."""
        if self.read_hyper is None or not all(k in sd for k in self.keys):
            return False
        return self.claims is None or self.claims(sd)

    def macs(self, hyper: Hyper) -> float:
        """Multiply-accumulates per input pixel."""
        if self.macs_per_px is not None:
            return float(self.macs_per_px(hyper))
        return conv_macs_per_px(self.name, hyper, size=16 * self.size_multiple(hyper))

    def widest(self, hyper: Hyper) -> float:
        """Elements per input pixel of the largest tensor a forward pass makes
        (batch 1): a batch of ``n`` crops of ``h x w`` makes one of
        ``n * h * w * widest`` elements. The engine keeps that below 2**31
        (int32 indexing in onnxruntime's CUDA kernels, TensorRT's limit)."""
        if self.widest_per_px is not None:
            return float(self.widest_per_px(hyper))
        return widest_per_px(self.name, hyper, size=16 * self.size_multiple(hyper))


def conv_macs_per_px(arch: str, hyper: Hyper, size: int = 16) -> float:
    """Conv multiply-accumulates per input pixel, counted on the meta device.

    Forward hooks see every conv's output shape on a ``size`` x ``size``
    input without computing anything (meta tensors have shapes, no data), so
    this is exact for any architecture whose cost is linear in the pixel
    count; ``size`` must be a multiple of what the network needs. Grouped
    (depthwise) convs count ``in / groups`` inputs. A switched conv counts
    one kernel per output pixel (the one it applies; the fused kernels
    compute only that one), and its selector, a plain conv inside it,
    counts like any other conv.
    """
    from . import build
    from .switched import SwitchedConv2d

    total = 0

    def hook(conv, inputs, output):
        nonlocal total
        ks = conv.kernel_size if isinstance(conv.kernel_size, tuple) else (conv.kernel_size,) * 2
        total += output[0].numel() * (conv.in_channels // getattr(conv, "groups", 1)) * ks[0] * ks[1]

    with torch.device("meta"):
        net = build(arch, dict(hyper))
    counted = (nn.Conv2d, SwitchedConv2d)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, counted)]
    with torch.no_grad():
        net(torch.zeros(1, int(hyper.get("num_in_ch", 3)), size, size, device="meta"))
    for h in handles:
        h.remove()
    return total / (size * size)


@functools.lru_cache(maxsize=64)
def _widest(arch: str, hyper_json: str, size: int) -> float:
    from . import build
    from .switched import SwitchedConv2d

    hyper = json.loads(hyper_json)
    most = 0

    def hook(module, inputs, output):
        nonlocal most
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for t in (*inputs, *outputs):
            if isinstance(t, torch.Tensor):
                most = max(most, t.numel())
        if isinstance(module, SwitchedConv2d) and isinstance(output, torch.Tensor):
            # Exported to ONNX, a switched conv is one conv over every
            # expert's kernels, then a gather: breadth outputs in one tensor.
            most = max(most, output.numel() * module.breadth)

    with torch.device("meta"):
        net = build(arch, hyper)
    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net(torch.zeros(1, int(hyper.get("num_in_ch", 3)), size, size, device="meta"))
    for h in handles:
        h.remove()
    return most / (size * size)


def widest_per_px(arch: str, hyper: Hyper, size: int = 16) -> float:
    """Elements per input pixel of the largest tensor a forward pass makes,
    counted on the meta device (shapes only, nothing computed).

    Every module's inputs and outputs are seen, so tensors made between
    modules (an interpolation, a concatenation) count as the input of the
    module that takes them; weights, which do not grow with the picture, do
    not count. A switched conv counts as its ONNX form computes it: all
    ``breadth`` experts' outputs in one tensor (what onnxruntime and
    TensorRT run). Working buffers inside one operation (the CPU switched
    path's im2col chunks, cuDNN's workspace) are not tensors of the
    network and do not count. Exact for networks whose tensors scale with
    the pixel count; ``size`` must be a multiple of what the network needs.
    Cached per architecture and hyperparameters.
    """
    return _widest(arch, json.dumps(dict(hyper), sort_keys=True, default=str), int(size))


__all__ = [
    "DEEP",
    "Activation",
    "ArchSpec",
    "Blocks",
    "StateDict",
    "contiguous",
    "conv_macs_per_px",
    "in_groups",
    "numbered",
    "one_by_one",
    "read_int",
    "unknown",
    "widest_per_px",
]
