"""AVI inputs whose codecs reorder pictures: old DVD rips and phone clips.

AVI stores no presentation times, only one chunk per frame slot in decoding
order, and FFmpeg's rebuilt times (genpts) put H.264 and MPEG-4 Part 2 with
B-frames a slot late, H.264's B-frames and DivX/Xvid "packed" B-frames out
of order. vhsup times AVI pictures by slot (vhsup.media.decode); here each
picture's own frame-index code and the flash/click marks check that every
picture comes once, in order, at its time, with the sound in sync.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

import mediagen
from vhsup import upscale_video
from vhsup.chunked import upscale_chunked
from vhsup.media.decode import DecodeStats, open_input, video_frames

RATE = mediagen.NTSC_RATE
FAST = {"model": "bicubic", "preset": "ultrafast", "overwrite": True}
# AVI as real tools write it: the stream clock is one tick per frame slot.
AVI = {"size": (160, 120), "frames": 45, "audio": "pcm_s16le", "time_base": 1 / RATE}
H264_B = dict(vcodec="libx264", video_options={"bf": "2"}, **AVI)
XVID_B = dict(vcodec="mpeg4", video_options={"bf": "2"}, codec_tag="XVID", **AVI)
# Longer, with a keyframe every 12 frames and open GOPs (B-frames after a
# keyframe that show before it), to seek into.
LONG = dict(AVI, frames=60)
H264_OPEN = dict(
    LONG,
    vcodec="libx264",
    video_options={"bf": "2", "x264-params": "log-level=error:open-gop=1:keyint=12:min-keyint=12:scenecut=0"},
)
XVID_OPEN = dict(LONG, vcodec="mpeg4", video_options={"bf": "2", "g": "12"}, codec_tag="XVID")
MS = 0.001  # Matroska's clock: output times are whole milliseconds


@pytest.fixture(scope="module")
def h264_b(clips) -> Path:
    return clips.make("h264_b.avi", **H264_B).path


@pytest.fixture(scope="module")
def xvid_b(clips) -> Path:
    return clips.make("xvid_b.avi", **XVID_B).path


@pytest.fixture(scope="module")
def divx_packed(clips, tmp_path_factory) -> Path:
    return mediagen.pack_bframes(clips.make("xvid_b.avi", **XVID_B).path, tmp_path_factory.mktemp("p") / "divx.avi")


@pytest.fixture(scope="module")
def h264_open(clips) -> Path:
    return clips.make("h264_open.avi", **H264_OPEN).path


@pytest.fixture(scope="module")
def xvid_open(clips) -> Path:
    return clips.make("xvid_open.avi", **XVID_OPEN).path


@pytest.fixture(scope="module")
def divx_open_packed(xvid_open, tmp_path_factory) -> Path:
    return mediagen.pack_bframes(xvid_open, tmp_path_factory.mktemp("p") / "divx_open.avi")


def reorders(path: Path) -> bool:
    """The clip really has B-frames (so the test is about reordering)."""
    with av.open(str(path)) as c:
        return any(int(f.pict_type) == 3 for f in c.decode(video=0))  # AV_PICTURE_TYPE_B


def decoded(path: Path, start: float | None = None) -> tuple[list[tuple[Fraction, int]], DecodeStats]:
    """(time, frame index) of every picture vhsup decodes, and its stats."""
    stats = DecodeStats()
    container = open_input(path)
    try:
        out = [
            (f.pts * Fraction(f.time_base), mediagen.read_index(f.to_ndarray(format="rgb24", threads=1)))
            for f in video_frames(container, start=start, stats=stats, preroll=0.0)
        ]
    finally:
        container.close()
    return out, stats


def assert_every_picture_on_time(dst: Path, frames: int) -> None:
    """Pictures 0..frames-1, once each, in order, at i/rate; clicks on flashes."""
    shown = mediagen.read_indices(dst)
    assert [i for _, i in shown] == list(range(frames))
    assert max(abs(t - float(i / RATE)) for t, i in shown) <= MS
    flashes, clicks = mediagen.find_flashes(dst), mediagen.find_clicks(dst)
    assert len(flashes) == len(clicks) == len(mediagen.flash_frames(frames))
    # In sync to Matroska's millisecond; a slot late would be 33 ms.
    assert max(abs(c - f) for f, c in zip(flashes, clicks)) <= MS


@pytest.mark.parametrize("clip", ["h264_b", "xvid_b", "divx_packed"])
def test_avi_with_b_frames_decodes_every_picture_once_at_its_slot(clip, request):
    path = request.getfixturevalue(clip)
    assert reorders(path)
    pictures, stats = decoded(path)
    assert pictures == [(i / RATE, i) for i in range(AVI["frames"])]
    assert stats.errors == stats.no_picture == 0


@pytest.mark.parametrize("clip", ["h264_b", "xvid_b", "divx_packed"])
def test_avi_with_b_frames_upscales_in_order_with_sound_in_sync(clip, request, tmp_path):
    path = request.getfixturevalue(clip)
    notes: list[str] = []
    r = upscale_video(path, tmp_path / "out.mkv", notice=notes.append, **FAST)
    assert r.frames_in == r.frames_out == AVI["frames"]
    assert_every_picture_on_time(tmp_path / "out.mkv", AVI["frames"])
    assert not [n for n in notes if "nudged" in n]


@pytest.mark.parametrize("clip", ["h264_open", "xvid_open", "divx_open_packed"])
@pytest.mark.parametrize("start", [0.45, 0.9, 1.3])
def test_seeking_into_an_avi_keeps_every_later_picture_at_its_slot(clip, start, request):
    """After a seek the decoder cannot make the B-frames that show before
    the keyframe it starts from; the pictures after them keep their slots."""
    path = request.getfixturevalue(clip)
    pictures, stats = decoded(path, start=start)
    first = pictures[0][1]
    assert first <= round(start * RATE)  # from the keyframe at or before the start
    assert pictures == [(i / RATE, i) for i in range(first, LONG["frames"])]
    assert stats.no_picture == 0


def test_avi_chunks_without_a_picture_are_told_and_keep_the_others_on_time(clips, tmp_path):
    """DivX writes a "not coded" VOP for a frame it drops; FFmpeg makes no
    picture of it. The previous picture stays on screen for that slot, the
    later ones keep theirs, and the user is told."""
    src = clips.make("m4_g12.avi", vcodec="mpeg4", video_options={"g": "12"}, codec_tag="DIVX", **AVI).path
    dropped = mediagen.drop_to_not_coded(src, tmp_path / "dropped.avi", (11, 23))
    kept = [i for i in range(AVI["frames"]) if i not in (11, 23)]
    pictures, stats = decoded(dropped)
    assert pictures == [(i / RATE, i) for i in kept]
    assert stats.no_picture == 2
    notes: list[str] = []
    r = upscale_video(dropped, tmp_path / "out.mkv", notice=notes.append, **FAST)
    assert r.frames_out == len(kept)
    shown = mediagen.read_indices(tmp_path / "out.mkv")
    assert [i for _, i in shown] == kept
    assert max(abs(t - float(i / RATE)) for t, i in shown) <= MS
    assert any("2 AVI video chunks gave no picture" in n for n in notes)


def test_chunked_upscale_of_a_packed_avi_keeps_every_picture(divx_open_packed, tmp_path):
    """Chunks are cut at keyframe slots and counted by slots, as decoding times them."""
    dst = tmp_path / "chunked.mkv"
    r = upscale_chunked(divx_open_packed, dst, workers=1, chunk_seconds=0.7, **FAST)
    assert r.frames_out == LONG["frames"]
    assert_every_picture_on_time(dst, LONG["frames"])
