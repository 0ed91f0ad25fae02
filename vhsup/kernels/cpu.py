"""The CPU switched convolution: im2col rows grouped by expert, one matmul per expert.

Each output pixel is one row of an im2col matrix with ``K = kh * kw * Cin``
columns. Building that matrix already sorted by expert turns the switched
conv into ``breadth`` ordinary GEMMs on contiguous slices, so the arithmetic
is one dense conv's, where the reference spends ``breadth`` of them.

The rows are gathered straight from a zero-padded channels-last copy of the
input: every tap (dy, dx) of a pixel is a contiguous ``Cin`` vector there, so
one ``index_select`` with ``kh * kw`` indices per pixel writes the sorted
matrix in a single pass (``F.unfold`` followed by a sort reads and writes it
twice in a cache-hostile order; measured 4x slower here). Columns are
therefore ordered (dy, dx, cin) and the weight is permuted to match.

Pixels are processed in chunks whose sorted matrix stays in cache (a few MB):
each chunk is sorted by expert on its own, which keeps the per-expert GEMMs
large enough while the gather, the GEMMs and the scatter reuse what the
previous step left in cache. Measured on this machine (b=8, 64->64, batch 4,
64x64, one thread, forward+backward): 8 MB chunks 113 ms, one 38 MB pass 152 ms.

Backward recomputes the rows from ``x`` instead of saving them (autograd
keeps only ``x``, ``weight`` and ``index``): ``grad_w[e] = grad_e^T @ rows_e``,
``grad_b[e] = sum(grad_e)``, and ``grad_rows_e = grad_e @ W_e`` is
scatter-added (``index_add_``, the transpose of the gather) into the padded
input gradient.

Only plain torch operations, with torch's own threads; the same code runs on
a CUDA tensor (useful for comparisons, not tuned for it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Elements of the sorted im2col matrix per chunk (8 MB in fp32).
CHUNK_ELEMENTS = 1 << 21
# ...but never fewer pixels than this, so each expert's GEMM keeps some rows.
MIN_CHUNK_PIXELS = 1024


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def _padded_cl(x: torch.Tensor, padding: int) -> torch.Tensor:
    """x zero-padded, channels last, flattened to (N * Hp * Wp, C)."""
    xp = F.pad(x, (padding,) * 4) if padding else x
    return xp.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _chunks(pixels: int, k_cols: int):
    per = max(MIN_CHUNK_PIXELS, CHUNK_ELEMENTS // max(1, k_cols))
    for start in range(0, pixels, per):
        yield start, min(pixels, start + per)


class _Plan:
    """Where each expert's pixels are and which input vectors they read, for
    the output pixels [start, end) of the flattened (N, Ho, Wo) index.

    ``order``: flat output-pixel ids of the chunk sorted by expert (stable);
    ``bounds``: each expert's [start, end) in that order; ``taps``: for every
    sorted pixel and every tap (dy, dx), the row of the padded channels-last
    input it reads, flattened to (M * kh * kw,).
    """

    def __init__(
        self,
        flat_index: torch.Tensor,
        start: int,
        end: int,
        breadth: int,
        out_hw: tuple[int, int],
        padded_hw: tuple[int, int],
        kernel: tuple[int, int],
        stride: int,
    ):
        ho, wo = out_hw
        hp, wp = padded_hw
        kh, kw = kernel
        chunk = flat_index[start:end]
        self.order = torch.argsort(chunk, stable=True) + start
        counts = torch.bincount(chunk, minlength=breadth).tolist()
        self.bounds, s = [], 0
        for c in counts:
            self.bounds.append((s, s + c))
            s += c
        img, pix = self.order // (ho * wo), self.order % (ho * wo)
        top_left = img * (hp * wp) + (pix // wo) * (stride * wp) + (pix % wo) * stride
        dev = flat_index.device
        offsets = (torch.arange(kh, device=dev)[:, None] * wp + torch.arange(kw, device=dev)[None, :]).reshape(-1)
        self.taps = (top_left[:, None] + offsets[None, :]).reshape(-1)


def _weight_rows(weight: torch.Tensor) -> torch.Tensor:
    """(B, Cout, Cin, kh, kw) -> (B, Cout, kh * kw * Cin), columns in the rows' order."""
    b, cout = weight.shape[:2]
    return weight.permute(0, 1, 3, 4, 2).reshape(b, cout, -1)


