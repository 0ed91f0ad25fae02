"""Every file vhsup writes: never an input, never clobbered, checked before work, readable by others.

The --compare still gets the same guards as -o; they all run before a frame
is decoded, so a refused run leaves the folder exactly as it was. Files are
written with the umask's mode, not mkstemp's 0600.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mediagen
from vhsup import upscale_video
from vhsup.cli import main
from vhsup.errors import VhsupError

FAST = ["--model", "bicubic", "--preset", "ultrafast", "--frames", "3", "--quiet"]


@pytest.fixture
def victim(odd_clip, tmp_path) -> Path:
    """A writable copy of a real clip: what a user's own tape file is."""
    path = tmp_path / "victim.mkv"
    shutil.copyfile(odd_clip.path, path)
    path.chmod(0o644)
    return path


def _upscale(*args: str):
    return CliRunner().invoke(main, ["upscale", *args])


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.iterdir())}


def test_compare_onto_the_input_is_refused_and_the_input_survives(victim, tmp_path):
    before = _listing(tmp_path)
    r = _upscale(str(victim), "-o", str(tmp_path / "out.mkv"), "--compare", str(victim), *FAST)
    assert r.exit_code == 2
    assert (
        r.stderr.strip() == f"vhsup: error: {victim}: --compare picture would overwrite the input; choose another name"
    )
    assert _listing(tmp_path) == before  # the video is intact and no output was started


def test_compare_through_a_link_to_the_input_is_refused(victim, tmp_path):
    link = tmp_path / "still.png"
    link.symlink_to(victim)
    before = victim.read_bytes()
    r = _upscale(str(victim), "-o", str(tmp_path / "out.mkv"), "--compare", str(link), *FAST)
    assert r.exit_code == 2 and "would overwrite the input" in r.stderr
    assert victim.read_bytes() == before and link.is_symlink()
    assert not (tmp_path / "out.mkv").exists()


def test_compare_equal_to_the_output_is_refused(victim, tmp_path):
    out = tmp_path / "same.png"
    r = _upscale(str(victim), "-o", str(out), "--compare", str(out), *FAST)
    assert r.exit_code == 2
    assert "same file as another output of this run" in r.stderr and str(out) in r.stderr
    assert not out.exists()


def test_an_existing_still_needs_overwrite_and_is_checked_before_the_upscale(victim, tmp_path):
    still, out = tmp_path / "still.png", tmp_path / "out.mkv"
    still.write_bytes(b"someone's picture")
    r = _upscale(str(victim), "-o", str(out), "--compare", str(still), *FAST)
    assert r.exit_code == 2
    assert (
        r.stderr.strip() == f"vhsup: error: {still}: --compare picture already exists; pass --overwrite to replace it"
    )
    assert still.read_bytes() == b"someone's picture" and not out.exists()
    r = _upscale(str(victim), "-o", str(out), "--compare", str(still), "--overwrite", *FAST)
    assert r.exit_code == 0, r.stderr
    assert still.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.exists()


def test_a_compare_folder_that_does_not_exist_fails_before_any_work(victim, tmp_path):
    out = tmp_path / "out.mkv"
    r = _upscale(str(victim), "-o", str(out), "--compare", str(tmp_path / "nodir" / "x.png"), *FAST)
    assert r.exit_code == 2
    assert f"{tmp_path / 'nodir'}: the folder for the --compare picture does not exist" in r.stderr
    assert not out.exists()  # refused up front, not after the whole upscale


def test_compare_writes_the_format_its_extension_names(victim, tmp_path):
    r = _upscale(str(victim), "-o", str(tmp_path / "out.mkv"), "--compare", str(tmp_path / "c.jpg"), *FAST)
    assert r.exit_code == 0, r.stderr
    data = (tmp_path / "c.jpg").read_bytes()
    assert data[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] > 2 * 99  # two panels of the upscaled 99-px-wide clip


def test_compare_with_an_unknown_extension_is_refused_up_front(victim, tmp_path):
    out = tmp_path / "out.mkv"
    r = _upscale(str(victim), "-o", str(out), "--compare", str(tmp_path / "c.mkv"), *FAST)
    assert r.exit_code == 2 and "cannot tell the picture format from '.mkv'" in r.stderr
    assert not out.exists() and not (tmp_path / "c.mkv").exists()


def test_output_that_is_a_directory_says_so_first(victim, tmp_path):
    folder = tmp_path / "folder.mkv"
    folder.mkdir()
    r = _upscale(str(victim), "-o", str(folder), *FAST)
    assert r.exit_code == 2 and r.stderr.strip() == f"vhsup: error: {folder}: output is a directory; give a file name"


def test_the_python_api_names_the_keyword_not_the_flag(victim, tmp_path):
    out = tmp_path / "exists.mkv"
    out.write_bytes(b"keep")
    with pytest.raises(VhsupError, match=r"output already exists; pass overwrite=True to replace it"):
        upscale_video(victim, out, model="bicubic")
    assert out.read_bytes() == b"keep"


# --- file modes ---------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_compare_still_and_video_are_readable_by_others(victim, tmp_path, umask_022):
    out, still = tmp_path / "out.mkv", tmp_path / "still.png"
    r = upscale_video(victim, out, model="bicubic", preset="ultrafast", frames=2, compare=still)
    assert r.compare == str(still)
    assert _mode(still) == 0o644 and _mode(out) == 0o644


def test_written_files_follow_a_stricter_umask_too(tmp_path):
    from vhsup.preview import write_png

    old = os.umask(0o027)
    try:
        path = write_png(tmp_path / "p.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    assert _mode(path) == 0o640


def test_exported_onnx_is_readable_by_others(tmp_path, umask_022):
    pytest.importorskip("onnx")
    out = tmp_path / "bicubic.onnx"
    r = CliRunner().invoke(main, ["models", "export", "bicubic-x2", str(out), "--no-check"])
    assert r.exit_code == 0, r.stderr
    assert _mode(out) == 0o644


def test_extract_pngs_and_manifest_are_readable_by_others(odd_clip, tmp_path, umask_022):
    frames = tmp_path / "frames"
    r = CliRunner().invoke(main, ["extract", str(odd_clip.path), "--out", str(frames), "--count", "2"])
    assert r.exit_code == 0, r.stderr
    written = sorted(p for p in frames.rglob("*") if p.is_file())
    assert len([p for p in written if p.suffix == ".png"]) == 2
    assert written and all(_mode(p) == 0o644 for p in written), {p.name: oct(_mode(p)) for p in written}


def test_degradation_preview_and_demo_sample_are_readable_by_others(tmp_path, umask_022):
    from vhsup.samples import make_vhs_sample
    from vhsup.train.degrade import load_spec, show_degradations

    hr = [mediagen.shapes_frame(np.random.default_rng(0), 64, 64)]
    png = show_degradations(hr, load_spec("vhs"), 4, 1, tmp_path / "grid.png", patch=32)
    sample = make_vhs_sample(tmp_path / "sample.avi", seconds=0.2)
    assert _mode(Path(png)) == 0o644 and _mode(sample.path) == 0o644
    assert sum(1 for _ in mediagen.decode_video(sample.path)) == 6  # 0.2 s of 29.97 fps, a real clip
