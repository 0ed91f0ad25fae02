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
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import fnmatch
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from vhsup import registry, signals
from vhsup.arch import spec_named
from vhsup.errors import Interrupted, UnknownArchitecture, VhsupError
from vhsup.train import checkpoint as ckpt
from vhsup.train.config import RESUMABLE, TrainConfig, config_dict, config_toml
from vhsup.train.data import (
    Conversions,
    FrameSet,
    PatchSampler,
    check_pair_sizes,
    derive_seed,
    list_images,
    match_pairs,
    read_rgb8,
    split_validation,
)

__all__ = ["Batch", "StepStats", "TrainResult", "Trainer", "default_switched_layers", "enable_checkpointing",
           "LOSS_NAMES", "train"]

Notice = Callable[[str], None]

# Every loss the loop can compute, in a fixed order (the DDP agreement on
# bad losses sends one flag per name).
LOSS_NAMES = ("pixel", "perceptual", "gan", "tc", "d_real", "d_fake")
# This many skipped steps in a row means training has diverged for good.
MAX_BAD_STEPS = 20
DUMP_ENV = "VHSUP_TRAIN_DUMP"  # debugging / tests: each process writes its final weights here


# --- small pieces -------------------------------------------------------------


@dataclass
class Batch:
    """One micro-batch on the training device: float32 in [0, 1].

    ``lr_big`` is the LR patch ``tc_shift`` pixels larger each way when the
    translational consistency loss is on (``lr`` is its top-left part).
    """

    lr: torch.Tensor
    hr: torch.Tensor
    lr_big: torch.Tensor | None = None


@dataclass
class StepStats:
    """What one optimiser step did. ``losses`` are weighted, averaged over
    micro-batches and processes; ``bad`` names the non-finite ones."""

    step: int
    losses: dict[str, float]
    skipped: bool = False
    bad: list[str] = field(default_factory=list)
    grad_norm_g: float = math.nan
    grad_norm_d: float = math.nan
    lr: float = 0.0


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best: Path | None
    best_metrics: dict
    history: list[StepStats]
    skipped_steps: int


def _print_notice(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"vhsup: {message}", markup=False)


