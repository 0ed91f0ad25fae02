"""One line per user error, for every vhsup command and group.

Errors a user can cause arrive as :class:`VhsupError` and are printed as
``vhsup: error: <file>: <reason>`` with exit status 2; Ctrl-C gives one line
and 130, SIGTERM and SIGHUP (``timeout``, a closed terminal, systemd, ``docker
stop``) the same clean stop with 143 and 129 (:mod:`vhsup.signals`); anything
else (a bug, an FFmpeg surprise) still gives one line and 1. ``--debug``
shows the traceback instead. Subcommands use the same classes as the main
group so that they behave alike when run on their own (tests,
``python -m vhsup.train.cli``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click
from rich.console import Console

from vhsup import signals
from vhsup.atomic import CLI
from vhsup.errors import Interrupted, VhsupError

err = Console(stderr=True, highlight=False, soft_wrap=True)


def invoke_reporting(invoke: Callable[[click.Context], object], ctx: click.Context):
    """Run ``invoke(ctx)``, turning errors into one line and an exit status."""
    debug = "--debug" in sys.argv or bool(ctx.params.get("debug"))
    cli = CLI.set(True)  # errors name flags (--overwrite), not Python keywords
    try:
        with signals.interrupts():
            return invoke(ctx)
    except Interrupted as exc:
        _say(f"vhsup: {signals.reason_prefix()}{exc}")
        ctx.exit(signals.exit_status())
    except VhsupError as exc:
        if debug:
            raise
        err.print(f"vhsup: error: {exc}", markup=False)
        ctx.exit(2)
    except KeyboardInterrupt:
        _say(f"vhsup: {signals.reason_prefix()}interrupted")
        ctx.exit(signals.exit_status())
    except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug or an FFmpeg surprise: still one line
        if debug:
            raise
        err.print(
            f"vhsup: error: unexpected failure: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(run again with --debug for the traceback)",
            markup=False,
        )
        ctx.exit(1)
    finally:
        CLI.reset(cli)


def _say(line: str) -> None:
    try:
        err.print(line, markup=False)
    except OSError:  # after SIGHUP the terminal may be gone; the exit status still tells
        pass


class ReportingGroup(click.Group):
    group_class = type  # subgroups (``vhsup models``) report errors the same way

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Asking for nothing is asking for help: print it and succeed (click exits 2).
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        return invoke_reporting(super().invoke, ctx)


class ReportingCommand(click.Command):
    def invoke(self, ctx: click.Context):
        return invoke_reporting(super().invoke, ctx)
