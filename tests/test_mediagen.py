"""The test clips are what every other test trusts, so check them against
what PyAV reads back: formats, field order, timing, sync marks, colours."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

import mediagen as mg

PRESET_CHECKS = {
    # name: (container, decoder name, width, height, pix_fmt, audio decoders)
    "dvd": ("vob", "mpeg2video", 352, 240, "yuv420p", ["ac3"]),
    "dv": ("avi", "dvvideo", 720, 480, "yuv411p", ["pcm_s16le"]),
    "odd": ("matroska", "ffv1", 99, 67, "yuv420p", ["flac"]),
    "mp4": ("mp4", "h264", 160, 120, "yuv420p", ["aac"]),
    "vfr": ("matroska", "h264", 160, 120, "yuv420p", ["aac"]),
    "ts": ("mpegts", "mpeg2video", 160, 120, "yuv420p", ["mp2"]),
    "subs": ("matroska", "ffv1", 128, 96, "yuv420p", ["ac3", "pcm_s16le"]),
}


@pytest.mark.parametrize("name", sorted(PRESET_CHECKS))
def test_preset_reads_back_as_built(clips, name):
    info = clips.get(name)
    container, vdec, w, h, pix_fmt, adecs = PRESET_CHECKS[name]
    with av.open(str(info.path)) as c:
        assert c.format.name.split(",")[0] in (container, "mpeg", "mov") and info.container == container
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.width, v.codec_context.height) == (vdec, w, h)
        assert v.codec_context.pix_fmt == pix_fmt
        assert v.sample_aspect_ratio in (info.sar, None) or info.sar == 1
        assert [a.codec_context.name for a in c.streams.audio] == adecs
    # Every frame decodes, in order, carrying its own index.
    indexed = mg.read_indices(info.path)
    assert [i for _, i in indexed] == list(range(info.frames))
    # Frame times are the intended ones, moved by the muxer's shift only
    # (Matroska rounds to 1 ms).
    got = np.array([t for t, _ in indexed])
    want = np.array([float(t) for t in info.frame_times]) + info.shift
    assert np.abs(got - want).max() < 0.0011
    # Flashes on the intended frames; every audio stream clicks on them.
    flashes = mg.find_flashes(info.path)
    assert flashes == pytest.approx([float(t) + info.shift for t in info.flash_times], abs=0.0011)
    for k in range(len(adecs)):
        assert mg.find_clicks(info.path, k) == pytest.approx(flashes, abs=0.0011)


@pytest.mark.parametrize("name,order", [("dvd", "tff"), ("ts", "tff"), ("dv", "bff")])
def test_interlaced_fields_come_from_two_instants(clips, name, order):
    info = clips.get(name)
    with av.open(str(info.path)) as c:
        frames = list(c.decode(video=0))
        reported = c.streams.video[0].codec_context.field_order
    # What PyAV reports: MPEG-2 carries the field order (2 = TT, 3 = BB);
    # DV in AVI reports unknown (0), and every DV decoder assumes BFF.
    assert reported == {"tff": 2, "bff": 3}[order] or (info.vcodec == "dvvideo" and reported == 0)
    k = 3  # a frame on the forward sweep of the box
    f = frames[k]
    assert f.interlaced_frame
    rgb = f.to_ndarray(format="rgb24")
    h, w = rgb.shape[:2]
    box = max(3, round(0.22 * h))
    by = round(0.07 * h)
    rows = np.arange(by + 2, by + box - 2)

    def left_edge(rs):
        luma = rgb[rs].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return int(np.flatnonzero((luma > 130).mean(axis=0) > 0.5)[0])

    even, odd = left_edge(rows[rows % 2 == 0]), left_edge(rows[rows % 2 == 1])
    t = float(info.frame_times[k] - info.frame_times[0])
    early = mg._box_x(w, box, t)
    late = mg._box_x(w, box, t + float(info.frame_durations[k] / 2))
    assert late - early >= 3  # the box really moved between the fields
    first, second = (even, odd) if order == "tff" else (odd, even)
    assert abs(first - early) <= 1 and abs(second - late) <= 1


def test_read_index_survives_scaling_cropping_and_lossy_coding():
    for index in (0, 1, 513, 1023):
        rgb = mg.render(99, 67, index, 0.3)
        big = cv2.resize(rgb, (99 * 4, 67 * 4), interpolation=cv2.INTER_CUBIC)
        assert mg.read_index(big) == index
        assert mg.read_index(big[6:-5, 8:-7]) == index  # crop a few pixels
        ok, jpg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 30])
        assert mg.read_index(cv2.imdecode(jpg, cv2.IMREAD_COLOR)) == index
    # A blend of two different frames is not silently read as either.
    blend = ((mg.render(64, 48, 5, 0).astype(np.uint16) + mg.render(64, 48, 10, 0)) // 2).astype(np.uint8)
    with pytest.raises(ValueError):
        mg.read_index(blend)


def test_lossless_clip_has_exact_bt601_bars(odd_clip):
    """The colour reference is right: a lossless clip decoded with the matrix
    it is tagged with gives back the bar colours."""
    with av.open(str(odd_clip.path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.colorspace, v.codec_context.color_range) == (6, 1)  # smpte170m, limited
        frame = next(c.decode(v))
        rgb = frame.to_ndarray(format="rgb24", src_colorspace="itu601", src_color_range="MPEG", dst_color_range="JPEG")
    for (x0, x1, y0, y1), want in zip(mg.bar_boxes(99, 67), mg.BARS):
        got = rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        assert np.abs(got - want).max() < 4, (got, want)


def test_dv_wide_and_pal_geometry(tmp_path):
    wide = mg.make_clip(tmp_path / "wide.avi", vcodec="dvvideo", sar=Fraction(32, 27), frames=2)
    pal = mg.make_clip(tmp_path / "pal.avi", vcodec="dvvideo", rate=mg.PAL_RATE, frames=2)
    with av.open(str(wide.path)) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(32, 27)
        assert wide.dar == Fraction(16, 9)
    with av.open(str(pal.path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height, v.codec_context.pix_fmt) == (720, 576, "yuv420p")
        assert v.sample_aspect_ratio == Fraction(16, 15) and v.average_rate == 25
    with pytest.raises(ValueError):
        mg.make_clip(tmp_path / "bad.avi", vcodec="dvvideo", size=(352, 240))


def test_subtitles_chapters_metadata_and_audio_lead(subs_clip):
    with av.open(str(subs_clip.path)) as c:
        assert c.metadata.get("title") == "vhsup test clip"
        assert [a.metadata.get("language") for a in c.streams.audio] == ["eng", "fra"]
        (sub,) = c.streams.subtitles
        assert sub.metadata.get("language") == "eng"
        cues = [(float(p.pts * p.time_base), bytes(p).decode()) for p in c.demux(sub) if p.size]
        chapters = c.chapters()
        (att,) = [s for s in c.streams if s.type == "attachment"]
        assert (att.name, att.data) == (mg.ATTACHMENT_NAME, mg.ATTACHMENT_DATA)
    want = [(float(q.start), q.text) for q in subs_clip.subtitles]
    assert [t for _, t in cues] == [t for _, t in want]
    assert [s for s, _ in cues] == pytest.approx([s for s, _ in want], abs=0.0011)
    assert [ch["metadata"]["title"] for ch in chapters] == ["Opening", "Second half"]
    # The audio really starts before the video (by 0.1 s, less AC-3's priming).
    assert subs_clip.video_start == pytest.approx(0.5, abs=0.001)
    assert subs_clip.audio_starts[1] == pytest.approx(0.4, abs=0.001)


def test_vfr_clip_has_irregular_frame_durations(vfr_clip):
    with av.open(str(vfr_clip.path)) as c:
        times = [f.pts * f.time_base for f in c.decode(video=0)]
    steps = {round(float(b - a) * 1000) for a, b in zip(times, times[1:])}
    assert steps == set(mg.VFR_PATTERN_MS)
    assert times[0] == 10
