"""HR patches -> LR inputs, the way the spec says, per sample.

Order matters for realism, and follows the signal's history:

1. generic (Real-ESRGAN): optics, scalers and earlier generations, on the
   HR picture, ending at the LR size; or a plain antialiased bicubic
   downscale when it is off;
2. VHS: recording and playback artefacts happen at SD resolution, which is
   the LR picture (what the model will be fed);
3. chroma subsampling of the capture;
4. MPEG-2 last: it is the DVD or capture encode;
5. 8-bit quantisation, as every real input has it.

Torch stages run on the batch's device; JPEG and MPEG-2 run per sample on
the CPU. All random draws come from the caller's CPU generator.
"""

from __future__ import annotations

import numpy as np
import torch

from vhsup.train.degrade import mpeg2
from vhsup.train.degrade.draw import Draw
from vhsup.train.degrade.realesrgan import downscale, second_order
from vhsup.train.degrade.spec import DegradationSpec
from vhsup.train.degrade.vhs import subsample_chroma, vhs_artefacts


class Degrader:
    """Callable: ``degrader(hr, generator) -> lr``.

    Args:
        spec: from :func:`load_spec`.
        scale: the model's scale; HR sizes must be multiples of it.
    """

    def __init__(self, spec: DegradationSpec, scale: int):
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"scale must be a positive int, not {scale!r}")
        self.spec = spec
        self.scale = scale

    def __call__(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """hr float (N, 3, H, W) in [0, 1] -> lr float32 (N, 3, H/scale, W/scale) in [0, 1], same device."""
        if hr.ndim != 4 or hr.shape[1] != 3:
            raise ValueError(f"expected HR patches shaped (N, 3, H, W), got {tuple(hr.shape)}")
        n, _, h, w = hr.shape
        s = self.scale
        if h % s or w % s or h < s or w < s:
            raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {s}")
        spec = self.spec
        draw = Draw(generator)
        with torch.no_grad(), torch.autocast(hr.device.type, enabled=False):
            x = hr.detach().float().clamp(0.0, 1.0)
            if spec.generic.enabled:
                lr = torch.cat([second_order(x[i : i + 1], spec.generic, s, draw) for i in range(n)])
                lr = lr.clamp(0.0, 1.0)
            else:
                lr = downscale(x, s).clamp(0.0, 1.0)
            if spec.vhs.prob > 0:
                lr = vhs_artefacts(lr, spec.vhs, draw)
            lr = subsample_chroma(lr, spec.chroma, draw)
            if spec.mpeg2.prob > 0:
                lr = _mpeg2(lr, spec.mpeg2, draw)
            return (lr * 255.0).round().clamp(0.0, 255.0) / 255.0


def _mpeg2(x: torch.Tensor, spec, draw: Draw) -> torch.Tensor:
    jobs = []
    for i in range(x.shape[0]):
        if draw.chance(spec.prob):
            jobs.append((i, draw.uniform(*spec.mbps)))
    if not jobs:
        return x
    idx = [i for i, _ in jobs]
    pics = (x[idx].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    coded = np.stack([mpeg2.roundtrip(np.ascontiguousarray(p), mbps)[0] for p, (_, mbps) in zip(pics, jobs)])
    out = x.clone()
    out[idx] = torch.from_numpy(coded).to(x.device).permute(0, 3, 1, 2).float() / 255.0
    return out
