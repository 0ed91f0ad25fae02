"""``vhsup eval report``: what the benchmark's results say, as tables and pictures.

Reads the results :mod:`vhsup.eval.run` stored and writes, into one
folder:

* ``report.md``: a table per clip and one over all clips, one row per
  configuration (PSNR-Y, SSIM-Y, HaarPSI, E_warp, flicker, tOF, fps);
  the overall row of a configuration averages its clip means over the
  clips it ran on (fps: all its frames over all its seconds). The
  baseline comes first; a row run with ``--with`` options
  (``compact-x4.temporal-auto.denoise-medium``) follows its plain row;
* ``<clip>-f<frame>-<kind>.png``: crop sheets, the truth beside the same
  region of every configuration's output (the baseline first), each tile
  labelled with its name and the region's PSNR-Y;
* ``<clip>-over-time.png``: per-frame PSNR-Y and per-pair flicker of each
  configuration over the clip (needs matplotlib, the ``eval`` extra; the
  report says so in one line when it is missing).

Results made on a clip that has since been rebuilt differently are left
out, and the report names them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vhsup.atomic import replacing
from vhsup.errors import VhsupError
from vhsup.eval.metrics import psnr_y
from vhsup.eval.run import BASELINE, RESULT_FORMAT, RESULTS, Benchmark, load_benchmark, value_text

Echo = Callable[[str], None]

#: (key in the scores' means or the result, column title, digits)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("psnr_y", "PSNR-Y dB", 2),
    ("ssim_y", "SSIM-Y", 4),
    ("haarpsi", "HaarPSI", 4),
    ("e_warp", "E_warp", 3),
    ("flicker", "flicker", 3),
    ("tof", "tOF px", 3),
    ("fps", "fps", 2),
)
_LABEL_H = 22  # the label band above each crop-sheet tile
_LINE_H = 16  # each further line of a label band
_GAP = 4


def _quiet(_: str) -> None:
    pass


def _f(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _cell(value: Any, digits: int) -> str:
    v = _f(value)
    return f"{v:.{digits}f}" if math.isfinite(v) else ("-" if math.isnan(v) else str(value))


def summary_line(result: dict[str, Any]) -> str:
    """One result in one line (``vhsup eval run`` without ``--json``)."""
    mean = result["scores"]["mean"]
    cells = "  ".join(f"{title} {_cell(mean.get(key, result.get(key)), d)}" for key, title, d in COLUMNS)
    return f"{result['clip']}  {result['config']}  {cells}"


# --------------------------------------------------------------------------
# Reading results.


def load_results(bench: Benchmark, results: Path) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Results per clip (in the index's order, baseline first), and the files left out with why."""
    import hashlib

    by_clip: dict[str, list[dict[str, Any]]] = {}
    skipped: list[str] = []
    for clip in bench.clips:
        folder = results / clip.name
        if not folder.is_dir():
            continue
        try:
            clip_id = hashlib.sha256(clip.sidecar.read_bytes()).hexdigest()[:16]
        except OSError:
            clip_id = None
        rows = []
        for path in sorted(folder.glob("*.json")):
            try:
                r = json.loads(path.read_text())
            except (OSError, ValueError):
                skipped.append(f"{path}: not readable JSON")
                continue
            if not isinstance(r, dict) or r.get("format") != RESULT_FORMAT:
                skipped.append(f"{path}: not a vhsup eval result")
                continue
            if r.get("clip_id") != clip_id:
                skipped.append(f"{path}: made on an earlier build of {clip.file}; run it again")
                continue
            r["_folder"] = folder
            rows.append(r)
        if rows:
            rows.sort(key=order)
            by_clip[clip.name] = rows
    return by_clip, skipped


def split_label(result: dict[str, Any]) -> tuple[str, str]:
    """A result's row name as (the plain row's, its ``--with`` options' or '')."""
    config = str(result["config"])
    suffix = str(result.get("options_label") or "")  # results of before --with have none
    if suffix and config.endswith("." + suffix):
        return config[: -len(suffix) - 1], suffix
    return config, ""


def order(result: dict[str, Any]) -> tuple[bool, str, str]:
    """Where a result's row goes: the baseline first, then by name, each ``--with`` row after its plain row."""
    base, suffix = split_label(result)
    return result.get("model") != BASELINE, base, suffix


