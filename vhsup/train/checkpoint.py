"""Training checkpoints as single safetensors files.

A checkpoint holds everything a resumed run needs to continue bit for bit:
the generator, its EMA, the discriminator, both optimisers, the GradScaler,
the step, every random generator's state and the resolved config. Tensors
go into the safetensors body under prefixed names (``G.``, ``G_ema.``,
``D.``, ``opt_G.state.<i>.<name>``, ``rng.<name>``); everything else
(optimiser hyperparameters, scalar state, the config, the step) goes as JSON
into the file's metadata. safetensors, unlike pickle, cannot run code when a
checkpoint from somewhere else is opened.

Files are ``checkpoints/step-00001000.safetensors`` in the run folder,
written under a temporary name and renamed, so a crash or a full disk
during a save leaves the previous checkpoint as it was. After a save only
the newest ``keep`` and the best one (by validation PSNR-Y) remain.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vhsup.atomic import replacing
from vhsup.errors import VhsupError

__all__ = [
    "CHECKPOINT_DIR",
    "FORMAT",
    "checkpoint_path",
    "flatten_optimizer",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "save_checkpoint",
    "unflatten_optimizer",
]

FORMAT = "vhsup-train-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{int(step):08d}.safetensors"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in a run folder, oldest first.

    Temporary files of an interrupted save (``.step-*.part.safetensors``)
    do not match and are ignored.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        what = (
            "run folder not found" if not Path(run_dir).exists() else "no checkpoints in this run folder to resume from"
        )
        raise VhsupError(what, run_dir)
    return found[-1][1]


def _state_tensors(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors sharing memory and non-contiguous ones;
    # a detached contiguous clone on the CPU is always accepted.
    return {f"{prefix}.{k}": v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def flatten_optimizer(prefix: str, state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser's state_dict as (tensors, JSON-able meta)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{idx}.{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {
        "param_groups": state_dict["param_groups"],
        "scalars": scalars,
        "indices": [int(i) for i in state_dict["state"]],
    }


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {int(i): {} for i in meta["indices"]}
    lead = prefix + ".state."
    for key, value in tensors.items():
        if key.startswith(lead):
            idx, name = key[len(lead) :].split(".", 1)
            state[int(idx)][name] = value
    for idx, values in meta["scalars"].items():
        state[int(idx)].update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    models: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, dict],
    extra_tensors: dict[str, torch.Tensor],
    meta: dict,
) -> Path:
    """Write one checkpoint atomically.

    Args:
        models: ``{"G": state_dict, ...}``.
        optimizers: ``{"opt_G": optimizer.state_dict(), ...}``.
        extra_tensors: RNG states and the like, stored under their own names.
        meta: JSON-able values (step, config, scaler scalars ...).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    info = dict(meta)
    info["models"] = list(models)
    info["optimizers"] = {}
    for name, state in models.items():
        tensors.update(_state_tensors(name, state))
    for name, state in optimizers.items():
        t, m = flatten_optimizer(name, state)
        tensors.update(t)
        info["optimizers"][name] = m
    tensors.update({k: v.detach().to("cpu").contiguous().clone() for k, v in extra_tensors.items()})
    try:
        text = json.dumps(info, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata is not JSON-able: {exc}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VhsupError(f"cannot create the checkpoint folder: {exc.strerror or exc}", path.parent) from None
    with replacing(path, "checkpoint") as tmp:
        save_file(tensors, os.fspath(tmp), metadata={"format": FORMAT, "vhsup": text})
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor], dict]:
    """(models, other tensors, meta) of a checkpoint; optimiser states are in
    ``meta["optimizers"][name]`` rebuilt with :func:`unflatten_optimizer`
    (the flat tensors are among the other tensors)."""
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(os.fspath(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise VhsupError(f"not a readable checkpoint: {exc}", path) from None
    if header.get("format") != FORMAT:
        raise VhsupError(f"not a vhsup training checkpoint (format {header.get('format')!r})", path)
    meta = json.loads(header["vhsup"])
    models: dict[str, dict[str, torch.Tensor]] = {}
    other: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head in meta.get("models", ()):
            models.setdefault(head, {})[rest] = value
        else:
            other[key] = value
    for name, m in meta.get("optimizers", {}).items():
        meta["optimizers"][name] = unflatten_optimizer(name, other, m)
    return models, other, meta


def prune_checkpoints(run_dir: str | os.PathLike[str], keep: int, best_step: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints and the best one; returns what was deleted."""
    found = list_checkpoints(run_dir)
    keep_steps = {s for s, _ in found[-keep:]} if keep > 0 else set()
    if best_step is not None:
        keep_steps.add(int(best_step))
    gone = []
    for step, p in found:
        if step not in keep_steps:
            try:
                p.unlink()
                gone.append(p)
            except FileNotFoundError:
                pass
    return gone
