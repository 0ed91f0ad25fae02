"""The encoder, end to end on real clips: what lands in the output file.

Pictures come from decoding the test clips with plain PyAV (the decode
module is tested on its own); outputs are judged by re-opening them with
PyAV and by the sync marks mediagen put in the clips.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import mediagen as mg
from vhsup.errors import VhsupError
from vhsup.media.colour import BT601_NTSC, BT709
from vhsup.media.encode import EncodeSettings, VideoEncoder
from vhsup.media.picture import Picture

FAST = EncodeSettings(codec="libx264", preset="ultrafast")
REPO = Path(__file__).resolve().parents[1]


def pictures(path, *, start=None, end=None, even=True):
    """Decoded frames of a clip as Pictures on the source clock, cut to
    [start, end) and cropped to even sizes (as the pipeline delivers)."""
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            t = frame.pts * frame.time_base
            if (start is not None and t < start) or (end is not None and t >= end):
                continue
            rgb = frame.to_ndarray(format="rgb24", threads=1)
            if even:
                rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
            out.append(Picture(np.ascontiguousarray(rgb), t, len(out)))
    return out


def source_rate(path) -> Fraction:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return Fraction(v.average_rate or v.guessed_rate)


def encode(src, dst, pics, *, settings=FAST, colour=BT601_NTSC, sar=Fraction(1), **kw):
    notices = []
    h, w = pics[0].rgb.shape[:2]
    kw.setdefault("origin", pics[0].time)
    with VideoEncoder(
        Path(dst),
        src=Path(src),
        width=w,
        height=h,
        rate=source_rate(src),
        sar=sar,
        colour=colour,
        settings=settings,
        notice=notices.append,
        **kw,
    ) as enc:
        for p in pics:
            enc.write(p)
        report = enc.close()
    return report, notices


def video_times(path):
    """(presentation times, end of the last frame) of the first video stream."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.pts, f.duration) for f in c.decode(v)]
        tb = v.time_base
    times = [float(p * tb) for p, _ in frames]
    return times, float((frames[-1][0] + frames[-1][1]) * tb)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


CASES = [
    ("dvd", ".mkv"),
    ("dv", ".mkv"),
    ("mp4", ".mp4"),
    ("ts", ".mkv"),
    ("subs", ".mkv"),
    ("vfr", ".mp4"),
    ("odd", ".mkv"),
]


@pytest.mark.parametrize("name,ext", CASES)
def test_every_stream_copied_in_sync(clips, tmp_path, name, ext):
    clip = clips.get(name)
    pics = pictures(clip.path)
    dst = tmp_path / f"out{ext}"
    report, _ = encode(clip.path, dst, pics)

    assert report.frames == clip.frames and report.path == dst and dst.is_file()
    with av.open(str(clip.path)) as c:
        src_audio = [a.codec_context.name for a in c.streams.audio]
    with av.open(str(dst)) as c:
        assert len(c.streams.video) == 1
        assert [a.codec_context.name for a in c.streams.audio] == src_audio
        assert report.audio_streams == len(src_audio) and not report.transcoded
    # Every picture, once, in order, with strictly increasing timestamps.
    assert [i for _, i in mg.read_indices(dst)] == list(range(clip.frames))
    times, video_end = video_times(dst)
    assert all(b > a for a, b in zip(times, times[1:]))
    frame = float(1 / clip.rate)
    assert video_end - times[0] == pytest.approx(float(clip.duration), abs=frame)
    assert report.video_duration == pytest.approx(video_end - times[0], abs=0.0011)
    # Audio covers the video, no more, no less (one frame of slack), and its
    # clicks land on the flashes as they did in the source.
    flashes = mg.find_flashes(dst)
    assert len(flashes) == len(clip.flash_frames)
    for k in range(len(src_audio)):
        a0, a1 = mg.audio_span(dst, k)
        assert abs(a0 - times[0]) < frame and abs(a1 - video_end) < frame, (a0, a1, times[0], video_end)
        assert mg.find_clicks(dst, k) == pytest.approx(flashes, abs=0.002)


