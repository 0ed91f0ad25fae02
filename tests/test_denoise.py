"""--denoise and --restore: temporal denoise before SR on real clips, and the preset that fills the chain in.

This file runs in the main venv, where the restore extra cannot be
installed (VapourSynth needs Python 3.12): there ``--denoise`` runs FFmpeg's
atadenoise with a notice. MVTools' degrain is tested in
tests/test_restore.py, in the extras venv.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import mediagen
from vhsup import upscale_video
from vhsup.chunked import upscale_chunked
from vhsup.cli import main
from vhsup.errors import VhsupError
from vhsup.media.decode import decode_from, open_input
from vhsup.media.filters import frame_time
from vhsup.pipeline import upscaled_frames
from vhsup.restore import vs as bridge
from vhsup.restore.denoise import Denoise, denoise_frames

SIZE = (128, 96)
SIGMA = 4.0  # codes of grain: tape luma noise


@pytest.fixture(scope="module")
def grain(clips):
    """The same moving picture twice, losslessly: with fresh grain in every frame, and clean (the truth)."""
    noisy = clips.make("grain.mkv", vcodec="ffv1", size=SIZE, frames=16, picture=mediagen.grainy_render(*SIZE, SIGMA))
    clean = clips.make("clean.mkv", vcodec="ffv1", size=SIZE, frames=16, picture=mediagen.grainy_render(*SIZE, 0))
    return noisy, clean


def _pictures(path, **options):
    return [(p.time, p.rgb.astype(np.float32)) for p in upscaled_frames(path, model="bicubic-x1", **options)]


def _error(frames, truth) -> float:
    return float(np.mean([np.abs(a - t).mean() for (_, a), (_, t) in zip(frames, truth)]))


def _flicker(frames) -> float:
    """Mean change from frame to frame over the still part of the picture (the bars band)."""
    rows = slice(int(0.75 * SIZE[1]), SIZE[1])
    return float(np.mean([np.abs(b[rows] - a[rows]).mean() for (_, a), (_, b) in zip(frames, frames[1:])]))


@pytest.mark.parametrize("level", ["light", "medium", "strong"])
def test_atadenoise_takes_grain_out_and_keeps_every_frame_time(grain, level):
    noisy, clean = grain
    truth = _pictures(clean.path)
    with open_input(noisy.path) as c:
        source = [frame_time(f) for f in decode_from(c, None)]
    with open_input(noisy.path) as c:
        s = c.streams.video[0]
        out = list(
            denoise_frames(
                decode_from(c, None), Denoise(level, "atadenoise"), sar=s.sample_aspect_ratio, rate=s.average_rate
            )
        )
    assert [frame_time(f) for f in out] == source
    assert {(f.width, f.height) for f in out} == {SIZE}
    before = _pictures(noisy.path, denoise="off")
    after = _pictures(noisy.path, denoise=level)
    assert [t for t, _ in after] == [t for t, _ in before] == [t for t, _ in truth]
    # nearer the clean picture, and steadier where it is still
    assert _error(after, truth) < 0.85 * _error(before, truth)
    assert _flicker(after) < 0.7 * _flicker(before)


def test_stronger_levels_remove_more_on_a_still_picture(grain):
    noisy, clean = grain
    truth = _pictures(clean.path)
    errors = [_error(_pictures(noisy.path, denoise=level), truth) for level in ("off", "light", "medium", "strong")]
    assert errors == sorted(errors, reverse=True), errors


@pytest.mark.skipif(bridge.check() is None, reason="the restore extra works here: tests/test_restore.py covers MVTools")
def test_without_the_extra_it_says_so_and_runs_atadenoise(grain, tmp_path):
    noisy, _ = grain
    r = upscale_video(noisy.path, tmp_path / "out.mkv", model="bicubic-x2", denoise="medium", codec="ffv1")
    assert r.denoise == "medium (atadenoise)"
    assert r.frames_out == noisy.frames
    (notice,) = [n for n in r.notices if "--denoise" in n]
    assert "atadenoise" in notice and "pip install 'vhsup[restore]'" in notice and "\n" not in notice


def test_a_level_that_does_not_exist_is_one_line(grain):
    with pytest.raises(VhsupError, match="--denoise must be one of off, light, medium, strong, not 'loud'"):
        next(upscaled_frames(grain[0].path, model="bicubic-x1", denoise="loud"))


def _plan(path, *flags) -> dict:
    r = CliRunner().invoke(main, ["probe", str(path), "--model", "bicubic-x2", "--json", *flags])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["plan"]


def test_restore_vhs_fills_in_the_chain_and_flags_given_win(clips):
    tape = clips.make("tape.avi", vcodec="dvvideo", frames=8)  # DV: 720x480 4:1:1, bottom field first
    plain = _plan(tape.path)
    assert (plain["restore"], plain["denoise"]["level"], plain["chroma_shift"]["source"]) == ("off", "off", "off")
    vhs = _plan(tape.path, "--restore", "vhs")
    assert vhs["restore"] == "vhs"
    assert vhs["denoise"]["level"] == "medium" and vhs["denoise"]["radius"] >= 2
    assert vhs["chroma_shift"]["source"] == "auto"
    assert vhs["deinterlace"].startswith(("qtgmc", "bwdif"))
    mine = _plan(tape.path, "--restore", "vhs", "--denoise", "off", "--chroma-shift", "off")
    assert mine["denoise"]["level"] == "off" and mine["chroma_shift"]["source"] == "off"


def test_restore_dvd_undoes_telecine_only_where_the_picture_is_telecined(tmp_path):
    film = mediagen.make_telecined_clip(tmp_path / "film.mpg", vcodec="mpeg2video")
    video = mediagen.make_clip(tmp_path / "video.mpg", vcodec="mpeg2video", interlaced="tff", frames=30)
    on_film, on_video = _plan(film, "--restore", "dvd"), _plan(video.path, "--restore", "dvd")
    assert on_film["deinterlace"].startswith("inverse telecine") and on_film["denoise"]["level"] == "light"
    assert not on_video["deinterlace"].startswith("inverse telecine") and on_video["denoise"]["level"] == "light"
    assert on_video["chroma_shift"]["source"] == "off"


def test_probe_prints_the_chain_stage_by_stage(clips):
    tape = clips.make("tape-rows.avi", vcodec="dvvideo", frames=8)
    r = CliRunner().invoke(main, ["probe", str(tape.path), "--model", "bicubic-x2", "--restore", "vhs"])
    assert r.exit_code == 0, r.output
    rows = [line.split("  ")[0] for line in r.output.splitlines() if line.startswith("plan: ")]
    order = ["plan: restore", "plan: fields", "plan: crop", "plan: chroma shift", "plan: denoise", "plan: model"]
    assert [row for row in rows if row in order] == order
    assert "medium:" in r.output.split("plan: denoise", 1)[1].splitlines()[0]


@pytest.mark.slow
def test_chunked_denoised_run_gives_the_frames_of_one_run(clips, tmp_path):
    clip = clips.make(
        "grain-long.vob",
        vcodec="mpeg2video",
        size=(160, 120),
        interlaced="tff",
        frames=45,
        picture=mediagen.grainy_render(160, 120, SIGMA),
    )
    opts = {"model": "bicubic-x2", "codec": "ffv1", "overwrite": True, "denoise": "strong"}
    whole = tmp_path / "whole.mkv"
    r = upscale_video(clip.path, whole, **opts)
    chunked = tmp_path / "chunked.mkv"
    c = upscale_chunked(clip.path, chunked, workers=1, chunk_seconds=0.51, **opts)
    assert c.frames_out == r.frames_out == clip.frames and r.denoise == c.denoise
    for k, ((t1, a), (t2, b)) in enumerate(zip(mediagen.decode_video(chunked), mediagen.decode_video(whole))):
        assert t1 == t2 and np.array_equal(a, b), f"frame {k}"
