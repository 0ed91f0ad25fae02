"""The benchmark's clips: truth whose motion is exact, and SD tapes and discs made from it.

Scenes are rendered tiny (a few dozen to a few hundred pixels) and short;
the SD clips are real 720x480 DV and MPEG-2 files that go through vhsup's
own probe and pipeline.
"""

from __future__ import annotations

import dataclasses
import json

import av
import cv2
import numpy as np
import pytest

from vhsup import upscale_video
from vhsup.errors import VhsupError
from vhsup.eval.scenes import SCENES, Layer, Scene, Shot, load_picture, make_scene, view
from vhsup.eval.tape import TapeLook, camera_frame, clip_name, draw_tape_look, make_clip
from vhsup.media.probe import probe

FAST = {"model": "bicubic", "preset": "ultrafast", "overwrite": True}


def smooth(name: str) -> np.ndarray:
    """A smooth stand-in of picture ``name``'s size, periodic over it (tiled copies join smoothly)."""
    h, w = load_picture(name).shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = 2 * np.pi * x / w, 2 * np.pi * y / h
    return np.stack(
        [
            128 + 60 * np.cos(u) + 30 * np.sin(v),
            128 + 50 * np.sin(u + v) + 20 * np.cos(v),
            128 + 40 * np.cos(u - 2 * v + 1) + 40 * np.sin(u),
        ],
        -1,
    )


