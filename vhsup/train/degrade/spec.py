"""What the synthetic degradation may do, as ranges every sample draws from.

A :class:`DegradationSpec` is plain data: four sections that run in this
order on each training patch (see ``degrader.py`` for why):

    generic   Real-ESRGAN's second-order pipeline, HR -> LR size
    vhs       tape artefacts on the LR picture (SD resolution)
    chroma    4:4:4 / 4:2:2 / 4:2:0 / 4:1:1 chroma subsampling
    mpeg2     an MPEG-2 encode/decode (a DVD or a DVD recorder's capture)

Every field is declared once with its kind and bounds (:func:`_p`), so the
validator, the TOML round trip and the error messages all come from the
same table. The training config's ``[degradation]`` table overrides any of
them with the same nesting (``[degradation.generic.first]`` and so on); a
range may also be given as one number, meaning exactly that value.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from vhsup.errors import VhsupError

PRESETS = ("vhs", "dvd", "generic", "none")

KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
SUBSAMPLINGS = ("444", "422", "420", "411")


def _p(
    default,
    kind: str,
    lo: float = 0.0,
    hi: float = 1.0,
    *,
    choices: tuple = (),
    length: int | None = None,
    doc: str = "",
):
    """A spec field.

    kinds: 'range' (two floats lo <= a <= b <= hi), 'irange' (two ints),
    'orange' (two odd ints, blur kernel sizes), 'prob' (0..1), 'bool',
    'names' (a non-empty list drawn from ``choices``), 'weights'
    (non-negative numbers, not all zero; as many as ``length`` or as the
    list they weight - see ``_WEIGHTS_OF``).
    """
    meta = {"kind": kind, "lo": lo, "hi": hi, "choices": choices, "length": length, "doc": doc}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


# weights field -> the names field whose entries it weights
_WEIGHTS_OF = {"kernel_prob": "kernel_list", "subsampling_prob": "subsampling"}


@dataclass(frozen=True)
class OrderSpec:
    """One order (round) of Real-ESRGAN's degradation: blur, resize, noise, JPEG.

    Defaults are Real-ESRGAN's first order (train_realesrgan_x4plus). The
    *_prob fields marked "(vhsup)" are additions; at 1.0 they give the
    published behaviour.
    """

    blur_prob: float = _p(1.0, "prob", doc="chance of blurring at all (Real-ESRGAN: 1 first, 0.8 second)")
    kernel_size: tuple = _p((7, 21), "orange", 3, 41, doc="odd kernel sizes drawn uniformly")
    kernel_list: tuple = _p(KERNELS, "names", choices=KERNELS)
    kernel_prob: tuple = _p((0.45, 0.25, 0.12, 0.03, 0.12, 0.03), "weights", 0, math.inf)
    sinc_prob: float = _p(0.1, "prob", doc="chance the blur is a sinc (ringing) kernel instead")
    blur_sigma: tuple = _p((0.2, 3.0), "range", 0.05, 20.0, doc="Gaussian sigma in HR pixels")
    betag_range: tuple = _p((0.5, 4.0), "range", 0.1, 10.0, doc="generalized Gaussian shape")
    betap_range: tuple = _p((1.0, 2.0), "range", 0.1, 10.0, doc="plateau kernel shape")
    resize_prob: tuple = _p((0.2, 0.7, 0.1), "weights", 0, math.inf, length=3, doc="up, down, keep")
    resize_range: tuple = _p((0.15, 1.5), "range", 0.05, 4.0, doc="scale factors; must contain 1")
    noise_prob: float = _p(1.0, "prob", doc="(vhsup) chance of adding noise at all")
    gaussian_noise_prob: float = _p(0.5, "prob", doc="Gaussian, else Poisson")
    noise_range: tuple = _p((1.0, 30.0), "range", 0.0, 255.0, doc="Gaussian sigma, 8-bit code values")
    poisson_scale_range: tuple = _p((0.05, 3.0), "range", 0.0, 50.0)
    gray_noise_prob: float = _p(0.4, "prob", doc="luma-only noise, else independent per channel")
    jpeg_prob: float = _p(1.0, "prob", doc="(vhsup) chance of the JPEG step")
    jpeg_range: tuple = _p((30, 95), "irange", 1, 100, doc="JPEG quality")


def _second_order() -> OrderSpec:
    return OrderSpec(
        blur_prob=0.8,
        blur_sigma=(0.2, 1.5),
        resize_prob=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0),
        poisson_scale_range=(0.05, 2.5),
    )


@dataclass(frozen=True)
class GenericSpec:
    """Real-ESRGAN's second-order pipeline (defaults: their published options)."""

    enabled: bool = _p(True, "bool", doc="false: a plain antialiased bicubic downscale instead")
    first: OrderSpec = field(default_factory=OrderSpec)
    second: OrderSpec = field(default_factory=_second_order)
    second_order_prob: float = _p(1.0, "prob", doc="(vhsup) chance of the second round at all")
    final_sinc_prob: float = _p(0.8, "prob", doc="chance of the sinc filter after the final resize")
    jpeg_first_prob: float = _p(0.5, "prob", doc="chance the last JPEG comes before [resize + sinc]")
    resize_modes: tuple = _p(RESIZE_MODES, "names", choices=RESIZE_MODES)


