"""The reference switched convolution: every expert as a dense conv, then a mask.

It spends ``breadth`` times a dense conv's arithmetic and keeps ``breadth``
outputs alive for autograd, so it is slow and hungry; it is here because it is
obviously right. Every faster path is tested against it, and it is what runs
where nothing better is available.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def switched_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, index: torch.Tensor,
                    stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``out[n, :, y, x] = conv2d(x, weight[e], bias[e])[n, :, y, x]`` with ``e = index[n, y, x]``.

    Plain differentiable torch (x, weight and bias get their gradients from
    autograd). ``torch.where`` rather than a multiplication by a 0/1 mask, so
    an inf or NaN in an expert that was not chosen cannot leak into the output.
    """
    out = None
    for e in range(weight.shape[0]):
        y = F.conv2d(x, weight[e], None if bias is None else bias[e], stride=stride, padding=padding)
        if out is None:
            out = torch.zeros_like(y)
        out = torch.where((index == e).unsqueeze(1), y, out)
    return out
