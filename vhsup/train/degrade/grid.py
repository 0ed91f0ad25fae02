"""``vhsup train --show-degradations N``: look at what the model will be fed.

Writes one PNG of N pairs, each the degraded LR patch (nearest-neighbour
enlarged to HR size, so every LR pixel shows) beside its HR patch. Checking
this picture before a long run catches a spec that is far too harsh (noise
soup) or too gentle (the model learns nothing about tape).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from vhsup.atomic import replacing
from vhsup.errors import VhsupError
from vhsup.train.degrade.degrader import Degrader
from vhsup.train.degrade.spec import DegradationSpec

PAIRS_PER_ROW = 2
GAP = 4  # pixels between tiles
_BG = 24  # dark grey between tiles: the eye judges noise better than on white


def grid_size(n: int, patch: int) -> tuple[int, int]:
    """(width, height) of the PNG for ``n`` pairs of ``patch``-pixel tiles."""
    cols = min(n, PAIRS_PER_ROW) * 2
    rows = math.ceil(n / PAIRS_PER_ROW)
    return cols * patch + (cols + 1) * GAP, rows * patch + (rows + 1) * GAP


def _as_float(frame: np.ndarray) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def _crop(frame: np.ndarray, patch: int, g: torch.Generator) -> np.ndarray:
    h, w = frame.shape[:2]
    if h < patch or w < patch:  # small frames: mirror to size (rare: frames are SD)
        frame = np.pad(frame, ((0, max(0, patch - h)), (0, max(0, patch - w)), (0, 0)), mode="reflect")
        h, w = frame.shape[:2]
    y = int(torch.randint(0, h - patch + 1, (), generator=g))
    x = int(torch.randint(0, w - patch + 1, (), generator=g))
    return frame[y : y + patch, x : x + patch]


def show_degradations(
    hr_frames: list[np.ndarray],
    spec: DegradationSpec,
    scale: int,
    n: int,
    out_png: Path,
    *,
    seed: int = 0,
    patch: int = 256,
) -> Path:
    """Write a PNG grid of ``n`` degraded-LR / HR pairs from random crops of ``hr_frames``.

    Frames are RGB (uint8, uint16 or float in [0, 1]), used in turn; the
    crop positions and the degradations come from ``seed``. The picture is
    ``grid_size(n, patch)`` pixels: ``PAIRS_PER_ROW`` pairs per row, LR
    left, HR right. ``patch`` is rounded down to a multiple of ``scale``.

    Raises:
        VhsupError: no frames, n < 1, or the PNG cannot be written.
    """
    out_png = Path(out_png)
    if not hr_frames:
        raise VhsupError("no frames to show degradations of", out_png)
    if n < 1:
        raise VhsupError(f"--show-degradations needs a count of at least 1, not {n}", out_png)
    patch = max(scale, patch - patch % scale)
    g = torch.Generator().manual_seed(int(seed))
    crops = [_crop(_as_float(hr_frames[i % len(hr_frames)]), patch, g) for i in range(n)]
    hr = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    lr = Degrader(spec, scale)(hr, g)
    lr_big = lr.repeat_interleave(scale, 2).repeat_interleave(scale, 3)

    width, height = grid_size(n, patch)
    canvas = np.full((height, width, 3), _BG, np.uint8)
    tiles_lr = (lr_big.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    tiles_hr = (hr.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        row, col = divmod(i, PAIRS_PER_ROW)
        y = GAP + row * (patch + GAP)
        for j, tile in enumerate((tiles_lr[i], tiles_hr[i])):
            x = GAP + (2 * col + j) * (patch + GAP)
            canvas[y : y + patch, x : x + patch] = tile
    with replacing(out_png, "degradation preview") as tmp:
        if not cv2.imwrite(str(tmp), canvas[:, :, ::-1]):
            raise VhsupError("cannot write the degradation preview (OpenCV refused the file)", out_png)
    return out_png