def _row(r: dict[str, Any]) -> dict[str, Any]:
    mean = r["scores"]["mean"]
    row: dict[str, Any] = {"config": r["config"], "temporal_ran": r.get("temporal_ran"), "frames": r["frames"]}
    row["options"] = r.get("options") or {}
    for key, _, _ in COLUMNS:
        row[key] = _f(mean[key]) if key in mean else _f(r.get(key))
    return row


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def overall(by_clip: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per configuration: clip means averaged over its clips; flicker the ratio of the averaged
    E_warps; fps over all its frames and seconds."""
    gathered: dict[str, list[dict[str, Any]]] = {}
    for rows in by_clip.values():
        for r in rows:
            gathered.setdefault(r["config"], []).append(r)
    table = []
    for config, rs in sorted(gathered.items(), key=lambda item: order(item[1][0])):
        row: dict[str, Any] = {"config": config, "clips": len(rs), "frames": sum(int(r["frames"]) for r in rs)}
        row["options"] = rs[0].get("options") or {}
        for key, _, _ in COLUMNS:
            if key == "fps":
                seconds = sum(_f(r["seconds"]) for r in rs)
                row[key] = row["frames"] / seconds if seconds > 0 else math.nan
            else:
                row[key] = _mean([_f(r["scores"]["mean"][key]) for r in rs])
        # as for one clip: the ratio of the mean E_warps, not a mean of ratios (a still clip's would dominate)
        truth = _mean([_f(r["scores"]["mean"]["e_warp_truth"]) for r in rs])
        row["flicker"] = row["e_warp"] / truth if truth > 0 else math.nan
        table.append(row)
    return table


# --------------------------------------------------------------------------
# Pictures.


def _read_png(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _labelled(tile: np.ndarray, lines: Sequence[str], width: int) -> np.ndarray:
    """``tile`` under a white band holding ``lines`` of text (each cut to fit ``width``)."""
    h, w = tile.shape[:2]
    band = _LABEL_H + _LINE_H * (len(lines) - 1)
    out = np.full((band + h, width, 3), 255, np.uint8)
    out[band:, :w] = tile
    scale = 0.45
    for i, text in enumerate(lines):
        while len(text) > 3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 4:
            text = text[:-2] + "~"
        y = _LABEL_H - 7 + i * _LINE_H
        cv2.putText(out, text, (2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def crop_sheet(
    truth: np.ndarray, tiles: Sequence[tuple[str, np.ndarray]], notes: Sequence[str] | None = None
) -> np.ndarray:
    """The truth and each labelled output side by side, ``_GAP`` white pixels apart.

    Each tile is as big as the region (no resampling); the label band is
    ``_LABEL_H`` pixels tall above it. Output tiles are labelled with their
    name and their PSNR-Y against the truth. With ``notes`` (one per tile:
    its ``--with`` options, or ''), the band has a second line, ``_LINE_H``
    taller: the name on the first, the PSNR-Y and the note on the second.
    """
    h, w = truth.shape[:2]
    parts = [_labelled(truth, ["truth"] if notes is None else ["truth", ""], w)]
    for i, (name, rgb) in enumerate(tiles):
        p = psnr_y(rgb, truth)
        db = f"{p:.2f} dB" if math.isfinite(p) else ""
        if notes is None:
            lines = [f"{name} {db}" if db else name]
        else:
            lines = [name, " ".join(t for t in (db, notes[i]) if t)]
        parts.append(_labelled(rgb, lines, w))
    gap = np.full((parts[0].shape[0], _GAP, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for part in parts:
        row += [part, gap]
    return np.hstack(row[:-1])


def _sheets(clip: str, rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """One crop sheet per sample the results share (same frame and region)."""
    made = []
    seen: dict[tuple[int, str, tuple[int, ...]], dict[str, Any]] = {}
    for r in rows:
        for s in r.get("samples", []):
            seen.setdefault((int(s["frame"]), str(s["kind"]), tuple(s["box"])), s)
    for (frame, kind, box), sample in seen.items():
        truth = _read_png(rows[0]["_folder"] / sample["truth"])
        if truth is None:
            continue
        tiles, notes, configs = [], [], []
        for r in rows:
            match = [s for s in r.get("samples", []) if (s["frame"], s["kind"], tuple(s["box"])) == (frame, kind, box)]
            pic = _read_png(r["_folder"] / match[0]["output"]) if match else None
            if pic is not None and pic.shape == truth.shape:
                base, suffix = split_label(r)
                tiles.append((base, pic))
                given = r.get("options") or {}
                note = ", ".join(f"{k}={value_text(v)}" for k, v in given.items()) if given else suffix
                notes.append("with " + note if note else "")
                configs.append(r["config"])
        if not tiles:
            continue
        name = f"{clip}-f{frame:04d}-{kind.replace(' ', '-')}.png"
        if any(notes):  # two lines: the plain row's name, then the PSNR-Y and the options
            sheet = crop_sheet(truth, tiles, notes)
        else:
            sheet = crop_sheet(truth, [(c, pic) for c, (_, pic) in zip(configs, tiles)])
        with replacing(out / name, "crop sheet") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        made.append(
            {
                "file": name,
                "frame": frame,
                "kind": kind,
                "box": list(box),
                "motion": sample.get("motion"),
                "configs": configs,
            }
        )
    return made


def _plot(clip: str, rows: list[dict[str, Any]], out: Path) -> str:
    """Per-frame PSNR-Y and per-pair flicker of each configuration; the file name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, constrained_layout=True)
    for r in rows:
        per_frame = [_f(v) for v in r["scores"]["per_frame"]["psnr_y"]]
        flicker = [_f(v) for v in r["scores"]["per_pair"]["flicker"]]
        top.plot(range(len(per_frame)), per_frame, ".-", label=r["config"], linewidth=1.2)
        bottom.plot([t + 0.5 for t in range(len(flicker))], flicker, ".-", label=r["config"], linewidth=1.2)
    for cut in rows[0].get("cuts", []):
        for ax in (top, bottom):
            ax.axvline(cut - 0.5, color="black", linewidth=0.8, linestyle=":")
        top.annotate("cut", (cut - 0.5, 1.0), xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=7)
    bottom.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    top.set_ylabel("PSNR-Y (dB)")
    bottom.set_ylabel("flicker (E_warp / truth's)")
    bottom.set_xlabel("frame (flicker: between frame t and t+1)")
    top.set_title(clip)
    top.legend(fontsize=7)
    name = f"{clip}-over-time.png"
    with replacing(out / name, "plot") as tmp:
        fig.savefig(str(tmp), dpi=90, format="png")
    plt.close(fig)
    return name


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------
# The report.


