"""Network architectures vhsup can run. They know nothing about video.

Every generator takes float32 (N, C, H, W) in [0, 1] and returns the
upscaled picture unclamped; the caller clamps and quantises. The
discriminators (only for GAN training) take pictures on the same scale and
return logits.

Each architecture's module holds its network and its :class:`ArchSpec`
(``SPEC``); :data:`SPECS` lists them in the order detection asks them. A new
architecture is one module here with its ``SPEC``, added to :data:`SPECS`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from torch import nn

from . import classical, compact, mesrgan, resunet, rrdbnet, srresnet, switchedsr
from .classical import Bicubic, Lanczos, Rescaled, resample_macs_per_px
from .compact import SRVGGNetCompact
from .discriminators import SRGANDiscriminator, UNetDiscriminatorSN
from .mesrgan import MESRGAN
from .resunet import ResUNet
from .rrdbnet import RRDBNet
from .spec import Activation, ArchSpec, Blocks, conv_macs_per_px, one_by_one
from .srresnet import SRResNet
from .switched import SWITCHED_HYPER, convert_to_switched
from .switchedsr import SwitchedSR

#: Every architecture, in the order detection asks them: MESRGAN has all of
#: RRDBNet's keys and more, so it comes first. (Networks built of switched
#: convs are asked before a converted network is unswitched, wherever they
#: stand here.)
SPECS: tuple[ArchSpec, ...] = (
    mesrgan.SPEC,
    rrdbnet.SPEC,
    srresnet.SPEC,
    resunet.SPEC,
    switchedsr.SPEC,
    compact.SPEC,
    classical.SPEC,
)
ARCHS = tuple(s.name for s in SPECS)
_BY_NAME = {s.name: s for s in SPECS}
DISCRIMINATORS = {"srgan": SRGANDiscriminator, "unet": UNetDiscriminatorSN}


def spec_named(arch: str) -> ArchSpec:
    """The spec of an architecture id; ValueError for an unknown one."""
    try:
        return _BY_NAME[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}") from None


def find_spec(arch: str) -> ArchSpec | None:
    """The spec of an architecture id in any case, or None. spandrel's id
    for a network vhsup also builds ("Compact") finds vhsup's spec."""
    return _BY_NAME.get(arch.lower())


def spec_of(net: nn.Module) -> ArchSpec | None:
    """The spec of a built network (its exact class), or None."""
    return next((s for s in SPECS if type(net) in s.modules), None)


def build(arch: str, hyper: Mapping) -> nn.Module:
    """Construct an untrained module from an arch name and its hyperparameters.

    ``hyper`` is the model card's ``[hyper]`` table or what detection found;
    classical models take ``{"kind": "bicubic"|"lanczos", "scale": N}``.
    A ``switched`` entry (``{"breadth": B, "layers": [conv names]}``, from
    detecting a network trained after ``convert_to_switched``) converts
    those convs of the plain network, so its saved weights fit again.
    """
    spec = spec_named(arch)
    hyper = dict(hyper)
    switched = hyper.pop(SWITCHED_HYPER, None)
    net = spec.build(**hyper)
    if switched is not None and not spec.weightless:
        layers = set(switched["layers"])
        extra = {"queue": int(switched["queue"])} if "queue" in switched else {}
        done = convert_to_switched(
            net, breadth=int(switched["breadth"]), predicate=lambda name, _conv: name in layers, **extra
        )
        if set(done) != layers:
            missing = ", ".join(sorted(layers - set(done)))
            raise ValueError(f"{arch} with {hyper} has no convs named {missing} to switch")
    return net


def recompute_blocks(net: nn.Module) -> Blocks:
    """The blocks activation checkpointing recomputes in ``net``: its spec's,
    or for a network vhsup does not know, the modules of its ``body`` trunk."""
    spec = spec_of(net)
    if spec is not None:
        return spec.recompute(net)
    body = getattr(net, "body", None)
    return one_by_one(body) if isinstance(body, nn.Sequential | nn.ModuleList) else []


def keeps_plain(net: nn.Module, conv_name: str) -> bool:
    """Whether ``--switched`` leaves this conv plain by default (the
    network's upsampler, by its spec; any spec's for an unknown network)."""
    spec = spec_of(net)
    patterns = spec.plain_convs if spec is not None else tuple(p for s in SPECS for p in s.plain_convs)
    return any(fnmatch.fnmatchcase(conv_name, p) for p in patterns)


def build_discriminator(kind: str, **kwargs) -> nn.Module:
    """A fresh discriminator for GAN training: 'srgan' (one logit per
    picture) or 'unet' (Real-ESRGAN's, one logit per pixel)."""
    if kind not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {kind!r}; known: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[kind](**kwargs)


__all__ = [
    "ARCHS",
    "DISCRIMINATORS",
    "MESRGAN",
    "SPECS",
    "Activation",
    "ArchSpec",
    "Bicubic",
    "Lanczos",
    "RRDBNet",
    "ResUNet",
    "Rescaled",
    "SRGANDiscriminator",
    "SRResNet",
    "SRVGGNetCompact",
    "SwitchedSR",
    "UNetDiscriminatorSN",
    "build",
    "build_discriminator",
    "conv_macs_per_px",
    "find_spec",
    "keeps_plain",
    "recompute_blocks",
    "resample_macs_per_px",
    "spec_named",
    "spec_of",
]
