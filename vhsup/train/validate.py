"""Held-out validation during training: PSNR-Y / SSIM, comparison grids, a metrics log.

The numbers follow the super-resolution literature so that a run can be
compared with published tables (they live in :mod:`vhsup.eval.metrics`,
which the benchmark shares): both metrics are computed on BT.601 luma
(the Y of 8-bit studio-range YCbCr, as MATLAB's ``rgb2ycbcr``) without
rounding Y, PSNR with a peak of 255, SSIM with the 11x11 Gaussian window of
sigma 1.5 and K1 = 0.01, K2 = 0.03, averaged over the picture minus the
window's half-width. The :class:`Validator` crops ``scale`` pixels from each
border before scoring, as those papers do, because an upscaler's outer
pixels see a padded picture and say little about the model.

Validation runs the network through :class:`vhsup.engine.SREngine`, the same
tiled, batched, OOM-backing-off path that ``vhsup upscale`` takes, so a
validation score is what the user will see. The engine is built for
inference: it flips the module to eval mode and moves it to its device and
to channels-last memory. A module in training must come out of validation
exactly as it went in (its optimiser and DDP hold its parameter tensors), so
the engine is handed a thin guest module that forwards to the network
without owning it, and the network's own train/eval flags are put back
one module at a time afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn

from vhsup.errors import VhsupError
from vhsup.eval.metrics import check_rgb as _check_rgb
from vhsup.eval.metrics import json_float, psnr_y, ssim_y
from vhsup.eval.metrics import luma as rgb_to_y

__all__ = ["METRICS_FILE", "MetricsLog", "Validator", "psnr_y", "rgb_to_y", "ssim_y"]

#: File name of the metrics log inside a run folder.
METRICS_FILE = "metrics.jsonl"
#: Rows of start-model (or bicubic) outputs kept for grids; more rows would
#: mean keeping the start model, or its outputs for every validation frame.
MAX_GRID_ROWS = 8
#: A grid cell larger than this (HR pixels, either side) shows a centred 1:1
#: crop: SR is judged on pixels, and four full HD columns make a huge PNG.
GRID_CELL = 512
_GAP = 8

# --- running a module under training through the engine ------------------------


class _Guest(nn.Module):
    """Forwards to ``net`` without registering it as a submodule.

    The engine calls ``.eval()``, ``.to(device)`` and
    ``.to(memory_format=channels_last)`` on the module it is given; none of
    that may reach a network that an optimiser, an EMA or DDP is tracking.
    Input goes to the network's own device and dtype, output comes back as
    float32 on the engine's device.
    """

    _net: nn.Module

    def __init__(self, net: nn.Module):
        super().__init__()
        object.__setattr__(self, "_net", net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self._net
        ref: torch.Tensor | None = next(net.parameters(), None)
        if ref is None:
            ref = next((b for b in net.buffers() if b.is_floating_point()), None)
        if ref is not None and (ref.device != x.device or ref.dtype != x.dtype):
            y = net(x.to(ref.device, ref.dtype))
        else:
            y = net(x)
        return y.to(x.device, torch.float32)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside DDP or torch.compile wrappers.

    DDP's own forward may broadcast buffers to the other ranks, and only
    rank 0 validates: calling it here would hang the run.
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


# --- the validator -------------------------------------------------------------


Box = tuple[int, int, int, int]  # x, y, width, height


class Validator:
    """Scores a generator on fixed held-out (LR, HR) pairs.

    Args:
        pairs: ``(lr, hr)`` uint8 H x W x 3 RGB arrays with ``hr`` exactly
            ``scale`` times ``lr``; the same list for the whole run.
        scale: the generator's factor.
        device: where the engine runs (``"cpu"``, ``"cuda"``, ``"auto"``).
            A network on another device is fed on its own device.
        tile: the engine's tile (``"auto"`` sizes tiles from free memory,
            which is what keeps validation possible beside a training step
            that fills the GPU; 0 runs whole frames).
        start_model: the network training started from. Its scores and the
            bicubic baseline are computed once here; only the outputs the
            grids show are kept, not the model.

    Metrics are means over the pairs of per-picture PSNR-Y / SSIM-Y with
    ``scale`` pixels cropped from each border.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        scale: int,
        *,
        device="cpu",
        tile: int | str = "auto",
        start_model: nn.Module | None = None,
    ):
        scale = int(scale)
        if scale < 1:
            raise ValueError(f"scale must be at least 1, not {scale}")
        if not pairs:
            raise ValueError("validation needs at least one (lr, hr) pair")
        checked = []
        for i, (lr, hr) in enumerate(pairs):
            lr, hr = _check_rgb(lr, f"lr #{i}"), _check_rgb(hr, f"hr #{i}")
            if hr.shape != (lr.shape[0] * scale, lr.shape[1] * scale, 3):
                raise ValueError(
                    f"pair #{i}: hr {hr.shape[1]}x{hr.shape[0]} is not x{scale} of lr {lr.shape[1]}x{lr.shape[0]}"
                )
            checked.append((lr, hr))
        self.pairs = checked
        self.scale = scale
        self.device = device
        self.tile = tile
        self.border = scale
        from vhsup.arch.classical import Bicubic

        bicubic = self._score(Bicubic(scale), keep=MAX_GRID_ROWS)
        self.baseline = {"psnr_y_bicubic": bicubic[0], "ssim_bicubic": bicubic[1]}
        self._reference_label = "bicubic"
        self._reference = bicubic[2]
        if start_model is not None:
            start = self._score(start_model, keep=MAX_GRID_ROWS)
            self.baseline.update(psnr_y_start=start[0], ssim_start=start[1])
            self._reference_label, self._reference = "start", start[2]

    # -- public ------------------------------------------------------------

    def evaluate(self, model: nn.Module) -> dict:
        """``psnr_y``, ``ssim`` of ``model`` plus the fixed bicubic (and start) scores.

        The model's train/eval flags, device, dtype and parameter tensors are
        as before when this returns.
        """
        p, s, _ = self._score(model, keep=0)
        return {"psnr_y": p, "ssim": s, **self.baseline}

    def grid(self, model: nn.Module, path: Path, *, count: int = 4) -> Path:
        """Write a PNG whose rows are LR (nearest-up) | start | current | HR.

        Without a start model the second column is the bicubic baseline. At
        most :data:`MAX_GRID_ROWS` rows; cells wider or taller than
        :data:`GRID_CELL` HR pixels show their centre at 1:1.
        """
        from vhsup.preview import write_png

        canvas, _boxes = self.compose_grid(model, count=count)
        return write_png(Path(path), canvas)

    def compose_grid(self, model: nn.Module, *, count: int = 4) -> tuple[np.ndarray, list[dict[str, Box]]]:
        """The grid of :meth:`grid` in memory, and per row where each cell sits
        (keys ``lr``, ``start``, ``current``, ``hr``; (x, y, w, h))."""
        from vhsup.preview import BACKGROUND, caption, caption_height

        n = max(1, min(int(count), len(self.pairs), MAX_GRID_ROWS))
        current = self._upscale(model, range(n))
        s = self.scale
        rows: list[list[tuple[str, np.ndarray]]] = []
        for i in range(n):
            lr, hr = self.pairs[i]
            cells = [np.repeat(np.repeat(lr, s, axis=0), s, axis=1), self._reference[i], current[i], hr]
            crops = [_centre_crop(c, s) for c in cells]
            sr_p = psnr_y(current[i], hr, border=self.border)
            ref_p = psnr_y(self._reference[i], hr, border=self.border)
            rows.append(
                list(
                    zip(
                        (
                            f"LR (nearest x{s})",
                            f"{self._reference_label} {ref_p:.2f} dB",
                            f"current {sr_p:.2f} dB",
                            "HR",
                        ),
                        crops,
                    )
                )
            )
        col_w = max(c.shape[1] for row in rows for _t, c in row)
        cap_h = caption_height(col_w)
        height = sum(cap_h + row[0][1].shape[0] for row in rows) + _GAP * (n - 1)
        canvas = np.empty((height, 4 * col_w + 3 * _GAP, 3), np.uint8)
        canvas[:] = BACKGROUND
        boxes: list[dict[str, Box]] = []
        y = 0
        for row in rows:
            placed: dict[str, Box] = {}
            for col, (key, (text, img)) in enumerate(zip(("lr", "start", "current", "hr"), row)):
                x = col * (col_w + _GAP)
                caption(canvas, text, x, y, col_w, cap_h)
                ih, iw = img.shape[:2]
                canvas[y + cap_h : y + cap_h + ih, x : x + iw] = img
                placed[key] = (x, y + cap_h, iw, ih)
            boxes.append(placed)
            y += cap_h + row[0][1].shape[0] + _GAP
        return canvas, boxes

    # -- running -------------------------------------------------------------

    def _score(self, model: nn.Module, keep: int) -> tuple[float, float, list[np.ndarray]]:
        """Mean PSNR-Y and SSIM-Y over all pairs, and the first ``keep`` outputs."""
        psnrs, ssims, kept = [], [], []
        for i, sr in self._iter_upscaled(model, range(len(self.pairs))):
            hr = self.pairs[i][1]
            psnrs.append(psnr_y(sr, hr, border=self.border))
            ssims.append(ssim_y(sr, hr, border=self.border))
            if i < keep:
                kept.append(sr)
        return float(np.mean(psnrs)), float(np.mean(ssims)), kept

    def _upscale(self, model: nn.Module, indices) -> list[np.ndarray]:
        return [sr for _i, sr in self._iter_upscaled(model, indices)]

    def _iter_upscaled(self, model: nn.Module, indices):
        """Yield ``(index, output)`` in order, a few frames of one size at a time."""
        from vhsup.engine import SREngine
        from vhsup.registry import LoadedModel, describe_network

        net = _unwrap(model)
        flags = [(m, m.training) for m in net.modules()]
        benchmark = torch.backends.cudnn.benchmark
        net.eval()
        try:
            engine = SREngine(
                LoadedModel(_Guest(net), describe_network(net, self.scale)),
                device=self.device,
                precision="fp32",
                tile=self.tile,
                batch="auto",
            )
            indices = list(indices)
            chunk = 4  # frames per engine call: bounds the outputs held at once
            start = 0
            while start < len(indices):
                size = self.pairs[indices[start]][0].shape
                group = [indices[start]]
                while (
                    start + len(group) < len(indices)
                    and len(group) < chunk
                    and self.pairs[indices[start + len(group)]][0].shape == size
                ):
                    group.append(indices[start + len(group)])
                outs = engine.upscale([self.pairs[i][0] for i in group])
                yield from zip(group, outs)
                start += len(group)
        finally:
            # m.train(flag) would recurse into children that had their own flag.
            for m, flag in flags:
                m.training = flag
            torch.backends.cudnn.benchmark = benchmark


