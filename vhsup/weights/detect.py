"""Tell which network a state dict belongs to, and with which sizes.

Checkpoints carry no architecture description, only key names and tensor
shapes. Each architecture's spec (:data:`vhsup.arch.SPECS`) knows its keys
and reads its hyperparameters from the shapes; this module asks them in
order. Older published layouts (the original ESRGAN's ``model.0``,
``model.1.sub.N.RDB1.conv1.0``, ...) are renamed first, so everything after
detection sees one naming.
"""

from __future__ import annotations

import os

import torch

from ..arch import SPECS
from ..arch.spec import StateDict, unknown
from ..arch.switched import SWITCHED_HYPER, unswitch_state_dict

__all__ = ["SWITCHED_HYPER", "canonical", "detect"]


def canonical(state_dict: StateDict, path: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """The state dict under its architecture's own key names (old layouts renamed)."""
    for spec in SPECS:
        if spec.legacy is not None and (renamed := spec.legacy(state_dict, path)) is not None:
            return renamed
    return state_dict  # type: ignore[return-value]


def detect(state_dict: StateDict, path: str | os.PathLike[str] | None = None) -> tuple[str, dict]:
    """Return ``(arch, hyperparameters)`` for a state dict.

    ``arch`` is the id of one of :data:`vhsup.arch.SPECS`; the
    hyperparameters are the constructor arguments of its module. Old
    layouts are accepted (pass the dict through :func:`canonical` before
    loading it into the module). ``path`` only names the file in errors.

    Any of them with some convs converted to switched convs (``vhsup train
    --switched``) is detected as its plain architecture, with the extra
    hyperparameter ``switched = {"breadth": B, "layers": [conv names]}``
    (and ``queue`` when its switch norm remembers other than 256 batches)
    that :func:`vhsup.arch.build` turns back into the converted network.
    """
    sd = canonical(state_dict, path)
    for spec in SPECS:
        if spec.switched_native and spec.detects(sd):
            return spec.name, spec.read_hyper(sd, path)  # type: ignore[misc]
    unswitched = unswitch_state_dict(sd, path)
    if unswitched is not None:
        plain, conversion = unswitched
        arch, hyper = _detect_plain(plain, path)
        return arch, {**hyper, SWITCHED_HYPER: conversion}
    return _detect_plain(sd, path)


def _detect_plain(sd: StateDict, path) -> tuple[str, dict]:
    for spec in SPECS:
        if not spec.switched_native and spec.detects(sd):
            return spec.name, spec.read_hyper(sd, path)  # type: ignore[misc]
    sample = ", ".join(sorted(sd)[:4])
    titles = [s.title for s in SPECS if s.read_hyper is not None]
    raise unknown(path, f"keys like {sample} match none of {', '.join(titles[:-1])} or {titles[-1]}")
