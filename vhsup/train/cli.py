"""``vhsup train``: fine-tune a generator on frames from your own footage.

    vhsup train --frames frames/ --model esrgan-x4 --out runs/goodeats
    vhsup train --resume runs/goodeats
    vhsup train --config runs/goodeats/config.toml --out runs/goodeats2
    vhsup train --frames frames/ --model compact-x4 --switched --out runs/sw
    torchrun --nproc-per-node 8 -m vhsup train --config x.toml --out runs/big

Every flag has a key in the TOML config (``vhsup.train.config.FIELDS``); a
flag that is given wins over the config file, which wins over the defaults.
Register with ``main.add_command(train)`` in ``vhsup.cli``; it also works on
its own and turns user errors into one line (exit 2) itself, which matters
under torchrun, where every process prints its own error.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from vhsup.cli_errors import ReportingCommand
from vhsup.errors import VhsupError

err = Console(stderr=True, highlight=False, soft_wrap=True)

_PATH = click.Path(path_type=Path)


def _milestones(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated steps like 50000,80000, got {value!r}") from None


def _options(f):
    opts = [
        click.option("--config", "config_path", type=_PATH, default=None, help="TOML file with any of the settings below."),
        click.option("--resume", "resume_dir", type=_PATH, default=None,
                     help="Continue the run in this folder from its newest checkpoint."),
        click.option("--out", type=_PATH, default=None, help="Run folder to create."),
        click.option("--frames", type=_PATH, default=None, help="Folder of HR frames (LR made on the fly)."),
        click.option("--lr", type=_PATH, default=None, help="Folder of LR frames (paired mode, with --hr)."),
        click.option("--hr", type=_PATH, default=None, help="Folder of HR frames with the LR frames' names."),
        click.option("--mode", type=click.Choice(["auto", "synthetic", "paired", "self"]), default=None,
                     help="self: your own low-quality frames are the targets, degraded further for inputs."),
        click.option("--model", default=None, help="Model name or weights file to start from."),
        click.option("--from-scratch", is_flag=True, default=None, help="Random initialisation, not pretrained weights."),
        click.option("--switched", is_flag=True, default=None,
                     help="Convert chosen convs of the starting model to switched convs, then train on."),
        click.option("--switched-breadth", type=int, default=None, help="Kernels per converted conv (default 8)."),
        click.option("--switched-layers", default=None, metavar="PATTERNS",
                     help="Comma-separated patterns over conv names, e.g. 'body.*' (default: the trunk's 3x3 convs)."),
        click.option("--steps", type=int, default=None, help="Optimiser steps in all (default 20000)."),
        click.option("--pixel-steps", type=int, default=None,
                     help="Pixel-loss steps before the GAN stage (default: 0 from pretrained weights, half from scratch)."),
        click.option("--batch", type=int, default=None, help="Patches per micro-batch per process (default 4)."),
        click.option("--accumulate", type=int, default=None, help="Micro-batches per optimiser step (default 1)."),
        click.option("--patch", type=int, default=None, help="HR patch size in pixels (default 256)."),
        click.option("--learning-rate", type=float, default=None, help="Adam learning rate (default 1e-4)."),
        click.option("--milestones", default=None, callback=_milestones, help="Steps where the learning rate halves, e.g. 50000,80000."),
        click.option("--ema", type=float, default=None, help="EMA decay of the generator (default 0.999)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None),
        click.option("--checkpointing/--no-checkpointing", default=None,
                     help="Recompute generator blocks in the backward pass (less memory, more compute)."),
        click.option("--channels-last/--no-channels-last", default=None),
        click.option("--clip-grad", type=float, default=None, help="Clip the generator's gradient norm (0 = off)."),
        click.option("--pixel-loss", "pixel", type=click.Choice(["l1", "charbonnier"]), default=None),
        click.option("--perceptual", type=click.Choice(["auto", "vgg19", "resnet18"]), default=None,
                     help="Perceptual backbone (auto: resnet18 for unet-x4, else vgg19)."),
        click.option("--no-perceptual", is_flag=True, default=None, help="No perceptual loss."),
        click.option("--perceptual-weights", type=_PATH, default=None, help="The backbone's torchvision weights file."),
        click.option("--no-gan", "gan", flag_value=False, default=None, help="No discriminator, no adversarial loss."),
        click.option("--discriminator", type=click.Choice(["auto", "unet", "srgan"]), default=None),
        click.option("--d-feat", type=int, default=None, help="Discriminator width (default 64)."),
        click.option("--tc-start", type=int, default=None, help="Step from which translational consistency is added (-1 = never)."),
        click.option("--tc-weight", type=float, default=None),
        click.option("--tc-shift", type=int, default=None, help="LR pixels between the two compared crops (default 8)."),
        click.option("--degradation", "preset", default=None, help="Degradation preset: vhs, dvd, generic, none."),
        click.option("--val-frames", type=_PATH, default=None, help="Held-out validation frames (default: 2% of --frames)."),
        click.option("--val-split", type=float, default=None,
                     help="Fraction of the frames held out for validation without --val-frames (default 0.02)."),
        click.option("--val-every", type=int, default=None, help="Validate every N steps (default 1000)."),
        click.option("--save-every", type=int, default=None, help="Checkpoint every N steps (default 1000)."),
        click.option("--keep", type=int, default=None, help="Checkpoints kept besides the best (default 3)."),
        click.option("--small", type=click.Choice(["error", "skip"]), default=None,
                     help="Frames smaller than the patch: stop with an error, or skip them."),
        click.option("--seed", type=int, default=None),
        click.option("--device", default=None, help="auto, cpu, cuda or cuda:N."),
        click.option("--show-degradations", type=int, default=None, metavar="N",
                     help="Write a PNG of N degraded/HR patch pairs and exit."),
        click.option("--download", "allow_download", is_flag=True, help="Allow fetching pretrained or backbone weights."),
        click.option("--quiet", is_flag=True, default=None, help="No progress display."),
        click.option("--debug", is_flag=True, help="Show tracebacks for errors."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.command("train", cls=ReportingCommand)
@_options
def train(config_path, resume_dir, show_degradations, allow_download, debug, no_perceptual, **flags) -> None:
    """Fine-tune a super-resolution model on your own frames."""
    from vhsup.train.config import load_config, resolve
    from vhsup.train.trainer import resume_config
    from vhsup.train.trainer import train as run_training

    if no_perceptual:
        flags["perceptual"] = "none"
    if resume_dir is not None:
        if config_path is not None:
            raise VhsupError("--resume continues a run with its own config; --config starts a new one: give one of them")
        if flags.get("out") is not None and Path(flags["out"]).resolve() != resume_dir.resolve():
            raise VhsupError("--resume writes into the run folder it continues; leave out --out")
        from vhsup.train.config import _check

        checked = {}
        for key, value in flags.items():
            if value is None:
                continue
            if key == "preset":
                checked[key] = value
                continue
            value = _check(key, value, "--" + key.replace("_", "-"), None)
            if key in ("frames", "lr", "hr", "val_frames", "perceptual_weights") and value:
                value = str(Path(value).expanduser().resolve())
            checked[key] = value
        cfg, checkpoint = resume_config(resume_dir, checked)
        run_training(cfg, resume=checkpoint, allow_download=allow_download)
        return
    file_values = load_config(config_path) if config_path is not None else None
    cfg = resolve(file_values, flags, config_path=config_path)
    if show_degradations is not None:
        _show(cfg, show_degradations)
        return
    run_training(cfg, allow_download=allow_download)


def _show(cfg, n: int) -> None:
    """Write the degradation preview grid for the config's frames and model."""
    from vhsup import registry
    from vhsup.train.data import list_images, read_rgb8
    from vhsup.train.degrade import load_spec, show_degradations

    if not cfg.frames:
        raise VhsupError("--show-degradations needs --frames DIR (the HR frames the degradations start from)")
    spec_name = cfg.model or registry.default_model(False)
    if spec_name in registry.model_names():
        scale = int(registry.card(spec_name)["scale"])
    else:
        scale = registry.load_model(spec_name).descriptor.scale
    files = list_images(cfg.frames)
    # Frames spread over the whole folder, not just its first few.
    picks = sorted({round(i * (len(files) - 1) / max(1, n - 1)) for i in range(min(n, len(files)))})
    frames = [read_rgb8(files[i]) for i in picks]
    out_dir = Path(cfg.out) if cfg.out else Path.cwd()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = load_spec("none", cfg.degradation)
    patch = min(cfg.patch, min(min(f.shape[:2]) for f in frames))
    path = show_degradations(frames, spec, scale, n, out_dir / "degradations.png", seed=cfg.seed, patch=patch)
    click.echo(str(path))


if __name__ == "__main__":  # python -m vhsup.train.cli (torchrun before the command is registered)
    train()
