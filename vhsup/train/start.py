"""Where a run starts: the generator it trains, and its config settled on it.

The generator is a registered model (its pretrained weights, or a seeded
random initialisation when it has none or ``--from-scratch`` asks) or a
weights file of one of vhsup's own architectures; ``--switched`` then
converts some of its convs (:mod:`vhsup.train.switched`). Every "auto" of
the config is then decided against that network, so the run folder's
config.toml says what the run really used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from vhsup import registry
from vhsup.arch import spec_named
from vhsup.errors import UnknownArchitecture, VhsupError
from vhsup.train.config import TrainConfig
from vhsup.train.data import derive_seed
from vhsup.train.switched import Switched, switch

__all__ = ["Start", "settle", "starting_model"]


@dataclass
class Start:
    """The generator a run starts from."""

    net: nn.Module  # fp32, CPU; converted already when switched
    arch: str
    hyper: dict[str, Any]
    base: str  # the model's name, or its weights file's resolved path (config.toml's model)
    pretrained: bool  # trained weights, not a random initialisation
    scale: int
    size_multiple: int  # LR sides must be multiples of this
    note: str  # where the weights came from, for the user
    switched: Switched | None = None


class _Origin(NamedTuple):
    loaded: registry.LoadedModel
    arch: str
    hyper: dict[str, Any]
    base: str
    pretrained: bool
    note: str


def starting_model(cfg: TrainConfig, device: torch.device, *, allow_download: bool, keep_plain: bool) -> Start:
    """The starting generator ``cfg.model`` names (the device's default model
    when empty). ``keep_plain``: keep the unconverted network of a switched
    run (for validation's comparison with the start)."""
    from vhsup.arch.classical import Rescaled

    spec = cfg.model or registry.default_model(device.type == "cuda")
    seed = derive_seed(cfg.seed, "G")
    if spec in registry.model_names():
        origin = _from_card(spec, cfg, seed, allow_download)
    else:
        origin = _from_file(spec, cfg, seed)
    loaded = origin.loaded
    if isinstance(loaded.module, Rescaled):  # a card we did not foresee; never train the resize
        raise VhsupError(f"{spec} wraps its network in a resize; train the network at its own scale instead")
    start = Start(
        net=loaded.module,
        arch=origin.arch,
        hyper=origin.hyper,
        base=origin.base,
        pretrained=origin.pretrained,
        scale=int(loaded.descriptor.scale),
        size_multiple=max(1, int(loaded.descriptor.size_multiple)),
        note=origin.note,
    )
    start.switched = switch(start.net, cfg, start.arch, start.base, keep_plain=keep_plain)
    if start.switched is not None:
        start.arch, start.hyper = start.switched.arch, start.switched.hyper
    return start


def _from_card(spec: str, cfg: TrainConfig, seed: int, allow_download: bool) -> _Origin:
    c = registry.card(spec)
    if spec_named(c.arch).weightless:
        raise VhsupError(f"{spec} is a fixed resampler with nothing to train; pick a network such as compact-x4")
    net_scale = spec_named(c.arch).scale(c.hyper)
    if c.scale != net_scale:
        raise VhsupError(
            f"{spec} is the x{net_scale} network followed by a resize to x{c.scale}; vhsup trains networks "
            f"at their own scale: train the x{net_scale} model (e.g. compact-x{net_scale}) instead"
        )
    pretrained = registry.has_pretrained_weights(spec) and not cfg.from_scratch
    if pretrained:
        loaded = registry.load_model(spec, allow_download=allow_download)
        note = f"starting from {spec}'s pretrained weights"
    else:
        loaded = registry.build_model(spec, seed=seed)
        note = (
            f"{spec} has no pretrained weights: training from random initialisation"
            if not registry.has_pretrained_weights(spec)
            else f"training {spec} from random initialisation (--from-scratch)"
        )
    return _Origin(loaded, c.arch, dict(c.hyper), spec, pretrained, note)


def _from_file(spec: str, cfg: TrainConfig, seed: int) -> _Origin:
    from vhsup.weights.detect import canonical, detect
    from vhsup.weights.safeload import load_state_dict_file

    path = Path(spec).expanduser()
    if not path.is_file():
        raise (
            registry.unknown_model(spec)
            if not registry.looks_like_path(spec)
            else VhsupError("model file not found", path)
        )
    try:
        state = canonical(load_state_dict_file(path), path)
        arch, hyper = detect(state, path)
    except UnknownArchitecture as exc:
        # upscale may still run it through spandrel; training needs vhsup's own networks
        raise VhsupError(
            f"vhsup train fine-tunes vhsup's own architectures only (ESRGAN/RRDBNet, Compact, "
            f"SRResNet, MESRGAN, ResUNet, switched); {exc.reason}",
            path,
        ) from None
    loaded = registry.load_model(os.fspath(path))
    if cfg.from_scratch:
        from vhsup.arch import build

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loaded.module = build(arch, dict(hyper)).float().eval()
        note = f"training a {arch} shaped like {path.name} from random initialisation"
    else:
        note = f"starting from the weights in {path}"
    return _Origin(loaded, arch, hyper, os.fspath(path.resolve()), not cfg.from_scratch, note)


def settle(cfg: TrainConfig, start: Start, device: torch.device) -> tuple[TrainConfig, str]:
    """Every "auto" of ``cfg`` turned into what this run uses, so config.toml
    says it, and the precision the run computes in."""
    changes: dict[str, Any] = {"model": start.base}
    mode = cfg.mode
    if mode == "auto":
        mode = "paired" if (cfg.lr or cfg.hr) else "synthetic"
    if mode == "paired":
        if not (cfg.lr and cfg.hr):
            raise VhsupError("paired training needs both --lr DIR and --hr DIR")
        if cfg.frames:
            raise VhsupError("--frames and --lr/--hr are two different kinds of data: give one of them")
    elif not cfg.frames:
        raise VhsupError(f"{mode} training needs --frames DIR (a folder of pictures; see `vhsup extract`)")
    changes["mode"] = mode
    if cfg.pixel_steps < 0:
        changes["pixel_steps"] = 0 if start.pretrained else cfg.steps // 2
    perceptual = cfg.perceptual
    if perceptual == "auto":
        perceptual = spec_named(start.arch).perceptual
    changes["perceptual"] = perceptual
    if cfg.discriminator == "auto":
        changes["discriminator"] = "srgan" if start.base == "srgan-x4" else "unet"
    _check_sizes(cfg, start)
    cfg = cfg.replace(**changes)
    precision = cfg.precision
    if precision == "auto":
        cuda = device.type == "cuda"
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise VhsupError("--precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return cfg, precision


def _check_sizes(cfg: TrainConfig, start: Start) -> None:
    """The patch and the consistency shift against the network's size multiple."""
    scale, multiple = start.scale, start.size_multiple
    quantum = scale * multiple
    if cfg.patch % quantum:
        raise VhsupError(
            f"--patch {cfg.patch}: must be a multiple of {quantum} for this x{scale} "
            f"{start.arch} (LR patches must be multiples of {multiple})"
        )
    if cfg.tc_start >= 0 and cfg.patch // scale <= 2 * cfg.tc_shift:
        raise VhsupError(
            f"--tc-shift {cfg.tc_shift}: the LR patch ({cfg.patch // scale} px) must be more than twice the shift"
        )
    if cfg.tc_start >= 0 and cfg.tc_shift % multiple:
        raise VhsupError(f"--tc-shift {cfg.tc_shift}: must be a multiple of {multiple} for this {start.arch}")
