"""Switched convolution: ``breadth`` kernels, one chosen per output pixel by a learned selector.

A switched conv holds ``breadth`` independent kernels. A small selector
network looks at the input and scores every kernel at every output pixel;
exactly one kernel (the best score) is applied there. The layer thus has
``breadth`` times a conv's parameters at about one conv's arithmetic, and
kernels can specialise in textures, edges or flat areas.

The score path, in order:

1. selector: a 1x1 conv in_ch -> breadth by default (strided like the layer,
   so its logits are at the output resolution), or a few conv layers, or any
   module passed in;
2. softmax over the kernels;
3. switch norm (:class:`SwitchNorm`): divides each kernel's score by how much
   that kernel has been used lately, so no kernel takes over;
4. hard routing (:func:`hard_route`): a one-hot argmax whose backward passes
   the gradient to the chosen score, divided by its value.

The output is ``switched_conv2d(x, weight, bias, index) * gate[index]``: the
gate is exactly 1 in the forward pass, and its gradient, ``sum_c grad * out``,
is how the selector learns which kernel serves a pixel best.

Staged training: train an ordinary CNN, :func:`convert_to_switched` copies
each conv's kernel into every slot (same output, to rounding), and further
training lets the copies diverge because each one only gets the gradient of
the pixels routed to it. The design follows J. Betker's switched
convolutions (DLAS); this is an independent implementation.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vhsup.errors import VhsupError
from vhsup.kernels import switched_conv2d


class SwitchNormBufferWarning(UserWarning):
    """A switched layer was loaded without its switch-norm usage history."""


class SwitchNorm(nn.Module):
    """Evens out kernel use by dividing each kernel's score by its recent usage.

    Keeps a rotating buffer of the last ``queue`` training batches' usage:
    per kernel, the softmax score averaged over batch and space, scaled so
    that a fair share is 1. The scores are divided by the buffer's mean and
    renormalised to sum to 1, so an over-used kernel has to win by a larger
    margin; average use evens out while local preferences remain.

    Training pushes the current batch's usage (averaged over all ranks when
    torch.distributed is initialised, so every rank holds the same buffer)
    before normalising; eval only reads the buffer. Until anything has been
    pushed, the norm is the identity. ``history`` and ``count`` (pushes so
    far; the next slot is ``count % queue``) are persistent buffers: a model
    trained with switch norm needs them at inference.

    Args:
        breadth: kernels per switched conv.
        queue: batches remembered (256).
    """

    history: torch.Tensor
    count: torch.Tensor

    def __init__(self, breadth: int, queue: int = 256):
        super().__init__()
        if queue < 1:
            raise ValueError(f"switch norm queue must be >= 1, got {queue}")
        self.breadth = breadth
        self.queue = queue
        self.register_buffer("history", torch.zeros(queue, breadth))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def _apply(self, fn, recurse=True):
        # The history keeps fp32 when the model goes to fp16/bf16: it is tiny,
        # and rounded usage would shift routing away from the trained one.
        out = super()._apply(fn, recurse)
        if self.history.dtype in (torch.float16, torch.bfloat16):
            self.history = self.history.float()
        return out

    def usage(self) -> torch.Tensor:
        """Mean relative usage per kernel over the buffer (ones while empty).

        Pure tensor arithmetic, no host sync, so it costs nothing on a GPU."""
        filled = self.count.clamp(max=self.queue)
        valid = (torch.arange(self.queue, device=self.history.device) < filled).to(self.history.dtype)
        mean = (self.history * valid[:, None]).sum(0) / filled.clamp(min=1).to(self.history.dtype)
        return torch.where(filled > 0, mean, torch.ones_like(mean))

    @torch.no_grad()
    def push(self, probs: torch.Tensor) -> None:
        """Record one batch's usage (``probs``: (N, breadth, H, W) softmax scores)."""
        use = probs.detach().float().mean(dim=(0, 2, 3)) * self.breadth
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(use)
            use /= torch.distributed.get_world_size()
        slot = (self.count % self.queue).view(1)
        self.history.index_copy_(0, slot, use.view(1, -1).to(self.history.dtype))
        self.count += 1

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.push(probs)
        norm = self.usage().to(probs.dtype).clamp_min(torch.finfo(probs.dtype).tiny)
        scaled = probs / norm.view(1, -1, 1, 1)
        return scaled / scaled.sum(dim=1, keepdim=True)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        absent = [prefix + name for name in ("history", "count") if prefix + name not in state_dict]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if absent:
            # An older or hand-converted file: keep what this layer has (empty:
            # identity norm) and say so, instead of failing a strict load.
            for key in absent:
                if key in missing_keys:
                    missing_keys.remove(key)
            layer = prefix[: -len("norm.")].rstrip(".") or "(root)"
            warnings.warn(
                f"switched layer {layer}: the weights carry no switch-norm usage history ({', '.join(absent)}); "
                "kernel selection will differ from training and results may be poor",
                SwitchNormBufferWarning,
                stacklevel=2,
            )

    def extra_repr(self) -> str:
        return f"breadth={self.breadth}, queue={self.queue}"


