"""The training loop: stages, EMA, AMP, accumulation, checkpoints, DDP.

One :class:`Trainer` runs one run folder::

    cfg = resolve(load_config("x.toml"), {"out": "runs/x"})
    result = Trainer(cfg).run()

The run, step by step:

1. The generator starts from the model's pretrained weights (or a user
   file, or a seeded random initialisation); a copy of it becomes the EMA
   (validation and the exported ``best.safetensors`` use the EMA).
2. Each step draws ``accumulate`` micro-batches of HR patches, makes their
   LR inputs with the Degrader on the device (or reads them, paired mode),
   and runs the generator update: pixel loss in stage 1, pixel + perceptual
   + adversarial in stage 2, plus translational consistency from
   ``tc_start``. Gradients of all micro-batches add up before one Adam step
   (under DDP only the last micro-batch all-reduces). Then, in stage 2, the
   discriminator update on the same batches.
3. A non-finite loss skips the whole step (no weight, optimiser or EMA
   change) and is reported by name; all processes agree on it first.
4. Every ``val_every`` steps (and at the end) process 0 scores the EMA on
   held-out frames; a better PSNR-Y exports ``best.safetensors`` and its
   card. Every ``save_every`` steps (and at the end) a checkpoint is written.

Determinism: every random draw comes from a seeded ``torch.Generator``
(data order, crops, degradations) whose state is checkpointed, and the
global RNG is never used after initialisation, so on the CPU a run resumed
from step N reproduces the uninterrupted run bit for bit.

The parts, each in its own module: where the run starts
(:mod:`~vhsup.train.start`, with ``--switched`` in
:mod:`~vhsup.train.switched`), its data (:mod:`~vhsup.train.data`), the
modules it trains (:mod:`~vhsup.train.nets`, with activation recompute in
:mod:`~vhsup.train.recompute`), one optimiser step
(:mod:`~vhsup.train.steps`), what a checkpoint keeps
(:mod:`~vhsup.train.state`) and the processes of a torchrun job
(:mod:`~vhsup.train.distributed`). This module holds the loop around them:
validation and export, messages and progress, stopping on a signal.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vhsup import signals
from vhsup.errors import Interrupted, VhsupError
from vhsup.train import checkpoint as ckpt
from vhsup.train.config import TrainConfig, config_dict, config_toml
from vhsup.train.data import FrameSet, derive_seed, training_data
from vhsup.train.distributed import Dist, pick_device
from vhsup.train.nets import build_losses, build_nets, prepare_generator
from vhsup.train.start import settle, starting_model
from vhsup.train.state import RunState, load_run, resume_config, save_run
from vhsup.train.steps import LOSS_NAMES, Batch, Stepper, StepStats, tc_active

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from vhsup.train.validate import MetricsLog, Validator

__all__ = ["LOSS_NAMES", "Batch", "StepStats", "TrainResult", "Trainer", "resume_config", "train"]

Notice = Callable[[str], None]

# This many skipped steps in a row means training has diverged for good.
MAX_BAD_STEPS = 20
DUMP_ENV = "VHSUP_TRAIN_DUMP"  # debugging / tests: each process writes its final weights here


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best: Path | None
    best_metrics: dict[str, Any]
    history: list[StepStats]
    skipped_steps: int


def _print_notice(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"vhsup: {message}", markup=False)


class Trainer:
    """One training run (see the module docstring).

    Args:
        cfg: the resolved config (``out`` must be set).
        notice: where messages for the user go (default: stderr).
        resume: a checkpoint file to continue from.
        allow_download: let pretrained or backbone weights be fetched.
    """

    validator: Validator  # process 0, from run() on
    metrics_log: MetricsLog  # process 0, from run() on

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        notice: Notice | None = None,
        resume: Path | None = None,
        allow_download: bool = False,
    ):
        self.dist = Dist()
        self._say = notice or _print_notice
        self._live: Progress | None = None  # the rich progress, while it runs
        self.device = pick_device(cfg.device, self.dist)
        self.dist.init(self.device)
        if not cfg.out:
            raise VhsupError("no run folder: give --out RUN_DIR (or [run] out in the config)")
        self.run_dir = Path(cfg.out)
        self.allow_download = allow_download
        self.resume_path = Path(resume) if resume is not None else None
        self.history: list[StepStats] = []
        self.state = RunState()
        self._bad_run = 0

        # Training draws only from its own generators, but layers built or run
        # by libraries (backbone init, future dropout) use the global one:
        # seeding it makes those repeatable too.
        torch.manual_seed(derive_seed(cfg.seed, "global"))
        self.start = starting_model(cfg, self.device, allow_download=allow_download, keep_plain=self.dist.main)
        cfg, self.precision = settle(cfg, self.start, self.device)
        self.cfg = cfg
        if self.resume_path is None and ckpt.list_checkpoints(self.run_dir):
            raise VhsupError(
                "the run folder already has checkpoints: continue it with --resume, or give a new --out", self.run_dir
            )
        self.data = training_data(
            cfg,
            self.start.scale,
            self.start.size_multiple,
            rank=self.dist.rank,
            world=self.dist.world,
            notice=self.notice,
        )
        self._setup_training(cfg)
        if self.resume_path is not None:
            self.state = load_run(
                self.resume_path,
                self.nets,
                self.data,
                dist=self.dist,
                device=self.device,
                seed=cfg.seed,
                notice=self.notice,
            )

    def _setup_training(self, cfg: TrainConfig) -> None:
        """The modules, losses and optimisers on the device, and the stepper that runs them."""
        dev = self.device
        gan_stage = cfg.pixel_steps < cfg.steps
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        # Validation compares with the starting weights; the copy lives only
        # until the Validator has scored it once.
        # After --switched, the start is the plain network it was converted from.
        switched = self.start.switched
        self.start_net: nn.Module | None = None
        if self.dist.main:
            start = (
                switched.plain if switched is not None and switched.plain is not None else copy.deepcopy(self.start.net)
            )
            self.start_net = start.to(dev)
        if switched is not None:
            switched.plain = None
        G, ema = prepare_generator(
            self.start.net,
            dev,
            self.memory_format,
            checkpointing=cfg.checkpointing,
            notice=self.notice,
            arch=self.start.arch,
        )
        self.losses = build_losses(cfg, dev, gan_stage=gan_stage, allow_download=self.allow_download)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: the autotuned kernels pay off
        self.nets = build_nets(
            G, ema, cfg, dev, self.dist, gan_stage=gan_stage, precision=self.precision, memory_format=self.memory_format
        )
        self.stepper = Stepper(
            cfg,
            self.nets,
            self.losses,
            self.dist,
            dev,
            precision=self.precision,
            memory_format=self.memory_format,
            scale=self.scale,
            rng=self.data.degrade_gen,
        )

    # -- what tests, benchmarks and the loop look at -----------------------------

    @property
    def step(self) -> int:
        """Optimiser steps done."""
        return self.state.step

    @property
    def scale(self) -> int:
        return self.start.scale

    @property
    def arch(self) -> str:
        """The trained network's architecture (after ``--switched``, the converted one)."""
        return self.start.arch

    @property
    def hyper(self) -> dict[str, Any]:
        return self.start.hyper

    @property
    def G(self) -> nn.Module:
        return self.nets.G

    @property
    def ema(self) -> nn.Module:
        return self.nets.ema

    @property
    def D(self) -> nn.Module | None:
        return self.nets.D

    @property
    def opt_g(self) -> torch.optim.Adam:
        return self.nets.opt_g

    @property
    def opt_d(self) -> torch.optim.Adam | None:
        return self.nets.opt_d

    @property
    def scaler_g(self) -> torch.amp.GradScaler:
        return self.nets.scaler_g

    @property
    def perceptual(self) -> nn.Module | None:
        return self.losses.perceptual

    @property
    def frames(self) -> FrameSet:
        return self.data.frames

    @property
    def switched_names(self) -> list[str]:
        return self.start.switched.names if self.start.switched is not None else []

    def _models(self) -> dict[str, dict[str, torch.Tensor]]:
        return self.nets.models()

    # -- messages ----------------------------------------------------------

    def notice(self, message: str) -> None:
        if not self.dist.main:
            return
        if self._live is not None:
            self._live.console.print(f"vhsup: {message}", markup=False, highlight=False)
        else:
            self._say(message)

    # -- state -------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (process 0; every process
        must call this, as the per-process random states are gathered)."""
        return save_run(
            self.run_dir,
            self.cfg,
            self.state,
            self.nets,
            self.data,
            dist=self.dist,
            device=self.device,
            arch=self.start.arch,
            hyper=self.start.hyper,
        )

    # -- one step ----------------------------------------------------------

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)
        return x.contiguous(memory_format=self.memory_format)

    def tc_active(self, step: int | None = None) -> bool:
        return tc_active(self.cfg, self.step if step is None else step)

    def next_batches(self) -> list[Batch]:
        """The micro-batches of the next step, on the device."""
        cfg = self.cfg
        extra = cfg.tc_shift * self.scale if self.tc_active() else 0
        out = []
        for _ in range(cfg.accumulate):
            hr8, lr8 = self.data.sampler.next(cfg.batch, extra)
            hr = self._to_device(hr8)
            if lr8 is None:
                lr = self.data.degrader(hr, self.data.degrade_gen).contiguous(memory_format=self.memory_format)
            else:
                lr = self._to_device(lr8)
            out.append(self.make_batch(hr, lr))
        return out

    def make_batch(self, hr: torch.Tensor, lr: torch.Tensor | None = None) -> Batch:
        """A Batch from float HR patches in [0, 1] (N, 3, P(+extra), ...) on the
        device; ``lr`` None makes it with the Degrader (as training does)."""
        if lr is None:
            lr = self.data.degrader(hr, self.data.degrade_gen)
        if not self.tc_active():
            return Batch(lr=lr, hr=hr)
        patch = self.cfg.patch
        lp = patch // self.scale
        return Batch(lr=lr[..., :lp, :lp], hr=hr[..., :patch, :patch], lr_big=lr)

    def train_step(self, batches: list[Batch]) -> StepStats:
        """One optimiser step of G (and of D in the GAN stage) on ``batches``."""
        stats = self.stepper.step(batches, self.state.step)
        self.state.step += 1
        return stats

    # -- validation and export ------------------------------------------------

    def _rng_fork(self) -> contextlib.AbstractContextManager[Any]:
        """Validation must not move the global RNG: a resumed run validates at
        other steps than the uninterrupted one, and its checkpoints must match."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def _make_validator(self) -> Validator:
        from vhsup.train.validate import Validator

        start = self.start_net
        self.start_net = None
        with self._rng_fork():
            return Validator(self.data.val_pairs, self.scale, device=str(self.device), start_model=start)

    def validate(self) -> dict[str, float]:
        """Score the EMA on the held-out frames (process 0); export it when best."""
        with self._rng_fork():
            return self._validate()

    def _validate(self) -> dict[str, float]:
        metrics = self.validator.evaluate(self.ema)
        metrics = {k: float(v) for k, v in metrics.items()}
        self.metrics_log.log(self.step, metrics, kind="val")
        try:
            (self.run_dir / "samples").mkdir(exist_ok=True)
            self.validator.grid(self.ema, self.run_dir / "samples" / f"step-{self.step:08d}.png")
        except (OSError, VhsupError) as exc:
            self.notice(f"could not write the validation grid: {exc}")
        psnr = metrics["psnr_y"]
        state = self.state
        if math.isfinite(psnr) and psnr > state.best_psnr:
            state.best_psnr, state.best_step = psnr, self.step
            state.best_metrics = {**metrics, "step": self.step}
            self.export(self.run_dir / "best.safetensors", state.best_metrics)
        return metrics

    def export(self, path: Path, metrics: dict[str, Any]) -> Path:
        """The EMA generator as a plain weights file (the keys a fresh build of
        the architecture has) plus its model card."""
        from safetensors.torch import save_file

        from vhsup.atomic import replacing
        from vhsup.train.card import write_model_card
        from vhsup.weights.detect import detect

        state = {
            k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
            for k, v in self.ema.state_dict().items()
        }
        arch, hyper = detect(state, path)
        with replacing(path, "trained weights") as tmp:
            save_file(state, os.fspath(tmp), metadata={"format": "pt", "vhsup_arch": arch})
        write_model_card(
            path,
            arch=arch,
            hyper=hyper,
            scale=self.scale,
            base=self.start.base,
            description="",
            metrics=metrics,
            config=config_dict(self.cfg),
            step=int(metrics.get("step", self.step)),
        )
        return path

    # -- the loop --------------------------------------------------------------

    def _intro(self) -> None:
        cfg = self.cfg
        d = self.dist
        self.notice(self.start.note)
        if self.start.switched is not None:
            self.notice(self.start.switched.note)
        eff = cfg.batch * cfg.accumulate * d.world
        self.notice(
            f"effective batch {eff} = {cfg.batch} per micro-batch x {cfg.accumulate} accumulated x "
            f"{d.world} process{'es' if d.world > 1 else ''}; device {self.device}, {self.precision}"
        )
        parts = []
        if cfg.pixel_steps > 0:
            parts.append(f"pixel stage ({cfg.pixel}) to step {min(cfg.pixel_steps, cfg.steps)}")
        if cfg.pixel_steps < cfg.steps:
            terms = [cfg.pixel]
            if self.perceptual is not None:
                terms.append(f"perceptual {cfg.perceptual}")
            if self.D is not None:
                terms.append(f"adversarial ({cfg.discriminator} discriminator)")
            parts.append(
                f"{'GAN' if self.D is not None else 'content'} stage ({' + '.join(terms)}) to step {cfg.steps}"
            )
        if cfg.tc_start >= 0:
            parts.append(f"translational consistency from step {cfg.tc_start}")
        self.notice("; ".join(parts))
        val_count = len(self.data.val_pairs)
        self.notice(
            f"{len(self.frames)} training frames, {val_count} validation frame"
            f"{'s' if val_count != 1 else ''}; {cfg.mode} data, patch {cfg.patch} px"
        )
        if cfg.mode == "self":
            self.notice(
                "self mode: your frames are the targets and a further-degraded copy the inputs, so the model "
                "learns to undo that degradation on footage like yours"
            )

    def _write_config(self) -> None:
        from vhsup.atomic import replacing

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VhsupError(f"cannot create the run folder: {exc.strerror or exc}", self.run_dir) from None
        header = (
            "Resolved config of this run, written by `vhsup train`. Repeat the run with\n"
            f"  vhsup train --config {self.run_dir / 'config.toml'} --out NEW_RUN_DIR"
        )
        with replacing(self.run_dir / "config.toml", "run config") as tmp:
            tmp.write_text(config_toml(self.cfg, header=header), encoding="utf-8")

    def run(self) -> TrainResult:
        """Train to ``cfg.steps``; returns where the best weights are."""
        from vhsup.train.validate import MetricsLog

        cfg = self.cfg
        main = self.dist.main
        try:
            if main:
                self._write_config()
                self._intro()
                self.metrics_log = MetricsLog(
                    self.run_dir, tensorboard=cfg.tensorboard, resume_step=self.step if self.resume_path else None
                )
                self.validator = self._make_validator()
            done = self.step >= cfg.steps
            if done:
                self.notice(
                    f"the run is already at step {self.step} of {cfg.steps}; nothing to do (raise --steps to go on)"
                )
            progress = self._progress() if (main and not cfg.quiet) else None
            task = progress.add_task("training", total=cfg.steps, completed=self.step, losses="") if progress else None
            with progress if progress is not None else contextlib.nullcontext(), self._stop_on_ctrl_c() as stop:
                self._live = progress
                self._loop(stop, done, progress, task)
                self._live = None
            if main:
                self._report_best()
            self._dump()
            return TrainResult(
                self.run_dir,
                self.step,
                self.run_dir / "best.safetensors" if main else None,
                dict(self.state.best_metrics),
                self.history,
                self.state.skipped_steps,
            )
        finally:
            self._live = None
            if main and getattr(self, "metrics_log", None) is not None:
                self.metrics_log.close()
            self.dist.close()

    def _loop(self, stop: threading.Event, done: bool, progress: Progress | None, task: TaskID | None) -> None:
        """Steps until ``cfg.steps`` with their validations and checkpoints,
        and the last of each at the end (``done``: there is no step to take)."""
        cfg = self.cfg
        main = self.dist.main
        last_val = last_save = self.step if done else None
        started = time.perf_counter()
        first_step = self.step
        while self.step < cfg.steps:
            if stop.is_set():
                self.save_checkpoint()
                raise Interrupted(
                    f"stopped at step {self.step} of {cfg.steps}; the checkpoint is saved: "
                    f"continue with `vhsup train --resume {self.run_dir}`"
                )
            stats = self.train_step(self.next_batches())
            self.history.append(stats)
            self._after_step(stats)
            if progress is not None and task is not None:
                rate = (self.step - first_step) / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=self.step, losses=_loss_text(stats.losses) + f"  {rate:.2f} it/s")
            if main and cfg.val_every and self.step % cfg.val_every == 0:
                self.validate()
                last_val = self.step
            if self.step % cfg.save_every == 0:
                self.save_checkpoint()
                last_save = self.step
        if main and last_val != self.step:
            self.validate()
        if last_save != self.step:
            self.save_checkpoint()

    def _report_best(self) -> None:
        """Say where the best weights are (exporting the last EMA if no validation was finite)."""
        state = self.state
        if state.best_step is None:  # every validation was NaN: still leave weights to look at
            self.notice("validation never gave a finite PSNR; exporting the last EMA weights as best")
            state.best_metrics = {"step": self.step}
            self.export(self.run_dir / "best.safetensors", state.best_metrics)
        best = self.run_dir / "best.safetensors"
        m = state.best_metrics
        if "psnr_y" in m:
            ref = f", bicubic {m['psnr_y_bicubic']:.2f}" if "psnr_y_bicubic" in m else ""
            ref += f", start {m['psnr_y_start']:.2f}" if "psnr_y_start" in m else ""
            self.notice(f"best: step {m.get('step')}, PSNR-Y {m['psnr_y']:.2f} dB{ref} -> {best}")

    @contextlib.contextmanager
    def _stop_on_ctrl_c(self) -> Iterator[threading.Event]:
        """The first Ctrl-C finishes the step in progress and checkpoints it
        (a step cut in half would leave G stepped but not its EMA); a second
        one stops at once. SIGTERM and SIGHUP do the same where the command
        line made them interrupts (vhsup.signals). Under torchrun, the
        launcher handles signals."""
        stop = threading.Event()
        if threading.current_thread() is not threading.main_thread():
            yield stop
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():
                raise KeyboardInterrupt if signum == signal.SIGINT else signals.Signalled(signum)
            stop.set()
            if signum == signal.SIGINT:
                self.notice("stopping after this step (Ctrl-C again to stop now)")
            else:
                signals.note(signum)
                self.notice(f"{signals.name(signum)}: stopping after this step")

        taken = [s for s in signals.STOP_SIGNALS if signals.handles(s)]
        if self.dist.active:  # a rank that stopped on its own would leave its peers waiting in a collective
            previous = {s: signal.signal(s, signal.SIG_DFL) for s in taken}
        else:
            previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, *taken)}
        try:
            yield stop
        finally:
            for s, old in previous.items():
                signal.signal(s, old)

    def _after_step(self, stats: StepStats) -> None:
        if stats.skipped:
            self.state.skipped_steps += 1
            self._bad_run += 1
            self.notice(f"step {stats.step}: skipped, non-finite {', '.join(stats.bad)}")
            if self._bad_run >= MAX_BAD_STEPS:
                raise VhsupError(
                    f"training diverged: {MAX_BAD_STEPS} steps in a row had a non-finite {', '.join(stats.bad)}; "
                    "lower --learning-rate, use --precision fp32, or start from pretrained weights"
                )
        else:
            self._bad_run = 0
            if stats.bad:  # the generator stepped, the discriminator did not
                self.notice(f"step {stats.step}: discriminator update skipped, non-finite {', '.join(stats.bad)}")
        if self.dist.main:
            values = {**stats.losses, "lr": stats.lr, "skipped": int(stats.skipped)}
            if math.isfinite(stats.grad_norm_g):
                values["grad_norm_g"] = stats.grad_norm_g
            if math.isfinite(stats.grad_norm_d):
                values["grad_norm_d"] = stats.grad_norm_d
            self.metrics_log.log(stats.step, values, kind="train")

    def _progress(self) -> Progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=Console(stderr=True, highlight=False, soft_wrap=True),
            transient=False,
        )

    def _dump(self) -> None:
        """Each process's final weights, for checking that DDP kept them equal."""
        folder = os.environ.get(DUMP_ENV)
        if not folder:
            return
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, state in self._models().items():
            for k, v in state.items():
                tensors[f"{name}.{k}"] = v.detach().cpu().contiguous().clone()
        save_file(tensors, os.fspath(Path(folder) / f"rank{self.dist.rank}.safetensors"))


def _loss_text(losses: dict[str, float]) -> str:
    short = {"pixel": "pix", "perceptual": "perc", "gan": "gan", "tc": "tc", "d_real": "Dr", "d_fake": "Df"}
    return " ".join(f"{short.get(k, k)} {v:.4g}" for k, v in losses.items())


def train(
    cfg: TrainConfig, *, resume: Path | None = None, notice: Notice | None = None, allow_download: bool = False
) -> TrainResult:
    """Run (or continue) a training run; see :class:`Trainer`."""
    return Trainer(cfg, notice=notice, resume=resume, allow_download=allow_download).run()
