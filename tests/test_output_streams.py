"""What the output container carries besides the pictures: the pixel aspect
ratio with every codec and container, HEVC's 'hvc1' tag, subtitles turned
into the container's own text format, notices for audio cut at the end of
the video, containers that cannot time a codec, and presets that do nothing.

Everything is read back from the written file with PyAV.
"""

from __future__ import annotations

import io
import re
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_encode import encode, leftovers, pictures, video_times

import mediagen as mg
from vhsup.errors import VhsupError
from vhsup.media.colour import BT601_NTSC
from vhsup.media.encode import EncodeSettings, VideoEncoder
from vhsup.media.picture import Picture

CODECS = ["libx264", "libx265", "ffv1", "prores_ks", "h264_nvenc", "hevc_nvenc"]
CONTAINERS = [".mkv", ".mp4", ".mov"]
# What FFmpeg's muxers refuse outright (checked below, so this list cannot go stale).
CANNOT_HOLD = {("ffv1", ".mov"): "mov", ("prores_ks", ".mp4"): "mp4"}


def settings_for(codec: str, **kw) -> EncodeSettings:
    fast = {"preset": "ultrafast"} if codec in ("libx264", "libx265") else {}
    return EncodeSettings(codec=codec, **{**fast, **kw})


def rendered(width: int, height: int, n: int) -> list[Picture]:
    rate = mg.NTSC_RATE
    return [Picture(mg.render(width, height, i, float(i / rate)), Fraction(i) / rate, i) for i in range(n)]


def encode_or_skip_nvenc(src, dst, pics, settings, **kw):
    """encode(), skipping the test where NVENC has no GPU to run on."""
    try:
        return encode(src, dst, pics, settings=settings, **kw)
    except VhsupError as e:
        if settings.codec.endswith("_nvenc") and "needs an NVIDIA GPU" in str(e):
            pytest.skip(f"{settings.codec}: no NVENC on this machine")
        raise


# -- pixel aspect ratio ------------------------------------------------------


@pytest.mark.parametrize("ext", CONTAINERS)
@pytest.mark.parametrize("codec", CODECS)
def test_sample_aspect_ratio_survives_every_codec_and_container(mp4_clip, tmp_path, codec, ext):
    """A 720x480 4:3 capture (SAR 8:9) must not come back 3:2, whatever the
    codec and container; archivists use FFV1 in Matroska."""
    dst = tmp_path / f"sar{ext}"
    pics = rendered(720, 480, 3)
    if (codec, ext) in CANNOT_HOLD:
        with pytest.raises(VhsupError, match=f"{CANNOT_HOLD[codec, ext]} cannot hold {codec} video; use .m"):
            encode(mp4_clip.path, dst, pics, settings=settings_for(codec), sar=Fraction(8, 9))
        assert leftovers(tmp_path) == [] and not dst.exists()
        trial = av.open(io.BytesIO(), "w", format=CANNOT_HOLD[codec, ext])
        with pytest.raises(ValueError):  # FFmpeg's muxer itself, not only vhsup, refuses it
            trial.add_stream(codec)
        return
    encode_or_skip_nvenc(mp4_clip.path, dst, pics, settings_for(codec), sar=Fraction(8, 9))
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        cc = v.codec_context
        assert (cc.width, cc.height) == (720, 480)
        assert v.sample_aspect_ratio == Fraction(8, 9)  # what players use
        assert Fraction(cc.width, cc.height) * v.sample_aspect_ratio == Fraction(4, 3)
        if codec not in ("ffv1", "prores_ks"):
            assert cc.sample_aspect_ratio == Fraction(8, 9)  # in the H.264/HEVC VUI too
    assert [i for _, i in mg.read_indices(dst)] == [0, 1, 2]


@pytest.mark.parametrize("ext", [".mp4", ".mov"])
@pytest.mark.parametrize("codec", ["libx265", "hevc_nvenc"])
def test_hevc_in_mp4_and_mov_is_tagged_hvc1(mp4_clip, tmp_path, codec, ext):
    """QuickTime, iOS and Safari refuse HEVC tagged 'hev1' (FFmpeg's default)."""
    dst = tmp_path / f"hevc{ext}"
    encode_or_skip_nvenc(mp4_clip.path, dst, rendered(160, 120, 4), settings_for(codec))
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_tag == "hvc1"
    assert [i for _, i in mg.read_indices(dst)] == [0, 1, 2, 3]


