"""Other runtimes behind the torch-module interface the engine already uses.

A backend's module takes what a registry module takes (float (N,3,H,W) RGB
in [0,1] on the engine's device) and returns what it returns, so
:class:`vhsup.engine.SREngine` drives it unchanged: tiling, batching,
out-of-memory backoff and the NaN guard all stay in one place.
"""

from __future__ import annotations

BACKENDS = ("torch", "onnx")

__all__ = ["BACKENDS"]
