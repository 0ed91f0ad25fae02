"""SIGTERM and SIGHUP stop every long command as Ctrl-C does.

``timeout``, a closed terminal, systemd and ``docker stop`` end a run with
SIGTERM or SIGHUP. Each test starts a real ``python -m vhsup`` process on a
tiny real clip, waits until it is writing (a partial file, a PNG, a metrics
line), signals it and checks what a user finds afterwards: exit status
128 + signal, one line saying so, no partial or temp file, no output under a
final name, the input untouched, and a run that can be resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import mediagen

LEFTOVER_MARKS = (".vhsup-partial-", ".part.")


def _start(*args: str) -> subprocess.Popen:
    """``python -m vhsup ARGS`` in its own session, so a signal to its group reaches only it and its workers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "vhsup", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _wait_until(proc: subprocess.Popen, ready: Callable[[], bool], what: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no sign of {what} within {within} s")


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if any(mark in p.name for mark in LEFTOVER_MARKS)]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return True
        if fields[0] == "Z":  # exited, not yet reaped
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stop(proc: subprocess.Popen, sig: int, *, group: bool = False) -> tuple[str, str]:
    if group:  # a closed terminal or `timeout`: the whole process group gets it
        os.killpg(proc.pid, sig)
    else:  # `docker stop`, `kill PID`: the main process only
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_sigterm_stops_an_upscale_leaving_nothing(dvd_clip, tmp_path):
    before = _sha(dvd_clip.path)
    dst = tmp_path / "out.mkv"
    proc = _start("upscale", str(dvd_clip.path), "-o", str(dst), "--model", "compact-x4", "--tile", "0")
    _wait_until(proc, lambda: bool(_leftovers(tmp_path)), "a partial output")
    _, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [f"vhsup: SIGTERM: interrupted; nothing was written to {dst}"]
    assert list(tmp_path.iterdir()) == []
    assert _sha(dvd_clip.path) == before


def test_sighup_to_the_group_stops_chunk_workers_and_removes_their_partials(clips, tmp_path):
    clip = clips.make("hup.mkv", vcodec="ffv1", size=(128, 96), frames=60, audio="flac")
    before = _sha(clip.path)
    dst = tmp_path / "out.mkv"
    proc = _start(
        "upscale",
        str(clip.path),
        "-o",
        str(dst),
        "--model",
        "compact-x4",
        "--tile",
        "0",
        "--workers",
        "2",
        "--codec",
        "ffv1",
    )
    # Both workers writing their chunk: a signal now must stop them mid-file.
    _wait_until(proc, lambda: len(_leftovers(tmp_path)) >= 2, "two partial chunks")
    workers = _children(proc.pid)
    assert workers
    _, err = _stop(proc, signal.SIGHUP, group=True)
    assert proc.returncode == 129, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vhsup: SIGHUP: interrupted; nothing was written to {dst}; "), err
    assert all(_gone(pid) for pid in workers)
    assert not dst.exists()
    assert _leftovers(tmp_path) == []
    assert _sha(clip.path) == before


def _manifest(out: Path) -> list[dict]:
    with sqlite3.connect(out / ".vhsup" / "jobs.db") as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT * FROM jobs ORDER BY input")]


