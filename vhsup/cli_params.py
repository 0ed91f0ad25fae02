"""Option parsers shared by ``vhsup upscale`` and ``vhsup batch``."""

from __future__ import annotations

import click


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
    if n != "auto" and 0 < n < 16:
        raise click.BadParameter("a tile must be at least 16 px (or 0 for none)")
    return n


def batch(value: str) -> int | str:
    return auto_or_count(value, "a positive number of frames or tiles per pass")
