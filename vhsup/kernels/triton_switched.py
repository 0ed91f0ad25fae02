"""The switched convolution as Triton kernels: pixels grouped by expert, one implicit GEMM per group.

A switched conv applies one of ``B`` kernels at each output pixel. Running
one warp per pixel wastes the tensor cores; instead the pixels are sorted by
their expert (as mixture-of-experts layers route tokens), and each program
takes a tile of ``BLOCK_M`` pixels that all use the same expert ``e``. For
that tile the conv is an ordinary GEMM: the im2col rows of its pixels
(``BLOCK_M x Cin*kh*kw``, gathered from ``x`` on the fly, never stored) times
``W_e`` (``Cin*kh*kw x Cout``), so ``tl.dot`` runs on tensor cores for
fp16/bf16 and the arithmetic is one dense conv's, not ``B`` of them. Tiles
never straddle two experts; each expert's last tile is masked, so at most
``B`` tiles per launch are partly idle.

The schedule needs no host synchronisation: the host sorts the expert ids and
finds each expert's segment with ``searchsorted`` (no ``bincount``, which
reads the maximum back to the host), and each program finds its own
(expert, first pixel) from the per-expert counts with a cumulative sum over
the ``B`` experts. The grid is the upper bound ``cdiv(P, BLOCK_M) + B``; the
surplus programs find no pixels and store nothing.

Backward, with the same grouping:

* ``grad_w[e] = grad_out_e^T @ im2col_e`` is a GEMM whose reduction runs over
  the expert's pixels. Each expert's pixels are cut into chunks; a program
  reduces one chunk for one (Cout block, tap, Cin block) and writes an fp32
  partial; a second small kernel sums each expert's partials in a fixed order.
  Deterministic, no atomics, and the partials are small
  (chunks x Cout x Cin*kh*kw fp32, about 10 MB at 64 channels 3x3).
  ``grad_b`` comes from the same pass (row sums of the grad tile).
* ``grad_x``: for one tap the map from output pixel to input pixel is
  one-to-one, so ``grad_out_e @ W_e[tap]^T`` for a tile of an expert's pixels
  can be added straight into ``grad_x`` at the tapped input pixels. One
  launch over all taps adds with fp32 atomics (fast, order of summation not
  fixed). With ``torch.use_deterministic_algorithms(True)`` it launches once
  per tap and adds with plain loads and stores instead: within one launch no
  two programs touch the same input pixel, and launches run in order.
  Either way the only extra memory is an fp32 ``grad_x`` accumulator (for
  fp32 inputs it is the result itself); im2col is never materialised (that
  would be ``kh*kw`` times the input, hundreds of MB at training sizes).

Layout: on CUDA the activations are read and written channels-last, so a
tile's gathered pixels read and write whole channel vectors instead of one
scattered element per pixel and channel. The output and ``grad_x`` come back
channels-last there (see ``output_memory_format``); the kernels themselves
take any strides, which is how the CPU interpreter tests run them on
contiguous NCHW tensors.

Precision: products accumulate in fp32 (fp64 for fp64 inputs) and results
are cast to the input dtypes. For fp32 inputs the products follow torch's
TF32 setting for convolutions, as cuDNN's dense convs do: tf32 on the tensor
cores by default, exact fp32 ("ieee") when ``torch.backends.cudnn.allow_tf32``
(or ``torch.backends.cudnn.conv.fp32_precision``) turns TF32 off.

Under ``TRITON_INTERPRET=1`` (set before this module is imported) the same
kernels run on CPU tensors through Triton's interpreter, which is how they are
tested without a GPU. The interpreter does no bf16 arithmetic (its tl.dot
multiplies the raw 16-bit patterns, triton-lang/triton#11584), so there the
dot operands are widened to fp32 first: exact for bf16 and fp16 values, so
the products are the tensor cores' ones. No other bf16 arithmetic happens in
the kernels; values are cast to fp32 before any sum.

``index`` must lie in ``[0, B)``; it is not checked (a check would wait on
the GPU), and pixels with other values are left unwritten.

Not run on GPU hardware yet: the kernels compile for sm_90 (wgmma for
fp16/bf16, cp.async pipelined loads, vector stores at 64 channels), but the
autotune configurations below are chosen for an H100 from the shape of the
problem, not from measurements.
"""

