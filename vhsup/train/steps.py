"""One optimiser step: the generator step, then the discriminator step.

A step runs ``accumulate`` micro-batches. The generator step adds up their
gradients (under DDP only the last micro-batch all-reduces) for one Adam
step: pixel loss in stage 1, pixel + perceptual + adversarial in stage 2,
plus translational consistency from ``tc_start``. Then, in the GAN stage,
the discriminator step trains D on the same batches.

A non-finite loss or gradient skips the step and leaves no trace: no
weight, optimiser, EMA or buffer changes; all processes agree on it first.
A bad discriminator loss skips only the discriminator's update. Under fp16
the AMP loss scalers may also drop a step whose gradients overflowed; that
is reported, not counted against the run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from vhsup.train.config import TrainConfig
from vhsup.train.distributed import Dist
from vhsup.train.nets import Losses, Nets
from vhsup.train.recompute import BufferCopies, buffer_copies, restore_buffers, training_off

__all__ = ["LOSS_NAMES", "Batch", "StepStats", "Stepper", "tc_active"]

# Every loss the loop can compute, in a fixed order (the DDP agreement on
# bad losses sends one flag per name).
LOSS_NAMES = ("pixel", "perceptual", "gan", "tc", "d_real", "d_fake")


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


def tc_active(cfg: TrainConfig, step: int) -> bool:
    """Whether the translational consistency loss is on at ``step``."""
    return 0 <= cfg.tc_start <= step


@dataclass(frozen=True)
class _Plan:
    """What the step at ``step`` computes."""

    step: int
    lr: float
    use_d: bool  # the adversarial term and the discriminator step
    use_p: bool  # the perceptual term
    use_tc: bool  # the translational consistency term


class _LossSums:
    """Losses added up over a step's micro-batches, and the non-finite ones."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.bad: set[str] = set()

    def add(self, name: str, value: torch.Tensor) -> None:
        v = value.detach().float()
        self.sums[name] = self.sums[name] + v if name in self.sums else v
        if not bool(torch.isfinite(v)):
            self.bad.add(name)

    def agree(self, dist: Dist, count: int, device: torch.device) -> tuple[dict[str, float], list[str]]:
        """Losses averaged over micro-batches and processes, and the names bad on any of them."""
        names = [n for n in LOSS_NAMES if n in self.sums]
        vec = torch.zeros(2 * len(LOSS_NAMES), dtype=torch.float64, device=device)
        for i, n in enumerate(LOSS_NAMES):
            if n in self.sums:
                vec[i] = self.sums[n].double() / count
            if n in self.bad:
                vec[len(LOSS_NAMES) + i] = 1.0
        vec = dist.sum_(vec).cpu()
        losses = {n: float(vec[LOSS_NAMES.index(n)]) / dist.world for n in names}
        flagged = [n for i, n in enumerate(LOSS_NAMES) if vec[len(LOSS_NAMES) + i] > 0]
        return losses, flagged


