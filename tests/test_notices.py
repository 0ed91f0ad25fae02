"""Options that cannot do what they say are told to the user, on real clips, and only then."""

from __future__ import annotations

import json

from click.testing import CliRunner

from vhsup import upscale_video
from vhsup.cli import main

FAST = dict(model="bicubic", preset="ultrafast", overwrite=True, frames=3)


def test_deinterlace_off_on_interlaced_content_warns_about_combing(dvd_clip, tmp_path):
    notes: list[str] = []
    r = upscale_video(dvd_clip.path, tmp_path / "o.mkv", deinterlace="off", notice=notes.append, **FAST)
    combing = [n for n in notes if n.startswith("--deinterlace off, but the source looks interlaced")]
    assert len(combing) == 1 and "combing will be upscaled" in combing[0]
    assert combing[0] in r.notices and r.deinterlace == "none (progressive)"


def test_deinterlace_off_on_progressive_content_is_quiet(mp4_clip, tmp_path):
    r = upscale_video(mp4_clip.path, tmp_path / "o.mkv", deinterlace="off", **FAST)
    assert not [n for n in r.notices if "--deinterlace" in n or "--field-rate" in n]


def test_double_field_rate_on_progressive_input_says_it_does_nothing(mp4_clip, tmp_path):
    r = upscale_video(mp4_clip.path, tmp_path / "o.mkv", field_rate="double", **FAST)
    assert any(n.startswith("--field-rate double does nothing on progressive input") for n in r.notices)
    assert r.output_rate == str(mp4_clip.rate)  # and indeed the rate is not doubled


def test_double_field_rate_with_deinterlace_off_says_it_does_nothing(dvd_clip, tmp_path):
    r = upscale_video(dvd_clip.path, tmp_path / "o.mkv", field_rate="double", deinterlace="off", **FAST)
    assert any(n.startswith("--field-rate double does nothing with --deinterlace off") for n in r.notices)


def test_double_field_rate_on_interlaced_input_is_quiet_and_doubles(dvd_clip, tmp_path):
    r = upscale_video(dvd_clip.path, tmp_path / "o.mkv", field_rate="double", **FAST)
    assert not [n for n in r.notices if "--field-rate" in n]
    assert r.output_rate == str(dvd_clip.rate * 2)


def test_probe_shows_the_same_notices(mp4_clip):
    r = CliRunner().invoke(main, ["probe", str(mp4_clip.path), "--field-rate", "double", "--model", "bicubic"])
    assert r.exit_code == 0, r.stderr
    assert "plan: notice" in r.stdout and "--field-rate double does nothing" in r.stdout
    r = CliRunner().invoke(
        main, ["probe", str(mp4_clip.path), "--field-rate", "double", "--model", "bicubic", "--json"]
    )
    assert any("--field-rate double" in n for n in json.loads(r.stdout)["plan"]["notices"])


def test_field_order_on_progressive_input_says_it_does_nothing(mp4_clip, dvd_clip, tmp_path):
    r = upscale_video(mp4_clip.path, tmp_path / "p.mkv", field_order="bff", **FAST)
    assert any(n.startswith("--field-order bff does nothing: the picture is not deinterlaced") for n in r.notices)
    r = upscale_video(dvd_clip.path, tmp_path / "i.mkv", field_order="bff", **FAST)
    assert not [n for n in r.notices if n.startswith("--field-order")] and "bwdif bff" in r.deinterlace