class _HardRoute(torch.autograd.Function):
    """One-hot argmax forward; backward: the chosen entry's gradient divided by its score."""

    @staticmethod
    def forward(ctx, probs):
        index = probs.argmax(dim=1)
        gate = torch.zeros_like(probs).scatter_(1, index.unsqueeze(1), 1.0)
        ctx.save_for_backward(probs.gather(1, index.unsqueeze(1)), index)
        ctx.mark_non_differentiable(index)
        return gate, index

    @staticmethod
    def backward(ctx, grad_gate, _grad_index):
        chosen, index = ctx.saved_tensors
        g = grad_gate.gather(1, index.unsqueeze(1))
        # The chosen score is the max of a distribution over breadth kernels, so
        # it is >= 1/breadth; the guard only matters for NaN/underflowed input.
        g = torch.where(chosen > 0, g / chosen.clamp_min(torch.finfo(chosen.dtype).tiny), torch.zeros_like(g))
        return torch.zeros_like(grad_gate).scatter_(1, index.unsqueeze(1), g)


def hard_route(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate, index) for (N, B, H, W) scores: gate is one-hot (1 at the argmax),
    index (N, H, W) int64 is the argmax. Differentiable with respect to probs
    through the gate (see module docstring)."""
    return _HardRoute.apply(probs)


def _selector(in_ch: int, breadth: int, stride: int, layers: int, hidden: int | None) -> nn.Module:
    if layers < 1:
        raise ValueError(f"selector_layers must be >= 1, got {layers}")
    if layers == 1:
        return nn.Conv2d(in_ch, breadth, 1, stride=stride)
    hidden = hidden or max(breadth, min(in_ch, 32))
    mods: list[nn.Module] = []
    ch = in_ch
    for _ in range(layers - 1):
        mods += [nn.Conv2d(ch, hidden, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        ch = hidden
    mods.append(nn.Conv2d(ch, breadth, 1, stride=stride))
    return nn.Sequential(*mods)


class SwitchedConv2d(nn.Module):
    """A conv with ``breadth`` kernels; a selector picks one per output pixel.

    Args:
        in_ch, out_ch: channels.
        kernel_size: square, odd kernels are the usual case (3).
        stride: one int for both axes.
        padding: one int; None means ``kernel_size // 2``.
        breadth: number of kernels (8).
        bias: one bias per kernel.
        selector: a module mapping the selector input to (N, breadth, h, w)
            logits; resized (nearest) to the output size if it differs. None
            builds the default: a 1x1 conv with the layer's stride, or with
            ``selector_layers`` > 1 that many convs (3x3s of
            ``selector_hidden`` channels, LeakyReLU, then the strided 1x1).
        queue: switch-norm history length in training batches (256).
        switch_norm: False drops the switch norm (collapse onto one kernel
            becomes likely; for experiments).
        impl: force a kernel implementation ("reference", "cpu", "cuda");
            None lets vhsup.kernels choose (VHSUP_SWITCHED_IMPL still wins).

    Parameters ``weight`` (breadth, out_ch, in_ch, k, k) and ``bias``
    (breadth, out_ch); persistent buffers ``norm.history`` and ``norm.count``.
    After each forward, ``last_index`` holds the (N, Ho, Wo) chosen kernels.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        breadth: int = 8,
        bias: bool = True,
        selector: nn.Module | None = None,
        queue: int = 256,
        switch_norm: bool = True,
        selector_layers: int = 1,
        selector_hidden: int | None = None,
        impl: str | None = None,
    ):
        super().__init__()
        if breadth < 1:
            raise ValueError(f"breadth must be >= 1, got {breadth}")
        self.in_channels, self.out_channels = in_ch, out_ch
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.breadth = breadth
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(breadth, out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(breadth, out_ch)) if bias else None
        self.selector = (
            selector if selector is not None else _selector(in_ch, breadth, stride, selector_layers, selector_hidden)
        )
        self.norm = SwitchNorm(breadth, queue) if switch_norm else None
        self.last_index: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each kernel initialised independently, as nn.Conv2d would."""
        for e in range(self.breadth):
            nn.init.kaiming_uniform_(self.weight.data[e], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size**2)
            nn.init.uniform_(self.bias, -bound, bound)

    def _apply(self, fn, recurse=True):
        # module.to(memory_format=torch.channels_last), common before inference,
        # converts every 4-D and 5-D tensor with the 4-D format and fails on our
        # 5-D weight. Convert it as the (breadth * out_ch, in_ch, k, k) stack of
        # ordinary kernels it is and view the result back: same values, each
        # kernel channels-last, and the whole model converts as users expect.
        def fn5(t):
            if t.dim() != 5:
                return fn(t)
            try:
                return fn(t)
            except RuntimeError as exc:
                if "channels_last" not in str(exc):
                    raise
                return fn(t.flatten(0, 1)).view(t.shape)

        return super()._apply(fn5, recurse)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def route(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores after switch norm -> (gate, index); see :func:`hard_route`."""
        return hard_route(probs)

    def forward(self, x: torch.Tensor, selector_input: torch.Tensor | None = None) -> torch.Tensor:
        ho, wo = self.output_size(x.shape[-2], x.shape[-1])
        logits = self.selector(x if selector_input is None else selector_input)
        if tuple(logits.shape[-2:]) != (ho, wo):
            logits = F.interpolate(logits, size=(ho, wo), mode="nearest")
        # Scores in fp32 at least, even under bf16/fp16: the argmax and the
        # usage statistics should not depend on the compute dtype.
        probs = torch.softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=1)
        if self.norm is not None:
            probs = self.norm(probs)
        if torch.onnx.is_in_onnx_export() or not (torch.is_grad_enabled() and probs.requires_grad):
            # Nothing to differentiate: the gate would be exactly 1, so the
            # argmax is all that matters (and an ONNX graph gets plain ArgMax,
            # not the routing's autograd function, which the tracer mangles).
            gate, index = None, probs.argmax(dim=1)
        else:
            gate, index = self.route(probs)
        self.last_index = index.detach()
        out = switched_conv2d(
            x, self.weight, self.bias, index, stride=self.stride, padding=self.padding, impl=self.impl
        )
        return out if gate is None else out * gate.gather(1, index.unsqueeze(1)).to(out.dtype)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, breadth: int = 8, **kw) -> SwitchedConv2d:
        """A switched conv computing what ``conv`` computes: its kernel (and
        bias) copied into every slot, plus a fresh selector. Same device,
        dtype and train/eval mode as ``conv``."""
        why = unconvertible(conv)
        if why:
            raise ValueError(f"cannot convert {conv}: {why}")
        assert not isinstance(conv.padding, str)  # unconvertible() refused padding given as a string
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            stride=conv.stride[0],
            padding=conv.padding[0],
            breadth=breadth,
            bias=conv.bias is not None,
            **kw,
        )
        new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight.detach().unsqueeze(0).expand_as(new.weight))
            if conv.bias is not None:
                assert new.bias is not None  # built with bias=True just above
                new.bias.copy_(conv.bias.detach().unsqueeze(0).expand_as(new.bias))
        return new.train(conv.training)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, breadth={self.breadth}, bias={self.bias is not None}"
        )


