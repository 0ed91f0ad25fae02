"""The training configuration: one TOML file holds every hyperparameter.

A run is fully described by a :class:`TrainConfig`. It comes from, in order
of precedence: command-line flags, a ``--config`` TOML file, and the
defaults declared once in :data:`FIELDS` (with their type, bounds and help),
so the validator, the CLI help and the ``config.toml`` written into the run
folder cannot drift apart. The run folder's copy is fully resolved (every
key, absolute paths, the degradation spec expanded), which is what makes
``vhsup train --config runs/x/config.toml --out runs/y`` (or the same under
torchrun) repeat a run.

TOML layout (every table and key optional)::

    [run]          model, from_scratch, switched, switched_breadth, switched_layers,
                   out, seed, device, steps, quiet
    [data]         mode, frames, lr, hr, patch, batch, val_frames, val_split, val_crop, small, cache_mb
    [train]        pixel_steps, learning_rate, betas, milestones, gamma, ema, accumulate,
                   precision, checkpointing, channels_last, clip_grad
    [loss]         pixel, pixel_weight, perceptual, perceptual_weight, perceptual_weights,
                   gan, gan_weight, discriminator, d_feat, tc_start, tc_weight, tc_shift
    [log]          val_every, save_every, keep, tensorboard
    [degradation]  passed to vhsup.train.degrade.load_spec (``preset`` picks the base)

Relative paths in a config file are relative to the file's folder (so a
config travels with its data); paths on the command line are relative to
the current directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhsup.errors import VhsupError

__all__ = [
    "FIELDS",
    "SECTIONS",
    "TrainConfig",
    "load_config",
    "check_flags",
    "resolve",
    "config_dict",
    "config_toml",
    "Field",
]


@dataclass(frozen=True)
class Field:
    """One hyperparameter: where it lives in the TOML and what it may hold.

    kind: 'bool', 'int', 'float', 'str', 'path', 'choice', 'floats' (a list
    of ``length`` numbers), 'ints' (a list of whole numbers).
    """

    section: str
    default: Any
    kind: str
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    length: int | None = None


_F = Field
FIELDS: dict[str, Field] = {
    # [run]
    "model": _F(
        "run", "", "str", "model name or weights file to start from (default: esrgan-x4 on CUDA, compact-x4 on CPU)"
    ),
    "from_scratch": _F("run", False, "bool", "random initialisation even when the model has pretrained weights"),
    "switched": _F(
        "run",
        False,
        "bool",
        "convert chosen convs of the starting model to switched convs (each "
        "kernel copied across the breadth: same output at first), then train on",
    ),
    "switched_breadth": _F("run", 8, "int", "kernels per converted switched conv", 2, 64),
    "switched_layers": _F(
        "run",
        "",
        "str",
        "comma-separated fnmatch patterns over conv names choosing which "
        "convs the switched conversion takes, e.g. 'body.*' (default: the trunk's 3x3 convs)",
    ),
    "out": _F("run", "", "path", "run folder (checkpoints, metrics, best.safetensors)"),
    "seed": _F("run", 0, "int", "seed of every random choice (init, data order, crops, degradations)", 0, 2**62),
    "device": _F("run", "auto", "str", "auto, cpu, cuda or cuda:N (under torchrun: the local rank's GPU)"),
    "steps": _F("run", 20000, "int", "optimiser steps in all (pixel stage + GAN stage)", 1, 10**9),
    "quiet": _F("run", False, "bool", "no progress display"),
    # [data]
    "mode": _F(
        "data",
        "auto",
        "choice",
        "synthetic: HR frames degraded on the fly; paired: lr/hr folders; "
        "self: your own low-quality frames are the targets, degraded further for inputs; "
        "auto: paired when lr/hr are set",
        choices=("auto", "synthetic", "paired", "self"),
    ),
    "frames": _F("data", "", "path", "folder of HR frames (synthetic and self modes: LR made on the fly)"),
    "lr": _F("data", "", "path", "folder of LR frames (paired mode)"),
    "hr": _F("data", "", "path", "folder of HR frames with the same names (paired mode)"),
    "patch": _F("data", 256, "int", "HR patch side in pixels (a multiple of the scale)", 8, 4096),
    "batch": _F("data", 4, "int", "patches per micro-batch per process", 1, 4096),
    "val_frames": _F(
        "data", "", "path", "held-out validation frames (default: hold out val_split of the training frames)"
    ),
    "val_split": _F(
        "data", 0.02, "float", "fraction of frames held out when val_frames is not set (at least 1)", 0.0, 0.5
    ),
    "val_crop": _F(
        "data", 512, "int", "validate on a centred crop this many HR pixels wide and high (0 = whole frames)", 0, 16384
    ),
    "small": _F(
        "data",
        "error",
        "choice",
        "frames smaller than the patch: error, or skip them with a notice",
        choices=("error", "skip"),
    ),
    "cache_mb": _F("data", 2048, "int", "keep decoded frames in memory up to this many MB", 0, 10**7),
    # [train]
    "pixel_steps": _F(
        "train",
        -1,
        "int",
        "steps of the pixel-loss stage before the GAN stage "
        "(-1 = 0 from pretrained weights, half the steps from scratch)",
        -1,
        10**9,
    ),
    "learning_rate": _F("train", 1e-4, "float", "Adam learning rate of G and D", 0.0, 1.0),
    "betas": _F("train", [0.9, 0.99], "floats", "Adam betas", 0.0, 1.0, length=2),
    "milestones": _F(
        "train",
        [],
        "ints",
        "steps at which the learning rate is multiplied by gamma (halved by "
        "default), e.g. 50000,80000 on the command line",
        1,
        10**9,
    ),
    "gamma": _F("train", 0.5, "float", "learning-rate factor at each milestone", 0.0, 1.0),
    "ema": _F(
        "train", 0.999, "float", "decay of the generator's exponential moving average (0 = no averaging)", 0.0, 1.0
    ),
    "accumulate": _F("train", 1, "int", "micro-batches per optimiser step (gradient accumulation)", 1, 4096),
    "precision": _F(
        "train",
        "auto",
        "choice",
        "auto = bf16 on CUDA with bf16 support, fp32 otherwise",
        choices=("auto", "fp32", "bf16", "fp16"),
    ),
    "checkpointing": _F(
        "train", False, "bool", "recompute generator blocks in the backward pass (less memory, more compute)"
    ),
    "channels_last": _F("train", True, "bool", "channels-last memory format for the networks and batches"),
    "clip_grad": _F("train", 0.0, "float", "clip the generator's gradient norm to this (0 = off)", 0.0, 1e9),
    # [loss]
    "pixel": _F("loss", "l1", "choice", "pixel loss", choices=("l1", "charbonnier")),
    "pixel_weight": _F("loss", 1.0, "float", "weight of the pixel loss", 0.0, 1e6),
    "perceptual": _F(
        "loss",
        "auto",
        "choice",
        "perceptual backbone in the GAN stage (auto: resnet18 for unet-x4, else vgg19)",
        choices=("auto", "vgg19", "resnet18", "none"),
    ),
    "perceptual_weight": _F("loss", 1.0, "float", "weight of the perceptual loss", 0.0, 1e6),
    "perceptual_weights": _F(
        "loss", "", "path", "the perceptual backbone's torchvision weights file (default: find or download them)"
    ),
    "gan": _F("loss", True, "bool", "adversarial loss in the second stage"),
    "gan_weight": _F("loss", 0.1, "float", "weight of the adversarial loss", 0.0, 1e6),
    "discriminator": _F(
        "loss",
        "auto",
        "choice",
        "auto: srgan for srgan-x4, else the U-Net with spectral norm",
        choices=("auto", "unet", "srgan"),
    ),
    "d_feat": _F(
        "loss",
        64,
        "int",
        "channels of the discriminator's first conv (64 as published; smaller is cheaper for small generators)",
        4,
        1024,
    ),
    "tc_start": _F(
        "loss", -1, "int", "step from which the translational consistency loss is added (-1 = never)", -1, 10**9
    ),
    "tc_weight": _F("loss", 2.0, "float", "weight of the translational consistency loss", 0.0, 1e6),
    "tc_shift": _F("loss", 8, "int", "LR pixels between the two crops the consistency loss compares", 1, 256),
    # [log]
    "val_every": _F("log", 1000, "int", "validate every N steps (0 = only at the end)", 0, 10**9),
    "save_every": _F("log", 1000, "int", "checkpoint every N steps (and at the end)", 1, 10**9),
    "keep": _F("log", 3, "int", "checkpoints kept besides the best one", 1, 10**6),
    "tensorboard": _F("log", True, "bool", "also log to TensorBoard when it is installed"),
}
SECTIONS = ("run", "data", "train", "loss", "log", "degradation")

# Keys a resumed run may change: they do not alter what is computed at a
# given step, only how long the run goes on and what it reports.
RESUMABLE = ("steps", "quiet", "val_every", "save_every", "keep", "tensorboard")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run (see :data:`FIELDS` for each one)."""

    model: str = FIELDS["model"].default
    from_scratch: bool = False
    switched: bool = False
    switched_breadth: int = 8
    switched_layers: str = ""
    out: str = ""
    seed: int = 0
    device: str = "auto"
    steps: int = 20000
    quiet: bool = False
    mode: str = "auto"
    frames: str = ""
    lr: str = ""
    hr: str = ""
    patch: int = 256
    batch: int = 4
    val_frames: str = ""
    val_split: float = 0.02
    val_crop: int = 512
    small: str = "error"
    cache_mb: int = 2048
    pixel_steps: int = -1
    learning_rate: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.99])
    milestones: list = field(default_factory=list)
    gamma: float = 0.5
    ema: float = 0.999
    accumulate: int = 1
    precision: str = "auto"
    checkpointing: bool = False
    channels_last: bool = True
    clip_grad: float = 0.0
    pixel: str = "l1"
    pixel_weight: float = 1.0
    perceptual: str = "auto"
    perceptual_weight: float = 1.0
    perceptual_weights: str = ""
    gan: bool = True
    gan_weight: float = 0.1
    discriminator: str = "auto"
    d_feat: int = 64
    tc_start: int = -1
    tc_weight: float = 2.0
    tc_shift: int = 8
    val_every: int = 1000
    save_every: int = 1000
    keep: int = 3
    tensorboard: bool = True
    degradation: dict = field(default_factory=dict)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


