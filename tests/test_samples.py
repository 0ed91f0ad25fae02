"""The demo sample must look, to FFmpeg and to the eye, like a real DV capture of a VHS tape."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from vhsup.errors import VhsupError
from vhsup.samples import AUDIO_RATE, VhsLook, make_vhs_sample

SECONDS = 1.1  # 33 frames: holds the sync cues at 0 s and 1 s


@pytest.fixture(scope="module")
def dv(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "tape.avi"
    return make_vhs_sample(path, seconds=SECONDS, seed=3)


@pytest.fixture(scope="module")
def dv_planes(dv):
    with av.open(str(dv.path)) as c:
        return np.array([f.reformat(format="yuv444p").to_ndarray() for f in c.decode(video=0)]).astype(np.float32)


def _audio(path) -> np.ndarray:
    """All audio as (channels, samples) int16."""
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
        channels = c.streams.audio[0].codec_context.channels
    flat = np.concatenate([ch.reshape(-1) for ch in chunks])
    return flat.reshape(-1, channels).T


def _moving_box(y0: np.ndarray, y1: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of the biggest thing that moved between two frames.

    Blurring first ignores grain and line jitter; the largest blob is the
    fast disc, not the slowly panning background.
    """
    moved = (cv2.blur(np.abs(y1 - y0), (15, 15)) > 30).astype(np.uint8)
    _n, _labels, stats, _centroids = cv2.connectedComponentsWithStats(moved)
    x, y, w, h, _area = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    return slice(y & ~1, (y + h) & ~1), slice(x, x + w)


def _shift(a: np.ndarray, b: np.ndarray) -> float:
    """Horizontal displacement of b relative to a (phase correlation)."""
    win = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, _dy), _ = cv2.phaseCorrelate(a, b, win)
    return dx


def test_dv_streams_are_what_a_dv_bridge_writes(dv):
    assert dv.frames == round(SECONDS * Fraction(30000, 1001)) == 33
    with av.open(str(dv.path)) as c:
        assert c.format.name == "avi"
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "dvvideo"
        assert (v.codec_context.width, v.codec_context.height) == (720, 480)
        assert v.average_rate == Fraction(30000, 1001)
        assert v.codec_context.pix_fmt == "yuv411p"
        assert v.codec_context.sample_aspect_ratio == Fraction(8, 9) == dv.sar
        assert a.codec_context.name == "pcm_s16le"
        assert a.codec_context.channels == 2
        assert a.rate == AUDIO_RATE
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == dv.frames
    samples = _audio(dv.path).shape[1]
    video_s = dv.frames / dv.rate
    assert abs(samples / AUDIO_RATE - video_s) < 1 / dv.rate


def test_dv_frames_are_flagged_bottom_field_first(dv):
    # AVI has no field-order field, so PyAV's stream reports 'unknown'; the
    # order lives in each DV frame's header. separatefields emits the fields
    # in the order the decoder flagged: the bottom (odd) lines first.
    assert dv.field_order == "bff"
    with av.open(str(dv.path)) as c:
        s = c.streams.video[0]
        frame = next(c.decode(s))
        assert frame.interlaced_frame
        graph = av.filter.Graph()
        src, sep, sink = graph.add_buffer(template=s), graph.add("separatefields"), graph.add("buffersink")
        src.link_to(sep)
        sep.link_to(sink)
        graph.configure()
        graph.vpush(frame)
        first = graph.vpull().to_ndarray(format="gray").astype(np.float32)
    whole = frame.to_ndarray(format="gray").astype(np.float32)
    to_bottom = np.abs(first - whole[1::2]).mean()
    to_top = np.abs(first - whole[0::2]).mean()
    assert to_bottom < 0.5 < to_top


def test_idet_sees_bottom_field_first_content(dv):
    # What vhsup's probe falls back on when a container gives no order.
    with av.open(str(dv.path)) as c:
        s = c.streams.video[0]
        graph = av.filter.Graph()
        src, det, sink = graph.add_buffer(template=s), graph.add("idet"), graph.add("buffersink")
        src.link_to(det)
        det.link_to(sink)
        graph.configure()
        meta = {}
        for f in list(c.decode(s)) + [None]:
            graph.vpush(f)
            while True:
                try:
                    meta = dict(graph.vpull().metadata)
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
    bff = float(meta["lavfi.idet.multiple.bff"])
    others = sum(float(meta[f"lavfi.idet.multiple.{k}"]) for k in ("tff", "progressive"))
    assert bff >= 0.8 * (dv.frames - 1) and others <= 2


