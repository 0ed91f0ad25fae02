"""VHS playback artefacts and chroma subsampling, batched torch on the LR picture.

The physics follow ``vhsup/samples.py`` (the demo-clip simulator), but here
every strength is drawn per sample from a range and the whole batch is
processed at once on the tensor's device: per-sample filters become one
grouped convolution, per-line shifts one gather.

The chain, in the order a tape is recorded, played and captured:

1. interlace combing - one field from a moved copy (a missed deinterlace);
2. to full-range BT.601 Y'CbCr;
3. dropouts - oxide loss: short white streaks with a fading tail;
4. luma: tape noise through the playback low-pass (SP 3.0 MHz down to EP
   1.4 MHz at 13.5 MHz sampling) then the deck's peaking (halos);
5. chroma: colour-under noise, the 1H comb filter (average with the line
   above) and the narrow (~0.3-0.5 MHz) chroma low-pass;
6. line timing: timebase jitter on every line, chroma lagging luma, and
   head switching that tears the bottom lines sideways and adds noise;
7. back to RGB.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vhsup.train.degrade.draw import Draw

BT601_MHZ = 13.5  # luma sampling rate of a 720-sample line
_REF_AREA = 720 * 480  # "per picture" rates are per this many 720-line samples


# --------------------------------------------------------------------------
# Colour.


def rgb_to_ycc(x: torch.Tensor) -> torch.Tensor:
    """RGB [0,1] -> full-range BT.601 Y' [0,1], Cb/Cr [-0.5, 0.5]."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) / 1.772, (r - y) / 1.402], 1)


def ycc_to_rgb(x: torch.Tensor) -> torch.Tensor:
    y, cb, cr = x[:, 0], x[:, 1], x[:, 2]
    r = y + 1.402 * cr
    b = y + 1.772 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], 1)


# --------------------------------------------------------------------------
# Horizontal filters and shifts, one kernel / one shift per sample.


def lowpass_fir(cutoff: float) -> torch.Tensor:
    """Hann-windowed sinc; ``cutoff`` in cycles/sample, where the gain is 1/2.

    The tap count grows as the cut-off falls so that the transition stays
    sharp (a VHS luma channel rolls off steeply and rings a little). A
    cut-off at or above Nyquist is no filter.
    """
    if cutoff >= 0.5 or cutoff <= 0:
        return torch.ones(1, dtype=torch.float64)
    half = min(48, math.ceil(1.6 / cutoff))
    n = torch.arange(-half, half + 1, dtype=torch.float64)
    window = 0.5 + 0.5 * torch.cos(math.pi * n / (half + 1))
    h = 2 * cutoff * torch.sinc(2 * cutoff * n) * window
    return h / h.sum()


def gauss_for_mhz(mhz: float, fs_mhz: float) -> torch.Tensor:
    """Gaussian FIR whose -3 dB point is ``mhz`` at sampling rate ``fs_mhz`` (0 = none)."""
    if mhz <= 0:
        return torch.ones(1, dtype=torch.float64)
    # |H(f)| = exp(-2 pi^2 s^2 f^2) = 1/sqrt(2)  =>  s f = sqrt(ln 2) / (2 pi) = 0.1325
    sigma = math.sqrt(math.log(2)) / (2 * math.pi) * fs_mhz / mhz
    return gauss(sigma)


def gauss(sigma: float) -> torch.Tensor:
    half = max(1, math.ceil(3 * sigma))
    n = torch.arange(-half, half + 1, dtype=torch.float64)
    h = torch.exp(-0.5 * (n / sigma) ** 2)
    return h / h.sum()


def _stack_kernels(kernels: list[torch.Tensor]) -> torch.Tensor:
    """Centre-pad 1-D kernels of odd lengths to one (N, K) tensor."""
    k = max(len(t) for t in kernels)
    out = torch.zeros(len(kernels), k, dtype=torch.float64)
    for i, t in enumerate(kernels):
        p = (k - len(t)) // 2
        out[i, p : p + len(t)] = t
    return out


def hfilter(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter every line of sample i (all its channels) with kernels[i] (N, K), edges repeated."""
    n, c, h, w = x.shape
    k = kernels.shape[1]
    if k == 1:
        return x * kernels[:, 0].to(x).view(n, 1, 1, 1)
    weight = kernels.to(device=x.device, dtype=x.dtype).repeat_interleave(c, 0).view(n * c, 1, 1, k)
    xp = F.pad(x.reshape(1, n * c, h, w), (k // 2, k // 2, 0, 0), mode="replicate")
    return F.conv2d(xp, weight, groups=n * c).view(n, c, h, w)


def hshift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move lines right by ``shift`` pixels (broadcast to (N, C|1, H|1, 1)), linear interpolation, edges repeated."""
    n, c, h, w = x.shape
    pos = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w) - shift.to(x)
    pos = pos.expand(n, c, h, w)
    left = torch.floor(pos)
    frac = pos - left
    i0 = left.long().clamp(0, w - 1)
    i1 = (left.long() + 1).clamp(0, w - 1)
    return torch.gather(x, 3, i0) * (1 - frac) + torch.gather(x, 3, i1) * frac