def test_variable_frame_rate_timing_is_kept(vfr_clip, tmp_path):
    pics = pictures(vfr_clip.path)
    for ext in (".mkv", ".mp4"):
        dst = tmp_path / f"vfr{ext}"
        encode(vfr_clip.path, dst, pics)
        times, _ = video_times(dst)
        want = [float(p.time - pics[0].time) for p in pics]
        assert np.abs(np.array(times) - times[0] - np.array(want)).max() < 0.0011


def test_time_range_cuts_audio_subtitles_and_chapters(subs_clip, tmp_path):
    t0 = subs_clip.frame_times[0]
    start, end = t0 + Fraction(3, 10), t0 + Fraction(9, 10)
    pics = pictures(subs_clip.path, start=start, end=end)
    dst = tmp_path / "cut.mkv"
    report, _ = encode(subs_clip.path, dst, pics, time_range=(start, end), origin=start)
    frame = float(1 / subs_clip.rate)
    times, video_end = video_times(dst)
    assert report.frames == len(pics) == 18
    assert video_end - times[0] == pytest.approx(0.6, abs=frame)
    for k in range(2):
        a0, a1 = mg.audio_span(dst, k)
        assert abs(a0 - times[0]) < frame and abs(a1 - video_end) < frame
        assert mg.find_clicks(dst, k) == pytest.approx(mg.find_flashes(dst), abs=0.002)
    # Only the cue that starts inside the range, moved by the same origin.
    kept = [q for q in subs_clip.subtitles if start <= q.start < end]
    with av.open(str(dst)) as c:
        (sub,) = c.streams.subtitles
        assert sub.metadata.get("language") == "eng"
        cues = [(float(p.pts * p.time_base), bytes(p).decode()) for p in c.demux(sub) if p.size]
        chapters = c.chapters()
    assert [t for _, t in cues] == [q.text for q in kept] == ["flash 20"]
    assert cues[0][0] - times[0] == pytest.approx(float(kept[0].start - pics[0].time), abs=0.0011)
    # The chapter boundary (frame 18, 0.6 s) lies inside the range: two
    # chapters, the second starting 0.3 s into the output.
    assert [ch["metadata"]["title"] for ch in chapters] == ["Opening", "Second half"]
    assert float(chapters[1]["start"] * chapters[1]["time_base"]) == pytest.approx(0.3005, abs=0.002)


def test_metadata_dispositions_and_attachments_are_kept(subs_clip, tmp_path):
    dst = tmp_path / "meta.mkv"
    report, _ = encode(subs_clip.path, dst, pictures(subs_clip.path))
    assert report.subtitle_streams == 1 and not report.dropped_streams
    with av.open(str(dst)) as c:
        assert c.metadata.get("title") == "vhsup test clip"
        assert [(a.metadata.get("language"), a.metadata.get("title")) for a in c.streams.audio] == [
            ("eng", "Track 1"),
            ("fra", "Track 2"),
        ]
        assert [bool(a.disposition & av.stream.Disposition.default) for a in c.streams.audio] == [True, False]
        assert c.streams.subtitles[0].metadata.get("title") == "Flash captions"
        (att,) = [s for s in c.streams if s.type == "attachment"]
        assert (att.name, att.data) == (mg.ATTACHMENT_NAME, mg.ATTACHMENT_DATA)
    # MP4 has no attachments: dropped, and said so.
    report, notices = encode(subs_clip.path, tmp_path / "meta.mp4", pictures(subs_clip.path)[:3])
    assert f"#4 attachment {mg.ATTACHMENT_NAME}" in report.dropped_streams
    assert any(mg.ATTACHMENT_NAME in n for n in notices)


