"""The reference switched convolution: every expert as a dense conv, then a mask.

It spends ``breadth`` times a dense conv's arithmetic and keeps ``breadth``
outputs alive for autograd, so it is slow and hungry; it is here because it is
obviously right. Every faster path is tested against it, and it is what runs
where nothing better is available.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def switched_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
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
    assert out is not None  # a switched conv has at least one expert
    return out


def switched_conv2d_stacked(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """The same function as one conv over all experts' kernels, then a gather.

    What ONNX export uses: only standard operators (Conv, Reshape,
    Equal, Where, ReduceSum), and one wide conv instead of ``breadth`` narrow ones,
    which onnxruntime and TensorRT run better. Still ``breadth`` times a
    dense conv's arithmetic: no ONNX operator picks a kernel per pixel.
    """
    b, cout = weight.shape[:2]
    y = F.conv2d(
        x,
        weight.reshape(b * cout, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        stride=stride,
        padding=padding,
    )
    y = y.reshape(y.shape[0], b, cout, y.shape[2], y.shape[3])
    chosen = (index.unsqueeze(1) == torch.arange(b, device=index.device).view(1, b, 1, 1)).unsqueeze(2)
    # where, not a product: an inf in an expert not chosen must not become NaN
    return torch.where(chosen, y, torch.zeros((), dtype=y.dtype, device=y.device)).sum(1)
