"""vhsup probe: what a user is told about a file before upscaling it."""

from fractions import Fraction

import av
import pytest

import mediagen
from vhsup.errors import VhsupError
from vhsup.media.probe import probe


def test_dvd_program_stream(dvd_clip):
    info = probe(dvd_clip.path)
    assert info.codec == "mpeg2video"
    assert (info.width, info.height) == (352, 240)
    assert info.sar == Fraction(10, 11) and info.dar == Fraction(4, 3)
    assert info.fps == Fraction(30000, 1001)
    # MPEG-PS records no frame count: it is counted, not taken from nb_frames.
    assert info.frames == dvd_clip.frames and info.frames_exact
    assert info.interlace.interlaced and info.interlace.field_order == "tff"
    assert [a.codec for a in info.audio] == ["ac3"]
    assert info.colour == "bt601-ntsc"


def test_dv_avi_is_bottom_field_first(dv_clip):
    info = probe(dv_clip.path)
    assert info.codec == "dvvideo" and info.pix_fmt == "yuv411p"
    assert info.interlace.interlaced and info.interlace.field_order == "bff"
    assert info.dar == Fraction(4, 3)
    assert [(a.codec, a.channels, a.sample_rate) for a in info.audio] == [("pcm_s16le", 2, 48000)]


def test_progressive_files_are_left_alone(odd_clip, mp4_clip):
    for clip in (odd_clip, mp4_clip):
        info = probe(clip.path)
        assert not info.interlace.interlaced, info.interlace.evidence
        assert (info.width, info.height) == (clip.width, clip.height)
        assert info.frames == clip.frames


def test_unflagged_combing_is_found_by_idet(tmp_path):
    """A VHS capture re-encoded as 'progressive' H.264 still has two instants per frame."""
    path = tmp_path / "combed.mp4"
    rate = Fraction(30000, 1001)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "12"})
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(30):
            early = mediagen.render(320, 240, i, float(i / rate))
            late = mediagen.render(320, 240, i, float(i / rate + 1 / (2 * rate)))
            frame = early.copy()
            frame[1::2] = late[1::2]  # top field first: the later field on odd lines
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    info = probe(path)
    assert info.field_order == "progressive"  # what the flags claim
    assert info.interlace.interlaced, info.interlace.evidence
    assert info.interlace.source == "idet"
    assert info.interlace.field_order == "tff"


def test_unknown_field_order_decided_by_idet(clips):
    clip = clips.make("capture.avi", vcodec="ffv1", size=(160, 120), interlaced="bff", frames=30)
    info = probe(clip.path)
    assert info.field_order == "unknown"
    assert info.interlace.interlaced and info.interlace.field_order == "bff"
    assert info.interlace.source == "idet"


def test_probe_does_not_touch_the_file(dvd_clip):
    before = dvd_clip.path.read_bytes()
    probe(dvd_clip.path)
    assert dvd_clip.path.read_bytes() == before


def test_audio_only_file_is_refused(tmp_path):
    path = mediagen.make_audio_only(tmp_path / "song.wav")
    with pytest.raises(VhsupError, match=r"song\.wav: audio-only file"):
        probe(path)