def _plans(x, weight, index, stride, padding):
    n, _, h, w = x.shape
    breadth, _, cin, kh, kw = weight.shape
    out_hw = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    flat = index.reshape(-1)
    for a, b in _chunks(flat.numel(), kh * kw * cin):
        yield _Plan(flat, a, b, breadth, out_hw, (h + 2 * padding, w + 2 * padding), (kh, kw), stride)


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, index: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """Switched conv forward, no autograd: (N, Cout, Ho, Wo) in x's dtype."""
    n, _, h, w = x.shape
    breadth, cout, cin, kh, kw = weight.shape
    ho, wo = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    w2 = _weight_rows(weight)
    xpc = _padded_cl(x, padding)
    out = x.new_empty(n * ho * wo, cout)  # channels last while filling: one row per pixel
    for plan in _plans(x, weight, index, stride, padding):
        rows = xpc.index_select(0, plan.taps).view(plan.order.numel(), -1)
        res = x.new_empty(rows.shape[0], cout)
        for e, (s, t) in enumerate(plan.bounds):
            if s == t:
                continue
            if bias is None:
                torch.mm(rows[s:t], w2[e].t(), out=res[s:t])
            else:
                torch.addmm(bias[e], rows[s:t], w2[e].t(), out=res[s:t])
        out.index_copy_(0, plan.order, res)
    return out.view(n, ho * wo, cout).transpose(1, 2).reshape(n, cout, ho, wo).contiguous()


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    index: torch.Tensor,
    stride: int,
    padding: int,
    needs_x: bool = True,
    needs_w: bool = True,
    needs_b: bool = True,
):
    """(grad_x, grad_weight, grad_bias) of the switched conv, None where not asked.

    Weight, bias and (for 16-bit inputs) input gradients are accumulated in
    fp32 and cast back to the input dtypes at the end."""
    n, _, h, w = x.shape
    breadth, cout, cin, kh, kw = weight.shape
    k_cols = kh * kw * cin
    w2 = _weight_rows(weight)
    g_all = grad_out.permute(0, 2, 3, 1).reshape(-1, cout)  # (N * Ho * Wo, Cout), pixel order
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xpc = _padded_cl(x, padding) if needs_w else None
    gxp = torch.zeros(n * (h + 2 * padding) * (w + 2 * padding), cin, dtype=acc, device=x.device) if needs_x else None
    grad_w = torch.zeros(breadth, cout, k_cols, dtype=torch.float32, device=x.device) if needs_w else None
    grad_b = torch.zeros(breadth, cout, dtype=torch.float32, device=x.device) if needs_b else None
    for plan in _plans(x, weight, index, stride, padding):
        g = g_all.index_select(0, plan.order)  # (M, Cout), sorted by expert
        # Each buffer below exists exactly when its needs_* flag is set.
        rows = xpc.index_select(0, plan.taps).view(g.shape[0], -1) if xpc is not None else None
        grows = x.new_empty(g.shape[0], k_cols) if needs_x else None
        for e, (s, t) in enumerate(plan.bounds):
            if s == t:
                continue
            ge = g[s:t]
            if grad_b is not None:
                grad_b[e] += ge.sum(0, dtype=torch.float32)
            if grad_w is not None and rows is not None:
                grad_w[e] += (ge.t() @ rows[s:t]).float()
            if grows is not None:
                torch.mm(ge, w2[e], out=grows[s:t])
        if gxp is not None and grows is not None:
            gxp.index_add_(0, plan.taps, grows.view(-1, cin).to(acc))
    grad_x = None
    if gxp is not None:
        gxp = gxp.view(n, h + 2 * padding, w + 2 * padding, cin)[:, padding : padding + h, padding : padding + w]
        grad_x = gxp.permute(0, 3, 1, 2).to(x.dtype).contiguous()
    if grad_w is not None:
        grad_w = grad_w.view(breadth, cout, kh, kw, cin).permute(0, 1, 4, 2, 3).to(weight.dtype).contiguous()
    return grad_x, grad_w, None if grad_b is None else grad_b.to(weight.dtype)
