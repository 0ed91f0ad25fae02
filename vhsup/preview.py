"""Side-by-side stills: what plain bicubic gives against what the model gives.

A comparison is only fair when both halves are the same size, the same
aspect and the same crop, so the left panel is the source frame enlarged by
OpenCV's bicubic to exactly the model output's size, and both are then
stretched horizontally by the source's sample aspect ratio (SD pixels are
not square: without this, circles look like eggs and people look thin).

Full SD-to-HD frames are too big to judge on a screen at once, so when a
panel would be wider than ``MAX_PANEL_WIDTH`` the overview is shrunk and a
second row shows the centre of both at 1:1 pixels, where the detail (and
the model's artefacts) can be seen.

Stills are written to a temporary name and renamed into place, so a viewer
or a web page never picks up half a file; the extension picks the format. OpenCV stores BGR; the arrays that
travel through vhsup are RGB, and the swap happens in ``write_png`` only.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from vhsup.atomic import replacing
from vhsup.errors import VhsupError

MAX_PANEL_WIDTH = 960  # widest overview panel; wider frames get a 1:1 detail row
GAP = 8  # pixels between panels and rows
BACKGROUND = (24, 24, 24)
CAPTION_BG = (48, 48, 48)
CAPTION_FG = (240, 240, 240)

Box = tuple[int, int, int, int]  # x, y, width, height


#: Still formats by extension, with OpenCV's encoder flags (lossless PNG, high-quality JPEG/WebP).
STILL_FORMATS = {
    ".png": [cv2.IMWRITE_PNG_COMPRESSION, 3],
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95],
    ".tif": [],
    ".tiff": [],
    ".bmp": [],
}


def check_still_name(path: Path) -> Path:
    """Refuse a still name whose extension is no picture format vhsup writes."""
    path = Path(path)
    if path.suffix.lower() not in STILL_FORMATS:
        raise VhsupError(
            f"cannot tell the picture format from {path.suffix or 'a name without extension'!r}; "
            f"use one of {', '.join(sorted(STILL_FORMATS))}",
            path,
        )
    return path


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an H x W x 3 uint8 RGB array as a picture, atomically.

    The format is the one the extension names (PNG, JPEG, WebP, TIFF, BMP;
    see ``STILL_FORMATS``), so a ``.jpg`` name holds JPEG bytes.

    Raises:
        VhsupError: the extension names no format, the folder is missing or
            not writable, or the disk is full.
    """
    path = check_still_name(path)
    rgb = _check_rgb(rgb, "image")
    suffix = path.suffix.lower()
    ok, data = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), STILL_FORMATS[suffix])
    if not ok:  # pragma: no cover - OpenCV only fails here on absurd sizes
        raise VhsupError(f"cannot encode the {suffix[1:].upper()} picture", path)
    with replacing(path, "picture") as tmp:
        tmp.write_bytes(data.tobytes())
    return path


