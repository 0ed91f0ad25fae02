"""A synthetic VHS capture for the demo and the tests, built offline.

``make_vhs_sample`` writes what a home-video tape looks like after a DV
bridge digitised it: NTSC DV in AVI (720x480, 29.97 fps, bottom field first,
4:1:1 chroma, SAR 8:9) with 48 kHz stereo PCM. MPEG-2 program streams at
DVD sizes (720/704/352 x 480/240, AC-3 audio) are offered for smaller, faster
demos, since DV only exists at 720x480 and 720x576.

The picture is made from photos that scikit-image ships (no network):

* a slow pan and zoom across ``astronaut`` (faces, skin tones, flag stripes
  and an orange suit - where wrong colour matrices and chroma smear show);
* a cat's face in a disc crossing the frame fast enough to comb, because
  an upscaler that meets combing treats it as texture;
* a camcorder date stamp (small sharp text the model has to cope with);
* a white "sync" box in the frame nearest each whole second, with a click
  in the audio at that frame's exact presentation time.

It is rendered once per *field* (59.94 Hz) and the lines interleaved, so
the two fields of a frame really come from two instants, in the order the
container says. Then the VHS record/playback chain is imitated in Y'CbCr:
luma noise and a ~3 MHz luma low-pass, a VCR sharpening halo, ~0.4 MHz
chroma that lags the luma by a few samples and is averaged with the line
above (the playback comb filter), tape dropouts, line timebase jitter,
head-switching noise at the bottom, and black edges outside the ~704
picture samples. Everything is numpy/cv2 on whole planes; a 2 s DV clip
takes a few seconds on two cores.

Nothing here imports torch: this is media-side code.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

from vhsup.atomic import replacing
from vhsup.errors import VhsupError

AUDIO_RATE = 48000
TONE_LEFT_HZ = 440.0
TONE_RIGHT_HZ = 660.0

_RATES = {"ntsc": Fraction(30000, 1001), "pal": Fraction(25)}
_FULL_HEIGHT = {"ntsc": 480, "pal": 576}
# DVD (MPEG-2) picture sizes; the half-height ones are progressive (SIF/CIF).
_MPEG2_WIDTHS = (720, 704, 352)
# 13.5 MHz luma sampling gives 720 samples per line (704 of them picture);
# the 352-wide formats sample the same 704-sample picture at half that rate.
_BT601_MHZ = 13.5


@dataclass(frozen=True)
class SampleInfo:
    """What ``make_vhs_sample`` wrote.

    Attributes:
        path: the file.
        frames: video frames in the file.
        rate: frame rate (30000/1001 or 25).
        size: (width, height) of the coded picture.
        sar: sample aspect ratio (4:3 display over the full coded width;
            8:9 for NTSC DV, which is what FFmpeg's DV decoder reports).
        field_order: 'bff' (bottom field is the earlier one) or 'progressive'.
        fmt: 'dv' (DV in AVI, PCM audio) or 'mpeg2' (MPEG-2 PS, AC-3 audio).
        audio_rate: audio sample rate (48000).
        cue_frames: indices of the frames that carry the white sync box;
            the audio click sits at exactly each one's presentation time
            (``index / rate`` seconds).
    """

    path: Path
    frames: int
    rate: Fraction
    size: tuple[int, int]
    sar: Fraction
    field_order: str
    fmt: str = "dv"
    audio_rate: int = AUDIO_RATE
    cue_frames: tuple[int, ...] = ()

    @property
    def duration(self) -> Fraction:
        """Video duration in seconds (frames / rate)."""
        return self.frames / self.rate


@dataclass(frozen=True)
class VhsLook:
    """Strength of each VHS artefact, in units a video engineer would use.

    Frequencies are for the 13.5 MHz (720-sample) line and are converted to
    pixels for narrower pictures. Set a field to 0 to switch that artefact
    off (the tests do, to measure one effect at a time).

    Attributes:
        luma_mhz: luma -3 dB bandwidth (VHS SP is about 3 MHz, ~240 TV lines).
        chroma_mhz: chroma -3 dB bandwidth (colour-under: about 0.4 MHz).
        chroma_delay_px: how far chroma lags luma, in 720-line samples.
        luma_noise: luma noise before the playback filters (8-bit code values).
        chroma_noise: chroma noise before the chroma low-pass.
        sharpen: VCR playback peaking gain (0 = none); it leaves halos.
        jitter_px: RMS line timebase error, in 720-line samples.
        dropouts_per_frame: mean number of dropout streaks per frame.
        head_switch_lines: lines at the bottom disturbed by head switching.
        edge_px: black samples at each side (720 - 704 = 16, 8 per side).
    """

    luma_mhz: float = 3.0
    chroma_mhz: float = 0.4
    chroma_delay_px: float = 4.0
    luma_noise: float = 7.0
    chroma_noise: float = 10.0
    sharpen: float = 0.8
    jitter_px: float = 0.45
    dropouts_per_frame: float = 0.5
    head_switch_lines: int = 6
    edge_px: int = 8


def make_vhs_sample(
    path: Path,
    *,
    seconds: float = 2.0,
    size: tuple[int, int] | None = None,
    standard: str = "ntsc",
    seed: int = 0,
    fmt: str = "dv",
    look: VhsLook | None = None,
) -> SampleInfo:
    """Write a short VHS-like capture to ``path`` and describe it.

    Args:
        path: output file; written to a temporary name beside it and moved
            into place only when complete.
        seconds: length; rounded to whole frames (at least one).
        size: (width, height); None means the standard's full size (720x480
            NTSC, 720x576 PAL), the only sizes DV has. MPEG-2 also takes 704
            or 352 wide, and half height (progressive, like VCD/SIF).
        standard: 'ntsc' (29.97 fps) or 'pal' (25 fps).
        seed: the same seed gives the same file.
        fmt: 'dv' (DV-in-AVI, PCM stereo) or 'mpeg2' (MPEG-2 PS, AC-3 stereo).
        look: artefact strengths; the defaults look like an SP recording.

    Raises:
        VhsupError: an impossible format/size/standard, or the file cannot
            be written.
    """
    path = Path(path)
    look = look or VhsLook()
    standard = str(standard).lower()
    if size is None:
        size = (720, _FULL_HEIGHT.get(standard, 480))
    width, height = (int(v) for v in size)
    fmt = str(fmt).lower()
    _check_request(path, seconds, width, height, standard, fmt)

    rate = _RATES[standard]
    frames = max(1, round(seconds * rate))
    interlaced = height == _FULL_HEIGHT[standard]
    sar = Fraction(4, 3) * height / width
    cue_frames = tuple(round(k * rate) for k in range(int(frames / rate) + 1) if round(k * rate) < frames)

    scene = _Scene(width, height, sar, rate, interlaced, cue_frames)
    vhs = _VhsChain(width, height, interlaced, look, np.random.default_rng(seed))
    audio = _audio(frames, rate, cue_frames, np.random.default_rng(seed + 1))

    with replacing(path, "sample") as tmp:
        _encode(tmp, fmt, width, height, rate, sar, interlaced, frames, scene, vhs, audio)
    return SampleInfo(
        path=path,
        frames=frames,
        rate=rate,
        size=(width, height),
        sar=sar,
        field_order="bff" if interlaced else "progressive",
        fmt=fmt,
        audio_rate=AUDIO_RATE,
        cue_frames=cue_frames,
    )


def _check_request(path: Path, seconds: float, width: int, height: int, standard: str, fmt: str) -> None:
    if standard not in _RATES:
        raise VhsupError(f"standard must be 'ntsc' or 'pal', not {standard!r}", path)
    if fmt not in ("dv", "mpeg2"):
        raise VhsupError(f"sample format must be 'dv' or 'mpeg2', not {fmt!r}", path)
    if not (0 < float(seconds) <= 600):
        raise VhsupError(f"sample length must be between 0 and 600 s, not {seconds}", path)
    full = _FULL_HEIGHT[standard]
    if fmt == "dv" and (width, height) != (720, full):
        raise VhsupError(f"DV is always 720x{full} for {standard.upper()}; {width}x{height} needs fmt='mpeg2'", path)
    if fmt == "mpeg2" and (width not in _MPEG2_WIDTHS or height not in (full, full // 2)):
        raise VhsupError(
            f"{width}x{height} is not a DVD size for {standard.upper()}: width 720, 704 or 352, "
            f"height {full} or {full // 2}",
            path,
        )
    if not path.parent.is_dir():
        raise VhsupError("cannot write the sample: the folder does not exist", path)


# --------------------------------------------------------------------------
# Scene: what the camera saw, rendered at any instant.


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, np.ndarray]:
    """The background photo and the cat-face sprite source (RGB uint8)."""
    try:
        from skimage import data
    except ImportError as exc:  # scikit-image is the 'demo' extra
        raise VhsupError("the demo sample needs scikit-image: pip install 'vhsup[demo]'") from exc
    return data.astronaut(), data.chelsea()


class _Scene:
    """Renders the demo scene at time ``t`` in coded (non-square) pixels.

    Geometry is planned in *display* pixels (square, width = W x SAR) and
    squeezed horizontally by 1/SAR when drawn, so that the disc is round
    and the photo undistorted once a player applies the aspect ratio.
    """

    def __init__(self, width: int, height: int, sar: Fraction, rate: Fraction, interlaced: bool, cues):
        self.w, self.h, self.sar = width, height, float(sar)
        self.disp_w = width * self.sar
        self.rate = rate
        self.interlaced = interlaced
        self.cues = set(cues)
        photo, cat = _photos()
        self.photo = photo
        ph, pw = photo.shape[:2]
        # Scale that makes the photo just cover the display frame.
        self.base = max(self.disp_w / pw, height / ph)
        self.ph, self.pw = ph, pw
        self.sprite, self.alpha = self._make_sprite(cat)
        # The disc crosses the display width in 1.2 s; at 59.94 fields/s
        # that is ~11 display px per field, which combs clearly.
        self.speed = (self.disp_w + self.sprite_d) / 1.2
        self._text_cache: dict[str, tuple[np.ndarray, int, int]] = {}

    # -- pieces -------------------------------------------------------------

    def _make_sprite(self, cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = int(round(0.27 * self.h))  # display diameter
        self.sprite_d = d
        sw = max(2, int(round(d / self.sar)))  # coded width of the disc
        face = cat[5:295, 80:370]  # a square around the cat's face
        rgb = cv2.resize(face, (sw, d), interpolation=cv2.INTER_AREA).astype(np.float32)
        # Distance from the centre in display units, so the rim is round.
        yy, xx = np.mgrid[0:d, 0:sw].astype(np.float32)
        r = np.hypot((xx + 0.5 - sw / 2) * self.sar, yy + 0.5 - d / 2)
        radius = d / 2 - 0.5
        rim = max(2.0, d / 40)
        alpha = np.clip(radius - r + 0.5, 0, 1)
        white = np.clip(r - (radius - rim) + 0.5, 0, 1)[..., None]
        rgb = rgb * (1 - white) + 245.0 * white
        return rgb, alpha[..., None]

    def _background(self, t: float) -> np.ndarray:
        # Slow, smooth Ken Burns: zoom 1.0-1.25, pan across the photo.
        z = 1.12 + 0.11 * np.sin(2 * np.pi * t / 11.0 - 0.6)
        s = self.base * z
        half_w, half_h = self.disp_w / (2 * s), self.h / (2 * s)
        cx = self.pw / 2 + 0.35 * (self.pw / 2 - half_w) * np.sin(2 * np.pi * t / 9.0 + 0.4)
        cy = self.ph * 0.42 + 0.5 * (self.ph / 2 - half_h) * np.sin(2 * np.pi * t / 13.0)
        cx = float(np.clip(cx, half_w, self.pw - half_w))
        cy = float(np.clip(cy, half_h, self.ph - half_h))
        m = np.array(
            [
                [s / self.sar, 0.0, (self.disp_w / 2 - cx * s) / self.sar],
                [0.0, s, self.h / 2 - cy * s],
            ],
            dtype=np.float64,
        )
        # Warping the uint8 photo is several times faster than float.
        img = cv2.warpAffine(self.photo, m, (self.w, self.h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return img.astype(np.float32)

    def _paste(self, img: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
        h, w = rgb.shape[:2]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, img.shape[1]), min(y + h, img.shape[0])
        if x0 >= x1 or y0 >= y1:
            return
        src = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
        a = alpha[src]
        region = img[y0:y1, x0:x1]
        region *= 1 - a
        region += rgb[src] * a

    def _text(self, text: str) -> tuple[np.ndarray, int, int]:
        """Alpha masks (text, shadow) for a camcorder stamp, in coded pixels."""
        if text not in self._text_cache:
            scale = self.h / 480 * 0.72
            thick = max(1, int(round(self.h / 480 * 2)))
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            pad = 3
            canvas = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
            cv2.putText(canvas, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
            coded_w = max(1, int(round(canvas.shape[1] / self.sar)))
            mask = cv2.resize(canvas, (coded_w, canvas.shape[0]), interpolation=cv2.INTER_AREA)
            self._text_cache[text] = (mask.astype(np.float32)[..., None] / 255.0, coded_w, canvas.shape[0])
        return self._text_cache[text]

    def _stamp(self, img: np.ndarray, t: float) -> None:
        secs = 10 * 3600 + 42 * 60 + 7 + int(t)
        lines = ("JAN 12 1996", f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d} AM")
        right = int(self.w * 0.9)
        y = int(self.h * 0.83)
        for text in lines:
            mask, tw, th = self._text(text)
            x = right - tw
            shadow_off = max(1, int(round(self.h / 240)))
            self._paste(img, np.zeros((th, tw, 3), np.float32), mask * 0.8, x + shadow_off, y + shadow_off)
            self._paste(img, np.full((th, tw, 3), 240.0, np.float32), mask, x, y)
            y += th

    def _cue(self, img: np.ndarray, frame_no: int) -> None:
        """The sync box: white, top left, with the second number in black."""
        bw = int(round(0.16 * self.disp_w / self.sar))
        bh = int(round(0.16 * self.h))
        x, y = int(round(0.08 * self.w)), int(round(0.07 * self.h))
        img[y : y + bh, x : x + bw] = 245.0
        label = str(int(round(frame_no / self.rate)))
        mask, tw, th = self._text(label)
        m = cv2.resize(mask, (tw * 2, th * 2), interpolation=cv2.INTER_LINEAR)[..., None]
        self._paste(img, np.zeros((th * 2, tw * 2, 3), np.float32), m, x + (bw - tw * 2) // 2, y + (bh - th * 2) // 2)

    # -- the picture ----------------------------------------------------------

    def render(self, t: float, frame_no: int) -> np.ndarray:
        """RGB float32 (0-255) of the scene at time ``t`` seconds."""
        img = self._background(t)
        d = self.sprite_d
        x_disp = (self.speed * t) % (self.disp_w + d) - d
        x = int(round(x_disp / self.sar))
        y = int(round(0.5 * self.h))
        self._paste(img, self.sprite, self.alpha, x, y)
        self._stamp(img, t)
        if frame_no in self.cues:
            self._cue(img, frame_no)
        return img

    def frame(self, n: int) -> np.ndarray:
        """Frame ``n`` as the camera recorded it (interlaced where it should be)."""
        t0 = float(n / self.rate)
        if not self.interlaced:
            return self.render(t0, n)
        # Bottom field first (DV's order, and what FFmpeg's MPEG-2 encoder
        # flags): the odd lines are the earlier instant, the even lines half
        # a frame period later.
        t1 = t0 + float(1 / (2 * self.rate))
        first, second = self.render(t0, n), self.render(t1, n)
        # A tube/CCD camera integrates each field over its own lines;
        # averaging neighbours vertically keeps fine detail from twittering.
        frame = np.empty_like(first)
        frame[1::2] = _vsoften(first)[1::2]
        frame[0::2] = _vsoften(second)[0::2]
        return frame


def _vsoften(img: np.ndarray) -> np.ndarray:
    return cv2.filter2D(img, -1, np.array([[0.2], [0.6], [0.2]], np.float32), borderType=cv2.BORDER_REFLECT)


# --------------------------------------------------------------------------
# The tape: record, play back, digitise.

# BT.601 R'G'B' (0-255) -> Y' (16-235) and Cb/Cr (-112..112), limited range.
_RGB_TO_YCC = (
    np.array(
        [
            [65.481, 128.553, 24.966, 16.0 * 255],
            [-37.797, -74.203, 112.0, 0.0],
            [112.0, -93.786, -18.214, 0.0],
        ],
        dtype=np.float32,
    )
    / 255.0
)


def _lowpass_fir(cutoff: float, taps: int) -> np.ndarray:
    """Hann-windowed sinc; ``cutoff`` in cycles per sample (0.5 = Nyquist)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hanning(taps + 2)[1:-1]
    return (h / h.sum()).astype(np.float32)


