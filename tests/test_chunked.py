"""Chunked upscaling of one long video: the same pictures as one run, joined
without re-encoding, sound in sync, and resumable chunk by chunk.

The clip is interlaced MPEG-2 with AC-3 and a keyframe every 15 frames, so
the chunks meet at keyframes and the deinterlacer has to see across every
seam. The classical ``bicubic`` model keeps the output deterministic, and
FFV1 (lossless) makes "the same pictures" a pixel-for-pixel check.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

import mediagen
from vhsup import upscale_video
from vhsup.chunked import plan_chunks, scan_video, upscale_chunked, work_dir
from vhsup.errors import Interrupted
from vhsup.media.probe import probe
from vhsup.pipeline import Options

FAST = {"model": "bicubic-x2", "preset": "ultrafast", "overwrite": True}
LOSSLESS = {"model": "bicubic-x2", "codec": "ffv1", "overwrite": True}
THIRDS = 1.01  # seconds: three chunks of the 3.003 s clip
LONG = {"vcodec": "mpeg2video", "size": (160, 120), "interlaced": "tff", "audio": "ac3", "frames": 90}


@pytest.fixture(scope="module")
def long_clip(clips) -> mediagen.ClipInfo:
    return clips.make("long.vob", **LONG)


@pytest.fixture(scope="module")
def reference(long_clip, tmp_path_factory) -> Path:
    """The unchunked, lossless upscale everything here is compared with."""
    dst = tmp_path_factory.mktemp("ref") / "whole.mkv"
    upscale_video(long_clip.path, dst, **LOSSLESS)
    return dst


def pixels(path: Path) -> list[tuple[float, np.ndarray]]:
    return list(mediagen.decode_video(path))


def video_packets(path: Path) -> list[tuple[int, bool]]:
    with av.open(str(path)) as c:
        return [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]


def test_plan_cuts_at_keyframes_into_abutting_ranges_that_cover_every_frame(long_clip):
    info = probe(long_clip.path)
    scan = scan_video(long_clip.path)
    assert len(scan.times) == long_clip.frames and len(scan.keyframes) >= 6  # a GOP every 15 frames
    plan = plan_chunks(long_clip.path, Options(model="bicubic"), pieces=3, chunk_seconds=None, info=info, key="k")
    assert len(plan.chunks) == 3
    assert plan.chunks[0].start is None and plan.chunks[-1].end is None
    for a, b in zip(plan.chunks, plan.chunks[1:]):
        assert a.end == b.start and b.start in scan.keyframes
    assert [c.frames for c in plan.chunks] == [30, 30, 30]
    assert plan.total == long_clip.frames
    # double rate: two pictures per frame, chunk by chunk
    double = plan_chunks(
        long_clip.path, Options(model="bicubic", field_rate="double"), pieces=3, chunk_seconds=None, info=info, key="k"
    )
    assert [c.frames for c in double.chunks] == [60, 60, 60]


def test_chunked_gives_the_same_pictures_in_the_same_order_as_one_run(long_clip, reference, tmp_path):
    dst = tmp_path / "chunked.mkv"
    r = upscale_chunked(long_clip.path, dst, workers=1, chunk_seconds=THIRDS, **LOSSLESS)
    assert r.frames_out == r.frames_in == long_clip.frames
    ours, theirs = pixels(dst), pixels(reference)
    assert [mediagen.read_index(rgb) for _, rgb in ours] == list(range(long_clip.frames))
    assert len(ours) == len(theirs)
    # Lossless: every picture, the ones beside the seams included, is the
    # one the unchunked run made (deinterlaced with its real neighbours).
    for (t1, a), (t2, b) in zip(ours, theirs):
        assert t1 == t2 and np.array_equal(a, b)
    assert not work_dir(dst).exists()


def test_parallel_chunks_joined_losslessly_keep_sound_in_sync(long_clip, tmp_path):
    dst = tmp_path / "par.mkv"
    r = upscale_chunked(long_clip.path, dst, workers=2, chunk_seconds=THIRDS, **FAST)
    assert r.frames_out == long_clip.frames and r.audio_streams == 1
    indices = [i for _, i in mediagen.read_indices(dst)]
    assert indices == list(range(long_clip.frames))
    # the join copied packets: each chunk's first picture is a keyframe of the output
    packets = video_packets(dst)
    assert len(packets) == long_clip.frames
    assert sum(key for _, key in packets) >= 3
    with av.open(str(dst)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].codec_context.name == "ac3"
    frame = 1 / float(long_clip.rate)
    times = [t for t, _ in mediagen.decode_video(dst)]
    v0, v1 = times[0], times[-1] + frame
    a0, a1 = mediagen.audio_span(dst)
    assert abs((v1 - v0) - float(long_clip.duration)) <= frame
    assert abs((a1 - a0) - (v1 - v0)) <= frame
    flashes, clicks = mediagen.find_flashes(dst), mediagen.find_clicks(dst)
    assert len(flashes) == len(long_clip.flash_frames) == len(clicks) == 6
    assert max(abs(f - c) for f, c in zip(flashes, clicks)) <= frame


def test_double_rate_chunks_give_one_picture_per_field(long_clip, tmp_path):
    dst = tmp_path / "double.mkv"
    r = upscale_chunked(
        long_clip.path, dst, workers=1, chunk_seconds=THIRDS, field_rate="double", crop="2,4,2,4", **FAST
    )
    assert r.frames_out == 2 * long_clip.frames and r.crop == "2,4,2,4"
    assert [i for _, i in mediagen.read_indices(dst)] == [k // 2 for k in range(2 * long_clip.frames)]


def test_interrupted_run_resumes_from_finished_chunks(long_clip, reference, tmp_path):
    dst = tmp_path / "resumed.mkv"
    work = work_dir(dst)

    def stop_after_first_chunk(done: int, total: int) -> None:
        if list(work.glob("chunk-*.json")):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="rerun resumes"):
        upscale_chunked(
            long_clip.path, dst, workers=1, chunk_seconds=THIRDS, progress=stop_after_first_chunk, **LOSSLESS
        )
    assert not dst.exists()
    assert [p.name for p in sorted(work.glob("chunk-*.json"))] == ["chunk-0000.json"]
    first = work / "chunk-0000.nut"
    before = (first.stat().st_ino, first.stat().st_mtime_ns)

    seen: list[tuple[int, tuple[int, int]]] = []

    def watch(done: int, total: int) -> None:
        st = first.stat()
        seen.append((done, (st.st_ino, st.st_mtime_ns)))

    notes: list[str] = []
    r = upscale_chunked(
        long_clip.path, dst, workers=1, chunk_seconds=THIRDS, progress=watch, notice=notes.append, **LOSSLESS
    )
    assert any("1 of 3 chunks were already done" in n for n in notes)
    # the finished chunk was kept as it was, and counted as done from the start
    assert seen and all(stamp == before for _, stamp in seen)
    assert min(done for done, _ in seen) > 30
    assert r.frames_out == long_clip.frames
    for (t1, a), (t2, b) in zip(pixels(dst), pixels(reference), strict=True):
        assert t1 == t2 and np.array_equal(a, b)
    assert not work.exists()


def test_changed_settings_redo_every_chunk(long_clip, tmp_path):
    dst = tmp_path / "changed.mkv"
    work = work_dir(dst)

    def stop(done: int, total: int) -> None:
        if list(work.glob("chunk-*.json")):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        upscale_chunked(long_clip.path, dst, workers=1, chunk_seconds=THIRDS, progress=stop, **FAST)
    notes: list[str] = []
    r = upscale_chunked(
        long_clip.path, dst, workers=1, chunk_seconds=THIRDS, notice=notes.append, **{**FAST, "crf": 30}
    )
    assert not any("already done" in n for n in notes)
    assert [i for _, i in mediagen.read_indices(dst)] == list(range(long_clip.frames))
    assert r.frames_out == long_clip.frames


def test_another_tile_or_batch_size_keeps_the_finished_chunks(long_clip, tmp_path):
    """Tile and batch size change the pixels within rounding at most: a rerun with others resumes."""
    dst = tmp_path / "retiled.mkv"
    work = work_dir(dst)

    def stop(done: int, total: int) -> None:
        if list(work.glob("chunk-*.json")):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        upscale_chunked(long_clip.path, dst, workers=1, chunk_seconds=THIRDS, progress=stop, **FAST)
    notes: list[str] = []
    r = upscale_chunked(
        long_clip.path, dst, workers=1, chunk_seconds=THIRDS, notice=notes.append, **{**FAST, "tile": 64, "batch": 2}
    )
    assert any("1 of 3 chunks were already done" in n for n in notes)
    assert [i for _, i in mediagen.read_indices(dst)] == list(range(long_clip.frames))
    assert r.frames_out == long_clip.frames


def test_killed_run_leaves_no_partial_output_and_resumes(long_clip, reference, tmp_path):
    dst = tmp_path / "killed.mkv"
    work = work_dir(dst)
    code = (
        "import sys; from vhsup.chunked import upscale_chunked\n"
        "if __name__ == '__main__':\n"
        f"    upscale_chunked(sys.argv[1], sys.argv[2], workers=1, chunk_seconds=0.5, **{LOSSLESS!r})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(long_clip.path), str(dst)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(work.glob("chunk-*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not dst.exists()
    done = len(list(work.glob("chunk-*.json")))
    assert 1 <= done < 6
    notes: list[str] = []
    r = upscale_chunked(long_clip.path, dst, workers=1, chunk_seconds=0.5, notice=notes.append, **LOSSLESS)
    assert any(f"{done} of " in n and "already done" in n for n in notes)
    assert r.frames_out == long_clip.frames
    for (t1, a), (t2, b) in zip(pixels(dst), pixels(reference), strict=True):
        assert t1 == t2 and np.array_equal(a, b)
    assert not work.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["killed.mkv"]  # no stale partial files anywhere


def test_interrupting_parallel_workers_stops_them(long_clip, tmp_path):
    import multiprocessing

    dst = tmp_path / "stopped.mkv"

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        upscale_chunked(long_clip.path, dst, workers=2, chunk_seconds=THIRDS, progress=stop, **FAST)
    assert not dst.exists()
    assert multiprocessing.active_children() == []


def cut_mid_gop(src: Path, dst: Path, skip: int) -> None:
    """Remux ``src`` without its first ``skip`` video packets (decode order)
    and the audio before them: a capture that starts mid-GOP."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="vob") as o:
        vs = o.add_stream_from_template(i.streams.video[0])
        aus = o.add_stream_from_template(i.streams.audio[0])
        seen = 0
        for p in i.demux():
            if not p.size:
                continue
            if p.stream.type == "video":
                seen += 1
                if seen <= skip:
                    continue
                p.stream = vs
            else:
                if p.pts is not None and p.pts * p.time_base < 0.7:
                    continue
                p.stream = aus
            o.mux(p)


