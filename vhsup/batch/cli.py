"""``vhsup batch SRC --out OUT [options]`` and ``vhsup batch status OUT``.

``batch`` is a click group whose first argument is either the ``status``
subcommand or the source folder of a run: anything that is not a
subcommand name is routed to the hidden ``run`` command. (A source folder
literally called ``status`` is reached as ``./status``.)

Register it with ``main.add_command(batch)`` in ``vhsup.cli``. It also works
on its own: it turns user errors into one line (exit 2) itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vhsup import cli_params, signals
from vhsup.batch.runner import Reporter
from vhsup.cli_errors import ReportingGroup
from vhsup.wording import plural

err = Console(stderr=True, highlight=False, soft_wrap=True)
RETRIES_HELP = "Later runs retry a failed file until it has failed this many extra times."
out = Console(highlight=False, soft_wrap=True)


class BatchGroup(ReportingGroup):
    """``batch SRC ...`` runs; ``batch status OUT`` reports."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "SRC --out OUT [OPTIONS]  |  status OUT [--json]")

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # `vhsup batch --help` shows the run's options: that is what people come for.
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        run = self.commands["run"]
        run.format_options(click.Context(run, info_name="run", parent=ctx), formatter)
        self.format_commands(ctx, formatter)


@click.group(cls=BatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
def batch() -> None:
    """Upscale every video under a folder into OUT, mirroring its layout; resumable.

    A rerun skips finished files, redoes changed inputs or settings and
    retries failed ones. Exit status: 0 all done, 3 some failed, 130 interrupted
    (143 by SIGTERM, 129 by SIGHUP).
    """


def _jobs(value: str) -> int | None:
    n = cli_params.auto_or_count(value, "a number of worker processes")
    return n if isinstance(n, int) else None  # auto_or_count gives a str only for "auto"


class _Live(Reporter):
    """Progress for a run: on a terminal an overall bar plus one bar per active job; everywhere
    one line per finished job (printed above the bars), so a log of the run remains."""

    def __init__(self, show_bars: bool, show_lines: bool):
        self.show_bars, self.show_lines = show_bars, show_lines
        self.bar = None
        self.tasks: dict[str, int] = {}
        self.clock: dict[str, tuple[float, int]] = {}

    def __enter__(self):
        if self.show_bars:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self.bar.start()
            self.overall = self.bar.add_task("[bold]batch", total=None, info="")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False

    def _print(self, text: str) -> None:
        (self.bar.console if self.bar is not None else err).print(text, markup=False)

    # Reporter hooks
    def planned(self, total: int, to_run: int) -> None:
        if self.bar is not None:
            self.bar.update(self.overall, total=to_run, info=f"{total - to_run} skipped")
        if self.show_lines:
            self._print(f"vhsup batch: {plural(total, 'video')}, {to_run} to do, {total - to_run} skipped")

    def started(self, key: str, worker: str) -> None:
        if self.bar is not None:
            self.tasks[key] = self.bar.add_task(f"  {escape(key)}", total=None, info="starting")

    def progress(self, key: str, done: int, total: int) -> None:
        now = time.monotonic()
        first = self.clock.setdefault(key, (now, done))
        rate = (done - first[1]) / (now - first[0]) if now > first[0] else 0.0
        if self.bar is not None and key in self.tasks:
            self.bar.update(
                self.tasks[key],
                completed=done,
                total=max(total, done) if total else None,
                info=f"{rate:.2f} fps" if rate else "",
            )

    def finished(self, rep) -> None:
        if self.bar is not None:
            if rep.input in self.tasks:
                self.bar.remove_task(self.tasks.pop(rep.input))
            self.bar.advance(self.overall)
        if self.show_lines:
            if rep.state == "done":
                fps = f", {rep.fps:.2f} fps" if rep.fps else ""
                self._print(f"done   {rep.input} ({rep.seconds:.1f} s{fps})")
            else:
                self._print(f"{rep.state:<6} {rep.input}: {rep.error or ''}")

    def notice(self, message: str) -> None:
        if self.show_lines:
            self._print(f"vhsup: {message}")


@batch.command("run", hidden=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder; the source layout is mirrored under it.",
)
@cli_params.upscale_options("batch")
@click.option(
    "--ext", type=click.Choice(["mkv", "mp4", "mov"]), default="mkv", show_default=True, help="Output container."
)
@click.option(
    "--jobs",
    "-j",
    default="auto",
    show_default=True,
    callback=lambda c, p, v: _jobs(v),
    help="Local worker processes (auto: one per GPU, else 1).",
)
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True, help=RETRIES_HELP)
@click.option("--include", multiple=True, help="Only paths matching this glob (relative to SRC; repeatable).")
@click.option("--exclude", multiple=True, help="Skip paths (files or folders) matching this glob (repeatable).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (auto or host:port; default: start a local Ray).")
@click.option(
    "--gpus-per-task", type=float, default=None, help="Ray GPUs per job (default 1 when the cluster has GPUs, else 0)."
)
@click.option("--cpus-per-task", type=float, default=1.0, show_default=True, help="Ray CPUs per job.")
@click.option(
    "--chunk-minutes",
    type=float,
    default=None,
    help="Split long videos into chunks of about this many minutes (needs chunked upscaling).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing files in OUT that this batch did not write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary at the end.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; only the summary.")
