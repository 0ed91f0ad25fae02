"""The benchmark's anchor (vhsup.eval.anchor): vs_temporalfix run in its own Python 3.12 venv.

The tests that run the filter need the anchor venv (``make anchor-venv``)
and skip, saying why, without it; CI does not build it. The tests of what
happens when it cannot run (a missing venv, an interpreter without the
packages, a broken one) need nothing and always run: they use real
interpreters and real directories, no stand-ins.

Pictures are scikit-image's astronaut (hair, fabric, fine edges) at small
sizes, so that a run takes a second or two on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import pytest
from skimage import data

from vhsup.errors import VhsupError
from vhsup.eval import anchor
from vhsup.eval.metrics import e_warp, psnr_y


@pytest.fixture
def ready():
    reason = anchor.available()
    if reason is not None:
        pytest.skip(f"the vs_temporalfix anchor cannot run: {reason}")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's directory set to an empty one of the test's own, to see what a call leaves there."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _picture(w: int, h: int) -> np.ndarray:
    return cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()) for x, y in zip(a, b))


# --- it runs: count, order, size and colour ---------------------------------------------------------


def test_static_clip_comes_back_unchanged(ready, private_tmp):
    # A clip with nothing moving and nothing flickering is what the filter leaves alone: with
    # its defaults every code comes back (RGB -> 16-bit YUV 4:4:4 -> RGB is exact). Odd sizes.
    pic = _picture(161, 121)
    frames = [pic.copy() for _ in range(8)]
    out = anchor.temporalfix(frames)
    assert len(out) == 8
    assert all(f.shape == (121, 161, 3) and f.dtype == np.uint8 for f in out)
    assert _max_diff(out, frames) <= 1
    assert list(private_tmp.iterdir()) == []  # its temporary directory is gone


def test_strength_zero_keeps_every_frame_in_order(ready):
    # Unrelated frames (random pictures) at strength 0 pass through exactly, in order.
    rng = np.random.default_rng(3)
    frames = list(rng.integers(0, 256, size=(7, 72, 96, 3), dtype=np.uint8))
    out = anchor.temporalfix(frames, strength=0, tr=3)
    assert len(out) == 7
    assert _max_diff(out, frames) <= 1


def test_order_of_a_pan_is_kept_at_full_strength(ready):
    # A pan at 3 px a frame: each output frame is its own input frame, not a neighbour's.
    big = _picture(256, 192)
    frames = [big[40:136, 20 + 3 * t : 148 + 3 * t].copy() for t in range(10)]
    out = anchor.temporalfix(frames)
    assert len(out) == 10
    for t in range(10):
        own = psnr_y(out[t], frames[t])
        assert own > 35.0, (t, own)
        for other in (t - 1, t + 1):
            if 0 <= other < 10:
                assert own > psnr_y(out[t], frames[other]) + 10.0, (t, other)


def test_clips_below_the_filters_minimum_go_through(ready):
    # Classic mode itself refuses clips under 4 frames or 64 pixels; the worker grows them and cuts back.
    rng = np.random.default_rng(4)
    for n, h, w in [(1, 8, 8), (3, 48, 97)]:
        frames = list(rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8))
        out = anchor.temporalfix(frames, strength=0)
        assert len(out) == n and out[0].shape == (h, w, 3)
        assert _max_diff(out, frames) <= 1


def test_interrupt_removes_the_temporary_files_and_the_worker(ready, tmp_path):
    # Ctrl-C while the worker renders: the caller gets KeyboardInterrupt, the worker is ended and
    # the private temporary directory (input and half-written output) is gone.
    script = (
        "import numpy as np\n"
        "from vhsup.eval import anchor\n"
        "frames = list(np.random.default_rng(0).integers(0, 256, (60, 320, 480, 3), dtype=np.uint8))\n"
        "anchor.temporalfix(frames)\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("vhsup-anchor-*/out.npy")):  # the worker has started writing
            assert child.poll() is None and time.monotonic() < deadline, "the worker never started writing"
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert list(tmp_path.iterdir()) == []
    workers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)  # its argv names the dir
    assert workers.stdout == ""


# --- what it is there for: less shimmer -----------------------------------------------------------------


def test_shimmer_on_a_static_picture_is_reduced(ready):
    # Per-frame random texture noise (sigma 6) on a still picture: flicker (E_warp under zero motion)
    # drops and every frame gets closer to the clean picture. Measured: E_warp x 0.38 and +2.9 dB or more here
    # (0.32 at 960x640, bench/RESULTS.md).
    pic = _picture(256, 192)
    rng = np.random.default_rng(5)
    noisy = [np.clip(pic + rng.normal(0.0, 6.0, pic.shape), 0, 255).astype(np.uint8) for _ in range(12)]
    still = [np.zeros((192, 256, 2), np.float32)] * 11
    out = anchor.temporalfix(noisy)
    assert e_warp(out, still) < 0.6 * e_warp(noisy, still)
    for before, after in zip(noisy, out):
        assert psnr_y(after, pic) > psnr_y(before, pic) + 1.5


# --- when it cannot run, it says exactly why, in one line ----------------------------------------------


def test_failure_inside_the_filter_is_one_line_and_leaves_nothing(ready, private_tmp):
    # A 30:1 strip is beyond the filter's box blur: its own message comes back, nothing is left behind.
    frames = [np.full((64, 2000, 3), 128, np.uint8)] * 4
    with pytest.raises(VhsupError) as err:
        anchor.temporalfix(frames)
    message = str(err.value)
    assert "\n" not in message
    assert "vs_temporalfix on 4 frames of 2000x64 failed" in message and "BoxBlur" in message
    assert list(private_tmp.iterdir()) == []


def test_missing_venv_is_named(tmp_path, monkeypatch, private_tmp):
    venv = tmp_path / "no-such-venv"
    monkeypatch.setenv("VHSUP_ANCHOR_VENV", str(venv))
    reason = anchor.available()
    assert reason is not None and str(venv) in reason and "make anchor-venv" in reason
    with pytest.raises(VhsupError, match="make anchor-venv"):
        anchor.temporalfix([np.zeros((8, 8, 3), np.uint8)])
    assert list(private_tmp.iterdir()) == []


def test_missing_python312_is_said(tmp_path, monkeypatch):
    # No pyenv and no python3.12 on PATH, and an empty pyenv root: the reason says 3.12 is missing too.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PYENV_ROOT", str(empty))
    monkeypatch.setenv("VHSUP_ANCHOR_VENV", str(tmp_path / "venv"))
    assert anchor.find_python312() is None
    reason = anchor.available()
    assert reason is not None and "needs Python 3.12" in reason and "\n" not in reason


def test_interpreter_without_the_packages_says_which_import_fails(tmp_path, monkeypatch):
    # A "venv" whose python is this test's own interpreter (3.11, no vapoursynth): the reason names the import.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    monkeypatch.setenv("VHSUP_ANCHOR_VENV", str(venv))
    reason = anchor.available()
    assert reason is not None and "\n" not in reason
    assert reason.startswith(f"vs_temporalfix does not run in {venv}: cannot import ")
    assert "vapoursynth" in reason or "numpy" in reason


def test_broken_interpreter_is_named(tmp_path, monkeypatch):
    # The venv's python is a dangling link (its Python 3.12 was removed).
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(tmp_path / "gone" / "python3.12", venv / "bin" / "python")
    monkeypatch.setenv("VHSUP_ANCHOR_VENV", str(venv))
    reason = anchor.available()
    assert reason is not None and "\n" not in reason
    assert f"the anchor venv's Python {venv / 'bin' / 'python'} does not run" in reason


def test_bad_arguments_are_refused_before_anything_runs():
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="at least one frame"):
        anchor.temporalfix([])
    with pytest.raises(ValueError, match="share one size"):
        anchor.temporalfix([frame, np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        anchor.temporalfix([frame.astype(np.float32)])
    with pytest.raises(ValueError, match="tr must be"):
        anchor.temporalfix([frame], tr=0)
    with pytest.raises(ValueError, match="strength must be"):
        anchor.temporalfix([frame], strength=-1)