def compose_compare(
    source: np.ndarray,
    upscaled: np.ndarray,
    *,
    model_name: str,
    scale: int,
    display_sar: Fraction | float = Fraction(1),
    crop_to: int | None = None,
) -> tuple[np.ndarray, dict[str, Box]]:
    """Build the comparison picture in memory.

    Args:
        source: the model's input frame, H x W x 3 uint8 RGB.
        upscaled: the model's output for it, H' x W' x 3 uint8 RGB.
        model_name: the right-hand caption.
        scale: the model's factor, shown in both captions.
        display_sar: the source's sample aspect ratio (8:9 for NTSC DV).
        crop_to: side in pixels of the 1:1 centre crops. None shows them only
            when the overview had to be shrunk (and then as big as a panel);
            0 never shows them.

    Returns:
        The RGB canvas and where each panel sits in it, as (x, y, w, h) under
        the keys 'bicubic', 'model' and, with a detail row, 'bicubic-1:1'
        and 'model-1:1'.
    """
    source = _check_rgb(source, "source")
    upscaled = _check_rgb(upscaled, "upscaled")
    sar = Fraction(display_sar).limit_denominator(10000)
    if sar <= 0:
        raise ValueError(f"display_sar must be positive, not {display_sar}")
    h, w = upscaled.shape[:2]
    bicubic = cv2.resize(source, (w, h), interpolation=cv2.INTER_CUBIC)

    # Display aspect: stretch (or squeeze) horizontally only.
    disp_w = max(1, round(w * sar))
    left, right = (_resize_w(p, disp_w) for p in (bicubic, upscaled))

    # Overview: shrink both together if a panel is too wide to see whole.
    shrink = disp_w > MAX_PANEL_WIDTH
    if shrink:
        pw = MAX_PANEL_WIDTH
        ph = max(1, round(h * pw / disp_w))
        left_ov, right_ov = (cv2.resize(p, (pw, ph), interpolation=cv2.INTER_AREA) for p in (left, right))
    else:
        pw, ph, left_ov, right_ov = disp_w, h, left, right

    rows: list[tuple[str, np.ndarray, str, np.ndarray]] = []
    # 'compact-x4' already says x4; other names get the factor appended.
    model_label = model_name if f"x{scale}" in model_name.lower() else f"{model_name} x{scale}"
    note = f" (shown at {pw / disp_w:.0%})" if shrink else ""
    rows.append((f"bicubic x{scale}{note}", left_ov, f"{model_label}{note}", right_ov))
    if crop_to is None:
        cw, ch = (pw, ph) if shrink else (0, 0)
    else:
        cw = ch = int(crop_to)
    cw, ch = min(cw, disp_w), min(ch, h)
    keys = ["bicubic", "model"]
    if cw > 0 and ch > 0:
        x0, y0 = (disp_w - cw) // 2, (h - ch) // 2
        crop = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        rows.append(("bicubic, centre at 1:1", left[crop], f"{model_label}, centre at 1:1", right[crop]))
        keys += ["bicubic-1:1", "model-1:1"]

    col_w = max(max(r[1].shape[1] for r in rows), 1)
    cap_h = caption_height(col_w)
    height = sum(cap_h + r[1].shape[0] for r in rows) + GAP * (len(rows) - 1)
    canvas = np.empty((height, 2 * col_w + GAP, 3), np.uint8)
    canvas[:] = BACKGROUND
    boxes: dict[str, Box] = {}
    y = 0
    names = iter(keys)
    for l_text, l_img, r_text, r_img in rows:
        for col, (text, img) in enumerate(((l_text, l_img), (r_text, r_img))):
            x = col * (col_w + GAP)
            caption(canvas, text, x, y, col_w, cap_h)
            ih, iw = img.shape[:2]
            ix = x + (col_w - iw) // 2
            canvas[y + cap_h : y + cap_h + ih, ix : ix + iw] = img
            boxes[next(names)] = (ix, y + cap_h, iw, ih)
        y += cap_h + l_img.shape[0] + GAP
    return canvas, boxes


def write_compare(
    path: Path,
    source: np.ndarray,
    upscaled: np.ndarray,
    *,
    model_name: str,
    scale: int,
    display_sar: Fraction | float = Fraction(1),
    crop_to: int | None = None,
) -> Path:
    """Write the bicubic-vs-model comparison PNG (see ``compose_compare``)."""
    canvas, _boxes = compose_compare(
        source, upscaled, model_name=model_name, scale=scale, display_sar=display_sar, crop_to=crop_to
    )
    return write_png(path, canvas)


# --------------------------------------------------------------------------


def _check_rgb(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or 0 in a.shape:
        raise ValueError(f"{what} must be an H x W x 3 uint8 RGB array, not {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def _resize_w(img: np.ndarray, width: int) -> np.ndarray:
    if img.shape[1] == width:
        return img
    interp = cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(img, (width, img.shape[0]), interpolation=interp)


def caption_height(panel_width: int) -> int:
    """The height of a caption band over a panel this wide (shared by every picture vhsup composes)."""
    return int(np.clip(round(panel_width / 32), 14, 40))


def caption(canvas: np.ndarray, text: str, x: int, y: int, w: int, h: int) -> None:
    """A grey band with ``text`` centred in it, shrunk to fit narrow panels."""
    canvas[y : y + h, x : x + w] = CAPTION_BG
    font = cv2.FONT_HERSHEY_SIMPLEX
    thick = 2 if h >= 30 else 1
    scale = h * 0.55 / 22  # Hershey simplex caps are ~22 px tall at scale 1
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    if tw > w - 4:
        scale *= (w - 4) / tw
        (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = (x + max(2, (w - tw) // 2), y + (h + th) // 2)
    cv2.putText(canvas, text, org, font, scale, CAPTION_FG, thick, cv2.LINE_AA)
