"""--dedot and --derainbow: Dedot and Bifrost through the VapourSynth bridge, on real clips.

The plugins come with the ``restore`` extra (VapourSynth needs Python 3.12),
so ``make test`` runs this file in the extras venv with
VHSUP_REQUIRE_RESTORE=1, where a missing or broken plugin is a failure, not
a skip. Without the extra each flag fails in one line naming the install
(tests/test_restore_missing.py).

The composite clips (tests/mediagen.py's ``composite_picture``) are made
losslessly with their clean truth: colour patches whose edges carry a dot
crawl chequer, and fine stripes under a rainbow of false colour, both
flipping phase every frame as NTSC's subcarrier does.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

import mediagen
from vhsup import upscale_video
from vhsup.chunked import upscale_chunked
from vhsup.cli import main
from vhsup.media.decode import decode_from, open_input
from vhsup.media.filters import frame_time, plan_filters, progressive_frames
from vhsup.media.probe import probe
from vhsup.pipeline import make_plan, upscaled_frames
from vhsup.restore import composite

_reason = composite.unusable("dedot") or composite.unusable("derainbow")
if _reason is not None:
    if os.environ.get("VHSUP_REQUIRE_RESTORE") == "1":
        pytest.fail(f"the restore extra's Dedot or Bifrost does not work: {_reason}", pytrace=False)
    pytest.skip(f"{_reason}; `make test` runs this file in .venv-extras", allow_module_level=True)

SIZE = (160, 120)
DOTS, RAINBOWS = 12.0, 20.0  # codes of luma chequer and of false U/V
FAST = dict(model="bicubic-x2", preset="ultrafast", overwrite=True, temporal="off")


def _clip(clips, name: str, step: int = 0, artefacts: bool = True):
    dots, rainbows = (DOTS, RAINBOWS) if artefacts else (0.0, 0.0)
    picture = mediagen.composite_picture(*SIZE, dots=dots, rainbows=rainbows, step=step)
    return clips.make(
        name, vcodec="ffv1", size=SIZE, frames=16, pix_fmt="yuv422p", interlaced="tff", audio=None, picture=picture
    )


@pytest.fixture(scope="module")
def still(clips):
    """The still scene with both artefacts and its truth: the clips, and their pictures with the flags off."""
    art, clean = _clip(clips, "composite.mkv"), _clip(clips, "composite-clean.mkv", artefacts=False)
    return art, clean, _yuv(art.path), _yuv(clean.path)


@pytest.fixture(scope="module")
def pan(clips):
    """The scene panning 2 px a frame with both artefacts and its truth, as ``still``."""
    art = _clip(clips, "composite-pan.mkv", step=2)
    clean = _clip(clips, "composite-pan-clean.mkv", step=2, artefacts=False)
    return art, clean, _yuv(art.path), _yuv(clean.path)


def _yuv(path, **options) -> list[tuple[Fraction, np.ndarray, np.ndarray]]:
    """(time, Y, UV) of every picture the pipeline makes (no deinterlacing: the static fields stay as made)."""
    out = []
    for p in upscaled_frames(path, model="bicubic-x1", deinterlace="off", temporal="off", **options):
        r, g, b = (p.rgb[..., k].astype(np.float64) for k in range(3))
        y = 0.299 * r + 0.587 * g + 0.114 * b
        out.append((p.time, y, np.stack([(b - y) / 1.772, (r - y) / 1.402])))
    return out


def _change(frames, k: int) -> float:
    """Mean change from frame to frame of plane ``k`` (1 luma, 2 chroma)."""
    return float(np.mean([np.abs(b[k] - a[k]).mean() for a, b in zip(frames, frames[1:])]))


def _psnr(frames, truth, k: int) -> float:
    return float(
        np.mean([10 * np.log10(255**2 / max(1e-6, np.mean((a[k] - t[k]) ** 2))) for a, t in zip(frames, truth)])
    )


def test_derainbow_steadies_the_false_colour_and_dedot_the_dot_crawl(still):
    art, _, off, truth = still
    rainbow = _yuv(art.path, derainbow=True)
    dots = _yuv(art.path, dedot=True)
    assert [t for t, *_ in rainbow] == [t for t, *_ in dots] == [t for t, *_ in off] == [t for t, *_ in truth]
    # Bifrost: the chroma stops shimmering (measured 10.1 -> 0.7 codes a frame) and comes near the truth (+28 dB)
    assert _change(rainbow, 2) < _change(off, 2) / 8, (_change(rainbow, 2), _change(off, 2))
    assert _psnr(rainbow, truth, 2) > _psnr(off, truth, 2) + 20
    # Dedot: the chequer stops crawling (measured 3.8 -> 1.6) and the luma comes nearer the truth (+4.2 dB);
    # it leaves the chroma alone
    assert _change(dots, 1) < _change(off, 1) / 1.7, (_change(dots, 1), _change(off, 1))
    assert _psnr(dots, truth, 1) > _psnr(off, truth, 1) + 2.5
    assert max(np.abs(a[2] - b[2]).mean() for a, b in zip(dots, off)) < 0.5  # RGB rounding only


def test_off_changes_nothing_and_a_clean_picture_stays_clean(still):
    art, clean, plain, truth = still
    off = _yuv(art.path, dedot=False, derainbow=False)
    assert all(np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) for a, b in zip(off, plain))
    both = _yuv(clean.path, dedot=True, derainbow=True)
    assert _psnr(both, truth, 1) > 45 and _psnr(both, truth, 2) > 45


@pytest.mark.parametrize("flag", ["dedot", "derainbow"])
def test_a_moving_picture_is_not_smeared(pan, flag):
    art, _, off, truth = pan
    on = _yuv(art.path, **{flag: True})
    assert [t for t, *_ in on] == [t for t, *_ in off]
    for k in (1, 2):
        assert _psnr(on, truth, k) > _psnr(off, truth, k) - 0.3, (k, _psnr(on, truth, k), _psnr(off, truth, k))


def test_before_bwdif_on_dv_411_bff_and_dvd_420_tff_every_frame_time_and_sync(dv_clip, dvd_clip, tmp_path):
    """4:1:1 DV comes out of the bridge as 4:2:2: FFmpeg's bwdif is set up for the frames it gets."""
    fast = FAST | {"model": "bicubic-x1", "deinterlace": "bwdif"}
    for clip in (dv_clip, dvd_clip):
        plain = upscale_video(clip.path, tmp_path / "plain.mkv", **fast)
        both = upscale_video(clip.path, tmp_path / "both.mkv", dedot=True, derainbow=True, **fast)
        assert both.composite == "dedot+derainbow" and plain.composite == "off"
        assert both.frames_out == plain.frames_out == clip.frames
        times = [t for t, _ in mediagen.decode_video(tmp_path / "both.mkv")]
        assert times == [t for t, _ in mediagen.decode_video(tmp_path / "plain.mkv")]
        assert np.diff(times) == pytest.approx(1001 / 30000, abs=1.5e-3)
        assert [i for _, i in mediagen.read_indices(tmp_path / "both.mkv")] == list(range(clip.frames))
        flashes, clicks = mediagen.find_flashes(tmp_path / "both.mkv"), mediagen.find_clicks(tmp_path / "both.mkv")
        assert flashes and len(flashes) == len(clicks)
        assert max(abs(f - c) for f, c in zip(flashes, clicks)) <= 1 / 29.97


