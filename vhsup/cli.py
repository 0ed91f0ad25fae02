"""The ``vhsup`` command line.

Errors a user can cause arrive as :class:`VhsupError` and are printed as one
line with a non-zero exit (vhsup/cli_errors.py); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vhsup import __version__, cli_params
from vhsup.cli_errors import ReportingGroup
from vhsup.errors import VhsupError
from vhsup.wording import aspect_label, plural

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
WORKERS_HELP = "Split the video at keyframes and upscale the chunks in this many processes (one GPU each)."


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="vhsup")
def main() -> None:
    """vhsup: upscale VHS captures and DVD rips with GAN super-resolution."""


_debug_option = cli_params.debug_option


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@cli_params.upscale_options("probe")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_debug_option
def probe(file: Path, as_json, debug, **options) -> None:
    """What vhsup sees in FILE and what it will do with it."""
    from vhsup.media.probe import probe as probe_file
    from vhsup.options import Options, model_name
    from vhsup.pipeline import make_plan
    from vhsup.registry import card, load_model

    info = probe_file(file)
    opts = Options(**options)
    name = model_name(opts)
    try:
        # A named model's card has its scale and cost: no need to load weights to plan.
        c = card(name)
        scale, macs, arch = c.scale, float(c.macs_per_px), c.arch
    except VhsupError:
        desc = load_model(name).descriptor  # a weights file, or bicubic-xN / lanczos-xN
        scale, macs, arch = desc.scale, desc.macs_per_px, desc.arch
    plan = make_plan(file, opts, scale=scale, model=name, info=info, classical=arch == "classical")
    estimate = _estimate_seconds(macs, plan)
    if as_json:
        data = info.to_json()
        data["plan"] = plan.to_json()
        data["plan"]["estimated_seconds"] = estimate
        out.print_json(json.dumps(data, default=str))
        return
    v = info.interlace
    telecined = {True: "yes", False: "no", None: "cannot tell"}[info.telecine.telecined]
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    frames = f"{info.frames} ({'exact' if info.frames_exact else 'estimated'})"
    rows = [
        ("file", info.path),
        ("container", info.container),
        ("video", f"{info.codec} {info.width}x{info.height} {info.pix_fmt}, {float(info.fps):.3f} fps ({info.fps})"),
        ("aspect", f"SAR {info.sar.numerator}:{info.sar.denominator}, DAR {aspect_label(info.dar)}"),
        ("colour", info.colour),
        (
            "fields",
            f"{'interlaced ' + v.field_order.upper() if v.interlaced else 'progressive'}  [{v.source}: {v.evidence}]",
        ),
        ("telecine", f"{telecined}  [{info.telecine.evidence}]"),
        ("duration", f"{info.duration:.3f} s" if info.duration else "unknown"),
        ("frames", frames),
    ]
    for a in info.audio:
        rows.append(
            (
                f"audio #{a.index}",
                f"{a.codec} {a.channels} ch {a.sample_rate} Hz" + (f" [{a.language}]" if a.language else ""),
            )
        )
    for s in info.subtitles:
        rows.append((f"subtitle #{s.index}", s.codec + (f" [{s.language}]" if s.language else "")))
    p = plan.to_json()
    rows += [
        ("plan: restore", _restore_row(plan.restore)),
        ("plan: composite", plan.composite.describe()),
        ("plan: fields", p["deinterlace"]),
        ("plan: crop", f"{p['crop']} ({p['crop_source']})"),
        ("plan: chroma shift", plan.chroma.describe()),
        ("plan: denoise", plan.denoise.describe()),
        ("plan: model", f"{name} x{plan.scale}" + _detail_note(plan.detail)),
        ("plan: temporal", _temporal_row(plan.temporal, opts.temporal)),
        (
            "plan: output",
            f"{p['output_size'][0]}x{p['output_size'][1]} SAR {p['output_sar']} (display {p['display_aspect']}), "
            f"{float(plan.filters.rate):.3f} fps, ~{plural(p['frames_out_estimate'], 'frame')}",
        ),
        ("plan: time", f"~{_fmt_time(estimate)} on {_device_name()}" if estimate else "unknown"),
    ]
    rows += [("plan: notice", message) for message in plan.notices]
    for k, val in rows:
        t.add_row(escape(k), escape(val))
    out.print(t)


def _restore_row(preset: str) -> str:
    """The --restore preset, and that the rows after it are its stages in the order they run."""
    if preset == "off":
        return "off (stages below as their own flags say, in the order they run)"
    return f"{preset} (the stages below, in the order they run, with the flags given winning)"


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def _estimate_seconds(macs_per_px: float, plan) -> float | None:
    """Time from the model's MACs and a rough device throughput (measured in bench/RESULTS.md)."""
    import torch

    if not macs_per_px:
        return None
    g = plan.geometry
    macs = macs_per_px * g.in_w * g.in_h * plan.frames_estimate
    if torch.cuda.is_available():
        rate = 20e12  # effective MAC/s of a modern GPU on these convs in bf16 (a rough figure)
    else:
        # compact-x4 (0.21 TMAC per 720x480 frame) runs ~5 s a frame on 2 cores: ~45 GMAC/s.
        rate = 45e9 * max(1, torch.get_num_threads()) / 2
    return round(macs / rate, 1)