from __future__ import annotations

import contextlib

import torch

#: Why triton did not import (None when it did), for the fallback notice.
IMPORT_ERROR: str | None = None
try:
    import triton
    import triton.language as tl
except ImportError as _exc:  # the kernels need triton; available() then says no
    triton = None
    tl = None
    IMPORT_ERROR = f"{type(_exc).__name__}: {' '.join(str(_exc).split())[:200]}"

__all__ = ["available", "backward", "forward", "output_memory_format"]

_INTERPRETED = triton is not None and bool(triton.knobs.runtime.interpret)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Tile sizes under the interpreter. Its cost is per operation, almost not per
# element, so fewer, larger programs run faster; K stays at tl.dot's smallest
# tile so that small channel counts still take several K steps in the tests.
_INTERP_M, _INTERP_N, _INTERP_K = 32, 32, 16


def _jit(fn):
    return triton.jit(fn) if triton is not None else fn


def available(device) -> bool:
    """Whether these kernels can run on tensors of ``device``: triton imports and
    either the device is CUDA (compiled kernels) or it is the CPU and this
    module was imported under ``TRITON_INTERPRET=1``."""
    if triton is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and _INTERPRETED


def output_memory_format(device) -> torch.memory_format:
    """Memory format of ``forward``'s output and ``backward``'s grad_x on ``device``:
    channels-last on CUDA (coalesced gathers and scatters), contiguous NCHW
    elsewhere. A fake (meta) implementation should allocate the same."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


# --------------------------------------------------------------------------
# Kernels


@_jit
def _pixel_at(pix, Ho, Wo):
    """Flat output-pixel id -> (image, output row, output column)."""
    r = pix % (Ho * Wo)
    return pix // (Ho * Wo), r // Wo, r % Wo


@_jit
def _locate(t, counts_ptr, starts_ptr, NB, TILE, NB_P2: tl.constexpr):
    """Tile ``t`` of the expert-sorted pixel list: (expert, first row, end row).

    Experts are laid out one after another, each cut into cdiv(count, TILE)
    tiles. Past the last tile the expert is >= NB and the row range is empty.
    (Few library calls on purpose: each costs milliseconds in the interpreter.)
    """
    offs = tl.arange(0, NB_P2)
    ntiles = (tl.load(counts_ptr + offs, mask=offs < NB, other=0) + TILE - 1) // TILE
    e = tl.sum((tl.cumsum(ntiles, 0) <= t).to(tl.int32), 0)
    first_tile = tl.sum(tl.where(offs < e, ntiles, 0), 0)
    ok = e < NB
    seg_start = tl.load(starts_ptr + e, mask=ok, other=0)
    seg_end = seg_start + tl.load(counts_ptr + e, mask=ok, other=0)
    start = seg_start + (t - first_tile) * TILE
    end = tl.minimum(seg_end, start + TILE)
    return e, start, end


@_jit
def _fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    order_ptr,
    counts_ptr,
    starts_ptr,
    out_ptr,
    NB,
    Cin,
    H,
    W,
    Cout,
    Ho,
    Wo,
    sxn,
    sxc,
    sxh,
    sxw,
    swe,
    swt,
    swc,
    swo,
    son,
    soc,
    soh,
    sow,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    NB_P2: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    WIDE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # out[pixels of one expert tile, Cout block] = im2col(x)[pixels] @ W_e
    t = tl.program_id(0)
    pn = tl.program_id(1)
    e, start, end = _locate(t, counts_ptr, starts_ptr, NB, BLOCK_M, NB_P2)
    e = tl.minimum(e, NB - 1)  # surplus tiles have no rows; keep their weight reads in bounds
    rows = start + tl.arange(0, BLOCK_M)
    rmask = rows < end
    pix = tl.load(order_ptr + rows, mask=rmask, other=0)
    if WIDE:
        pix = pix.to(tl.int64)
    n, oy, ox = _pixel_at(pix, Ho, Wo)
    iy0 = oy * STRIDE - PAD
    ix0 = ox * STRIDE - PAD
    xrow = x_ptr + n * sxn
    cols = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < Cout
    ks = tl.arange(0, BLOCK_K)
    wbase = w_ptr + e * swe
    n_cb = (Cin + BLOCK_K - 1) // BLOCK_K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    # One flat loop over (tap, Cin block) so the compiler can pipeline the
    # loads; tiles without pixels (the grid's surplus) skip it.
    for it in range(0, tl.where(start < end, KH * KW * n_cb, 0)):
        tap = it // n_cb
        cc = (it % n_cb) * BLOCK_K + ks
        iy = iy0 + tap // KW
        ix = ix0 + tap % KW
        ok = rmask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        kmask = cc < Cin
        a = tl.load(
            (xrow + iy * sxh + ix * sxw)[:, None] + cc[None, :] * sxc, mask=ok[:, None] & kmask[None, :], other=0.0
        )
        b = tl.load(
            wbase + tap * swt + cc[:, None] * swc + cols[None, :] * swo, mask=kmask[:, None] & cmask[None, :], other=0.0
        )
        if UPCAST:
            a = a.to(ACC)
            b = b.to(ACC)
        acc = tl.dot(a, b, acc, input_precision=PREC)
    if HAS_BIAS:
        bias = tl.load(b_ptr + e * Cout + cols, mask=cmask, other=0.0)
        acc += bias.to(ACC)[None, :]
    optr = out_ptr + n * son + oy * soh + ox * sow
    tl.store(
        optr[:, None] + cols[None, :] * soc, acc.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :]
    )


@_jit
def _gradw_kernel(
    x_ptr,
    g_ptr,
    order_ptr,
    counts_ptr,
    starts_ptr,
    pw_ptr,
    pb_ptr,
    NB,
    Cin,
    H,
    W,
    Cout,
    Ho,
    Wo,
    CHUNK,
    sxn,
    sxc,
    sxh,
    sxw,
    sgn,
    sgc,
    sgh,
    sgw,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    NB_P2: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    WIDE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # partial[chunk, Cout block, tap, Cin block] = grad_out[chunk pixels]^T @ im2col(x)[chunk pixels]
    ch = tl.program_id(0)
    pn = tl.program_id(1)
    pk = tl.program_id(2)
    n_cb = (Cin + BLOCK_K - 1) // BLOCK_K
    tap = pk // n_cb
    ci = (pk % n_cb) * BLOCK_K + tl.arange(0, BLOCK_K)
    cimask = ci < Cin
    co = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    comask = co < Cout
    dy = tap // KW - PAD
    dx = tap % KW - PAD
    _, start, end = _locate(ch, counts_ptr, starts_ptr, NB, CHUNK, NB_P2)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=ACC)
    bacc = tl.zeros((BLOCK_N,), dtype=ACC)
    for p0 in range(start, end, BLOCK_P):
        rows = p0 + tl.arange(0, BLOCK_P)
        rmask = rows < end
        pix = tl.load(order_ptr + rows, mask=rmask, other=0)
        if WIDE:
            pix = pix.to(tl.int64)
        n, oy, ox = _pixel_at(pix, Ho, Wo)
        g = tl.load(
            (g_ptr + n * sgn + oy * sgh + ox * sgw)[None, :] + co[:, None] * sgc,
            mask=comask[:, None] & rmask[None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_P)
        iy = oy * STRIDE + dy
        ix = ox * STRIDE + dx
        ok = rmask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        a = tl.load(
            (x_ptr + n * sxn + iy * sxh + ix * sxw)[:, None] + ci[None, :] * sxc,
            mask=ok[:, None] & cimask[None, :],
            other=0.0,
        )  # (BLOCK_P, BLOCK_K)
        if HAS_BIAS:
            bacc += tl.sum(g.to(ACC), 1)
        if UPCAST:
            g = g.to(ACC)
            a = a.to(ACC)
        acc = tl.dot(g, a, acc, input_precision=PREC)
    # partials are laid out (chunk, Cout, tap, Cin): Cin fastest, like the
    # weight's (kh, kw, Cin) order once permuted back.
    K = KH * KW * Cin
    pw = pw_ptr + ch.to(tl.int64) * Cout * K + co[:, None] * K + tap * Cin + ci[None, :]
    tl.store(pw, acc, mask=comask[:, None] & cimask[None, :])
    if HAS_BIAS:
        if pk == 0:
            tl.store(pb_ptr + ch * Cout + co, bacc, mask=comask)


@_jit
def _segsum_kernel(
    part_ptr, out_ptr, counts_ptr, NB, CHUNK, INNER, NB_P2: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr
):
    # out[e] = sum of expert e's chunk partials, in chunk order (deterministic).
    e = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < INNER
    offs = tl.arange(0, NB_P2)
    ntiles = (tl.load(counts_ptr + offs, mask=offs < NB, other=0) + CHUNK - 1) // CHUNK
    first = tl.sum(tl.where(offs < e, ntiles, 0), 0)
    count = (tl.load(counts_ptr + e) + CHUNK - 1) // CHUNK
    acc = tl.zeros((BLOCK,), dtype=ACC)
    ptrs = part_ptr + first.to(tl.int64) * INNER + cols
    for _ in range(0, count):
        acc += tl.load(ptrs, mask=m, other=0.0)
        ptrs += INNER
    tl.store(out_ptr + e.to(tl.int64) * INNER + cols, acc.to(out_ptr.dtype.element_ty), mask=m)


@_jit
def _gradx_kernel(
    g_ptr,
    w_ptr,
    order_ptr,
    counts_ptr,
    starts_ptr,
    gx_ptr,
    NB,
    Cin,
    H,
    W,
    Cout,
    Ho,
    Wo,
    TAP0,
    NTAPS,
    sgn,
    sgc,
    sgh,
    sgw,
    swe,
    swt,
    swc,
    swo,
    sxn,
    sxc,
    sxh,
    sxw,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    NB_P2: tl.constexpr,
    PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    WIDE: tl.constexpr,
    ACC: tl.constexpr,
    ATOMIC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # for each tap: grad_x[tapped input pixels, Cin block] += grad_out[tile] @ W_e[tap]^T
    t = tl.program_id(0)
    pn = tl.program_id(1)
    e, start, end = _locate(t, counts_ptr, starts_ptr, NB, BLOCK_M, NB_P2)
    e = tl.minimum(e, NB - 1)
    rows = start + tl.arange(0, BLOCK_M)
    rmask = rows < end
    pix = tl.load(order_ptr + rows, mask=rmask, other=0)
    if WIDE:
        pix = pix.to(tl.int64)
    n, oy, ox = _pixel_at(pix, Ho, Wo)
    grow = g_ptr + n * sgn + oy * sgh + ox * sgw
    gxrow = gx_ptr + n * sxn
    ci = pn * BLOCK_N + tl.arange(0, BLOCK_N)
    cimask = ci < Cin
    ks = tl.arange(0, BLOCK_K)
    wbase = w_ptr + e * swe
    n_kb = (Cout + BLOCK_K - 1) // BLOCK_K
    for tap in range(TAP0, TAP0 + tl.where(start < end, NTAPS, 0)):
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
        for kb in range(0, n_kb):
            co = kb * BLOCK_K + ks
            comask = co < Cout
            g = tl.load(grow[:, None] + co[None, :] * sgc, mask=rmask[:, None] & comask[None, :], other=0.0)
            w = tl.load(
                wbase + tap * swt + co[:, None] * swo + ci[None, :] * swc,
                mask=comask[:, None] & cimask[None, :],
                other=0.0,
            )
            if UPCAST:
                g = g.to(ACC)
                w = w.to(ACC)
            acc = tl.dot(g, w, acc, input_precision=PREC)
        iy = oy * STRIDE - PAD + tap // KW
        ix = ox * STRIDE - PAD + tap % KW
        ok = rmask & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        ptrs = (gxrow + iy * sxh + ix * sxw)[:, None] + ci[None, :] * sxc
        m = ok[:, None] & cimask[None, :]
        if ATOMIC:
            tl.atomic_add(ptrs, acc, mask=m, sem="relaxed")
        else:
            cur = tl.load(ptrs, mask=m, other=0.0)
            tl.store(ptrs, cur + acc, mask=m)


# --------------------------------------------------------------------------
# Autotuning (CUDA only; the interpreter runs one fixed small configuration)


def _p2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def _prune(n_name: str, k_name: str, n_tile: str = "BLOCK_N", k_tile: str = "BLOCK_K"):
    """Drop configurations whose N or K tile is far wider than the channels it
    covers (a 3-channel input does not need a 64-wide K tile)."""

    def prune(configs, nargs, **kwargs):
        args = {**nargs, **kwargs}
        n_cap = max(32, _p2(args[n_name]))
        k_cap = max(32, _p2(args[k_name]))
        kept = [c for c in configs if c.kwargs[n_tile] <= n_cap and c.kwargs[k_tile] <= k_cap]
        return kept or configs[:1]

    return prune


_tuned_cache: dict = {}


def _configs(m_name: str, n_name: str, k_name: str, shapes):
    out = []
    for bm, bn, bk, warps, stages in shapes:
        out.append(triton.Config({m_name: bm, n_name: bn, k_name: bk}, num_warps=warps, num_stages=stages))
    return out


def _tuned():
    """The autotuned CUDA launchers, built on first use. Shapes for an H100
    at the channel counts of the SR generators (3->64, 64->64, 64->256):
    128x64 output tiles with a 64-deep K step fit the wgmma shapes and leave
    room for 3-4 pipeline stages in shared memory."""
    if _tuned_cache:
        return _tuned_cache
    gemm = [
        (128, 64, 64, 4, 3),
        (128, 64, 32, 4, 4),
        (64, 64, 64, 4, 3),
        (64, 64, 32, 4, 4),
        (128, 128, 64, 8, 3),
        (64, 128, 64, 4, 3),
        (128, 32, 64, 4, 3),
        (256, 64, 64, 8, 3),
        (128, 64, 64, 8, 4),
        (64, 32, 32, 4, 4),
    ]
    key = ["Cin", "Cout", "KH", "KW", "STRIDE"]
    _tuned_cache["fwd"] = triton.autotune(
        _configs("BLOCK_M", "BLOCK_N", "BLOCK_K", gemm),
        key=key,
        prune_configs_by={"early_config_prune": _prune("Cout", "Cin")},
    )(_fwd_kernel)
    # grad_x adds into its destination: restore it around each trial.
    _tuned_cache["gradx"] = triton.autotune(
        _configs("BLOCK_M", "BLOCK_N", "BLOCK_K", gemm),
        key=key + ["ATOMIC"],
        restore_value=["gx_ptr"],
        prune_configs_by={"early_config_prune": _prune("Cin", "Cout")},
    )(_gradx_kernel)
    wshapes = [
        (64, 64, 64, 4, 3),
        (128, 64, 64, 4, 3),
        (128, 64, 64, 8, 4),
        (64, 128, 64, 4, 3),
        (128, 64, 32, 4, 4),
        (64, 32, 64, 4, 4),
        (128, 128, 64, 8, 3),
        (64, 64, 32, 4, 4),
    ]
    _tuned_cache["gradw"] = triton.autotune(
        _configs("BLOCK_P", "BLOCK_N", "BLOCK_K", wshapes),
        key=key,
        prune_configs_by={"early_config_prune": _prune("Cout", "Cin")},
    )(_gradw_kernel)
    return _tuned_cache


# --------------------------------------------------------------------------
# Host side


def _check(x: torch.Tensor, weight: torch.Tensor, index: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError("switched conv: the Triton kernels need the triton package")
    if not available(x.device):
        raise RuntimeError(
            f"switched conv: the Triton kernels cannot run on {x.device} "
            "(CUDA, or the CPU with TRITON_INTERPRET=1 set before import)"
        )
    if x.dtype not in _DTYPES:
        raise TypeError(f"switched conv: the Triton kernels take float32/16, bfloat16 or float64, not {x.dtype}")
    if weight.device != x.device or index.device != x.device:
        raise ValueError("switched conv: x, weight and index must be on one device")


def _schedule(index: torch.Tensor, breadth: int):
    """Pixel ids sorted by expert (stable: raster order within an expert, so a
    tile's neighbours share input rows), and each expert's start and count."""
    flat = index.reshape(-1)
    wide = flat.numel() >= 2**31
    keys, order = torch.sort(flat.to(torch.int32), stable=True)
    edges = torch.searchsorted(keys, torch.arange(breadth + 1, dtype=torch.int32, device=flat.device))
    edges = edges.to(torch.int32)
    starts = edges[:-1].contiguous()
    counts = (edges[1:] - edges[:-1]).contiguous()
    return order.to(torch.int64 if wide else torch.int32), counts, starts


def _activation(t: torch.Tensor) -> torch.Tensor:
    """The layout the kernels read fastest: channels-last on CUDA (a gathered
    pixel's channels are then contiguous); any strides do under the interpreter."""
    if t.is_cuda and not t.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _taps(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Cout, Cin, kh, kw) -> (B, kh*kw, Cin, Cout): a tap's Cin x Cout block
    is contiguous along Cout."""
    b, cout, cin, kh, kw = weight.shape
    return weight.to(dtype).permute(0, 3, 4, 2, 1).reshape(b, kh * kw, cin, cout).contiguous()


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _prec(dtype: torch.dtype) -> str:
    """tl.dot's input precision: for fp32, what torch's dense convolutions run
    (:func:`vhsup.kernels.op.fp32_conv_precision`: tf32 by default, exact
    "ieee" when TF32 is turned off); exact for fp64; for fp16/bf16 the
    setting has no effect."""
    if dtype == torch.float64:
        return "ieee"
    if dtype == torch.float32:
        from .op import fp32_conv_precision

        return fp32_conv_precision()
    return "tf32"


def _wide(*tensors: torch.Tensor) -> bool:
    return any(t.numel() >= 2**31 - 1 for t in tensors)


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def _device_ctx(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensors' one."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _fixed(**blocks):
    return {} if not _INTERPRETED else blocks


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, index: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """Switched conv forward, no autograd: (N, Cout, Ho, Wo) in x's dtype,
    channels-last on CUDA (``output_memory_format``)."""
    _check(x, weight, index)
    n, cin, h, w = x.shape
    breadth, cout, _, kh, kw = weight.shape
    ho, wo = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    out = torch.empty((n, cout, ho, wo), dtype=x.dtype, device=x.device, memory_format=output_memory_format(x.device))
    if out.numel() == 0:
        return out
    order, counts, starts = _schedule(index, breadth)
    xk = _activation(x)
    wt = _taps(weight, x.dtype)
    bk = bias.contiguous() if bias is not None else wt  # any pointer when HAS_BIAS is off
    p = n * ho * wo
    nb_p2 = max(2, _p2(breadth))
    common = dict(
        STRIDE=stride,
        PAD=padding,
        KH=kh,
        KW=kw,
        HAS_BIAS=bias is not None,
        NB_P2=nb_p2,
        PREC=_prec(x.dtype),
        UPCAST=_INTERPRETED,
        WIDE=_wide(x, out),
        ACC=_acc(x.dtype),
    )

    def grid(meta):
        return (triton.cdiv(p, meta["BLOCK_M"]) + breadth, triton.cdiv(cout, meta["BLOCK_N"]))

    kernel = _fwd_kernel if _INTERPRETED else _tuned()["fwd"]
    with _device_ctx(x):
        kernel[grid](
            xk,
            wt,
            bk,
            order,
            counts,
            starts,
            out,
            breadth,
            cin,
            h,
            w,
            cout,
            ho,
            wo,
            *xk.stride(),
            *wt.stride(),
            *out.stride(),
            **common,
            **_fixed(BLOCK_M=_INTERP_M, BLOCK_N=_INTERP_N, BLOCK_K=_INTERP_K),
        )
    return out


def _chunk(p: int, cout: int, cin: int, taps: int, device: torch.device) -> int:
    """Pixels per grad_w program. Enough chunks that the (chunk, Cout block,
    tap, Cin block) grid fills the GPU a few times over, but each chunk long
    enough that its partial (Cout x Cin*kh*kw fp32) is cheap next to the work."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        per_chunk = triton.cdiv(cout, 64) * taps * triton.cdiv(cin, 64)
        want = max(1, (4 * sms) // per_chunk)
        return max(256, triton.cdiv(triton.cdiv(p, want), 256) * 256)
    # interpreter: short chunks that end mid-step, so that small tests see
    # experts spanning several chunks and chunks spanning several steps.
    return _INTERP_M + 8


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

    Accumulation is fp32 (fp64 for fp64 inputs); results are cast to x's and
    weight's dtypes. grad_x is channels-last on CUDA. grad_x is bitwise
    reproducible only under ``torch.use_deterministic_algorithms(True)``
    (one launch per tap instead of atomics); grad_w and grad_b always are.
    """
    _check(x, weight, index)
    n, cin, h, w = x.shape
    breadth, cout, _, kh, kw = weight.shape
    ho, wo = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    if not (needs_x or needs_w or needs_b):
        return None, None, None
    p = n * ho * wo
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    fmt = output_memory_format(x.device)
    if p == 0 or x.numel() == 0:
        return (
            torch.zeros_like(x, memory_format=fmt) if needs_x else None,
            torch.zeros_like(weight) if needs_w else None,
            weight.new_zeros(breadth, cout) if needs_b else None,
        )
    order, counts, starts = _schedule(index, breadth)
    g = _activation(grad_out.to(x.dtype))
    nb_p2 = max(2, _p2(breadth))
    common = dict(
        STRIDE=stride,
        PAD=padding,
        KH=kh,
        KW=kw,
        NB_P2=nb_p2,
        PREC=_prec(x.dtype),
        UPCAST=_INTERPRETED,
        WIDE=_wide(x, g),
        ACC=_acc(x.dtype),
    )
    gx = gw = gb = None
    with _device_ctx(x):
        if needs_x:
            wt = _taps(weight, x.dtype)
            gx32 = torch.empty((n, cin, h, w), dtype=acc_dtype, device=x.device, memory_format=fmt).zero_()
            deterministic = torch.are_deterministic_algorithms_enabled()
            launches = [(t, 1) for t in range(kh * kw)] if deterministic else [(0, kh * kw)]

            def grid_x(meta):
                return (triton.cdiv(p, meta["BLOCK_M"]) + breadth, triton.cdiv(cin, meta["BLOCK_N"]))

            kernel = _gradx_kernel if _INTERPRETED else _tuned()["gradx"]
            for tap0, ntaps in launches:
                kernel[grid_x](
                    g,
                    wt,
                    order,
                    counts,
                    starts,
                    gx32,
                    breadth,
                    cin,
                    h,
                    w,
                    cout,
                    ho,
                    wo,
                    tap0,
                    ntaps,
                    *g.stride(),
                    *wt.stride(),
                    *gx32.stride(),
                    **common,
                    ATOMIC=not deterministic,
                    **_fixed(BLOCK_M=_INTERP_M, BLOCK_N=_INTERP_N, BLOCK_K=_INTERP_K),
                )
            gx = gx32 if gx32.dtype == x.dtype else gx32.to(x.dtype)
        if needs_w or needs_b:
            xk = _activation(x)
            chunk = _chunk(p, cout, cin, kh * kw, x.device)
            n_chunks = triton.cdiv(p, chunk) + breadth
            k_cols = kh * kw * cin
            pw = torch.empty((n_chunks, cout, k_cols), dtype=acc_dtype, device=x.device)
            pb = torch.empty((n_chunks, cout), dtype=acc_dtype, device=x.device)

            def grid_w(meta):
                return (n_chunks, triton.cdiv(cout, meta["BLOCK_N"]), kh * kw * triton.cdiv(cin, meta["BLOCK_K"]))

            kernel = _gradw_kernel if _INTERPRETED else _tuned()["gradw"]
            kernel[grid_w](
                xk,
                g,
                order,
                counts,
                starts,
                pw,
                pb,
                breadth,
                cin,
                h,
                w,
                cout,
                ho,
                wo,
                chunk,
                *xk.stride(),
                *g.stride(),
                **common,
                HAS_BIAS=needs_b,
                **_fixed(BLOCK_P=_INTERP_M, BLOCK_N=_INTERP_N, BLOCK_K=_INTERP_K),
            )
            block = 128 if _INTERPRETED else 1024
            if needs_w:
                gwk = torch.empty((breadth, cout, kh, kw, cin), dtype=weight.dtype, device=x.device)
                _segsum_kernel[(breadth, triton.cdiv(cout * k_cols, block))](
                    pw, gwk, counts, breadth, chunk, cout * k_cols, NB_P2=nb_p2, ACC=_acc(x.dtype), BLOCK=block
                )
                gw = gwk.permute(0, 1, 4, 2, 3).contiguous()
            if needs_b:
                gb = torch.empty((breadth, cout), dtype=weight.dtype, device=x.device)
                _segsum_kernel[(breadth, triton.cdiv(cout, block))](
                    pb, gb, counts, breadth, chunk, cout, NB_P2=nb_p2, ACC=_acc(x.dtype), BLOCK=block
                )
    return gx, gw, gb