def test_mp4_transcodes_pcm_and_converts_subrip_with_notices(subs_clip, tmp_path):
    dst = tmp_path / "out.mp4"
    report, notices = encode(subs_clip.path, dst, pictures(subs_clip.path))
    assert report.transcoded == [
        '#2 audio pcm_s16le (fra, "Track 2") -> aac',
        '#3 subtitle srt (eng, "Flash captions") -> mov_text',
    ]
    assert report.dropped_streams == [f"#4 attachment {mg.ATTACHMENT_NAME}"] and report.subtitle_streams == 1
    assert any("pcm_s16le" in n and "aac" in n for n in notices)
    assert any("srt" in n and "converted to mov_text" in n for n in notices)
    with av.open(str(dst)) as c:
        assert [a.codec_context.name for a in c.streams.audio] == ["ac3", "aac"]
        assert [a.metadata.get("language") for a in c.streams.audio] == ["eng", "fra"]
        assert [(s.codec_context.name, s.metadata.get("language")) for s in c.streams.subtitles] == [
            ("mov_text", "eng")
        ]
    # The re-encoded stream is as long as the video and still in sync.
    times, video_end = video_times(dst)
    a0, a1 = mg.audio_span(dst, 1)
    frame = float(1 / subs_clip.rate)
    assert abs(a0 - times[0]) < frame and abs(a1 - video_end) < frame
    assert mg.find_clicks(dst, 1) == pytest.approx(mg.find_flashes(dst), abs=0.002)


def test_dv_pcm_into_mp4_becomes_aac(dv_clip, tmp_path):
    """PCM in AVI has no channel layout ('2 channels'); AAC still takes it."""
    dst = tmp_path / "dv.mp4"
    pics = pictures(dv_clip.path)[:6]
    report, notices = encode(dv_clip.path, dst, pics)
    assert [t.split(" -> ")[1] for t in report.transcoded] == ["aac"] and notices
    with av.open(str(dst)) as c:
        (a,) = c.streams.audio
        assert (a.codec_context.name, a.codec_context.channels) == ("aac", 2)
    assert mg.find_clicks(dst) == pytest.approx(mg.find_flashes(dst), abs=0.002)


@pytest.mark.parametrize("ext", [".mkv", ".mp4", ".mov"])
def test_sample_aspect_ratio_is_tagged(dv_clip, tmp_path, ext):
    pics = pictures(dv_clip.path)[:3]
    pics = [Picture(np.ascontiguousarray(p.rgb[::2, ::2]), p.time, p.index) for p in pics]  # 360x240
    dst = tmp_path / f"sar{ext}"
    encode(dv_clip.path, dst, pics, sar=Fraction(8, 9))
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        assert v.sample_aspect_ratio == Fraction(8, 9)
        assert v.codec_context.sample_aspect_ratio == Fraction(8, 9)  # in the H.264 VUI too
        assert v.display_aspect_ratio == Fraction(4, 3)