class Stepper:
    """Runs optimiser steps on a run's :class:`Nets` (see the module docstring).

    ``rng`` draws the translational consistency shifts (the run's
    degradation stream, which the checkpoint keeps).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        nets: Nets,
        losses: Losses,
        dist: Dist,
        device: torch.device,
        *,
        precision: str,
        memory_format: torch.memory_format,
        scale: int,
        rng: torch.Generator,
    ) -> None:
        self.cfg, self.nets, self.losses, self.dist, self.device = cfg, nets, losses, dist, device
        self.precision = precision
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.memory_format = memory_format
        self.scale = scale
        self.rng = rng

    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def lr_at(self, step: int) -> float:
        drops = sum(1 for m in self.cfg.milestones if step >= m)
        return self.cfg.learning_rate * self.cfg.gamma**drops

    def step(self, batches: list[Batch], step: int) -> StepStats:
        """Step ``step`` (0-based) of G, and of D in the GAN stage, on ``batches``."""
        nets = self.nets
        gan_stage = step >= self.cfg.pixel_steps
        plan = _Plan(
            step=step,
            lr=self.lr_at(step),
            use_d=gan_stage and nets.D is not None,
            use_p=gan_stage and self.losses.perceptual is not None,
            use_tc=tc_active(self.cfg, step),
        )
        for opt in (nets.opt_g, nets.opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = plan.lr
        # A skipped step must leave no trace: BatchNorm statistics of a
        # poisoned batch would turn every later output into NaN.
        saved_g = buffer_copies([nets.G])
        saved_d = buffer_copies([nets.D] if nets.D is not None else [])
        if plan.use_d:
            self._advance_spectral_norm()
        sums, fakes = self._generator_pass(batches, plan)
        stats = self._generator_check(sums, len(batches), plan)
        # A bad loss or gradient poisons the batch for D as well; an fp16
        # overflow only means the loss scale was too high for this step.
        poisoned = stats.skipped
        if poisoned:
            nets.opt_g.zero_grad(set_to_none=True)
            restore_buffers(saved_g)
            restore_buffers(saved_d)
        else:
            self._generator_update(stats)
        if plan.use_d and not poisoned:
            self._discriminator_step(batches, fakes, stats, saved_d)
        return stats

    # -- the generator ---------------------------------------------------------

    def _generator_pass(self, batches: list[Batch], plan: _Plan) -> tuple[_LossSums, list[torch.Tensor]]:
        """Forward and backward of every micro-batch; the outputs D will see."""
        nets = self.nets
        if nets.D is not None:
            nets.D.requires_grad_(False)
        nets.opt_g.zero_grad(set_to_none=True)
        n = len(batches)
        sums = _LossSums()
        fakes = []
        for k, b in enumerate(batches):
            with self.dist.no_sync(nets.g_train, k == n - 1):
                with self.autocast():
                    sr = nets.g_train(b.lr)
                terms = self._generator_terms(b, sr, plan)
                total = cast(torch.Tensor, sum(terms.values())) / n
                nets.scaler_g.scale(total).backward()
            for name, v in terms.items():
                sums.add(name, v)
            if plan.use_d:
                fakes.append(sr.detach().float().contiguous(memory_format=self.memory_format))
        return sums, fakes

    def _generator_terms(self, b: Batch, sr: torch.Tensor, plan: _Plan) -> dict[str, torch.Tensor]:
        """The generator's weighted loss terms on one micro-batch."""
        cfg, losses, D = self.cfg, self.losses, self.nets.D
        sr32 = sr.float()
        terms = {"pixel": cfg.pixel_weight * losses.pix(sr32, b.hr)}
        if plan.use_p and losses.perceptual is not None:
            terms["perceptual"] = cfg.perceptual_weight * losses.perceptual(sr32, b.hr)
        if plan.use_d and D is not None:
            # The plain module: D's weights are frozen here and identical
            # on every process, so DDP has nothing to synchronise.
            with self.autocast(), self._fixed_spectral_norm():
                logits = D(sr.contiguous(memory_format=self.memory_format))
            terms["gan"] = cfg.gan_weight * losses.gan(logits, True)
        if plan.use_tc:
            from vhsup.train.losses import translational_consistency

            assert b.lr_big is not None, "the consistency loss needs the enlarged LR patch (Trainer.make_batch)"
            with self.autocast():
                tc = translational_consistency(
                    self.nets.g_train, b.lr_big, shift=cfg.tc_shift, scale=self.scale, rng=self.rng
                )
            terms["tc"] = cfg.tc_weight * tc
        return terms

    def _generator_check(self, sums: _LossSums, n: int, plan: _Plan) -> StepStats:
        """The step's losses; it is skipped when one of them, or G's gradient, is not finite."""
        cfg, nets = self.cfg, self.nets
        losses, flagged = sums.agree(self.dist, n, self.device)
        stats = StepStats(step=plan.step + 1, losses=losses, lr=plan.lr)
        params = [p for p in nets.G.parameters() if p.requires_grad]
        if flagged:
            stats.skipped, stats.bad = True, [self._label(x) for x in flagged]
        else:
            nets.scaler_g.unscale_(nets.opt_g)
            limit = cfg.clip_grad if cfg.clip_grad > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, limit)
            stats.grad_norm_g = float(norm)
            if not math.isfinite(stats.grad_norm_g) and self.precision != "fp16":
                stats.skipped, stats.bad = True, ["generator gradient"]
        return stats

    def _generator_update(self, stats: StepStats) -> None:
        """G's Adam step (unless the fp16 scaler drops it), then the EMA."""
        nets = self.nets
        scale_before = nets.scaler_g.get_scale() if nets.scaler_g.is_enabled() else None
        nets.scaler_g.step(nets.opt_g)
        nets.scaler_g.update()
        if scale_before is not None and nets.scaler_g.get_scale() < scale_before:
            stats.skipped, stats.bad = True, ["fp16 overflow in the generator gradient (loss scale lowered)"]
        else:
            self.dist.broadcast_buffers(nets.G)
            self._update_ema()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.ema
        G, ema = self.nets.G, self.nets.ema
        for e, p in zip(ema.parameters(), G.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
        for eb, b in zip(ema.buffers(), G.buffers()):
            eb.copy_(b)

    # -- the discriminator -----------------------------------------------------

    def _discriminator_step(
        self, batches: list[Batch], fakes: list[torch.Tensor], stats: StepStats, saved_d: BufferCopies
    ) -> None:
        """D's update on the step's real and generated patches; a bad loss or
        gradient undoes it alone (named in ``stats.bad``, the step counts)."""
        nets = self.nets
        D, opt_d = nets.D, nets.opt_d
        assert D is not None and opt_d is not None
        D.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        sums = self._discriminator_pass(batches, fakes)
        d_losses, d_flagged = sums.agree(self.dist, len(batches), self.device)
        stats.losses.update(d_losses)
        d_ok = not d_flagged
        if d_ok:
            nets.scaler_d.unscale_(opt_d)
            dn = torch.nn.utils.clip_grad_norm_(D.parameters(), math.inf)
            stats.grad_norm_d = float(dn)
            d_ok = math.isfinite(stats.grad_norm_d) or self.precision == "fp16"
            if not d_ok:
                d_flagged = ["discriminator gradient"]
        if d_ok:
            nets.scaler_d.step(opt_d)
            nets.scaler_d.update()
            self.dist.broadcast_buffers(D)
        else:
            opt_d.zero_grad(set_to_none=True)
            restore_buffers(saved_d)
            stats.bad += [self._label(x) for x in d_flagged]
        D.requires_grad_(False)

    def _discriminator_pass(self, batches: list[Batch], fakes: list[torch.Tensor]) -> _LossSums:
        nets = self.nets
        assert nets.d_train is not None
        n = len(batches)
        sums = _LossSums()
        for k, (b, fake) in enumerate(zip(batches, fakes)):
            with self.dist.no_sync(nets.d_train, k == n - 1):
                with self.autocast(), self._fixed_spectral_norm():
                    real_logits = nets.d_train(b.hr)
                    fake_logits = nets.d_train(fake)
                l_real = self.losses.gan(real_logits, True)
                l_fake = self.losses.gan(fake_logits, False)
                nets.scaler_d.scale((l_real + l_fake) / n).backward()
            sums.add("d_real", l_real)
            sums.add("d_fake", l_fake)
        return sums

    # Spectral norm's power iteration would advance on every training-mode
    # forward of D, i.e. once per micro-batch. Instead it advances exactly
    # once per step (SN-GAN's recipe), before any D forward, and every
    # forward of the step uses that one estimate: accumulation then gives
    # what one big batch gives, and a skipped step can be undone.

    @torch.no_grad()
    def _advance_spectral_norm(self) -> None:
        """One power iteration for every spectrally normalised layer of D."""
        from torch.nn.utils.spectral_norm import SpectralNorm

        for m in self.nets.sn_modules:
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, SpectralNorm):
                    hook.compute_weight(m, do_power_iteration=True)

    @contextlib.contextmanager
    def _fixed_spectral_norm(self) -> Iterator[None]:
        """D forwards that use the step's spectral-norm estimate as it is (a
        spectral-norm layer iterates only when its ``training`` flag is set)."""
        with training_off(self.nets.sn_modules):
            yield

    def _label(self, name: str) -> str:
        cfg = self.cfg
        return {
            "pixel": f"pixel ({cfg.pixel})",
            "perceptual": f"perceptual ({cfg.perceptual})",
            "gan": "adversarial (generator)",
            "tc": "translational consistency",
            "d_real": "discriminator (real)",
            "d_fake": "discriminator (fake)",
        }.get(name, name)
