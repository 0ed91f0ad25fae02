"""The comparison still must show a fair bicubic-vs-model pair, labelled, at the right aspect."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from vhsup.errors import VhsupError
from vhsup.preview import GAP, MAX_PANEL_WIDTH, compose_compare, write_compare, write_png


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A picture with edges and colour, not flat: resizing must matter."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    img = cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (255, 40, 0), -1)
    return img


def _fake_model(src: np.ndarray, scale: int) -> np.ndarray:
    # Any output that differs from bicubic will do: the model is not under test.
    return cv2.resize(src, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _crop(img: np.ndarray, box) -> np.ndarray:
    x, y, w, h = box
    return img[y : y + h, x : x + w]


def test_panels_are_bicubic_and_model_side_by_side(tmp_path):
    src = _frame(30, 40)
    up = _fake_model(src, 4)
    out = write_compare(tmp_path / "cmp.png", src, up, model_name="compact-x4", scale=4)
    assert out == tmp_path / "cmp.png"
    img = _read_rgb(out)
    _canvas, boxes = compose_compare(src, up, model_name="compact-x4", scale=4)
    assert set(boxes) == {"bicubic", "model"}  # small enough: no zoom row
    assert img.shape[1] == 2 * 160 + GAP
    assert boxes["bicubic"][2:] == boxes["model"][2:] == (160, 120)
    bicubic = cv2.resize(src, (160, 120), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(_crop(img, boxes["bicubic"]), bicubic)
    np.testing.assert_array_equal(_crop(img, boxes["model"]), up)
    assert not np.array_equal(_crop(img, boxes["bicubic"]), _crop(img, boxes["model"]))


def test_captions_are_drawn_and_differ(tmp_path):
    src = _frame(60, 80)
    up = _fake_model(src, 4)
    img = _read_rgb(write_compare(tmp_path / "c.png", src, up, model_name="esrgan-x4", scale=4))
    _canvas, boxes = compose_compare(src, up, model_name="esrgan-x4", scale=4)
    bands = []
    for key in ("bicubic", "model"):
        x, y, w, _h = boxes[key]
        assert y >= 12  # there is a caption band above the picture
        band = img[:y, x : x + w]
        text = band.max(axis=2) > 150  # light text on a dark band
        assert 40 < text.sum() < 0.5 * text.size
        bands.append(text)
    assert (bands[0] != bands[1]).sum() > 40  # 'bicubic' and the model name


def test_display_aspect_makes_circles_round(tmp_path):
    # NTSC DV: 720 samples show a 4:3 picture, so a round disc is stored
    # 9/8 as wide as it is tall.
    src = np.zeros((120, 180, 3), np.uint8)
    cv2.ellipse(src, (90, 60), (45, 40), 0, 0, 360, (255, 255, 255), -1)
    up = _fake_model(src, 2)
    sar = Fraction(8, 9)
    img = _read_rgb(write_compare(tmp_path / "a.png", src, up, model_name="compact-x2", scale=2, display_sar=sar))
    _canvas, boxes = compose_compare(src, up, model_name="compact-x2", scale=2, display_sar=sar)
    assert boxes["model"][2] == round(360 * sar) == 320
    assert img.shape[1] == 2 * 320 + GAP
    disc = _crop(img, boxes["model"])[..., 0] > 128
    ys, xs = np.where(disc)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(width / height - 1) < 0.03
    # The left panel gets the same stretch, so the pair stays comparable.
    bicubic = cv2.resize(src, (360, 240), interpolation=cv2.INTER_CUBIC)
    expected_left = cv2.resize(bicubic, (320, 240), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(_crop(img, boxes["bicubic"]), expected_left)


def test_wide_frames_get_a_one_to_one_centre_crop(tmp_path):
    src = _frame(240, 360, seed=1)
    up = _fake_model(src, 4)  # 1440 x 960: too wide to show whole at 1:1
    img = _read_rgb(write_compare(tmp_path / "w.png", src, up, model_name="compact-x4", scale=4))
    _canvas, boxes = compose_compare(src, up, model_name="compact-x4", scale=4)
    assert boxes["model"][2] == MAX_PANEL_WIDTH
    assert img.shape[1] == 2 * MAX_PANEL_WIDTH + GAP
    x, y, w, h = boxes["model-1:1"]
    assert y > boxes["model"][1] + boxes["model"][3]  # a second row, below
    x0, y0 = (1440 - w) // 2, (960 - h) // 2
    np.testing.assert_array_equal(_crop(img, boxes["model-1:1"]), up[y0 : y0 + h, x0 : x0 + w])
    bicubic = cv2.resize(src, (1440, 960), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(_crop(img, boxes["bicubic-1:1"]), bicubic[y0 : y0 + h, x0 : x0 + w])


def test_crop_to_sets_the_detail_size():
    src = _frame(30, 40)
    _canvas, boxes = compose_compare(src, _fake_model(src, 4), model_name="m", scale=4, crop_to=64)
    assert boxes["model-1:1"][2:] == (64, 64)
    _canvas, boxes = compose_compare(src, _fake_model(src, 4), model_name="m", scale=4, crop_to=0)
    assert "model-1:1" not in boxes


def test_png_keeps_rgb_order(tmp_path):
    red = np.zeros((8, 12, 3), np.uint8)
    red[..., 0] = 255
    path = write_png(tmp_path / "red.png", red)
    assert tuple(cv2.imread(str(path))[4, 6]) == (0, 0, 255)  # OpenCV reads BGR
    with av.open(str(path)) as c:
        assert tuple(next(c.decode(video=0)).to_ndarray(format="rgb24")[4, 6]) == (255, 0, 0)
    cmp = write_compare(tmp_path / "cmp.png", red, _fake_model(red, 2), model_name="m", scale=2)
    _canvas, boxes = compose_compare(red, _fake_model(red, 2), model_name="m", scale=2)
    x, y, _w, _h = boxes["model"]
    assert tuple(_read_rgb(cmp)[y + 2, x + 2]) == (255, 0, 0)


def test_writes_are_atomic_and_errors_name_the_file(tmp_path):
    target = tmp_path / "still.png"
    target.write_bytes(b"old")
    write_png(target, np.full((4, 4, 3), 9, np.uint8))
    assert cv2.imread(str(target)) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["still.png"]  # no temp left behind
    missing = tmp_path / "no" / "still.png"
    with pytest.raises(VhsupError) as err:
        write_png(missing, np.zeros((4, 4, 3), np.uint8))
    assert str(missing) in str(err.value)


def test_rejects_arrays_that_are_not_rgb_frames(tmp_path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        compose_compare(np.zeros((4, 4, 3), np.float32), np.zeros((8, 8, 3), np.uint8), model_name="m", scale=2)