def _table(rows: list[dict[str, Any]], first: tuple[str, ...]) -> list[str]:
    head = [*first, *(title for _, title, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row[k]) for k in first] + [_cell(row[k], d) for k, _, d in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    results: str | os.PathLike[str] | None = None,
    echo: Echo = _quiet,
) -> dict[str, Any]:
    """Write ``report.md`` and its pictures into ``out``; the tables as JSON-ready data."""
    bench = load_benchmark(folder)
    res = Path(results) if results is not None else bench.folder / RESULTS
    if not res.is_dir():
        raise VhsupError("no results yet; run vhsup eval run first", res)
    by_clip, skipped = load_results(bench, res)
    for line in skipped:
        echo(f"left out {line}")
    if not by_clip:
        raise VhsupError("no results for this benchmark's clips; run vhsup eval run first", res)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VhsupError("the report folder is a file", out)
    out.mkdir(parents=True, exist_ok=True)

    plots = _has_matplotlib()
    total = overall(by_clip)
    md = [
        "# vhsup eval report",
        "",
        f"Benchmark: `{bench.folder}` ({len(bench.clips)} clips of {bench.seconds:.2f} s, seed {bench.seed}). "
        "Scores against the ground truth, over the window each run scored, "
        "the model's scale in pixels left out at the edges. "
        "Higher is better for PSNR-Y, SSIM-Y and HaarPSI; flicker is the output's E_warp over the truth's "
        "(1.0 is as steady as the truth; inf where the truth does not move at all); lower is better for tOF.",
        "",
        "## Overall",
        "",
        "Each configuration's clip means averaged over the clips it ran on; flicker is the ratio of the "
        "averaged E_warps; fps over all its frames."
        + (
            " A row named `<row>.KEY-VALUE[+KEY-VALUE...]` is `<row>` run with `--with KEY=VALUE[,...]`."
            if any(row["options"] for row in total)
            else ""
        ),
        "",
        *_table(total, ("config", "clips", "frames")),
        "",
    ]
    if not plots:
        md += ["Plots over time left out: matplotlib is not installed (pip install 'vhsup[eval]').", ""]
    summary: dict[str, Any] = {
        "report": str(out / "report.md"),
        "benchmark": str(bench.folder),
        "overall": total,
        "clips": {},
        "skipped": skipped,
    }
    for clip, rows in by_clip.items():
        w = rows[0]["window"]
        md += [
            f"## {clip}",
            "",
            f"{rows[0]['file']}, window {w['width']}x{w['height']} SD samples at ({w['left']}, {w['top']}).",
            "",
            *_table([_row(r) for r in rows], ("config", "temporal_ran", "frames")),
            "",
        ]
        sheets = _sheets(clip, rows, out)
        for s in sheets:
            md += [f"Frame {s['frame']}, {s['kind']} region ({_cell(s['motion'], 2)} px per frame):", ""]
            md += [f"![{clip} frame {s['frame']} {s['kind']}]({s['file']})", ""]
        plot = _plot(clip, rows, out) if plots else None
        if plot:
            md += [f"![{clip} over time]({plot})", ""]
        summary["clips"][clip] = {"rows": [_row(r) for r in rows], "sheets": sheets, "plot": plot}
    if skipped:
        md += ["## Left out", "", *(f"- {line}" for line in skipped), ""]
    with replacing(out / "report.md", "report") as tmp:
        tmp.write_text("\n".join(md))
    echo(f"{out / 'report.md'}: written")
    return _json_ready(summary)


def _json_ready(value: Any) -> Any:
    """Non-finite floats as strings (as the results store them)."""
    from vhsup.eval.metrics import json_float

    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value
