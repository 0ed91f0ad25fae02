"""Network architectures vhsup can run. They know nothing about video.

Every module takes float32 (N, C, H, W) in [0, 1] and returns the upscaled
picture unclamped; the caller clamps and quantises.
"""

from __future__ import annotations

from torch import nn

from .classical import Bicubic, Lanczos, Rescaled, resample_macs_per_px
from .compact import SRVGGNetCompact
from .rrdbnet import RRDBNet

ARCHS = ("rrdbnet", "compact", "classical")


def build(arch: str, hyper: dict) -> nn.Module:
    """Construct an untrained module from an arch name and its hyperparameters.

    ``hyper`` is the model card's ``[hyper]`` table or what detection found;
    classical models take ``{"kind": "bicubic"|"lanczos", "scale": N}``.
    """
    if arch == "rrdbnet":
        return RRDBNet(**hyper)
    if arch == "compact":
        return SRVGGNetCompact(**hyper)
    if arch == "classical":
        cls = {"bicubic": Bicubic, "lanczos": Lanczos}[hyper["kind"]]
        return cls(int(hyper["scale"]))
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


__all__ = ["ARCHS", "Bicubic", "Lanczos", "RRDBNet", "Rescaled", "SRVGGNetCompact", "build", "resample_macs_per_px"]
