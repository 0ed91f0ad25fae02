"""QTGMC through the VapourSynth bridge (the ``restore`` extra), on real interlaced clips.

VapourSynth's wheels need Python 3.12, so ``make test`` runs this file in
the extras venv (.venv-extras) with VHSUP_REQUIRE_RESTORE=1, where a
missing or broken extra is a failure, not a skip. What the extra's absence
looks like is tested in the main venv (tests/test_restore_missing.py).
"""

from __future__ import annotations

import json
import os
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

import mediagen
from vhsup import upscale_video
from vhsup.cli import main
from vhsup.media.decode import decode_from, open_input
from vhsup.media.filters import frame_time, plan_filters, progressive_frames
from vhsup.media.probe import probe
from vhsup.restore import denoise, qtgmc
from vhsup.restore import vs as bridge

_reason = bridge.check()
if _reason is not None:
    if os.environ.get("VHSUP_REQUIRE_RESTORE") == "1":
        pytest.fail(f"the restore extra does not work: {_reason}", pytrace=False)
    pytest.skip(f"{_reason}; `make test` runs this file in .venv-extras", allow_module_level=True)

FAST = dict(model="bicubic-x2", preset="ultrafast", overwrite=True, temporal="off")


def comb_energy(path) -> float:
    """Line-to-line alternation left in the pictures (combing), over the whole clip."""
    total = []
    for _, rgb in mediagen.decode_video(path):
        y = rgb.astype(np.float32)
        total.append(float(np.abs(y[1:-1] - (y[:-2] + y[2:]) / 2).mean()))
    return float(np.mean(total))


def frame_times(path) -> list[float]:
    return [t for t, _ in mediagen.decode_video(path)]


def display_aspect(path) -> Fraction:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        sar = s.sample_aspect_ratio or s.codec_context.sample_aspect_ratio or Fraction(1)
        return Fraction(s.codec_context.width, s.codec_context.height) * Fraction(sar)


def assert_in_sync(path, frame: float) -> None:
    flashes, clicks = mediagen.find_flashes(path), mediagen.find_clicks(path)
    assert flashes and len(flashes) == len(clicks)
    assert max(abs(f - c) for f, c in zip(flashes, clicks)) <= frame


