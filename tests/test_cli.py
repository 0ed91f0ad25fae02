"""The command line as a user meets it: one-line errors, JSON, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import mediagen

from vhsup.cli import main


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def one_line_error(args: list[str], expected: str) -> None:
    code, out, err = run(*args)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0] == f"vhsup: error: {expected}"
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.avi").write_bytes(b"")
    (d / "notes.avi").write_text("this is a shopping list, not a video\n" * 50)
    (d / "folder.mkv").mkdir()
    wav = mediagen.make_audio_only(d / "song.wav")
    return {"dir": d, "wav": wav}


@pytest.mark.parametrize("command", ["upscale", "probe"])
def test_bad_inputs_get_one_line_naming_the_file(bad_inputs, command):
    d = bad_inputs["dir"]
    one_line_error([command, str(d / "missing.avi")], f"{d / 'missing.avi'}: no such file")
    one_line_error([command, str(d / "folder.mkv")], f"{d / 'folder.mkv'}: is a directory, not a video file")
    one_line_error([command, str(d / "empty.avi")], f"{d / 'empty.avi'}: the file is empty")
    code, _, err = run(command, str(d / "notes.avi"))
    assert code == 2 and err.startswith(f"vhsup: error: {d / 'notes.avi'}: not a video file FFmpeg can read")
    assert len(err.strip().splitlines()) == 1
    one_line_error([command, str(bad_inputs["wav"])], f"{bad_inputs['wav']}: audio-only file: nothing to upscale")


def test_unreadable_file():
    # /proc/self/mem exists and is a regular file, but reading offset 0 fails
    # for every user, root included: a real unreadable input.
    code, _, err = run("upscale", "/proc/self/mem")
    assert code == 2
    assert err.startswith("vhsup: error: /proc/self/mem: cannot read the file")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; /proc/self/mem covers this")
def test_permission_denied(tmp_path, odd_clip):
    p = tmp_path / "locked.mkv"
    p.write_bytes(odd_clip.path.read_bytes())
    p.chmod(0)
    one_line_error(["upscale", str(p)], f"{p}: permission denied: cannot read the file")


def test_bad_options_are_refused_before_work(odd_clip, tmp_path):
    code, _, err = run("upscale", str(odd_clip.path), "--crop", "1,2,3", "-o", str(tmp_path / "x.mkv"), "--model", "bicubic")
    assert code == 2 and "--crop takes 'auto' or four non-negative integers" in err
    code, _, err = run("upscale", str(odd_clip.path), "--model", "no-such-model", "-o", str(tmp_path / "x.mkv"))
    assert code == 2 and "no-such-model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.mkv").exists()


def test_probe_json(dv_clip):
    code, out, _ = run("probe", str(dv_clip.path), "--json", "--model", "bicubic")
    assert code == 0
    data = json.loads(out)
    assert data["codec"] == "dvvideo" and data["dar"] == "4:3"
    assert data["interlace"]["interlaced"] and data["interlace"]["field_order"] == "bff"
    assert data["frames"] == dv_clip.frames and data["frames_exact"]
    assert data["plan"]["deinterlace"].startswith("bwdif bff")
    assert data["plan"]["output_size"] == [2880, 1920] and data["plan"]["display_aspect"] == "4:3"


def test_probe_table(dvd_clip):
    code, out, _ = run("probe", str(dvd_clip.path), "--model", "bicubic")
    assert code == 0
    assert "interlaced TFF" in out and "[stream:" in out and "DAR 4:3" in out and "ac3" in out


def test_upscale_json_has_every_field(odd_clip, tmp_path):
    dst = tmp_path / "o.mkv"
    code, out, err = run("upscale", str(odd_clip.path), "-o", str(dst), "--model", "bicubic", "--frames", "4",
                         "--preset", "ultrafast", "--json")
    assert code == 0, err
    data = json.loads(out)
    for key in ("input", "output", "model", "device", "precision", "tile", "frames_in", "frames_out", "fps_out",
                "width", "height", "display_aspect", "audio_streams", "subtitle_streams", "decode_errors", "seconds"):
        assert key in data, key
    assert data["frames_out"] == 4 and data["output"] == str(dst) and data["audio_streams"] == 1


def test_ctrl_c_leaves_nothing_and_says_one_line(dvd_clip, tmp_path):
    dst = tmp_path / "out.mkv"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhsup", "upscale", str(dvd_clip.path), "-o", str(dst), "--model", "compact-x4",
         "--tile", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    # Wait until the encoder has opened its temp file: the run is mid-way.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.05)
    assert any(tmp_path.iterdir()), "the run never started writing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert lines == [f"vhsup: interrupted; nothing was written to {dst}"], err
    assert list(tmp_path.iterdir()) == []


def test_upscale_workers_splits_into_chunks_and_keeps_every_frame(clips, tmp_path):
    import mediagen as mg

    clip = clips.make("long.mkv", vcodec="ffv1", size=(96, 64), frames=60, audio="flac")
    dst = tmp_path / "w.mkv"
    code, out, err = run("upscale", str(clip.path), "-o", str(dst), "--model", "bicubic", "--workers", "2",
                         "--codec", "ffv1", "--json")
    assert code == 0, err
    assert json.loads(out)["frames_out"] == 60
    assert [i for _, i in mg.read_indices(dst)] == list(range(60))
