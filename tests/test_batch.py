"""`vhsup batch`: a library of real clips through discovery, the manifest, isolated workers and resume.

Runs use the classical ``bicubic`` model and x264 ultrafast on tiny clips,
so each batch costs about a worker start (one torch import) plus well under
a second of upscaling. Kill tests run the batch as a subprocess and poll the
manifest to strike while a job is writing its partial file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import mediagen
from vhsup.batch import BatchConfig, Reporter, discover, run_batch
from vhsup.batch.cli import batch
from vhsup.batch.discover import output_paths

FAST = ["--model", "bicubic", "--preset", "ultrafast"]
CLI = [sys.executable, "-c", "from vhsup.batch.cli import batch; batch(prog_name='vhsup batch')"]


def tiny(clips, name: str, frames: int = 6, **kw):
    """A tiny clip of the container its name implies."""
    codec = {".mkv": "ffv1", ".vob": "mpeg2video", ".ts": "mpeg2video", ".avi": "mpeg4"}.get(
        Path(name).suffix, "libx264"
    )
    return clips.make(name, vcodec=codec, size=(64, 48), frames=frames, **kw)


def put(clip, dst: Path) -> Path:
    """A writable copy of a (read-only) session clip."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip.path, dst)
    return dst


def run_cli(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(batch, [*args, "--json"], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def frame_count(path: Path) -> int:
    return len(mediagen.read_indices(path))


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".vhsup-partial-" in p.name]


def manifest_rows(out: Path) -> list[dict]:
    with sqlite3.connect(out / ".vhsup" / "jobs.db") as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT * FROM jobs ORDER BY input")]


@pytest.fixture
def library(clips, tmp_path) -> Path:
    """5 clips in nested folders, a garbage .avi, an empty .mkv, and things that are not videos."""
    src = tmp_path / "tapes"
    put(tiny(clips, "a.mp4"), src / "a.mp4")
    put(tiny(clips, "b.mkv"), src / "1990" / "b.mkv")
    put(tiny(clips, "c.vob"), src / "1990" / "xmas" / "c.vob")
    put(tiny(clips, "d.ts"), src / "1991" / "d.ts")
    put(tiny(clips, "e.mkv"), src / "1991" / "capture-no-extension")  # found by probing, not by name
    (src / "garbage.avi").write_bytes(b"this is no video " * 200)
    (src / "1991" / "empty.mkv").write_bytes(b"")
    (src / "notes.txt").write_text("Tape 3: grandma's birthday\n")  # ignored: not a video
    (src / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")
    put(tiny(clips, "h.mkv"), src / ".thumbnails" / "h.mkv")  # hidden folder: skipped
    put(tiny(clips, "h.mkv"), src / ".hidden.mkv")
    return src


def test_library_with_a_garbage_and_an_empty_file_gives_5_done_2_failed_and_exit_3(library, tmp_path):
    out = tmp_path / "tapes-hd"
    code, summary = run_cli(str(library), "--out", str(out), *FAST)
    assert code == 3
    states = {j["input"]: j["state"] for j in summary["jobs"]}
    assert states == {
        "a.mp4": "done",
        "1990/b.mkv": "done",
        "1990/xmas/c.vob": "done",
        "1991/d.ts": "done",
        "1991/capture-no-extension": "done",
        "garbage.avi": "failed",
        "1991/empty.mkv": "failed",
    }
    reasons = {j["input"]: j["error"] for j in summary["jobs"] if j["state"] == "failed"}
    assert "not a video file" in reasons["garbage.avi"]
    assert "empty" in reasons["1991/empty.mkv"]
    assert summary["counts"]["done"] == 5 and summary["counts"]["failed"] == 2
    # The layout is mirrored, every output holds every frame, and nothing else was written.
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".vhsup" not in p.parts)
    assert written == ["1990/b.mkv", "1990/xmas/c.mkv", "1991/capture-no-extension.mkv", "1991/d.mkv", "a.mkv"]
    assert all(frame_count(out / w) == 6 for w in written)
    for j in summary["jobs"]:
        if j["state"] == "done":
            assert j["fps"] > 0 and j["seconds"] > 0

    # `status` tells the same story from the manifest alone.
    res = CliRunner().invoke(batch, ["status", str(out), "--json"])
    status = json.loads(res.stdout)
    assert status["counts"]["done"] == 5 and status["counts"]["failed"] == 2
    assert {j["input"]: j["error"] for j in status["jobs"] if j["state"] == "failed"} == reasons
    # ... with the same absolute paths as the run's own summary.
    assert status["out"] == summary["out"] == str(out.resolve())
    paths = {j["input"]: (j["source"], j["output"]) for j in summary["jobs"]}
    assert {j["input"]: (j["source"], j["output"]) for j in status["jobs"]} == paths
    assert all(Path(s).is_absolute() and Path(o).is_absolute() for s, o in paths.values())
    table = CliRunner().invoke(batch, ["status", str(out)]).stdout
    assert "garbage.avi" in table and "the file is empty" in table

    # Running again does no work: every job reports skipped, no output is touched.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mkv")}
    t0 = time.perf_counter()
    code, again = run_cli(str(library), "--out", str(out), *FAST, "--retries", "0")
    took = time.perf_counter() - t0
    assert code == 3  # the library still has failed files, and the summary names them
    assert [j["action"] for j in again["jobs"]] == ["skipped"] * 7
    assert {j["input"]: j["error"] for j in again["jobs"] if j["state"] == "failed"} == reasons
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mkv")} == before
    assert took < 0.5 * summary["seconds"] + 1.0

    # A library moved as a whole keeps its finished jobs (outputs are recorded relative to OUT).
    moved = tmp_path / "elsewhere" / "tapes-hd"
    moved.parent.mkdir()
    out.rename(moved)
    code, after_move = run_cli(str(library), "--out", str(moved), *FAST, "--retries", "0")
    assert [j["action"] for j in after_move["jobs"]] == ["skipped"] * 7


def test_failed_jobs_are_retried_up_to_retries(clips, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "bad.mkv").write_bytes(b"\x1aE\xdf\xa3 this is not matroska")
    counts = []
    for _ in range(3):
        code, s = run_cli(str(src), "--out", str(out), *FAST, "--retries", "1")
        assert code == 3
        counts.append((s["jobs"][0]["action"], s["jobs"][0]["attempts"]))
    assert counts == [("ran", 1), ("ran", 2), ("skipped", 2)]


@pytest.mark.slow
def test_changed_input_redoes_only_it_and_a_changed_model_redoes_all(clips, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("x.mp4", "y.mp4", "z.mp4"):
        put(tiny(clips, "a.mp4"), src / name)
    code, first = run_cli(str(src), "--out", str(out), *FAST)
    assert code == 0 and first["counts"]["ran"] == 3

    # Replace y's content with a different (longer) clip, and only touch z (new mtime, same bytes):
    # both count as changed; x is left alone.
    put(tiny(clips, "a.mp4", frames=9), src / "y.mp4")
    os.utime(src / "z.mp4", ns=(time.time_ns(), time.time_ns()))
    before = (out / "x.mkv").stat().st_mtime_ns
    code, second = run_cli(str(src), "--out", str(out), *FAST)
    assert code == 0
    assert {j["input"]: (j["action"], j["why"]) for j in second["jobs"]} == {
        "x.mp4": ("skipped", "done"),
        "y.mp4": ("ran", "input changed"),
        "z.mp4": ("ran", "input changed"),
    }
    assert frame_count(out / "y.mkv") == 9 and frame_count(out / "z.mkv") == 6
    assert (out / "x.mkv").stat().st_mtime_ns == before

    # Another model: every job is redone, in place.
    code, fourth = run_cli(str(src), "--out", str(out), "--model", "lanczos", "--preset", "ultrafast")
    assert code == 0
    assert {j["why"] for j in fourth["jobs"]} == {"settings changed"} and fourth["counts"]["ran"] == 3
    rows = manifest_rows(out)
    assert [r["model"] for r in rows] == ["lanczos"] * 3 and len(rows) == 3
    assert sorted(p.name for p in out.glob("*.mkv")) == ["x.mkv", "y.mkv", "z.mkv"]


def test_tile_batch_and_device_keep_a_finished_library_and_precision_redoes_it(clips, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    put(tiny(clips, "a.mp4"), src / "a.mp4")
    code, first = run_cli(str(src), "--out", str(out), *FAST)
    assert code == 0 and first["counts"]["ran"] == 1
    done = (out / "a.mkv").stat().st_mtime_ns

    # Within rounding the same pixels: nothing to redo.
    code, same = run_cli(str(src), "--out", str(out), *FAST, "--tile", "32", "--batch", "2", "--device", "cpu")
    assert code == 0 and [(j["action"], j["why"]) for j in same["jobs"]] == [("skipped", "done")]
    assert (out / "a.mkv").stat().st_mtime_ns == done

    # Another precision gives other pixels: the file is redone, in place.
    code, redone = run_cli(str(src), "--out", str(out), *FAST, "--precision", "fp32")
    assert code == 0 and [(j["action"], j["why"]) for j in redone["jobs"]] == [("ran", "settings changed")]
    assert frame_count(out / "a.mkv") == 6


def _start_and_wait_for_partial(src: Path, out: Path, *extra: str) -> subprocess.Popen:
    """Start a batch subprocess and return once a job is writing its partial output."""
    proc = subprocess.Popen(
        [*CLI, str(src), "--out", str(out), *FAST, "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if partials(out):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"the batch ended before it could be stopped: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no partial output appeared within 60 s")


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_ctrl_c_then_sigkill_then_rerun_finishes_everything_once_with_no_partial_left(clips, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    clip = tiny(clips, "long.mkv", frames=45)
    names = ["t1.mkv", "t2.mkv", "t3.mkv"]
    for name in names:
        put(clip, src / name)

    # Ctrl-C: the batch stops with 130, the job in flight is interrupted (not done) and its partial is gone.
    proc = _start_and_wait_for_partial(src, out)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = manifest_rows(out)
    assert "interrupted" in {r["state"] for r in rows} and "running" not in {r["state"] for r in rows}
    assert partials(out) == []
    for r in rows:  # a file under its final name means done, and only then
        assert (out / r["output"]).exists() == (r["state"] == "done")

    # SIGKILL of the parent: no chance to clean up. Its worker follows it, and the manifest still says `running`.
    proc = _start_and_wait_for_partial(src, out)
    worker_pids = {r["pid"] for r in manifest_rows(out) if r["state"] == "running"}
    proc.kill()
    proc.wait(timeout=10)
    assert worker_pids and all(_gone(pid, within=10) for pid in worker_pids)  # no orphan keeps writing
    assert "running" in {r["state"] for r in manifest_rows(out)}

    code, summary = run_cli(str(src), "--out", str(out), *FAST)
    assert code == 0
    assert summary["counts"]["done"] == 3
    rows = manifest_rows(out)
    assert [r["input"] for r in rows] == names and {r["state"] for r in rows} == {"done"}
    assert sorted(p.name for p in out.glob("*.mkv")) == names  # one output per input, none duplicated
    assert all(frame_count(out / n) == 45 for n in names)
    assert partials(out) == []


def test_discovery_skips_hidden_output_and_partials_and_honours_globs(clips, tmp_path):
    src = tmp_path / "lib"
    clip = tiny(clips, "a.mp4")
    for rel in ("a.mp4", "raw/b.mp4", "raw/deep/c.mp4", "done/d.mp4", "keep/e.avi", ".git/x.mp4"):
        put(clip, src / rel)
    put(clip, src / "up" / "already-upscaled.mp4")  # OUT inside SRC: never an input
    put(clip, src / "keep" / ".e.vhsup-partial-123-abcd.mp4")  # a crashed run's temp file
    (src / "keep" / "e.avi.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    out = src / "up"

    everything = [f.rel for f in discover(src, out=out)]
    assert everything == ["a.mp4", "done/d.mp4", "keep/e.avi", "raw/b.mp4", "raw/deep/c.mp4"]
    assert {f.by for f in discover(src, out=out)} == {"extension"}
    assert [f.rel for f in discover(src, out=out, exclude=["raw"])] == ["a.mp4", "done/d.mp4", "keep/e.avi"]
    assert [f.rel for f in discover(src, out=out, exclude=["raw/deep/*", "*.avi"])] == [
        "a.mp4",
        "done/d.mp4",
        "raw/b.mp4",
    ]
    assert [f.rel for f in discover(src, out=out, include=["raw/*"])] == ["raw/b.mp4", "raw/deep/c.mp4"]
    assert [f.rel for f in discover(src, out=out, include=["*.avi"])] == ["keep/e.avi"]

    # Namesakes in one folder keep their source suffix instead of overwriting each other.
    put(clip, src / "raw" / "b.mkv")
    found = discover(src, out=out, include=["raw/*"])
    paths = output_paths(found, out, "mkv")
    assert {k: str(v.relative_to(out)) for k, v in paths.items()} == {
        "raw/b.mkv": "raw/b.mkv.mkv",
        "raw/b.mp4": "raw/b.mp4.mkv",
        "raw/deep/c.mp4": "raw/deep/c.mkv",
    }


class KillFirstWorker(Reporter):
    """Plays the OOM killer: SIGKILLs the worker that starts the first job."""

    def __init__(self):
        self.killed = None

    def started(self, key: str, worker: str) -> None:
        if self.killed is None:
            self.killed = key
            os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)


def test_a_worker_killed_mid_job_fails_that_job_only_and_output_inside_source_is_not_an_input(clips, tmp_path):
    src = tmp_path / "lib"
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        put(tiny(clips, "a.mp4"), src / name)
    out = src / "hd"  # inside the source: its files must never become inputs
    killer = KillFirstWorker()
    summary = run_batch(
        BatchConfig(src=src, out=out, ext="mp4", options={"model": "bicubic", "preset": "ultrafast"}), killer
    )
    states = {j.input: (j.state, j.error) for j in summary.jobs}
    assert killer.killed == "a.mp4" and summary.exit_status == 3
    assert states["a.mp4"][0] == "failed" and "SIGKILL" in states["a.mp4"][1]
    assert states["b.mp4"] == ("done", None) and states["c.mp4"] == ("done", None)
    assert partials(src) == []

    code, again = run_cli(str(src), "--out", str(out), *FAST, "--ext", "mp4")
    assert code == 0
    assert {j["input"]: j["action"] for j in again["jobs"]} == {"a.mp4": "ran", "b.mp4": "skipped", "c.mp4": "skipped"}
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["a.mp4", "b.mp4", "c.mp4"]
    assert all(frame_count(out / n) == 6 for n in ("a.mp4", "b.mp4", "c.mp4"))


def test_a_file_already_in_out_is_not_overwritten_unless_asked(clips, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    put(tiny(clips, "a.mp4"), src / "a.mp4")
    out.mkdir()
    (out / "a.mkv").write_bytes(b"someone's earlier upscale")
    code, s = run_cli(str(src), "--out", str(out), *FAST)
    assert code == 3 and "exists" in s["jobs"][0]["error"]
    assert (out / "a.mkv").read_bytes() == b"someone's earlier upscale"
    code, s = run_cli(str(src), "--out", str(out), *FAST, "--overwrite")
    assert code == 0 and frame_count(out / "a.mkv") == 6


def test_missing_source_or_unknown_model_is_one_line_and_exit_2(tmp_path):
    res = CliRunner().invoke(batch, [str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such folder" in res.output and len(res.output.strip().splitlines()) == 1
    (tmp_path / "lib").mkdir()
    res = CliRunner().invoke(batch, [str(tmp_path / "lib"), "--out", str(tmp_path / "o"), "--model", "esrgan-x5"])
    assert res.exit_code == 2 and "unknown model" in res.output
    res = CliRunner().invoke(batch, ["status", str(tmp_path / "lib")])
    assert res.exit_code == 2 and "no batch manifest" in res.output


def test_ray_engine_runs_three_jobs_into_the_same_manifest(clips, tmp_path):
    ray = pytest.importorskip("ray")
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("r1.mp4", "r2.mp4", "r3.mp4"):
        put(tiny(clips, "a.mp4"), src / name)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_batch(
            BatchConfig(src=src, out=out, engine="ray", options={"model": "bicubic", "preset": "ultrafast"})
        )
    finally:
        ray.shutdown()
    assert summary.exit_status == 0 and summary.counts()["done"] == 3
    rows = manifest_rows(out)
    assert [(r["input"], r["state"]) for r in rows] == [("r1.mp4", "done"), ("r2.mp4", "done"), ("r3.mp4", "done")]
    assert all(frame_count(out / r["output"]) == 6 for r in rows)
