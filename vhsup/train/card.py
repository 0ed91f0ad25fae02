"""The model card ``vhsup train`` writes beside the weights it exports.

A trained ``best.safetensors`` is a plain weights file: the architecture is
detected from its keys and shapes like any user file. The card beside it
(``best.toml``, the format of the cards in ``models/``) adds what the
weights cannot say: a name, how to tile and in which precisions to run it,
the licence and credits it inherits, and how it was trained. ``vhsup
upscale --model run/best.safetensors`` and ``vhsup models info`` read it
through :func:`vhsup.registry.read_sidecar_card`, which also refuses a card
that contradicts the weights.

Licence: fine-tuned weights are a derivative of the weights they started
from, so the base card's licence carries over ("BSD-3-Clause (derived from
esrgan-x4)"). A network trained from random initialisation owes nothing to
published weights; its licence is left for its owner to choose.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from pathlib import Path

import torch

from vhsup import __version__
from vhsup.atomic import replacing
from vhsup.model_card import ModelCard

__all__ = ["card_name", "dump_toml", "write_model_card"]


def card_name(weights: Path) -> str:
    """The model's name from where its weights live: ``runs/goodeats/best``
    is "goodeats", ``runs/goodeats/step-5000`` is "goodeats-step-5000"."""
    weights = Path(weights).resolve()
    run = weights.parent.name
    if not run:
        return weights.stem
    return run if weights.stem == "best" else f"{run}-{weights.stem}"


def write_model_card(
    weights: Path,
    *,
    arch: str,
    hyper: dict,
    scale: int,
    base: str,
    description: str,
    metrics: dict,
    config: dict,
    name: str | None = None,
    step: int | None = None,
) -> Path:
    """Write ``<weights stem>.toml`` beside ``weights`` and return its path.

    Args:
        weights: the exported weights file (G-EMA, canonical key names).
        arch, hyper: what :func:`vhsup.weights.detect.detect` finds in them.
        scale: the network's factor (must match ``hyper``).
        base: the model training started from: a card name or a weights path.
        description: one line for ``vhsup models list``; empty for a default.
        metrics: the final validation values (``psnr_y``, ``ssim``,
            ``psnr_y_bicubic``, ... and optionally ``step``).
        config: the resolved training config; stored whole, and searched
            for ``frames``, ``mode``, the degradation ``preset``,
            ``from_scratch`` and the step count.
        name: the model's name (default :func:`card_name`).
        step: the training step of these weights (default ``metrics["step"]``,
            else the config's step count).
    """
    from vhsup import registry
    from vhsup.arch import build, spec_named

    weights = Path(weights)
    hyper = _plain(dict(hyper))
    spec = spec_named(arch)
    net_scale = spec.scale(hyper)
    if int(scale) != net_scale:
        raise ValueError(f"scale x{scale} does not match the network's x{net_scale} ({hyper})")
    with torch.device("meta"):
        params = sum(p.numel() for p in build(arch, dict(hyper)).parameters())
    context, multiple, macs = spec.context(hyper), spec.size_multiple(hyper), spec.macs(hyper)

    base = os.fspath(base)
    base_card = _base_card(base)
    same_arch = base_card is not None and base_card.arch == arch
    from_scratch = bool(_pick(config, "from_scratch")) or (base_card is not None and base_card.untrained)
    frames = _pick(config, "frames", "hr", "frames_dir", "hr_dir")
    frames = os.fspath(frames) if isinstance(frames, str | os.PathLike) else "unrecorded frames"
    mode = _pick(config, "mode", "data_mode")
    preset = _pick(config, "preset")
    if step is None:
        step = (
            metrics.get("step")
            if isinstance(metrics.get("step"), int)
            else _pick(config, "steps", "total_steps", "max_steps", "iterations")
        )
    verb = "trained from scratch" if from_scratch else "fine-tuned"

    if from_scratch:
        licence = (
            f"unspecified (trained from scratch with vhsup train: the weights are their owner's; "
            f"vhsup's {arch} implementation is BSD-3-Clause)"
        )
    elif base_card is not None and base_card.licence:
        licence = f"{base_card.licence.split(' (')[0]} (derived from {base})"
    else:
        licence = f"unknown (derived from {base}, a weights file without a model card)"
    attribution = list(base_card.attribution) if base_card is not None else []
    if base_card is None:
        attribution.append(f"base weights: {base}")
    attribution.append(f"{verb} with vhsup train on {frames}")

    values = {str(k): _number(v) for k, v in metrics.items() if k != "step"}
    card = {
        "name": name or card_name(weights),
        "arch": arch,
        "scale": int(scale),
        "description": description or f"{arch} x{scale} {verb} from {base} on {frames}",
        "params": int(params),
        "macs_per_px": float(macs) if macs != int(macs) else int(macs),
        "context": int(context),
        "size_multiple": int(multiple),
        # The base card's precision flags were measured on that network and
        # hold for its fine-tunes; otherwise the architecture's say.
        "supports_half": base_card.supports_half if base_card is not None and same_arch else spec.supports_half,
        "supports_bfloat16": (
            base_card.supports_bfloat16 if base_card is not None and same_arch else spec.supports_bfloat16
        ),
        "licence": licence,
        "attribution": attribution,
        "notes": _notes(verb, base, frames, step, mode, preset, values),
        "hyper": hyper,
        "training": {
            "base": base,
            "from_scratch": from_scratch,
            "steps": step,
            "mode": mode,
            "degradation": preset,
            "frames": frames,
            "date": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            "vhsup": __version__,
            "metrics": values,
            "config": _plain(config),
        },
    }
    path = registry.sidecar_card_path(weights)
    text = (
        "# Model card written by `vhsup train`; `vhsup upscale --model` and `vhsup models info`\n"
        f"# read it beside {weights.name}. Edit name, description or context freely;\n"
        "# arch, scale and [hyper] must keep matching the weights.\n" + dump_toml(card)
    )
    with replacing(path, "model card") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _notes(verb, base, frames, step, mode, preset, m: dict) -> str:
    parts = [f"{verb.capitalize()} from {base} by vhsup train"]
    if step is not None:
        parts.append(f" for {step} steps")
    parts.append(f" on {frames}")
    detail = ", ".join(x for x in (f"{mode} data" if mode else "", f"{preset} degradation" if preset else "") if x)
    parts.append(f" ({detail})." if detail else ".")
    if isinstance(m.get("psnr_y"), float):
        line = f" Held-out validation: PSNR-Y {m['psnr_y']:.2f} dB"
        refs = [
            f"{label} {m[key]:.2f}"
            for key, label in (("psnr_y_bicubic", "bicubic"), ("psnr_y_start", "start"))
            if isinstance(m.get(key), float)
        ]
        line += f" ({', '.join(refs)})" if refs else ""
        if isinstance(m.get("ssim"), float):
            line += f", SSIM {m['ssim']:.4f}"
        parts.append(line + ".")
    return "".join(parts)


def _base_card(base: str) -> ModelCard | None:
    from vhsup import registry

    if base in registry.model_names():
        return registry.card(base)
    found = registry.read_sidecar_card(base) if Path(base).suffix else None
    return found[0] if found else None


def _pick(config: dict, *names: str):
    """The first of ``names`` set in ``config`` or in one of its tables
    (the trainer's config keeps them in [run], [data], [degradation]);
    None and "" (an option left unset) do not count."""
    for table in (config, *(v for v in config.values() if isinstance(v, dict))):
        for name in names:
            if table.get(name) not in (None, ""):
                return table[name]
    return None


def _number(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    return float(value)


def _plain(value):
    """Config values as TOML can hold them: paths as strings, tuples as lists,
    tensors and numpy scalars as numbers; None (TOML has no null) is left out."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


# --- a small TOML writer (tomllib only reads) ---------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    # JSON string escapes are TOML basic-string escapes; TOML also wants DEL
    # escaped, and ensure_ascii=False keeps non-BMP characters whole (JSON's
    # surrogate-pair escapes are not valid TOML).
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, _dt.datetime | _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write a {type(v).__name__} to TOML: {v!r}")


def dump_toml(data: dict) -> str:
    """TOML text for a dict of str keys and TOML-able values (None is skipped).

    Scalars and arrays first, then one ``[table]`` per nested dict, so the
    output reads like the hand-written cards in ``models/``.
    """
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], keys: list[str], table: dict) -> None:
    scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, dict)]
    subs = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    if keys and (scalars or not subs):
        lines.append("")
        lines.append("[" + ".".join(_key(str(k)) for k in keys) + "]")
    for k, v in scalars:
        text = _value(v)
        if isinstance(v, list) and len(v) > 1 and len(text) > 100:
            # Long arrays (attribution) one item a line, as the hand-written cards have them.
            text = "[\n" + "".join(f"    {_value(x)},\n" for x in v) + "]"
        lines.append(f"{_key(str(k))} = {text}")
    for k, v in subs:
        _table(lines, [*keys, k], v)