def test_file_cut_mid_gop_starts_and_syncs_like_one_run(long_clip, tmp_path):
    src = tmp_path / "cut.vob"
    cut_mid_gop(long_clip.path, src, skip=7)
    whole, chunked = tmp_path / "whole.mkv", tmp_path / "chunked.mkv"
    a = upscale_video(src, whole, **FAST)
    b = upscale_chunked(src, chunked, workers=1, chunk_seconds=1.0, **FAST)
    # the undecodable head is dropped by both, and time zero is the same picture
    assert a.frames_out == b.frames_out < long_clip.frames
    assert mediagen.read_indices(chunked) == mediagen.read_indices(whole)
    assert mediagen.audio_span(chunked) == pytest.approx(mediagen.audio_span(whole), abs=1e-3)


def test_a_finished_parallel_run_prints_no_traceback(long_clip, tmp_path):
    # The workers leave on their own once every chunk is in; stopping them
    # while they flush their queues once printed a SIGTERM traceback.
    dst = tmp_path / "cli.mkv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vhsup",
            "upscale",
            str(long_clip.path),
            "-o",
            str(dst),
            "--workers",
            "2",
            "--model",
            "bicubic",
            "--preset",
            "ultrafast",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Signalled" not in r.stderr, r.stderr
    assert len(mediagen.read_indices(dst)) == long_clip.frames