# --------------------------------------------------------------------------
# The tape.


def _col(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1, 1)


def vhs_artefacts(x: torch.Tensor, spec, draw: Draw) -> torch.Tensor:
    """Apply the tape chain to the samples of x (N, 3, h, w) that ``spec.prob`` selects."""
    n = x.shape[0]
    chosen = [i for i in range(n) if draw.chance(spec.prob)]
    if not chosen:
        return x
    out = x.clone()
    out[chosen] = _tape(x[chosen], spec, draw)
    return out


def _tape(x: torch.Tensor, spec, draw: Draw) -> torch.Tensor:
    n, _, h, w = x.shape
    return play_tape(x, draw_tape(spec, draw, n, h, w), spec.line_width, draw)


def draw_tape(spec, draw: Draw, n: int, h: int, w: int) -> list[dict]:
    """Per-sample strengths for ``n`` pictures of h x w, drawn from ``spec`` in a fixed order.

    Each dict holds, in LR pixels and [0, 1] code values: ``luma_mhz``,
    ``chroma_mhz``, ``delay`` (chroma lag), ``luma_noise``, ``chroma_noise``,
    ``comb`` (1H comb filter on/off), ``sharpen`` (peaking gain), ``jitter``
    (RMS line shift), ``dropouts`` (streak count), ``head`` (head-switching
    lines, 0 for none), ``comb_motion`` and ``field`` (missed-deinterlace
    combing). A caller may build these itself, e.g. to hold a tape's
    strengths fixed over a clip (``vhsup.eval.tape``).
    """
    px = spec.line_width / 720.0  # LR pixels per 720-line sample
    P = []
    for _ in range(n):
        p = {
            "luma_mhz": draw.uniform(*spec.luma_mhz),
            "chroma_mhz": draw.uniform(*spec.chroma_mhz),
            "delay": draw.uniform(*spec.chroma_delay_px) * px,
            "luma_noise": draw.uniform(*spec.luma_noise) / 255.0,
            "chroma_noise": draw.uniform(*spec.chroma_noise) / 255.0,
            "comb": draw.chance(spec.chroma_comb_prob),
            "sharpen": draw.uniform(*spec.sharpen),
            "jitter": draw.uniform(*spec.jitter_px) * px,
            "dropouts": draw.poisson(draw.uniform(*spec.dropouts) * h * w / (_REF_AREA * px * px)),
            "head": min(h, draw.integer(*spec.head_switch_lines)) if draw.chance(spec.head_switch_prob) else 0,
            "comb_motion": 0.0,
            "field": 0,
        }
        if draw.chance(spec.interlace_prob):
            sign = 1.0 if draw.chance(0.5) else -1.0
            p["comb_motion"] = sign * draw.uniform(*spec.interlace_motion_px)
            p["field"] = draw.integer(0, 1)
        P.append(p)
    return P


