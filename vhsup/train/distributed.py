"""Training on several processes under torchrun (DDP), and the device each uses.

A run started without torchrun is a world of one: every helper here then
does nothing (no process group, no wrapper, no collective), so the loop
reads the same either way. Under torchrun each process trains on its own
GPU (its local rank picks it), gradients are averaged by DDP, and what DDP
does not keep equal by itself (buffers, loss agreement, random states for
the checkpoint) goes through the collectives below.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vhsup.errors import VhsupError

__all__ = ["Dist", "pick_device"]


class Dist:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0) if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0) if self.world > 1 else 0
        self.started_here = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if not self.active or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_dt.timedelta(minutes=60))
        self.started_here = True

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module as its training forward runs it: under DDP, wrapped so
        its gradients are averaged over the processes."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids, broadcast_buffers=True)

    def no_sync(self, module: nn.Module, last: bool) -> AbstractContextManager[Any]:
        """A micro-batch's backward: only the last one of a step all-reduces."""
        if self.active and not last:
            no_sync: Any = module.no_sync  # DDP's; the plain module has none and never gets here
            return no_sync()
        return contextlib.nullcontext()

    def broadcast_buffers(self, module: nn.Module | None) -> None:
        """Process 0's buffers (BatchNorm statistics, switch-norm state) everywhere,
        so the EMA, computed on every process, stays identical."""
        if module is None or not self.active:
            return
        groups: dict[torch.dtype, list[torch.Tensor]] = {}
        for b in module.buffers():
            groups.setdefault(b.dtype, []).append(b)
        with torch.no_grad():
            for tensors in groups.values():  # one collective per dtype, not one per buffer
                flat = torch.cat([t.reshape(-1) for t in tensors])
                dist.broadcast(flat, src=0)
                offset = 0
                for t in tensors:
                    t.copy_(flat[offset : offset + t.numel()].view_as(t))
                    offset += t.numel()


def pick_device(spec: str, d: Dist) -> torch.device:
    """The device ``--device`` names ("auto": CUDA when there is one); under
    torchrun, the GPU of this process's local rank."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VhsupError(f"--device {spec}: CUDA is not available on this machine")
        if d.active:  # one GPU per process: torchrun's local rank picks it
            index = d.local_rank
        else:
            index = int(spec.split(":", 1)[1]) if ":" in spec else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise VhsupError(f"--device {spec}: there are only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if spec != "cpu":
        raise VhsupError(f"--device {spec}: expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")
