"""A scene through a camera, a tape or a disc, and a capture: the benchmark's SD clips.

``make_clip(scene, "vhs", path)`` writes what a VHS tape of the scene looks
like after a DV bridge digitised it (NTSC DV in AVI, 4:1:1, bottom field
first); ``make_clip(scene, "dvd", path)`` what a DVD of it holds (MPEG-2
in an MPEG program stream, 4:2:0, top field first). Both are 720x480 at
30000/1001 fps with SAR 8:9 (display 4:3), tagged BT.601 limited range,
without sound. Beside the clip goes a JSON sidecar (``.json``) that says
everything the benchmark needs to line the output up with the truth.

Coherent over time, as a real recording is: a clip's *look* - chroma
bandwidth, chroma delay, the deck's sharpening halo, the tape generation,
the disc's master softness and bit rate - is drawn once from the seed,
while noise, dropouts, timebase jitter and head-switching tears are drawn
afresh for every field. The tape artefacts are vhsup's training
degradation (:mod:`vhsup.train.degrade.vhs`, the VHS preset's ranges),
run on each field as a picture of its own, so its 1H comb filter and its
line jitter act on the lines of one field, as a VCR's do; every extra
generation runs the tape chain again (a dub), with the same look.

Geometry (the mapping the benchmark aligns with):

* the whole 720x480 frame is picture - no black edges - and its display
  area (4:3) is the truth frame's: SD sample (x, y) sits at truth pixel
  ``((x + 0.5) * W / 720 - 0.5, (y + 0.5) * H / 480 - 0.5)`` for a W x H
  truth (at the default 2880x1920: output pixel = truth pixel for x4);
* the camera renders the scene at ``oversample`` times 720x480 and
  averages each block (its pixels integrate light over their area);
* SD frame n holds two fields: the first (bottom lines for the DV clip,
  top lines for the DVD) shows the scene at ``n / rate`` seconds, the
  second half a frame later. Truth frame n is the scene at ``n / rate``:
  the instant a same-rate deinterlacer (bwdif ``send_frame``) keeps;
* on the VHS clip the bottom ``2 * head_switch_lines`` lines are torn by
  head switching (the sidecar's ``damaged_rows``).

Nothing here is random outside the seed: the same scene, variant, seed
and look give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vhsup.atomic import replacing
from vhsup.errors import VhsupError
from vhsup.eval.scenes import Scene
from vhsup.samples import _to_411_frame, _to_420
from vhsup.train.degrade.blur import bivariate
from vhsup.train.degrade.draw import Draw
from vhsup.train.degrade.spec import load_spec
from vhsup.train.degrade.vhs import play_tape, rgb_to_ycc

SD_SIZE = (720, 480)
SAR = Fraction(8, 9)  # 720x480 shown 4:3; what FFmpeg reports for 4:3 NTSC DV and DVD
VARIANTS = ("vhs", "dvd")
SUFFIXES = {"vhs": (".avi",), "dvd": (".mpg", ".mpeg", ".vob")}  # the first is the benchmark's
FIELD_ORDER = {"vhs": "bff", "dvd": "tff"}
OVERSAMPLE = 2
GENERATION_WEIGHTS = (0.6, 0.3, 0.1)  # first-generation tape, a dub, a dub of a dub

_SD_AREA = SD_SIZE[0] * SD_SIZE[1]


@dataclass(frozen=True)
class TapeLook:
    """One VHS recording's fixed character (the units of ``VhsSpec``).

    Attributes:
        generation: 1 for the original tape, 2 for a copy, 3 for a copy of a copy.
        luma_mhz, chroma_mhz: playback bandwidths.
        chroma_delay_px: chroma lag behind luma per generation, in 720-line samples.
        luma_noise, chroma_noise: noise per generation, 8-bit code values.
        comb: the deck's 1H chroma comb filter.
        sharpen: the deck's peaking gain (halos).
        jitter_px: RMS line timebase error, 720-line samples.
        dropouts: mean dropout streaks per 720x480 frame.
        head_switch_lines: torn lines at the bottom of every field.
    """

    generation: int
    luma_mhz: float
    chroma_mhz: float
    chroma_delay_px: float
    luma_noise: float
    chroma_noise: float
    comb: bool
    sharpen: float
    jitter_px: float
    dropouts: float
    head_switch_lines: int


@dataclass(frozen=True)
class DiscLook:
    """One DVD's fixed character.

    Attributes:
        blur_sigma: (along, across) Gaussian sigma of the master's softness,
            in pixels of the oversampled camera picture.
        blur_angle: the blur's orientation, radians.
        noise: grain sigma (8-bit code values of luma; chroma gets half).
        mbps: the MPEG-2 video bit rate.
    """

    blur_sigma: tuple[float, float]
    blur_angle: float
    noise: float
    mbps: float


def draw_tape_look(seed: int) -> TapeLook:
    """A tape drawn from the VHS degradation preset's ranges (``load_spec('vhs').vhs``)."""
    spec = load_spec("vhs").vhs
    d = Draw(torch.Generator().manual_seed(2 * int(seed)))
    return TapeLook(
        generation=1 + d.pick(GENERATION_WEIGHTS),
        luma_mhz=d.uniform(*spec.luma_mhz),
        chroma_mhz=d.uniform(*spec.chroma_mhz),
        chroma_delay_px=d.uniform(*spec.chroma_delay_px),
        luma_noise=d.uniform(*spec.luma_noise),
        chroma_noise=d.uniform(*spec.chroma_noise),
        comb=d.chance(spec.chroma_comb_prob),
        sharpen=d.uniform(*spec.sharpen),
        jitter_px=d.uniform(*spec.jitter_px),
        dropouts=d.uniform(*spec.dropouts),
        head_switch_lines=d.integer(*spec.head_switch_lines),
    )