assert {f.name for f in dataclasses.fields(TrainConfig)} == set(FIELDS) | {"degradation"}
assert all(getattr(TrainConfig(), k) == f.default for k, f in FIELDS.items()), "TrainConfig's defaults are FIELDS'"


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check(name: str, value: Any, where: str, path) -> Any:
    """``value`` for field ``name`` as its kind, or a VhsupError naming ``where``."""
    f = FIELDS[name]

    def bad(why: str) -> VhsupError:
        return VhsupError(f"{where}: {why}", path)

    def number(v, integer: bool):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise bad(f"expected {'a whole number' if integer else 'a number'}, got {v!r}")
        if integer and (isinstance(v, float) and (not math.isfinite(v) or v != int(v))):
            raise bad(f"expected a whole number, got {v!r}")
        if not math.isfinite(v):
            raise bad(f"expected a finite number, got {v!r}")
        v = int(v) if integer else float(v)
        if (f.lo is not None and v < f.lo) or (f.hi is not None and v > f.hi):
            raise bad(f"must be between {f.lo:g} and {f.hi:g}, got {v:g}")
        return v

    if f.kind == "bool":
        if not isinstance(value, bool):
            raise bad(f"expected true or false, got {value!r}")
        return value
    if f.kind in ("int", "float"):
        return number(value, f.kind == "int")
    if f.kind in ("str", "path"):
        if not isinstance(value, str | os.PathLike):
            raise bad(f"expected a string, got {value!r}")
        return os.fspath(value)
    if f.kind == "choice":
        if not isinstance(value, str) or value.lower() not in f.choices:
            raise bad(f"expected one of {', '.join(f.choices)}, got {value!r}")
        return value.lower()
    if f.kind in ("floats", "ints"):
        if not isinstance(value, list | tuple):
            raise bad(f"expected a list, got {value!r}")
        if f.length is not None and len(value) != f.length:
            raise bad(f"expected {f.length} numbers, got {len(value)}")
        values = [number(v, f.kind == "ints") for v in value]
        if f.kind == "ints" and values != sorted(set(values)):
            raise bad(f"expected increasing steps, got {list(value)!r}")
        return values
    raise AssertionError(f.kind)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The flat ``{key: value}`` settings of a TOML config file, validated.

    Relative paths become absolute against the file's folder. The
    ``[degradation]`` table comes back whole under ``"degradation"``; it is
    checked by :func:`resolve` through ``load_spec``.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VhsupError("config file not found", path) from None
    except OSError as exc:
        raise VhsupError(f"cannot read the config file: {exc.strerror or exc}", path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise VhsupError(f"not valid TOML: {exc}", path) from None
    flat: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            if section in FIELDS:
                raise VhsupError(f"{section}: belongs in the [{FIELDS[section].section}] table", path)
            raise VhsupError(
                f"[{section}]: unknown table{_suggest(section, SECTIONS)}; known: {', '.join(SECTIONS)}", path
            )
        if not isinstance(table, dict):
            raise VhsupError(f"{section}: expected a [{section}] table, got {table!r}", path)
        if section == "degradation":
            flat["degradation"] = table
            continue
        for key, value in table.items():
            where = f"{section}.{key}"
            if key not in FIELDS:
                raise VhsupError(
                    f"{where}: unknown key{_suggest(key, [k for k, f in FIELDS.items() if f.section == section])}", path
                )
            if FIELDS[key].section != section:
                raise VhsupError(f"{where}: belongs in the [{FIELDS[key].section}] table", path)
            value = _check(key, value, where, path)
            if FIELDS[key].kind == "path" and value:
                value = os.fspath((path.parent / Path(value).expanduser()).resolve())
            flat[key] = value
    return flat


def check_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given (not None), each checked as its field's kind.

    A bad one is reported as ``--flag-name``; paths become absolute against
    the current directory. ``preset`` (``--degradation``) passes through
    unchecked: ``load_spec`` checks it.
    """
    checked: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key != "preset":
            value = _check(key, value, "--" + key.replace("_", "-"), None)
            if FIELDS[key].kind == "path" and value:
                value = os.fspath(Path(value).expanduser().resolve())
        checked[key] = value
    return checked


def resolve(
    file_values: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
    *,
    config_path: str | os.PathLike[str] | None = None,
) -> TrainConfig:
    """Defaults, overridden by a config file's values, overridden by flags.

    ``flags`` maps field names to values given on the command line (None
    means not given); a bad one is reported as ``--flag-name``. Paths given
    as flags become absolute against the current directory. The degradation
    table is validated here (through ``load_spec``); ``mode`` and ``model``
    stay as given ("auto", "") for the trainer to settle against the data
    and the device.
    """
    values: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        if key != "degradation" and key not in FIELDS:
            raise VhsupError(f"{key}: unknown key", config_path)
        values[key] = value
    given = check_flags(flags or {})
    if "preset" in given:
        values["degradation"] = {**values.get("degradation", {}), "preset": given.pop("preset")}
    values.update(given)
    from vhsup.train.degrade import load_spec

    degradation = dict(values.get("degradation") or {})
    spec = load_spec(str(degradation.pop("preset", "vhs")), degradation, path=config_path)
    values["degradation"] = spec.to_dict()
    return TrainConfig(**values)


def config_dict(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """The config as nested TOML tables, in :data:`SECTIONS` order."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, f in FIELDS.items():
        value = getattr(cfg, key)
        out[f.section][key] = list(value) if isinstance(value, list | tuple) else value
    out["degradation"] = dict(cfg.degradation)
    return out


def config_toml(cfg: TrainConfig, *, header: str = "") -> str:
    """TOML text that :func:`load_config` + :func:`resolve` read back to ``cfg``."""
    from vhsup.train.card import dump_toml

    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return ("\n".join(lines) + "\n" if lines else "") + dump_toml(config_dict(cfg))