# -- AVI ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["libx264", "libx265", "h264_nvenc", "hevc_nvenc"])
def test_h264_and_hevc_in_avi_are_refused_before_anything_is_written(mp4_clip, tmp_path, codec):
    dst = tmp_path / "out.avi"
    with pytest.raises(VhsupError, match=r"avi stores no presentation times.*frame late.*--codec ffv1") as e:
        VideoEncoder(
            dst,
            src=mp4_clip.path,
            width=160,
            height=120,
            rate=mp4_clip.rate,
            sar=Fraction(1),
            colour=BT601_NTSC,
            settings=settings_for(codec),
        )
    assert str(dst) in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_upscale_refuses_h264_avi_before_loading_a_model(mp4_clip, tmp_path):
    from vhsup.pipeline import upscale_video

    with pytest.raises(VhsupError, match="avi stores no presentation times"):
        upscale_video(mp4_clip.path, tmp_path / "out.avi", model="no-such-model")  # the model is never looked up
    assert list(tmp_path.iterdir()) == []


def test_why_h264_in_avi_is_refused(tmp_path):
    """The reason, kept honest: AVI stores no pts, and FFmpeg's pts rebuild
    (which PyAV always turns on) shows H.264 without B-frames one frame
    late. If this starts failing, the refusal can go."""
    path = tmp_path / "plain.avi"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "bf": "0"})
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i, rgb in enumerate(mg.wave_frames(6, 48, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    with av.open(str(path)) as c:
        stamps = [(p.pts, p.dts) for p in c.demux(video=0) if p.size]
    assert len(stamps) == 6 and all(pts == dts + 1 for pts, dts in stamps)


def test_ffv1_in_avi_keeps_variable_frame_rate_pictures_on_their_slots(vfr_clip, tmp_path):
    """AVI holds one frame rate: each picture goes to the slot nearest its
    time (one later where two share a slot), never all one slot late."""
    dst = tmp_path / "vfr.avi"
    pics = pictures(vfr_clip.path)
    encode(vfr_clip.path, dst, pics, settings=EncodeSettings(codec="ffv1"))
    slot = float(1 / vfr_clip.rate)
    got = {i: t for t, i in mg.read_indices(dst)}
    assert sorted(got) == list(range(vfr_clip.frames))
    lag = np.array([got[p.index] - float(p.time - pics[0].time) for p in pics])
    assert np.median(np.abs(lag)) < slot / 2 and lag.max() < 1.5 * slot and lag.min() > -slot / 2
    assert mg.find_clicks(dst) == pytest.approx(mg.find_flashes(dst), abs=slot / 2)


# -- subtitles ---------------------------------------------------------------


def text_cues(path, k: int = 0) -> list[tuple[float, float, str]]:
    """(start, duration, text) of each non-empty cue, on the file clock."""
    out = []
    with av.open(str(path)) as c:
        st = c.streams.subtitles[k]
        for p in c.demux(st):
            if not p.size:
                continue
            data = bytes(p)
            if st.codec_context.name == "mov_text":  # 16-bit length, then the text
                data = data[2 : 2 + struct.unpack(">H", data[:2])[0]]
            if data:
                out.append((float(p.pts * p.time_base), float(p.duration * p.time_base), data.decode()))
    return out


def assert_cues_follow_the_pictures(dst, clip, pics):
    """Every cue of the clip, same text, same place against the first picture."""
    t0 = video_times(dst)[0][0]
    cues = text_cues(dst)
    assert [text for _, _, text in cues] == [q.text for q in clip.subtitles]
    for (start, duration, _), q in zip(cues, clip.subtitles):
        assert start - t0 == pytest.approx(float(q.start - pics[0].time), abs=0.0015)
        assert duration == pytest.approx(float(q.end - q.start), abs=0.0015)


@pytest.mark.parametrize("ext", [".mp4", ".mov"])
def test_text_subtitles_become_mov_text_in_mp4_and_mov(subs_clip, tmp_path, ext):
    dst = tmp_path / f"subs{ext}"
    pics = pictures(subs_clip.path)
    report, notices = encode(subs_clip.path, dst, pics)
    assert '#3 subtitle srt (eng, "Flash captions") -> mov_text' in report.transcoded
    assert report.subtitle_streams == 1
    assert any(n.startswith('#3 subtitle srt (eng, "Flash captions") converted to mov_text') for n in notices)
    with av.open(str(dst)) as c:
        assert [(s.codec_context.name, s.metadata.get("language")) for s in c.streams.subtitles] == [
            ("mov_text", "eng")
        ]
    assert_cues_follow_the_pictures(dst, subs_clip, pics)


def test_mov_text_becomes_subrip_in_matroska(clips, tmp_path):
    clip = clips.make(
        "subs.mp4", vcodec="libx264", size=(128, 96), audio="aac", subtitles=True, frames=36, start_time=Fraction(1, 2)
    )
    dst = tmp_path / "subs.mkv"
    pics = pictures(clip.path)
    report, _ = encode(clip.path, dst, pics)
    assert [t for t in report.transcoded if "subtitle" in t] == ["#2 subtitle mov_text (eng) -> subrip"]
    with av.open(str(dst)) as c:
        assert [s.codec_context.name for s in c.streams.subtitles] == ["srt"]  # SubRip, as FFmpeg names its decoder
    assert_cues_follow_the_pictures(dst, clip, pics)


ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    b"Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
    b"MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


def test_styled_ass_subtitles_keep_text_timing_and_italics_in_mp4(tmp_path):
    """An ASS cue with an italic word, 80-280 ms, encoded by FFmpeg's own
    ASS encoder into Matroska: in MP4 it is one mov_text cue with a style
    record marking those characters italic."""
    src = tmp_path / "styled.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        st = out.add_stream("ass")
        st.codec_context.subtitle_header = ASS_HEADER
        out.start_encoding()
        for i, rgb in enumerate(mg.wave_frames(10, 48, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(frame))
            if i == 2:
                cue = av.subtitles.subtitle.SubtitleSet.create(b"0,0,Default,,0,0,0,,{\\i1}hello{\\i0} there", 0, 200)
                pkt = st.codec_context.encode_subtitle(cue)
                pkt.stream, pkt.time_base = st, Fraction(1, 1000)
                pkt.pts = pkt.dts = 80
                pkt.duration = 200
                out.mux(pkt)
        out.mux(vs.encode(None))
    dst = tmp_path / "styled.mp4"
    report, _ = encode(src, dst, pictures(src))
    assert report.transcoded == ["#1 subtitle ssa -> mov_text"]
    assert [(round(start, 3), round(duration, 3), text) for start, duration, text in text_cues(dst)] == [
        (0.08, 0.2, "hello there")
    ]
    with av.open(str(dst)) as c:
        (sample,) = [bytes(p) for p in c.demux(c.streams.subtitles[0]) if p.size > 2]
    styl = sample[2 + 11 :]  # after the length and the text: one 'styl' box
    assert styl[4:8] == b"styl"
    count, first, last, _font, flags = struct.unpack(">HHHHB", styl[8:17])
    assert (count, first, last) == (1, 0, 5) and flags & 2  # characters 0-5 ("hello") italic


def make_dvd_subtitle_clip(path: Path) -> Path:
    """FFV1 in Matroska with one DVD subpicture (a 2x2 bitmap) at 40 ms."""
    # SPU: size, control offset, one RLE line per field (2 pixels of colour
    # 1), then one control sequence: start display, colours, contrast,
    # area (0,0)-(1,1), field offsets, end.
    control = bytes([0, 0, 0, 6, 0x01, 0x03, 0x32, 0x10, 0x04, 0xFF, 0xF0,
                     0x05, 0, 0, 1, 0, 0, 1, 0x06, 0, 4, 0, 5, 0xFF])  # fmt: skip
    body = bytes([0x90, 0x90]) + control
    spu = struct.pack(">HH", 4 + len(body), 6) + body
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        sub = out.add_mux_stream("dvd_subtitle")
        sub.metadata["language"] = "eng"
        out.start_encoding()
        for i, rgb in enumerate(mg.wave_frames(5, 48, 64)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(frame))
            if i == 1:
                pkt = av.Packet(spu)
                pkt.stream, pkt.time_base = sub, Fraction(1, 1000)
                pkt.pts = pkt.dts = 40
                pkt.duration = 100
                out.mux(pkt)
        out.mux(vs.encode(None))
    with av.open(str(path)) as c:  # a real subpicture, as a DVD decoder sees it
        st = c.streams.subtitles[0]
        (bitmap,) = [s for p in c.demux(st) if p.size for s in st.decode(p)]
        assert (type(bitmap).__name__, bitmap.width, bitmap.height) == ("BitmapSubtitle", 2, 2)
    return path


def test_bitmap_subtitles_are_dropped_only_where_they_cannot_go(tmp_path):
    src = make_dvd_subtitle_clip(tmp_path / "dvdsub.mkv")
    pics = pictures(src)
    report, notices = encode(src, tmp_path / "out.mov", pics)
    assert report.dropped_streams == ["#1 subtitle dvdsub (eng)"] and report.subtitle_streams == 0
    (note,) = [n for n in notices if "dvdsub" in n]
    assert "dropped" in note and "bitmap subtitles cannot be converted to text" in note
    # MP4 holds DVD subpictures as they are.
    report, _ = encode(src, tmp_path / "out.mp4", pics)
    assert report.subtitle_streams == 1 and not report.dropped_streams
    with av.open(str(tmp_path / "out.mp4")) as c:
        st = c.streams.subtitles[0]
        assert st.codec_context.name == "dvdsub"
        assert [float(p.pts * p.time_base) for p in c.demux(st) if p.size] == [pytest.approx(0.04, abs=0.001)]


# -- audio that outlasts the video -------------------------------------------

OVERRUN = re.compile(r"^#1 audio (\S+) .*runs (\d+\.\d\d) s past the last video frame; that part was cut$")


@pytest.mark.parametrize(
    "name,kw,ext,kept",
    [
        # A DVD rip whose AC-3 runs 0.93 s past the video, copied into Matroska.
        (
            "overrun.vob",
            {"vcodec": "mpeg2video", "size": (352, 240), "interlaced": "tff", "audio": "ac3"},
            ".mkv",
            "ac3",
        ),
        # PCM that MP4 players cannot take: re-encoded to AAC, cut to the sample.
        ("overrun.mkv", {"vcodec": "ffv1", "size": (128, 96), "audio": "pcm_s16le"}, ".mp4", "aac"),
    ],
)
def test_audio_past_the_last_frame_is_cut_with_a_notice(clips, tmp_path, name, kw, ext, kept):
    clip = clips.make(name, frames=30, audio_tail=Fraction(93, 100), **kw)
    assert mg.audio_span(clip.path)[1] - mg.audio_span(clip.path)[0] > float(clip.duration) + 0.9
    dst = tmp_path / f"out{ext}"
    report, notices = encode(clip.path, dst, pictures(clip.path))
    matches = [m for m in map(OVERRUN.match, notices) if m]
    assert len(matches) == 1 and matches[0].group(1) == clip.audio[0]
    assert float(matches[0].group(2)) == pytest.approx(0.93, abs=0.04)
    assert matches[0].group(0) in report.notices
    # The cut itself: the output's audio ends with its video.
    _, video_end = video_times(dst)
    with av.open(str(dst)) as c:
        assert c.streams.audio[0].codec_context.name == kept
    assert abs(mg.audio_span(dst)[1] - video_end) < float(1 / clip.rate)


def test_no_overrun_notice_when_the_audio_ends_with_the_video_or_a_range_cuts_it(dvd_clip, clips, tmp_path):
    _, notices = encode(dvd_clip.path, tmp_path / "plain.mkv", pictures(dvd_clip.path))
    assert not [n for n in notices if "past the last video frame" in n]
    # A range that ends before the video does cuts the audio on purpose.
    clip = clips.make(
        "overrun.vob",
        vcodec="mpeg2video",
        size=(352, 240),
        interlaced="tff",
        audio="ac3",
        frames=30,
        audio_tail=Fraction(93, 100),
    )
    pics = pictures(clip.path)
    end = pics[15].time
    _, notices = encode(clip.path, tmp_path / "range.mkv", pics[:15], time_range=(pics[0].time, end))
    assert not [n for n in notices if "past the last video frame" in n]


# -- presets -----------------------------------------------------------------


@pytest.mark.parametrize(
    "codec,takes_preset", [("libx264", True), ("libx265", True), ("ffv1", False), ("prores_ks", False)]
)
def test_a_preset_the_encoder_ignores_is_reported(mp4_clip, tmp_path, codec, takes_preset):
    dst = tmp_path / ("out.mov" if codec == "prores_ks" else "out.mkv")
    _, notices = encode(mp4_clip.path, dst, pictures(mp4_clip.path)[:2], settings=EncodeSettings(codec, preset="slow"))
    ignored = [n for n in notices if "preset" in n]
    assert ignored == ([] if takes_preset else [f"{codec} has no presets; ignoring preset 'slow'"])


def test_nvenc_presets_are_checked_before_the_gpu_is_needed(mp4_clip, tmp_path):
    with pytest.raises(VhsupError, match="h264_nvenc preset must be one of p1, p2"):
        encode(
            mp4_clip.path,
            tmp_path / "o.mkv",
            pictures(mp4_clip.path)[:1],
            settings=EncodeSettings("h264_nvenc", preset="slow"),
        )
    assert list(tmp_path.iterdir()) == []