def _detail_note(detail: float) -> str:
    return "" if detail == 1 else f", detail {detail:g} (blended with a Lanczos upscale)"


def _temporal_row(mode: str, asked: str) -> str:
    """probe's line for the stabiliser: the mode that runs, and why when ``auto`` chose it."""
    if mode == "off":
        return "off" + ("  [auto: a classical resampler invents no texture to steady]" if asked == "auto" else "")
    return f"on ({mode})" + ("  [auto: on for a model that invents texture]" if asked == "auto" else "")


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Output file; container from the extension (default: <input>.<model>.mkv).",
)
@cli_params.upscale_options("upscale")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help=WORKERS_HELP)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary at the end.")
@_debug_option
def upscale(file: Path, output, quiet, as_json, debug, workers, **options) -> None:
    """Upscale FILE: deinterlace, super-resolve, re-encode with all audio and subtitles."""
    from vhsup.pipeline import upscale_video

    if workers > 1:
        from functools import partial

        from vhsup.chunked import upscale_chunked

        upscale_video = partial(upscale_chunked, workers=workers)  # noqa: F811 - same call, in chunks

    show = not quiet and not as_json and err.is_terminal

    def notice(msg: str) -> None:
        if not as_json:
            err.print(f"vhsup: {msg}", markup=False)

    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("[bold]upscaling"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]} fps"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("upscale", total=None, fps="-")
            clock: dict[str, float | None] = {"t0": None}

            def progress(done: int, total: int) -> None:
                import time

                if clock["t0"] is None:
                    clock["t0"] = time.perf_counter()
                    rate = "-"
                else:
                    dt = time.perf_counter() - clock["t0"]
                    rate = f"{(done - 1) / dt:.2f}" if dt > 0 else "-"
                # The estimate may be short (no frame count in the container): never let the bar overflow.
                bar.update(task, completed=done, total=max(total, done) if total else None, fps=rate)

            result = upscale_video(file, output, notice=notice, progress=progress, **options)
    else:
        result = upscale_video(file, output, notice=notice, **options)
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    if not quiet:
        out.print(
            f"{result.output}: {plural(result.frames_out, 'frame')} {result.width}x{result.height} "
            f"(display {result.display_aspect}) with {result.model} on {result.device}, "
            f"{result.fps_out} fps, {result.audio_streams} audio / {result.subtitle_streams} subtitle "
            f"{'stream' if result.audio_streams + result.subtitle_streams == 1 else 'streams'} kept",
            markup=False,
        )
        if result.compare:
            out.print(f"side-by-side still: {result.compare}", markup=False)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@cli_params.upscale_options("bench")