def _centre_crop(img: np.ndarray, align: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(h, GRID_CELL), min(w, GRID_CELL)
    y0 = (h - ch) // 2 // align * align
    x0 = (w - cw) // 2 // align * align
    return np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])


# --- metrics log ---------------------------------------------------------------


def _jsonable(key: str, value):
    """A JSON value for one metric; non-finite floats become "nan"/"inf"/"-inf".

    Plain JSON has no NaN, and a NaN loss is exactly what a user reading
    the log needs to see, so it is kept as a string (``float()`` reads it
    back) rather than dropped or written as invalid JSON.
    """
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        count = value.numel() if isinstance(value, torch.Tensor) else value.size
        if count != 1:
            raise TypeError(f"metric {key!r} is not a scalar: shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return json_float(value)
    raise TypeError(f"metric {key!r} has a {type(value).__name__}, not a number")


def _summary_writer(folder: Path, purge_step: int | None):
    """TensorBoard's writer when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except (ImportError, ModuleNotFoundError):
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


class MetricsLog:
    """Appends one JSON object per line to ``run_dir/metrics.jsonl``.

    Each line is ``{"step", "kind", "time", "values"}`` (time: Unix seconds).
    Lines are flushed as they are written, so a crash loses at most a line
    in progress; a torn last line is dropped when the log is opened again.
    With ``resume_step`` (a resumed run), lines logged after that step by
    the interrupted run are dropped, so every step appears once. TensorBoard
    scalars (``kind/name``) go to ``run_dir/tensorboard`` when tensorboard
    is installed and ``tensorboard`` is true; without it nothing is said.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, resume_step: int | None = None):
        run_dir = Path(run_dir)
        self.path = run_dir / METRICS_FILE
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._tidy(resume_step)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run
        except OSError as exc:
            raise VhsupError(f"cannot write the metrics log: {exc.strerror or exc}", self.path) from exc
        self._tb = (
            _summary_writer(run_dir / "tensorboard", None if resume_step is None else resume_step + 1)
            if tensorboard
            else None
        )

    @property
    def tensorboard(self) -> bool:
        """Whether scalars also go to TensorBoard."""
        return self._tb is not None

    def log(self, step: int, values: dict[str, float], *, kind: str = "train") -> None:
        logged = {str(k): _jsonable(str(k), v) for k, v in values.items()}
        record = {"step": int(step), "kind": str(kind), "time": round(time.time(), 3), "values": logged}
        line = json.dumps(record, allow_nan=False, ensure_ascii=False)
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as exc:
            raise VhsupError(f"cannot write the metrics log: {exc.strerror or exc}", self.path) from exc
        if self._tb is not None:
            for k, v in logged.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{kind}/{k}", v, int(step))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def read(path: Path) -> list[dict]:
        """The records of a metrics log (a run folder or the .jsonl file)."""
        path = Path(path)
        if path.is_dir():
            path = path / METRICS_FILE
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise VhsupError(f"line {n} of the metrics log is not JSON: {exc.msg}", path) from None
        return records

    def _tidy(self, resume_step: int | None) -> None:
        """Drop a torn last line and, on resume, lines past ``resume_step``."""
        if not self.path.exists():
            return
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        complete, torn = lines[:-1], lines[-1]  # text ending in "\n" leaves "" last
        keep = []
        for line in complete:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if resume_step is None or int(rec.get("step", 0)) <= resume_step:
                keep.append(line)
        if torn or len(keep) != len(complete):
            from vhsup.atomic import replacing

            with replacing(self.path, "metrics log") as tmp:
                tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
