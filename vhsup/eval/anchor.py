"""The benchmark's anchor: vs_temporalfix, the post-filter users bolt on after per-frame upscalers.

vs_temporalfix (Apache-2.0, ``vs-temporalfix`` on PyPI) is a VapourSynth
script. It needs Python >= 3.12 and VapourSynth's wheels, which vhsup's own
venv (Python 3.11, torch) does not have and must not get. So it lives in a
venv of its own, ``.venv-anchor`` at the repository root, built by
``make anchor-venv`` (or the venv named by ``VHSUP_ANCHOR_VENV``), and runs
there as a subprocess: :mod:`vhsup.eval.temporalfix_worker`, a script that
imports only numpy, vapoursynth and vs_temporalfix.

Only its classic mode runs here: it is CPU-only (the model mode needs
TensorRT). ``strength`` and ``tr`` are classic's own, with its defaults
(500 and a temporal radius of 6 frames each side).

Frames travel through a ``.npy`` file (N x H x W x 3 uint8 RGB) in a
private temporary directory that is removed however the call ends; the
worker writes its output the same way, one frame at a time, and the count,
order and size come back exactly as they went in. For how colour is
handled (RGB in, 16-bit YUV 4:4:4 inside, RGB out; a clip the filter
leaves alone comes back unchanged) see the worker's notes.

:func:`available` says whether the anchor can run, and if not exactly why,
in one line; :func:`temporalfix` runs it and raises :class:`VhsupError`
(one line) when it cannot.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vhsup.errors import VhsupError
from vhsup.eval.metrics import check_rgb

__all__ = ["DEFAULT_STRENGTH", "DEFAULT_TR", "available", "find_python312", "temporalfix", "venv_dir"]

DEFAULT_STRENGTH = 500
DEFAULT_TR = 6

# How long the worker's self-check may take (it renders one 128x128 frame).
_CHECK_TIMEOUT_S = 300.0

WORKER = Path(__file__).with_name("temporalfix_worker.py")
_REPO = Path(__file__).resolve().parents[2]


def venv_dir() -> Path:
    """The anchor venv: ``$VHSUP_ANCHOR_VENV``, else ``.venv-anchor`` at the repository root."""
    named = os.environ.get("VHSUP_ANCHOR_VENV")
    return Path(named) if named else _REPO / ".venv-anchor"


def _python_in(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _runs_312(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 12))"],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _pyenv_root() -> str:
    """``pyenv root``, else ``$PYENV_ROOT``, else ``~/.pyenv``."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            done = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")


def find_python312() -> str | None:
    """A Python 3.12 interpreter that runs, looked for as ``make anchor-venv`` does; None if there is none.

    In order: ``python3.12`` on PATH (a pyenv shim that has no 3.12 to run
    does not count), then pyenv's own installs (``$(pyenv root)/versions/3.12.*``,
    the newest first).
    """
    candidates = []
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(on_path)
    root = _pyenv_root()
    candidates += sorted(glob.glob(os.path.join(root, "versions", "3.12.*", "bin", "python3.12")), reverse=True)
    return next((c for c in candidates if _runs_312(c)), None)


def _worker_env() -> dict[str, str]:
    """The environment for the 3.12 interpreter, without anything that points it at vhsup's Python."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _last_error(stderr: str) -> str:
    """The worker's one-line ``error:`` message, else the last non-empty line of its stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:") :].strip()
    return lines[-1] if lines else "no message"


@functools.lru_cache(maxsize=8)
def _check(venv: Path) -> str | None:
    python = _python_in(venv)
    if not os.path.lexists(python):
        reason = f"the anchor venv {venv} is missing: build it with `make anchor-venv`"
        if find_python312() is None:
            reason += (
                " (it needs Python 3.12, and none runs here: no python3.12 on PATH or under pyenv's versions/3.12.*)"
            )
        return reason
    try:
        done = subprocess.run(
            [str(python), "-I", str(WORKER), "check"],
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT_S,
            env=_worker_env(),
        )
    except OSError as e:
        return f"the anchor venv's Python {python} does not run: {e.strerror or e}"
    except subprocess.TimeoutExpired:
        return f"vs_temporalfix's self-check in {venv} took over {_CHECK_TIMEOUT_S:.0f} s"
    if done.returncode != 0:
        return f"vs_temporalfix does not run in {venv}: {_last_error(done.stderr)}"
    return None


def available() -> str | None:
    """None when the anchor can run; otherwise one line saying exactly why not.

    The check runs the worker's self-check (imports, plugins, one rendered
    frame) in the anchor venv, once per venv per process.
    """
    return _check(venv_dir().absolute())


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int, int]:
    if len(frames) == 0:
        raise ValueError("temporalfix needs at least one frame")
    first = check_rgb(frames[0], "frame 0")
    for i, frame in enumerate(frames):
        if check_rgb(frame, f"frame {i}").shape != first.shape:
            raise ValueError(f"frame {i} is {frame.shape}, frame 0 {first.shape}: a clip's frames share one size")
    return len(frames), first.shape[0], first.shape[1]


def temporalfix(
    frames: Sequence[np.ndarray],
    *,
    strength: int = DEFAULT_STRENGTH,
    tr: int = DEFAULT_TR,
    threads: int | None = None,
    timeout: float | None = None,
) -> list[np.ndarray]:
    """vs_temporalfix's classic mode over one clip's per-frame upscaler outputs.

    ``frames`` are H x W x 3 uint8 RGB, in order; the result has the same
    count, order and size, uint8 RGB. ``strength`` (>= 0) and ``tr``
    (1..25) are classic's. ``threads`` caps VapourSynth's threads (default:
    all cores); ``timeout`` (seconds) bounds the run. Raises VhsupError
    (one line) when the anchor is not available or the run fails.
    """
    n, h, w = _check_frames(frames)
    if isinstance(strength, bool) or not isinstance(strength, int) or strength < 0:
        raise ValueError(f"strength must be an integer >= 0, not {strength!r}")
    if isinstance(tr, bool) or not isinstance(tr, int) or not 1 <= tr <= 25:
        raise ValueError(f"tr must be an integer from 1 to 25, not {tr!r}")
    reason = available()
    if reason is not None:
        raise VhsupError(reason)
    python = _python_in(venv_dir().absolute())
    what = f"vs_temporalfix on {n} frame{'' if n == 1 else 's'} of {w}x{h}"
    with tempfile.TemporaryDirectory(prefix="vhsup-anchor-") as tmp:
        src, dst = os.path.join(tmp, "in.npy"), os.path.join(tmp, "out.npy")
        staged = np.lib.format.open_memmap(src, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
        for i, frame in enumerate(frames):
            staged[i] = frame
        staged.flush()
        del staged
        command = [str(python), "-I", str(WORKER), "run", src, dst, "--strength", str(strength), "--tr", str(tr)]
        if threads:
            command += ["--threads", str(int(threads))]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_worker_env())
        except subprocess.TimeoutExpired:
            raise VhsupError(f"{what} took over {timeout:g} s") from None
        except OSError as e:
            raise VhsupError(f"{what}: the anchor venv's Python does not run: {e.strerror or e}", python) from None
        if done.returncode != 0:
            raise VhsupError(f"{what} failed: {_last_error(done.stderr)}")
        try:
            out = np.load(dst)
        except (OSError, ValueError) as e:
            raise VhsupError(f"{what}: the worker's output cannot be read: {e}") from None
    if out.shape != (n, h, w, 3) or out.dtype != np.uint8:
        raise VhsupError(f"{what} gave back {out.dtype} {out.shape}, expected uint8 {(n, h, w, 3)}")
    return list(out)
