"""The modules a run trains, and the losses it trains them with.

:class:`Nets` holds what an optimiser step changes: the generator G, its
EMA (what validation scores and ``best.safetensors`` exports), the
discriminator D of the GAN stage, their Adam optimisers and AMP loss
scalers, and the modules the step runs (under DDP, the wrapped ones).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vhsup.train.config import TrainConfig
from vhsup.train.data import derive_seed
from vhsup.train.distributed import Dist
from vhsup.train.recompute import enable_checkpointing

__all__ = ["Losses", "Nets", "build_losses", "build_nets", "prepare_generator", "to_memory_format"]


@dataclass
class Nets:
    """The modules and optimisers a training step changes."""

    G: nn.Module
    ema: nn.Module  # G's exponential moving average
    D: nn.Module | None  # None: no adversarial stage in this run
    g_train: nn.Module  # G as the step runs it (DDP-wrapped under torchrun)
    d_train: nn.Module | None
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam | None
    scaler_g: torch.amp.GradScaler  # enabled in fp16 only
    scaler_d: torch.amp.GradScaler
    # D's spectrally normalised layers: their power iteration advances once a
    # step (see vhsup.train.steps), not on every forward.
    sn_modules: list[nn.Module]

    def models(self) -> dict[str, dict[str, torch.Tensor]]:
        """The state dicts a checkpoint keeps, by name."""
        models = {"G": self.G.state_dict(), "G_ema": self.ema.state_dict()}
        if self.D is not None:
            models["D"] = self.D.state_dict()
        return models


@dataclass
class Losses:
    """The run's loss modules on the training device (each returns an unweighted scalar)."""

    pix: nn.Module
    perceptual: nn.Module | None  # None: no perceptual term in this run
    gan: nn.Module


@torch.no_grad()
def to_memory_format(module: nn.Module, fmt: torch.memory_format) -> None:
    """Channels-last for the 4-D (conv) weights only: Module.to(memory_format=)
    refuses any other rank, and switched convs keep 5-D kernel banks."""
    if fmt == torch.contiguous_format:
        return
    for p in module.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=fmt)


def prepare_generator(
    net: nn.Module,
    device: torch.device,
    memory_format: torch.memory_format,
    *,
    checkpointing: bool,
    notice: Callable[[str], None],
    arch: str,
) -> tuple[nn.Module, nn.Module]:
    """G on the device in training mode, and its EMA (a copy made before
    activation recompute touches G's forwards)."""
    G = net.to(device).train()
    to_memory_format(G, memory_format)
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    if checkpointing:
        n = enable_checkpointing(G)
        if n == 0:
            notice(f"activation checkpointing has no blocks to work on in a {arch}; running without it")
    return G, ema


def build_losses(cfg: TrainConfig, device: torch.device, *, gan_stage: bool, allow_download: bool) -> Losses:
    """The pixel loss, and the perceptual one where the run has a stage for it."""
    from vhsup.train.losses import GANLoss, PerceptualLoss, pixel_loss

    pix = pixel_loss(cfg.pixel).to(device)
    perceptual = None
    if gan_stage and cfg.perceptual != "none" and cfg.perceptual_weight > 0:
        weights = Path(cfg.perceptual_weights) if cfg.perceptual_weights else None
        perceptual = PerceptualLoss(cfg.perceptual, weights, allow_download=allow_download).to(device)
    return Losses(pix=pix, perceptual=perceptual, gan=GANLoss())


def build_nets(
    G: nn.Module,
    ema: nn.Module,
    cfg: TrainConfig,
    device: torch.device,
    dist: Dist,
    *,
    gan_stage: bool,
    precision: str,
    memory_format: torch.memory_format,
) -> Nets:
    """D (seeded from the run's seed, without moving the global RNG), the
    optimisers and loss scalers, and the modules wrapped for DDP."""
    from vhsup.arch import build_discriminator

    D = None
    if gan_stage and cfg.gan and cfg.gan_weight > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "D"))
            D = build_discriminator(cfg.discriminator, num_feat=cfg.d_feat)
        D = D.to(device).train()
        to_memory_format(D, memory_format)
    sn_modules = [m for m in D.modules() if hasattr(m, "weight_u")] if D is not None else []
    betas: Any = tuple(cfg.betas)
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.learning_rate, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.learning_rate, betas=betas) if D is not None else None
    fp16 = precision == "fp16"
    scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
    scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
    return Nets(
        G=G,
        ema=ema,
        D=D,
        g_train=dist.wrap(G, device),
        d_train=dist.wrap(D, device) if D is not None else None,
        opt_g=opt_g,
        opt_d=opt_d,
        scaler_g=scaler_g,
        scaler_d=scaler_d,
        sn_modules=sn_modules,
    )
