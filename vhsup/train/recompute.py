"""Activation recompute (``--checkpointing``): the generator's blocks run again
in the backward pass instead of keeping their activations.

Not to be confused with :mod:`vhsup.train.checkpoint`, which saves runs.
The architecture's spec says which blocks make a segment
(:func:`vhsup.arch.recompute_blocks`); what is here makes a recomputed
forward give exactly what the original one gave: the same buffers
(BatchNorm statistics are not counted twice) and, for switched convs, the
same kernel routing.

The small module helpers at the top (a module's own ``training`` flag off
for a while, copies of its buffers put back) serve the optimiser step too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

if TYPE_CHECKING:
    from vhsup.arch.switched import SwitchNorm

__all__ = ["buffer_copies", "enable_checkpointing", "restore_buffers", "training_off"]

BufferCopies = list[tuple[torch.Tensor, torch.Tensor]]


@contextlib.contextmanager
def training_off(modules: Sequence[nn.Module]) -> Iterator[None]:
    """These modules' own ``training`` flags off for the block (children
    untouched, unlike ``.eval()``), restored afterwards."""
    flags = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, f in zip(modules, flags):
            m.training = f


def buffer_copies(modules: Sequence[nn.Module]) -> BufferCopies:
    """Each buffer of the modules with a copy of what it holds now."""
    return [(b, b.detach().clone()) for m in modules for b in m.buffers()]


@torch.no_grad()
def restore_buffers(saved: BufferCopies) -> None:
    """Put back what :func:`buffer_copies` saw."""
    for b, v in saved:
        b.copy_(v)


@contextlib.contextmanager
def _buffers_kept(modules: list[nn.Module]) -> Iterator[None]:
    """Restore the modules' buffers after the block: a recomputed forward must
    not count twice in BatchNorm running statistics (or any other buffer a
    layer updates as it runs)."""
    saved = buffer_copies(modules)
    try:
        yield
    finally:
        restore_buffers(saved)


class _SwitchNormReplay:
    """Makes a recomputed forward route exactly as the original one did.

    A switch norm in training mode records the batch's kernel usage and then
    normalises by its history, this batch included. A recomputed forward
    must neither record a second time (that would change the history, and
    under DDP issue an extra all-reduce from inside the backward pass) nor
    see a history other forwards have moved on since (the consistency loss
    runs the network again before the backward): either could pick other
    kernels at near-ties than the gradients were meant for. So the history
    each norm held right after the original forward is kept, and the
    recompute runs the norms read-only on that history.
    """

    def __init__(self, norms: list[SwitchNorm]) -> None:
        self.norms = norms
        self.after: list[tuple[torch.Tensor, torch.Tensor]] = []

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        yield
        self.after = [(n.history.detach().clone(), n.count.detach().clone()) for n in self.norms]

    @contextlib.contextmanager
    def replay(self, modules: list[nn.Module]) -> Iterator[None]:
        with _buffers_kept(modules):  # what the buffers hold now comes back afterwards
            with torch.no_grad():
                for n, (history, count) in zip(self.norms, self.after):
                    n.history.copy_(history)
                    n.count.copy_(count)
            with training_off(self.norms):
                yield


def _checkpointed(fn: Callable[..., Any], modules: list[nn.Module]) -> Callable[..., Any]:
    from vhsup.arch.switched import SwitchNorm

    stateful = any(True for m in modules for _ in m.buffers())
    norms = [n for m in modules for n in m.modules() if isinstance(n, SwitchNorm)]

    def context() -> tuple[contextlib.AbstractContextManager[Any], contextlib.AbstractContextManager[Any]]:
        if norms:
            replay = _SwitchNormReplay(norms)
            return replay.record(), replay.replay(modules)
        return contextlib.nullcontext(), (_buffers_kept(modules) if stateful else contextlib.nullcontext())

    def run(*args: Any) -> Any:
        if not torch.is_grad_enabled():
            return fn(*args)
        return _checkpoint(fn, *args, use_reentrant=False, context_fn=context)

    return run


def enable_checkpointing(net: nn.Module) -> int:
    """Recompute the generator's blocks in the backward pass instead of storing
    their activations; returns the number of checkpointed segments.

    The module's structure and state-dict keys stay as they are (only
    ``forward`` of some submodules is replaced on the instance), so saved
    weights load into a plain network. The architecture's spec says which
    blocks make a segment (:func:`vhsup.arch.recompute_blocks`): the first
    module of a segment runs the whole segment, the others pass their input
    on. Apply it to the training network only, after the EMA copy is made.
    """
    from vhsup.arch import recompute_blocks

    segments = recompute_blocks(net)
    for segment in segments:
        # The classes' forwards: the instance's is about to be replaced.
        steps = [type(m).forward.__get__(m) for m in segment]

        def run(x: torch.Tensor, steps: list[Callable[..., Any]] = steps) -> torch.Tensor:
            for step in steps:
                x = step(x)
            return x

        segment[0].forward = _checkpointed(run, list(segment))
        for m in segment[1:]:
            m.forward = _identity
    return len(segments)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
