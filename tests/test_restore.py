"""QTGMC, MVTools and VIVTC through the VapourSynth bridge (the ``restore`` extra), on real clips.

VapourSynth's wheels need Python 3.12, so ``make test`` runs this file in
the extras venv (.venv-extras) with VHSUP_REQUIRE_RESTORE=1, where a
missing or broken extra is a failure, not a skip. What the extra's absence
looks like is tested in the main venv (tests/test_restore_missing.py).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

import mediagen
from vhsup import upscale_video
from vhsup.cli import main
from vhsup.media.decode import decode_from, open_input
from vhsup.media.filters import available_deinterlacer, frame_time, plan_filters, progressive_frames
from vhsup.media.probe import probe
from vhsup.restore import denoise, ivtc, qtgmc
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


# --- inverse telecine through VIVTC ------------------------------------------------------------------------


def pulldown(counts) -> list[int]:
    """The film frame each field shows when film frame i is held for ``counts[i]`` fields, top field
    first (field 2k is video frame k's top field): 2, 3, 2, 3, ... is 3:2 pulldown."""
    return [i for i, c in enumerate(counts) for _ in range(c)]


def make_pulldown_clip(path, fields, *, size=(352, 240), flashes=(), **clip) -> mediagen.ClipInfo:
    """An interlaced TFF clip weaving film frames field by field as ``fields`` says; film frame i
    carries index i (a frame that still mixes two film frames has no clear index), and the film
    frames in ``flashes`` are white flash frames."""
    w, h = size

    @functools.cache
    def film(i: int) -> np.ndarray:
        return mediagen.render(w, h, i, float(i / mediagen.FILM_RATE), i in flashes)

    def picture(k: int) -> np.ndarray:
        woven = film(fields[2 * k]).copy()
        woven[1::2] = film(fields[2 * k + 1])[1::2]
        return woven

    return mediagen.make_clip(path, size=size, interlaced="tff", frames=len(fields) // 2, picture=picture, **clip)


FILM = 60  # film frames: 75 telecined video frames

#: VIVTC's plugin is checked on its own: an extras venv made before it joined the extra lacks it.
_no_vivtc = ivtc.unusable(64, 48)
needs_vivtc = pytest.mark.skipif(
    _no_vivtc is not None and os.environ.get("VHSUP_REQUIRE_RESTORE") != "1",
    reason=f"{_no_vivtc}; `make test` reinstalls the extras venv with it",
)


@pytest.fixture(scope="module")
def film_vob(tmp_path_factory):
    """60 film frames hard-telecined 3:2 (2:3:2:3 fields) into 75 MPEG-2 TFF frames with AC-3, in a DVD
    program stream (whose clock starts at 0.5 s). A click sounds on each flash frame's first field: the
    film frames that start on the top field of video frames 6, 21, 36, ..."""
    fields = pulldown([2, 3] * (FILM // 2))
    video_flashes = mediagen.flash_frames(len(fields) // 2, 15, 6)
    flashes = {fields[2 * k] for k in video_flashes}
    assert all(fields.index(f) == 2 * k for f, k in zip(sorted(flashes), video_flashes))  # shown from that field
    return make_pulldown_clip(
        tmp_path_factory.mktemp("film") / "film.vob",
        fields,
        flashes=flashes,
        vcodec="mpeg2video",
        audio="ac3",
        flash_every=15,
        flash_offset=6,
    )


def _ivtc(path, *, vivtc: bool) -> list[av.VideoFrame]:
    """``path`` inverse-telecined by VIVTC, or by FFmpeg's fieldmatch + decimate (what runs without it)."""
    plan = plan_filters(probe(path), ivtc=True)
    assert plan.method == "vivtc"
    if not vivtc:
        plan = replace(plan, method=available_deinterlacer())
    with open_input(path) as c:
        return list(progressive_frames(decode_from(c, None), c.streams.video[0], plan))


def _film_indices(frames) -> list[int | None]:
    """Each frame's film index; None where the frame mixes two film frames (still combed)."""
    out: list[int | None] = []
    for f in frames:
        try:
            out.append(mediagen.read_index(f.to_ndarray(format="rgb24")))
        except ValueError:
            out.append(None)
    return out


@needs_vivtc
def test_vivtc_gives_each_film_frame_once_at_the_times_fieldmatch_gives(film_vob, tmp_path):
    info = probe(film_vob.path)
    assert info.telecine.telecined is True, info.telecine.evidence
    assert plan_filters(info, ivtc=True).describe() == "inverse telecine (VIVTC VFM tff + VDecimate) -> 23.976p"
    r = CliRunner().invoke(main, ["probe", str(film_vob.path), "--json", "--restore", "dvd"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["plan"]["deinterlace"] == "inverse telecine (VIVTC VFM tff + VDecimate) -> 23.976p"
    mkv = make_pulldown_clip(tmp_path / "film.mkv", pulldown([2, 3] * 12), size=(160, 120), vcodec="ffv1")
    for path, film in ((film_vob.path, FILM), (mkv.path, 24)):
        vivtc, ffmpeg = _ivtc(path, vivtc=True), _ivtc(path, vivtc=False)
        assert _film_indices(vivtc) == list(range(film)) == _film_indices(ffmpeg)
        # the same pts in the same time base: the 23.976 grid from the first frame's time, rounded to it
        assert [(f.pts, f.time_base) for f in vivtc] == [(f.pts, f.time_base) for f in ffmpeg]
        assert vivtc[0].time_base == Fraction(1001, 24000)
        assert {f.format.name for f in vivtc} == {"yuv420p"}


@needs_vivtc
def test_vivtc_upscale_keeps_film_frames_times_and_sync(film_vob, tmp_path, monkeypatch):
    dst = tmp_path / "vivtc.mkv"
    r = upscale_video(film_vob.path, dst, ivtc=True, **FAST)
    assert r.deinterlace == "inverse telecine (VIVTC VFM tff + VDecimate) -> 23.976p"
    assert r.frames_out == FILM and r.output_rate == str(Fraction(24000, 1001))
    assert [i for _, i in mediagen.read_indices(dst)] == list(range(FILM))
    assert_in_sync(dst, 1001 / 24000)
    # the same run through FFmpeg's filters, as where VIVTC is missing: the same frame times
    monkeypatch.setattr(ivtc, "unusable", lambda width, height: "VapourSynth is not installed")
    ff = upscale_video(film_vob.path, tmp_path / "ffmpeg.mkv", ivtc=True, **FAST)
    assert ff.deinterlace.startswith("inverse telecine (fieldmatch tff + decimate) -> 23.976p (VIVTC: pip install")
    assert frame_times(dst) == pytest.approx(frame_times(tmp_path / "ffmpeg.mkv"), abs=1e-3)
    assert ff.frames_out == FILM


@needs_vivtc
def test_vivtc_on_a_broken_cadence_gives_each_film_frame_once(tmp_path):
    """An edit after telecine: the second run's 3:2 pattern is entered at another phase, in the middle
    of a cycle of five, so the repeated field moves within the cycle from there on. VIVTC gives back
    every film frame once, in order, none lost; FFmpeg's fieldmatch + decimate (ports of VIVTC's two
    filters) get no more of them right."""
    first = pulldown([2, 3] * 5)[:24]  # films 0-9, cut after video frame 12 (film 9 keeps 2 of its 3 fields)
    second = [10 + f - 3 for f in pulldown([2, 3] * 25)[7:]]  # a pulldown entered at its 4th film frame
    fields = (first + second)[: 2 * 58]
    clip = make_pulldown_clip(tmp_path / "edit.mkv", fields, size=(192, 144), vcodec="ffv1")
    films = sorted(set(fields))
    assert all({k % 2 for k, f in enumerate(fields) if f == film} == {0, 1} for film in films)  # no orphan field
    vivtc, ffmpeg = _film_indices(_ivtc(clip.path, vivtc=True)), _film_indices(_ivtc(clip.path, vivtc=False))
    assert vivtc == films and len(films) == 47

    def right(indices) -> int:
        """Film frames given back exactly once, less the extra copies and the still combed frames."""
        once = sum(1 for f in films if indices.count(f) == 1)
        return once - sum(indices.count(f) - 1 for f in set(indices) if f is not None) - indices.count(None)

    assert right(vivtc) >= right(ffmpeg), (vivtc, ffmpeg)


@needs_vivtc
def test_vivtc_streams_and_decodes_in_the_calling_thread(tmp_path):
    """The decimating chain keeps the bridge's window: frames decoded ahead of the output stay a few,
    and VapourSynth's threads never pull on the decoder (the chain's reach is decoded first)."""
    clip = make_pulldown_clip(tmp_path / "long.mkv", pulldown([2, 3] * 100), size=(64, 48), vcodec="ffv1")
    plan = plan_filters(probe(clip.path), ivtc=True)
    caller = threading.get_ident()
    pulled, elsewhere, ahead = 0, 0, []
    with open_input(clip.path) as c:

        def counted():
            nonlocal pulled, elsewhere
            for frame in decode_from(c, None):
                pulled += 1
                elsewhere += threading.get_ident() != caller
                yield frame

        out = []
        for k, frame in enumerate(progressive_frames(counted(), c.streams.video[0], plan)):
            ahead.append(pulled - k * 5 / 4)
            out.append(frame)
    assert _film_indices(out) == list(range(200)) and pulled == 250
    assert max(ahead) <= 24 and elsewhere == 0


@needs_vivtc
def test_without_vivtc_ivtc_takes_fieldmatch_with_a_notice_and_qtgmc_still_runs(dvd_clip, tmp_path, monkeypatch):
    """vapoursynth-vivtc is checked on its own: without it --ivtc runs FFmpeg's filters, with a notice
    naming the install, and QTGMC and MVTools still run. Batch and chunked hashes tell the two apart."""
    from vhsup.options import Options, output_settings

    reason = bridge.check_plugins({"vivtc": "vapoursynth-vivtc", "nosuchivtc": "vapoursynth-nosuchivtc"})
    assert reason is not None and "\n" not in reason and "vapoursynth-nosuchivtc" in reason
    assert "vapoursynth-vivtc" not in reason and "pip install 'vhsup[restore]'" in reason
    assert output_settings(Options(model="bicubic-x2", ivtc=True)).get("ivtc_method") == "vivtc"
    assert output_settings(Options(model="bicubic-x2", restore="dvd")).get("ivtc_method") == "vivtc"
    assert "ivtc_method" not in output_settings(Options(model="bicubic-x2"))

    film = probe(mediagen.make_telecined_clip(tmp_path / "film.vob", vcodec="mpeg2video", size=(160, 120)))
    missing = "VapourSynth is installed but its plugin(s) vapoursynth-vivtc are missing or failed to load"
    monkeypatch.setattr(ivtc, "_check", lambda: f"{missing}; reinstall them with {bridge.INSTALL}")
    plan = plan_filters(film, ivtc=True)
    assert plan.method == available_deinterlacer() and plan.rate == Fraction(24000, 1001)
    assert plan.describe() == "inverse telecine (fieldmatch tff + decimate) -> 23.976p (not VIVTC: see the notice)"
    assert [n for n in plan.notes if n.startswith(f"--ivtc: FFmpeg's fieldmatch + decimate, not VIVTC: {missing}")]
    assert plan_filters(probe(dvd_clip.path)).method == "qtgmc" and denoise.plan_denoise("light", 64, 48)[1] == []
    assert "ivtc_method" not in output_settings(Options(model="bicubic-x2", ivtc=True))


def test_a_run_cut_short_closes_nested_vapoursynth_stages_before_the_file(dvd_clip, tmp_path):
    """QTGMC feeding MVTools, stopped by --frames while both have requests in flight: every
    stage is closed and its workers finish before the file is closed (it crashed with a
    segmentation fault in the decoder before). In a subprocess, so a crash fails the test."""
    import subprocess
    import sys

    dst = tmp_path / "short.mkv"
    args = ["upscale", str(dvd_clip.path), "--model", "bicubic", "--deinterlace", "qtgmc", "--denoise", "medium"]
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, "-m", "vhsup", *args, "--frames", "5", "-o", str(dst), "--overwrite"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert [i for _, i in mediagen.read_indices(dst)] == [0, 1, 2, 3, 4]
