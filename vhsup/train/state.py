"""Run state: what a checkpoint saves, and what resuming restores.

A checkpoint (:mod:`vhsup.train.checkpoint` writes the file) holds the
run's counters (:class:`RunState`), G, its EMA and D, both optimisers and
AMP loss scalers, and every random stream: the data order, each process's
crop and degradation streams, the global CPU (and each process's CUDA)
state, the sampler's queue. Restoring all of them is what makes a run
resumed from step N reproduce the uninterrupted one bit for bit on the CPU.
:func:`resume_config` reads back the config a run was saved with.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vhsup.errors import VhsupError
from vhsup.train import checkpoint as ckpt
from vhsup.train.config import RESUMABLE, TrainConfig, config_dict
from vhsup.train.data import PatchSampler, TrainData, derive_seed
from vhsup.train.distributed import Dist
from vhsup.train.nets import Nets

__all__ = ["RunState", "load_run", "resume_config", "save_run"]


@dataclass
class RunState:
    """Where a run stands: the steps done and the best validation so far."""

    step: int = 0
    best_psnr: float = -math.inf
    best_step: int | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    skipped_steps: int = 0

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> RunState:
        return cls(
            step=int(meta["step"]),
            best_psnr=meta["best_psnr"] if meta.get("best_psnr") is not None else -math.inf,
            best_step=meta.get("best_step"),
            best_metrics=meta.get("best_metrics") or {},
            skipped_steps=int(meta.get("skipped_steps", 0)),
        )


def save_run(
    run_dir: Path,
    cfg: TrainConfig,
    state: RunState,
    nets: Nets,
    data: TrainData,
    *,
    dist: Dist,
    device: torch.device,
    arch: str,
    hyper: dict[str, Any],
) -> Path | None:
    """Write a checkpoint of the current step (process 0; every process must
    call this, as the per-process random states are gathered), then prune
    the older ones."""
    states = dist.gather(_process_rngs(data, device))
    if not dist.main:
        return None
    extra = _rng_tensors(states, data.sampler)
    optimizers = {"opt_G": nets.opt_g.state_dict()}
    if nets.opt_d is not None:
        optimizers["opt_D"] = nets.opt_d.state_dict()
    meta = {
        "step": state.step,
        "epoch": data.sampler.epoch,
        "world": dist.world,
        "best_psnr": state.best_psnr if math.isfinite(state.best_psnr) else None,
        "best_step": state.best_step,
        "best_metrics": state.best_metrics,
        "skipped_steps": state.skipped_steps,
        "scaler_G": nets.scaler_g.state_dict() if nets.scaler_g.is_enabled() else None,
        "scaler_D": nets.scaler_d.state_dict() if nets.scaler_d.is_enabled() else None,
        "arch": arch,
        "hyper": hyper,
        "config": config_dict(cfg),
    }
    path = ckpt.save_checkpoint(
        ckpt.checkpoint_path(run_dir, state.step),
        models=nets.models(),
        optimizers=optimizers,
        extra_tensors=extra,
        meta=meta,
    )
    ckpt.prune_checkpoints(run_dir, cfg.keep, state.best_step)
    return path


def load_run(
    path: Path,
    nets: Nets,
    data: TrainData,
    *,
    dist: Dist,
    device: torch.device,
    seed: int,
    notice: Callable[[str], None],
) -> RunState:
    """Restore a checkpoint into a freshly set-up run; returns its state."""
    models, other, meta = ckpt.load_checkpoint(path)
    try:
        _load_nets(nets, models, meta["optimizers"])
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VhsupError(f"checkpoint does not fit this run: {first}", path) from None
    if meta.get("scaler_G") and nets.scaler_g.is_enabled():
        nets.scaler_g.load_state_dict(meta["scaler_G"])
    if meta.get("scaler_D") and nets.scaler_d.is_enabled():
        nets.scaler_d.load_state_dict(meta["scaler_D"])
    _restore_rngs(other, meta, data, dist=dist, device=device, seed=seed, notice=notice)
    return RunState.from_meta(meta)


def _load_nets(nets: Nets, models: dict[str, dict[str, torch.Tensor]], optimizers: dict[str, Any]) -> None:
    nets.G.load_state_dict(models["G"], strict=True)
    nets.ema.load_state_dict(models["G_ema"], strict=True)
    # A checkpoint from a run that had no GAN stage (yet) has no D: the
    # fresh, seeded D is then exactly what an uninterrupted run would
    # hold, as D never changes before its stage starts.
    if nets.D is not None and "D" in models:
        nets.D.load_state_dict(models["D"], strict=True)
    nets.opt_g.load_state_dict(optimizers["opt_G"])
    if nets.opt_d is not None and "opt_D" in optimizers:
        nets.opt_d.load_state_dict(optimizers["opt_D"])


def _process_rngs(data: TrainData, device: torch.device) -> dict[str, torch.Tensor | None]:
    """This process's own random streams (gathered to process 0 for saving)."""
    return {
        "crop": data.sampler.crop_gen.get_state(),
        "degrade": data.degrade_gen.get_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _rng_tensors(states: list[dict[str, torch.Tensor | None]], sampler: PatchSampler) -> dict[str, torch.Tensor]:
    """The random streams and the data queue as checkpoint tensors."""
    extra = {
        "rng.order": sampler.order_gen.get_state(),
        "rng.torch_cpu": torch.get_rng_state(),
        "data.queue": torch.tensor(sampler.queue, dtype=torch.int64),
    }
    for r, st in enumerate(states):
        for name in ("crop", "degrade", "cuda"):
            value = st[name]
            if value is not None:
                extra[f"rng.{name}.{r}"] = value
    return extra


def _restore_rngs(
    other: dict[str, torch.Tensor],
    meta: dict[str, Any],
    data: TrainData,
    *,
    dist: Dist,
    device: torch.device,
    seed: int,
    notice: Callable[[str], None],
) -> None:
    """The streams as saved; a run resumed on another number of processes
    continues the crops and degradations from fresh streams (said once)."""
    r = dist.rank
    sampler = data.sampler
    sampler.order_gen.set_state(other["rng.order"])
    sampler.queue = [int(v) for v in other["data.queue"].tolist()]
    sampler.epoch = int(meta.get("epoch", 0))
    torch.set_rng_state(other["rng.torch_cpu"])
    if f"rng.crop.{r}" in other and int(meta.get("world", 1)) == dist.world:
        sampler.crop_gen.set_state(other[f"rng.crop.{r}"])
        data.degrade_gen.set_state(other[f"rng.degrade.{r}"])
        if device.type == "cuda" and f"rng.cuda.{r}" in other:
            torch.cuda.set_rng_state(other[f"rng.cuda.{r}"], device)
    else:
        notice(
            f"the checkpoint was written by {meta.get('world', 1)} processes and this run has "
            f"{dist.world}: crops and degradations continue from fresh random streams"
        )
        sampler.crop_gen.manual_seed(derive_seed(seed, "crop", r, "resumed", dist.world))
        data.degrade_gen.manual_seed(derive_seed(seed, "degrade", r, "resumed", dist.world))


def resume_config(run_dir: Path, changes: dict[str, Any]) -> tuple[TrainConfig, Path]:
    """The config stored in a run's newest checkpoint with ``changes`` (only
    :data:`RESUMABLE` keys may differ), and that checkpoint's path."""
    path = ckpt.latest_checkpoint(run_dir)
    _m, _o, meta = ckpt.load_checkpoint(path)
    flat: dict[str, Any] = {}
    for section, table in meta["config"].items():
        if section == "degradation":
            flat["degradation"] = table
        else:
            flat.update(table)
    unknown = sorted(set(flat) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise VhsupError(f"the checkpoint's config has settings this vhsup does not know ({', '.join(unknown)})", path)
    cfg = TrainConfig(**flat)
    for key, value in changes.items():
        if value is None or key in ("out",):
            continue
        if key == "preset":
            if value != cfg.degradation.get("preset"):
                raise VhsupError(
                    f"--degradation cannot change when resuming (the run uses "
                    f"{cfg.degradation.get('preset')!r}); start a new run instead",
                    run_dir,
                )
            continue
        if key in RESUMABLE:
            cfg = cfg.replace(**{key: value})
        elif getattr(cfg, key) != value:
            raise VhsupError(
                f"--{key.replace('_', '-')} cannot change when resuming (the run uses "
                f"{getattr(cfg, key)!r}): only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} "
                f"can; start a new run with --config {Path(run_dir) / 'config.toml'} --out NEW",
                run_dir,
            )
    return cfg.replace(out=os.fspath(Path(run_dir).resolve())), path