def unconvertible(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot become a SwitchedConv2d, or None if it can."""
    if not isinstance(conv, nn.Conv2d):
        return "not an nn.Conv2d"
    if conv.groups != 1:
        return "grouped convolutions are not supported"
    if conv.dilation != (1, 1):
        return "dilated convolutions are not supported"
    if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1]:
        return "only square kernels and strides are supported"
    if isinstance(conv.padding, str) or conv.padding[0] != conv.padding[1] or conv.padding_mode != "zeros":
        return "only symmetric zero padding given as a number is supported"
    if getattr(conv, "parametrizations", None):
        return "parametrised weights (e.g. spectral norm) are not supported"
    return None


def switched_layers(model: nn.Module) -> list[tuple[str, SwitchedConv2d]]:
    """Every SwitchedConv2d in ``model`` with its qualified name, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SwitchedConv2d)]


def convert_to_switched(
    model: nn.Module, *, breadth: int = 8, predicate: Callable[[str, nn.Conv2d], bool] | None = None, **kw
) -> list[str]:
    """Replace convs of ``model`` in place by :meth:`SwitchedConv2d.from_conv`; return their names.

    ``predicate(name, conv)`` chooses which convs to convert; by default every
    conv that can be (see :func:`unconvertible`), except the selectors of
    layers that are already switched. A conv the predicate picks that cannot
    be converted raises ValueError. ``kw`` goes to SwitchedConv2d.
    """
    if isinstance(model, nn.Conv2d):
        raise ValueError("convert_to_switched works on a model's submodules; use SwitchedConv2d.from_conv for one conv")
    if "selector" in kw:
        raise ValueError("convert_to_switched builds one selector per layer; pass selector_layers=, not a selector")
    inside = [name + "." for name, _ in switched_layers(model)]
    chosen = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Conv2d) or any(name.startswith(p) for p in inside):
            continue
        if predicate is None:
            if unconvertible(mod) is None:
                chosen.append(name)
        elif predicate(name, mod):
            why = unconvertible(mod)
            if why:
                raise ValueError(f"{name}: cannot convert to a switched conv: {why}")
            chosen.append(name)
    for name in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, SwitchedConv2d.from_conv(getattr(parent, attr), breadth=breadth, **kw))
    return chosen


