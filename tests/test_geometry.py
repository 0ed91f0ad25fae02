"""Sizes and aspect: the output must show the source's display shape."""

import json
from fractions import Fraction

import numpy as np
import pytest

import mediagen
from vhsup.errors import VhsupError
from vhsup.media.geometry import Crop, detect_crop, fit, parse_crop, plan_geometry
from vhsup.pipeline import Options, make_plan


def test_widescreen_dvd_keeps_16_9_by_tagging_sar():
    g = plan_geometry(720, 480, Fraction(32, 27), 4)
    assert (g.out_w, g.out_h) == (2880, 1920)
    assert g.out_sar == Fraction(32, 27)
    assert g.dar == Fraction(16, 9)


@pytest.mark.parametrize(
    "w,h,sar,height,expected",
    [
        (720, 480, Fraction(32, 27), 1080, (1920, 1080)),  # NTSC 16:9
        (720, 480, Fraction(8, 9), 1080, (1440, 1080)),  # NTSC 4:3 (DV)
        (720, 576, Fraction(16, 15), 1080, (1440, 1080)),  # PAL 4:3
        (720, 576, Fraction(64, 45), 720, (1280, 720)),  # PAL 16:9
    ],
)
def test_target_height_gives_square_pixels_at_display_aspect(w, h, sar, height, expected):
    g = plan_geometry(w, h, sar, 4, height=height)
    assert (g.out_w, g.out_h) == expected
    assert g.out_sar == 1
    assert g.dar == Fraction(w, h) * sar


def test_target_width_and_box_fit():
    g = plan_geometry(720, 480, Fraction(32, 27), 4, width=1280)
    assert (g.out_w, g.out_h) == (1280, 720)
    # A 1440x1080 box holds a 16:9 picture at its full width.
    g = plan_geometry(720, 480, Fraction(32, 27), 4, width=1440, height=1080)
    assert (g.out_w, g.out_h) == (1440, 810)


def test_crop_changes_the_aspect_to_the_picture_kept():
    # 704 of 720 samples are picture: with SAR 10:11 that is exactly 4:3.
    g = plan_geometry(720, 480, Fraction(10, 11), 2, crop=Crop(8, 0, 8, 0))
    assert (g.in_w, g.in_h) == (704, 480)
    assert g.dar == Fraction(4, 3)
    assert (g.out_w, g.out_h) == (1408, 960)


def test_odd_sizes_become_even_with_aspect_kept():
    g = plan_geometry(99, 67, Fraction(1), 3)
    assert (g.sr_w, g.sr_h) == (297, 201)
    assert g.out_w % 2 == 0 and g.out_h % 2 == 0
    assert abs(float(g.dar) - 99 / 67) < 1e-3


def test_crop_parsing_and_errors():
    assert parse_crop("8,0,8,6") == Crop(8, 0, 8, 6)
    assert parse_crop("auto") == "auto"
    assert parse_crop(None) is None
    with pytest.raises(VhsupError, match="four non-negative integers"):
        parse_crop("8,0,8")
    with pytest.raises(VhsupError, match="leaves"):
        plan_geometry(64, 48, Fraction(1), 4, crop=Crop(30, 0, 30, 0))


def test_detect_crop_finds_black_bars_and_head_switching():
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(4):
        f = np.zeros((480, 720, 3), np.uint8)
        f[60:420, 10:712] = rng.integers(60, 200, (360, 702, 3), dtype=np.uint8) // 8 * 8
        # smooth the picture so rows resemble each other, as real pictures do
        f[60:420, 10:712] = np.repeat(f[60:420:4, 10:712], 4, axis=0)
        # head-switching: the bottom 6 picture lines torn sideways with noise
        f[410:420, 10:712] = rng.integers(0, 255, (10, 702, 3), dtype=np.uint8)
        frames.append(f)
    c = detect_crop(frames, vhs_bottom=True)
    assert c.top == 60 and c.left == 10 and c.right == 8
    assert c.bottom >= 60 + 10  # the torn band is gone too
    assert c.bottom <= 60 + 12
    plain = detect_crop(frames, vhs_bottom=False)
    assert plain.bottom == 60


def auto_crop(path) -> Crop:
    return make_plan(path, Options(crop="auto"), scale=2, model="bicubic").geometry.crop


@pytest.fixture(scope="module")
def tape(tmp_path_factory):
    """A VHS tape through a DV bridge (NTSC DV in AVI, BFF): 8 and 10 black
    samples at the sides, one dark grey noisy line at the top, 7 torn
    head-switching lines at the bottom, a dark textured picture along every
    edge, and the first 12 of its 30 frames fading up from near black."""
    borders = mediagen.Borders(left=8, right=10, top_dark=1, head_switch=7)
    path = tmp_path_factory.mktemp("tape") / "tape.avi"
    mediagen.make_bordered_clip(path, borders, fade=12, vcodec="dvvideo", frames=30)
    return path, borders


def test_auto_crop_on_a_vhs_tape_is_exact_to_the_line(tape):
    from click.testing import CliRunner

    from vhsup.cli import main

    path, borders = tape
    assert borders.crop == (8, 1, 10, 7)
    r = CliRunner().invoke(main, ["probe", str(path), "--crop", "auto", "--json", "--model", "bicubic"])
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    # The dark top line and every torn line go, and not one line of picture.
    assert plan["crop"] == "8,1,10,7" and plan["crop_source"] == "auto"
    assert plan["model_size"] == [720 - 18, 480 - 8]


def test_auto_crop_keeps_every_line_of_a_letterboxed_dvd(tmp_path):
    # A 1.85:1 film on a 4:3 NTSC DVD: black bars that no macroblock edge
    # lines up with, and the film dark where it meets them. No head switching.
    borders = mediagen.Borders(top_black=67, bottom_black=69)
    path = tmp_path / "film.vob"
    mediagen.make_bordered_clip(
        path, borders, vcodec="mpeg2video", size=(720, 480), interlaced="tff", sar=Fraction(10, 11), frames=24
    )
    assert auto_crop(path) == Crop(0, 67, 0, 69)


def test_auto_crop_leaves_a_clip_without_borders_alone(tmp_path):
    # A capture-card FFV1 file (head switching is looked for) whose picture
    # fills the frame, dark along the edges, fading up from black.
    path = tmp_path / "full.mkv"
    mediagen.make_bordered_clip(path, mediagen.Borders(), fade=12, vcodec="ffv1", size=(320, 240), frames=30)
    assert auto_crop(path) == Crop()


def test_a_dark_scene_is_not_a_border():
    # Every sample near black with a little noise (a night scene, a long
    # fade): nothing tells picture from border, so nothing is cropped.
    rng = np.random.default_rng(3)
    frames = [np.clip(rng.normal(3, 2, (480, 720, 3)), 0, 255).astype(np.uint8) for _ in range(6)]
    assert detect_crop(frames, vhs_bottom=True) == Crop()


def test_fit_uses_exact_target_size():
    rgb = np.full((201, 297, 3), 128, np.uint8)
    out = fit(rgb, 298, 202)
    assert out.shape == (202, 298, 3)
    assert int(out.mean()) == 128
