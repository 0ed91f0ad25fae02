"""Click options built from the declarations in vhsup/options.py, and their parsers.

``upscale``, ``batch``, ``probe``, ``bench`` and ``extract`` take their
upscale options from :func:`upscale_options`, so a flag, its default, help
and choices are written once, in :class:`vhsup.options.Options`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vhsup.options import Declared, declared

F = TypeVar("F", bound=Callable[..., Any])


def auto_or_count(value: str, what: str, least: int = 1) -> int | str:
    """'auto' or an integer of at least ``least``."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"auto or {what}") from None
    if n < least:
        raise click.BadParameter(f"auto or {what} (at least {least})")
    return n


def tile(value: str) -> int | str:
    n = auto_or_count(value, "0 (no tiling) or a tile size in pixels", least=0)
    if isinstance(n, int) and 0 < n < 16:
        raise click.BadParameter("a tile must be at least 16 px (or 0 for none)")
    return n


def batch(value: str) -> int | str:
    return auto_or_count(value, "a positive number of frames or tiles per pass")


_TYPES: dict[str, Any] = {"int": int, "float": float, "path": click.Path(path_type=Path)}
_PARSERS: dict[str, Callable[[str], int | str]] = {"tile": tile, "count": batch}


def _click_option(d: Declared, command: str) -> Callable[[F], F]:
    opt = d.opt
    flag = opt.flag or "--" + d.name.replace("_", "-")
    kwargs: dict[str, Any] = {
        "default": d.default,
        "help": opt.help_in(command) or None,
        "show_default": d.default not in (None, False),
    }
    if opt.kind == "flag":
        kwargs["is_flag"] = True
        if d.default is False:
            del kwargs["default"]  # off unless given, as click's flags are
    elif opt.kind == "choice":
        kwargs["type"] = click.Choice(opt.choices)
    elif opt.kind in _TYPES:
        kwargs["type"] = _TYPES[opt.kind]
    elif opt.kind in _PARSERS:
        parse = _PARSERS[opt.kind]
        kwargs["callback"] = lambda ctx, param, value: parse(value)
    return click.option(flag, d.name, **kwargs)


def parse_value(d: Declared, text: str) -> Any:
    """``text`` read as the option's flag reads its value (a flag's: true/false, yes/no, on/off, 1/0).

    Raises click.BadParameter as the flag would. ``vhsup eval run --with KEY=VALUE`` reads its values here.
    """
    kind = d.opt.kind
    if kind == "flag":
        return click.BOOL.convert(text, None, None)
    if kind == "choice":
        return click.Choice(d.opt.choices).convert(text, None, None)
    if kind in _TYPES:
        return click.types.convert_type(_TYPES[kind]).convert(text, None, None)
    if kind in _PARSERS:
        return _PARSERS[kind](text)
    return text


def upscale_options(command: str) -> Callable[[F], F]:
    """A decorator adding the flags of every upscale option ``command`` offers, in declaration order."""
    options = [_click_option(d, command) for d in declared(command)]

    def add(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return add


def debug_option(f: F) -> F:
    return click.option("--debug", is_flag=True, help="Show tracebacks for errors.")(f)
