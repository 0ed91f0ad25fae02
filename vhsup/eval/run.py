"""The benchmark folder: building its clips, and running configurations on them.

``build_benchmark(folder)`` writes every scene x variant clip
(:func:`vhsup.eval.tape.make_clip`, with its JSON sidecar) and an index,
``benchmark.json``, that lists them with the length and seed they were
made with. The build is deterministic (the same arguments give the same
bytes), resumable (a clip already made with the same settings is kept)
and refuses to replace a benchmark made with other settings unless asked.

``run_benchmark(folder, configs)`` runs each configuration - a model, a
``--temporal`` mode and, for ``--with`` rows, a set of other upscale
options (``--with deinterlace=bwdif``, ``--with 'denoise=medium,detail=0.5'``)
- through vhsup's own pipeline in memory
(:class:`vhsup.pipeline.Run`), so that probing, deinterlacing, cropping and
the engine run as they do for a user, and scores every output frame
against the truth rebuilt from the sidecar (:mod:`vhsup.eval.scenes`) with
:class:`vhsup.eval.metrics.ClipScorer`, ``border`` = the model's scale.

Windows. The whole x4 truth of one frame costs about 0.6 s to render and
a GAN model seconds to minutes per SD frame on a CPU, so a run scores a
*window* of each clip by default: the scene's :data:`vhsup.eval.scenes.WINDOWS`
(240x160 SD samples where the scene's action is). vhsup's ``--crop``
removes the rest of the SD frame before the model (after deinterlacing the
whole frame), so output pixel (x, y) is pixel (x + s*left, y + s*top) of
the truth at s times 720x480, which :meth:`Scene.windowed` renders alone.
``--window full`` scores whole frames. Rows the sidecar marks damaged (a
VHS clip's head-switching tear) are never scored: a window is cut short
above them.

Speed is output frames over the seconds spent waiting for the pipeline's
frames (decode, deinterlace, model, resize): rendering the truth and
scoring are not counted.

Results go to ``<folder>/results/<clip>/<config>.json`` (written whole or
not at all), with a few crops of the truth and of the output for the
report in ``samples/`` beside them: a still region and a moving one of
the middle frame, and the first frame after a cut.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vhsup.atomic import replacing
from vhsup.errors import VhsupError
from vhsup.eval.metrics import ClipScorer
from vhsup.eval.scenes import FRAME_RATE, SCENES, SECONDS, WINDOWS, Scene, make_scene
from vhsup.media.picture import Picture

INDEX = "benchmark.json"
RESULTS = "results"
FORMAT = "vhsup eval benchmark"
RESULT_FORMAT = "vhsup eval result"
VERSION = 1
BASELINE = "bicubic"
SD = (720, 480)  # the clips' frame (vhsup.eval.tape.SD_SIZE, without importing the clip makers)
SAMPLE_SD = 64  # sample crops are this many SD samples square (less in small windows)

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------
# The folder and its index.


@dataclass(frozen=True)
class BenchClip:
    """One clip of a benchmark folder, as its index lists it."""

    folder: Path
    file: str
    scene: str
    variant: str
    frames: int
    seed: int

    @property
    def path(self) -> Path:
        return self.folder / self.file

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def name(self) -> str:
        """``<scene>-<variant>``: the clip's name in results and reports."""
        return self.path.stem

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sidecar": self.sidecar.name,
            "scene": self.scene,
            "variant": self.variant,
            "frames": self.frames,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Benchmark:
    """A benchmark folder: its clips and the settings they were built with."""

    folder: Path
    seconds: float
    seed: int
    clips: tuple[BenchClip, ...]

    @property
    def index(self) -> Path:
        return self.folder / INDEX

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "seconds": self.seconds,
            "seed": self.seed,
            "rate": str(FRAME_RATE),
            "clips": [c.to_json() for c in self.clips],
        }

    def select(self, patterns: Sequence[str] = ()) -> list[BenchClip]:
        """The clips whose name or file name matches one of the glob ``patterns`` (all without any)."""
        if not patterns:
            return list(self.clips)
        chosen = [c for c in self.clips if any(fnmatch.fnmatchcase(n, p) for p in patterns for n in (c.name, c.file))]
        if not chosen:
            names = ", ".join(c.name for c in self.clips)
            raise VhsupError(f"no clip matches --clip {' '.join(patterns)}; the clips are {names}", self.folder)
        return chosen


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VhsupError(f"the {what} is missing", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VhsupError(f"cannot read the {what}: {exc}", path) from None
    if not isinstance(data, dict):
        raise VhsupError(f"the {what} is not a JSON object", path)
    return data


def load_benchmark(folder: str | os.PathLike[str]) -> Benchmark:
    """The benchmark in ``folder`` (made by :func:`build_benchmark`), or a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VhsupError("no such benchmark folder" if not folder.exists() else "is not a folder", folder)
    index = folder / INDEX
    if not index.is_file():
        raise VhsupError(f"not a benchmark folder (no {INDEX}); make one with vhsup eval build --out DIR", folder)
    data = _read_json(index, "benchmark index")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise VhsupError(f"not a vhsup eval benchmark index (format {FORMAT!r} version {VERSION})", index)
    try:
        clips = tuple(
            BenchClip(folder, str(c["file"]), str(c["scene"]), str(c["variant"]), int(c["frames"]), int(c["seed"]))
            for c in data["clips"]
        )
        return Benchmark(folder, float(data["seconds"]), int(data["seed"]), clips)
    except (KeyError, TypeError, ValueError) as exc:
        raise VhsupError(f"the benchmark index is damaged ({type(exc).__name__}: {exc})", index) from None


def _write_json(path: Path, data: Any, what: str) -> None:
    with replacing(path, what) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------
# Building.


def clip_seed(seed: int, scene: str, variant: str) -> int:
    """The seed of one clip's look and noise: every clip of a benchmark gets its own."""
    from vhsup.eval.tape import VARIANTS

    return int(seed) * 100 + 2 * SCENES.index(scene) + VARIANTS.index(variant)


def _made(clip: BenchClip) -> bool:
    """Whether ``clip`` is complete on disk as these settings make it (its sidecar is written last)."""
    if not clip.path.is_file() or not clip.sidecar.is_file():
        return False
    try:
        side = json.loads(clip.sidecar.read_text())
        return (
            side["file"] == clip.file
            and side["variant"] == clip.variant
            and side["seed"] == clip.seed
            and side["frames"] == clip.frames
            and side["scene"]["scene"] == clip.scene
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_benchmark(
    folder: str | os.PathLike[str],
    *,
    seconds: float = SECONDS,
    scenes: Sequence[str] = SCENES,
    variants: Sequence[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    echo: Echo = _quiet,
) -> Benchmark:
    """Write the benchmark's clips, sidecars and index into ``folder``.

    A folder that holds this benchmark (same length and seed) keeps the
    clips already made and gains the ones asked for; one that holds
    another benchmark, or other files, is refused unless ``overwrite``.
    The index is rewritten after every clip, so an interrupted build
    resumes where it stopped.
    """
    from vhsup.eval.tape import VARIANTS, clip_name, make_clip

    folder = Path(folder)
    variants = tuple(VARIANTS if variants is None else variants)
    for name in scenes:
        if name not in SCENES:
            raise VhsupError(f"unknown scene {name!r}; the scenes are {', '.join(SCENES)}")
    for v in variants:
        if v not in VARIANTS:
            raise VhsupError(f"unknown clip variant {v!r}; choose from {', '.join(VARIANTS)}")
    if seed < 0:
        raise VhsupError(f"--seed must not be negative, not {seed}")
    wanted = [(s, v) for s in SCENES if s in scenes for v in VARIANTS if v in variants]
    if not wanted:
        raise VhsupError("no clips to build: give at least one scene and one variant")
    probe_scene = {s: make_scene(s, size=(64, 48), seconds=seconds, seed=seed) for s, _ in wanted}  # checks seconds
    frames = next(iter(probe_scene.values())).frames
    exact = float(frames / FRAME_RATE)

    if folder.exists() and not folder.is_dir():
        raise VhsupError("the benchmark folder is a file", folder)
    existing: Benchmark | None = None
    if (folder / INDEX).exists():
        try:
            existing = load_benchmark(folder)
        except VhsupError:
            if not overwrite:
                raise
    elif folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise VhsupError(f"the folder holds other files and no {INDEX}; choose a new or empty folder", folder)
    kept: dict[str, BenchClip] = {}
    if existing is not None:
        if (existing.seconds, existing.seed) == (exact, seed):
            kept = {c.file: c for c in existing.clips if _made(c)}
        elif not overwrite:
            raise VhsupError(
                f"holds a different benchmark ({existing.seconds:g} s, seed {existing.seed}); "
                f"pass --overwrite to replace it, or choose another folder",
                existing.index,
            )
    folder.mkdir(parents=True, exist_ok=True)

    todo = []
    for s, v in wanted:
        scene = probe_scene[s]
        clip = BenchClip(folder, clip_name(scene, v), s, v, frames, clip_seed(seed, s, v))
        if clip.file in kept and kept[clip.file] == clip:
            continue
        todo.append(clip)
    if not todo:
        echo(f"{folder}: the benchmark is up to date ({len(wanted)} clips of {frames} frames)")
    clips = dict(kept)
    for i, clip in enumerate(todo, 1):
        t0 = time.perf_counter()
        echo(f"{clip.path}: building ({i}/{len(todo)}, {frames} frames) ...")
        scene = make_scene(clip.scene, seconds=exact, seed=seed)
        clips.pop(clip.file, None)
        make_clip(scene, clip.variant, clip.path, seed=clip.seed)
        clips[clip.file] = clip
        bench = Benchmark(folder, exact, seed, _ordered(clips.values()))
        _write_json(bench.index, bench.to_json(), "benchmark index")
        echo(f"{clip.path}: built in {time.perf_counter() - t0:.1f} s")
    bench = Benchmark(folder, exact, seed, _ordered(clips.values()))
    if existing is None or existing.to_json() != bench.to_json():
        _write_json(bench.index, bench.to_json(), "benchmark index")
    return bench


def _ordered(clips: Iterable[BenchClip]) -> tuple[BenchClip, ...]:
    from vhsup.eval.tape import VARIANTS

    return tuple(sorted(clips, key=lambda c: (SCENES.index(c.scene), VARIANTS.index(c.variant))))


# --------------------------------------------------------------------------
# Configurations and windows.


#: The post-filter the ``--anchor`` rows run after a model's per-frame output.
ANCHOR = "vs-temporalfix"


#: One ``--with``: (option name, value as its flag reads it) pairs, in the order given.
OptionSet = tuple[tuple[str, Any], ...]

#: The options ``--with`` does not take, and why: the run sets them itself (the rows, the window, the
#: frames scored against the truth at its size and rate), or they only concern a written file.
_SETS = "the eval run sets it"
_NO_FILE = "the eval run writes no video file"
_RATE = "the output must keep the truth's frame rate"
OWNED: dict[str, str] = {
    "model": f"{_SETS} (--model)",
    "temporal": f"{_SETS} (--temporal)",
    "crop": f"{_SETS} (--window)",
    "frames": f"{_SETS} (--frames)",
    "start": "the eval run scores each clip from its first frame (--frames)",
    "duration": "the eval run scores each clip from its first frame (--frames)",
    "width": "the output must be the truth's size",
    "height": "the output must be the truth's size",
    "field_rate": _RATE,
    "ivtc": _RATE,
    "force_ivtc": _RATE,
    "codec": _NO_FILE,
    "crf": _NO_FILE,
    "preset": _NO_FILE,
    "pix_fmt": _NO_FILE,
    "compare": _NO_FILE,
    "overwrite": _NO_FILE,
    "allow_download": "the eval run checks the models before it starts",
}


def with_options() -> list[str]:
    """The options ``--with`` takes: every upscale option (vhsup.options) the run does not set itself."""
    from vhsup.options import declared

    return [d.name for d in declared() if d.name not in OWNED]


def parse_option_set(text: str) -> OptionSet:
    """One ``--with KEY=VALUE[,KEY=VALUE...]``: each KEY an upscale option's name (dashes or
    underscores), each VALUE read as that option's flag reads it. A piece without ``=`` continues
    the value before it, so that ``chroma-shift=-3.5,0`` is one value. One-line errors."""
    import click

    from vhsup.cli_params import parse_value
    from vhsup.options import declared

    pieces: list[list[str]] = []
    for piece in text.split(","):
        if "=" in piece:
            pieces.append(list(piece.split("=", 1)))
        elif pieces:
            pieces[-1][1] += "," + piece
        else:
            raise VhsupError(f"--with takes KEY=VALUE[,KEY=VALUE...], not {text!r}")
    known = {d.name: d for d in declared()}
    allowed = ", ".join(n.replace("_", "-") for n in with_options())
    out: dict[str, Any] = {}
    for raw_key, raw_value in pieces:
        key = raw_key.strip().lstrip("-").replace("-", "_")
        value = raw_value.strip()
        if key in OWNED:
            raise VhsupError(f"--with {raw_key.strip()}: {OWNED[key]}; --with takes {allowed}")
        if key not in known:
            raise VhsupError(f"--with: unknown option {raw_key.strip()!r}; --with takes {allowed}")
        if key in out:
            raise VhsupError(f"--with {text}: {key.replace('_', '-')} is given twice")
        if not value:
            raise VhsupError(f"--with {raw_key.strip()}=: give a value")
        try:
            out[key] = parse_value(known[key], value)
        except click.BadParameter as exc:
            raise VhsupError(f"--with {key.replace('_', '-')}={value}: {exc.message}") from None
    return tuple(out.items())


def value_text(value: Any) -> str:
    """An option's value as --with writes it (a flag on or off, a float as short as it goes)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def options_label(options: OptionSet) -> str:
    """An option set as part of a file name: ``denoise-medium+chroma_shift-auto`` ('' for none).

    Keys are the options' field names (no dashes), so the first dash ends the key; values keep
    letters, digits and ``.,_-``, anything else becomes ``_``.
    """
    return "+".join(f"{k}-{re.sub(r'[^A-Za-z0-9.,_-]', '_', value_text(v))}" for k, v in options)


def options_json(options: OptionSet) -> dict[str, Any]:
    """An option set as the results store it: {name: value}."""
    return {k: v if isinstance(v, (bool, int, float, str)) or v is None else str(v) for k, v in options}


@dataclass(frozen=True)
class Config:
    """One row of the benchmark: a model (name or weights file) and a ``--temporal`` mode;
    ``anchor`` rows run the model per frame and then vs_temporalfix (:mod:`vhsup.eval.anchor`);
    ``options``: other upscale options the row runs with (one ``--with``)."""

    model: str
    temporal: str
    anchor: str = ""
    options: OptionSet = ()

    @property
    def base_label(self) -> str:
        """The label without the options: ``compact-x4.temporal-off`` (``...temporal-off.vs-temporalfix``)."""
        m = self.model
        stem = Path(m).stem if ("/" in m or os.sep in m or Path(m).suffix) else m
        return f"{stem}.temporal-{self.temporal}" + (f".{self.anchor}" if self.anchor else "")

    @property
    def label(self) -> str:
        """A name fit for a file: :attr:`base_label`, then ``.`` and :func:`options_label` when
        the row has options (``compact-x4.temporal-auto.denoise-medium+chroma_shift-auto``)."""
        suffix = options_label(self.options)
        return self.base_label + (f".{suffix}" if suffix else "")


def configs(
    models: Sequence[str],
    temporals: Sequence[str],
    *,
    anchor: bool = False,
    option_sets: Sequence[OptionSet] = (),
) -> list[Config]:
    """Every (model, temporal) pair, after the bicubic baseline (per frame), each once; with
    ``anchor``, each model per frame followed by vs_temporalfix as well. Each of these rows
    runs plain and then once with each of ``option_sets`` (``--with``), the baseline too.

    Bicubic with ``auto`` is the baseline itself (auto leaves a classical
    resampler unstabilised), so it is not run twice.
    """
    sets: list[OptionSet] = [(), *dict.fromkeys(s for s in option_sets if s)]
    rows = [Config(BASELINE, "off")]
    for m in models:
        for t in temporals:
            if Config(m, t) not in rows and (m, t) != (BASELINE, "auto"):
                rows.append(Config(m, t))
        if anchor and m != BASELINE:
            rows.append(Config(m, "off", ANCHOR))
    out = [Config(c.model, c.temporal, c.anchor, s) for c in rows for s in sets]
    labels: dict[str, OptionSet] = {}
    for c in out:
        if labels.setdefault(c.label, c.options) != c.options:
            raise VhsupError(f"--with: two option sets give the same row name {c.label}; write their values apart")
    return out


def check_anchor(configurations: Sequence[Config]) -> None:
    """A one-line error, before any work, when an anchor row is asked for and cannot run."""
    if any(c.anchor for c in configurations):
        from vhsup.eval import anchor

        reason = anchor.available()
        if reason is not None:
            raise VhsupError(f"--anchor: vs_temporalfix cannot run: {reason}")


@dataclass(frozen=True)
class Window:
    """A region of the SD frame, in samples: what a run keeps for the model."""

    left: int
    top: int
    width: int
    height: int

    def crop(self) -> str:
        """vhsup's ``--crop L,T,R,B`` that keeps just this window."""
        return f"{self.left},{self.top},{SD[0] - self.left - self.width},{SD[1] - self.top - self.height}"

    def to_json(self) -> dict[str, int]:
        return {"left": self.left, "top": self.top, "width": self.width, "height": self.height}

    def __str__(self) -> str:
        return f"{self.width}x{self.height} at ({self.left}, {self.top})"


def parse_window(text: str) -> Window | str:
    """``--window``: 'default' (each scene's), 'full', or LEFT,TOP,WIDTH,HEIGHT in SD samples."""
    t = text.strip().lower()
    if t in ("default", "full"):
        return t
    try:
        values = [int(v) for v in t.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise VhsupError(f"--window takes default, full or LEFT,TOP,WIDTH,HEIGHT in SD samples, not {text!r}")
    x, y, w, h = values
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise VhsupError(f"--window {text}: width and height must be even and at least 16")
    if x < 0 or y < 0 or x + w > SD[0] or y + h > SD[1]:
        raise VhsupError(f"--window {text} does not fit in the {SD[0]}x{SD[1]} frame")
    return Window(x, y, w, h)


def clip_window(scene: str, choice: Window | str, damaged_rows: Sequence[int] = ()) -> Window:
    """The window a run scores on a clip of ``scene``: ``choice`` cut short above the damaged rows."""
    if choice == "full":
        win = Window(0, 0, *SD)
    elif choice == "default":
        win = Window(*WINDOWS[scene])
    else:
        assert isinstance(choice, Window)
        win = choice
    if damaged_rows:
        bottom = min(win.top + win.height, int(damaged_rows[0]))
        height = (bottom - win.top) // 2 * 2
        if height < 16:
            raise VhsupError(
                f"the window {win} lies in the damaged rows {damaged_rows[0]}-{damaged_rows[1]} of the clip"
            )
        win = Window(win.left, win.top, win.width, height)
    return win


# --------------------------------------------------------------------------
# Running.


def temporal_mode(run: Any, opts: Any) -> str:
    """The ``--temporal`` mode a run used, as its plan reports it (auto resolved); the request
    where the plan does not say."""
    return str(getattr(run.plan, "temporal", opts.temporal))


def truth_scene(clip: BenchClip, side: dict[str, Any], scale: int) -> Scene:
    """The clip's truth at ``scale`` x 720x480 (the output grid of a model of that scale), from its sidecar."""
    try:
        record = side["scene"]
        name, seed, frames = str(record["scene"]), int(record["seed"]), int(record["frames"])
    except (KeyError, TypeError, ValueError):
        raise VhsupError("the sidecar does not describe the clip's scene", clip.sidecar) from None
    if name not in SCENES:
        raise VhsupError(f"the sidecar names a scene this vhsup does not know ({name!r})", clip.sidecar)
    scene = make_scene(name, size=(SD[0] * scale, SD[1] * scale), seconds=float(frames / FRAME_RATE), seed=seed)
    if scene.frames != frames or list(scene.cuts) != list(record.get("cuts", scene.cuts)):
        raise VhsupError(
            "the sidecar's scene is not the one this vhsup renders (made by another version?)", clip.sidecar
        )
    return scene


def _boxes(flow: np.ndarray, size: int, border: int) -> dict[str, tuple[list[int], float]]:
    """The square regions of ``size`` with the least and the most motion (mean |flow|, px per frame)."""
    h, w = flow.shape[:2]
    bw, bh = min(size, w - 2 * border), min(size, h - 2 * border)
    speed = np.hypot(flow[..., 0], flow[..., 1]).astype(np.float64)
    integral = cv2.integral(speed)
    step = max(1, min(bw, bh) // 4)
    best: dict[str, tuple[list[int], float]] = {}
    for y in range(border, h - border - bh + 1, step):
        for x in range(border, w - border - bw + 1, step):
            total = integral[y + bh, x + bw] - integral[y, x + bw] - integral[y + bh, x] + integral[y, x]
            mean = float(total / (bw * bh))
            if "still" not in best or mean < best["still"][1]:
                best["still"] = ([x, y, bw, bh], mean)
            if "moving" not in best or mean > best["moving"][1]:
                best["moving"] = ([x, y, bw, bh], mean)
    return best


def plan_samples(scene: Scene, frames: int, scale: int) -> list[dict[str, Any]]:
    """Which crops a run keeps: the middle frame's stillest and busiest regions,
    and the busiest region of the first frame after a cut (from the truth only,
    so every configuration keeps the same)."""

    def motion_at(n: int) -> np.ndarray:
        if n >= 1:
            m = scene.pair(n - 1)
            if m.visible.any():
                return m.flow
        if n + 1 < scene.frames:
            return scene.pair(n).flow
        return np.zeros((*scene.size[::-1], 2), np.float32)

    samples = []
    middle = frames // 2
    boxes = _boxes(motion_at(middle), SAMPLE_SD * scale, scale)
    if boxes["still"][0] == boxes["moving"][0]:  # a window no bigger than one region
        del boxes["still"]
    for kind, (box, speed) in boxes.items():
        samples.append({"frame": middle, "kind": kind, "box": box, "motion": round(speed, 3)})
    for cut in scene.cuts:
        if cut < frames:
            box, speed = _boxes(motion_at(cut), SAMPLE_SD * scale, scale)["moving"]
            samples.append({"frame": cut, "kind": "after cut", "box": box, "motion": round(speed, 3)})
            break
    return samples


def _save_png(path: Path, rgb: np.ndarray) -> None:
    with replacing(path, "sample picture") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise VhsupError("cannot write the sample picture", path)


def _crop(rgb: np.ndarray, box: Sequence[int]) -> np.ndarray:
    x, y, w, h = box
    return rgb[y : y + h, x : x + w]


def result_path(results: Path, clip_name: str, config: Config) -> Path:
    return results / clip_name / f"{config.label}.json"


def _window_of(clip: BenchClip, window: Window | str) -> Window:
    side = _read_json(clip.sidecar, "clip's sidecar")
    return clip_window(clip.scene, window, side.get("mapping", {}).get("damaged_rows") or [])


def check_option_sets(clip: BenchClip, configurations: Sequence[Config], *, window: Window | str = "default") -> None:
    """Each ``--with`` option set planned on ``clip`` as a run would plan it, so that a value the
    pipeline refuses (``detail=2``, ``deinterlace=qtgmc`` without the restore extra) is a one-line
    error before any clip runs."""
    from vhsup.options import Options
    from vhsup.pipeline import make_plan

    sets = dict.fromkeys(c.options for c in configurations if c.options)
    if not sets:
        return
    crop = _window_of(clip, window).crop()
    for options in sets:
        opts = Options.from_kwargs(model=BASELINE, temporal="off", crop=crop, frames=1, **dict(options))
        try:
            make_plan(clip.path, opts, scale=4, model=BASELINE, classical=True)
        except VhsupError as exc:
            given = ",".join(f"{k.replace('_', '-')}={value_text(v)}" for k, v in options)
            raise VhsupError(f"--with {given}: {exc.reason}", exc.path) from None


def run_clip(
    clip: BenchClip,
    config: Config,
    *,
    window: Window | str = "default",
    frames: int | None = None,
    results: Path,
    echo: Echo = _quiet,
) -> dict[str, Any]:
    """Run ``config`` on ``clip``, score it and store the result (see the module notes)."""
    from vhsup.options import Options
    from vhsup.pipeline import Run

    if not clip.path.is_file():
        raise VhsupError("the benchmark clip is missing; rebuild it with vhsup eval build", clip.path)
    if not clip.sidecar.is_file():
        raise VhsupError("the clip's sidecar is missing; rebuild it with vhsup eval build", clip.sidecar)
    side_text = clip.sidecar.read_bytes()
    side = _read_json(clip.sidecar, "clip's sidecar")
    damaged = side.get("mapping", {}).get("damaged_rows") or []
    win = clip_window(clip.scene, window, damaged)
    limit = clip.frames if frames is None else min(int(frames), clip.frames)
    opts = Options.from_kwargs(
        model=config.model, temporal=config.temporal, crop=win.crop(), frames=limit, **dict(config.options)
    )
    run = Run(clip.path, opts)
    scale = int(run.engine.scale)
    s_win = (win.left * scale, win.top * scale, win.width * scale, win.height * scale)
    scene = truth_scene(clip, side, scale).windowed(*s_win)
    samples = plan_samples(scene, limit, scale)
    folder = results / clip.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples").mkdir(exist_ok=True)

    echo(f"{clip.path}: {config.label}, window {win}, {limit} frames ...")
    scorer = ClipScorer(clip.name, border=scale)
    pictures = run.pictures()
    seconds = 0.0
    if config.anchor:  # the whole clip per frame, then the post-filter over it (both timed)
        from vhsup.eval import anchor

        t0 = time.perf_counter()
        made = list(pictures)
        fixed = anchor.temporalfix([p.rgb for p in made])
        seconds = time.perf_counter() - t0
        pictures = iter([Picture(rgb, p.time, p.index) for p, rgb in zip(made, fixed)])
    count = 0
    first_time = None
    period = 1 / FRAME_RATE
    while True:
        t0 = time.perf_counter()
        pic = next(pictures, None)
        seconds += time.perf_counter() - t0
        if pic is None:
            break
        n = count
        first_time = pic.time if first_time is None else first_time
        if abs((pic.time - first_time) - n * period) > period / 4:
            raise VhsupError(
                f"output frame {n} is at {float(pic.time - first_time):.4f} s, not {float(n * period):.4f} s: "
                "the pipeline dropped or repeated a frame",
                clip.path,
            )
        truth = scene.frame(n)
        if pic.rgb.shape != truth.shape:
            raise VhsupError(
                f"the output is {pic.rgb.shape[1]}x{pic.rgb.shape[0]}, the truth window "
                f"{truth.shape[1]}x{truth.shape[0]} (a model of scale {scale})",
                clip.path,
            )
        if n == 0:
            scorer.add(pic.rgb, truth)
        else:
            m = scene.pair(n - 1)
            scorer.add(pic.rgb, truth, m.flow, m.visible)
        for s in samples:
            if s["frame"] == n:
                x, y, w, h = s["box"]
                s["truth"] = f"samples/truth-f{n:04d}-{x}-{y}-{w}x{h}.png"
                s["output"] = f"samples/{config.label}-f{n:04d}-{s['kind'].replace(' ', '-')}.png"
                _save_png(folder / s["truth"], _crop(truth, s["box"]))
                _save_png(folder / s["output"], _crop(pic.rgb, s["box"]))
        count += 1
    if count != limit:
        raise VhsupError(f"the pipeline gave {count} frames of the {limit} asked for", clip.path)

    scores = scorer.scores()
    result = {
        "format": RESULT_FORMAT,
        "version": VERSION,
        "clip": clip.name,
        "file": clip.file,
        "scene": clip.scene,
        "variant": clip.variant,
        "clip_id": hashlib.sha256(side_text).hexdigest()[:16],
        "config": config.label,
        "model": config.model,
        "model_name": run.model_name,
        "scale": scale,
        "temporal": config.temporal,
        "anchor": config.anchor,
        "options": options_json(config.options),
        "options_label": options_label(config.options),
        "temporal_ran": temporal_mode(run, opts),
        "device": str(run.engine.describe().get("device")),
        "window": win.to_json(),
        "crop": win.crop(),
        "frames": count,
        "cuts": [c for c in scene.cuts if c < count],
        "seconds": round(seconds, 4),
        "fps": round(count / seconds, 4) if seconds > 0 else None,
        "scores": scores.to_dict(),
        "samples": [s for s in samples if "output" in s],
    }
    path = result_path(results, clip.name, config)
    old = _old_samples(path)
    _write_json(path, result, "benchmark result")
    for name in old - {s["output"] for s in result["samples"]}:
        (folder / name).unlink(missing_ok=True)  # this config's crops from an earlier run
    return result


def _old_samples(path: Path) -> set[str]:
    try:
        return {str(s["output"]) for s in json.loads(path.read_text()).get("samples", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def check_models(models: Sequence[str]) -> None:
    """Every model loads (a one-line error naming the first that does not) before any clip is run."""
    from vhsup.registry import load_model

    for m in dict.fromkeys([BASELINE, *models]):
        load_model(m)


def run_benchmark(
    folder: str | os.PathLike[str],
    configurations: Sequence[Config],
    *,
    clips: Sequence[str] = (),
    window: Window | str = "default",
    frames: int | None = None,
    results: str | os.PathLike[str] | None = None,
    echo: Echo = _quiet,
) -> list[dict[str, Any]]:
    """Run every configuration on every chosen clip of the benchmark in ``folder``; the results, in order."""
    bench = load_benchmark(folder)
    chosen = bench.select(clips)
    if frames is not None and frames < 1:
        raise VhsupError(f"--frames must be at least 1, not {frames}")
    for clip in chosen:  # a missing file is found before hours of work, not after
        for path, what in ((clip.path, "benchmark clip"), (clip.sidecar, "clip's sidecar")):
            if not path.is_file():
                raise VhsupError(f"the {what} is missing; rebuild it with vhsup eval build", path)
    check_models([c.model for c in configurations])
    check_anchor(configurations)
    check_option_sets(chosen[0], configurations, window=window)
    out = Path(results) if results is not None else bench.folder / RESULTS
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for clip in chosen:
        for config in configurations:
            done.append(run_clip(clip, config, window=window, frames=frames, results=out, echo=echo))
            r = done[-1]
            mean = r["scores"]["mean"]
            echo(
                f"{clip.name}: {config.label}: PSNR-Y {_num(mean['psnr_y'], 2)} dB, "
                f"flicker {_num(mean['flicker'], 3)}, {_num(r['fps'], 2)} fps"
            )
    return done


def _num(value: Any, digits: int) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{v:.{digits}f}" if math.isfinite(v) else str(value)
