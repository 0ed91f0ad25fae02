"""Field order and inverse telecine decided from the pictures, not only the flags.

A capture or re-encode flagged with the wrong field order, deinterlaced by
its flags, makes motion jitter back and forth at field rate; an inverse
telecine of video that is not telecined drops a fifth of the frames. The
clips here are real MPEG-2: content rendered top field first but flagged
bottom field first in every header, and film hard-telecined 3:2.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

import mediagen
from vhsup import upscale_video
from vhsup.errors import VhsupError
from vhsup.media.probe import probe

FAST = dict(model="bicubic-x2", preset="ultrafast", overwrite=True)


@pytest.fixture(scope="module")
def mislabelled(clips) -> mediagen.ClipInfo:
    """Top-field-first pictures, every MPEG-2 header saying bottom field first."""
    return clips.make(
        "mislabelled.vob",
        vcodec="mpeg2video",
        size=(352, 240),
        interlaced="tff",
        field_flags="bff",
        audio="ac3",
        frames=30,
    )


@pytest.fixture(scope="module")
def film_dvd(tmp_path_factory):
    """24 film frames hard-telecined 3:2 into 30 interlaced MPEG-2 frames, flagged TFF."""
    return mediagen.make_telecined_clip(
        tmp_path_factory.mktemp("film") / "film.vob", 48, vcodec="mpeg2video", size=(352, 240)
    )


def box_positions(path) -> list[float]:
    """Horizontal centre of the moving (yellow) box in each decoded frame, as a fraction of the width
    (flash frames, where the picture is white, are left out)."""
    xs = []
    for t, rgb in mediagen.decode_video(path):
        if mediagen.is_flash(rgb):
            continue
        h, w = rgb.shape[:2]
        band = rgb[int(0.10 * h) : int(0.26 * h)].astype(int)
        yellow = (band[..., 0] > 150) & (band[..., 1] > 120) & (band[..., 2] < 130)
        cols = np.nonzero(yellow.any(axis=0))[0]
        assert cols.size, f"no box in the picture at {t:.3f} s"
        xs.append(float(cols.mean()) / w)
    return xs


def backward_steps(xs: list[float]) -> int:
    """Steps where the box goes back; in these clips it only ever moves right."""
    assert len(xs) >= 50  # 60 pictures at field rate, less the flashes
    return sum(1 for a, b in zip(xs, xs[1:]) if b < a)


def test_probe_trusts_the_pictures_over_wrong_field_order_flags(mislabelled, dvd_clip):
    info = probe(mislabelled.path)
    assert info.field_order == "bff"  # what every header says
    v = info.interlace
    assert v.interlaced and v.field_order == "tff" and v.source == "idet" and v.order_overruled
    assert "the flags say bff but the pictures are tff" in v.evidence
    # Flags that agree with the pictures are kept, and say so.
    good = probe(dvd_clip.path).interlace
    assert good.field_order == "tff" and good.source == "stream" and not good.order_overruled


def test_mislabelled_clip_moves_smoothly_at_field_rate_and_bff_forces_the_flags(mislabelled, tmp_path):
    notes: list[str] = []
    r = upscale_video(mislabelled.path, tmp_path / "auto.mkv", field_rate="double", notice=notes.append, **FAST)
    assert r.deinterlace.startswith("bwdif tff") and r.frames_out == 2 * mislabelled.frames
    assert any("flagged BFF but the pictures are TFF" in n and "--field-order bff" in n for n in notes), notes
    xs = box_positions(tmp_path / "auto.mkv")
    assert backward_steps(xs) == 0, np.round(xs, 3)

    notes.clear()
    forced = upscale_video(
        mislabelled.path, tmp_path / "bff.mkv", field_rate="double", field_order="bff", notice=notes.append, **FAST
    )
    assert forced.deinterlace.startswith("bwdif bff") and forced.frames_out == 60
    assert not any("pictures are" in n for n in notes)
    # The fields in the wrong order: the box steps back every other picture.
    assert backward_steps(box_positions(tmp_path / "bff.mkv")) >= 25


def test_probe_cli_reports_the_overruled_flags_and_takes_field_order(mislabelled):
    from vhsup.cli import main

    res = CliRunner().invoke(main, ["probe", str(mislabelled.path), "--model", "bicubic", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["field_order"] == "bff"
    assert data["interlace"]["field_order"] == "tff" and data["interlace"]["order_overruled"]
    assert data["plan"]["deinterlace"].startswith("bwdif tff")
    assert any("pictures are TFF" in n for n in data["plan"]["notices"])
    res = CliRunner().invoke(main, ["probe", str(mislabelled.path), "--model", "bicubic", "--field-order", "bff"])
    assert res.exit_code == 0, res.output
    assert "bwdif bff" in res.stdout and "flags overruled" in res.stdout


def test_extract_follows_the_pictures_order_or_the_forced_one(mislabelled, tmp_path):
    from vhsup.train.extract import extract_frames

    notes: list[str] = []
    extract_frames([mislabelled.path], tmp_path / "auto", count=2, min_gap=0.2, notice=notes.append)
    extract_frames([mislabelled.path], tmp_path / "bff", count=2, min_gap=0.2, field_order="bff")
    rows = {
        k: [json.loads(line) for line in (tmp_path / k / "manifest.jsonl").read_text().splitlines()]
        for k in ("auto", "bff")
    }
    assert rows["auto"] and all(r["deinterlace"].startswith("bwdif tff") for r in rows["auto"])
    assert rows["bff"] and all(r["deinterlace"].startswith("bwdif bff") for r in rows["bff"])
    assert any("pictures are TFF" in n for n in notes)


def test_chunked_workers_use_the_same_field_order(mislabelled, tmp_path):
    from vhsup.chunked import upscale_chunked

    r = upscale_chunked(
        mislabelled.path, tmp_path / "auto.mkv", workers=1, chunk_seconds=0.5, field_rate="double", **FAST
    )
    assert r.deinterlace.startswith("bwdif tff") and r.frames_out == 60
    assert backward_steps(box_positions(tmp_path / "auto.mkv")) == 0
    r = upscale_chunked(
        mislabelled.path,
        tmp_path / "bff.mkv",
        workers=1,
        chunk_seconds=0.5,
        field_rate="double",
        field_order="bff",
        **FAST,
    )
    assert r.deinterlace.startswith("bwdif bff")
    assert backward_steps(box_positions(tmp_path / "bff.mkv")) >= 25


@pytest.mark.slow
def test_batch_passes_field_order_and_counts_it_as_a_settings_change(mislabelled, tmp_path):
    import shutil

    from vhsup.batch.cli import batch

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copyfile(mislabelled.path, src / "tape.vob")
    common = [
        str(src),
        "--out",
        str(out),
        "--model",
        "bicubic-x2",
        "--preset",
        "ultrafast",
        "--field-rate",
        "double",
        "--json",
    ]
    res = CliRunner().invoke(batch, [*common, "--field-order", "bff"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert backward_steps(box_positions(out / "tape.mkv")) >= 25
    res = CliRunner().invoke(batch, common, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert [j["why"] for j in json.loads(res.stdout)["jobs"]] == ["settings changed"]
    assert backward_steps(box_positions(out / "tape.mkv")) == 0


# --- inverse telecine --------------------------------------------------------


def test_probe_tells_telecined_film_from_interlaced_video(film_dvd, dvd_clip):
    film = probe(film_dvd).telecine
    assert film.telecined is True, film.evidence
    assert 0.3 <= film.repeated_fields / film.moving_frames <= 0.5  # 2 of every 5 frames
    video = probe(dvd_clip.path).telecine
    assert video.telecined is False and video.repeated_fields <= 1, video.evidence


def test_ivtc_restores_each_film_frame_of_a_hard_telecined_dvd(film_dvd, tmp_path):
    r = upscale_video(film_dvd, tmp_path / "film.mkv", ivtc=True, **FAST)
    assert r.output_rate == str(Fraction(24000, 1001))
    # strict read_index raises on a frame that still mixes two film frames
    assert [i for _, i in mediagen.read_indices(tmp_path / "film.mkv")] == list(range(48))


def test_ivtc_on_video_that_is_not_telecined_is_refused_unless_forced(dvd_clip, tmp_path):
    dst = tmp_path / "dvd.mkv"
    with pytest.raises(
        VhsupError,
        match=r"dvd\.vob: --ivtc refused: the picture does not look telecined .*"
        r"drop one frame in five.*--force-ivtc",
    ) as exc:
        upscale_video(dvd_clip.path, dst, ivtc=True, **FAST)
    assert "\n" not in str(exc.value)
    assert not dst.exists() and not list(tmp_path.iterdir())
    notes: list[str] = []
    r = upscale_video(dvd_clip.path, dst, ivtc=True, force_ivtc=True, notice=notes.append, **FAST)
    assert r.frames_out == dvd_clip.frames * 4 // 5
    assert any("drops one frame in five" in n and "does not look telecined" in n for n in notes), notes


def test_ivtc_refusal_is_one_line_from_the_cli(dvd_clip, tmp_path):
    from vhsup.cli import main

    dst = tmp_path / "o.mkv"
    res = CliRunner().invoke(main, ["upscale", str(dvd_clip.path), "-o", str(dst), "--model", "bicubic", "--ivtc"])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not look telecined" in lines[0] and "--force-ivtc" in lines[0]
    assert not dst.exists()
