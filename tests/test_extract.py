"""`vhsup extract`: real clips in, PNGs and a manifest out.

Scene clips are built here with PyAV: each "scene" is a still picture of
smooth random colour blobs (seeded, so a scene can recur identically), or a
black or flat grey stretch. That makes every property checkable without
trusting the code under test: a written PNG must look like the scene that
plays at its manifest time, two PNGs of the same scene are duplicates, and
black/flat pictures are recognisable by their pixels.
"""

from __future__ import annotations

import json
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import mediagen
from vhsup.errors import VhsupError
from vhsup.train.cli_extract import extract
from vhsup.train.extract import extract_frames, read_manifest

FPS = 25
SIZE = (160, 120)


def texture(seed: int, w: int = SIZE[0], h: int = SIZE[1]) -> np.ndarray:
    """A still picture of smooth random colour blobs; ``seed`` < 0: black, 'grey' scenes use flat()."""
    rng = np.random.default_rng(seed)
    small = rng.integers(20, 236, size=(4, 5, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def scene_picture(scene) -> np.ndarray:
    if scene == "black":
        return np.full((SIZE[1], SIZE[0], 3), 16, np.uint8)
    if scene == "grey":
        return np.full((SIZE[1], SIZE[0], 3), 110, np.uint8)
    return texture(scene)


def scene_clip(path: Path, scenes: list[tuple[object, float]]) -> tuple[Path, list[tuple[float, float, object]]]:
    """Encode (scene, seconds) pairs as FFV1 at 25 fps; return the path and (start, end, scene) spans."""
    spans = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.time_base = Fraction(1, FPS)
        n = 0
        for scene, seconds in scenes:
            pic = scene_picture(scene)
            frames = round(seconds * FPS)
            spans.append((n / FPS, (n + frames) / FPS, scene))
            for _ in range(frames):
                frame = av.VideoFrame.from_ndarray(pic, format="rgb24").reformat(format="yuv420p")
                frame.pts = n
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
        for packet in stream.encode():
            out.mux(packet)
    return path, spans


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) straight from the IHDR chunk."""
    data = path.read_bytes()[:33]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert zlib.crc32(data[12:29]) == int.from_bytes(data[29:33], "big")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), data[24], data[25]


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and bgr.ndim == 3 and bgr.shape[2] == 3, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def nearest_scene(rgb: np.ndarray, scenes: set) -> tuple[object, float]:
    """The scene a picture shows, and how far it is from it (mean |difference|)."""
    scored = [(float(np.abs(rgb.astype(np.float32) - scene_picture(s).astype(np.float32)).mean()), s) for s in scenes]
    d, s = min(scored, key=lambda x: x[0])
    return s, d


def scene_at(spans, t: float):
    return next(s for a, b, s in spans if a <= t < b)


@pytest.fixture(scope="module")
def eight_scenes(tmp_path_factory):
    """Eight distinct still scenes of 0.6 s each (4.8 s)."""
    d = tmp_path_factory.mktemp("eight")
    return scene_clip(d / "eight.mkv", [(k, 0.6) for k in range(8)])


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Three distinct scenes, two of them repeated, between black and flat grey stretches."""
    d = tmp_path_factory.mktemp("messy")
    plan = [
        ("black", 1.0),
        (11, 0.5),
        ("black", 0.6),
        (12, 0.5),
        ("grey", 1.0),
        (11, 0.5),
        (13, 0.5),
        ("black", 0.6),
        (12, 0.5),
        ("grey", 0.5),
    ]
    return scene_clip(d / "messy.mkv", plan)


def test_count_frames_distinct_spread_and_true_to_their_times(eight_scenes, tmp_path):
    path, spans = eight_scenes
    out = tmp_path / "frames"
    calls = []
    report = extract_frames([path], out, count=6, progress=lambda *a: calls.append(a))
    pngs = sorted(out.glob("*.png"))
    entries = read_manifest(out)
    assert report.frames == 6 and len(pngs) == 6 and len(entries) == 6
    assert [e["frame"] for e in entries] == [p.name for p in pngs]
    assert report.per_source == {str(path): 6}
    times = sorted(e["time"] for e in entries)
    duration = spans[-1][1]
    assert all(0 <= t < duration for t in times)
    # Spread: over most of the clip, never closer than the default --min-gap.
    assert times[-1] - times[0] >= 0.6 * duration
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.5
    shown = []
    for e in entries:
        p = out / e["frame"]
        assert png_header(p)[2:] == (8, 2)  # 8-bit truecolour RGB, no alpha
        scene, dist = nearest_scene(read_rgb(p), set(range(8)))
        assert dist < 6, f"{p.name} looks like no scene"
        assert scene == scene_at(spans, e["time"]), f"{p.name} is not the picture at {e['time']} s"
        shown.append(scene)
    assert len(set(shown)) == 6  # no two frames of one scene
    assert calls and calls[-1] == ("write", 6, 6) and any(c[0] == "scan" for c in calls)


def test_black_flat_and_repeated_scenes_are_skipped(messy, tmp_path):
    path, spans = messy
    out = tmp_path / "frames"
    told = []
    report = extract_frames([path], out, count=8, notice=told.append)
    entries = read_manifest(out)
    shown = []
    for e in entries:
        rgb = read_rgb(out / e["frame"])
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        assert np.percentile(luma, 99) > 60 and luma.std() > 10, f"{e['frame']} is black or flat"
        scene, dist = nearest_scene(rgb, {11, 12, 13})
        assert dist < 6
        shown.append(scene)
    # Only three distinct pictures exist: each appears exactly once.
    assert sorted(shown) == [11, 12, 13] and report.frames == 3
    assert report.skipped_flat > 0 and report.skipped_duplicate > 0
    assert any("3 of 8" in m for m in told)


def test_dv_frames_are_square_pixel_and_deinterlaced(clips, tmp_path):
    # 720x480 SAR 8:9, bottom field first, a box moving at field rate; no white flash frames,
    # which have nothing to comb.
    dv = clips.make("dv_noflash.avi", vcodec="dvvideo", frames=24, flash_every=0)
    assert (dv.width, dv.height, dv.sar) == (720, 480, Fraction(8, 9))

    def combing(rgb: np.ndarray) -> float:
        # Line-to-line zigzag in the top band (where the box moves): high when two fields are woven.
        y = rgb[: int(0.36 * rgb.shape[0])].astype(np.float32).mean(axis=2)
        return float(np.abs(2 * y[1:-1] - y[:-2] - y[2:]).mean())

    out = tmp_path / "square"
    extract_frames([dv.path], out, count=2, min_gap=0.3)
    raw = tmp_path / "raw"
    extract_frames([dv.path], raw, count=2, min_gap=0.3, keep_sar=True, deinterlace="off")
    square, woven = sorted(out.glob("*.png")), sorted(raw.glob("*.png"))
    assert len(square) == 2 and len(woven) == 2
    for p in square:
        assert png_header(p) == (640, 480, 8, 2)
    for p in woven:
        assert png_header(p) == (720, 480, 8, 2)
    assert all(e["square_pixels"] for e in read_manifest(out))
    assert max(combing(read_rgb(p)) for p in square) < 0.5 * min(combing(read_rgb(p)) for p in woven)
    # The frame index survives: the PNG shows the frame at its manifest time.
    for e in read_manifest(out):
        index = mediagen.read_index(read_rgb(out / e["frame"]))
        assert abs(index / float(dv.rate) - e["time"]) < 0.5 / float(dv.rate)


def test_cli_dvd_crop_then_aspect(clips, tmp_path):
    dvd = clips.get("dvd")  # 352x240 SAR 10:11
    out = tmp_path / "f"
    result = CliRunner().invoke(
        extract,
        [
            str(dvd.path),
            "--out",
            str(out),
            "--count",
            "2",
            "--min-gap",
            "0.3",
            "--crop",
            "8,0,8,0",
            "--json",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 2
    # (352 - 16) * 10/11 = 305.45: the cropped picture's display aspect, height kept.
    for f in report["files"]:
        assert png_header(Path(f)) == (305, 240, 8, 2)
    assert all(e["crop"] == "8,0,8,0" for e in read_manifest(out))


def test_every_and_sources_share_the_count(tmp_path, eight_scenes):
    path, spans = eight_scenes
    short, _ = scene_clip(tmp_path / "short.mkv", [(k, 0.6) for k in range(20, 24)])  # half as long
    out = tmp_path / "both"
    report = extract_frames([path, short], out, count=6)
    assert report.per_source == {str(path): 4, str(short): 2}
    by_source = {}
    for e in read_manifest(out):
        by_source.setdefault(Path(e["source"]).name, []).append(e["time"])
    assert sorted(by_source) == ["eight.mkv", "short.mkv"]

    out2 = tmp_path / "every"
    report = extract_frames([path], out2, every=1.2)
    times = sorted(e["time"] for e in read_manifest(out2))
    assert report.frames == 4 and len(times) == 4
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.5


def test_rerun_refuses_appends_or_overwrites(eight_scenes, tmp_path):
    path, spans = eight_scenes
    out = tmp_path / "frames"
    extract_frames([path], out, count=4)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    with pytest.raises(VhsupError) as exc:
        extract_frames([path], out, count=4)
    assert str(out) in str(exc.value) and "--append" in str(exc.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    report = extract_frames([path], out, count=4, append=True)
    entries = read_manifest(out)
    assert report.existing == 4 and len(entries) == 8
    assert [e["frame"] for e in entries] == [f"{k:06d}.png" for k in range(1, 9)]
    assert all((out / name).read_bytes() == data for name, data in before.items() if name.endswith(".png"))
    shown = [nearest_scene(read_rgb(out / e["frame"]), set(range(8)))[0] for e in entries]
    assert sorted(shown) == list(range(8))  # the new four are not repeats of the old four

    report = extract_frames([path], out, count=2, overwrite=True)
    assert sorted(p.name for p in out.glob("*.png")) == ["000001.png", "000002.png"]
    assert len(read_manifest(out)) == 2 and report.existing == 0


def test_an_unreadable_input_alone_is_a_one_line_error_and_nothing_is_written(tmp_path):
    bad = tmp_path / "tape.vob"
    bad.write_bytes(b"this is not an MPEG program stream" * 20)
    out = tmp_path / "frames"
    result = CliRunner().invoke(extract, [str(bad), "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and lines[0].startswith("vhsup: error:")
    assert not out.exists()


def test_an_unreadable_input_among_several_is_skipped_with_a_notice(clips, tmp_path):
    good = clips.get("dvd").path
    bad = tmp_path / "tape.vob"
    bad.write_bytes(b"this is not an MPEG program stream" * 20)
    out = tmp_path / "frames"
    result = CliRunner().invoke(extract, [str(good), str(bad), "--out", str(out), "--count", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] >= 1 and list(report["per_source"]) == [str(good)]
    skipped = [n for n in report["notices"] if n.startswith(f"{bad}: skipped:")]
    assert len(skipped) == 1
    assert {e["source"] for e in read_manifest(out)} == {str(Path(good).resolve())}


def test_all_black_input_is_refused(tmp_path):
    path, _ = scene_clip(tmp_path / "dark.mkv", [("black", 0.8), ("grey", 0.4)])
    out = tmp_path / "frames"
    with pytest.raises(VhsupError) as exc:
        extract_frames([path], out, count=3)
    assert str(path) in str(exc.value) and "black or flat" in str(exc.value)
    assert not out.exists()


def test_min_gap_is_honoured(tmp_path):
    # Fifteen distinct 0.2 s scenes: without a gap rule ten frames fit; with
    # --min-gap 0.5 at most six fit in 3 s.
    path, spans = scene_clip(tmp_path / "quick.mkv", [(k, 0.2) for k in range(40, 55)])
    loose = extract_frames([path], tmp_path / "loose", count=10, min_gap=0.0)
    strict = extract_frames([path], tmp_path / "strict", count=10, min_gap=0.5)
    assert loose.frames == 10
    times = sorted(e["time"] for e in read_manifest(tmp_path / "strict"))
    assert 4 <= strict.frames <= 6 and len(times) == strict.frames
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.5 - 1e-6


def test_sparse_scan_of_a_longer_dvd_clip_gives_the_pictures_at_their_times(clips, tmp_path):
    # 4 s of interlaced MPEG-2 with B-frames and two picks: long enough that
    # the scan samples sparsely and skips B-frames, then seeks to each pick.
    clip = clips.make(
        "sparse.vob", vcodec="mpeg2video", size=(160, 120), interlaced="tff", frames=120, sar=Fraction(1), flash_every=0
    )
    out = tmp_path / "f"
    report = extract_frames([clip.path], out, count=2)
    entries = read_manifest(out)
    assert report.frames == 2 and len(entries) == 2
    for e in entries:
        index = mediagen.read_index(read_rgb(out / e["frame"]))
        assert abs(index / float(clip.rate) - e["time"]) < 0.5 / float(clip.rate), e
    assert abs(entries[1]["time"] - entries[0]["time"]) > 1.0
