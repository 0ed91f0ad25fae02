"""``vhsup eval build|run|report``: the VHS/DVD benchmark with ground truth.

    vhsup eval build --out bench-data/
    vhsup eval run bench-data/ --model compact-x4 --temporal off --temporal auto
    vhsup eval run bench-data/ --model compact-x4 --with deinterlace=bwdif --with 'denoise=medium,detail=0.5'
    vhsup eval report bench-data/ --out report/

Register with ``main.add_command(eval_group)`` in ``vhsup.cli``; it also works
on its own and turns user errors into one line (exit 2) itself. Progress
goes to stderr; with ``--json`` stdout holds one JSON document and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from vhsup.cli_errors import ReportingGroup
from vhsup.cli_params import debug_option
from vhsup.eval.scenes import SCENES, SECONDS
from vhsup.options import declared

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

_PATH = click.Path(path_type=Path)
_TEMPORAL = next(d for d in declared() if d.name == "temporal").opt.choices


def _say(message: str) -> None:
    err.print(f"vhsup: {message}", markup=False)


@click.group("eval", cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """A VHS/DVD benchmark with ground truth: build its clips, run models on them, report the scores."""


@eval_group.command("build")
@click.option("--out", "out_dir", type=_PATH, required=True, help="The benchmark folder to write.")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True, max=60),
    default=SECONDS,
    show_default=True,
    help="Length of each clip.",
)
@click.option(
    "--scene",
    "scenes",
    multiple=True,
    type=click.Choice(SCENES),
    help="Build only this scene (repeatable; default: all).",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(("vhs", "dvd")),
    help="Build only this variant: vhs (DV capture of a tape) or dvd (MPEG-2). Repeatable; default: both.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Camera paths, looks and noise.")
@click.option("--overwrite", is_flag=True, help="Replace a benchmark built with other settings.")
@click.option("--json", "as_json", is_flag=True, help="Print the benchmark's index as JSON.")
@debug_option
def build(out_dir: Path, seconds, scenes, variants, seed, overwrite, as_json, debug) -> None:
    """Write every scene x variant clip, its sidecar, and the index (benchmark.json) into --out.

    Deterministic: the same options give the same files. A rerun keeps the clips already made.
    """
    from vhsup.eval.run import build_benchmark

    bench = build_benchmark(
        out_dir,
        seconds=seconds,
        scenes=scenes or SCENES,
        variants=variants or None,
        seed=seed,
        overwrite=overwrite,
        echo=_say,
    )
    if as_json:
        out.print_json(json.dumps(bench.to_json()))
        return
    out.print(f"{bench.index}: {len(bench.clips)} clips of {bench.clips[0].frames} frames", markup=False)


@eval_group.command("run")
@click.argument("folder", type=_PATH)
@click.option("--model", "models", multiple=True, required=True, help="A model name or weights file (repeatable).")
@click.option(
    "--temporal",
    "temporals",
    multiple=True,
    type=click.Choice(_TEMPORAL),
    default=("auto",),
    show_default=True,
    help="Temporal stabiliser mode to run each model with (repeatable).",
)
@click.option(
    "--clip", "clips", multiple=True, help="Only clips whose name matches this glob, e.g. 'pan-*' (repeatable)."
)
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Score only the first N frames of each clip.")
@click.option(
    "--window",
    default="default",
    show_default=True,
    help="Region scored: default (each scene's action, 240x160 SD), full, or LEFT,TOP,WIDTH,HEIGHT in SD samples.",
)
@click.option(
    "--anchor",
    is_flag=True,
    help="Also run each model per frame followed by vs_temporalfix (needs make anchor-venv).",
)
@click.option(
    "--with",
    "option_sets",
    multiple=True,
    metavar="KEY=VALUE[,KEY=VALUE...]",
    help="Also run every row (bicubic's too) with these upscale options, e.g. deinterlace=bwdif, "
    "denoise=medium, chroma-shift=auto, detail=0.5: KEY an option of vhsup upscale (dashes or underscores), "
    "VALUE as its flag takes it. Repeatable: each --with is one more row per configuration.",
)
@click.option("--out", "results", type=_PATH, default=None, help="Results folder (default: FOLDER/results).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON list.")
@debug_option
def run(folder: Path, models, temporals, clips, frames, window, anchor, option_sets, results, as_json, debug) -> None:
    """Run each --model x --temporal configuration (and bicubic, the baseline) on the benchmark in FOLDER.

    Each output frame is scored against the clip's ground truth; results go
    to FOLDER/results/<clip>/<config>.json.

    \b
    Each --with adds one row per configuration, run with those options as
    well, named after them: --with 'denoise=medium,chroma-shift=auto' gives
    compact-x4.temporal-auto.denoise-medium+chroma_shift-auto. The options
    are checked, and planned on the first clip, before any clip runs.
    """
    from vhsup.eval.run import configs, parse_option_set, parse_window, run_benchmark

    choice = parse_window(window)
    sets = [parse_option_set(text) for text in option_sets]
    done = run_benchmark(
        folder,
        configs(models, temporals, anchor=anchor, option_sets=sets),
        clips=clips,
        window=choice,
        frames=frames,
        results=results,
        echo=_say,
    )
    if as_json:
        out.print_json(json.dumps(done, allow_nan=False))
        return
    from vhsup.eval.report import summary_line

    for r in done:
        out.print(summary_line(r), markup=False)


@eval_group.command("report")
@click.argument("folder", type=_PATH)
@click.option("--out", "report_dir", type=_PATH, required=True, help="Folder for report.md and its pictures.")
@click.option("--results", type=_PATH, default=None, help="Results folder (default: FOLDER/results).")
@click.option("--json", "as_json", is_flag=True, help="Print the tables as JSON.")
@debug_option
def report(folder: Path, report_dir: Path, results, as_json, debug) -> None:
    """Tables (markdown), crop sheets and plots over time from the results of vhsup eval run."""
    from vhsup.eval.report import write_report

    summary = write_report(folder, report_dir, results=results, echo=_say)
    if as_json:
        out.print_json(json.dumps(summary, allow_nan=False))
        return
    out.print(
        f"{summary['report']}: {len(summary['clips'])} clips, {len(summary['overall'])} configurations", markup=False
    )