@dataclass(frozen=True)
class VhsSpec:
    """Tape artefacts, applied at LR (SD) resolution.

    Frequencies are for a line sampled at 13.5 MHz (720 samples, BT.601);
    ``line_width`` says how many LR pixels such a line has, and distances
    in "720-line samples" are scaled by line_width / 720. A bandwidth of 0
    means no filter. Noise is in 8-bit code values of full-range Y'CbCr, as
    measured on the output (after the playback filters, before sharpening).
    """

    prob: float = _p(1.0, "prob", doc="fraction of samples that get tape artefacts")
    line_width: float = _p(720.0, "float", 16.0, 4096.0, doc="LR pixels per 13.5 MHz line")
    luma_mhz: tuple = _p((1.4, 3.0), "range", 0.0, 6.75, doc="luma -6 dB bandwidth: SP 3.0, LP 2.4/1.9, EP 1.4")
    chroma_mhz: tuple = _p((0.3, 0.5), "range", 0.0, 6.75, doc="chroma -3 dB bandwidth (colour-under)")
    chroma_delay_px: tuple = _p((0.0, 4.0), "range", -32.0, 32.0, doc="chroma lag behind luma, 720-line samples")
    luma_noise: tuple = _p((0.0, 4.0), "range", 0.0, 100.0)
    chroma_noise: tuple = _p((0.0, 6.0), "range", 0.0, 100.0)
    chroma_comb_prob: float = _p(0.5, "prob", doc="chroma averaged with the line above (1H comb filter)")
    sharpen: tuple = _p((0.0, 1.0), "range", 0.0, 5.0, doc="VCR peaking gain (halos)")
    jitter_px: tuple = _p((0.0, 0.5), "range", 0.0, 10.0, doc="RMS line timebase error, 720-line samples")
    dropouts: tuple = _p((0.0, 8.0), "range", 0.0, 2000.0, doc="mean streaks per 720x480 picture")
    head_switch_prob: float = _p(0.1, "prob", doc="chance the patch is the bottom of a frame")
    head_switch_lines: tuple = _p((4, 10), "irange", 1, 64)
    interlace_prob: float = _p(0.1, "prob", doc="chance of combing left by a missed deinterlace")
    interlace_motion_px: tuple = _p((0.5, 3.0), "range", 0.0, 32.0, doc="motion between the fields, LR pixels")


@dataclass(frozen=True)
class ChromaSpec:
    """Chroma subsampling of the capture or the codec (then upsampled back)."""

    subsampling: tuple = _p(("444",), "names", choices=SUBSAMPLINGS)
    subsampling_prob: tuple = _p((1.0,), "weights", 0, math.inf)


@dataclass(frozen=True)
class Mpeg2Spec:
    """An MPEG-2 round trip (PyAV), last: it is the DVD or capture encode."""

    prob: float = _p(0.0, "prob", doc="fraction of samples encoded")
    mbps: tuple = _p((3.0, 9.0), "range", 0.3, 15.0, doc="bit rate as for a 720x480 29.97 fps stream")