@click.option("--frames", type=click.IntRange(min=1), default=8, show_default=True, help="Frames to time.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_debug_option
def bench(file: Path, as_json, debug, **options) -> None:
    """Model-only vs end-to-end fps on FILE, and peak memory."""
    from vhsup.bench import run_bench

    result = run_bench(file, **options)
    if as_json:
        out.print_json(json.dumps(result))
        return
    for k, v in result.items():
        out.print(f"{k:>22}: {v}", markup=False)


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--model", default=None)
@_debug_option
def demo(out_dir: Path, model, debug) -> None:
    """Build a short VHS-like sample (offline) and upscale it."""
    from vhsup.demo import run_demo

    run_demo(out_dir, model=model, echo=lambda m: out.print(m, markup=False))


@main.group()
def models() -> None:
    """Named models and their weights."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json: bool) -> None:
    """The named models, their cost and where their weights stand."""
    from vhsup.model_info import describe
    from vhsup.registry import model_names

    rows = [describe(name) for name in model_names()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table("name", "arch", "scale", "params", "MMAC/px", "weights", "licence")
    t.columns[0].no_wrap = True
    for r in rows:
        macs = f"{r['macs_per_px'] / 1e6:.2f}" if r["macs_per_px"] else "-"
        licence = str(r["licence"] or "").split(" (")[0]  # the card's note in brackets is for `info`
        t.add_row(r["name"], str(r["arch"]), str(r["scale"]), f"{r['params']:,}", macs, r["weights"], escape(licence))
    # Piped output has no terminal width; rich would squeeze the table into 80 columns and clip the numbers.
    console = out if out.is_terminal else Console(highlight=False, width=200)
    console.print(t)
    from vhsup.weights import community

    console.print(f"Model files (--model PATH): {community.status()}", markup=False)


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def models_info(name: str, as_json: bool) -> None:
    """Everything vhsup knows about the model NAME (a model name or a weights file)."""
    from vhsup.model_info import describe

    info = describe(name)
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for key, value in info.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            value = "\n".join(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        t.add_row(key, escape(str(value)))
    out.print(t)


@models.command("export")
@click.argument("name")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option("--no-check", is_flag=True, help="Skip onnx.checker and the comparison with torch.")
@click.option("--overwrite", is_flag=True)
@click.option("--download", "allow_download", is_flag=True, help="Allow fetching weights from the release URL.")
@click.option("--json", "as_json", is_flag=True)
@_debug_option
def models_export(name, output: Path, precision, opset, no_check, overwrite, allow_download, as_json, debug) -> None:
    """Export NAME (a model name or weights file) to ONNX with dynamic batch, height and width."""
    from vhsup.atomic import check_output
    from vhsup.export import export_onnx
    from vhsup.registry import load_model

    source = Path(name) if Path(name).suffix else None
    check_output(output, what="ONNX file", inputs=[source] if source else [], overwrite=overwrite)
    report = export_onnx(
        load_model(name, allow_download=allow_download), output, precision=precision, opset=opset, check=not no_check
    )
    if as_json:
        out.print_json(json.dumps(report.as_dict(), default=str))
        return
    err_txt = f"; max |onnx - torch| = {report.max_abs_error:.2e}" if report.max_abs_error is not None else ""
    out.print(
        f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, {report.precision}, opset {report.opset}, "
        f"x{report.scale}){err_txt}",
        markup=False,
    )


@models.command("selector-map")
@click.argument("picture", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="A switched model: a weights file, or a model name (with --untrained for a random one).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The PNG to write.")
@click.option(
    "--untrained",
    is_flag=True,
    help="Map a freshly initialised instance of the named model (e.g. switched-x4, which has no weights).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random initialisation for --untrained.")
@click.option(
    "--max-side",
    type=click.IntRange(min=16),
    default=512,
    show_default=True,
    help="Shrink larger pictures to this many pixels on the longer side first.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--json", "as_json", is_flag=True)
@_debug_option
def models_selector_map(
    picture: Path,
    model_spec: str,
    output: Path,
    untrained: bool,
    seed: int,
    max_side: int,
    overwrite: bool,
    as_json: bool,
    debug: bool,
) -> None:
    """Colour-map which kernel each switched conv of a model picks on PICTURE (PNG, JPEG, ...).

    One panel per switched layer, beside the input, with a legend of the kernel colours.
    """
    from vhsup import registry
    from vhsup.atomic import check_output
    from vhsup.preview import check_still_name
    from vhsup.selector_map import read_picture, write_selector_map

    inputs = [picture] + ([Path(model_spec)] if Path(model_spec).suffix else [])
    check_output(check_still_name(output), inputs=inputs, overwrite=overwrite)
    rgb = read_picture(picture)
    if untrained:
        if model_spec not in registry.model_names():
            raise VhsupError(
                f"--untrained needs a model name ({', '.join(registry.model_names())}), not {model_spec!r}"
            )
        loaded = registry.build_model(model_spec, seed=seed)
    else:
        try:
            loaded = registry.load_model(model_spec)
        except VhsupError as exc:
            if model_spec in registry.model_names() and not registry.has_pretrained_weights(model_spec):
                raise VhsupError(
                    f"{exc.reason}; or pass --untrained to map a randomly initialised one", exc.path
                ) from None
            raise
    try:
        result = write_selector_map(
            output, loaded.module, rgb, size_multiple=loaded.descriptor.size_multiple, max_side=max_side
        )
    except VhsupError as exc:
        if exc.path is None:
            raise VhsupError(f"{loaded.descriptor.name}: {exc.reason}", model_spec if not untrained else None) from None
        raise
    rows: list[dict[str, Any]] = [
        {
            "layer": m.name,
            "breadth": m.breadth,
            "height": int(m.index.shape[0]),
            "width": int(m.index.shape[1]),
            "kernels_used": m.used,
            "usage": [round(float(u), 4) for u in m.usage],
        }
        for m in result.layers
    ]
    if as_json:
        out.print_json(json.dumps({"output": str(output), "model": loaded.descriptor.name, "layers": rows}))
        return
    shrunk = f" (picture shrunk from {result.shrunk_from[1]}x{result.shrunk_from[0]})" if result.shrunk_from else ""
    out.print(f"wrote {output}: {len(rows)} switched layers of {loaded.descriptor.name}{shrunk}", markup=False)
    for r in rows:
        share = " ".join(f"{u:.0%}" for u in r["usage"])
        out.print(f"  {r['layer']}: {r['kernels_used']}/{r['breadth']} kernels used; shares {share}", markup=False)


def _register_subcommands() -> None:
    from vhsup.batch.cli import batch
    from vhsup.eval.cli import eval_group
    from vhsup.train.cli import train
    from vhsup.train.cli_extract import extract

    main.add_command(batch)
    main.add_command(eval_group)
    main.add_command(extract)
    main.add_command(train)


_register_subcommands()