def test_before_qtgmc_the_bridges_nest_and_keep_the_source_times(clips):
    clip = clips.make("short-bff.ts", vcodec="mpeg2video", size=(160, 120), interlaced="bff", audio=None, frames=12)
    info = probe(clip.path)
    fields = plan_filters(info, deinterlace="qtgmc", qtgmc_preset="fast")
    plan = composite.Composite(dedot=True, derainbow=True, fields="bff")
    with open_input(clip.path) as c:
        source = [frame_time(f) for f in decode_from(c, None)]
    with open_input(clip.path) as c:
        cleaned = composite.composite_frames(decode_from(c, None), plan, sar=info.sar, rate=info.fps)
        out = list(progressive_frames(cleaned, c.streams.video[0], fields))
    assert [frame_time(f) for f in out] == source
    assert {f.format.name for f in out} == {"yuv420p"}


def test_the_interlaced_flags_come_back_for_ffmpegs_field_filters(dvd_clip):
    info = probe(dvd_clip.path)
    plan = composite.Composite(derainbow=True, fields="tff")
    with open_input(dvd_clip.path) as c:
        flags = [(f.pts, f.interlaced_frame) for f in decode_from(c, None)]
    with open_input(dvd_clip.path) as c:
        out = [
            (f.pts, f.interlaced_frame)
            for f in composite.composite_frames(decode_from(c, None), plan, sar=info.sar, rate=info.fps)
        ]
    assert out == flags and all(i for _, i in out)


def test_probe_shows_the_stage_before_the_fields_and_json_says_what_runs(dv_clip):
    r = CliRunner().invoke(main, ["probe", str(dv_clip.path), "--model", "bicubic-x2", "--dedot", "--derainbow"])
    assert r.exit_code == 0, r.output
    rows = [line.split("  ")[0] for line in r.output.splitlines() if line.startswith("plan: ")]
    assert rows.index("plan: composite") == rows.index("plan: fields") - 1
    row = r.output.split("plan: composite", 1)[1]
    assert "Dedot" in row and "Bifrost" in row and "bff" in row
    r = CliRunner().invoke(main, ["probe", str(dv_clip.path), "--model", "bicubic-x2", "--json", "--derainbow"])
    data = json.loads(r.output)["plan"]["composite"]
    assert data == {"dedot": False, "derainbow": True, "fields": "bff", "reach": [2, 3]}
    plan = make_plan(dv_clip.path, composite_options(), scale=2, model="bicubic-x2")
    assert plan.composite.label() == "dedot" and plan.composite.back == 2


def composite_options():
    from vhsup.options import Options

    return Options(model="bicubic-x2", dedot=True)


def test_chunked_equals_one_run(clips, tmp_path):
    clip = clips.make(
        "composite-long.vob",
        vcodec="mpeg2video",
        size=SIZE,
        interlaced="tff",
        frames=45,
        audio=None,
        picture=mediagen.composite_picture(*SIZE, dots=DOTS, rainbows=RAINBOWS, step=1),
    )
    opts = {"model": "bicubic-x2", "codec": "ffv1", "overwrite": True, "derainbow": True, "deinterlace": "bwdif"}
    whole = tmp_path / "whole.mkv"
    r = upscale_video(clip.path, whole, **opts)
    chunked = tmp_path / "chunked.mkv"
    c = upscale_chunked(clip.path, chunked, workers=1, chunk_seconds=0.51, **opts)
    assert c.frames_out == r.frames_out == clip.frames and r.composite == c.composite == "derainbow"
    for k, ((t1, a), (t2, b)) in enumerate(zip(mediagen.decode_video(chunked), mediagen.decode_video(whole))):
        assert t1 == t2 and np.array_equal(a, b), f"frame {k}"
