"""The command line as a user meets it: one-line errors, JSON, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
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
    code, _, err = run(
        "upscale", str(odd_clip.path), "--crop", "1,2,3", "-o", str(tmp_path / "x.mkv"), "--model", "bicubic"
    )
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
    code, out, err = run(
        "upscale",
        str(odd_clip.path),
        "-o",
        str(dst),
        "--model",
        "bicubic",
        "--frames",
        "4",
        "--preset",
        "ultrafast",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    for key in (
        "input",
        "output",
        "model",
        "device",
        "precision",
        "tile",
        "frames_in",
        "frames_out",
        "fps_out",
        "width",
        "height",
        "display_aspect",
        "audio_streams",
        "subtitle_streams",
        "decode_errors",
        "seconds",
    ):
        assert key in data, key
    assert data["frames_out"] == 4 and data["output"] == str(dst) and data["audio_streams"] == 1


def test_ctrl_c_leaves_nothing_and_says_one_line(dvd_clip, tmp_path):
    dst = tmp_path / "out.mkv"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vhsup",
            "upscale",
            str(dvd_clip.path),
            "-o",
            str(dst),
            "--model",
            "compact-x4",
            "--tile",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
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
    code, out, err = run(
        "upscale", str(clip.path), "-o", str(dst), "--model", "bicubic", "--workers", "2", "--codec", "ffv1", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["frames_out"] == 60
    assert [i for _, i in mg.read_indices(dst)] == list(range(60))


# --- wording -------------------------------------------------------------------


def test_vhsup_alone_prints_help_and_succeeds():
    r = subprocess.run([sys.executable, "-m", "vhsup"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Commands:" in r.stdout and "upscale" in r.stdout
    code, out, _ = run("models")
    assert code == 0 and "export" in out


def test_one_frame_is_one_frame(mp4_clip, tmp_path):
    code, out, err = run(
        "upscale",
        str(mp4_clip.path),
        "-o",
        str(tmp_path / "one.mkv"),
        "--model",
        "bicubic",
        "--frames",
        "1",
        "--preset",
        "ultrafast",
    )
    assert code == 0, err
    assert ": 1 frame 640x480 " in out and "1 frames" not in out
    assert "1 audio / 0 subtitle stream kept" in out


def test_an_854x480_output_is_shown_as_16_9(clips, tmp_path):
    wide = clips.make("wide.mkv", vcodec="libx264", size=(176, 120), sar=Fraction(40, 33), frames=4)  # 16:9 SD
    code, out, err = run(
        "upscale",
        str(wide.path),
        "-o",
        str(tmp_path / "w.mkv"),
        "--model",
        "bicubic",
        "--height",
        "480",
        "--preset",
        "ultrafast",
        "--json",
    )
    assert code == 0, err
    r = json.loads(out)
    assert (r["width"], r["height"], r["display_aspect"]) == (854, 480, "16:9")
    from vhsup.wording import aspect_label

    assert [aspect_label(Fraction(*wh)) for wh in ((4, 3), (15, 11), (1920, 1080), (2048, 858))] == [
        "4:3",
        "15:11",
        "16:9",
        "2.39:1",
    ]


def test_probe_and_bench_options_are_explained_and_bench_codec_is_checked(mp4_clip):
    _, probe_help, _ = run("probe", "--help")
    for flag in ("--ivtc", "--crop"):
        line = next(line for line in probe_help.splitlines() if line.strip().startswith(flag))
        assert len(line.split()) > 1, line  # the flag has words after it
    _, bench_help, _ = run("bench", "--help")
    for flag in ("--model", "--codec"):
        line = next(line for line in bench_help.splitlines() if line.strip().startswith(flag))
        assert len(line.split()) > 1 or "[" in line, line
    code, _, err = run("bench", str(mp4_clip.path), "--codec", "libx246")
    assert code == 2 and "'libx246' is not one of" in err
