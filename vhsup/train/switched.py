"""``--switched``: training a plain network on with switched convolutions.

The chosen convs of the starting network become switched convs
(:mod:`vhsup.arch.switched`): the trained kernel is copied into every slot
and a fresh selector is seeded from the run's seed, so training goes on from
the same outputs and the copies diverge as it runs. Which convs a network
offers by default is the architecture spec's word (:func:`vhsup.arch.keeps_plain`);
``--switched-layers`` picks others by name pattern.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vhsup.arch import spec_named
from vhsup.errors import VhsupError
from vhsup.train.config import TrainConfig
from vhsup.train.data import derive_seed

__all__ = ["Switched", "brief", "default_switched_layers", "switch"]


@dataclass
class Switched:
    """What ``--switched`` did to the starting network."""

    names: list[str]  # the converted convs
    plain: nn.Module | None  # the network before (on process 0): validation's "start" reference
    arch: str  # the converted network's architecture and hyperparameters
    hyper: dict[str, Any]
    note: str  # one line for the user


def default_switched_layers(net: nn.Module) -> list[str]:
    """The convs ``--switched`` converts when no ``--switched-layers`` are
    given: the trunk's spatial (k > 1) convs that can be converted, i.e.
    every such conv except the network's first and last and its
    upsampler's. 1x1 projections and grouped/depthwise convs stay plain."""
    from vhsup.arch import keeps_plain
    from vhsup.arch.switched import SwitchedConv2d, switched_layers, unconvertible

    inside = tuple(name + "." for name, _ in switched_layers(net))
    order = [
        (n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d | SwitchedConv2d) and not n.startswith(inside)
    ]
    if len(order) < 3:
        return []
    out = []
    for n, m in order[1:-1]:
        if not isinstance(m, nn.Conv2d) or unconvertible(m) is not None or m.kernel_size[0] < 2:
            continue
        if keeps_plain(net, n):  # the upsampler: large maps, where kernels cost most and buy least
            continue
        out.append(n)
    return out


def brief(names: list[str], limit: int = 12) -> str:
    """Names for one line: all of a short list, the ends of a long one."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[: limit - 3]) + ", ..., " + ", ".join(names[-2:]) + f" ({len(names)} in all)"


def switch(net: nn.Module, cfg: TrainConfig, arch: str, base: str, *, keep_plain: bool) -> Switched | None:
    """Convert ``net`` in place as ``cfg`` asks (None: not a switched run).

    ``keep_plain`` keeps a copy of the plain network for validation. The
    selectors are initialised from the run's seed without moving the global
    RNG, so a resumed run builds the same structure.
    """
    from vhsup.arch.switched import convert_to_switched
    from vhsup.weights.detect import detect

    if not cfg.switched:
        if cfg.switched_layers:
            raise VhsupError(
                "--switched-layers chooses the convs that --switched converts: add --switched "
                "(or [run] switched = true)"
            )
        return None
    if spec_named(arch).switched_native:
        raise VhsupError(
            f"{base} is built from switched convs already; --switched converts a plain "
            "network such as compact-x4: train this one without --switched"
        )
    names = {n for n, _ in _chosen(net, cfg, arch)}
    plain = copy.deepcopy(net) if keep_plain else None
    b = cfg.switched_breadth
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "switched"))
        done = convert_to_switched(net, breadth=b, predicate=lambda n, _conv: n in names)
    arch, hyper = detect(net.state_dict())
    note = (
        f"switched: {len(done)} conv{'s' if len(done) != 1 else ''} now hold {b} kernels "
        f"each (copies of the trained one, so the output is unchanged until they diverge): {brief(done)}"
    )
    return Switched(names=done, plain=plain, arch=arch, hyper=hyper, note=note)


def _chosen(net: nn.Module, cfg: TrainConfig, arch: str) -> list[tuple[str, nn.Conv2d]]:
    """The plain convs to convert: those ``--switched-layers`` names, or the defaults."""
    from vhsup.arch.switched import switched_layers, unconvertible

    existing = switched_layers(net)
    old = sorted({m.breadth for _, m in existing})
    if old and old != [cfg.switched_breadth]:
        raise VhsupError(
            f"the model's switched convs have breadth {old[0]}; one model cannot mix breadths: "
            f"give --switched-breadth {old[0]}"
        )
    inside = tuple(name + "." for name, _ in existing)
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith(inside)]
    if not cfg.switched_layers:
        defaults = set(default_switched_layers(net))
        chosen = [(n, m) for n, m in convs if n in defaults]
        if not chosen:
            raise VhsupError(
                f"this {arch} has no trunk convs left to convert"
                + (f" ({len(existing)} are switched already)" if existing else "")
                + "; choose convs with --switched-layers, or train without --switched"
            )
        return chosen
    patterns = [p.strip() for p in cfg.switched_layers.split(",") if p.strip()]
    if not patterns:
        raise VhsupError(f"--switched-layers {cfg.switched_layers!r}: no pattern given")
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n, _ in convs):
            raise VhsupError(
                f"--switched-layers {pat!r} matches no conv of this {arch}; its convs are "
                f"{brief([n for n, _ in convs])}" + (" (the switched ones excluded)" if existing else "")
            )
    chosen = [(n, m) for n, m in convs if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    for n, m in chosen:
        why = unconvertible(m)
        if why:
            raise VhsupError(f"--switched-layers: {n} cannot become a switched conv: {why}")
    return chosen
