"""The temporal stabiliser: steadies shimmer, keeps cuts and moving objects, and has finite memory.

The stage is checked on its own with synthetic frames whose truth is known
(a clean picture, the model's "shimmer" added as fresh random texture in
every frame), then through the real pipeline: chunked equals whole, tiled
equals untiled, and the run says which mode ran.
"""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mediagen
from vhsup import upscale_video
from vhsup.chunked import upscale_chunked
from vhsup.cli import main
from vhsup.eval.metrics import e_warp, psnr_y
from vhsup.stabilise import PERIOD, STRENGTH, Stabiliser, resolve_mode

SCALE = 4


def picture(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A clean input picture with edges and smooth areas."""
    return mediagen.shapes_frame(np.random.default_rng(seed), h, w)


def up(src: np.ndarray) -> np.ndarray:
    h, w = src.shape[:2]
    return cv2.resize(src, (w * SCALE, h * SCALE), interpolation=cv2.INTER_CUBIC)


def shimmer(clean: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    """What a per-frame GAN adds: texture that is new in every frame."""
    noise = rng.normal(0.0, sigma, clean.shape)
    return np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)


def run(stab: Stabiliser, numbers, srcs, srs) -> list[np.ndarray]:
    return [stab.push(n, s, o) for n, s, o in zip(numbers, srcs, srs)]


def zero_motion(frame: np.ndarray) -> np.ndarray:
    return np.zeros((*frame.shape[:2], 2), np.float32)


@pytest.mark.parametrize("mode", ["light", "auto", "strong"])
def test_static_scene_shimmer_drops_by_the_blend_factor(mode):
    rng = np.random.default_rng(1)
    src = picture()
    clean = up(src)
    n = 2 * PERIOD
    srs = [shimmer(clean, rng) for _ in range(n)]
    out = run(Stabiliser(mode), range(n), [src] * n, srs)
    motion = [zero_motion(clean)] * (n - 1)
    ratio = e_warp(out, motion) / e_warp(srs, motion)
    # A blend that carries a share ``a`` forward keeps (1-a)/sqrt(1+a) of
    # the frame-to-frame change of fresh noise in steady state (0.32, 0.15
    # and 0.07 for light, auto and strong); the running outputs restart in
    # turn, and a young one has steadied less, so a clip keeps somewhat more.
    a = STRENGTH[mode]
    steady_state = (1 - a) / np.sqrt(1 + a)
    assert 0.95 * steady_state < ratio < 2.2 * steady_state
    # and it is the picture that stays: closer to the clean frame than any one input
    gain = np.mean([psnr_y(o, clean) for o in out[PERIOD:]]) - np.mean([psnr_y(s, clean) for s in srs])
    assert gain > {"light": 3, "auto": 5, "strong": 7}[mode]


def test_first_frame_after_a_cut_is_the_per_frame_output():
    rng = np.random.default_rng(3)
    a, b = picture(seed=1), picture(seed=2)
    srcs = [a] * 10 + [b] * 10
    srs = [shimmer(up(s), rng) for s in srcs]
    stab = Stabiliser("strong")
    out = run(stab, range(20), srcs, srs)
    assert np.array_equal(out[0], srs[0])
    assert np.array_equal(out[10], srs[10])  # nothing of picture a carried into b
    assert not np.array_equal(out[11], srs[11])  # and steadying starts again at once
    assert stab.cuts == 1
    # the frames after the cut are as close to the new picture as per-frame output, or closer
    for k in (10, 11, 12):
        assert psnr_y(out[k], up(b)) >= psnr_y(srs[k], up(b)) - 0.05


def test_a_gap_in_the_numbers_restarts():
    rng = np.random.default_rng(4)
    src = picture()
    srs = [shimmer(up(src), rng) for _ in range(6)]
    out = run(Stabiliser("auto"), [0, 1, 2, 10, 11, 12], [src] * 6, srs)
    assert np.array_equal(out[3], srs[3])
    assert not np.array_equal(out[4], srs[4])


def test_a_fade_is_not_carried_forward():
    """A picture going dark frame by frame: the output follows at once rather than lagging behind."""
    rng = np.random.default_rng(5)
    base = picture().astype(np.float32)
    srcs = [np.clip(base * (1 - 0.06 * k), 0, 255).astype(np.uint8) for k in range(12)]
    srs = [shimmer(up(s), rng, sigma=3.0) for s in srcs]
    out = run(Stabiliser("strong"), range(12), srcs, srs)
    for k in range(12):
        level = up(srcs[k]).astype(np.float32).mean()
        assert abs(out[k].astype(np.float32).mean() - level) < 1.0


def test_moving_object_leaves_no_trail():
    """A bright square crossing a still background: where it has just left, the background is back."""
    rng = np.random.default_rng(6)
    bg = picture(seed=7)
    frames = []
    for k in range(16):
        f = bg.copy()
        x = 4 + 3 * k
        f[16:32, x : x + 12] = (250, 250, 40)
        frames.append(f)
    srs = [shimmer(up(f), rng, sigma=4.0) for f in frames]
    out = run(Stabiliser("strong"), range(16), frames, srs)
    clean_bg = up(bg).astype(np.float32)
    for k in range(4, 16):
        # the strip the square uncovered since the previous frame, at output size, with a margin
        x_prev = 4 + 3 * (k - 1)
        y0, y1, x0, x1 = (16 + 2) * SCALE, (32 - 2) * SCALE, (x_prev + 1) * SCALE, (x_prev + 3) * SCALE
        region = out[k][y0:y1, x0:x1].astype(np.float32)
        trail = np.abs(region - clean_bg[y0:y1, x0:x1]).mean()
        per_frame = np.abs(srs[k][y0:y1, x0:x1].astype(np.float32) - clean_bg[y0:y1, x0:x1]).mean()
        assert trail < per_frame + 4.0, f"frame {k}: a trail of the square ({trail:.1f} vs {per_frame:.1f})"


def test_a_frame_depends_only_on_the_period_before_it():
    """Starting ``PERIOD`` pictures early gives exactly the frames of a run from the beginning."""
    rng = np.random.default_rng(8)
    n = 3 * PERIOD + 5
    frames = [np.roll(picture(seed=9), 2 * k, axis=1) for k in range(n)]  # a steady pan
    srs = [shimmer(up(f), rng) for f in frames]
    whole = run(Stabiliser("strong"), range(n), frames, srs)
    for start in (PERIOD + 3, 2 * PERIOD, 2 * PERIOD + PERIOD // 2 + 1):
        warm = start - PERIOD
        part = run(Stabiliser("strong"), range(warm, n), frames[warm:], srs[warm:])
        for k in range(start, n):
            assert np.array_equal(part[k - warm], whole[k]), f"frame {k} differs when starting at {warm}"


def test_modes():
    assert resolve_mode("auto", classical=True) == "off"
    assert resolve_mode("auto", classical=False) == "auto"
    assert resolve_mode("strong", classical=True) == "strong"
    with pytest.raises(ValueError, match="unknown temporal mode 'wobbly'"):
        resolve_mode("wobbly", classical=False)


# --- through the pipeline ----------------------------------------------------------


def grainy(index: int) -> np.ndarray:
    """A still picture (120 x 160) with fresh grain in every frame, as a tape gives."""
    base = cv2.resize(picture(seed=11), (160, 120), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    grain = np.random.default_rng(index).normal(0.0, 5.0, base.shape)
    return np.clip(np.round(base + grain), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def long_clip(clips) -> mediagen.ClipInfo:
    """Interlaced MPEG-2 with a keyframe every 15 frames, as the chunked tests use."""
    return clips.make(
        "steady-long.vob", vcodec="mpeg2video", size=(160, 120), interlaced="tff", frames=90, picture=grainy
    )


@pytest.mark.slow
def test_chunked_steadied_run_gives_the_frames_of_one_run(long_clip, tmp_path):
    opts = {"model": "bicubic-x2", "codec": "ffv1", "overwrite": True, "temporal": "strong"}
    whole = tmp_path / "whole.mkv"
    r = upscale_video(long_clip.path, whole, **opts)
    assert r.temporal == "strong"
    chunked = tmp_path / "chunked.mkv"
    c = upscale_chunked(long_clip.path, chunked, workers=1, chunk_seconds=1.01, **opts)
    assert c.frames_out == r.frames_out == long_clip.frames
    ours, theirs = mediagen.decode_video(chunked), mediagen.decode_video(whole)
    per_frame = tmp_path / "per-frame.mkv"
    upscale_video(long_clip.path, per_frame, **(opts | {"temporal": "off"}))
    changed = []
    for k, ((t1, a), (t2, b), (_, p)) in enumerate(zip(ours, theirs, mediagen.decode_video(per_frame))):
        assert t1 == t2 and np.array_equal(a, b), f"frame {k}"
        if not np.array_equal(a, p):
            changed.append(k)
    # The stabiliser really ran on every frame but the first, the first frames
    # of the later chunks included, which only their warm-up steadies alike.
    assert changed == list(range(1, long_clip.frames))


def test_tiled_and_whole_frames_steady_alike(clips, tmp_path):
    clip = clips.make("steady-small.mkv", vcodec="ffv1", size=(96, 64), frames=6)
    runs = {}
    for tile in (0, 32):
        dst = tmp_path / f"t{tile}.mkv"
        r = upscale_video(clip.path, dst, model="compact-x4", tile=tile, codec="ffv1", overwrite=True)
        assert r.temporal == "auto" and r.tile == tile
        runs[tile] = [rgb.astype(np.int16) for _, rgb in mediagen.decode_video(dst)]
    assert len(runs[0]) == len(runs[32]) == 6
    for a, b in zip(runs[0], runs[32]):
        assert np.abs(a - b).max() <= 1


def test_inference_in_its_own_thread_gives_the_same_frames(clips, tmp_path, monkeypatch):
    """On CUDA the model runs in a thread of its own while the stabiliser works
    on the frames before; forced here on the CPU, the output is the serial run's."""
    from vhsup.pipeline import Run

    clip = clips.make("steady-thread.mkv", vcodec="ffv1", size=(64, 48), frames=12)
    opts = {"model": "bicubic", "codec": "ffv1", "overwrite": True, "temporal": "strong", "batch": 3}
    serial = tmp_path / "serial.mkv"
    upscale_video(clip.path, serial, **opts)
    threads: list[str] = []
    real = Run._inferred

    def inferred(self):
        threads.append(threading.current_thread().name)
        yield from real(self)

    monkeypatch.setattr(Run, "infer_thread", lambda self: True)
    monkeypatch.setattr(Run, "_inferred", inferred)
    threaded = tmp_path / "threaded.mkv"
    r = upscale_video(clip.path, threaded, **opts)
    assert threads == ["vhsup-infer"] and r.frames_out == 12
    ours, theirs = list(mediagen.decode_video(threaded)), list(mediagen.decode_video(serial))
    assert len(ours) == len(theirs) == 12
    for (t1, a), (t2, b) in zip(ours, theirs):
        assert t1 == t2 and np.array_equal(a, b)


def cli(*args: str) -> str:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


def test_run_and_probe_say_which_mode_runs(clips, tmp_path):
    clip = clips.make("steady-probe.mkv", vcodec="ffv1", size=(64, 48), frames=3)
    r = upscale_video(clip.path, tmp_path / "b.mkv", model="bicubic", codec="ffv1")
    assert r.temporal == "off"
    r = upscale_video(clip.path, tmp_path / "b2.mkv", model="bicubic", codec="ffv1", temporal="light")
    assert r.temporal == "light"
    data = json.loads(cli("probe", str(clip.path), "--model", "compact-x4", "--json"))
    assert data["plan"]["temporal"] == "auto"
    data = json.loads(cli("probe", str(clip.path), "--model", "bicubic", "--json"))
    assert data["plan"]["temporal"] == "off"
    text = cli("probe", str(clip.path), "--model", "compact-x4", "--temporal", "off")
    assert "plan: temporal" in text and "off" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_stabiliser_gives_the_cpu_frames():
    rng = np.random.default_rng(12)
    frames = [np.roll(picture(seed=13), k, axis=1) for k in range(8)]
    srs = [shimmer(up(f), rng) for f in frames]
    on_cpu = run(Stabiliser("auto"), range(8), frames, srs)
    on_gpu = run(Stabiliser("auto", device="cuda"), range(8), frames, srs)
    for a, b in zip(on_cpu, on_gpu):
        assert np.abs(a.astype(np.int16) - b).max() <= 1