def draw_disc_look(seed: int) -> DiscLook:
    """A disc drawn from the DVD preset's ranges: first-order blur and noise, MPEG-2 bit rate."""
    spec = load_spec("dvd")
    first = spec.generic.first
    d = Draw(torch.Generator().manual_seed(2 * int(seed)))
    along = d.uniform(*first.blur_sigma)
    across = d.uniform(*first.blur_sigma) if d.chance(0.5) else along
    return DiscLook(
        blur_sigma=(along, across),
        blur_angle=d.uniform(-math.pi / 2, math.pi / 2),
        noise=d.uniform(*first.noise_range),
        mbps=d.uniform(*spec.mpeg2.mbps),
    )


@dataclass(frozen=True)
class ClipInfo:
    """What :func:`make_clip` wrote (the sidecar holds the same and more)."""

    path: Path
    sidecar: Path
    variant: str
    frames: int
    rate: Fraction
    size: tuple[int, int]
    sar: Fraction
    field_order: str
    look: TapeLook | DiscLook


def clip_name(scene: Scene, variant: str) -> str:
    """The file name the benchmark gives a clip: ``<scene>-<variant>.avi|.mpg``."""
    return f"{scene.name}-{variant}{SUFFIXES[variant][0]}"


# --------------------------------------------------------------------------
# The camera.


def camera_frame(
    scene: Scene, n: int, order: str, *, look: TapeLook | DiscLook | None = None, oversample: int = OVERSAMPLE
) -> np.ndarray:
    """Clean interlaced SD frame ``n`` as the camera saw it, before the tape or the
    disc's grain: float32 RGB (480, 720, 3) in 0-255.

    ``order`` ('tff' or 'bff') says which lines hold the first field; a
    :class:`DiscLook` adds its master's softness.
    """
    camera = scene.at_size((SD_SIZE[0] * oversample, SD_SIZE[1] * oversample))
    blur = _blur_kernel(look) if isinstance(look, DiscLook) else None
    first, second = (_camera_field(camera, camera.time(n + k / 2), oversample, blur) for k in (0, 1))
    return _weave(first, second, order)


def _camera_field(camera: Scene, t: float, oversample: int, blur: np.ndarray | None = None) -> np.ndarray:
    pic = camera.render(t)
    if blur is not None:
        pic = cv2.filter2D(pic, -1, blur, borderType=cv2.BORDER_REFLECT_101)
    if oversample > 1:
        pic = cv2.resize(pic, SD_SIZE, interpolation=cv2.INTER_AREA)
    return pic


def _weave(first: np.ndarray, second: np.ndarray, order: str) -> np.ndarray:
    out = second.copy()
    start = 0 if order == "tff" else 1
    out[start::2] = first[start::2]
    return out


# --------------------------------------------------------------------------
# The tape and the disc.


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Torch on one thread while a clip is made, then as it was.

    The tensors are small (two 720x240 fields), and on two busy cores a
    second thread made the tape chain 10x slower (0.6 s a frame against
    55 ms, measured); one thread also gives the same sums, so the same
    bytes, on every machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tape_fields(look: TapeLook, draw: Draw) -> list[dict]:
    """``play_tape`` strengths for the two fields of one frame: the look, with
    this frame's dropout count drawn."""
    h, w = SD_SIZE[1] // 2, SD_SIZE[0]
    fields = []
    for _ in range(2):
        fields.append(
            {
                "luma_mhz": look.luma_mhz,
                "chroma_mhz": look.chroma_mhz,
                "delay": look.chroma_delay_px,
                "luma_noise": look.luma_noise / 255.0,
                "chroma_noise": look.chroma_noise / 255.0,
                "comb": look.comb,
                "sharpen": look.sharpen,
                "jitter": look.jitter_px,
                "dropouts": draw.poisson(look.dropouts * h * w / _SD_AREA),
                "head": look.head_switch_lines,
                "comb_motion": 0.0,
                "field": 0,
            }
        )
    return fields