def warp_back(earlier: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The earlier frame moved by the backward flow onto the later frame's pixels."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(earlier, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------
# Truth.


@pytest.mark.parametrize("name", SCENES)
def test_motion_is_exact_on_visible_pixels(name):
    scene = make_scene(name, size=(160, 120), seconds=0.5, pictures=smooth)
    checked = 0
    moved = 0.0
    for n in (0, scene.frames // 2 - 2, scene.frames // 2, scene.frames - 2):
        m = scene.pair(n)
        if n + 1 in scene.cuts:
            continue
        earlier, later = scene.render(scene.time(n)), scene.render(scene.time(n + 1))
        err = np.abs(warp_back(earlier, m.flow) - later).max(-1)
        assert m.visible.mean() > 0.8, f"pair {n}: only {m.visible.mean():.0%} visible"
        assert err[m.visible].max() <= 1.0, f"pair {n}: warp error {err[m.visible].max():.3f} > 1/255"
        still = np.abs(earlier - later).max(-1)
        moved = max(moved, float(still[m.visible].max()))
        checked += 1
    assert checked >= 3
    if name == "talking_head":
        # A sway, not a pan: under half an SD pixel (720 across), but not nothing.
        sway = max(np.abs(scene.pair(n).flow).max() for n in range(scene.frames - 1)) * 720 / 160
        assert 0.01 < sway < 0.5
    else:
        # The check above can fail: without the flow the frames do not line up.
        assert moved > 2.0


def test_occlusion_hides_what_the_object_covers_and_uncovers():
    scene = make_scene("occlusion", size=(160, 120), seconds=0.5, pictures=smooth)
    n = scene.frames // 2
    m = scene.pair(n)
    inner = np.zeros_like(m.visible)
    inner[4:-4, 4:-4] = True
    # Two motions on screen: the background's and the disc's, both visible in places ...
    dx = np.round(m.flow[..., 0][m.visible & inner], 1)
    values, counts = np.unique(dx, return_counts=True)
    assert (counts > 30).sum() >= 2, f"expected two distinct layer motions, got {dict(zip(values, counts))}"
    # ... and a band around the moving disc that no warp can fill, inside the frame.
    hidden = ~m.visible & inner
    assert 0.01 < hidden.mean() < 0.3


def test_cut_masks_every_pixel_across_the_cut():
    scene = make_scene("cut", size=(96, 64), seconds=0.5)
    assert len(scene.cuts) == 1
    cut = scene.cuts[0]
    across = scene.pair(cut - 1)
    assert not across.visible.any()
    assert scene.pair(cut - 2).visible.mean() > 0.8
    assert scene.pair(cut).visible.mean() > 0.8
    # the picture really changes there
    jump = np.abs(luma(scene.frame(cut)) - luma(scene.frame(cut - 1))).mean()
    step = np.abs(luma(scene.frame(cut - 1)) - luma(scene.frame(cut - 2))).mean()
    assert jump > 5 * step


def test_scenes_are_deterministic_and_the_seed_moves_the_camera():
    a = make_scene("pan", size=(64, 48), seconds=0.2, seed=3)
    b = make_scene("pan", size=(64, 48), seconds=0.2, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.truth(), b.truth()))
    others = [make_scene("pan", size=(64, 48), seconds=0.2, seed=s).frame(0) for s in range(4)]
    assert any(not np.array_equal(a.frame(0), o) for o in others)
    assert a.frames == 6 and a.frame(0).shape == (48, 64, 3) and a.frame(0).dtype == np.uint8
    record = a.describe()
    assert record["pictures"] == {"coffee": record["pictures"]["coffee"]} and "CC0" in record["pictures"]["coffee"]


def test_bad_requests_say_what_is_wrong(tmp_path):
    with pytest.raises(VhsupError, match="unknown scene 'spin'"):
        make_scene("spin")
    scene = make_scene("pan", size=(32, 24), seconds=0.1)
    with pytest.raises(VhsupError, match="written as .avi") as e:
        make_clip(scene, "vhs", tmp_path / "pan.mkv")
    assert str(tmp_path / "pan.mkv") in str(e.value)
    with pytest.raises(VhsupError, match="unknown clip variant 'vcd'"):
        make_clip(scene, "vcd", tmp_path / "pan.mpg")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# SD clips.


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The texture scene as a VHS (DV) and a DVD (MPEG-2) clip, looks drawn from seed 5."""
    folder = tmp_path_factory.mktemp("eval-clips")
    scene = make_scene("texture", size=(360, 240), seconds=0.3)
    return scene, {v: make_clip(scene, v, folder / clip_name(scene, v), seed=5) for v in ("vhs", "dvd")}


@pytest.mark.parametrize("variant, order, codec", [("vhs", "bff", "dvvideo"), ("dvd", "tff", "mpeg2video")])
def test_clips_probe_as_interlaced_sd(clips, variant, order, codec):
    scene, made = clips
    info = made[variant]
    p = probe(info.path)
    assert (p.codec, p.width, p.height, str(p.sar), str(p.fps)) == (codec, 720, 480, "8/9", "30000/1001")
    assert (p.frames, p.frames_exact) == (scene.frames, True)
    assert p.field_order == order
    assert p.interlace.interlaced and p.interlace.field_order == order
    side = json.loads(info.sidecar.read_text())
    assert side["file"] == info.path.name and side["variant"] == variant
    assert (side["size"], side["sar"], side["display_aspect"], side["rate"]) == ([720, 480], "8/9", "4/3", "30000/1001")
    assert (side["frames"], side["field_order"]) == (scene.frames, order)
    assert side["scene"]["scene"] == "texture" and side["scene"]["size"] == [360, 240]
    if variant == "vhs":
        assert side["look"] == json.loads(json.dumps(dataclasses.asdict(draw_tape_look(5))))
        head = side["look"]["head_switch_lines"]
        assert side["mapping"]["damaged_rows"] == [480 - 2 * head, 480]


@pytest.mark.parametrize("variant", ["vhs", "dvd"])
def test_clip_runs_through_the_pipeline_and_lines_up_with_the_truth(clips, tmp_path, variant):
    scene, made = clips
    r = upscale_video(made[variant].path, tmp_path / "out.mkv", frames=4, **FAST)
    assert (r.frames_out, r.width, r.height, r.display_aspect) == (4, 2880, 1920, "4:3")
    with av.open(str(tmp_path / "out.mkv")) as c:
        out = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(out) == 4
    # Deinterlaced at the same rate, output frame n is the first field's
    # instant, n / rate: it matches the scene then, not half a frame later.
    sd = scene.at_size((720, 480))
    rows = slice(8, 440)  # clear of the VHS head-switching lines
    for n in (1, 2, 3):
        got = luma(cv2.resize(out[n], (720, 480), interpolation=cv2.INTER_AREA))[rows]
        at_first = np.abs(got - luma(sd.render(sd.time(n)))[rows]).mean()
        at_second = np.abs(got - luma(sd.render(sd.time(n + 0.5)))[rows]).mean()
        assert at_first < 0.8 * at_second, f"frame {n}: {at_first:.2f} vs {at_second:.2f}"


def _shift(a: np.ndarray, b: np.ndarray) -> float:
    """How far lines of b sit right of the same lines of a (pixels; cross-correlation peak)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    ks = np.arange(-10, 11)
    c = np.array(
        [(a[:, max(0, -k) : a.shape[1] - max(0, k)] * b[:, max(0, k) : b.shape[1] - max(0, -k)]).sum() for k in ks]
    )
    i = int(np.clip(c.argmax(), 1, len(ks) - 2))
    return float(ks[i] + (c[i - 1] - c[i + 1]) / (2 * (c[i - 1] - 2 * c[i] + c[i + 1])))


def test_tape_look_is_fixed_over_the_clip_and_noise_is_new_every_frame(tmp_path):
    coffee = np.ascontiguousarray(load_picture("coffee"))
    still = Scene(
        "still",
        [Shot(0.0, (Layer(coffee, lambda t: view(300.0, 200.0, 360.0), picture="coffee"),))],
        8,
        size=(360, 240),
    )
    look = TapeLook(
        generation=1,
        luma_mhz=2.5,
        chroma_mhz=0.4,
        chroma_delay_px=3.0,
        luma_noise=3.0,
        chroma_noise=4.0,
        comb=True,
        sharpen=0.6,
        jitter_px=0.0,
        dropouts=0.0,
        head_switch_lines=8,
    )
    info = make_clip(still, "vhs", tmp_path / "still.avi", seed=2, look=look)
    with av.open(str(info.path)) as c:
        planes = [f.to_ndarray(format="yuv444p").astype(np.float64) for f in c.decode(video=0)]
    assert len(planes) == 8
    rows = slice(16, 440)
    clean = cv2.cvtColor(np.round(camera_frame(still, 0, "bff")).astype(np.uint8), cv2.COLOR_RGB2YCrCb)
    # Chroma lags luma by the look's delay in every frame, and by the same amount.
    lag = [
        _shift(clean[rows, :, 1].astype(np.float64), p[2][rows])
        - _shift(clean[rows, :, 0].astype(np.float64), p[0][rows])
        for p in planes
    ]
    assert min(lag) > 1.5, lag
    assert max(abs(_shift(planes[0][2][rows], p[2][rows])) for p in planes[1:]) < 0.15
    # The scene stands still, yet no two frames are alike: the noise is drawn
    # afresh per frame, at the same strength.
    diffs = [np.abs(a[0][rows] - b[0][rows]).mean() for a, b in zip(planes, planes[1:])]
    assert min(diffs) > 1.5 and max(diffs) < 1.25 * min(diffs), diffs


@pytest.mark.parametrize("variant", ["vhs", "dvd"])
def test_same_seed_gives_the_same_bytes(tmp_path, variant):
    scene = make_scene("occlusion", size=(96, 64), seconds=0.15)
    files = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        info = make_clip(scene, variant, tmp_path / folder / clip_name(scene, variant), seed=seed)
        files.append((info.path.read_bytes(), info.sidecar.read_text()))
    assert files[0] == files[1]
    assert files[0][0] != files[2][0] and files[0][1] != files[2][1]