def _bars_picture(width, height):
    rgb = np.zeros((height, width, 3), np.uint8)
    n = len(mg.BARS)
    for k in range(n):
        rgb[:, k * width // n : (k + 1) * width // n] = mg.BARS[k]
    return rgb


def _bar_means(rgb):
    h, w = rgb.shape[:2]
    n = len(mg.BARS)
    return np.array(
        [
            rgb[h // 4 : 3 * h // 4, k * w // n + w // (4 * n) : (k + 1) * w // n - w // (4 * n)].reshape(-1, 3).mean(0)
            for k in range(n)
        ]
    )


@pytest.mark.parametrize("colour,size", [(BT709, (1280, 720)), (BT601_NTSC, (720, 480))])
def test_colours_survive_with_the_tagged_matrix(clips, tmp_path, colour, size):
    src = clips.make("silent.mkv", vcodec="ffv1", size=(64, 48), frames=2)
    rgb = _bars_picture(*size)
    dst = tmp_path / "bars.mkv"
    encode(
        src.path,
        dst,
        [Picture(rgb, Fraction(i, 30), i) for i in range(2)],
        colour=colour,
        settings=EncodeSettings(codec="libx264", preset="ultrafast", crf=10),
    )
    with av.open(str(dst)) as c:
        cc = c.streams.video[0].codec_context
        tags = (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range)
        frame = next(c.decode(video=0))
    assert tags == (colour.space, colour.primaries, colour.trc, 1)
    tagged = {1: "itu709", 5: "itu601", 6: "itu601"}[tags[0]]

    def decode_as(matrix):
        return _bar_means(
            frame.to_ndarray(
                format="rgb24", src_colorspace=matrix, src_color_range="MPEG", dst_color_range="JPEG", threads=1
            )
        )

    want = _bar_means(rgb)
    assert np.abs(decode_as(tagged) - want).max() <= 4  # 8-bit limited range rounds by up to ~3
    wrong = "itu601" if tagged == "itu709" else "itu709"
    assert np.abs(decode_as(wrong) - want).max() > 10  # so the check above can fail


@pytest.mark.parametrize(
    "settings,pix_fmt,decoder",
    [
        (EncodeSettings(codec="libx265", preset="ultrafast"), "yuv420p", "hevc"),
        (EncodeSettings(codec="ffv1"), "yuv420p", "ffv1"),
        (EncodeSettings(codec="libx264", preset="ultrafast", pix_fmt="yuv420p10le"), "yuv420p10le", "h264"),
        (EncodeSettings(codec="prores_ks"), "yuv422p10le", "prores"),
    ],
)
def test_codecs(mp4_clip, tmp_path, settings, pix_fmt, decoder):
    pics = pictures(mp4_clip.path)[:4]
    dst = tmp_path / ("out.mov" if settings.codec == "prores_ks" else "out.mkv")
    report, notices = encode(mp4_clip.path, dst, pics, settings=settings)
    with av.open(str(dst)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.pix_fmt) == (decoder, pix_fmt)
    assert [i for _, i in mg.read_indices(dst)] == [0, 1, 2, 3]
    # A format the codec cannot take is replaced, and the user is told.
    assert any("yuv422p10le" in n for n in notices) == (settings.codec == "prores_ks")


def test_nvenc_failure_is_a_clear_error(mp4_clip, tmp_path):
    dst = tmp_path / "nv.mkv"
    pics = pictures(mp4_clip.path)[:2]
    try:
        encode(mp4_clip.path, dst, pics, settings=EncodeSettings(codec="h264_nvenc"))
    except VhsupError as e:
        assert "h264_nvenc needs an NVIDIA GPU" in str(e)
        assert not dst.exists() and leftovers(tmp_path) == []
    else:  # a machine with NVENC: then the output must be real
        assert [i for _, i in mg.read_indices(dst)] == [0, 1]


def test_existing_output_is_refused_and_overwrite_waits_for_close(mp4_clip, tmp_path):
    dst = tmp_path / "out.mkv"
    dst.write_bytes(b"precious")
    pics = pictures(mp4_clip.path)
    with pytest.raises(VhsupError, match="already exists"):
        encode(mp4_clip.path, dst, pics)
    assert dst.read_bytes() == b"precious"
    h, w = pics[0].rgb.shape[:2]
    enc = VideoEncoder(
        dst,
        src=mp4_clip.path,
        width=w,
        height=h,
        rate=mp4_clip.rate,
        sar=Fraction(1),
        colour=BT601_NTSC,
        settings=FAST,
        origin=pics[0].time,
        overwrite=True,
    )
    with enc:
        for p in pics:
            enc.write(p)
        assert dst.read_bytes() == b"precious"  # untouched until the new file is complete
        enc.close()
    assert [i for _, i in mg.read_indices(dst)] == list(range(len(pics)))
    assert leftovers(tmp_path) == []


def test_input_is_never_written_and_cannot_be_the_output(mp4_clip, tmp_path):
    before = hashlib.sha256(mp4_clip.path.read_bytes()).hexdigest()
    assert not os.access(mp4_clip.path, os.W_OK) or os.getuid() == 0  # fixture clips are read-only
    encode(mp4_clip.path, tmp_path / "o.mp4", pictures(mp4_clip.path))
    assert hashlib.sha256(mp4_clip.path.read_bytes()).hexdigest() == before
    with pytest.raises(VhsupError, match="overwrite the input"):
        encode(mp4_clip.path, mp4_clip.path, pictures(mp4_clip.path), overwrite=True)
    assert hashlib.sha256(mp4_clip.path.read_bytes()).hexdigest() == before


def test_ctrl_c_leaves_no_output_and_no_temp_file(mp4_clip, tmp_path):
    pics = pictures(mp4_clip.path)
    dst = tmp_path / "out.mkv"
    h, w = pics[0].rgb.shape[:2]
    with pytest.raises(KeyboardInterrupt):
        with VideoEncoder(
            dst,
            src=mp4_clip.path,
            width=w,
            height=h,
            rate=mp4_clip.rate,
            sar=Fraction(1),
            colour=BT601_NTSC,
            settings=FAST,
            origin=pics[0].time,
        ) as enc:
            for p in pics[:10]:
                enc.write(p)
            assert enc.temp_file.exists() and enc.temp_file.parent == tmp_path  # it was being written
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_full_disk_leaves_no_output_and_no_temp_file(mp4_clip, tmp_path):
    """RLIMIT_FSIZE makes writes past 300 kB fail with EFBIG, as a full disk
    fails them with ENOSPC; the child process must end with a VhsupError and
    leave nothing behind."""
    pytest.importorskip("resource")
    dst = tmp_path / "big.mkv"
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from fractions import Fraction
        import numpy as np
        from vhsup.errors import VhsupError
        from vhsup.media.colour import BT601_NTSC
        from vhsup.media.encode import EncodeSettings, VideoEncoder
        from vhsup.media.picture import Picture
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        except (ValueError, OSError) as e:
            print("NOLIMIT", e); sys.exit(5)
        rng = np.random.default_rng(0)
        try:
            with VideoEncoder({str(dst)!r}, src={str(mp4_clip.path)!r}, width=320, height=240,
                              rate=Fraction(30000, 1001), sar=Fraction(1), colour=BT601_NTSC,
                              settings=EncodeSettings(codec="ffv1")) as enc:
                for i in range(40):  # noise: about 200 kB per lossless frame
                    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
                    enc.write(Picture(noise, Fraction(i * 1001, 30000), i))
                enc.close()
        except VhsupError as e:
            print("VHSUPERROR", e); sys.exit(3)
        print("FINISHED"); sys.exit(0)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode == 5:
        pytest.skip(f"cannot limit file size here: {proc.stdout}")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "disk is full" in proc.stdout and str(dst) in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_refused_for_420(odd_clip, tmp_path):
    with pytest.raises(VhsupError, match="multiple of 2"):
        VideoEncoder(
            tmp_path / "o.mkv",
            src=odd_clip.path,
            width=99,
            height=67,
            rate=odd_clip.rate,
            sar=Fraction(1),
            colour=BT601_NTSC,
            settings=FAST,
        )
    assert list(tmp_path.iterdir()) == []


def test_output_is_interleaved(clips, tmp_path):
    """Audio is handed to the muxer as the video advances. FFmpeg's muxer
    only reorders within 10 s, so in a 12 s clip an encoder that copied the
    audio at the end would leave seconds of video with no audio near it."""
    clip = clips.make("long.mkv", **LONG)
    pics = pictures(clip.path)
    dst = tmp_path / "long.mkv"
    encode(clip.path, dst, pics)
    worst = 0.0
    last = {}
    with av.open(str(dst)) as c:
        for pkt in c.demux():
            if pkt.size == 0 or pkt.pts is None:
                continue
            t = float(pkt.pts * pkt.time_base)
            last[pkt.stream.type] = t
            if len(last) == 2:
                worst = max(worst, abs(last["video"] - last["audio"]))
    assert len(last) == 2 and worst < 1.0


LONG = dict(vcodec="ffv1", size=(32, 24), frames=360, audio="mp2", flash_every=60)


def test_range_deep_into_a_file(clips, tmp_path):
    """A range starting 10 s in: the audio reader skips ahead by seeking and
    must still start exactly at the range."""
    clip = clips.make("long.mkv", **LONG)
    start, end = Fraction(10), Fraction(21, 2)
    pics = pictures(clip.path, start=start, end=end)
    dst = tmp_path / "tail.mkv"
    encode(clip.path, dst, pics, time_range=(start, end), origin=start)
    times, video_end = video_times(dst)
    a0, a1 = mg.audio_span(dst)
    frame = float(1 / clip.rate)
    assert abs(a0 - times[0]) < frame and abs(a1 - video_end) < frame
    assert [i for _, i in mg.read_indices(dst)] == list(range(300, 315))
    (flash,) = mg.find_flashes(dst)  # frame 305
    assert mg.find_clicks(dst) == pytest.approx([flash], abs=0.002)


def test_avi_output_places_frames_on_the_frame_grid(ts_clip, tmp_path):
    # FFV1: FFmpeg's AVI reader guesses a reorder delay for H.264 and shows
    # it a frame late whatever the writer does, which would hide the check.
    dst = tmp_path / "out.avi"
    report, _ = encode(ts_clip.path, dst, pictures(ts_clip.path), settings=EncodeSettings(codec="ffv1"))
    times, end = video_times(dst)
    assert [i for _, i in mg.read_indices(dst)] == list(range(ts_clip.frames))
    assert np.allclose(np.diff(times), float(1 / ts_clip.rate), atol=1e-6)
    # AVI has no audio start time: audio begins with the video, so sync is
    # as good as the packet nearest the cut - within half an MP2 packet.
    half_packet = 1152 / 48000 / 2
    assert mg.find_clicks(dst) == pytest.approx(mg.find_flashes(dst), abs=half_packet + 0.001)


def test_leftover_of_a_crashed_run_is_removed(mp4_clip, tmp_path):
    """A run killed outright (power cut, SIGKILL) cannot clean up; the next
    run for the same output removes its temp file, but not one whose writer
    is still alive."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.vhsup-partial-{int(dead.stdout)}-0000.mkv"
    live = tmp_path / f".out.vhsup-partial-{os.getppid()}-0000.mkv"
    stale.write_bytes(b"half a file")
    live.write_bytes(b"someone else's")
    report, notices = encode(mp4_clip.path, tmp_path / "out.mkv", pictures(mp4_clip.path)[:2])
    assert not stale.exists() and live.exists()
    assert any(stale.name in n for n in notices)


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_a_garbage_decode_time_from_the_encoder_is_dropped_and_the_file_muxes(tmp_path, ext):
    # libx265 now and then gives the first packet of a very short encode a dts
    # far after its pts; the muxer refused it ("pts (0) < dts (65106155554269006)").
    from vhsup.media.encode import sane_dts

    rate = Fraction(30000, 1001)
    dst = tmp_path / f"x265.{ext}"
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx265", rate=rate, options={"log-level": "error"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = 1 / rate
        packets = []
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24").reformat(
                format="yuv420p"
            )
            f.pts, f.time_base = i, 1 / rate
            packets += s.encode(f)
        packets += s.encode(None)
        first = min(packets, key=lambda p: p.pts)
        first.dts = 65106155554269006  # what the encoder handed over
        if ext == "mkv":
            with pytest.raises(av.error.ArgumentError):
                out.mux(first)  # as it was: Matroska refuses it
        out.mux(sane_dts(packets))
    with av.open(str(dst)) as c:
        frames = [(f.pts, int(f.to_ndarray(format="gray").mean())) for f in c.decode(video=0)]
    assert len(frames) == 3
    assert [round(v / 40) for _, v in frames] == [0, 1, 2]  # every picture, in order


def test_nvenc_on_a_gpu_without_it_says_so():
    from vhsup.media.encode import no_nvenc_on

    why = no_nvenc_on("NVIDIA H200")
    assert why is not None and "NVIDIA H200 here has no NVENC" in why
    assert no_nvenc_on("NVIDIA A100-SXM4-80GB") is not None
    assert no_nvenc_on("NVIDIA GeForce RTX 4090") is None and no_nvenc_on("NVIDIA L4") is None
    assert no_nvenc_on(None) is None