def play_tape(x: torch.Tensor, P: list[dict], line_width: float, draw: Draw) -> torch.Tensor:
    """The tape chain on x (N, 3, h, w) RGB [0, 1] with the strengths ``P`` (see :func:`draw_tape`).

    Noise, jitter, dropout shapes and head-switching tears are drawn here
    from ``draw``; everything else comes from ``P``. ``line_width``: LR
    pixels per 13.5 MHz line.
    """
    n, _, h, w = x.shape
    dev = x.device
    px = line_width / 720.0
    fs = BT601_MHZ * px

    # 1. Combing: the lines of one field come from a moved copy.
    motion = [p["comb_motion"] for p in P]
    if any(motion):
        moved = hshift(x, _col(motion, dev))
        rows = torch.arange(h, device=dev).view(1, 1, h, 1)
        field = _col([p["field"] for p in P], dev)
        use = ((rows % 2) == field) & (_col(motion, dev) != 0)
        x = torch.where(use, moved, x)

    ycc = rgb_to_ycc(x)
    y, c = ycc[:, :1], ycc[:, 1:]

    # 3. Dropouts, before the playback filters smear them.
    for i, p in enumerate(P):
        for _ in range(p["dropouts"]):
            _dropout(y[i, 0], c[i], px, draw)

    # 4. Luma: noise shaped by the playback low-pass, scaled so that the
    # noise left after the filter has the asked sigma; then peaking.
    firs = [lowpass_fir(p["luma_mhz"] / fs) if p["luma_mhz"] > 0 else torch.ones(1, dtype=torch.float64) for p in P]
    gain = [float(f.norm()) for f in firs]
    sig = [p["luma_noise"] / g for p, g in zip(P, gain)]
    if any(sig):
        y = y + draw.randn((n, 1, h, w), dev) * _col(sig, dev)
    y = hfilter(y, _stack_kernels(firs))
    amount = [p["sharpen"] for p in P]
    if any(amount):
        soft = hfilter(y, gauss(1.6 * px).expand(n, -1))
        y = y + _col(amount, dev) * (y - soft)

    # 5. Chroma: noise, comb filter, colour-under low-pass.
    lows = [gauss_for_mhz(p["chroma_mhz"], fs) for p in P]
    csig = [p["chroma_noise"] / (float(g.norm()) * (math.sqrt(0.5) if p["comb"] else 1.0)) for p, g in zip(P, lows)]
    if any(csig):
        c = c + draw.randn((n, 2, h, w), dev) * _col(csig, dev)
    combed = [p["comb"] for p in P]
    if any(combed) and h > 1:
        avg = torch.cat([c[:, :, :1], 0.5 * (c[:, :, 1:] + c[:, :, :-1])], 2)
        c = torch.where(_col(combed, dev) > 0, avg, c)
    c = hfilter(c, _stack_kernels(lows))

    # 6. Line timing.
    shift = torch.zeros(n, h, device=dev)
    jit = [p["jitter"] for p in P]
    if any(jit):
        shift = shift + _jitter(n, h, draw, dev) * torch.tensor(jit, device=dev).view(n, 1)
    heads = [p["head"] for p in P]
    rows = torch.arange(h, device=dev)
    for i, lines in enumerate(heads):
        if lines:
            ramp = (torch.arange(1, lines + 1, dtype=torch.float32) / lines) ** 1.5
            tear = 22.0 * ramp * draw.uniform(0.6, 1.4) + 2.0 * torch.randn(lines, generator=draw.g)
            shift[i, h - lines :] += (tear * px).to(dev)
    delay = _col([p["delay"] for p in P], dev)
    y = hshift(y, shift.view(n, 1, h, 1))
    c = hshift(c, shift.view(n, 1, h, 1) + delay)
    if any(heads):
        bottom = (rows.view(1, 1, h, 1) >= (h - torch.tensor(heads, device=dev).view(n, 1, 1, 1))).float()
        y = y + bottom * draw.randn((n, 1, h, w), dev) * (14.0 / 255.0)
        c = c + bottom * draw.randn((n, 2, h, w), dev) * (10.0 / 255.0)

    return ycc_to_rgb(torch.cat([y, c], 1)).clamp(0.0, 1.0)


def _jitter(n: int, h: int, draw: Draw, dev) -> torch.Tensor:
    """Unit-RMS line displacement: mostly a slow wander down the picture, plus line-to-line."""
    white = draw.randn((n, 1, 1, h), dev)
    wander = hfilter(white, gauss(4.0).expand(n, -1)).view(n, h)
    wander = wander / wander.std(dim=1, keepdim=True).clamp_min(1e-6) if h > 1 else wander
    mixed = 0.85 * wander + 0.5 * draw.randn((n, h), dev)
    return mixed / math.hypot(0.85, 0.5)


def _dropout(y: torch.Tensor, c: torch.Tensor, px: float, draw: Draw) -> None:
    """One oxide dropout in place: a bright head with a ragged fading tail, on one line or two."""
    h, w = y.shape
    length = max(2, min(w, round(draw.uniform(15.0, 120.0) * px)))
    row = draw.integer(0, h - 1)
    x0 = draw.integer(0, w - length)
    t = torch.arange(length, dtype=torch.float32)
    ragged = 0.6 + 0.4 * torch.rand(length, generator=draw.g)
    profile = ((1.2 - t / length).clamp(0, 1) * ragged).to(y.device)
    for r in (row, row + 1) if draw.chance(0.35) else (row,):
        if r < h:
            seg = y[r, x0 : x0 + length]
            y[r, x0 : x0 + length] = seg + (1.0 - seg) * profile
            c[:, r, x0 : x0 + length] *= 1 - profile


# --------------------------------------------------------------------------
# Chroma subsampling.

_FACTORS = {"422": (1, 2), "420": (2, 2), "411": (1, 4)}


def subsample_chroma(x: torch.Tensor, spec, draw: Draw) -> torch.Tensor:
    """Average chroma over 2x1 / 2x2 / 4x1 blocks and interpolate it back, per sample."""
    modes = [spec.subsampling[draw.pick(spec.subsampling_prob)] for _ in range(x.shape[0])]
    if all(m == "444" for m in modes):
        return x
    ycc = rgb_to_ycc(x)
    _, _, h, w = x.shape
    for mode, (fy, fx) in _FACTORS.items():
        idx = [i for i, m in enumerate(modes) if m == mode]
        if not idx:
            continue
        c = ycc[idx, 1:]
        ph, pw = (-h) % fy, (-w) % fx
        if ph or pw:
            c = F.pad(c, (0, pw, 0, ph), mode="replicate")
        small = F.avg_pool2d(c, (fy, fx))
        up = F.interpolate(small, size=c.shape[-2:], mode="bilinear", align_corners=False)
        ycc[idx, 1:] = up[:, :, :h, :w]
    return ycc_to_rgb(ycc).clamp(0.0, 1.0)
