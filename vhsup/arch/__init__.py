"""Network architectures vhsup can run. They know nothing about video.

Every generator takes float32 (N, C, H, W) in [0, 1] and returns the
upscaled picture unclamped; the caller clamps and quantises. The
discriminators (only for GAN training) take pictures on the same scale and
return logits.
"""

from __future__ import annotations

from torch import nn

from .classical import Bicubic, Lanczos, Rescaled, resample_macs_per_px
from .compact import SRVGGNetCompact
from .discriminators import SRGANDiscriminator, UNetDiscriminatorSN
from .mesrgan import MESRGAN
from .resunet import ResUNet
from .rrdbnet import RRDBNet
from .srresnet import SRResNet
from .switched import convert_to_switched
from .switchedsr import SwitchedSR

ARCHS = ("rrdbnet", "compact", "srresnet", "mesrgan", "resunet", "switchedsr", "classical")
_GENERATORS = {
    "rrdbnet": RRDBNet,
    "compact": SRVGGNetCompact,
    "srresnet": SRResNet,
    "mesrgan": MESRGAN,
    "resunet": ResUNet,
    "switchedsr": SwitchedSR,
}
DISCRIMINATORS = {"srgan": SRGANDiscriminator, "unet": UNetDiscriminatorSN}


def build(arch: str, hyper: dict) -> nn.Module:
    """Construct an untrained module from an arch name and its hyperparameters.

    ``hyper`` is the model card's ``[hyper]`` table or what detection found;
    classical models take ``{"kind": "bicubic"|"lanczos", "scale": N}``.
    A ``switched`` entry (``{"breadth": B, "layers": [conv names]}``, from
    detecting a network trained after ``convert_to_switched``) converts
    those convs of the plain network, so its saved weights fit again.
    """
    hyper = dict(hyper)
    switched = hyper.pop("switched", None)
    if switched is not None and arch in _GENERATORS:
        net = _GENERATORS[arch](**hyper)
        layers = set(switched["layers"])
        extra = {"queue": int(switched["queue"])} if "queue" in switched else {}
        done = convert_to_switched(net, breadth=int(switched["breadth"]), predicate=lambda name, _conv: name in layers,
                                   **extra)
        if set(done) != layers:
            missing = ", ".join(sorted(layers - set(done)))
            raise ValueError(f"{arch} with {hyper} has no convs named {missing} to switch")
        return net
    if arch in _GENERATORS:
        return _GENERATORS[arch](**hyper)
    if arch == "classical":
        cls = {"bicubic": Bicubic, "lanczos": Lanczos}[hyper["kind"]]
        return cls(int(hyper["scale"]))
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


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
    "resample_macs_per_px",
]
