"""Switched convolution kernels: one of ``breadth`` kernels per output pixel.

``switched_conv2d`` is the entry point; it picks an implementation (see
``pick_impl``) or takes the one named. ``reference`` is the dense oracle,
``cpu`` the grouped-GEMM path, ``cuda`` the Triton kernel. The layer that
uses them (selector, switch norm, routing) is vhsup.arch.switched.
"""

from __future__ import annotations

from .op import (
    ENV,
    IMPLS,
    available_impls,
    check_impl,
    fp32_conv_precision,
    pick_impl,
    switched_conv2d,
    switched_fallback,
)

__all__ = [
    "ENV",
    "IMPLS",
    "available_impls",
    "check_impl",
    "fp32_conv_precision",
    "pick_impl",
    "switched_conv2d",
    "switched_fallback",
]