#: The hyperparameter that records a conversion: ``{"breadth": B, "layers":
#: [conv names]}`` (plus ``queue`` when the switch norm remembers other than
#: 256 batches). :func:`vhsup.arch.build` converts those convs again.
SWITCHED_HYPER = "switched"


def unswitch_state_dict(
    sd: Mapping[str, torch.Tensor], path: str | os.PathLike[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The state dict of the plain network a converted one came from, and
    what :func:`vhsup.arch.build` needs to convert it again; None if ``sd``
    holds no switched convs (no 5-D weights).

    The plain weights are kernel 0 of each switched conv; selectors and
    switch norms are dropped. Only the default selector (one 1x1 conv) is
    accepted: a deeper one would widen the model's reach beyond what the
    plain network's tiling context covers.
    """
    layers = sorted(k[: -len(".weight")] for k, v in sd.items() if k.endswith(".weight") and v.ndim == 5)
    if not layers:
        return None
    breadths = {int(sd[f"{name}.weight"].shape[0]) for name in layers}
    if len(breadths) != 1:
        raise VhsupError(
            f"switched convs of different breadths {sorted(breadths)} in one model are not supported", path
        )
    breadth = breadths.pop()
    queue = 256
    for name in layers:
        sel = sd.get(f"{name}.selector.weight")
        if sel is None or tuple(sel.shape) != (breadth, sd[f"{name}.weight"].shape[2], 1, 1):
            raise VhsupError(
                f"switched conv {name} has no plain 1x1 selector (only the default selector is supported "
                "outside switched-x4)",
                path,
            )
        history = sd.get(f"{name}.norm.history")
        if history is not None:
            queue = int(history.shape[0])
    plain: dict[str, torch.Tensor] = {}
    inside = tuple(f"{name}.{part}." for name in layers for part in ("selector", "norm"))
    names = set(layers)
    for key, value in sd.items():
        if key.startswith(inside):
            continue
        layer = key.rpartition(".")[0]
        plain[key] = value[0] if layer in names and key.endswith((".weight", ".bias")) else value
    conversion: dict = {"breadth": breadth, "layers": layers}
    if queue != 256:
        conversion["queue"] = queue
    return plain, conversion