@dataclass(frozen=True)
class DegradationSpec:
    """A fully resolved degradation: every range, probability and switch.

    Build one with :func:`load_spec`; ``to_dict()`` gives the TOML table that
    ``load_spec`` reads back to an equal spec.
    """

    preset: str = _p("vhs", "preset")
    generic: GenericSpec = field(default_factory=GenericSpec)
    vhs: VhsSpec = field(default_factory=VhsSpec)
    chroma: ChromaSpec = field(default_factory=ChromaSpec)
    mpeg2: Mpeg2Spec = field(default_factory=Mpeg2Spec)

    def to_dict(self) -> dict:
        """Nested plain dict (lists, floats, ints, bools, strings): TOML-ready."""
        return _to_dict(self)


def _to_dict(obj) -> dict:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = _to_dict(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


# --------------------------------------------------------------------------
# Presets: overrides of the defaults above.

_MILD_FIRST = {
    "blur_sigma": [0.2, 1.5],
    "resize_prob": [0.2, 0.6, 0.2],
    "resize_range": [0.5, 1.3],
    "noise_prob": 0.5,
    "noise_range": [1.0, 8.0],
    "poisson_scale_range": [0.05, 1.5],
    "jpeg_prob": 0.3,
    "jpeg_range": [60, 95],
}
_MILD_SECOND = {
    "blur_prob": 0.5,
    "blur_sigma": [0.2, 1.0],
    "resize_range": [0.6, 1.2],
    "noise_prob": 0.3,
    "noise_range": [1.0, 5.0],
    "poisson_scale_range": [0.05, 1.0],
    "jpeg_prob": 0.2,
    "jpeg_range": [70, 95],
}

_PRESET_OVERRIDES: dict[str, dict] = {
    # Real-ESRGAN as published; nothing video-specific.
    "generic": {"vhs": {"prob": 0.0}},
    # A tape through a VCR and a capture device (DV bridge, capture card or
    # DVD recorder), on top of a milder generic part for lens/camera blur.
    "vhs": {
        "generic": {
            "first": _MILD_FIRST,
            "second": _MILD_SECOND,
            "second_order_prob": 0.5,
            "final_sinc_prob": 0.3,
        },
        "chroma": {"subsampling": ["444", "422", "420", "411"], "subsampling_prob": [0.1, 0.2, 0.35, 0.35]},
        "mpeg2": {"prob": 0.4, "mbps": [3.0, 9.0]},
    },
    # A DVD: mild optical/scaler blur, 4:2:0, MPEG-2 blocking and mosquitoes.
    "dvd": {
        "generic": {
            "first": {
                "kernel_list": ["iso", "aniso"],
                "kernel_prob": [0.6, 0.4],
                "kernel_size": [7, 13],
                "sinc_prob": 0.0,
                "blur_sigma": [0.2, 1.2],
                "resize_prob": [0.1, 0.3, 0.6],
                "resize_range": [0.7, 1.2],
                "noise_prob": 0.3,
                "noise_range": [1.0, 4.0],
                "poisson_scale_range": [0.05, 1.0],
                "jpeg_prob": 0.0,
            },
            "second_order_prob": 0.0,
            "final_sinc_prob": 0.2,
        },
        "vhs": {"prob": 0.0},
        "chroma": {"subsampling": ["420"], "subsampling_prob": [1.0]},
        "mpeg2": {"prob": 1.0, "mbps": [3.0, 9.0]},
    },
    # A plain antialiased bicubic downscale (the classic SR benchmark).
    "none": {"generic": {"enabled": False}, "vhs": {"prob": 0.0}},
}


# --------------------------------------------------------------------------
# Loading and validation.


def load_spec(preset: str = "vhs", overrides: dict | None = None, *, path=None) -> DegradationSpec:
    """The spec for ``preset`` with ``overrides`` (the config's [degradation] table) applied.

    A ``preset`` key inside ``overrides`` names the base preset and wins over
    the argument (so a saved ``to_dict()`` always reloads as itself).

    Raises:
        VhsupError: unknown preset or key, a value of the wrong kind, a range
            out of bounds or reversed; the message names ``path`` and the key
            (as ``degradation.section.key``).
    """
    overrides = dict(overrides or {})
    name = overrides.pop("preset", preset)
    if not isinstance(name, str) or name.lower() not in PRESETS:
        raise VhsupError(
            f"degradation.preset: unknown degradation preset {name!r}; choose one of {', '.join(PRESETS)}", path
        )
    name = name.lower()
    table = _to_dict(DegradationSpec())
    _merge(table, _PRESET_OVERRIDES[name], "degradation", path)
    _merge(table, overrides, "degradation", path)
    table["preset"] = name
    return _build(DegradationSpec, table, "degradation", path)


def _merge(base: dict, over: dict, where: str, path) -> None:
    if not isinstance(over, dict):
        raise VhsupError(f"{where}: expected a table of settings, got {over!r}", path)
    for key, value in over.items():
        dotted = f"{where}.{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise VhsupError(f"{dotted}: unknown degradation setting (known here: {known})", path)
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise VhsupError(f"{dotted}: expected a table of settings, got {value!r}", path)
            _merge(base[key], value, dotted, path)
        else:
            base[key] = copy.deepcopy(value)


def _build(cls, table: dict, where: str, path):
    kwargs = {}
    for f in dataclasses.fields(cls):
        dotted = f"{where}.{f.name}"
        value = table[f.name]
        if "kind" not in f.metadata:  # a nested section: its default names its class
            assert callable(f.default_factory)  # nested sections always have one
            kwargs[f.name] = _build(type(f.default_factory()), value, dotted, path)
        else:
            kwargs[f.name] = _check(f.metadata, value, dotted, path)
    for wname, lname in _WEIGHTS_OF.items():
        if wname in kwargs and len(kwargs[wname]) != len(kwargs[lname]):
            raise VhsupError(
                f"{where}.{wname}: needs one weight per entry of {lname} "
                f"({len(kwargs[lname])}), got {len(kwargs[wname])}",
                path,
            )
    if cls is OrderSpec:
        lo, hi = kwargs["resize_range"]
        if not lo <= 1.0 <= hi:
            raise VhsupError(
                f"{where}.resize_range: must contain 1 (down below it, up above it), got [{lo}, {hi}]", path
            )
    return cls(**kwargs)


def _number(v, dotted, path, *, integer=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise VhsupError(f"{dotted}: expected a number, got {v!r}", path)
    if integer:
        if float(v) != int(v):
            raise VhsupError(f"{dotted}: expected whole numbers, got {v!r}", path)
        return int(v)
    return float(v)


def _check(meta, value, dotted: str, path):
    kind, lo, hi = meta["kind"], meta["lo"], meta["hi"]
    if kind == "preset":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise VhsupError(f"{dotted}: expected true or false, got {value!r}", path)
        return value
    if kind in ("prob", "float"):
        v = _number(value, dotted, path)
        if not lo <= v <= hi:
            raise VhsupError(f"{dotted}: must be between {lo:g} and {hi:g}, got {v:g}", path)
        return v
    if kind in ("range", "irange", "orange"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise VhsupError(f"{dotted}: expected [low, high] (or one number), got {value!r}", path)
        a, b = (_number(v, dotted, path, integer=kind != "range") for v in value)
        if a > b:
            raise VhsupError(f"{dotted}: low end {a:g} is above high end {b:g}", path)
        if a < lo or b > hi:
            raise VhsupError(f"{dotted}: must lie within [{lo:g}, {hi:g}], got [{a:g}, {b:g}]", path)
        if kind == "orange" and (a % 2 == 0 or b % 2 == 0):
            raise VhsupError(f"{dotted}: kernel sizes must be odd, got [{a}, {b}]", path)
        return (a, b)
    if kind == "names":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise VhsupError(f"{dotted}: expected a non-empty list of names, got {value!r}", path)
        bad = [v for v in value if v not in meta["choices"]]
        if bad:
            raise VhsupError(f"{dotted}: unknown {bad[0]!r}; choose from {', '.join(meta['choices'])}", path)
        if len(set(value)) != len(value):
            raise VhsupError(f"{dotted}: names repeat in {list(value)!r}", path)
        return tuple(str(v) for v in value)
    if kind == "weights":
        if not isinstance(value, (list, tuple)) or not value:
            raise VhsupError(f"{dotted}: expected a list of weights, got {value!r}", path)
        ws = tuple(_number(v, dotted, path) for v in value)
        if any(w < 0 for w in ws) or sum(ws) <= 0:
            raise VhsupError(f"{dotted}: weights must be >= 0 and not all 0, got {list(ws)!r}", path)
        if meta["length"] is not None and len(ws) != meta["length"]:
            raise VhsupError(f"{dotted}: expected {meta['length']} weights, got {len(ws)}", path)
        return ws
    raise AssertionError(kind)  # a field declared with an unknown kind
