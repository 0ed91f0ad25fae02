"""Without the ``restore`` extra (the main venv, Python 3.11): QTGMC asked for fails in one line
naming the install, ``auto`` takes bwdif, ``--ivtc`` takes fieldmatch, and ``probe`` says which and why.

tests/test_restore.py runs QTGMC and VIVTC themselves, in the extras venv.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vhsup import upscale_video
from vhsup.cli import main
from vhsup.errors import VhsupError
from vhsup.restore import vs as bridge

_reason = bridge.check()
if _reason is None or "is not installed" not in _reason:
    pytest.skip("the restore extra is installed here: tests/test_restore.py runs it", allow_module_level=True)

INSTALL = "pip install 'vhsup[restore]'"


def test_deinterlace_qtgmc_fails_in_one_line_naming_the_install(dvd_clip, tmp_path):
    dst = tmp_path / "out.mkv"
    r = CliRunner().invoke(
        main, ["upscale", str(dvd_clip.path), "-o", str(dst), "--model", "bicubic", "--deinterlace", "qtgmc"]
    )
    assert r.exit_code != 0
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and INSTALL in lines[0] and "--deinterlace qtgmc" in lines[0], r.output
    assert "Traceback" not in r.output and not dst.exists()
    with pytest.raises(VhsupError, match="VapourSynth is not installed.*restore"):
        upscale_video(dvd_clip.path, dst, model="bicubic", deinterlace="qtgmc")


def test_auto_takes_bwdif_and_probe_says_so(dvd_clip):
    r = CliRunner().invoke(main, ["probe", str(dvd_clip.path), "--json"])
    assert r.exit_code == 0, r.output
    fields = json.loads(r.output)["plan"]["deinterlace"]
    assert fields.startswith("bwdif tff") and f"QTGMC: {INSTALL}" in fields


def test_without_the_extra_the_settings_hash_is_the_one_before_it():
    from vhsup.options import Options, output_settings

    assert "restore_extra" not in output_settings(Options(model="bicubic-x2", restore="vhs"))


def test_ivtc_takes_fieldmatch_and_says_so(tmp_path):
    """Without the extra --ivtc runs FFmpeg's fieldmatch + decimate, and the plan names the VIVTC install."""
    import mediagen
    from vhsup.options import Options, output_settings

    film = mediagen.make_telecined_clip(tmp_path / "film.mkv", size=(160, 120))
    r = CliRunner().invoke(main, ["probe", str(film), "--json", "--ivtc"])
    assert r.exit_code == 0, r.output
    expected = f"inverse telecine (fieldmatch tff + decimate) -> 23.976p (VIVTC: {INSTALL})"
    assert json.loads(r.output)["plan"]["deinterlace"] == expected
    notes: list[str] = []
    run = upscale_video(film, tmp_path / "out.mkv", model="bicubic", ivtc=True, temporal="off", notice=notes.append)
    assert run.deinterlace == expected and run.frames_out == 24
    assert not [n for n in notes if "VIVTC" in n]  # a missing extra is said in the plan, not as a notice
    assert "ivtc_method" not in output_settings(Options(model="bicubic-x2", ivtc=True))


@pytest.mark.parametrize("flag", ["dedot", "derainbow"])
def test_dedot_and_derainbow_fail_in_one_line_naming_the_install(dv_clip, tmp_path, flag):
    """No FFmpeg filter removes dot crawl or rainbows: without the extra the flag stops the run, before any work."""
    dst = tmp_path / "out.mkv"
    for command in (["upscale", "-o", str(dst)], ["probe"]):
        r = CliRunner().invoke(main, [command[0], str(dv_clip.path), *command[1:], "--model", "bicubic", f"--{flag}"])
        assert r.exit_code != 0
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert len(lines) == 1 and INSTALL in lines[0] and f"--{flag}" in lines[0], r.output
        assert "Traceback" not in r.output and not dst.exists()
    with pytest.raises(VhsupError, match=f"--{flag} needs VapourSynth's .*VapourSynth is not installed.*restore"):
        upscale_video(dv_clip.path, dst, model="bicubic", **{flag: True})


def test_probe_has_the_composite_row_off_before_the_fields(dv_clip):
    r = CliRunner().invoke(main, ["probe", str(dv_clip.path), "--model", "bicubic-x2"])
    assert r.exit_code == 0, r.output
    rows = [line.split("  ")[0] for line in r.output.splitlines() if line.startswith("plan: ")]
    assert rows.index("plan: composite") == rows.index("plan: fields") - 1
    assert r.output.split("plan: composite", 1)[1].split()[0] == "off"
    r = CliRunner().invoke(main, ["probe", str(dv_clip.path), "--model", "bicubic-x2", "--json"])
    plan = json.loads(r.output)["plan"]
    assert plan["composite"] == {"dedot": False, "derainbow": False, "fields": "progressive", "reach": [0, 0]}
