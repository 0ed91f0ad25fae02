"""The one worker pool (vhsup.workers): which GPU and how many CPU threads each
worker gets, what the parent hears, and that chunked runs and batches both
hand out GPUs by that one rule."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

import mediagen
from vhsup import workers
from vhsup.batch import BatchConfig, run_batch
from vhsup.chunked import upscale_chunked
from vhsup.errors import VhsupError
from vhsup.workers import Pool, assign_gpus, threads_each, visible_gpus, visible_ids


def test_each_worker_sees_one_visible_gpu_round_robin_and_none_without_gpus():
    assert assign_gpus([], 3) == [None, None, None]  # CPU workers keep the parent's view
    assert assign_gpus(["0"], 2) == ["0", "0"]  # one GPU: every worker shares it
    assert assign_gpus(["0", "1"], 3) == ["0", "1", "0"]
    assert assign_gpus(["2", "5", "7"], 2) == ["2", "5"]
    assert assign_gpus(["GPU-8a1f", "MIG-3c"], 2) == ["GPU-8a1f", "MIG-3c"]  # ids as CUDA_VISIBLE_DEVICES names them
    # The visible GPUs: CUDA_VISIBLE_DEVICES's ids, as many as CUDA found (it stops at the first bad id).
    assert visible_ids(None, 2) == ["0", "1"]
    assert visible_ids("3, 1", 4) == ["3", "1"]
    assert visible_ids("0,1,9", 2) == ["0", "1"]
    assert visible_ids("1", 0) == []  # set, but no usable CUDA: CPU workers
    assert visible_ids("", 0) == []
    # --device cpu, or a GPU the user chose for every worker: nothing to hand out.
    assert visible_gpus("cpu") == [] and visible_gpus("cuda:1") == []
    # CPU threads: an equal share of the cores, at least one.
    assert threads_each(3, 16) == 5 and threads_each(4, 2) == 1 and threads_each(1, 8) == 8


def _describe_worker(job: str, report) -> dict:
    """A task that tells what its worker process was given."""
    import torch

    report(("working on", job))
    if job == "bad":
        raise VhsupError("not a video file", "/tapes/bad.avi")
    if job == "oom":
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
    return {
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "pid": os.getpid(),
    }


def test_pool_workers_get_their_gpu_and_cores_report_failures_and_leave_on_their_own():
    pool = Pool(_describe_worker, 2, gpus=["4", "7"], name="vhsup-test")
    jobs = ["a", "b", "bad", "oom", "c"]
    try:
        events = list(pool.run((j, j) for j in jobs))
    finally:
        leftovers = pool.stop()
    # Every job was answered once the workers had left on their own: nothing to stop, no process left.
    assert leftovers == [] and multiprocessing.active_children() == []
    assert sorted(e.key for e in events if e.kind == "started") == sorted(jobs)
    assert sorted(e.body[1] for e in events if e.kind == "message") == sorted(jobs)
    done = {e.key: e.body for e in events if e.kind == "done"}
    assert sorted(done) == ["a", "b", "c"]
    # The first two jobs went to worker 0 and worker 1: one GPU each, half the cores each.
    assert (done["a"]["gpu"], done["b"]["gpu"]) == ("4", "7") and done["a"]["pid"] != done["b"]["pid"]
    share = threads_each(2)
    assert all(d["threads"] == share and d["omp"] == str(share) for d in done.values())
    # A job's error comes back as it was raised; a worker killed mid-job is replaced for the jobs left.
    [failed] = [e for e in events if e.kind == "failed"]
    assert (failed.key, failed.body.kind, failed.body.text, failed.body.path) == (
        "bad",
        "VhsupError",
        "not a video file",
        "/tapes/bad.avi",
    )
    [died] = [e for e in events if e.kind == "died"]
    assert died.key == "oom" and died.body == -signal.SIGKILL
    assert "SIGKILL" in workers.death_reason(died.body)
    assert done["c"]["gpu"] in ("4", "7") and done["c"]["pid"] != died.pid


@pytest.fixture
def two_gpus(monkeypatch) -> list[tuple[list[str], int, list[str | None]]]:
    """As on a machine with two GPUs (CUDA ids 4 and 7); records every assignment the pools make."""
    calls: list[tuple[list[str], int, list[str | None]]] = []
    rule = workers.assign_gpus

    def recorded(visible, count):
        given = rule(visible, count)
        calls.append((list(visible), count, given))
        return given

    monkeypatch.setattr(workers, "visible_gpus", lambda device: ["4", "7"] if device in ("auto", "cuda") else [])
    monkeypatch.setattr(workers, "assign_gpus", recorded)
    return calls


def test_chunked_runs_and_batches_hand_out_gpus_by_the_one_rule(clips, tmp_path, two_gpus):
    # The pictures themselves are made on the CPU here: a worker told to use CUDA id 4 finds no GPU.
    clip = clips.make("long.vob", vcodec="mpeg2video", size=(160, 120), interlaced="tff", audio="ac3", frames=90)
    dst = tmp_path / "chunked.mkv"
    r = upscale_chunked(clip.path, dst, workers=2, model="bicubic-x2", preset="ultrafast")
    assert r.frames_out == clip.frames and [i for _, i in mediagen.read_indices(dst)] == list(range(clip.frames))
    assert two_gpus == [(["4", "7"], 2, ["4", "7"])]

    src = tmp_path / "tapes"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (src / name).write_bytes(clips.make(name, vcodec="libx264", size=(64, 48), frames=6).path.read_bytes())
    summary = run_batch(
        BatchConfig(src=src, out=tmp_path / "hd", jobs=2, options={"model": "bicubic", "preset": "ultrafast"})
    )
    assert [j.state for j in summary.jobs] == ["done", "done"] and summary.exit_status == 0
    assert two_gpus[1:] == [(["4", "7"], 2, ["4", "7"])]
