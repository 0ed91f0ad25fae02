"""--chroma-shift: the chroma-to-luma lag measured on real codecs, and undone exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.mediagen import make_chroma_delay_clip
from vhsup.cli import main
from vhsup.errors import VhsupError
from vhsup.media.probe import probe
from vhsup.pipeline import upscaled_frames
from vhsup.restore.chroma import measure, parse, shift_planes


@pytest.mark.parametrize(
    ("delay", "vcodec", "pix_fmt"),
    [
        (0.0, "ffv1", "yuv422p"),
        (2.0, "ffv1", "yuv422p"),
        (4.5, "ffv1", "yuv422p"),
        (4.5, "dvvideo", "yuv411p"),
        (-3.3, "mpeg2video", "yuv420p"),
    ],
)
def test_auto_recovers_a_known_delay(tmp_path, delay, vcodec, pix_fmt):
    ext = {"ffv1": "mkv", "dvvideo": "avi", "mpeg2video": "mpg"}[vcodec]
    clip = make_chroma_delay_clip(tmp_path / f"delay.{ext}", delay, vcodec=vcodec, pix_fmt=pix_fmt)
    found = measure(clip, probe(clip))
    assert found.lag is not None
    assert abs(found.lag - delay) < 0.5, found
    assert found.match > 0.5
    if delay:
        assert found.x == pytest.approx(-found.lag) and found.y == 0
    else:
        assert not found.moves  # no lag: nothing is moved


def _frames(clip, **options):
    return [p.rgb.astype(np.int16) for p in upscaled_frames(clip, model="bicubic-x1", **options)]


def test_auto_on_a_clip_without_delay_changes_nothing(tmp_path):
    clip = make_chroma_delay_clip(tmp_path / "clean.mkv", 0.0, frames=3)
    off = _frames(clip)
    auto = _frames(clip, chroma_shift="auto")
    assert len(auto) == len(off) == 3
    assert all(np.array_equal(a, b) for a, b in zip(auto, off))


def test_auto_puts_the_colour_back_on_its_edges(tmp_path):
    """A 4.5 px lag undone gives the pictures of the same clip made without the lag."""
    late = make_chroma_delay_clip(tmp_path / "late.mkv", 4.5, frames=3)
    clean = make_chroma_delay_clip(tmp_path / "clean.mkv", 0.0, frames=3)
    truth = _frames(clean)
    before = np.mean([np.abs(a - t).mean() for a, t in zip(_frames(late), truth)])
    after = np.mean([np.abs(a - t).mean() for a, t in zip(_frames(late, chroma_shift="auto"), truth)])
    given = np.mean([np.abs(a - t).mean() for a, t in zip(_frames(late, chroma_shift="-4.5,0"), truth)])
    assert after < before / 3, (before, after)
    assert given < before / 3, (before, given)


def test_a_whole_sample_move_is_a_plain_copy():
    rng = np.random.default_rng(1)
    cb, cr = (rng.integers(0, 256, (6, 20), dtype=np.uint8) for _ in range(2))
    moved_cb, moved_cr = shift_planes(cb, cr, 3, 0)
    assert np.array_equal(moved_cb[:, 3:], cb[:, :-3]) and np.array_equal(moved_cr[:, 3:], cr[:, :-3])
    assert np.array_equal(moved_cb[:, :3], np.repeat(cb[:, :1], 3, axis=1))  # edges repeated
    down, _ = shift_planes(cb, cr, 0, -1)
    assert np.array_equal(down[:-1], cb[1:])


def test_probe_prints_and_reports_the_estimate(tmp_path):
    clip = make_chroma_delay_clip(tmp_path / "late.mkv", 2.0, frames=3)
    runner = CliRunner()
    shown = runner.invoke(main, ["probe", str(clip), "--chroma-shift", "auto", "--model", "bicubic-x2"])
    assert shown.exit_code == 0, shown.output
    line = next(row for row in shown.output.splitlines() if "chroma shift" in row)
    assert "chroma lags luma +1.9" in line or "chroma lags luma +2.0" in line, line
    data = json.loads(runner.invoke(main, ["probe", str(clip), "--chroma-shift", "auto", "--json"]).output)
    shift = data["plan"]["chroma_shift"]
    assert shift["source"] == "auto" and abs(shift["lag"] - 2.0) < 0.5 and shift["x"] == pytest.approx(-shift["lag"])
    given = json.loads(runner.invoke(main, ["probe", str(clip), "--chroma-shift=-3.5,0", "--json"]).output)
    assert given["plan"]["chroma_shift"] == {
        "x": -3.5,
        "y": 0.0,
        "source": "user",
        "lag": None,
        "match": 0.0,
        "frames": 0,
    }


def test_a_bad_value_is_one_clear_line(tmp_path):
    with pytest.raises(VhsupError, match="--chroma-shift must be auto, off or X,Y"):
        parse("sideways")
    clip = make_chroma_delay_clip(tmp_path / "late.mkv", 2.0, frames=2, size=(64, 48))
    result = CliRunner().invoke(main, ["probe", str(clip), "--chroma-shift", "1,2,3"])
    assert result.exit_code != 0 and "--chroma-shift must be auto, off or X,Y" in result.output
    assert "Traceback" not in result.output