class _Dist:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0) if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0) if self.world > 1 else 0
        self.started_here = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if not self.active or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_dt.timedelta(minutes=60))
        self.started_here = True

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, obj):
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def _pick_device(spec: str, d: _Dist) -> torch.device:
    spec = (spec or "auto").lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VhsupError(f"--device {spec}: CUDA is not available on this machine")
        if d.active:  # one GPU per process: torchrun's local rank picks it
            index = d.local_rank
        else:
            index = int(spec.split(":", 1)[1]) if ":" in spec else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise VhsupError(f"--device {spec}: there are only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if spec != "cpu":
        raise VhsupError(f"--device {spec}: expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


# --- activation checkpointing ---------------------------------------------------


@contextlib.contextmanager
def _training_off(modules: list[nn.Module]):
    """These modules' own ``training`` flags off for the block (children
    untouched, unlike ``.eval()``), restored afterwards."""
    flags = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        yield
    finally:
        for m, f in zip(modules, flags):
            m.training = f


@contextlib.contextmanager
def _buffers_kept(modules: list[nn.Module]):
    """Restore the modules' buffers after the block: a recomputed forward must
    not count twice in BatchNorm running statistics (or any other buffer a
    layer updates as it runs)."""
    saved = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


class _SwitchNormReplay:
    """Makes a recomputed forward route exactly as the original one did.

    A switch norm in training mode records the batch's kernel usage and then
    normalises by its history, this batch included. A recomputed forward
    must neither record a second time (that would change the history, and
    under DDP issue an extra all-reduce from inside the backward pass) nor
    see a history other forwards have moved on since (the consistency loss
    runs the network again before the backward): either could pick other
    kernels at near-ties than the gradients were meant for. So the history
    each norm held right after the original forward is kept, and the
    recompute runs the norms read-only on that history.
    """

    def __init__(self, norms: list[nn.Module]):
        self.norms = norms
        self.after: list[tuple[torch.Tensor, torch.Tensor]] = []

    @contextlib.contextmanager
    def record(self):
        yield
        self.after = [(n.history.detach().clone(), n.count.detach().clone()) for n in self.norms]

    @contextlib.contextmanager
    def replay(self, modules: list[nn.Module]):
        with _buffers_kept(modules):  # what the buffers hold now comes back afterwards
            with torch.no_grad():
                for n, (history, count) in zip(self.norms, self.after):
                    n.history.copy_(history)
                    n.count.copy_(count)
            with _training_off(self.norms):
                yield


def _checkpointed(fn: Callable, modules: list[nn.Module]) -> Callable:
    from vhsup.arch.switched import SwitchNorm

    stateful = any(True for m in modules for _ in m.buffers())
    norms = [n for m in modules for n in m.modules() if isinstance(n, SwitchNorm)]

    def context():
        if norms:
            replay = _SwitchNormReplay(norms)
            return replay.record(), replay.replay(modules)
        return contextlib.nullcontext(), (_buffers_kept(modules) if stateful else contextlib.nullcontext())

    def run(*args):
        if not torch.is_grad_enabled():
            return fn(*args)
        return _checkpoint(fn, *args, use_reentrant=False, context_fn=context)

    return run


def enable_checkpointing(net: nn.Module) -> int:
    """Recompute the generator's blocks in the backward pass instead of storing
    their activations; returns the number of checkpointed segments.

    The module's structure and state-dict keys stay as they are (only
    ``forward`` of some submodules is replaced on the instance), so saved
    weights load into a plain network. The architecture's spec says which
    blocks make a segment (:func:`vhsup.arch.recompute_blocks`): the first
    module of a segment runs the whole segment, the others pass their input
    on. Apply it to the training network only, after the EMA copy is made.
    """
    from vhsup.arch import recompute_blocks

    segments = recompute_blocks(net)
    for segment in segments:
        # The classes' forwards: the instance's is about to be replaced.
        steps = [type(m).forward.__get__(m) for m in segment]

        def run(x, steps=steps):
            for step in steps:
                x = step(x)
            return x

        segment[0].forward = _checkpointed(run, list(segment))
        for m in segment[1:]:
            m.forward = _identity
    return len(segments)


def _identity(x):
    return x


def default_switched_layers(net: nn.Module) -> list[str]:
    """The convs ``--switched`` converts when no ``--switched-layers`` are
    given: the trunk's spatial (k > 1) convs that can be converted, i.e.
    every such conv except the network's first and last and its
    upsampler's. 1x1 projections and grouped/depthwise convs stay plain."""
    from vhsup.arch import keeps_plain
    from vhsup.arch.switched import SwitchedConv2d, switched_layers, unconvertible

    inside = tuple(name + "." for name, _ in switched_layers(net))
    order = [(n, m) for n, m in net.named_modules()
             if isinstance(m, nn.Conv2d | SwitchedConv2d) and not n.startswith(inside)]
    if len(order) < 3:
        return []
    out = []
    for n, m in order[1:-1]:
        if not isinstance(m, nn.Conv2d) or unconvertible(m) is not None or m.kernel_size[0] < 2:
            continue
        if keeps_plain(net, n):  # the upsampler: large maps, where kernels cost most and buy least
            continue
        out.append(n)
    return out


def _brief(names: list[str], limit: int = 12) -> str:
    """Names for one line: all of a short list, the ends of a long one."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit - 3]) + ", ..., " + ", ".join(names[-2:]) + f" ({len(names)} in all)"


@torch.no_grad()
def _to_memory_format(module: nn.Module, fmt: torch.memory_format) -> None:
    """Channels-last for the 4-D (conv) weights only: Module.to(memory_format=)
    refuses any other rank, and switched convs keep 5-D kernel banks."""
    if fmt == torch.contiguous_format:
        return
    for p in module.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=fmt)


# --- the trainer -----------------------------------------------------------------


class Trainer:
    """One training run (see the module docstring).

    Args:
        cfg: the resolved config (``out`` must be set).
        notice: where messages for the user go (default: stderr).
        resume: a checkpoint file to continue from.
        allow_download: let pretrained or backbone weights be fetched.
    """

    def __init__(self, cfg: TrainConfig, *, notice: Notice | None = None, resume: Path | None = None,
                 allow_download: bool = False):
        self.dist = _Dist()
        self._say = notice or _print_notice
        self._live = None  # the rich progress, while it runs
        self.device = _pick_device(cfg.device, self.dist)
        self.dist.init(self.device)
        if not cfg.out:
            raise VhsupError("no run folder: give --out RUN_DIR (or [run] out in the config)")
        self.run_dir = Path(cfg.out)
        self.allow_download = allow_download
        self.resume_path = Path(resume) if resume is not None else None
        self.history: list[StepStats] = []
        self.step = 0
        self.best_psnr = -math.inf
        self.best_step: int | None = None
        self.best_metrics: dict = {}
        self.skipped_steps = 0
        self._bad_run = 0

        # Training draws only from its own generators, but layers built or run
        # by libraries (backbone init, future dropout) use the global one:
        # seeding it makes those repeatable too.
        torch.manual_seed(derive_seed(cfg.seed, "global"))
        self._setup_model(cfg)
        cfg = self._settle(cfg)
        self.cfg = cfg
        if self.resume_path is None and ckpt.list_checkpoints(self.run_dir):
            raise VhsupError("the run folder already has checkpoints: continue it with --resume, "
                             "or give a new --out", self.run_dir)
        self._setup_data(cfg)
        self._setup_training(cfg)
        if self.resume_path is not None:
            self._load(self.resume_path)

    # -- messages ----------------------------------------------------------

    def notice(self, message: str) -> None:
        if not self.dist.main:
            return
        if self._live is not None:
            self._live.console.print(f"vhsup: {message}", markup=False, highlight=False)
        else:
            self._say(message)

    # -- setup -------------------------------------------------------------

    def _setup_model(self, cfg: TrainConfig) -> None:
        """The starting generator, its architecture, and where it came from."""
        from vhsup.weights.detect import canonical, detect
        from vhsup.weights.safeload import load_state_dict_file

        spec = cfg.model or registry.default_model(self.device.type == "cuda")
        self.base = spec
        seed = derive_seed(cfg.seed, "G")
        if spec in registry.model_names():
            c = registry.card(spec)
            if spec_named(c.arch).weightless:
                raise VhsupError(f"{spec} is a fixed resampler with nothing to train; pick a network such as compact-x4")
            net_scale = spec_named(c.arch).scale(c.hyper)
            if c.scale != net_scale:
                raise VhsupError(
                    f"{spec} is the x{net_scale} network followed by a resize to x{c.scale}; vhsup trains networks "
                    f"at their own scale: train the x{net_scale} model (e.g. compact-x{net_scale}) instead")
            self.pretrained = registry.has_pretrained_weights(spec) and not cfg.from_scratch
            if self.pretrained:
                loaded = registry.load_model(spec, allow_download=self.allow_download)
                self._start_note = f"starting from {spec}'s pretrained weights"
            else:
                loaded = registry.build_model(spec, seed=seed)
                self._start_note = (f"{spec} has no pretrained weights: training from random initialisation"
                                    if not registry.has_pretrained_weights(spec)
                                    else f"training {spec} from random initialisation (--from-scratch)")
            self.arch = c.arch
            self.hyper = dict(c.hyper)
        else:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise registry.unknown_model(spec) if not registry.looks_like_path(spec) else \
                    VhsupError("model file not found", path)
            try:
                state = canonical(load_state_dict_file(path), path)
                self.arch, self.hyper = detect(state, path)
            except UnknownArchitecture as exc:
                # upscale may still run it through spandrel; training needs vhsup's own networks
                raise VhsupError(f"vhsup train fine-tunes vhsup's own architectures only (ESRGAN/RRDBNet, Compact, "
                                 f"SRResNet, MESRGAN, ResUNet, switched); {exc.reason}", path) from None
            loaded = registry.load_model(os.fspath(path))
            self.pretrained = not cfg.from_scratch
            if cfg.from_scratch:
                from vhsup.arch import build

                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    loaded.module = build(self.arch, dict(self.hyper)).float().eval()
                self._start_note = f"training a {self.arch} shaped like {path.name} from random initialisation"
            else:
                self._start_note = f"starting from the weights in {path}"
            self.base = os.fspath(path.resolve())
        from vhsup.arch.classical import Rescaled

        if isinstance(loaded.module, Rescaled):  # a card we did not foresee; never train the resize
            raise VhsupError(f"{spec} wraps its network in a resize; train the network at its own scale instead")
        self.net = loaded.module
        self.scale = int(loaded.descriptor.scale)
        self.size_multiple = max(1, int(loaded.descriptor.size_multiple))
        self.switched_names: list[str] = []
        self._plain_start: nn.Module | None = None
        self._switch_note = ""
        if cfg.switched:
            self._switch(cfg)
        elif cfg.switched_layers:
            raise VhsupError("--switched-layers chooses the convs that --switched converts: add --switched "
                             "(or [run] switched = true)")

    def _switch(self, cfg: TrainConfig) -> None:
        """``--switched``: turn the chosen convs of the starting network into
        switched convs (kernel copied into every slot, fresh seeded selector),
        so training goes on from the same outputs and the copies diverge."""
        from vhsup.arch.switched import convert_to_switched, switched_layers, unconvertible
        from vhsup.weights.detect import detect

        net, b = self.net, cfg.switched_breadth
        if spec_named(self.arch).switched_native:
            raise VhsupError(f"{self.base} is built from switched convs already; --switched converts a plain "
                             "network such as compact-x4: train this one without --switched")
        existing = switched_layers(net)
        old = sorted({m.breadth for _, m in existing})
        if old and old != [b]:
            raise VhsupError(f"the model's switched convs have breadth {old[0]}; one model cannot mix breadths: "
                             f"give --switched-breadth {old[0]}")
        inside = tuple(name + "." for name, _ in existing)
        convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith(inside)]
        if cfg.switched_layers:
            patterns = [p.strip() for p in cfg.switched_layers.split(",") if p.strip()]
            if not patterns:
                raise VhsupError(f"--switched-layers {cfg.switched_layers!r}: no pattern given")
            for pat in patterns:
                if not any(fnmatch.fnmatchcase(n, pat) for n, _ in convs):
                    raise VhsupError(f"--switched-layers {pat!r} matches no conv of this {self.arch}; its convs are "
                                     f"{_brief([n for n, _ in convs])}" + (" (the switched ones excluded)" if existing else ""))
            chosen = [(n, m) for n, m in convs if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
            for n, m in chosen:
                why = unconvertible(m)
                if why:
                    raise VhsupError(f"--switched-layers: {n} cannot become a switched conv: {why}")
        else:
            chosen = [(n, m) for n, m in convs if n in set(default_switched_layers(net))]
            if not chosen:
                raise VhsupError(f"this {self.arch} has no trunk convs left to convert"
                                 + (f" ({len(existing)} are switched already)" if existing else "")
                                 + "; choose convs with --switched-layers, or train without --switched")
        names = {n for n, _ in chosen}
        # The plain network stays the validation's "start" reference; the
        # selectors are initialised from the run's seed without moving the
        # global RNG, so a resumed run builds the same structure.
        self._plain_start = copy.deepcopy(net) if self.dist.main else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "switched"))
            done = convert_to_switched(net, breadth=b, predicate=lambda n, _conv: n in names)
        self.switched_names = done
        self.arch, self.hyper = detect(net.state_dict())
        self._switch_note = (f"switched: {len(done)} conv{'s' if len(done) != 1 else ''} now hold {b} kernels "
                             f"each (copies of the trained one, so the output is unchanged until they diverge): "
                             f"{_brief(done)}")

    def _settle(self, cfg: TrainConfig) -> TrainConfig:
        """Turn every "auto" into what this run uses, so config.toml says it."""
        changes: dict = {"model": self.base}
        mode = cfg.mode
        if mode == "auto":
            mode = "paired" if (cfg.lr or cfg.hr) else "synthetic"
        if mode == "paired":
            if not (cfg.lr and cfg.hr):
                raise VhsupError("paired training needs both --lr DIR and --hr DIR")
            if cfg.frames:
                raise VhsupError("--frames and --lr/--hr are two different kinds of data: give one of them")
        elif not cfg.frames:
            raise VhsupError(f"{mode} training needs --frames DIR (a folder of pictures; see `vhsup extract`)")
        changes["mode"] = mode
        if cfg.pixel_steps < 0:
            changes["pixel_steps"] = 0 if self.pretrained else cfg.steps // 2
        perceptual = cfg.perceptual
        if perceptual == "auto":
            perceptual = spec_named(self.arch).perceptual
        changes["perceptual"] = perceptual
        if cfg.discriminator == "auto":
            changes["discriminator"] = "srgan" if self.base == "srgan-x4" else "unet"
        quantum = self.scale * self.size_multiple
        if cfg.patch % quantum:
            raise VhsupError(f"--patch {cfg.patch}: must be a multiple of {quantum} for this x{self.scale} "
                             f"{self.arch} (LR patches must be multiples of {self.size_multiple})")
        if cfg.tc_start >= 0 and cfg.patch // self.scale <= 2 * cfg.tc_shift:
            raise VhsupError(f"--tc-shift {cfg.tc_shift}: the LR patch ({cfg.patch // self.scale} px) must be more "
                             "than twice the shift")
        if cfg.tc_start >= 0 and cfg.tc_shift % self.size_multiple:
            raise VhsupError(f"--tc-shift {cfg.tc_shift}: must be a multiple of {self.size_multiple} for this {self.arch}")
        cfg = cfg.replace(**changes)
        precision = cfg.precision
        if precision == "auto":
            cuda = self.device.type == "cuda"
            precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
        if precision == "fp16" and self.device.type != "cuda":
            raise VhsupError("--precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
        self.precision = precision
        return cfg

    def _setup_data(self, cfg: TrainConfig) -> None:
        from vhsup.train.degrade import Degrader, load_spec

        d = self.dist
        self.spec = load_spec("none", cfg.degradation)
        self.degrader = Degrader(self.spec, self.scale)
        s = self.scale
        self.patch = cfg.patch
        # Not "before the last step": a run extended with --steps must keep
        # the frame set (and crop sizes) it started with.
        self.use_tc_ever = cfg.tc_start >= 0
        extra = cfg.tc_shift * s if self.use_tc_ever else 0
        need = (cfg.patch + extra, cfg.patch + extra)
        conv = Conversions()
        total = 0
        val_pairs: list[tuple[np.ndarray, np.ndarray]] = []
        quantum = s * self.size_multiple
        if cfg.mode == "paired":
            pairs = match_pairs(cfg.lr, cfg.hr)
            total += 2 * len(pairs)
            if cfg.val_frames:
                train_idx, val_idx = list(range(len(pairs))), []
                val_hr_files = list_images(cfg.val_frames, "validation frames")
            else:
                train_idx, val_idx = split_validation(len(pairs), cfg.val_split, cfg.seed)
                val_hr_files = []
            hr_set = FrameSet([pairs[i][1] for i in train_idx], min_size=need, small=cfg.small,
                              cache_mb=cfg.cache_mb // 2, notice=self.notice, what="HR frames", conversions=conv)
            kept = set(hr_set.files)
            lr_files = [pairs[i][0] for i in train_idx if pairs[i][1] in kept]
            lr_set = FrameSet(lr_files, cache_mb=cfg.cache_mb // 2, what="LR frames", conversions=conv)
            check_pair_sizes(lr_set, hr_set, s)
            for i in val_idx:
                lr, hr = read_rgb8(pairs[i][0], conv), read_rgb8(pairs[i][1], conv)
                if hr.shape != (lr.shape[0] * s, lr.shape[1] * s, 3):
                    raise VhsupError(f"LR {pairs[i][0].name} is {lr.shape[1]}x{lr.shape[0]} and HR is "
                                     f"{hr.shape[1]}x{hr.shape[0]}; x{s} training needs HR = "
                                     f"{lr.shape[1] * s}x{lr.shape[0] * s}", pairs[i][1])
                val_pairs.append(_centre_pair(lr, hr, s, quantum, cfg.val_crop))
            if val_hr_files:
                # --val-frames in paired mode: HR only, LR made like the synthetic ones.
                total += len(val_hr_files)
                val_pairs += self._synthetic_val([read_rgb8(p, conv) for p in val_hr_files], cfg, quantum)
            self.frames, self.lr_frames = hr_set, lr_set
        else:
            files = list_images(cfg.frames, "frames")
            total += len(files)
            if cfg.val_frames:
                train_files = files
                val_files = list_images(cfg.val_frames, "validation frames")
            else:
                train_idx, val_idx = split_validation(len(files), cfg.val_split, cfg.seed)
                train_files = [files[i] for i in train_idx]
                val_files = [files[i] for i in val_idx]
            total += len(val_files) if cfg.val_frames else 0
            self.frames = FrameSet(train_files, min_size=need, small=cfg.small, cache_mb=cfg.cache_mb,
                                   notice=self.notice, what="frames", conversions=conv)
            self.lr_frames = None
            val_pairs = self._synthetic_val([read_rgb8(p, conv) for p in val_files], cfg, quantum)
        message = conv.message(total)
        if message:
            self.notice(message)
        self.val_pairs = val_pairs
        self.val_count = len(val_pairs)
        self.sampler = PatchSampler(self.frames, patch=cfg.patch, scale=s, seed=cfg.seed, rank=d.rank,
                                    world=d.world, lr_frames=self.lr_frames)
        self.degrade_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "degrade", d.rank))

    def _synthetic_val(self, frames: list[np.ndarray], cfg: TrainConfig, quantum: int):
        """(LR, HR) validation pairs, each LR degraded once on the CPU from a
        fixed per-frame seed: the same held-out set on every machine and resume."""
        pairs = []
        for i, hr in enumerate(frames):
            hr = _centre_crop(hr, quantum, cfg.val_crop)
            t = torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255.0
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, "val-degrade", i))
            lr = self.degrader(t, g)
            lr8 = (lr[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
            pairs.append((np.ascontiguousarray(lr8), hr))
        return pairs

    def _setup_training(self, cfg: TrainConfig) -> None:
        from vhsup.arch import build_discriminator
        from vhsup.train.losses import GANLoss, PerceptualLoss, pixel_loss

        dev = self.device
        self.pixel_steps = cfg.pixel_steps
        stage2 = self.pixel_steps < cfg.steps
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        # Validation compares with the starting weights; the copy lives only
        # until the Validator has scored it once.
        # After --switched, the start is the plain network it was converted from.
        self.start_net = None
        if self.dist.main:
            start = self._plain_start if self._plain_start is not None else copy.deepcopy(self.net)
            self.start_net = start.to(dev)
        self._plain_start = None
        G = self.net.to(dev).train()
        _to_memory_format(G, self.memory_format)
        self.G = G
        self.ema = copy.deepcopy(G).eval().requires_grad_(False)
        if cfg.checkpointing:
            n = enable_checkpointing(G)
            if n == 0:
                self.notice(f"activation checkpointing has no blocks to work on in a {self.arch}; running without it")
        self.pix = pixel_loss(cfg.pixel).to(dev)
        self.perceptual = None
        if stage2 and cfg.perceptual != "none" and cfg.perceptual_weight > 0:
            weights = Path(cfg.perceptual_weights) if cfg.perceptual_weights else None
            self.perceptual = PerceptualLoss(cfg.perceptual, weights, allow_download=self.allow_download).to(dev)
        self.gan_loss = GANLoss()
        self.D = None
        if stage2 and cfg.gan and cfg.gan_weight > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(cfg.seed, "D"))
                D = build_discriminator(cfg.discriminator, num_feat=cfg.d_feat)
            self.D = D.to(dev).train()
            _to_memory_format(self.D, self.memory_format)
        # Spectral norm's power iteration would advance on every training-mode
        # forward of D, i.e. once per micro-batch. Instead it advances exactly
        # once per step (SN-GAN's recipe), before any D forward, and every
        # forward of the step uses that one estimate: accumulation then gives
        # what one big batch gives, and a skipped step can be undone.
        self._sn_modules = [m for m in self.D.modules() if hasattr(m, "weight_u")] if self.D is not None else []
        betas = tuple(cfg.betas)
        self.opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.learning_rate, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.learning_rate, betas=betas) if self.D else None
        fp16 = self.precision == "fp16"
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: the autotuned kernels pay off
        self.g_train: nn.Module = G
        self.d_train: nn.Module | None = self.D
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dev.index] if dev.type == "cuda" else None
            self.g_train = DDP(G, device_ids=ids, broadcast_buffers=True)
            if self.D is not None:
                self.d_train = DDP(self.D, device_ids=ids, broadcast_buffers=True)

    # -- state -------------------------------------------------------------

    def _models(self) -> dict[str, dict[str, torch.Tensor]]:
        models = {"G": self.G.state_dict(), "G_ema": self.ema.state_dict()}
        if self.D is not None:
            models["D"] = self.D.state_dict()
        return models

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (process 0; every process
        must call this, as the per-process random states are gathered)."""
        states = self.dist.gather({
            "crop": self.sampler.crop_gen.get_state(),
            "degrade": self.degrade_gen.get_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        })
        if not self.dist.main:
            return None
        extra = {"rng.order": self.sampler.order_gen.get_state(),
                 "rng.torch_cpu": torch.get_rng_state(),
                 "data.queue": torch.tensor(self.sampler.queue, dtype=torch.int64)}
        for r, st in enumerate(states):
            extra[f"rng.crop.{r}"] = st["crop"]
            extra[f"rng.degrade.{r}"] = st["degrade"]
            if st["cuda"] is not None:
                extra[f"rng.cuda.{r}"] = st["cuda"]
        optimizers = {"opt_G": self.opt_g.state_dict()}
        if self.opt_d is not None:
            optimizers["opt_D"] = self.opt_d.state_dict()
        meta = {
            "step": self.step,
            "epoch": self.sampler.epoch,
            "world": self.dist.world,
            "best_psnr": self.best_psnr if math.isfinite(self.best_psnr) else None,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
            "skipped_steps": self.skipped_steps,
            "scaler_G": self.scaler_g.state_dict() if self.scaler_g.is_enabled() else None,
            "scaler_D": self.scaler_d.state_dict() if self.scaler_d.is_enabled() else None,
            "arch": self.arch,
            "hyper": self.hyper,
            "config": config_dict(self.cfg),
        }
        path = ckpt.save_checkpoint(ckpt.checkpoint_path(self.run_dir, self.step), models=self._models(),
                                    optimizers=optimizers, extra_tensors=extra, meta=meta)
        ckpt.prune_checkpoints(self.run_dir, self.cfg.keep, self.best_step)
        return path

    def _load(self, path: Path) -> None:
        models, other, meta = ckpt.load_checkpoint(path)
        try:
            self.G.load_state_dict(models["G"], strict=True)
            self.ema.load_state_dict(models["G_ema"], strict=True)
            # A checkpoint from a run that had no GAN stage (yet) has no D: the
            # fresh, seeded D is then exactly what an uninterrupted run would
            # hold, as D never changes before its stage starts.
            if self.D is not None and "D" in models:
                self.D.load_state_dict(models["D"], strict=True)
            self.opt_g.load_state_dict(meta["optimizers"]["opt_G"])
            if self.opt_d is not None and "opt_D" in meta["optimizers"]:
                self.opt_d.load_state_dict(meta["optimizers"]["opt_D"])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VhsupError(f"checkpoint does not fit this run: {first}", path) from None
        if meta.get("scaler_G") and self.scaler_g.is_enabled():
            self.scaler_g.load_state_dict(meta["scaler_G"])
        if meta.get("scaler_D") and self.scaler_d.is_enabled():
            self.scaler_d.load_state_dict(meta["scaler_D"])
        r = self.dist.rank
        self.sampler.order_gen.set_state(other["rng.order"])
        self.sampler.queue = [int(v) for v in other["data.queue"].tolist()]
        self.sampler.epoch = int(meta.get("epoch", 0))
        torch.set_rng_state(other["rng.torch_cpu"])
        if f"rng.crop.{r}" in other and int(meta.get("world", 1)) == self.dist.world:
            self.sampler.crop_gen.set_state(other[f"rng.crop.{r}"])
            self.degrade_gen.set_state(other[f"rng.degrade.{r}"])
            if self.device.type == "cuda" and f"rng.cuda.{r}" in other:
                torch.cuda.set_rng_state(other[f"rng.cuda.{r}"], self.device)
        else:
            self.notice(f"the checkpoint was written by {meta.get('world', 1)} processes and this run has "
                        f"{self.dist.world}: crops and degradations continue from fresh random streams")
            self.sampler.crop_gen.manual_seed(derive_seed(self.cfg.seed, "crop", r, "resumed", self.dist.world))
            self.degrade_gen.manual_seed(derive_seed(self.cfg.seed, "degrade", r, "resumed", self.dist.world))
        self.step = int(meta["step"])
        self.best_psnr = meta["best_psnr"] if meta.get("best_psnr") is not None else -math.inf
        self.best_step = meta.get("best_step")
        self.best_metrics = meta.get("best_metrics") or {}
        self.skipped_steps = int(meta.get("skipped_steps", 0))

    # -- one step ----------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)
        return x.contiguous(memory_format=self.memory_format)

    def tc_active(self, step: int | None = None) -> bool:
        step = self.step if step is None else step
        return 0 <= self.cfg.tc_start <= step

    def next_batches(self) -> list[Batch]:
        """The micro-batches of the next step, on the device."""
        cfg = self.cfg
        s = self.scale
        tc = self.tc_active()
        extra = cfg.tc_shift * s if tc else 0
        out = []
        for _ in range(cfg.accumulate):
            hr8, lr8 = self.sampler.next(cfg.batch, extra)
            hr = self._to_device(hr8)
            if lr8 is None:
                lr = self.degrader(hr, self.degrade_gen).contiguous(memory_format=self.memory_format)
            else:
                lr = self._to_device(lr8)
            out.append(self.make_batch(hr, lr))
        return out

    def make_batch(self, hr: torch.Tensor, lr: torch.Tensor | None = None) -> Batch:
        """A Batch from float HR patches in [0, 1] (N, 3, P(+extra), ...) on the
        device; ``lr`` None makes it with the Degrader (as training does)."""
        if lr is None:
            lr = self.degrader(hr, self.degrade_gen)
        if not self.tc_active():
            return Batch(lr=lr, hr=hr)
        lp = self.patch // self.scale
        return Batch(lr=lr[..., :lp, :lp], hr=hr[..., :self.patch, :self.patch], lr_big=lr)

    def _lr_at(self, step: int) -> float:
        drops = sum(1 for m in self.cfg.milestones if step >= m)
        return self.cfg.learning_rate * self.cfg.gamma ** drops

    def _no_sync(self, module: nn.Module, last: bool):
        if self.dist.active and not last:
            return module.no_sync()
        return contextlib.nullcontext()

    def _agree(self, sums: dict[str, torch.Tensor], bad: set[str], count: int) -> tuple[dict[str, float], list[str]]:
        """Losses averaged over processes, and the names bad on any of them."""
        names = [n for n in LOSS_NAMES if n in sums]
        vec = torch.zeros(2 * len(LOSS_NAMES), dtype=torch.float64, device=self.device)
        for i, n in enumerate(LOSS_NAMES):
            if n in sums:
                vec[i] = sums[n].double() / count
            if n in bad:
                vec[len(LOSS_NAMES) + i] = 1.0
        vec = self.dist.sum_(vec).cpu()
        w = self.dist.world
        losses = {n: float(vec[LOSS_NAMES.index(n)]) / w for n in names}
        flagged = [n for i, n in enumerate(LOSS_NAMES) if vec[len(LOSS_NAMES) + i] > 0]
        return losses, flagged

    @torch.no_grad()
    def _advance_spectral_norm(self) -> None:
        """One power iteration for every spectrally normalised layer of D."""
        from torch.nn.utils.spectral_norm import SpectralNorm

        for m in self._sn_modules:
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, SpectralNorm):
                    hook.compute_weight(m, do_power_iteration=True)

    @contextlib.contextmanager
    def _fixed_spectral_norm(self):
        """D forwards that use the step's spectral-norm estimate as it is (a
        spectral-norm layer iterates only when its ``training`` flag is set)."""
        with _training_off(self._sn_modules):
            yield

    @staticmethod
    def _buffers(module: nn.Module | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [] if module is None else [(b, b.detach().clone()) for b in module.buffers()]

    @staticmethod
    @torch.no_grad()
    def _restore(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for b, v in saved:
            b.copy_(v)

    def _sync_buffers(self, module: nn.Module | None) -> None:
        """Process 0's buffers (BatchNorm statistics, switch-norm state) everywhere,
        so the EMA, computed on every process, stays identical."""
        if module is None or not self.dist.active:
            return
        groups: dict[torch.dtype, list[torch.Tensor]] = {}
        for b in module.buffers():
            groups.setdefault(b.dtype, []).append(b)
        with torch.no_grad():
            for tensors in groups.values():  # one collective per dtype, not one per buffer
                flat = torch.cat([t.reshape(-1) for t in tensors])
                dist.broadcast(flat, src=0)
                offset = 0
                for t in tensors:
                    t.copy_(flat[offset:offset + t.numel()].view_as(t))
                    offset += t.numel()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.ema
        for e, p in zip(self.ema.parameters(), self.G.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.G.buffers()):
            e.copy_(b)

    def _label(self, name: str) -> str:
        cfg = self.cfg
        return {"pixel": f"pixel ({cfg.pixel})", "perceptual": f"perceptual ({cfg.perceptual})",
                "gan": "adversarial (generator)", "tc": "translational consistency",
                "d_real": "discriminator (real)", "d_fake": "discriminator (fake)"}.get(name, name)

    def train_step(self, batches: list[Batch]) -> StepStats:
        """One optimiser step of G (and of D in the GAN stage) on ``batches``."""
        cfg = self.cfg
        step = self.step
        gan_stage = step >= self.pixel_steps
        use_d = gan_stage and self.D is not None
        use_p = gan_stage and self.perceptual is not None
        use_tc = self.tc_active(step)
        lr_now = self._lr_at(step)
        for opt in (self.opt_g, self.opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr_now
        n = len(batches)
        sums: dict[str, torch.Tensor] = {}
        bad: set[str] = set()

        def add(name: str, value: torch.Tensor) -> None:
            v = value.detach().float()
            sums[name] = sums[name] + v if name in sums else v
            if not bool(torch.isfinite(v)):
                bad.add(name)

        # A skipped step must leave no trace: BatchNorm statistics of a
        # poisoned batch would turn every later output into NaN.
        saved_g, saved_d = self._buffers(self.G), self._buffers(self.D)

        if use_d:
            self._advance_spectral_norm()

        # --- generator
        if self.D is not None:
            self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        fakes = []
        for k, b in enumerate(batches):
            with self._no_sync(self.g_train, k == n - 1):
                with self._autocast():
                    sr = self.g_train(b.lr)
                sr32 = sr.float()
                terms = {"pixel": cfg.pixel_weight * self.pix(sr32, b.hr)}
                if use_p:
                    terms["perceptual"] = cfg.perceptual_weight * self.perceptual(sr32, b.hr)
                if use_d:
                    # The plain module: D's weights are frozen here and identical
                    # on every process, so DDP has nothing to synchronise.
                    with self._autocast(), self._fixed_spectral_norm():
                        logits = self.D(sr.contiguous(memory_format=self.memory_format))
                    terms["gan"] = cfg.gan_weight * self.gan_loss(logits, True)
                if use_tc:
                    from vhsup.train.losses import translational_consistency

                    with self._autocast():
                        tc = translational_consistency(self.g_train, b.lr_big, shift=cfg.tc_shift, scale=self.scale,
                                                       rng=self.degrade_gen)
                    terms["tc"] = cfg.tc_weight * tc
                total = sum(terms.values()) / n
                self.scaler_g.scale(total).backward()
            for name, v in terms.items():
                add(name, v)
            if use_d:
                fakes.append(sr.detach().float().contiguous(memory_format=self.memory_format))
        losses, flagged = self._agree(sums, bad, n)
        stats = StepStats(step=step + 1, losses=losses, lr=lr_now)
        params = [p for p in self.G.parameters() if p.requires_grad]
        if flagged:
            stats.skipped, stats.bad = True, [self._label(x) for x in flagged]
        else:
            self.scaler_g.unscale_(self.opt_g)
            limit = cfg.clip_grad if cfg.clip_grad > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, limit)
            stats.grad_norm_g = float(norm)
            if not math.isfinite(stats.grad_norm_g) and self.precision != "fp16":
                stats.skipped, stats.bad = True, ["generator gradient"]
        # A bad loss or gradient poisons the batch for D as well; an fp16
        # overflow only means the loss scale was too high for this step.
        poisoned = stats.skipped
        if poisoned:
            self.opt_g.zero_grad(set_to_none=True)
            self._restore(saved_g)
            self._restore(saved_d)
        else:
            scale_before = self.scaler_g.get_scale() if self.scaler_g.is_enabled() else None
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
            if scale_before is not None and self.scaler_g.get_scale() < scale_before:
                stats.skipped, stats.bad = True, ["fp16 overflow in the generator gradient (loss scale lowered)"]
            else:
                self._sync_buffers(self.G)
                self._update_ema()

        # --- discriminator
        if use_d and not poisoned:
            self.D.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            d_sums: dict[str, torch.Tensor] = {}
            d_bad: set[str] = set()
            for k, (b, fake) in enumerate(zip(batches, fakes)):
                with self._no_sync(self.d_train, k == n - 1):
                    with self._autocast(), self._fixed_spectral_norm():
                        real_logits = self.d_train(b.hr)
                        fake_logits = self.d_train(fake)
                    l_real = self.gan_loss(real_logits, True)
                    l_fake = self.gan_loss(fake_logits, False)
                    self.scaler_d.scale((l_real + l_fake) / n).backward()
                for name, v in (("d_real", l_real), ("d_fake", l_fake)):
                    vv = v.detach().float()
                    d_sums[name] = d_sums[name] + vv if name in d_sums else vv
                    if not bool(torch.isfinite(vv)):
                        d_bad.add(name)
            d_losses, d_flagged = self._agree(d_sums, d_bad, n)
            stats.losses.update(d_losses)
            d_ok = not d_flagged
            if d_ok:
                self.scaler_d.unscale_(self.opt_d)
                dn = torch.nn.utils.clip_grad_norm_(self.D.parameters(), math.inf)
                stats.grad_norm_d = float(dn)
                d_ok = math.isfinite(stats.grad_norm_d) or self.precision == "fp16"
                if not d_ok:
                    d_flagged = ["discriminator gradient"]
            if d_ok:
                self.scaler_d.step(self.opt_d)
                self.scaler_d.update()
                self._sync_buffers(self.D)
            else:
                self.opt_d.zero_grad(set_to_none=True)
                self._restore(saved_d)
                stats.bad += [self._label(x) for x in d_flagged]
            self.D.requires_grad_(False)
        self.step += 1
        return stats

    # -- validation and export ------------------------------------------------

    def _rng_fork(self):
        """Validation must not move the global RNG: a resumed run validates at
        other steps than the uninterrupted one, and its checkpoints must match."""
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def _make_validator(self):
        from vhsup.train.validate import Validator

        start = self.start_net
        self.start_net = None
        with self._rng_fork():
            return Validator(self.val_pairs, self.scale, device=str(self.device), start_model=start)

    def validate(self) -> dict:
        """Score the EMA on the held-out frames (process 0); export it when best."""
        with self._rng_fork():
            return self._validate()

    def _validate(self) -> dict:
        metrics = self.validator.evaluate(self.ema)
        metrics = {k: float(v) for k, v in metrics.items()}
        self.metrics_log.log(self.step, metrics, kind="val")
        try:
            (self.run_dir / "samples").mkdir(exist_ok=True)
            self.validator.grid(self.ema, self.run_dir / "samples" / f"step-{self.step:08d}.png")
        except (OSError, VhsupError) as exc:
            self.notice(f"could not write the validation grid: {exc}")
        psnr = metrics["psnr_y"]
        if math.isfinite(psnr) and psnr > self.best_psnr:
            self.best_psnr, self.best_step = psnr, self.step
            self.best_metrics = {**metrics, "step": self.step}
            self.export(self.run_dir / "best.safetensors", self.best_metrics)
        return metrics

    def export(self, path: Path, metrics: dict) -> Path:
        """The EMA generator as a plain weights file (the keys a fresh build of
        the architecture has) plus its model card."""
        from safetensors.torch import save_file

        from vhsup.atomic import replacing
        from vhsup.train.card import write_model_card
        from vhsup.weights.detect import detect

        state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
                 for k, v in self.ema.state_dict().items()}
        arch, hyper = detect(state, path)
        with replacing(path, "trained weights") as tmp:
            save_file(state, os.fspath(tmp), metadata={"format": "pt", "vhsup_arch": arch})
        write_model_card(path, arch=arch, hyper=hyper, scale=self.scale, base=self.base, description="",
                         metrics=metrics, config=config_dict(self.cfg), step=int(metrics.get("step", self.step)))
        return path

    # -- the loop --------------------------------------------------------------

    def _intro(self) -> None:
        cfg = self.cfg
        d = self.dist
        self.notice(self._start_note)
        if self._switch_note:
            self.notice(self._switch_note)
        eff = cfg.batch * cfg.accumulate * d.world
        self.notice(f"effective batch {eff} = {cfg.batch} per micro-batch x {cfg.accumulate} accumulated x "
                    f"{d.world} process{'es' if d.world > 1 else ''}; device {self.device}, {self.precision}")
        parts = []
        if self.pixel_steps > 0:
            parts.append(f"pixel stage ({cfg.pixel}) to step {min(self.pixel_steps, cfg.steps)}")
        if self.pixel_steps < cfg.steps:
            terms = [cfg.pixel]
            if self.perceptual is not None:
                terms.append(f"perceptual {cfg.perceptual}")
            if self.D is not None:
                terms.append(f"adversarial ({cfg.discriminator} discriminator)")
            parts.append(f"{'GAN' if self.D is not None else 'content'} stage ({' + '.join(terms)}) to step {cfg.steps}")
        if self.use_tc_ever:
            parts.append(f"translational consistency from step {cfg.tc_start}")
        self.notice("; ".join(parts))
        self.notice(f"{len(self.frames)} training frames, {self.val_count} validation frame"
                    f"{'s' if self.val_count != 1 else ''}; {cfg.mode} data, patch {cfg.patch} px")
        if cfg.mode == "self":
            self.notice("self mode: your frames are the targets and a further-degraded copy the inputs, so the model "
                        "learns to undo that degradation on footage like yours")

    def _write_config(self) -> None:
        from vhsup.atomic import replacing

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VhsupError(f"cannot create the run folder: {exc.strerror or exc}", self.run_dir) from None
        header = ("Resolved config of this run, written by `vhsup train`. Repeat the run with\n"
                  f"  vhsup train --config {self.run_dir / 'config.toml'} --out NEW_RUN_DIR")
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
                self.metrics_log = MetricsLog(self.run_dir, tensorboard=cfg.tensorboard,
                                              resume_step=self.step if self.resume_path else None)
                self.validator = self._make_validator()
            last_val = last_save = None
            if self.step >= cfg.steps:
                self.notice(f"the run is already at step {self.step} of {cfg.steps}; nothing to do "
                            "(raise --steps to go on)")
                last_val = last_save = self.step
            progress = self._progress() if (main and not cfg.quiet) else None
            task = progress.add_task("training", total=cfg.steps, completed=self.step, losses="") if progress else None
            started = time.perf_counter()
            first_step = self.step
            with (progress if progress is not None else contextlib.nullcontext()), self._stop_on_ctrl_c() as stop:
                self._live = progress
                while self.step < cfg.steps:
                    if stop.is_set():
                        self.save_checkpoint()
                        raise Interrupted(f"stopped at step {self.step} of {cfg.steps}; the checkpoint is saved: "
                                          f"continue with `vhsup train --resume {self.run_dir}`")
                    stats = self.train_step(self.next_batches())
                    self.history.append(stats)
                    self._after_step(stats)
                    if progress is not None:
                        done = self.step - first_step
                        rate = done / max(time.perf_counter() - started, 1e-9)
                        progress.update(task, completed=self.step,
                                        losses=_loss_text(stats.losses) + f"  {rate:.2f} it/s")
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
                self._live = None
            if main:
                if self.best_step is None:  # every validation was NaN: still leave weights to look at
                    self.notice("validation never gave a finite PSNR; exporting the last EMA weights as best")
                    self.best_metrics = {"step": self.step}
                    self.export(self.run_dir / "best.safetensors", self.best_metrics)
                best = self.run_dir / "best.safetensors"
                m = self.best_metrics
                if "psnr_y" in m:
                    ref = f", bicubic {m['psnr_y_bicubic']:.2f}" if "psnr_y_bicubic" in m else ""
                    ref += f", start {m['psnr_y_start']:.2f}" if "psnr_y_start" in m else ""
                    self.notice(f"best: step {m.get('step')}, PSNR-Y {m['psnr_y']:.2f} dB{ref} -> {best}")
            self._dump()
            return TrainResult(self.run_dir, self.step, self.run_dir / "best.safetensors" if main else None,
                               dict(self.best_metrics), self.history, self.skipped_steps)
        finally:
            self._live = None
            if main and getattr(self, "metrics_log", None) is not None:
                self.metrics_log.close()
            self.dist.close()

    @contextlib.contextmanager
    def _stop_on_ctrl_c(self):
        """The first Ctrl-C finishes the step in progress and checkpoints it
        (a step cut in half would leave G stepped but not its EMA); a second
        one stops at once. SIGTERM and SIGHUP do the same where the command
        line made them interrupts (vhsup.signals). Under torchrun, the
        launcher handles signals."""
        stop = threading.Event()
        if threading.current_thread() is not threading.main_thread():
            yield stop
            return

        def handler(signum, frame):
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
            self.skipped_steps += 1
            self._bad_run += 1
            self.notice(f"step {stats.step}: skipped, non-finite {', '.join(stats.bad)}")
            if self._bad_run >= MAX_BAD_STEPS:
                raise VhsupError(
                    f"training diverged: {MAX_BAD_STEPS} steps in a row had a non-finite {', '.join(stats.bad)}; "
                    "lower --learning-rate, use --precision fp32, or start from pretrained weights")
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

    def _progress(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[losses]}"),
                        console=Console(stderr=True, highlight=False, soft_wrap=True), transient=False)

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


def _centre_crop(img: np.ndarray, quantum: int, size: int) -> np.ndarray:
    """A centred crop at most ``size`` px each way (0: whole), sides multiples of ``quantum``."""
    h, w = img.shape[:2]
    ch, cw = (h, w) if size <= 0 else (min(h, size), min(w, size))
    ch, cw = ch - ch % quantum, cw - cw % quantum
    if ch < quantum or cw < quantum:
        raise VhsupError(f"validation frame is {w}x{h}, too small for this x{quantum} model")
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y:y + ch, x:x + cw])