def test_qtgmc_double_rate_dvd_keeps_every_field_time_and_sync(dvd_clip, tmp_path):
    q = upscale_video(dvd_clip.path, tmp_path / "q.mkv", deinterlace="qtgmc", field_rate="double", **FAST)
    b = upscale_video(dvd_clip.path, tmp_path / "b.mkv", deinterlace="bwdif", field_rate="double", **FAST)
    off = upscale_video(dvd_clip.path, tmp_path / "off.mkv", deinterlace="off", **FAST)
    assert q.deinterlace.startswith("qtgmc slower tff, field rate") and b.deinterlace.startswith("bwdif tff")
    assert q.frames_out == 2 * dvd_clip.frames == b.frames_out and off.frames_out == dvd_clip.frames
    assert q.output_rate == str(Fraction(60000, 1001))
    # one output frame per field, at the field's own time: the times bwdif gives, exactly
    assert frame_times(tmp_path / "q.mkv") == frame_times(tmp_path / "b.mkv")
    assert [i for _, i in mediagen.read_indices(tmp_path / "q.mkv")] == [k // 2 for k in range(2 * dvd_clip.frames)]
    # progressive: the moving box's combing is gone
    assert comb_energy(tmp_path / "off.mkv") > 1.5 * comb_energy(tmp_path / "q.mkv")
    assert display_aspect(tmp_path / "q.mkv") == Fraction(4, 3)
    assert_in_sync(tmp_path / "q.mkv", 1 / 59.94)


def test_auto_takes_qtgmc_on_a_dv_capture_bff_411_single_rate(dv_clip, tmp_path):
    dst = tmp_path / "dv.mkv"
    r = upscale_video(dv_clip.path, dst, **FAST)
    assert r.deinterlace.startswith("qtgmc slower bff, frame rate")
    assert r.frames_out == dv_clip.frames
    assert [i for _, i in mediagen.read_indices(dst)] == list(range(dv_clip.frames))
    times = frame_times(dst)
    assert times == pytest.approx([k * 1001 / 30000 for k in range(dv_clip.frames)], abs=1e-3)
    assert display_aspect(dst) == Fraction(4, 3)
    assert_in_sync(dst, 1 / 29.97)


def test_every_preset_keeps_the_frame_times_of_the_source(clips):
    clip = clips.make("short.ts", vcodec="mpeg2video", size=(160, 120), interlaced="bff", audio=None, frames=12)
    info = probe(clip.path)
    for preset in qtgmc.PRESETS:
        plan = plan_filters(info, deinterlace="qtgmc", qtgmc_preset=preset)
        assert plan.describe().startswith(f"qtgmc {preset} bff")
        with open_input(clip.path) as c:
            source = [frame_time(f) for f in decode_from(c, None)]
        with open_input(clip.path) as c:
            out = list(progressive_frames(decode_from(c, None), c.streams.video[0], plan))
        assert [frame_time(f) for f in out] == source
        assert {f.format.name for f in out} == {"yuv420p"} and (out[0].width, out[0].height) == (160, 120)


def test_the_bridge_streams_instead_of_reading_the_whole_file(clips):
    clip = clips.make("long.ts", vcodec="mpeg2video", size=(64, 48), interlaced="tff", audio=None, frames=240)
    info = probe(clip.path)
    plan = plan_filters(info, deinterlace="qtgmc", field_rate="double", qtgmc_preset="fast")
    pulled = 0
    ahead = []
    with open_input(clip.path) as c:

        def counted():
            nonlocal pulled
            for frame in decode_from(c, None):
                pulled += 1
                yield frame

        for k, _ in enumerate(progressive_frames(counted(), c.streams.video[0], plan)):
            ahead.append(pulled - k // 2)
    assert len(ahead) == 2 * clip.frames
    # frames decoded but not yet out: a window of the chain's reach, not the file
    assert max(ahead) <= 24


def test_probe_says_which_deinterlacer_and_preset(dvd_clip):
    r = CliRunner().invoke(main, ["probe", str(dvd_clip.path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plan"]["deinterlace"].startswith("qtgmc slower tff")
    r = CliRunner().invoke(main, ["probe", str(dvd_clip.path), "--qtgmc-preset", "fast", "--deinterlace", "bwdif"])
    assert r.exit_code == 0 and "bwdif tff" in r.output
    r = CliRunner().invoke(main, ["probe", str(dvd_clip.path), "--json", "--qtgmc-preset", "fast"])
    assert json.loads(r.output)["plan"]["deinterlace"].startswith("qtgmc fast tff")


def test_a_missing_plugin_is_named_in_one_line():
    reason = bridge.check({"mv": "vapoursynth-mvtools", "nosuchplugin": "vapoursynth-nosuchplugin"})
    assert reason is not None and "\n" not in reason
    assert "vapoursynth-nosuchplugin" in reason and "vapoursynth-mvtools" not in reason
    assert "pip install 'vhsup[restore]'" in reason


def _rgb(path, **options) -> list[tuple[Fraction, np.ndarray]]:
    from vhsup.pipeline import upscaled_frames

    return [(p.time, p.rgb.astype(np.float32)) for p in upscaled_frames(path, model="bicubic-x1", **options)]


def _ata_rgb(path, level: str) -> list[tuple[Fraction, np.ndarray]]:
    """The clip through FFmpeg's atadenoise at ``level`` (what runs without the extra), as RGB."""
    from vhsup.media.colour import source_colour
    from vhsup.media.filters import pictures
    from vhsup.media.geometry import Crop

    info = probe(path)
    with open_input(path) as c:
        s = c.streams.video[0]
        frames = denoise.denoise_frames(
            decode_from(c, None), denoise.Denoise(level, "atadenoise"), sar=Fraction(1), rate=s.average_rate
        )
        colour = source_colour(info.height, info.colorspace, info.color_range)
        return [(p.time, p.rgb.astype(np.float32)) for p in pictures(frames, colour, Crop())]


def test_mvtools_degrain_follows_motion_where_atadenoise_smears(clips):
    """A detailed texture panning 2 px a frame under 8 codes of grain: MVTools' degrain follows the
    pan and comes much nearer the clean picture; FFmpeg's atadenoise (the fallback without the extra)
    cannot follow it. Every frame time is kept."""
    size = (128, 96)
    noisy = clips.make("mv-pan.mkv", vcodec="ffv1", size=size, frames=16, picture=mediagen.grainy_pan(*size, 8))
    clean = clips.make("mv-pan-clean.mkv", vcodec="ffv1", size=size, frames=16, picture=mediagen.grainy_pan(*size, 0))
    truth = _rgb(clean.path)

    def error(frames) -> float:
        return float(np.mean([np.abs(a - t).mean() for (_, a), (_, t) in zip(frames, truth)]))

    before = error(_rgb(noisy.path))
    for level in ("light", "medium", "strong"):
        plan, notes = denoise.plan_denoise(level, *size)
        assert plan.method == "mvtools" and not notes
        mv, ata = _rgb(noisy.path, denoise=level), _ata_rgb(noisy.path, level)
        assert [t for t, _ in mv] == [t for t, _ in ata] == [t for t, _ in truth]
        assert error(mv) < min(0.7 * before, 0.7 * error(ata)), (level, error(mv), error(ata), before)


def test_restore_vhs_on_a_dv_capture_runs_the_whole_chain_in_sync(dv_clip, tmp_path):
    dst = tmp_path / "vhs.mkv"
    r = upscale_video(dv_clip.path, dst, **(FAST | {"restore": "vhs"}))
    assert r.deinterlace.startswith("qtgmc slower bff, frame rate")
    assert r.denoise == "medium (mvtools)" and not [n for n in r.notices if "denoise" in n]
    assert r.frames_out == dv_clip.frames
    assert [i for _, i in mediagen.read_indices(dst)] == list(range(dv_clip.frames))
    assert frame_times(dst) == pytest.approx([k * 1001 / 30000 for k in range(dv_clip.frames)], abs=1e-3)
    assert display_aspect(dst) == Fraction(4, 3)
    assert_in_sync(dst, 1 / 29.97)
    off = tmp_path / "off.mkv"
    upscale_video(dv_clip.path, off, **(FAST | {"deinterlace": "off"}))
    assert comb_energy(off) > 1.5 * comb_energy(dst)  # progressive


def test_installing_the_extra_redoes_finished_work_that_it_changes():
    """Chunked runs and batch libraries hash output_settings: with the extra, --deinterlace auto and
    --denoise run QTGMC and MVTools, not bwdif and atadenoise, so their hash differs; bwdif alone does not."""
    from vhsup.options import Options, output_settings

    assert output_settings(Options(model="bicubic-x2")).get("restore_extra") is True
    assert output_settings(Options(model="bicubic-x2", deinterlace="off", restore="vhs")).get("restore_extra") is True
    assert "restore_extra" not in output_settings(Options(model="bicubic-x2", deinterlace="bwdif"))
