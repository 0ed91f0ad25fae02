"""End to end: real clips through probe -> decode -> filter -> infer -> stitch -> encode.

Most runs use the classical ``bicubic`` model so the checks are about the
pipeline (counts, order, timing, aspect, streams); ``test_real_model_*`` runs
the imported Real-ESRGAN weights on a tiny clip.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import mediagen
from vhsup import upscale_video, upscaled_frames
from vhsup.errors import Interrupted, VhsupError

FAST = dict(model="bicubic", preset="ultrafast", overwrite=True)


def streams_of(path: Path) -> dict[str, list[str]]:
    with av.open(str(path)) as c:
        out: dict[str, list[str]] = {}
        for s in c.streams:
            out.setdefault(s.type, []).append(s.codec_context.name if s.codec_context else "?")
        return out


def video_span(path: Path) -> tuple[float, float, int]:
    """(first pts, end of last frame, frame count) by decoding."""
    times = [t for t, _ in mediagen.decode_video(path)]
    step = (times[-1] - times[0]) / max(1, len(times) - 1)
    return times[0], times[-1] + step, len(times)


def display_aspect(path: Path) -> Fraction:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        sar = s.sample_aspect_ratio or s.codec_context.sample_aspect_ratio or Fraction(1)
        return Fraction(s.codec_context.width, s.codec_context.height) * Fraction(sar)


def test_dvd_single_rate_keeps_every_frame_in_order_with_sound_in_sync(dvd_clip, tmp_path):
    dst = tmp_path / "dvd.mkv"
    r = upscale_video(dvd_clip.path, dst, **FAST)
    assert r.frames_out == dvd_clip.frames == r.frames_in
    assert "bwdif tff" in r.deinterlace
    # frame i of the output is frame i of the input: no drop, repeat or reorder
    assert [i for _, i in mediagen.read_indices(dst)] == list(range(dvd_clip.frames))
    assert display_aspect(dst) == Fraction(4, 3)
    assert streams_of(dst) == {"video": ["h264"], "audio": ["ac3"]}
    v0, v1, n = video_span(dst)
    a0, a1 = mediagen.audio_span(dst)
    frame = 1 / float(dvd_clip.rate)
    assert abs((v1 - v0) - float(dvd_clip.duration)) <= frame
    assert abs((a1 - a0) - (v1 - v0)) <= frame
    # the clicks land on the flash frames
    flashes, clicks = mediagen.find_flashes(dst), mediagen.find_clicks(dst)
    assert len(flashes) == len(dvd_clip.flash_frames) == len(clicks)
    assert max(abs(f - c) for f, c in zip(flashes, clicks)) <= frame


def test_double_rate_gives_one_frame_per_field(ts_clip, tmp_path):
    dst = tmp_path / "ts.mkv"
    r = upscale_video(ts_clip.path, dst, field_rate="double", **FAST)
    assert r.output_rate == str(Fraction(60000, 1001))
    assert r.frames_out == 2 * ts_clip.frames
    indices = [i for _, i in mediagen.read_indices(dst)]
    assert indices == [k // 2 for k in range(2 * ts_clip.frames)]
    v0, v1, _ = video_span(dst)
    assert abs((v1 - v0) - float(ts_clip.duration)) <= 1 / 59.94


def test_dv_into_mp4_transcodes_pcm_and_makes_square_pixels(dv_clip, tmp_path):
    dst = tmp_path / "dv.mp4"
    notes: list[str] = []
    r = upscale_video(dv_clip.path, dst, height=480, notice=notes.append, **FAST)
    assert (r.width, r.height) == (640, 480)
    assert display_aspect(dst) == Fraction(4, 3)
    assert streams_of(dst)["audio"] == ["aac"]
    assert r.transcoded and any("pcm_s16le" in n for n in notes)
    assert [i for _, i in mediagen.read_indices(dst)] == list(range(dv_clip.frames))
    v0, v1, _ = video_span(dst)
    a0, a1 = mediagen.audio_span(dst)
    assert abs((a1 - a0) - (v1 - v0)) <= 1 / 29.97


def test_odd_size_progressive_passes_through(odd_clip, tmp_path):
    dst = tmp_path / "odd.mkv"
    r = upscale_video(odd_clip.path, dst, **FAST)
    assert r.deinterlace == "none (progressive)"
    assert (r.width, r.height) == (396, 268)
    assert r.frames_out == odd_clip.frames
    assert streams_of(dst)["audio"] == ["flac"]
    assert abs(float(display_aspect(dst)) - 99 / 67) < 0.01


def test_range_cut_video_and_audio(mp4_clip, tmp_path):
    dst = tmp_path / "cut.mkv"
    r = upscale_video(mp4_clip.path, dst, start=0.3, frames=10, **FAST)
    assert r.frames_out == 10
    indices = [i for _, i in mediagen.read_indices(dst)]
    first = round(0.3 * float(mp4_clip.rate))
    assert indices == list(range(first, first + 10))
    v0, v1, _ = video_span(dst)
    a0, a1 = mediagen.audio_span(dst)
    assert abs((v1 - v0) - 10 / float(mp4_clip.rate)) <= 1 / 29.97
    assert abs((a1 - a0) - (v1 - v0)) <= 1 / 29.97


def test_duration_range(mp4_clip, tmp_path):
    dst = tmp_path / "dur.mkv"
    r = upscale_video(mp4_clip.path, dst, start=0.2, duration=0.5, **FAST)
    assert abs(r.frames_out - round(0.5 * 29.97)) <= 1


def test_vfr_timing_is_kept(vfr_clip, tmp_path):
    dst = tmp_path / "vfr.mkv"
    upscale_video(vfr_clip.path, dst, **FAST)
    got = mediagen.read_indices(dst)
    assert [i for _, i in got] == list(range(vfr_clip.frames))
    src_times = [float(t - vfr_clip.frame_times[0]) for t in vfr_clip.frame_times]
    out_times = [t - got[0][0] for t, _ in got]
    assert max(abs(a - b) for a, b in zip(src_times, out_times)) < 0.002
    assert vfr_clip.vfr and len({round(b - a, 4) for a, b in zip(src_times, src_times[1:])}) > 1


def test_every_audio_and_subtitle_stream_is_kept(subs_clip, tmp_path):
    dst = tmp_path / "subs.mkv"
    r = upscale_video(subs_clip.path, dst, **FAST)
    s, src = streams_of(dst), streams_of(subs_clip.path)
    assert s["audio"] == src["audio"] == ["ac3", "pcm_s16le"]
    assert s["subtitle"] == src["subtitle"] and len(s["subtitle"]) == 1
    assert (r.audio_streams, r.subtitle_streams) == (2, 1)
    with av.open(str(dst)) as c:
        langs = [st.metadata.get("language") for st in c.streams.audio]
    assert langs == ["eng", "fra"]


def test_existing_output_is_refused(odd_clip, tmp_path):
    dst = tmp_path / "exists.mkv"
    dst.write_bytes(b"keep me")
    with pytest.raises(VhsupError, match="exists.mkv: output already exists; pass overwrite=True"):
        upscale_video(odd_clip.path, dst, model="bicubic")
    assert dst.read_bytes() == b"keep me"


def test_interrupt_leaves_nothing_under_the_final_name(dvd_clip, tmp_path):
    dst = tmp_path / "out.mkv"
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == 5:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread

    with pytest.raises(Interrupted, match="nothing was written"):
        upscale_video(dvd_clip.path, dst, progress=progress, **FAST)
    assert seen[-1] == 5
    assert list(tmp_path.iterdir()) == []


def test_interrupt_as_the_encoder_is_made_leaves_nothing(dvd_clip, tmp_path, monkeypatch):
    # Ctrl-C (or SIGTERM) handled in the instant between the encoder creating
    # its temp file and the run holding the encoder: seen once under load.
    from vhsup.media import encode

    made = encode.VideoEncoder.__init__

    def interrupted_as_it_returns(self, *args, **kwargs):
        made(self, *args, **kwargs)
        assert any(tmp_path.iterdir())  # the partial file exists now
        raise KeyboardInterrupt

    monkeypatch.setattr(encode.VideoEncoder, "__init__", interrupted_as_it_returns)
    with pytest.raises(Interrupted, match="nothing was written"):
        upscale_video(dvd_clip.path, tmp_path / "out.mkv", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_upscaled_as_far_as_it_decodes(dvd_clip, tmp_path):
    damaged = tmp_path / "damaged.vob"
    data = bytearray(dvd_clip.path.read_bytes())
    rng = np.random.default_rng(3)
    mid = len(data) // 3
    data[mid : mid + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()  # a bad sector
    damaged.write_bytes(bytes(data[: len(data) * 3 // 4]))  # and a truncated end
    notes: list[str] = []
    r = upscale_video(damaged, tmp_path / "out.mkv", notice=notes.append, **FAST)
    assert 0 < r.frames_out < dvd_clip.frames
    assert r.frames_out == r.frames_in  # everything decoded is upscaled
    assert r.decode_errors > 0
    assert any("decode errors" in n for n in notes)
    _, _, n = video_span(tmp_path / "out.mkv")
    assert n == r.frames_out


def test_frame_iterator_api(odd_clip):
    pics = list(upscaled_frames(odd_clip.path, model="bicubic", frames=5))
    assert [p.index for p in pics] == list(range(5))
    assert all(p.rgb.shape == (268, 396, 3) and p.rgb.dtype == np.uint8 for p in pics)
    assert [mediagen.read_index(p.rgb) for p in pics] == list(range(5))


def test_sd_to_hd_keeps_colours(tmp_path, clips):
    """Decoded with BT.601, encoded and tagged BT.709: no hue or level shift."""
    clip = clips.make("bars.mkv", vcodec="ffv1", size=(192, 144), frames=3, pix_fmt="yuv444p")
    dst = tmp_path / "hd.mkv"
    r = upscale_video(clip.path, dst, model="bicubic", height=720, codec="ffv1", overwrite=True)
    assert r.height == 720
    with av.open(str(dst)) as c:
        s = c.streams.video[0]
        frame = next(c.decode(s))
        assert int(frame.colorspace) == 1  # BT.709 matrix tagged
        out = frame.to_ndarray(format="rgb24", src_colorspace="itu709", dst_colorspace="itu709", threads=1)
    src = next(iter(mediagen.decode_video(clip.path)))[1]
    boxes = mediagen.bar_boxes(192, 144)
    assert len(boxes) >= 6
    for x0, x1, y0, y1 in boxes:
        sx, sy = slice(x0, x1), slice(y0, y1)
        k = 5  # 144 -> 720 lines, square pixels both
        ox, oy = slice(x0 * k, x1 * k), slice(y0 * k, y1 * k)
        a = src[sy, sx].reshape(-1, 3).mean(0)
        b = out[oy, ox].reshape(-1, 3).mean(0)
        assert np.abs(a - b).max() <= 4, (a, b)


def test_compare_still(odd_clip, tmp_path):
    still = tmp_path / "cmp.png"
    r = upscale_video(odd_clip.path, tmp_path / "o.mkv", compare=still, **FAST)
    assert r.compare == str(still) and still.stat().st_size > 1000


def test_real_model_compact_x4_on_tiny_clip(clips, tmp_path):
    clip = clips.make("tiny.mkv", vcodec="ffv1", size=(64, 48), frames=3)
    dst = tmp_path / "tiny.mkv"
    r = upscale_video(clip.path, dst, model="compact-x4", preset="ultrafast")
    assert r.model == "compact-x4" and (r.width, r.height) == (256, 192) and r.frames_out == 3
    src = next(iter(mediagen.decode_video(clip.path)))[1].astype(np.float32)
    out = next(iter(mediagen.decode_video(dst)))[1].astype(np.float32)
    import cv2

    small = cv2.resize(out, (64, 48), interpolation=cv2.INTER_AREA)
    # The model sharpens, but the picture and its colours are the source's.
    assert np.abs(small.mean((0, 1)) - src.mean((0, 1))).max() < 4
    assert np.abs(small - src).mean() < 12


def test_input_is_never_written(dv_clip, tmp_path):
    before = dv_clip.path.stat().st_mtime_ns, dv_clip.path.read_bytes()
    upscale_video(dv_clip.path, tmp_path / "o.mkv", frames=2, **FAST)
    assert (dv_clip.path.stat().st_mtime_ns, dv_clip.path.read_bytes()) == before


def test_default_output_name_is_beside_the_input(odd_clip, tmp_path):
    src = tmp_path / "episode.mkv"
    shutil.copy(odd_clip.path, src)
    r = upscale_video(src, model="bicubic", frames=2, preset="ultrafast")
    assert Path(r.output) == tmp_path / "episode.bicubic.mkv" and Path(r.output).exists()


def test_ivtc_restores_each_film_frame_once(tmp_path):
    src = mediagen.make_telecined_clip(tmp_path / "film.mkv")
    combed = 0
    for _, rgb in mediagen.decode_video(src):
        try:
            mediagen.read_index(rgb)
        except ValueError:
            combed += 1
    assert combed >= 8  # 2 of every 5 telecined frames mix two film frames
    dst = tmp_path / "film-out.mkv"
    r = upscale_video(src, dst, ivtc=True, **FAST)
    assert r.output_rate == str(Fraction(24000, 1001))
    # strict read_index raises on any frame that still mixes two film frames
    got = mediagen.read_indices(dst)
    assert [i for _, i in got] == list(range(24))
    steps = {round(b[0] - a[0], 3) for a, b in zip(got, got[1:])}
    assert steps <= {0.041, 0.042}


def test_auto_crop_removes_vhs_edges_and_head_switching(tmp_path):
    from vhsup.samples import make_vhs_sample

    sample = make_vhs_sample(tmp_path / "tape.avi", seconds=0.5)
    r = upscale_video(sample.path, tmp_path / "tape.mkv", crop="auto", frames=2, **FAST)
    left, top, right, bottom = (int(v) for v in r.crop.split(","))
    assert left >= 4 and right >= 4  # the black edges beside the ~704 picture samples
    assert 6 <= bottom <= 10  # the torn head-switching lines
    assert top == 0
    in_w, in_h = 720 - left - right, 480 - bottom
    # the output shows the cropped picture at its true shape (SAR 8:9 kept)
    assert abs(float(display_aspect(tmp_path / "tape.mkv")) - in_w * 8 / 9 / in_h) < 0.005


def test_onnx_backend_gives_the_same_frames_as_torch(odd_clip, tmp_path):
    pytest.importorskip("onnxruntime")
    common = dict(model="compact-x4", frames=3, codec="ffv1", overwrite=True)
    a = upscale_video(odd_clip.path, tmp_path / "torch.mkv", **common)
    b = upscale_video(odd_clip.path, tmp_path / "onnx.mkv", backend="onnx", **common)
    assert (a.backend, b.backend) == ("torch", "onnx")
    assert (a.frames_out, a.width, a.height) == (b.frames_out, b.width, b.height) == (3, 396, 268)
    fa = [rgb.astype(int) for _, rgb in mediagen.decode_video(tmp_path / "torch.mkv")]
    fb = [rgb.astype(int) for _, rgb in mediagen.decode_video(tmp_path / "onnx.mkv")]
    # ffv1 is lossless; only the yuv420p conversion of a 1-level difference can show
    assert max(int(abs(x - y).max()) for x, y in zip(fa, fb)) <= 2


def test_an_onnx_file_runs_through_onnxruntime(odd_clip, tmp_path):
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from vhsup.cli import main

    model = tmp_path / "c4.onnx"
    r = CliRunner().invoke(main, ["models", "export", "compact-x4", str(model)])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"wrote {model}") and "max |onnx - torch|" in r.stdout
    notes: list[str] = []
    res = upscale_video(
        odd_clip.path, tmp_path / "o.mkv", model=str(model), frames=2, notice=notes.append, preset="ultrafast"
    )
    assert res.frames_out == 2 and res.width == 396 and res.backend == "onnx"
    assert any("onnxruntime" in n for n in notes)
    r = CliRunner().invoke(main, ["models", "export", "compact-x4", str(model)])
    assert r.exit_code == 2 and "ONNX file already exists; pass --overwrite" in r.stderr


def test_deinterlace_can_be_forced_on_or_off(dvd_clip, odd_clip, tmp_path):
    off = upscale_video(dvd_clip.path, tmp_path / "off.mkv", deinterlace="off", **FAST)
    assert off.deinterlace == "none (progressive)" and off.frames_out == dvd_clip.frames

    # combing survives when deinterlacing is off: the moving box's edge alternates line by line
    def comb_energy(path):
        rgb = next(iter(mediagen.decode_video(path)))[1].astype(np.float32)
        return float(np.abs(rgb[1:-1] - (rgb[:-2] + rgb[2:]) / 2).mean())

    on = upscale_video(dvd_clip.path, tmp_path / "on.mkv", **FAST)
    assert on.deinterlace.startswith("bwdif tff")
    assert comb_energy(tmp_path / "off.mkv") > 1.5 * comb_energy(tmp_path / "on.mkv")
    forced = upscale_video(odd_clip.path, tmp_path / "forced.mkv", deinterlace="on", **FAST)
    assert forced.deinterlace.startswith(("bwdif", "yadif")) and forced.frames_out == odd_clip.frames


def test_auto_crop_samples_a_long_file_at_several_points(tmp_path):
    # Over 8 s, auto-crop decodes seven separate stretches of the same open
    # container; each must restart decoding cleanly (it once crashed with
    # "Cannot change thread_type after codec is open").
    from vhsup.samples import make_vhs_sample

    sample = make_vhs_sample(tmp_path / "long.mpg", seconds=9, size=(352, 240), fmt="mpeg2")
    r = upscale_video(sample.path, tmp_path / "long.mkv", crop="auto", frames=1, **FAST)
    left, top, right, bottom = (int(v) for v in r.crop.split(","))
    assert left >= 2 and right >= 2 and top == 0  # the black edges beside the picture
    assert r.frames_out == 1