@pytest.mark.slow
def test_sigterm_to_a_batch_stops_its_worker_and_the_rerun_finishes_the_job(clips, tmp_path):
    from vhsup.batch.cli import batch

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    clip = clips.make("batch_term.mkv", vcodec="ffv1", size=(96, 64), frames=40)
    (src / "tape.mkv").write_bytes(clip.path.read_bytes())
    before = _sha(src / "tape.mkv")
    opts = ["--model", "compact-x4", "--tile", "0", "--preset", "ultrafast"]
    proc = _start("batch", str(src), "--out", str(out), *opts, "--quiet")
    _wait_until(proc, lambda: out.exists() and bool(_leftovers(out)), "a partial output")
    workers = _children(proc.pid)
    stdout, err = _stop(proc, signal.SIGTERM)  # the parent only: it must stop its worker itself
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM; run the same command again to continue" in stdout.splitlines()[0]
    assert all(_gone(pid) for pid in workers)
    rows = _manifest(out)
    assert [(r["input"], r["state"], r["attempts"]) for r in rows] == [("tape.mkv", "interrupted", 0)]
    assert not (out / "tape.mkv").exists() and _leftovers(out) == []
    assert _sha(src / "tape.mkv") == before

    result = CliRunner().invoke(batch, [str(src), "--out", str(out), *opts, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [(j["input"], j["state"], j["action"]) for j in summary["jobs"]] == [("tape.mkv", "done", "ran")]
    assert [i for _, i in mediagen.read_indices(out / "tape.mkv")] == list(range(40))
    assert _leftovers(out) == []


def test_sigterm_stops_extract_with_only_whole_listed_pngs(clips, tmp_path):
    clip = clips.make("extract_term.mkv", vcodec="ffv1", size=(320, 240), frames=300)
    out = tmp_path / "frames"
    proc = _start("extract", str(clip.path), "--out", str(out), "--count", "300", "--min-gap", "0")
    _wait_until(proc, lambda: out.exists() and any(out.glob("*.png")), "the first PNG")
    _, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhsup: SIGTERM: interrupted; the "), err
    assert lines[0].endswith(f"written are listed in {out / 'manifest.jsonl'}")
    assert _leftovers(tmp_path) == []
    pngs = sorted(p.name for p in out.glob("*.png"))
    listed = [json.loads(line)["frame"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert pngs and sorted(listed) == pngs  # every PNG is listed, every listed PNG exists
    assert len(pngs) < 300
    for name in pngs:
        assert cv2.imread(str(out / name)).shape == (240, 320, 3)  # whole, decodable pictures


def test_sigterm_checkpoints_a_training_run_that_resume_continues(tmp_path):
    import torch
    from safetensors.torch import save_file

    from vhsup.arch import build
    from vhsup.train import checkpoint as ckpt
    from vhsup.train.cli import train as train_cmd
    from vhsup.train.validate import MetricsLog

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(frames / f"f{i}.png"), mediagen.shapes_frame(rng, 48, 64)[:, :, ::-1])
    torch.manual_seed(0)
    net = build(
        "compact", {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_conv": 2, "upscale": 4, "act": "prelu"}
    )
    model = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(model))
    run = tmp_path / "run"
    proc = _start(
        "train",
        "--frames",
        str(frames),
        "--model",
        str(model),
        "--out",
        str(run),
        "--patch",
        "32",
        "--batch",
        "2",
        "--steps",
        "100000",
        "--no-perceptual",
        "--no-gan",
        "--val-every",
        "0",
        "--save-every",
        "100000",
        "--degradation",
        "none",
        "--ema",
        "0",
        "--quiet",
    )

    def trained() -> bool:
        log = run / "metrics.jsonl"
        return log.exists() and sum(1 for r in MetricsLog.read(run) if r["kind"] == "train") >= 2

    _wait_until(proc, trained, "two training steps")
    _, err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, err
    saved = ckpt.list_checkpoints(run)
    assert len(saved) == 1
    step = saved[0][0]
    assert err.strip().splitlines()[-1] == (
        f"vhsup: SIGTERM: stopped at step {step} of 100000; the checkpoint is "
        f"saved: continue with `vhsup train --resume {run}`"
    )
    assert _leftovers(run) == []

    res = CliRunner().invoke(
        train_cmd, ["--resume", str(run), "--steps", str(step + 2), "--quiet"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    steps = [r["step"] for r in MetricsLog.read(run) if r["kind"] == "train"]
    assert steps == list(range(1, step + 3))
    assert [s for s, _ in ckpt.list_checkpoints(run)][-1] == step + 2


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signals_are_left_alone_outside_a_command(sig, status):
    """Importing vhsup (the Python API) installs no handler; the CLI's go away when it returns."""
    code = (
        f"import signal, vhsup.cli, vhsup.batch, vhsup.chunked, vhsup.train.cli\n"
        f"assert signal.getsignal({int(sig)}) is signal.SIG_DFL\n"
        f"from vhsup.signals import interrupts, exit_status\n"
        f"try:\n"
        f"    with interrupts():\n"
        f"        signal.raise_signal({int(sig)})\n"
        f"except KeyboardInterrupt:\n"
        f"    pass\n"
        f"assert exit_status() == {status}, exit_status()\n"
        f"assert signal.getsignal({int(sig)}) is signal.SIG_DFL\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
