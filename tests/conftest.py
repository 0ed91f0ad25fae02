"""Shared fixtures: real clips built once per test session by tests/mediagen.py.

Clips are read-only files (mode 0444) in a session temp folder: a test that
opens its input for writing fails loudly instead of corrupting the clip the
next test reads. Build your own variants with ``clips.make``; write outputs
to ``tmp_path``.

Named clips (see mediagen.PRESETS for the exact parameters):

    dvd_clip   352x240 MPEG-2 TFF in a DVD program stream (.vob) + AC-3
    dv_clip    720x480 DV (yuv411p, BFF, SAR 8:9) in AVI + PCM
    odd_clip   99x67 FFV1 in MKV + FLAC
    mp4_clip   160x120 H.264 in MP4 + AAC
    vfr_clip   160x120 H.264 VFR in MKV + AAC, first frame at 10 s
    ts_clip    160x120 MPEG-2 TFF in MPEG-TS + MP2
    subs_clip  128x96 FFV1 in MKV + AC-3 + PCM + subrip + chapters + a font
               attachment; video from 0.5 s, audio 0.1 s before it
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import mediagen  # noqa: E402


class ClipFactory:
    """Builds clips on first use and hands out the same ClipInfo afterwards."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._cache: dict[object, mediagen.ClipInfo] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> mediagen.ClipInfo:
        """A named clip from mediagen.PRESETS."""
        filename, kwargs = mediagen.PRESETS[name]
        return self.make(filename, **kwargs)

    def make(self, filename: str, **kwargs) -> mediagen.ClipInfo:
        """A clip with mediagen.make_clip's arguments, built once per session
        for each distinct (filename, arguments)."""
        key = (filename, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        with self._lock:
            if key not in self._cache:
                sub = self.directory / f"c{len(self._cache):03d}"
                sub.mkdir()
                info = mediagen.make_clip(sub / filename, **kwargs)
                os.chmod(info.path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
                self._cache[key] = info
            return self._cache[key]


@pytest.fixture(scope="session", autouse=True)
def _private_weight_cache(tmp_path_factory):
    """Converted weights go to a per-session folder, not the user's cache:
    the suite proves the importer works from the installed package every run.
    Where that package is absent (a bare GPU machine, sent converted weights
    in $VHSUP_CACHE_DIR by bench/gpu_check.py's caller) the given cache is used."""
    old = os.environ.get("VHSUP_CACHE_DIR")
    from vhsup.weights.sources import installed_ncnn_dir

    if old and installed_ncnn_dir() is None:
        yield
        return
    os.environ["VHSUP_CACHE_DIR"] = str(tmp_path_factory.mktemp("weights-cache"))
    yield
    if old is None:
        os.environ.pop("VHSUP_CACHE_DIR", None)
    else:
        os.environ["VHSUP_CACHE_DIR"] = old


_LOOP_PROBE = """
import torch, triton, triton.language as tl
@triton.jit
def k(c_ptr, o_ptr):
    n = tl.load(c_ptr)
    acc = 0
    for i in range(0, n):
        acc += i
    tl.store(o_ptr, acc)
c = torch.tensor([4], dtype=torch.int32); o = torch.zeros(1, dtype=torch.int32)
k[(1,)](c, o)
assert int(o[0]) == 6, o
"""


@pytest.fixture(scope="session")
def triton_interpreter():
    """Skips unless Triton's CPU interpreter can run the switched-conv kernels'
    loops, whose bounds are loaded values (Triton 3.6's cannot under numpy 2.4+:
    it converts 1-element arrays with int()). Real CUDA runs are unaffected."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", _LOOP_PROBE], env=env, capture_output=True, text=True, timeout=300)
    if run.returncode:
        import triton

        last = (run.stderr.strip().splitlines() or ["?"])[-1][:160]
        pytest.skip(f"triton {triton.__version__}'s interpreter cannot run a loop with a loaded bound: {last}")


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> ClipFactory:
    return ClipFactory(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def dvd_clip(clips) -> mediagen.ClipInfo:
    return clips.get("dvd")


@pytest.fixture(scope="session")
def dv_clip(clips) -> mediagen.ClipInfo:
    return clips.get("dv")


@pytest.fixture(scope="session")
def odd_clip(clips) -> mediagen.ClipInfo:
    return clips.get("odd")


@pytest.fixture(scope="session")
def mp4_clip(clips) -> mediagen.ClipInfo:
    return clips.get("mp4")


@pytest.fixture(scope="session")
def vfr_clip(clips) -> mediagen.ClipInfo:
    return clips.get("vfr")


@pytest.fixture(scope="session")
def ts_clip(clips) -> mediagen.ClipInfo:
    return clips.get("ts")


@pytest.fixture(scope="session")
def subs_clip(clips) -> mediagen.ClipInfo:
    return clips.get("subs")


@pytest.fixture
def two_threads():
    """torch on two threads for the test, whatever the suite set before."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)