def _centre_pair(lr: np.ndarray, hr: np.ndarray, s: int, quantum: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    lq = max(1, quantum // s)
    lr_c = _centre_crop(lr, lq, size // s if size > 0 else 0)
    h, w = lr.shape[:2]
    ch, cw = lr_c.shape[:2]
    y, x = (h - ch) // 2, (w - cw) // 2
    return lr_c, np.ascontiguousarray(hr[y * s:(y + ch) * s, x * s:(x + cw) * s])


def resume_config(run_dir: Path, changes: dict) -> tuple[TrainConfig, Path]:
    """The config stored in a run's newest checkpoint with ``changes`` (only
    :data:`RESUMABLE` keys may differ), and that checkpoint's path."""
    path = ckpt.latest_checkpoint(run_dir)
    _m, _o, meta = ckpt.load_checkpoint(path)
    flat: dict = {}
    for section, table in meta["config"].items():
        if section == "degradation":
            flat["degradation"] = table
        else:
            flat.update(table)
    unknown = sorted(set(flat) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise VhsupError(f"the checkpoint's config has settings this vhsup does not know ({', '.join(unknown)})", path)
    cfg = TrainConfig(**flat)
    for key, value in changes.items():
        if value is None or key in ("out",):
            continue
        if key == "preset":
            if value != cfg.degradation.get("preset"):
                raise VhsupError(f"--degradation cannot change when resuming (the run uses "
                                 f"{cfg.degradation.get('preset')!r}); start a new run instead", run_dir)
            continue
        if key in RESUMABLE:
            cfg = cfg.replace(**{key: value})
        elif getattr(cfg, key) != value:
            raise VhsupError(f"--{key.replace('_', '-')} cannot change when resuming (the run uses "
                             f"{getattr(cfg, key)!r}): only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} "
                             f"can; start a new run with --config {Path(run_dir) / 'config.toml'} --out NEW",
                             run_dir)
    return cfg.replace(out=os.fspath(Path(run_dir).resolve())), path


def train(cfg: TrainConfig, *, resume: Path | None = None, notice: Notice | None = None,
          allow_download: bool = False) -> TrainResult:
    """Run (or continue) a training run; see :class:`Trainer`."""
    return Trainer(cfg, notice=notice, resume=resume, allow_download=allow_download).run()