def _play(frame: np.ndarray, look: TapeLook, draw: Draw) -> torch.Tensor:
    """RGB 0-255 (480, 720, 3) -> full-range Y'CbCr (3, 480, 720) after ``look.generation`` passes."""
    x = torch.from_numpy(np.ascontiguousarray(frame / 255.0, dtype=np.float32)).permute(2, 0, 1)
    fields = torch.stack([x[:, 0::2], x[:, 1::2]])  # top, bottom: each field is a picture of its own
    with torch.no_grad():
        for _ in range(look.generation):
            fields = play_tape(fields, _tape_fields(look, draw), float(SD_SIZE[0]), draw)
        woven = torch.empty_like(x)
        woven[:, 0::2], woven[:, 1::2] = fields[0], fields[1]
        return rgb_to_ycc(woven[None])[0]


def _disc(frame: np.ndarray, look: DiscLook, draw: Draw) -> torch.Tensor:
    """RGB 0-255 -> full-range Y'CbCr with this frame's grain."""
    x = torch.from_numpy(np.ascontiguousarray(frame / 255.0, dtype=np.float32)).permute(2, 0, 1)
    ycc = rgb_to_ycc(x[None])[0]
    if look.noise > 0:
        sigma = torch.tensor([1.0, 0.5, 0.5]).view(3, 1, 1) * (look.noise / 255.0)
        ycc = ycc + draw.randn(tuple(ycc.shape), torch.device("cpu")) * sigma
    return ycc


def _limited(ycc: torch.Tensor) -> np.ndarray:
    """Full-range Y'CbCr -> BT.601 limited-range uint8 planes (3, H, W)."""
    scale = torch.tensor([219.0, 224.0, 224.0]).view(3, 1, 1)
    offset = torch.tensor([16.0, 128.0, 128.0]).view(3, 1, 1)
    out = (ycc * scale + offset).round().clamp(1, 254)
    return out.to(torch.uint8).numpy()


def _blur_kernel(look: DiscLook) -> np.ndarray:
    sigma = max(look.blur_sigma)
    size = 2 * max(1, math.ceil(3 * sigma)) + 1
    k = bivariate("gaussian", size, look.blur_sigma[0], look.blur_sigma[1], look.blur_angle)
    return k.numpy().astype(np.float32)


# --------------------------------------------------------------------------
# Encoding.


def _open_video(out: av.container.OutputContainer, variant: str, look: TapeLook | DiscLook, rate: Fraction):
    w, h = SD_SIZE
    if variant == "vhs":
        v = out.add_stream("dvvideo", rate=rate)
        v.pix_fmt = "yuv411p"
    else:
        assert isinstance(look, DiscLook)
        options = {
            "g": "18",
            "bf": "2",
            "flags": "+ilme+ildct",  # field-based DCT and motion: an interlaced sequence
            "alternate_scan": "1",
            "maxrate": "9800000",
            "bufsize": "1835008",
        }
        v = out.add_stream("mpeg2video", rate=rate, options=options)
        v.pix_fmt = "yuv420p"
        v.codec_context.bit_rate = round(look.mbps * 1e6)
    v.width, v.height = w, h
    cc = v.codec_context
    cc.thread_count = 1  # one thread: the same bytes on every machine
    cc.time_base = 1 / rate
    v.time_base = 1 / rate
    cc.sample_aspect_ratio = SAR
    v.sample_aspect_ratio = SAR
    cc.field_order = 2 if FIELD_ORDER[variant] == "tff" else 3  # AV_FIELD_TT / AV_FIELD_BB
    cc.colorspace, cc.color_primaries, cc.color_trc = 6, 6, 6  # smpte170m
    cc.color_range = 1  # limited
    return v


def _field_flags(rate: Fraction, order: str) -> tuple[av.filter.Graph, object, object]:
    """setfield: marks each frame interlaced in ``order`` (PyAV cannot set the flag; encoders read it)."""
    graph = av.filter.Graph()
    src = graph.add_buffer(width=SD_SIZE[0], height=SD_SIZE[1], format=av.VideoFormat("yuv420p"), time_base=1 / rate)
    flag = graph.add("setfield", order)
    sink = graph.add("buffersink")
    src.link_to(flag)
    flag.link_to(sink)
    graph.configure()
    return graph, src, sink