def _gauss_for(mhz: float, fs_mhz: float) -> float:
    """Gaussian sigma (pixels) whose -3 dB point is ``mhz`` at ``fs_mhz``."""
    # |H(f)| = exp(-2 pi^2 sigma^2 f^2) = 1/sqrt(2)  =>  sigma f = 0.1325
    return 0.1325 * fs_mhz / mhz


class _VhsChain:
    """Turns clean RGB frames into VHS-through-a-DV-bridge Y'CbCr planes."""

    def __init__(self, width: int, height: int, interlaced: bool, look: VhsLook, rng: np.random.Generator):
        self.w, self.h, self.interlaced, self.look, self.rng = width, height, interlaced, look, rng
        px = width / 704 if width < 704 else 1.0  # 720-sample units -> this line
        self.px = px
        self.fs = _BT601_MHZ * px
        # Luma: a short windowed sinc rolls off like a VHS luma channel and
        # rings a little, which the deck's peaking then exaggerates.
        cut = min(look.luma_mhz / self.fs, 0.49) if look.luma_mhz > 0 else 0.49
        self.luma_fir = _lowpass_fir(cut, 15)[None, :] if look.luma_mhz > 0 else None
        self.sharp_sigma = 1.6 * px
        self.chroma_sigma = _gauss_for(look.chroma_mhz, self.fs) if look.chroma_mhz > 0 else 0.0
        self.delay = look.chroma_delay_px * px
        self.edge = int(round(look.edge_px * width / 720))
        self.hs_lines = int(round(look.head_switch_lines * height / 480))
        # Drawing fresh Gaussian noise for every frame costs more than all
        # the filtering; random windows into a bank twice the frame size
        # are indistinguishable from it at these levels.
        self.bank = rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)
        self.xs = np.arange(width, dtype=np.float32)[None, :].repeat(height, 0)
        self.ys = np.arange(height, dtype=np.float32)[:, None].repeat(width, 1)

    def _hblur(self, plane: np.ndarray, sigma: float) -> np.ndarray:
        if sigma <= 0:
            return plane
        k = cv2.getGaussianKernel(2 * int(np.ceil(3 * sigma)) + 1, sigma).astype(np.float32).T
        return cv2.filter2D(plane, -1, k, borderType=cv2.BORDER_REPLICATE)

    def _dropouts(self, y: np.ndarray, c: np.ndarray) -> None:
        """Oxide dropouts: short white streaks, sometimes on two field lines."""
        look, rng = self.look, self.rng
        for _ in range(rng.poisson(look.dropouts_per_frame) if look.dropouts_per_frame > 0 else 0):
            row = int(rng.integers(int(self.h * 0.05), int(self.h * 0.88)))
            length = int(rng.uniform(15, 120) * self.w / 720)
            x0 = int(rng.integers(self.edge, max(self.edge + 1, self.w - self.edge - length)))
            xs = np.arange(length, dtype=np.float32)
            # Bright head, fading ragged tail: RF loss then the limiter recovering.
            profile = np.clip(1.2 - xs / length, 0, 1) * rng.uniform(0.6, 1.0, length).astype(np.float32)
            for r in (row, row + 2) if rng.random() < 0.35 else (row,):
                if r < self.h:
                    seg = y[r, x0 : x0 + length]
                    seg += (235.0 - seg) * profile[: seg.size]
                    c[r, x0 : x0 + length] *= (1 - profile[: seg.size])[:, None]

    def _line_shifts(self) -> np.ndarray:
        """Per-line horizontal displacement: timebase jitter + head switching."""
        look, rng, h = self.look, self.rng, self.h
        shift = np.zeros(h, np.float32)
        if look.jitter_px > 0:
            # Mostly slow wander down the picture plus a little line-to-line.
            wander: np.ndarray = cv2.GaussianBlur(rng.standard_normal((h, 1)).astype(np.float32), (1, 0), 4.0).ravel()
            wander *= 1.0 / max(float(wander.std()), 1e-6)
            shift += look.jitter_px * self.px * (0.85 * wander + 0.5 * rng.standard_normal(h).astype(np.float32))
        if self.hs_lines > 0:
            # Head switching happens a few lines before vertical sync: the
            # last lines of each field are displaced, more towards the end.
            n = self.hs_lines
            ramp = (np.arange(1, n + 1, dtype=np.float32) / n) ** 1.5
            shift[h - n :] += (22 * ramp * rng.uniform(0.6, 1.4) + rng.normal(0, 2, n)) * self.px
        return shift

    def degrade(self, rgb: np.ndarray) -> np.ndarray:
        """RGB float32 (0-255) -> Y'CbCr uint8 planes (3, H, W), BT.601 limited."""
        look, rng, h, w = self.look, self.rng, self.h, self.w
        ycc = cv2.transform(rgb, _RGB_TO_YCC)
        y, cb, cr = cv2.split(ycc)
        c: np.ndarray = cv2.merge([cb, cr])  # float32, as ycc
        oy, ox = int(rng.integers(0, h)), int(rng.integers(0, w))
        noise = self.bank[oy : oy + h, ox : ox + w]
        e = self.edge
        if e:  # the DV bridge samples 720, the picture is ~704 wide
            y[:, :e] = y[:, w - e :] = 16.0
            c[:, :e] = c[:, w - e :] = 0.0
        self._dropouts(y, c)

        # Luma: tape noise, then the playback low-pass shapes it into the
        # horizontal streaky grain of VHS, then the deck's peaking adds halos.
        if look.luma_noise > 0:
            y += look.luma_noise * noise[..., 0]
        if self.luma_fir is not None:
            y = cv2.filter2D(y, -1, self.luma_fir, borderType=cv2.BORDER_REPLICATE)
        if look.sharpen > 0:
            y += look.sharpen * (y - self._hblur(y, self.sharp_sigma))

        # Chroma: noise, the 1H comb-filter average with the previous line of
        # the same field, the narrow colour-under low-pass.
        if look.chroma_noise > 0:
            c += look.chroma_noise * noise[..., 1:]
        step = 2 if self.interlaced else 1
        c[step:] = 0.5 * (c[step:] + c[:-step])
        c = self._hblur(c, self.chroma_sigma)

        # Line timing: one remap per plane; chroma also carries its delay.
        shift = self._line_shifts()[:, None]
        map_y = self.ys
        y = cv2.remap(y, self.xs - shift, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=16.0)
        c = cv2.remap(c, self.xs - shift - self.delay, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self.hs_lines > 0:
            n = self.hs_lines
            y[h - n :] += rng.normal(0, 14, (n, w)).astype(np.float32)
            c[h - n :] += rng.normal(0, 10, (n, w, 2)).astype(np.float32)

        out = np.empty((3, h, w), np.uint8)
        out[0] = np.clip(y + 0.5, 1, 254)
        out[1:] = np.clip(np.moveaxis(c, 2, 0) + 128.5, 1, 254)
        return out


# --------------------------------------------------------------------------
# Sound and files.


def _audio(frames: int, rate: Fraction, cues, rng: np.random.Generator) -> np.ndarray:
    """Stereo int16 (2, samples): a tone per channel, a click at each cue."""
    total = round(frames * AUDIO_RATE / rate)
    t = np.arange(total, dtype=np.float64) / AUDIO_RATE
    left = 0.2 * np.sin(2 * np.pi * TONE_LEFT_HZ * t)
    right = 0.2 * np.sin(2 * np.pi * TONE_RIGHT_HZ * t)
    sig = np.stack([left, right])
    sig += 0.002 * rng.standard_normal(sig.shape)  # a whisper of linear-track hiss
    n_click = int(0.003 * AUDIO_RATE)
    env = np.exp(-np.arange(n_click) / (0.0008 * AUDIO_RATE))
    burst = env * rng.uniform(-1, 1, n_click)
    burst[0] = 1.0  # a sharp leading edge marks the instant exactly
    for n in cues:
        start = round(n * AUDIO_RATE / rate)  # the cue frame's presentation time
        end = min(start + n_click, total)
        sig[:, start:end] = 0.8 * burst[: end - start]
    return np.round(np.clip(sig, -1, 1) * 32767).astype(np.int16)


def _to_411_frame(planes: np.ndarray) -> av.VideoFrame:
    """(3,H,W) 4:4:4 -> a yuv411p frame with DV's chroma siting.

    DV 4:1:1 chroma is co-sited with the first of every four luma samples,
    and FFmpeg's DV decoder tags its frames that way. Letting swscale
    decimate instead (it assumes centred chroma) shifts colour 1.5 samples
    left after a decode; the chroma here is already low-passed far below
    the new Nyquist, so picking every fourth sample is enough.
    """
    h, w = planes.shape[1:]
    frame = av.VideoFrame(w, h, "yuv411p")
    for plane, data in zip(frame.planes, (planes[0], planes[1][:, 0::4], planes[2][:, 0::4])):
        buf = np.zeros((h, plane.line_size), np.uint8)
        buf[:, : data.shape[1]] = data
        plane.update(buf.tobytes())
    return frame


def _to_420(planes: np.ndarray, interlaced: bool) -> np.ndarray:
    """(3,H,W) 4:4:4 -> the (H*3/2, W) yuv420p layout PyAV takes.

    MPEG-2 4:2:0 chroma is co-sited horizontally with the even luma samples
    (the chroma here is already band-limited, so they are taken as they
    are) and sits between lines vertically. Interlaced pictures keep a
    chroma row per field, interpolated at the field's own sample position
    (1/4 and 3/4 of the way between field lines); averaging frame lines
    0+1 would mix two instants.
    """
    y = planes[0]
    h, w = y.shape

    def sub(p: np.ndarray) -> np.ndarray:
        p = p[:, 0::2].astype(np.float32)
        if interlaced:
            q = p.reshape(h // 4, 4, w // 2)
            out = np.empty((h // 4, 2, w // 2), np.float32)
            out[:, 0] = 0.75 * q[:, 0] + 0.25 * q[:, 2]  # top field
            out[:, 1] = 0.25 * q[:, 1] + 0.75 * q[:, 3]  # bottom field
            return out.reshape(h // 2, w // 2)
        return 0.5 * (p[0::2] + p[1::2])

    u, v = (np.clip(np.round(sub(p)), 0, 255).astype(np.uint8) for p in (planes[1], planes[2]))
    return np.concatenate([y, u.reshape(h // 4, w), v.reshape(h // 4, w)])


def _encode(tmp, fmt, width, height, rate, sar, interlaced, frames, scene, vhs, audio) -> None:
    with av.open(str(tmp), "w", format="avi" if fmt == "dv" else "vob") as out:
        if fmt == "dv":
            v = out.add_stream("dvvideo", rate=rate)
            # NTSC DV25 is 4:1:1, PAL DV25 4:2:0 (interlaced siting).
            v.pix_fmt = "yuv411p" if height == 480 else "yuv420p"
            a = out.add_stream("pcm_s16le", rate=AUDIO_RATE, layout="stereo")
        else:
            v = out.add_stream("mpeg2video", rate=rate)
            v.pix_fmt = "yuv420p"
            v.bit_rate = 6_000_000 if width >= 704 else 3_500_000
            v.codec_context.gop_size = 15 if rate == 25 else 18
            v.codec_context.max_b_frames = 2
            if interlaced:
                # Interlaced DCT/ME make the encoder write an interlaced
                # sequence; with no top_field_first flag on the frames (PyAV
                # cannot set it) FFmpeg codes bottom field first - which is
                # the order the scene renders.
                cc = v.codec_context
                cc.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            a = out.add_stream("ac3", rate=AUDIO_RATE, layout="stereo")
            a.bit_rate = 192_000
        v.width, v.height = width, height
        v.codec_context.sample_aspect_ratio = sar
        # AV_FIELD_BB / AV_FIELD_PROGRESSIVE. The MPEG-2 parser reads the
        # order back from the bitstream; AVI has nowhere to store it, so DV
        # readers learn it from each frame's DV header (bottom first).
        v.codec_context.field_order = 3 if interlaced else 1
        v.codec_context.thread_type = "AUTO"  # both encoders are slice-threaded

        per_frame = AUDIO_RATE / rate
        for n in range(frames):
            planes = vhs.degrade(scene.frame(n))
            if v.pix_fmt == "yuv411p":
                vf = _to_411_frame(planes)
            else:
                vf = av.VideoFrame.from_ndarray(_to_420(planes, interlaced), format="yuv420p")
            vf.pts = n
            vf.time_base = 1 / rate
            for pkt in v.encode(vf):
                out.mux(pkt)
            # Interleave the audio for this frame's period with its video.
            s0, s1 = round(n * per_frame), round((n + 1) * per_frame)
            packed = np.ascontiguousarray(audio[:, s0:s1].T).reshape(1, -1)  # L R L R ...
            af = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
            af.sample_rate = AUDIO_RATE
            af.pts = s0
            af.time_base = Fraction(1, AUDIO_RATE)
            for pkt in a.encode(af):
                out.mux(pkt)
        for pkt in v.encode():
            out.mux(pkt)
        for pkt in a.encode():
            out.mux(pkt)
