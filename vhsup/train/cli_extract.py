"""``vhsup extract FILES... --out DIR``: training frames from the user's own videos.

Register it with ``main.add_command(extract)`` in ``vhsup.cli``. It also
works on its own: it turns user errors into one line (exit 2) itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from vhsup import cli_params
from vhsup.cli_errors import ReportingCommand
from vhsup.wording import plural

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@click.command(cls=ReportingCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the PNGs and manifest.jsonl (created if missing).",
)
@click.option(
    "--count",
    type=int,
    default=None,
    help="Frames in all, shared by the files in proportion to their durations (default 1000).",
)
@click.option("--every", type=float, default=None, help="Instead of --count: one frame per this many seconds.")
@click.option(
    "--min-gap",
    type=float,
    default=0.5,
    show_default=True,
    help="Never two frames from one file closer than this many seconds.",
)
@cli_params.upscale_options("extract")
@click.option(
    "--keep-sar", is_flag=True, help="Keep the source's pixel shape (default: resample the width to square pixels)."
)
@click.option(
    "--append", is_flag=True, help="The folder has frames: add more, numbered after them, skipping near-duplicates."
)
@click.option("--overwrite", is_flag=True, help="The folder has frames: delete them and start again.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary at the end.")
@cli_params.debug_option
def extract(
    files, out_dir, count, every, min_gap, keep_sar, append, overwrite, quiet, as_json, debug, **media_options
) -> None:
    """Pick diverse frames from FILES for training: deinterlaced, cropped, square pixels, 8-bit PNG.

    Frames are spread over each file, favour new scenes, and skip black or
    flat pictures and near-duplicates. A manifest.jsonl beside them records
    each frame's source file and time.
    """
    from vhsup.train.extract import extract_frames

    def notice(msg: str) -> None:
        if not as_json and not quiet:
            err.print(f"vhsup: {msg}", markup=False)

    kwargs = dict(
        count=count,
        every=every,
        min_gap=min_gap,
        keep_sar=keep_sar,
        append=append,
        overwrite=overwrite,
        **media_options,
    )
    show = not quiet and not as_json and err.is_terminal
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task("scanning" if phase == "scan" else "writing", total=total)
                bar.update(tasks[phase], completed=done, total=max(total, done))

            report = extract_frames(list(files), out_dir, notice=notice, progress=progress, **kwargs)
    else:
        report = extract_frames(list(files), out_dir, notice=notice, **kwargs)
    if as_json:
        out.print_json(json.dumps(report.to_json()))
        return
    if not quiet:
        per = ", ".join(f"{Path(k).name} {v}" for k, v in report.per_source.items())
        out.print(
            f"{report.out}: {plural(report.frames, 'frame')} written ({per}); "
            f"{plural(report.skipped_duplicate, 'near-duplicate')} and {plural(report.skipped_flat, 'black/flat candidate')} skipped; manifest {report.manifest}",
            markup=False,
        )
