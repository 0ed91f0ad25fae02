"""An MPEG-2 encode/decode of one small picture through PyAV (FFmpeg's mpeg2video).

DVD blocking and mosquito noise come from the quantiser the encoder's rate
control picks for the bits it has. A training patch is a tiny picture, and
FFmpeg's rate control does not settle within one or two frames (it starts
from a fixed guess whatever the bit rate), so the rate control is done
here: the patch is coded as an I-frame at the finest fixed quantiser whose
size fits the patch's share of the stream,

    bits = Mbps / 29.97 fps * (patch area / 720x480) * I_FRAME_SHARE,

found by bisection over the MPEG-2 quantiser scale 2..31 (each trial
encode of a 64x64 patch costs about 0.2 ms). ``I_FRAME_SHARE`` is the
usual budget of an I-frame in a 12-15 frame GOP, about three average
frames. The same picture and bit rate always give the same output.

Colour goes through BT.601 limited range and 4:2:0 by hand (numpy), so
swscale's defaults never enter. Nothing here imports torch.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import av
import numpy as np

I_FRAME_SHARE = 3.0
FPS = 30000 / 1001
Q_MIN, Q_MAX = 2, 31

_TO_YCC = (
    np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float32)
    / 255.0
)
_FROM_YCC = np.linalg.inv(_TO_YCC).astype(np.float32)
_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def target_bytes(mbps: float, width: int, height: int) -> float:
    """The I-frame budget for a ``width`` x ``height`` picture at ``mbps`` (as for 720x480)."""
    return mbps * 1e6 / FPS / 8 * (width * height) / (720 * 480) * I_FRAME_SHARE


def _planes_420(rgb: np.ndarray) -> list[np.ndarray]:
    """uint8 RGB (h, w, 3), h and w even -> Y (h, w), Cb and Cr (h/2, w/2), uint8."""
    h, w = rgb.shape[:2]
    ycc = rgb.astype(np.float32) @ _TO_YCC.T + _OFFSET
    # 2x2 means: the chroma sits between the luma samples both ways.
    c = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    return [np.clip(np.round(p), 0, 255).astype(np.uint8) for p in (ycc[..., 0], c[..., 0], c[..., 1])]


def _frame(rgb: np.ndarray) -> av.VideoFrame:
    h, w = rgb.shape[:2]
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, data in zip(frame.planes, _planes_420(rgb)):
        buf = np.zeros((data.shape[0], plane.line_size), np.uint8)
        buf[:, : data.shape[1]] = data
        plane.update(buf.tobytes())
    return frame


def _encode(frame: av.VideoFrame, w: int, h: int, q: int) -> list:
    enc = av.CodecContext.create("mpeg2video", "w")
    enc.width, enc.height = w, h
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1001, 30000)
    enc.framerate = Fraction(30000, 1001)
    enc.gop_size = 1
    enc.max_b_frames = 0
    enc.qmin = enc.qmax = q
    enc.thread_count = 1  # one thread: deterministic, and the trainer's cores are busy
    enc.open()
    frame.pts = 0
    return list(enc.encode(frame)) + list(enc.encode(None))


def _decode(packets: list) -> av.VideoFrame:
    dec = av.CodecContext.create("mpeg2video", "r")
    dec.thread_count = 1
    frames = []
    for p in packets:
        frames += dec.decode(p)
    frames += dec.decode(None)
    return frames[-1]


def _from_frame(frame: av.VideoFrame, h: int, w: int) -> np.ndarray:
    planes = []
    for plane, (ph, pw) in zip(frame.planes, ((h, w), (h // 2, w // 2), (h // 2, w // 2))):
        a = np.frombuffer(bytes(plane), np.uint8).reshape(-1, plane.line_size)[:ph, :pw]
        planes.append(a.astype(np.float32))
    # Bilinear back to full size: the inverse siting of the 2x2 mean above.
    c = _upsample2(np.stack(planes[1:], -1))
    ycc = np.concatenate([planes[0][..., None], c], -1) - _OFFSET
    rgb = ycc @ _FROM_YCC.T
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _upsample2(c: np.ndarray) -> np.ndarray:
    """(h, w, k) -> (2h, 2w, k), each output sample a 3:1 blend of its nearest inputs."""

    def axis(a: np.ndarray, ax: int) -> np.ndarray:
        n = a.shape[ax]
        prev = np.take(a, np.clip(np.arange(n) - 1, 0, n - 1), axis=ax)
        nxt = np.take(a, np.clip(np.arange(n) + 1, 0, n - 1), axis=ax)
        even = 0.75 * a + 0.25 * prev
        odd = 0.75 * a + 0.25 * nxt
        out = np.stack([even, odd], ax + 1)
        shape = list(a.shape)
        shape[ax] *= 2
        return out.reshape(shape)

    return axis(axis(c, 0), 1)


@lru_cache(maxsize=64)
def _overhead(w: int, h: int) -> int:
    """Bytes of headers in a coded w x h picture (sequence, picture, slices).

    In a real stream they are shared by a whole 720x480 picture or GOP; a
    patch coded alone must not pay for them out of its share, or small
    patches would always hit the coarsest quantiser. A flat grey picture at
    the coarsest quantiser is almost nothing but headers.
    """
    flat = np.full((h, w, 3), 128, np.uint8)
    return sum(p.size for p in _encode(_frame(flat), w, h, Q_MAX))


def roundtrip(rgb: np.ndarray, mbps: float) -> tuple[np.ndarray, int]:
    """``rgb`` (uint8 H x W x 3) coded as an MPEG-2 I-frame at ``mbps``; returns (decoded, quantiser).

    Odd sizes are padded by repeating the last row/column and cropped back.
    """
    h0, w0 = rgb.shape[:2]
    rgb = np.pad(rgb, ((0, h0 % 2), (0, w0 % 2), (0, 0)), mode="edge") if (h0 % 2 or w0 % 2) else rgb
    h, w = rgb.shape[:2]
    frame = _frame(np.ascontiguousarray(rgb))
    budget = target_bytes(mbps, w, h) + _overhead(w, h)

    # Smallest q whose coded size fits the budget; q=31 if none does.
    lo, hi = Q_MIN, Q_MAX
    best = None
    while lo <= hi:
        q = (lo + hi) // 2
        packets = _encode(frame, w, h, q)
        if sum(p.size for p in packets) <= budget:
            best = (q, packets)
            hi = q - 1
        else:
            lo = q + 1
    if best is None:
        best = (Q_MAX, _encode(frame, w, h, Q_MAX))
    q, packets = best
    out = _from_frame(_decode(packets), h, w)
    return out[:h0, :w0], q