def make_clip(
    scene: Scene,
    variant: str,
    path: str | Path,
    *,
    seed: int = 0,
    look: TapeLook | DiscLook | None = None,
    oversample: int = OVERSAMPLE,
) -> ClipInfo:
    """Write ``scene`` as a ``variant`` ('vhs' or 'dvd') clip to ``path``, and its sidecar.

    Args:
        scene: the truth (any size: the camera renders it at ``oversample`` x 720x480).
        seed: draws the look (unless ``look`` is given) and every per-field random part.
        look: a :class:`TapeLook` for 'vhs', a :class:`DiscLook` for 'dvd'.
        oversample: camera supersampling per axis (1 to 4).

    Raises:
        VhsupError: an unknown variant, a look of the wrong kind, or a file
            that cannot be written (nothing is left under ``path`` then).
    """
    path = Path(path)
    if variant not in VARIANTS:
        raise VhsupError(f"unknown clip variant {variant!r}; choose one of {', '.join(VARIANTS)}", path)
    if path.suffix.lower() not in SUFFIXES[variant]:
        raise VhsupError(f"a {variant} clip is written as {' or '.join(SUFFIXES[variant])}, not {path.suffix!r}", path)
    if look is None:
        look = draw_tape_look(seed) if variant == "vhs" else draw_disc_look(seed)
    if not isinstance(look, TapeLook if variant == "vhs" else DiscLook):
        raise VhsupError(f"a {variant} clip needs a {'TapeLook' if variant == 'vhs' else 'DiscLook'}", path)
    if not 1 <= int(oversample) <= 4:
        raise VhsupError(f"oversample must be 1 to 4, not {oversample}", path)
    oversample = int(oversample)
    if not path.parent.is_dir():
        raise VhsupError("cannot write the clip: the folder does not exist", path)

    order = FIELD_ORDER[variant]
    draw = Draw(torch.Generator().manual_seed(2 * int(seed) + 1))  # the per-field parts
    rate = scene.rate
    sidecar = path.with_suffix(".json")

    with replacing(path, "clip") as tmp, _one_torch_thread():
        with av.open(str(tmp), "w", format="avi" if variant == "vhs" else "vob") as out:
            v = _open_video(out, variant, look, rate)
            graph, src, sink = _field_flags(rate, order) if variant == "dvd" else (None, None, None)
            for n in range(scene.frames):
                frame = camera_frame(scene, n, order, look=look, oversample=oversample)
                if isinstance(look, TapeLook):
                    planes = _limited(_play(frame, look, draw))
                    vf = _to_411_frame(planes)
                else:
                    planes = _limited(_disc(frame, look, draw))
                    # 2:1 horizontal chroma low-pass before _to_420 takes every other sample
                    for c in (1, 2):
                        planes[c] = cv2.filter2D(
                            planes[c], -1, np.array([[0.25, 0.5, 0.25]], np.float32), borderType=cv2.BORDER_REPLICATE
                        )
                    vf = av.VideoFrame.from_ndarray(_to_420(planes, interlaced=True), format="yuv420p")
                vf.pts = n
                vf.time_base = 1 / rate
                if graph is not None:
                    src.push(vf)  # type: ignore[attr-defined]
                    vf = sink.pull()  # type: ignore[attr-defined]
                out.mux(v.encode(vf))
            out.mux(v.encode(None))
    # The sidecar goes last: a clip without one is unfinished.
    info = ClipInfo(path, sidecar, variant, scene.frames, rate, SD_SIZE, SAR, order, look)
    with replacing(sidecar, "clip description") as side_tmp:
        side_tmp.write_text(json.dumps(describe(info, scene, seed, oversample), indent=2) + "\n")
    return info


def describe(info: ClipInfo, scene: Scene, seed: int, oversample: int) -> dict:
    """The sidecar: the clip, its look and the SD -> truth mapping (JSON-ready)."""
    w, h = info.size
    first = "bottom" if info.field_order == "bff" else "top"
    look = dataclasses.asdict(info.look)
    record = {
        "file": info.path.name,
        "variant": info.variant,
        "seed": seed,
        "codec": "dvvideo" if info.variant == "vhs" else "mpeg2video",
        "container": "avi" if info.variant == "vhs" else "mpeg program stream",
        "size": [w, h],
        "sar": str(info.sar),
        "display_aspect": str(info.sar * w / h),
        "rate": str(info.rate),
        "frames": info.frames,
        "field_order": info.field_order,
        "colour": "bt601 smpte170m, limited range",
        "look": look,
        "camera": {"oversample": oversample},
        "mapping": {
            "sd_to_truth": (
                f"SD sample (x, y) is truth pixel ((x + 0.5) * W / {w} - 0.5, (y + 0.5) * H / {h} - 0.5) "
                "for a W x H truth; the whole frame is picture (no black edges)"
            ),
            "fields": (
                f"SD frame n: the {first} field shows the scene at n / rate s, the other field at (n + 0.5) / rate s"
            ),
            "truth_frame": "truth frame n is the scene at n / rate s (the first field's instant)",
            "damaged_rows": ([h - 2 * info.look.head_switch_lines, h] if isinstance(info.look, TapeLook) else []),
        },
        "scene": scene.describe(),
    }
    return record