def test_fields_come_from_two_instants_bottom_first(dv_planes):
    y = dv_planes[:, 0]
    for n in (6, 12, 18):
        rows, cols = _moving_box(y[n], y[n + 1])
        odd, even = y[n, rows.start + 1 : rows.stop : 2, cols], y[n, rows.start : rows.stop : 2, cols]
        next_odd = y[n + 1, rows.start + 1 : rows.stop : 2, cols]
        # The disc moves right: the even (top) field shows it later than the
        # odd (bottom) field of the same frame, and the next frame's bottom
        # field later again, each by one field period's travel.
        first_to_second = _shift(odd, even)
        second_to_next = _shift(even, next_odd)
        assert first_to_second > 6
        assert abs(first_to_second - second_to_next) < 2
        # Combing: neighbouring lines (other field) differ far more than
        # lines two apart (same field) where things move.
        box = y[n, rows, cols]
        comb = np.mean((box[1:-1] - 0.5 * (box[:-2] + box[2:])) ** 2)
        same = np.mean((box[2:-2] - 0.5 * (box[:-4] + box[4:])) ** 2)
        assert comb > 2.5 * same


def test_chroma_lags_luma_by_the_set_delay(dv_planes, tmp_path):
    def lag(planes: np.ndarray) -> int:
        acc = np.zeros(25)
        for yuv in planes[::3]:
            # Compare edges at chroma's bandwidth: blur luma the same way.
            y = cv2.GaussianBlur(yuv[0], (0, 0), sigmaX=4.5, sigmaY=0.1)
            gy = np.abs(np.diff(y, axis=1))[:, 20:-20]
            gc = np.abs(np.diff(yuv[1], axis=1)) + np.abs(np.diff(yuv[2], axis=1))
            acc += [(gy * gc[:, 20 + k : gc.shape[1] - 20 + k]).mean() for k in range(-12, 13)]
        return int(np.argmax(acc)) - 12

    control = make_vhs_sample(tmp_path / "aligned.avi", seconds=0.2, seed=3, look=VhsLook(chroma_delay_px=0))
    with av.open(str(control.path)) as c:
        aligned = np.array([f.reformat(format="yuv444p").to_ndarray() for f in c.decode(video=0)]).astype(np.float32)
    assert abs(lag(aligned)) <= 1
    assert abs(lag(dv_planes) - VhsLook().chroma_delay_px) <= 1


