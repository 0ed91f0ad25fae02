"""``vhsup eval build | run | report`` on a tiny real benchmark (CI size).

Two scenes, four frames each, as a VHS (DV) and a DVD (MPEG-2) clip; bicubic
and compact-x4 run on a 64x48 SD window through the command line, as a user
runs them. The truth is rendered for that window only, which the first test
checks against the whole frame.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vhsup import upscaled_frames
from vhsup.cli import main
from vhsup.eval.metrics import ClipScorer, psnr_y
from vhsup.eval.scenes import FRAME_RATE, WINDOWS, make_scene

WINDOW = (300, 100, 64, 48)  # SD samples: the face then the rocket in 'cut', hair and forehead in 'talking_head'
FRAMES = 4
SCENES = ("cut", "talking_head")
CLIPS = ("cut-vhs", "cut-dvd", "talking_head-vhs", "talking_head-dvd")
CONFIGS = ("bicubic.temporal-off", "compact-x4.temporal-off")


def cli(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def one_line_error(args: list, expected: str) -> None:
    code, out, err = cli(*args)
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.strip().splitlines() == [f"vhsup: error: {expected}"]


def read_png(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def truth_window(scene: str, dx: int = 0, dy: int = 0):
    """The x4 truth of ``WINDOW``, built here from the scene catalogue (moved by dx, dy truth pixels)."""
    x, y, w, h = WINDOW
    full = make_scene(scene, seconds=FRAMES / FRAME_RATE, seed=0)
    return full.windowed(4 * x + dx, 4 * y + dy, 4 * w, 4 * h)


# --------------------------------------------------------------------------
# The truth of a window.


@pytest.mark.parametrize("name", ["occlusion", "rotate", "pan"])
def test_a_window_of_the_truth_is_the_crop_of_the_whole_frame(name):
    scene = make_scene(name, size=(240, 160), seconds=0.3)
    x, y, w, h = 37, 22, 120, 90
    win = scene.windowed(x, y, w, h)
    assert win.size == (w, h) and win.frames == scene.frames
    hidden_by_the_edge = 0
    for n in (0, scene.frames // 2, scene.frames - 2):
        full, part = scene.frame(n)[y : y + h, x : x + w].astype(int), win.frame(n).astype(int)
        # the same picture: warpAffine's 1/32-pixel positions differ by rounding at a few pixels
        assert np.abs(full - part).max() <= 1
        assert (full != part).mean() < 0.01
        mf, mw = scene.pair(n), win.pair(n)
        np.testing.assert_allclose(mw.flow, mf.flow[y : y + h, x : x + w], atol=1e-4)
        # visible in the window: visible in the whole frame, and seen inside the earlier window frame
        qx = mw.flow[..., 0] + np.arange(w)[None]
        qy = mw.flow[..., 1] + np.arange(h)[:, None]
        inside = (qx >= 2) & (qx <= w - 3) & (qy >= 2) & (qy <= h - 3)
        assert np.array_equal(mw.visible, mf.visible[y : y + h, x : x + w] & inside)
        hidden_by_the_edge += int((mf.visible[y : y + h, x : x + w] & ~inside).sum())
    assert hidden_by_the_edge > 0  # content that came in over the window's edge was not scored as seen


# --------------------------------------------------------------------------
# A benchmark through the command line.


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval") / "bench"
    scenes = [a for s in SCENES for a in ("--scene", s)]
    code, out, err = cli("eval", "build", "--out", folder, "--seconds", "0.15", *scenes)
    assert code == 0, err
    assert "benchmark.json: 4 clips of 4 frames" in out
    return folder


@pytest.fixture(scope="module")
def ran(bench) -> list[dict]:
    window = ",".join(map(str, WINDOW))
    code, out, err = cli(
        "eval", "run", bench, "--model", "compact-x4", "--temporal", "off", "--window", window, "--json"
    )
    assert code == 0, err
    return json.loads(out)  # stdout holds the JSON and nothing else


def test_build_indexes_every_clip_and_keeps_a_finished_benchmark(bench, tmp_path):
    index = json.loads((bench / "benchmark.json").read_text())
    assert [c["file"] for c in index["clips"]] == [
        "cut-vhs.avi",
        "cut-dvd.mpg",
        "talking_head-vhs.avi",
        "talking_head-dvd.mpg",
    ]
    for c in index["clips"]:
        side = json.loads((bench / c["sidecar"]).read_text())
        assert (side["file"], side["frames"], side["scene"]["scene"]) == (c["file"], FRAMES, c["scene"])
    before = {p.name: p.stat().st_mtime_ns for p in bench.iterdir()}
    code, _, err = cli(
        "eval", "build", "--out", bench, "--seconds", "0.15", "--scene", "cut", "--scene", "talking_head"
    )
    assert code == 0 and "up to date" in err
    assert {p.name: p.stat().st_mtime_ns for p in bench.iterdir()} == before
    # another benchmark is not written over it ...
    one_line_error(
        ["eval", "build", "--out", bench, "--seconds", "0.15", "--seed", "1"],
        f"{bench / 'benchmark.json'}: holds a different benchmark (0.133467 s, seed 0); "
        "pass --overwrite to replace it, or choose another folder",
    )
    # ... and the same options give the same bytes anywhere
    code, _, err = cli(
        "eval", "build", "--out", tmp_path / "again", "--seconds", "0.15", "--scene", "cut", "--variant", "dvd"
    )
    assert code == 0, err
    assert (tmp_path / "again" / "cut-dvd.mpg").read_bytes() == (bench / "cut-dvd.mpg").read_bytes()


def test_run_gives_a_row_per_clip_and_configuration_with_bicubic_as_baseline(bench, ran):
    assert [(r["clip"], r["config"]) for r in ran] == [(c, k) for c in CLIPS for k in CONFIGS]
    for r in ran:
        assert (r["frames"], r["scale"], r["temporal"], r["temporal_ran"]) == (FRAMES, 4, "off", "off")
        assert r["window"] == dict(zip(("left", "top", "width", "height"), WINDOW))
        assert r["fps"] > 0 and r["scores"]["frames"] == FRAMES
        assert len(r["scores"]["per_pair"]["flicker"]) == FRAMES - 1
        stored = json.loads((bench / "results" / r["clip"] / f"{r['config']}.json").read_text())
        assert stored == r
    # the cut falls between frames 1 and 2: nothing is visible across it
    cut = next(r for r in ran if r["clip"] == "cut-dvd")
    assert cut["cuts"] == [2] and cut["scores"]["per_pair"]["e_warp"][1] == "nan"
    assert any(s["kind"] == "after cut" and s["frame"] == 2 for s in cut["samples"])


def test_scores_are_those_of_the_same_frames_scored_directly(ran, bench):
    crop = "300,100,356,332"  # WINDOW as vhsup's --crop L,T,R,B
    frames = [
        p.rgb
        for p in upscaled_frames(
            bench / "talking_head-dvd.mpg", model="compact-x4", temporal="off", crop=crop, frames=FRAMES
        )
    ]
    truth = truth_window("talking_head")
    scorer = ClipScorer("talking_head-dvd", border=4)
    for n, out in enumerate(frames):
        motion = truth.pair(n - 1) if n else None
        scorer.add(out, truth.frame(n), *((motion.flow, motion.visible) if motion else ()))
    r = next(r for r in ran if (r["clip"], r["config"]) == ("talking_head-dvd", "compact-x4.temporal-off"))
    assert r["scores"] == json.loads(scorer.scores().to_json())
    # The crops kept for the report are the truth window and the output, pixel for pixel.
    folder = bench / "results" / "talking_head-dvd"
    assert r["samples"]
    for s in r["samples"]:
        x, y, w, h = s["box"]
        assert np.array_equal(read_png(folder / s["truth"]), truth.frame(s["frame"])[y : y + h, x : x + w])
        assert np.array_equal(read_png(folder / s["output"]), frames[s["frame"]][y : y + h, x : x + w])


def test_window_alignment_is_exact(bench, ran):
    """Output pixel (x, y) is truth pixel (x + 4 L, y + 4 T): the run scores bicubic's frames against
    that truth, and the same frames two pixels off in any direction score clearly worse."""
    crop = "300,100,356,332"
    frames = [p.rgb for p in upscaled_frames(bench / "talking_head-dvd.mpg", model="bicubic", crop=crop, frames=FRAMES)]

    def psnr(dx: int, dy: int) -> float:
        truth = truth_window("talking_head", dx, dy)
        return float(np.mean([psnr_y(out, truth.frame(n), border=4) for n, out in enumerate(frames)]))

    r = next(r for r in ran if (r["clip"], r["config"]) == ("talking_head-dvd", "bicubic.temporal-off"))
    scored = float(r["scores"]["mean"]["psnr_y"])
    assert scored == pytest.approx(psnr(0, 0), abs=1e-9)
    for dx, dy in ((2, 0), (-2, 0), (0, 2), (0, -2)):
        assert scored > psnr(dx, dy) + 2.0, (dx, dy)
    for dx, dy in ((1, 0), (0, 1)):  # the peak is at no shift, not beside it
        assert scored > psnr(dx, dy) + 0.3, (dx, dy)


def test_rerunning_a_configuration_replaces_its_result(bench, ran):
    code, out, err = cli(
        "eval",
        "run",
        bench,
        "--model",
        "bicubic",
        "--clip",
        "talking_head-d*",
        "--frames",
        "2",
        "--window",
        "300,100,64,48",
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("talking_head-dvd  bicubic.temporal-off  PSNR-Y dB ")
    folder = bench / "results" / "talking_head-dvd"
    stored = json.loads((folder / "bicubic.temporal-off.json").read_text())
    assert stored["frames"] == 2 and stored["scores"]["frames"] == 2
    assert not [p for p in folder.rglob("*") if ".part" in p.name]
    for s in stored["samples"]:
        assert (folder / s["output"]).is_file()
    # put the four-frame result back for the report
    code, _, err = cli(
        "eval", "run", bench, "--model", "bicubic", "--clip", "talking_head-d*", "--window", "300,100,64,48"
    )
    assert code == 0, err


def test_report_tables_sheets_and_plots(bench, ran, tmp_path):
    code, out, err = cli("eval", "report", bench, "--out", tmp_path / "report", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert list(summary["clips"]) == list(CLIPS)
    assert [row["config"] for row in summary["overall"]] == list(CONFIGS)
    assert all(row["clips"] == 4 and row["frames"] == 4 * FRAMES for row in summary["overall"])
    by_run = {(r["clip"], r["config"]): r for r in ran}
    for clip, part in summary["clips"].items():
        assert [row["config"] for row in part["rows"]] == list(CONFIGS)
        for row in part["rows"]:
            mean = by_run[(clip, row["config"])]["scores"]["mean"]
            assert row["psnr_y"] == pytest.approx(float(mean["psnr_y"]))
            assert str(row["flicker"]) == str(mean["flicker"]) or row["flicker"] == pytest.approx(
                float(mean["flicker"])
            )
        assert (tmp_path / "report" / part["plot"]).is_file()
        for sheet in part["sheets"]:
            assert sheet["configs"] == list(CONFIGS)
            x, y, w, h = sheet["box"]
            img = read_png(tmp_path / "report" / sheet["file"])
            assert img.shape == (22 + h, 3 * w + 2 * 4, 3)
            truth = truth_window(clip.rsplit("-", 1)[0]).frame(sheet["frame"])[y : y + h, x : x + w]
            assert np.array_equal(img[22:, :w], truth)  # the first tile is the truth window, unresampled
    md = (tmp_path / "report" / "report.md").read_text()
    for clip in CLIPS:
        assert f"## {clip}" in md and f"]({clip}-over-time.png)" in md
    assert md.count("| bicubic.temporal-off |") == 5 and md.count("| compact-x4.temporal-off |") == 5


def test_default_window_is_the_scenes_action_and_keeps_the_frame_after_the_cut(bench, tmp_path):
    code, out, err = cli("eval", "run", bench, "--model", "bicubic", "--clip", "cut-dvd", "--out", tmp_path, "--json")
    assert code == 0, err
    (r,) = json.loads(out)
    assert tuple(r["window"].values()) == WINDOWS["cut"]
    kinds = {(s["frame"], s["kind"]) for s in r["samples"]}
    assert (2, "after cut") in kinds and (2, "moving") in kinds
    side = 64 * 4  # sample regions are 64 SD samples square
    assert all(s["box"][2:] == [side, side] for s in r["samples"])


def test_errors_are_one_line_naming_the_file(bench, tmp_path):
    one_line_error(
        ["eval", "run", tmp_path, "--model", "bicubic"],
        f"{tmp_path}: not a benchmark folder (no benchmark.json); make one with vhsup eval build --out DIR",
    )
    copy = tmp_path / "copy"
    shutil.copytree(bench, copy, ignore=shutil.ignore_patterns("results"))
    (copy / "talking_head-vhs.json").unlink()
    one_line_error(
        ["eval", "run", copy, "--model", "bicubic"],
        f"{copy / 'talking_head-vhs.json'}: the clip's sidecar is missing; rebuild it with vhsup eval build",
    )
    one_line_error(
        ["eval", "run", bench, "--model", "bicubic", "--clip", "nothing*"],
        f"{bench}: no clip matches --clip nothing*; the clips are {', '.join(CLIPS)}",
    )
    code, out, err = cli("eval", "run", copy, "--model", "no-such-model", "--clip", "cut-dvd")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("vhsup: error: unknown model 'no-such-model'")
    assert not (copy / "results").exists()  # refused before any work
    one_line_error(
        ["eval", "run", bench, "--model", "bicubic", "--window", "700,0,64,48"],
        "--window 700,0,64,48 does not fit in the 720x480 frame",
    )


# --------------------------------------------------------------------------
# The rows the benchmark exists for: the stabiliser, and the anchor beside it.


def _rows(out: str) -> dict[tuple[str, str], dict]:
    return {(r["clip"], r["config"]): r for r in json.loads(out)}


def test_the_stabiliser_row_steadies_the_model_per_frame(bench):
    window = ",".join(map(str, WINDOW))
    code, out, err = cli(
        "eval", "run", bench, "--model", "compact-x4", "--temporal", "off", "--temporal", "auto",
        "--clip", "talking_head-*", "--window", window, "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = _rows(out)
    for clip in ("talking_head-vhs", "talking_head-dvd"):
        off, auto = rows[clip, "compact-x4.temporal-off"], rows[clip, "compact-x4.temporal-auto"]
        assert (off["temporal_ran"], auto["temporal_ran"]) == ("off", "auto")
        assert auto["frames"] == off["frames"] == FRAMES
        e_off, e_auto = off["scores"]["mean"]["e_warp"], auto["scores"]["mean"]["e_warp"]
        assert e_auto < 0.75 * e_off, (clip, e_off, e_auto)
        assert auto["scores"]["per_frame"]["psnr_y"][0] == off["scores"]["per_frame"]["psnr_y"][0]  # nothing before


def test_anchor_row_or_a_one_line_reason(bench, monkeypatch):
    from vhsup.eval import anchor

    window = ",".join(map(str, WINDOW))
    args = ["eval", "run", bench, "--model", "compact-x4", "--temporal", "off", "--anchor"]
    args += ["--clip", "talking_head-dvd", "--window", window]
    monkeypatch.setenv("VHSUP_ANCHOR_VENV", str(bench / "no-venv"))
    one_line_error(
        args,
        f"--anchor: vs_temporalfix cannot run: the anchor venv {bench / 'no-venv'} is missing: "
        "build it with `make anchor-venv`",
    )
    monkeypatch.delenv("VHSUP_ANCHOR_VENV")
    reason = anchor.available()
    if reason is not None:
        pytest.skip(f"the anchor cannot run here: {reason}")
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    rows = _rows(out)
    fixed = rows["talking_head-dvd", "compact-x4.temporal-off.vs-temporalfix"]
    assert fixed["anchor"] == "vs-temporalfix" and fixed["frames"] == FRAMES
    per_frame = rows["talking_head-dvd", "compact-x4.temporal-off"]
    assert fixed["scores"]["mean"]["e_warp"] < per_frame["scores"]["mean"]["e_warp"]


# --------------------------------------------------------------------------
# --with: the pipeline's other options as rows of their own.


def test_with_option_sets_parse_and_name_their_rows():
    from dataclasses import fields

    from vhsup.eval.run import OWNED, Config, configs, options_label, parse_option_set, with_options
    from vhsup.options import Options

    both = parse_option_set("chroma-shift=-3.5,0, detail=0.5")  # a comma inside a value stays in it
    assert both == (("chroma_shift", "-3.5,0"), ("detail", 0.5))
    assert options_label(both) == "chroma_shift--3.5,0+detail-0.5"
    assert parse_option_set("tile=auto") == (("tile", "auto"),) and parse_option_set("tile=64") == (("tile", 64),)
    # the keys are Options' own, less those the run sets itself: an option added there works here
    assert with_options() == [f.name for f in fields(Options) if f.name not in OWNED]
    assert {"deinterlace", "chroma_shift", "detail"} <= set(with_options())
    # a row without options keeps its name; each option set follows its plain row, the baseline's too
    rows = configs(["compact-x4"], ["auto"], option_sets=[(("detail", 0.0),), (("detail", 0.0),)])
    assert [c.label for c in rows] == [
        "bicubic.temporal-off",
        "bicubic.temporal-off.detail-0",
        "compact-x4.temporal-auto",
        "compact-x4.temporal-auto.detail-0",
    ]
    assert Config("weights/my.pth", "off", "vs-temporalfix").label == "my.temporal-off.vs-temporalfix"


def test_with_rows_run_the_pipeline_with_the_options_and_report_beside_their_plain_rows(bench, ran, tmp_path):
    """detail=0 is a Lanczos upscale whatever the model: compact-x4's row then scores as bicubic's
    detail=0 row, frame for frame, and not as compact-x4's plain row; the plain rows are as without --with."""
    window = ",".join(map(str, WINDOW))
    code, out, err = cli(
        "eval", "run", bench, "--model", "compact-x4", "--temporal", "off", "--with", "detail=0",
        "--clip", "talking_head-dvd", "--window", window, "--out", tmp_path / "results", "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = _rows(out)
    clip = "talking_head-dvd"
    labels = ["bicubic.temporal-off", "bicubic.temporal-off.detail-0"]
    labels += ["compact-x4.temporal-off", "compact-x4.temporal-off.detail-0"]
    assert [k for _, k in rows] == labels
    earlier = {(r["clip"], r["config"]): r for r in ran}
    for plain in CONFIGS:
        assert rows[clip, plain]["scores"] == earlier[clip, plain]["scores"]
        assert (rows[clip, plain]["options"], rows[clip, plain]["options_label"]) == ({}, "")
    lanczos, model = rows[clip, "compact-x4.temporal-off.detail-0"], rows[clip, "compact-x4.temporal-off"]
    assert (lanczos["options"], lanczos["options_label"]) == ({"detail": 0.0}, "detail-0")
    assert lanczos["scores"] == rows[clip, "bicubic.temporal-off.detail-0"]["scores"]
    assert abs(lanczos["scores"]["mean"]["psnr_y"] - model["scores"]["mean"]["psnr_y"]) > 0.5
    folder = tmp_path / "results" / clip
    stored = json.loads((folder / "compact-x4.temporal-off.detail-0.json").read_text())
    assert stored == lanczos
    assert all((folder / s["output"]).is_file() and "detail-0-f" in s["output"] for s in stored["samples"])

    # A result of before --with (no options recorded) still loads, in its place.
    old = folder / "compact-x4.temporal-off.json"
    record = json.loads(old.read_text())
    del record["options"], record["options_label"]
    old.write_text(json.dumps(record))
    report = tmp_path / "report"
    code, out, err = cli("eval", "report", bench, "--results", tmp_path / "results", "--out", report, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert [row["config"] for row in summary["overall"]] == labels
    assert [row["config"] for row in summary["clips"][clip]["rows"]] == labels
    assert summary["overall"][3]["psnr_y"] == pytest.approx(lanczos["scores"]["mean"]["psnr_y"])
    assert summary["overall"][3]["options"] == {"detail": 0.0}
    for sheet in summary["clips"][clip]["sheets"]:
        assert sheet["configs"] == labels
        x, y, w, h = sheet["box"]
        img = read_png(report / sheet["file"])
        assert img.shape == (22 + 16 + h, 5 * w + 4 * 4, 3)  # a second line in the labels: the options
        truth = truth_window("talking_head").frame(sheet["frame"])[y : y + h, x : x + w]
        assert np.array_equal(img[38:, :w], truth)
    md = (report / "report.md").read_text()
    assert md.count("| compact-x4.temporal-off.detail-0 |") == 2 and md.count("| compact-x4.temporal-off |") == 2


def test_with_deinterlacers_give_rows_of_their_own(bench, tmp_path):
    """The baseline alone, after two deinterlacers: bicubic after bwdif is not bicubic on the woven frames."""
    window = ",".join(map(str, WINDOW))
    code, out, err = cli(
        "eval", "run", bench, "--model", "bicubic", "--with", "deinterlace=bwdif", "--with", "deinterlace=off",
        "--clip", "talking_head-vhs", "--window", window, "--out", tmp_path, "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = _rows(out)
    assert [k for _, k in rows] == [
        "bicubic.temporal-off",
        "bicubic.temporal-off.deinterlace-bwdif",
        "bicubic.temporal-off.deinterlace-off",
    ]
    bwdif, woven = (
        rows["talking_head-vhs", "bicubic.temporal-off.deinterlace-bwdif"],
        rows["talking_head-vhs", "bicubic.temporal-off.deinterlace-off"],
    )
    assert (bwdif["options"], woven["options"]) == ({"deinterlace": "bwdif"}, {"deinterlace": "off"})
    assert bwdif["scores"]["per_frame"]["psnr_y"] != woven["scores"]["per_frame"]["psnr_y"]
    assert abs(bwdif["scores"]["mean"]["psnr_y"] - woven["scores"]["mean"]["psnr_y"]) > 0.1


def test_with_errors_are_one_line_and_come_before_any_clip_runs(bench, tmp_path):
    from vhsup.eval.run import with_options

    allowed = ", ".join(n.replace("_", "-") for n in with_options())
    base = ["eval", "run", bench, "--model", "bicubic", "--clip", "talking_head-dvd", "--out", tmp_path / "r"]
    one_line_error([*base, "--with", "sharpen=2"], f"--with: unknown option 'sharpen'; --with takes {allowed}")
    one_line_error(
        [*base, "--with", "detail=0.5,temporal=off"],
        f"--with temporal: the eval run sets it (--temporal); --with takes {allowed}",
    )
    one_line_error(
        [*base, "--with", "frames=2"], f"--with frames: the eval run sets it (--frames); --with takes {allowed}"
    )
    one_line_error([*base, "--with", "detail=much"], "--with detail=much: 'much' is not a valid float.")
    one_line_error(
        [*base, "--with", "deinterlace=yadif"],
        "--with deinterlace=yadif: 'yadif' is not one of 'auto', 'on', 'off', 'qtgmc', 'bwdif'.",
    )
    one_line_error([*base, "--with", "detail"], "--with takes KEY=VALUE[,KEY=VALUE...], not 'detail'")
    # a value only the pipeline refuses is found by planning it, before the first row runs
    one_line_error(
        [*base, "--with", "detail=0.5", "--with", "detail=2"],
        "--with detail=2: --detail must be between 0 and 1 (0: Lanczos, 1: the model), not 2.0",
    )
    one_line_error(
        [*base, "--with", "chroma-shift=left"],
        "--with chroma-shift=left: --chroma-shift must be auto, off or X,Y pixels (e.g. -3.5,0), not 'left'",
    )
    assert not (tmp_path / "r").exists()
