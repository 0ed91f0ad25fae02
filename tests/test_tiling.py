"""Tile geometry: every pixel covered once, crops see no false border, fades sum to one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vhsup.tiling import axis_weights, crop_size, plan_tiles, split_axis

# (size, tile, context, multiple): frame sides of DVD/VHS shape and awkward
# small ones, tiles that do and do not divide them.
CASES = [
    (480, 128, 16, 1),
    (720, 200, 16, 1),
    (576, 256, 10, 1),
    (97, 24, 8, 1),
    (61, 16, 16, 1),
    (100, 33, 5, 1),
    (64, 64, 16, 1),
    (482, 128, 16, 2),
    (484, 100, 16, 4),
    (60, 16, 3, 4),
    (37, 8, 8, 1),
]


@pytest.mark.parametrize("size,tile,context,multiple", CASES)
def test_cores_cover_each_pixel_once_and_respect_tile(size, tile, context, multiple):
    spans = split_axis(size, tile, context, multiple=multiple)
    owned = np.zeros(size, int)
    for s in spans:
        owned[s.core0 : s.core1] += 1
        assert s.core1 - s.core0 <= max(tile, 1) or len(spans) == 1
    assert (owned == 1).all()


@pytest.mark.parametrize("size,tile,context,multiple", CASES)
def test_crops_are_equal_aligned_and_hold_context_without_padding(size, tile, context, multiple):
    spans = split_axis(size, tile, context, multiple=multiple)
    lengths = {s.crop1 - s.crop0 for s in spans}
    assert len(lengths) == 1  # stackable into one batch
    for s in spans:
        # Inside the frame: a crop never needs padding the whole frame lacks.
        assert 0 <= s.crop0 < s.crop1 <= size
        assert s.crop0 % multiple == 0 and s.crop1 % multiple == 0
        # Every pixel that gets weight has `context` pixels of real picture
        # on each side inside the crop, unless the crop ends at the frame
        # border just as the untiled frame does.
        assert s.crop0 == 0 or s.blend0 - s.crop0 >= context
        assert s.crop1 == size or s.crop1 - s.blend1 >= context
        assert s.blend0 <= s.core0 < s.core1 <= s.blend1


@pytest.mark.parametrize("size,tile,context,multiple", CASES)
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_blend_weights_sum_to_one_and_fade_smoothly(size, tile, context, multiple, scale):
    spans = split_axis(size, tile, context, multiple=multiple)
    total = np.zeros(size * scale)
    for s in spans:
        w = axis_weights(s, scale)
        assert w.shape == ((s.crop1 - s.crop0) * scale,)
        assert (w >= 0).all() and (w <= 1).all()
        out = np.arange(s.crop0 * scale, s.crop1 * scale)
        # No weight outside the blend range: those pixels lack context.
        outside = (out < s.blend0 * scale) | (out >= s.blend1 * scale)
        assert (w[outside] == 0).all()
        total[s.crop0 * scale : s.crop1 * scale] += w
        if len(spans) > 1:
            f = max(s.core0 - s.blend0, s.blend1 - s.core1)
            if f:
                # A fade, not a cut: sin^2 changes by at most pi/2 per ramp
                # width, so no neighbour step exceeds that over 2*f*scale px.
                inner = w[~outside]
                assert np.abs(np.diff(inner)).max() <= np.pi / (4 * f * scale) + 1e-6
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_two_dimensional_weights_form_a_partition_of_unity():
    h, w, scale = 75, 103, 2
    tiles = plan_tiles(h, w, 32, 8)
    assert len(tiles) == 3 * 4
    total = np.zeros((h * scale, w * scale))
    for t in tiles:
        y0, y1, x0, x1 = t.crop
        total[y0 * scale : y1 * scale, x0 * scale : x1 * scale] += np.outer(
            axis_weights(t.y, scale), axis_weights(t.x, scale)
        )
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert {(t.crop[1] - t.crop[0], t.crop[3] - t.crop[2]) for t in tiles} == {crop_size(h, w, 32, 8)}


@pytest.mark.parametrize("tile", [0, 480, 1000])
def test_no_tiling_gives_one_full_weight_tile(tile):
    (t,) = plan_tiles(480, 360, tile, 16) if tile != 480 else plan_tiles(360, 480, tile, 16)
    assert t.crop == (0, t.y.crop1, 0, t.x.crop1) and t.y.crop1 * t.x.crop1 == 480 * 360
    assert (axis_weights(t.y, 4) == 1).all() and (axis_weights(t.x, 4) == 1).all()


def test_crop_covering_the_frame_collapses_to_one_tile():
    # Cores of 40 with 16 context on each side already span the 64 px side.
    assert len(split_axis(64, 40, 16)) == 1


def test_short_cores_shrink_the_feather_but_still_sum_to_one():
    spans = split_axis(50, 4, 20, feather=10)
    assert len(spans) > 10
    total = np.zeros(50 * 3)
    for s in spans:
        total[s.crop0 * 3 : s.crop1 * 3] += axis_weights(s, 3)
        assert s.core0 - s.blend0 <= 2 and s.blend1 - s.core1 <= 2
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError):
        split_axis(481, 100, 16, multiple=2)  # the engine pads first
    with pytest.raises(ValueError):
        split_axis(0, 100, 16)


def test_random_geometries_hold_all_invariants():
    rng = np.random.default_rng(7)
    for size, tile, context, multiple, scale in itertools.islice(
        zip(
            rng.integers(8, 700, 300),
            rng.integers(0, 300, 300),
            rng.integers(0, 40, 300),
            rng.choice([1, 2, 4], 300),
            rng.choice([1, 2, 3, 4], 300),
        ),
        300,
    ):
        size = int(size) // multiple * multiple or multiple
        spans = split_axis(size, int(tile), int(context), multiple=int(multiple))
        owned = np.zeros(size, int)
        total = np.zeros(size * scale)
        for s in spans:
            owned[s.core0 : s.core1] += 1
            total[s.crop0 * scale : s.crop1 * scale] += axis_weights(s, int(scale))
            assert s.crop0 == 0 or s.blend0 - s.crop0 >= context
            assert s.crop1 == size or s.crop1 - s.blend1 >= context
        assert (owned == 1).all()
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