def test_vhs_look_edges_bandwidth_and_head_switching(dv_planes):
    y, cb = dv_planes[:, 0], dv_planes[:, 1]
    # ~704 of 720 samples are picture: black (Y ~16) at both sides.
    assert np.median(y[:, 20:-20, :4]) < 24 and np.median(y[:, 20:-20, -4:]) < 24
    assert np.median(y[:, 20:-20, 40:-40]) > 60

    # Chroma is far softer than luma (0.4 MHz against 3 MHz).
    def hf_share(p: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(p[:, 40:-40, 40:-40] - p[:, 40:-40, 40:-40].mean(), axis=2)) ** 2
        n = spec.shape[2]
        return float(spec[..., n // 8 :].sum() / spec[..., 1:].sum())

    assert hf_share(cb) < 0.25 * hf_share(y)
    # Head switching: the bottom lines are torn sideways and noisy.
    tear = np.mean(np.abs(np.diff(y[:, -6:, 20:-20], axis=1)))
    body = np.mean(np.abs(np.diff(y[:, -30:-8, 20:-20], axis=1)))
    assert tear > 2 * body


def test_clicks_and_flashes_line_up(dv, dv_planes):
    assert dv.cue_frames == (0, 30)
    left, right = _audio(dv.path).astype(np.float32) / 32767
    # Two different tones: compare the spectra's peaks.
    freqs = np.fft.rfftfreq(left.size, 1 / AUDIO_RATE)
    assert abs(freqs[np.argmax(np.abs(np.fft.rfft(left)))] - freqs[np.argmax(np.abs(np.fft.rfft(right)))]) > 100
    loud = np.where(np.abs(left) > 0.5)[0]
    onsets = [int(i) for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > AUDIO_RATE // 10]
    click_times = [Fraction(i, AUDIO_RATE) for i in onsets]
    cue_times = [n / dv.rate for n in dv.cue_frames]
    assert len(click_times) == len(cue_times)
    assert all(abs(a - b) < Fraction(1, 1000) for a, b in zip(click_times, cue_times))
    # The white sync box appears in exactly those frames (top-left area).
    h, w = dv_planes.shape[2:]
    white = (dv_planes[:, 0, : h // 3, : w // 3] > 215).mean(axis=(1, 2))
    flashed = {int(i) for i in np.where(white > 0.1)[0]}
    assert flashed == set(dv.cue_frames)


def test_small_mpeg2_is_progressive_dvd_sif(tmp_path):
    info = make_vhs_sample(tmp_path / "sif.mpg", seconds=0.5, size=(352, 240), fmt="mpeg2")
    assert info.field_order == "progressive" and info.sar == Fraction(10, 11)
    with av.open(str(info.path)) as c:
        assert c.format.name in ("mpeg", "vob")
        v = c.streams.video[0]
        assert v.codec_context.name == "mpeg2video"
        assert (v.codec_context.width, v.codec_context.height) == (352, 240)
        assert v.codec_context.field_order == 1  # AV_FIELD_PROGRESSIVE
        assert c.streams.audio[0].codec_context.name == "ac3"
        y = np.array([f.to_ndarray(format="gray") for f in c.decode(v)]).astype(np.float32)
    assert len(y) == info.frames == 15
    rows, cols = _moving_box(y[5], y[6])
    # One instant per frame: both line sets show the disc at the same place.
    assert abs(_shift(y[5, rows.start + 1 : rows.stop : 2, cols], y[5, rows.start : rows.stop : 2, cols])) < 1.5
    assert _shift(y[5, rows, cols], y[6, rows, cols]) > 6


def test_interlaced_mpeg2_reports_bottom_field_first(tmp_path):
    info = make_vhs_sample(tmp_path / "half-d1.mpg", seconds=0.2, size=(352, 480), fmt="mpeg2")
    assert info.sar == Fraction(20, 11)
    with av.open(str(info.path)) as c:
        assert c.streams.video[0].codec_context.field_order == 3  # AV_FIELD_BB


def test_same_seed_same_file(tmp_path):
    a = make_vhs_sample(tmp_path / "a.avi", seconds=0.1, seed=7)
    b = make_vhs_sample(tmp_path / "b.avi", seconds=0.1, seed=7)
    c = make_vhs_sample(tmp_path / "c.avi", seconds=0.1, seed=8)
    assert a.path.read_bytes() == b.path.read_bytes() != c.path.read_bytes()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"size": (352, 240)}, "mpeg2"),
        ({"standard": "secam"}, "standard"),
        ({"size": (640, 480), "fmt": "mpeg2"}, "DVD size"),
        ({"seconds": 0}, "length"),
    ],
)
def test_impossible_requests_name_the_file_and_reason(tmp_path, kwargs, words):
    target = tmp_path / "x.avi"
    with pytest.raises(VhsupError) as err:
        make_vhs_sample(target, **kwargs)
    assert str(target) in str(err.value) and words in str(err.value)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(VhsupError, match="folder does not exist"):
        make_vhs_sample(tmp_path / "nope" / "x.avi", seconds=0.1)


def test_pal_dv_is_720x576_at_25_fps(tmp_path):
    info = make_vhs_sample(tmp_path / "pal.avi", seconds=0.2, standard="pal")
    assert (info.frames, info.size, info.sar, info.field_order) == (5, (720, 576), Fraction(16, 15), "bff")
    with av.open(str(info.path)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "dvvideo" and v.average_rate == 25
        assert (v.codec_context.width, v.codec_context.height) == (720, 576)
        assert v.codec_context.sample_aspect_ratio == Fraction(16, 15)
        assert sum(1 for _ in c.decode(v)) == 5
    assert _audio(info.path).shape == (2, 5 * AUDIO_RATE // 25)