@cli_params.debug_option
def run_cmd(
    src: Path,
    out_dir: Path,
    ext,
    jobs,
    retries,
    include,
    exclude,
    engine,
    address,
    gpus_per_task,
    cpus_per_task,
    chunk_minutes,
    overwrite,
    as_json,
    quiet,
    debug,
    **options,
) -> None:
    """Upscale every video under SRC into OUT."""
    from vhsup.batch.runner import BatchConfig, run_batch

    if chunk_minutes is not None:
        import importlib.util

        if importlib.util.find_spec("vhsup.chunked") is None:
            raise click.BadParameter("chunked upscaling is not available in this vhsup", param_hint="--chunk-minutes")
    config = BatchConfig(
        src=src,
        out=out_dir,
        options=options,
        ext=ext,
        jobs=jobs,
        retries=retries,
        include=include,
        exclude=exclude,
        engine=engine,
        address=address,
        gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task,
        chunk_minutes=chunk_minutes,
        overwrite=overwrite,
    )
    talk = not quiet and not as_json
    live = _Live(show_bars=talk and err.is_terminal, show_lines=talk)
    with live:
        summary = run_batch(config, reporter=live)
    if as_json:
        out.print_json(json.dumps(summary.to_json()))
    else:
        _print_summary(summary, quiet)
    ctx = click.get_current_context()
    ctx.exit(summary.exit_status)


def _print_summary(summary, quiet: bool) -> None:
    c = summary.counts()
    parts = [f"{c['done']} done"]
    if c["skipped"]:
        parts[0] += f" ({c['skipped']} skipped)"
    for state in ("failed", "interrupted", "pending"):
        if c[state]:
            parts.append(f"{c[state]} {state}")
    line = f"vhsup batch: {plural(c['total'], 'video')}: {', '.join(parts)} in {summary.seconds:.1f} s"
    if summary.interrupted:
        by = f" by {signals.name(summary.stop_signal)}" if summary.stop_signal else ""
        line += f" - interrupted{by}; run the same command again to continue"
    out.print(line, markup=False)
    for j in summary.jobs:
        if j.state == "failed":
            out.print(f"  failed: {j.input}: {j.error}", markup=False)
        elif j.state == "interrupted" and not quiet:
            out.print(f"  interrupted: {j.input}", markup=False)


def status_rows(out_dir: Path) -> tuple[list[dict], bool]:
    """Manifest rows for display; `running` rows of a dead run are shown as interrupted."""
    from vhsup.batch.manifest import Manifest, lock_is_held

    m = Manifest.read(out_dir)
    try:
        jobs = m.jobs()
    finally:
        m.close()
    live = lock_is_held(out_dir)
    rows = []
    for j in jobs:
        d = j.to_json()
        if j.state == "running" and not live:
            d["state"] = "interrupted"
            d["error"] = d["error"] or "the run that started it is gone"
        d["output"] = str(Path(out_dir).resolve() / j.output)  # absolute, as in ``batch --json``
        d["input_exists"] = Path(j.source).exists()
        d["output_exists"] = Path(d["output"]).exists()
        rows.append(d)
    return rows, live


@batch.command("status")
@click.argument("out_dir", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@cli_params.debug_option
def status_cmd(out_dir: Path, as_json: bool, debug: bool) -> None:
    """What the batch writing into OUT has done: per file state, reason, time and speed."""
    rows, live = status_rows(out_dir)
    counts = {s: 0 for s in ("done", "failed", "pending", "running", "interrupted")}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    if as_json:
        keys = (
            "input",
            "source",
            "state",
            "error",
            "attempts",
            "seconds",
            "frames",
            "fps",
            "output",
            "model",
            "worker",
            "finished",
            "input_exists",
            "output_exists",
        )
        out.print_json(
            json.dumps(
                {
                    "out": str(out_dir.resolve()),
                    "running_now": live,
                    "counts": {"total": len(rows), **counts},
                    "jobs": [{k: r[k] for k in keys} for r in rows],
                }
            )
        )
        return
    styles = {"done": "green", "failed": "red", "running": "cyan", "interrupted": "yellow", "pending": "dim"}
    t = Table("input", "state", "seconds", "fps", "tries", "reason / note")
    t.columns[0].overflow = "fold"
    for r in rows:
        note = r["error"] if r["state"] in ("failed", "interrupted") else ""
        if not r["input_exists"]:
            note = (note + "; " if note else "") + "input no longer there"
        elif r["state"] == "done" and not r["output_exists"]:
            note = "output missing: the next run redoes it"
        t.add_row(
            escape(r["input"]),
            f"[{styles.get(r['state'], '')}]{r['state']}",
            f"{r['seconds']:.1f}" if r["seconds"] is not None and r["state"] != "pending" else "-",
            f"{r['fps']:.2f}" if r["fps"] else "-",
            str(r["attempts"]),
            escape(note or ""),
        )
    out.print(t)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.print(
        f"{plural(len(rows), 'job')}: {summary or 'none'}" + (" (a run is in progress)" if live else ""), markup=False
    )
