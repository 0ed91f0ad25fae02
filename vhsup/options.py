"""Every option of an upscale, declared once.

Each field of :class:`Options` is an option of the Python API
(``upscale_video(src, dst, **options)``) and, where its :class:`Opt` names
them, of the commands ``upscale``, ``batch``, ``probe``, ``bench`` and
``extract``: default, type, help and choices live in the field and its
metadata, and the command line builds its flags from them
(vhsup/cli_params.py). To add an option, add a field here; to offer it on a
command, name the command in its ``commands``.

Which settings change the output is decided in one place,
:func:`output_settings`, for chunked runs (a chunk made with other settings
is redone) and batch libraries (a finished file made with other settings is
redone). The rule:

* the model (by its weights), ``backend`` and ``precision`` change the
  pixels: another runtime or half precision gives other values;
* the field and telecine handling, crop, size, encoder settings and the
  time range change the pictures or the file;
* ``tile`` and ``batch`` do not: tiles overlap by the model's reach, so a
  tiled result matches the untiled one within 1/255, and frames per pass
  change nothing per frame;
* ``device`` does not: one model at one precision gives the same pixels
  on CPU and GPU up to rounding. ``--precision auto`` counts as "auto" (the
  device's best), so a library moved from a CPU to a GPU machine is not
  redone; give a precision to pin it;
* ``compare``, ``overwrite``, ``allow_download``, ``decode_threads`` and
  ``queue`` change how a run goes, not what it writes;
* the ``restore`` extra does where it works: the same flags then run
  QTGMC and MVTools instead of bwdif and atadenoise (``restore_extra``),
  and VIVTC instead of fieldmatch + decimate (``ivtc_method``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

from vhsup.errors import VhsupError
from vhsup.media import VIDEO_CODECS
from vhsup.media.filters import DEINTERLACE_CHOICES
from vhsup.media.geometry import Crop
from vhsup.restore.denoise import LEVELS as DENOISE_LEVELS
from vhsup.restore.preset import PRESETS as RESTORE_PRESETS
from vhsup.restore.qtgmc import DEFAULT_PRESET as QTGMC_DEFAULT
from vhsup.restore.qtgmc import PRESETS as QTGMC_PRESETS

#: How the command line reads an option: "tile" and "count" are "auto" or a number.
Kind = Literal["text", "int", "float", "flag", "path", "choice", "tile", "count"]

UPSCALE, BATCH, PROBE, BENCH, EXTRACT = "upscale", "batch", "probe", "bench", "extract"
_RUN = frozenset({UPSCALE, BATCH})  # options of a whole run
_PLAN = _RUN | {PROBE}  # options that shape the plan `probe` shows
_MEDIA = _PLAN | {EXTRACT}  # options that shape the pictures themselves
_ENGINE = _RUN | {BENCH}  # options of the SR engine and encoder that bench times
_RESTORE = _PLAN | {BENCH}  # the restore stages, which bench times within its decode stage


@dataclass(frozen=True)
class Opt:
    """What an :class:`Options` field means to the command line and to resuming.

    Attributes:
        help: the flags' help line ('' for none).
        kind: how the command line reads it.
        choices: the allowed values of a "choice".
        flag: the flag ('' = ``--`` and the field name with dashes).
        commands: the commands that offer it (none: Python API only).
        output: it changes what a run writes (see :func:`output_settings`).
        added_later: an output option added after batch libraries were first
            hashed: it joins the settings only when not at its default, so
            that libraries finished before it existed keep their hash.
        help_for: a command whose help line says more for that command.
    """

    help: str = ""
    kind: Kind = "text"
    choices: tuple[str, ...] = ()
    flag: str = ""
    commands: frozenset[str] = frozenset()
    output: bool = False
    added_later: bool = False
    help_for: tuple[tuple[str, str], ...] = ()

    def help_in(self, command: str) -> str:
        return dict(self.help_for).get(command, self.help)


def _opt(
    default: Any,
    help: str = "",
    *,
    kind: Kind = "text",
    choices: tuple[str, ...] = (),
    flag: str = "",
    commands: frozenset[str] = frozenset(),
    output: bool = False,
    added_later: bool = False,
    help_for: tuple[tuple[str, str], ...] = (),
) -> Any:
    if choices:
        kind = "choice"
    meta = Opt(help, kind, choices, flag, frozenset(commands), output, added_later, help_for)
    return field(default=default, metadata={"option": meta})


@dataclass
class Options:
    """Everything ``vhsup upscale`` can be told. Defaults are what a user gets."""

    model: str | None = _opt(
        None,
        "Model name or weights file (default: esrgan-x4 on CUDA, compact-x4 on CPU).",
        commands=_PLAN | _ENGINE,
        output=True,
    )
    backend: str = _opt(
        "torch",
        "onnx: onnxruntime (TensorRT, CUDA or CPU provider; needs the onnx extra).",
        choices=("torch", "onnx"),
        commands=_ENGINE,
        output=True,
        added_later=True,
    )
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N.", commands=_ENGINE)
    precision: str = _opt(
        "auto",
        "auto: bf16 or fp16 on CUDA where the model and GPU allow, else fp32.",
        choices=("auto", "fp32", "fp16", "bf16"),
        commands=_ENGINE,
        output=True,
        added_later=True,
    )
    tile: int | str = _opt(
        "auto", "auto, 0 (whole frames) or a tile edge in input pixels.", kind="tile", commands=_ENGINE
    )
    batch: int | str = _opt("auto", "Frames or tiles per forward pass.", kind="count", commands=_ENGINE)
    deinterlace: str = _opt(
        "auto",
        "auto: when the picture is interlaced; on: always. Both take QTGMC where the restore extra is "
        "installed, bwdif elsewhere; qtgmc or bwdif: that one, always.",
        choices=DEINTERLACE_CHOICES,
        commands=_MEDIA | {BENCH},
        output=True,
    )
    qtgmc_preset: str = _opt(
        QTGMC_DEFAULT,
        "QTGMC's temporal radii, as its presets of these names (slower is QTGMC's default).",
        choices=tuple(QTGMC_PRESETS),
        commands=_RESTORE,
        output=True,
        added_later=True,
    )
    field_rate: str = _opt(
        "single",
        "double: one frame per field (59.94p from 29.97i).",
        choices=("single", "double"),
        commands=_PLAN,
        output=True,
    )
    field_order: str = _opt(
        "auto",
        "auto: the flags, or the pictures' order where they clearly contradict the flags.",
        choices=("auto", "tff", "bff"),
        commands=_MEDIA,
        output=True,
        added_later=True,
    )
    ivtc: bool = _opt(
        False,
        "Undo 3:2 telecine (film on NTSC video) to 23.976p: VIVTC with the restore extra, FFmpeg's fieldmatch + "
        "decimate without it.",
        kind="flag",
        commands=_MEDIA,
        output=True,
    )
    # Changes no picture, but turns a refusal (no telecine seen) into an output: a failed file is retried.
    force_ivtc: bool = _opt(
        False,
        "With --ivtc: run it even where the picture does not look telecined (drops one frame in five).",
        kind="flag",
        commands=_MEDIA,
        output=True,
        added_later=True,
    )
    crop: str | Crop | None = _opt(
        None,
        "auto (measure the black borders and head-switching lines), or L,T,R,B pixels to remove.",
        commands=_MEDIA,
        output=True,
    )
    restore: str = _opt(
        "off",
        "The restorers' chain before SR in one flag: vhs = QTGMC deinterlace, --chroma-shift auto, --denoise "
        "medium; dvd = inverse telecine where the picture is telecined (else deinterlace), --denoise light. "
        "Flags given as well win.",
        choices=RESTORE_PRESETS,
        commands=_RESTORE,
        output=True,
        added_later=True,
    )
    denoise: str = _opt(
        "auto",
        "Temporal denoise before SR: light, medium or strong (MVTools motion-compensated with the restore extra, "
        "FFmpeg atadenoise without), off; auto: as --restore says, else off.",
        choices=("auto", *DENOISE_LEVELS),
        commands=_RESTORE,
        output=True,
        added_later=True,
    )
    dedot: bool = _opt(
        False,
        "Remove dot crawl (composite captures: a fine chequer crawling along colour edges) before deinterlacing: "
        "Dedot, needs the restore extra.",
        kind="flag",
        commands=_RESTORE,
        output=True,
        added_later=True,
    )
    derainbow: bool = _opt(
        False,
        "Remove rainbows (composite captures: false colour shimmering over fine detail) before deinterlacing: "
        "Bifrost, needs the restore extra.",
        kind="flag",
        commands=_RESTORE,
        output=True,
        added_later=True,
    )
    chroma_shift: str | None = _opt(
        None,
        "Move the chroma back onto the luma before SR (tape chroma lags 2-6 px): auto (measured once per file), "
        "off, or X,Y source pixels (right/down positive, e.g. -3.5,0). Default: off (auto with --restore vhs).",
        commands=_RESTORE,
        output=True,
        added_later=True,
    )
    detail: float = _opt(
        1.0,
        "0..1: blend the model's output with a Lanczos upscale of the same picture (1: the model, 0: Lanczos).",
        kind="float",
        commands=_PLAN | _ENGINE,
        output=True,
        added_later=True,
    )
    temporal: str = _opt(
        "auto",
        "Temporal stabiliser after SR: auto (on for GAN models, off for bicubic/lanczos), off, light or strong.",
        choices=("auto", "off", "light", "strong"),
        commands=_PLAN | _ENGINE,
        output=True,
        added_later=True,
    )
    width: int | None = _opt(None, "Output width, aspect kept.", kind="int", commands=_PLAN, output=True)
    height: int | None = _opt(None, "Output height, aspect kept (e.g. 1080).", kind="int", commands=_PLAN, output=True)
    codec: str = _opt(
        "libx264",
        choices=VIDEO_CODECS,
        commands=_ENGINE,
        output=True,
        help_for=((BENCH, "Encoder for the end-to-end timing."),),
    )
    crf: int | None = _opt(None, "Quality for x264/x265 (default 18).", kind="int", commands=_RUN, output=True)
    preset: str | None = _opt(None, "Encoder preset (x264/x265 default: medium).", commands=_ENGINE, output=True)
    pix_fmt: str = _opt("yuv420p", choices=("yuv420p", "yuv420p10le"), commands=_RUN, output=True)
    start: float | None = _opt(
        None, "Start at this many seconds.", kind="float", commands=frozenset({UPSCALE}), output=True, added_later=True
    )
    duration: float | None = _opt(
        None, "Upscale this many seconds.", kind="float", commands=frozenset({UPSCALE}), output=True, added_later=True
    )
    frames: int | None = _opt(
        None,
        "Upscale at most this many frames.",
        kind="int",
        commands=frozenset({UPSCALE}),
        output=True,
        added_later=True,
    )
    compare: str | os.PathLike[str] | None = _opt(
        None,
        "Also write a side-by-side PNG (bicubic vs the model) of one frame.",
        kind="path",
        commands=frozenset({UPSCALE}),
    )
    overwrite: bool = _opt(False, "Replace an existing output.", kind="flag", commands=frozenset({UPSCALE}))
    allow_download: bool = _opt(
        False, "Allow fetching weights from the official release URL.", kind="flag", flag="--download", commands=_RUN
    )
    decode_threads: int = _opt(0, "Decoder threads (0: the decoder's choice).", kind="int")
    queue: int = _opt(8, "Frames held between the decode, infer and encode threads.", kind="int")

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> Options:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**kwargs)  # type: ignore[arg-type]


class Declared(NamedTuple):
    """One option as declared: its field name, default and :class:`Opt`."""

    name: str
    default: Any
    opt: Opt


def declared(command: str | None = None) -> list[Declared]:
    """The options in declaration order; with ``command``, those it offers."""
    found = [Declared(f.name, f.default, f.metadata["option"]) for f in fields(Options)]
    return [d for d in found if command is None or command in d.opt.commands]


def model_name(opts: Options) -> str:
    """The model a run will use: the user's, else the device's default."""
    if opts.model:
        return opts.model
    # Imported here so that the media layer and `vhsup probe` stay light.
    import torch

    from vhsup.registry import default_model

    return default_model(torch.cuda.is_available() and opts.device != "cpu")


def resolved_model(opts: Options) -> str:
    """:func:`model_name`, with a weights file as an absolute path (workers may run elsewhere)."""
    name = model_name(opts)
    if Path(name).expanduser().is_file():
        return str(Path(name).expanduser().resolve())
    return name


def weights_id(model: str) -> str:
    """What identifies the weights, so that replacing a weights file redoes the work."""
    from vhsup import registry

    if model in registry.model_names():
        w = registry.card(model).weights
        return w.tensors_sha256 if w else "builtin"
    if re.match(r"^(bicubic|lanczos)-x\d+$", model):
        return "classical"
    path = Path(model).expanduser()
    if path.is_file():
        from vhsup.batch.manifest import fingerprint

        return "file:" + fingerprint(path)
    known = ", ".join(registry.model_names())
    raise VhsupError(f"unknown model {model!r}; known: {known}, bicubic-xN, lanczos-xN, or a weights file path")


def output_settings(opts: Options) -> dict[str, Any]:
    """The settings that decide what a run writes (the rule is in this module's docstring).

    The model is named as :func:`resolved_model` names it, beside its
    :func:`weights_id`; then every option declared ``output``, those
    ``added_later`` only when not at their default. Chunked runs and batch
    libraries both hash this, so they redo work for the same changes.
    """
    name = resolved_model(opts)
    settings: dict[str, Any] = {"model": name, "weights": weights_id(name)}
    for d in declared():
        if not d.opt.output or d.name == "model":
            continue
        value = getattr(opts, d.name)
        if d.opt.added_later and value == d.default:
            continue
        settings[d.name] = value
    if _may_use_vapoursynth(opts):
        from vhsup.restore import vs as bridge

        if bridge.check() is None:  # QTGMC and MVTools run instead of bwdif and atadenoise
            settings["restore_extra"] = True
    if opts.ivtc or opts.restore == "dvd":
        from vhsup.restore import ivtc

        if ivtc.works():  # VIVTC runs instead of fieldmatch + decimate (its plugin is checked on its own)
            settings["ivtc_method"] = "vivtc"
    return settings


def _may_use_vapoursynth(opts: Options) -> bool:
    """Whether the restore extra, where it works, changes what ``opts`` make (the same flags
    run bwdif/atadenoise without it), so that installing it redoes the work."""
    denoise = opts.denoise not in ("off", "auto") or (opts.denoise == "auto" and opts.restore != "off")
    return opts.deinterlace in ("auto", "on", "qtgmc") or denoise or opts.ivtc
