"""``vhsup train``: fine-tune a generator on frames from your own footage.

    vhsup train --frames frames/ --model esrgan-x4 --out runs/goodeats
    vhsup train --resume runs/goodeats
    vhsup train --config runs/goodeats/config.toml --out runs/goodeats2
    vhsup train --frames frames/ --model compact-x4 --switched --out runs/sw
    torchrun --nproc-per-node 8 -m vhsup train --config x.toml --out runs/big

The settings' flags are built from their declarations in
``vhsup.train.config.FIELDS`` (type, default, help, choices): each has a key
in the TOML config. A flag that is given wins over the config file, which
wins over the defaults.
Register with ``main.add_command(train)`` in ``vhsup.cli``; it also works on
its own and turns user errors into one line (exit 2) itself, which matters
under torchrun, where every process prints its own error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from vhsup.cli_errors import ReportingCommand
from vhsup.errors import VhsupError
from vhsup.train.config import FIELDS

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True, highlight=False, soft_wrap=True)

_PATH = click.Path(path_type=Path)


def _milestones(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated steps like 50000,80000, got {value!r}") from None


_TYPES = {"int": int, "float": float, "path": _PATH}


def _config_option(key: str, **override: Any) -> Callable[[F], F]:
    """The flag of config key ``key``, built from its declaration in FIELDS.

    Its default is None (not given), so that a config file's value, or else
    the declared default, applies; the help shows the declared default.
    ``override`` holds click arguments where the flag differs from the key:
    its spelling (``flag``), a parser, fewer choices.
    """
    f = FIELDS[key]
    flag = override.pop("flag", "--" + key.replace("_", "-"))
    kwargs: dict[str, Any] = {"default": None}
    shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
    if f.kind == "bool":
        if "/" in flag:  # --checkpointing/--no-checkpointing: the default is one of the two
            shown = flag.split("/")[0 if f.default else 1].lstrip("-")
        else:  # --quiet (True when given) or --no-gan (False when given)
            kwargs.update(is_flag=True, flag_value=not flag.startswith("--no-"))
            shown = ""
    elif f.kind == "choice":
        kwargs["type"] = click.Choice(f.choices)
    elif f.kind in _TYPES:
        kwargs["type"] = _TYPES[f.kind]
    if f.default in ("", []):
        shown = ""  # the help says what an unset value means
    kwargs["help"] = _sentence(override.pop("help", f.help)) + (f"  [default: {shown}]" if shown else "")
    kwargs.update(override)
    return click.option(flag, key, **kwargs)


def _sentence(text: str) -> str:
    """A FIELDS help as a help line: capitalised, unless it opens with a value ('auto: ...'), and full-stopped."""
    opens_with_value = re.match(r"[\w-]+( =|[:,])", text)
    text = text if opens_with_value else text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _config_options(*keys: str) -> list[Callable[[F], F]]:
    return [_config_option(k) for k in keys]


def _options(f: F) -> F:
    opts = [
        click.option(
            "--config", "config_path", type=_PATH, default=None, help="TOML file with any of the settings below."
        ),
        click.option(
            "--resume",
            "resume_dir",
            type=_PATH,
            default=None,
            help="Continue the run in this folder from its newest checkpoint.",
        ),
        *_config_options("out", "frames", "lr", "hr", "mode", "model", "from_scratch", "switched", "switched_breadth"),
        _config_option("switched_layers", metavar="PATTERNS"),
        *_config_options("steps", "pixel_steps", "batch", "accumulate", "patch", "learning_rate"),
        _config_option("milestones", callback=_milestones),
        *_config_options("ema", "precision"),
        _config_option("checkpointing", flag="--checkpointing/--no-checkpointing"),
        _config_option("channels_last", flag="--channels-last/--no-channels-last"),
        _config_option("clip_grad"),
        _config_option("pixel", flag="--pixel-loss"),
        _config_option("perceptual", type=click.Choice([c for c in FIELDS["perceptual"].choices if c != "none"])),
        click.option("--no-perceptual", is_flag=True, default=None, help="No perceptual loss."),
        _config_option("perceptual_weights"),
        _config_option("gan", flag="--no-gan", help="No discriminator, no adversarial loss."),
        *_config_options("discriminator", "d_feat", "tc_start", "tc_weight", "tc_shift"),
        click.option("--degradation", "preset", default=None, help="Degradation preset: vhs, dvd, generic, none."),
        *_config_options("val_frames", "val_split", "val_every", "save_every", "keep", "small", "seed", "device"),
        click.option(
            "--show-degradations",
            type=int,
            default=None,
            metavar="N",
            help="Write a PNG of N degraded/HR patch pairs and exit.",
        ),
        click.option(
            "--download", "allow_download", is_flag=True, help="Allow fetching pretrained or backbone weights."
        ),
        _config_option("quiet"),
        click.option("--debug", is_flag=True, help="Show tracebacks for errors."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.command("train", cls=ReportingCommand)
@_options
def train(config_path, resume_dir, show_degradations, allow_download, debug, no_perceptual, **flags) -> None:
    """Fine-tune a super-resolution model on your own frames."""
    from vhsup.train.config import check_flags, load_config, resolve
    from vhsup.train.trainer import resume_config
    from vhsup.train.trainer import train as run_training

    if no_perceptual:
        flags["perceptual"] = "none"
    if resume_dir is not None:
        if config_path is not None:
            raise VhsupError(
                "--resume continues a run with its own config; --config starts a new one: give one of them"
            )
        if flags.get("out") is not None and Path(flags["out"]).resolve() != resume_dir.resolve():
            raise VhsupError("--resume writes into the run folder it continues; leave out --out")
        cfg, checkpoint = resume_config(resume_dir, check_flags(flags))
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
        scale = registry.card(spec_name).scale
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
