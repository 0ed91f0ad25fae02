"""The benchmark's scores (vhsup.eval.metrics) on cases whose answer is known in advance.

Clips here are real photographs (scikit-image's data pictures) moved by
motion the test chooses, so the truth's motion is exact: integer pans are
exact warps of each other, subpixel pans are rendered from the picture by
bilinear resampling, and an occluding object is pasted in with its own
motion and a visibility mask.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
import types

import cv2
import numpy as np
import pytest
from skimage import data

from vhsup.eval.metrics import (
    ClipScorer,
    ClipScores,
    e_warp,
    flicker_ratio,
    haarpsi,
    luma,
    optical_flow,
    psnr_y,
    resize_motion,
    ssim_y,
    tof,
    tof_pairs,
    warp_error,
    warp_errors,
)

# BT.601 studio-range luma weights of R, G, B (Y = 16 + w . rgb).
_W = np.array([65.481, 128.553, 24.966]) / 255.0


def _picture(lo: int = 0, hi: int = 255) -> np.ndarray:
    """A textured colour photograph (hair, fabric, edges), levels squeezed into lo..hi."""
    img = data.astronaut().astype(np.float64)
    return np.rint(lo + img * (hi - lo) / 255.0).astype(np.uint8)


def _pan(big: np.ndarray, frames: int, step: tuple[int, int], size=(200, 160), origin=(40, 60)):
    """Integer pan: frame t is big's crop at origin + t * step, so frame t+1 at (x, y) is
    frame t at (x + dx, y + dy): the backward motion is ``step`` everywhere."""
    w, h = size
    (x0, y0), (dx, dy) = origin, step
    clip = [big[y0 + t * dy : y0 + t * dy + h, x0 + t * dx : x0 + t * dx + w].copy() for t in range(frames)]
    motion = [np.broadcast_to(np.array(step, np.float32), (h, w, 2)).copy() for _ in range(frames - 1)]
    return clip, motion


def _subpixel_pan(big: np.ndarray, frames: int, step: tuple[float, float], size=(200, 160), origin=(40.0, 60.0)):
    """A pan by a fractional step, each frame resampled (bilinear) from the picture itself.

    Warping frame t does not give frame t+1 exactly (two resamplings against
    one), so the truth's own E_warp is small but not zero, as in a real render.
    """
    w, h = size
    clip = []
    for t in range(frames):
        ox, oy = origin[0] + t * step[0], origin[1] + t * step[1]
        m = np.float32([[1, 0, ox], [0, 1, oy]])
        clip.append(cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    motion = [np.broadcast_to(np.array(step, np.float32), (h, w, 2)).copy() for _ in range(frames - 1)]
    return clip, motion


def _noisy(frames, sigma: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(np.rint(f + rng.normal(0, sigma, f.shape)), 0, 255).astype(np.uint8) for f in frames]


def _shifted(frame: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(frame, m, frame.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


# --- PSNR-Y / SSIM-Y ---------------------------------------------------------------------


def test_luma_is_bt601_studio_range():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(luma(rgb)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_psnr_y_of_known_noise(sigma):
    """i.i.d. N(0, sigma^2) per channel, rounded to 8 bits: the luma error has variance
    (sigma^2 + 1/12) * |w|^2, so the PSNR is known before measuring it."""
    clean = _picture(50, 205)
    noisy = _noisy([clean], sigma, seed=int(sigma))[0]
    want = 10 * math.log10(255.0**2 / ((sigma**2 + 1 / 12) * float(_W @ _W)))
    assert abs(psnr_y(noisy, clean) - want) < 0.1
    assert abs(psnr_y(noisy, clean, border=4) - want) < 0.1


def test_identical_pictures_score_inf_and_one():
    pic = _picture()
    assert psnr_y(pic, pic) == math.inf and psnr_y(pic, pic.copy(), border=4) == math.inf
    assert ssim_y(pic, pic) == pytest.approx(1.0, abs=1e-12)
    noisy = _noisy([pic], 5.0, seed=0)[0]
    assert ssim_y(noisy, pic) < 0.95 and psnr_y(noisy, pic) < 40
    with pytest.raises(ValueError, match="border"):
        psnr_y(pic, pic, border=256)


# --- HaarPSI -----------------------------------------------------------------------------


def test_haarpsi_is_one_for_identical_and_falls_with_noise_and_blur():
    pic = _picture()[100:356, 100:356]
    assert haarpsi(pic, pic.copy()) == pytest.approx(1.0, abs=1e-9)
    by_noise = [haarpsi(_noisy([pic], s, seed=1)[0], pic) for s in (2, 5, 10, 20)]
    by_blur = [haarpsi(cv2.GaussianBlur(pic, (0, 0), s), pic) for s in (0.6, 1.0, 2.0, 4.0)]
    for scores in (by_noise, by_blur):
        assert all(a > b for a, b in zip(scores, scores[1:])), scores
        assert 0.0 < scores[-1] < 0.8 and scores[0] < 1.0
    noisy = _noisy([pic], 5, seed=2)[0]
    assert haarpsi(noisy, pic) == pytest.approx(haarpsi(pic, noisy), abs=1e-12)  # symmetric
    # A uniform picture of another level shares no structure with the photograph.
    assert haarpsi(np.full_like(pic, 128), pic) < 0.3


def _piq_haarpsi():
    """piq's HaarPSI, or a skip when piq is not installed.

    ``import piq`` loads its feature extractors, which need torchvision; the
    HaarPSI module needs only torch, so without torchvision it is loaded on
    its own, under a bare package entry that is removed afterwards.
    """
    spec = importlib.util.find_spec("piq")
    if spec is None:
        pytest.skip("piq is not installed (pip install --no-deps piq)")
    try:
        import piq

        return piq.haarpsi
    except ImportError:
        pass
    saved = {k: v for k, v in sys.modules.items() if k == "piq" or k.startswith("piq.")}
    for k in saved:
        del sys.modules[k]
    bare = types.ModuleType("piq")
    bare.__path__ = list(spec.submodule_search_locations or [])
    sys.modules["piq"] = bare
    try:
        return importlib.import_module("piq.haarpsi").haarpsi
    finally:
        for k in [k for k in sys.modules if k == "piq" or k.startswith("piq.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_haarpsi_matches_piq():
    torch = pytest.importorskip("torch")
    reference = _piq_haarpsi()

    def ref(a: np.ndarray, b: np.ndarray) -> float:
        # piq's greyscale HaarPSI on the same luma, 0..255 given as 0..1.
        def y(x):
            return torch.from_numpy((luma(x) - 16) / 219)[None, None]

        return float(reference(y(a), y(b), data_range=1.0))

    rng = np.random.default_rng(3)
    for pic in (data.astronaut()[:256, 128:384], data.chelsea()[:200, :300]):
        ok, jpeg = cv2.imencode(".jpg", pic, [cv2.IMWRITE_JPEG_QUALITY, 10])
        for other in (
            np.clip(pic + rng.normal(0, 10, pic.shape), 0, 255).astype(np.uint8),
            cv2.GaussianBlur(pic, (0, 0), 1.5),
            cv2.imdecode(jpeg, cv2.IMREAD_COLOR),
        ):
            assert haarpsi(other, pic) == pytest.approx(ref(other, pic), abs=1e-6)


# --- flicker -----------------------------------------------------------------------------


@pytest.mark.parametrize("step", [(2, 0), (0, -3), (1, 2), (-2, -1)])
def test_an_exact_warp_has_no_warp_error(step):
    """Frames that are exact warps of each other under the given (backward) motion.

    Pixels that came in at an edge have no source in the previous frame; were
    they scored (against a border copy), the error would not be zero.
    """
    clip, motion = _pan(_picture(), 5, step)
    errors = warp_errors(clip, motion)
    assert max(errors) < 1e-6, errors
    # The same frames with the motion read forward (the wrong sign) are far off.
    assert min(warp_errors(clip, [-m for m in motion])) > 5
    assert flicker_ratio(clip, clip, motion) == 1.0  # both perfectly steady
    assert flicker_ratio(_noisy(clip, 2.0, seed=0), clip, motion) == math.inf


def test_occlusion_is_masked():
    """A square moves over a panning background; where it uncovers background the mask is False."""
    bg_clip, motion = _pan(_picture(), 4, (2, 1))
    patch = data.chelsea()[100:140, 150:190]
    clip, masks = [], []
    for t, frame in enumerate(bg_clip):
        frame = frame.copy()
        x, y = 60 + 5 * t, 50 - 3 * t  # the square's own motion: (+5, -3) per frame
        frame[y : y + 40, x : x + 40] = patch
        clip.append(frame)
        if t:
            m = motion[t - 1]
            m[y : y + 40, x : x + 40] = (-5, 3)  # the square at t came from (x - 5, y + 3) at t - 1
            seen = np.ones(frame.shape[:2], bool)
            # Background pixels that lay under the square in frame t - 1 were hidden there.
            px, py = 60 + 5 * (t - 1), 50 - 3 * (t - 1)
            yy, xx = np.mgrid[: frame.shape[0], : frame.shape[1]]
            sx, sy = xx + 2, yy + 1
            seen &= ~((sx >= px) & (sx < px + 40) & (sy >= py) & (sy < py + 40))
            seen[y : y + 40, x : x + 40] = True
            masks.append(seen)
    assert max(warp_errors(clip, motion, masks)) < 1e-6
    assert min(warp_errors(clip, motion)) > 0.5  # unmasked, the uncovered strip counts


def test_steady_output_scores_one_against_a_subpixel_truth():
    """The truth's own E_warp is not zero here; an output with a steady colour cast moves exactly as it."""
    truth, motion = _subpixel_pan(_picture(20, 230), 6, (0.4, 0.7))
    base = e_warp(truth, motion)
    assert 0.05 < base < 5
    assert flicker_ratio(truth, truth, motion) == 1.0
    cast = [f + np.uint8(12) for f in truth]
    assert flicker_ratio(cast, truth, motion) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sigma", [3.0, 8.0])
def test_added_noise_raises_warp_error_as_expected(sigma):
    """E|X - Y| for independent X, Y ~ N(0, s^2) is 2 s / sqrt(pi); rounding to 8 bits adds 1/12 to s^2."""
    truth, motion = _pan(_picture(40, 215), 6, (3, 1))
    assert e_warp(truth, motion) < 1e-6
    got = e_warp(_noisy(truth, sigma, seed=7), motion)
    want = 2 * math.sqrt(sigma**2 + 1 / 12) / math.sqrt(math.pi)
    assert got == pytest.approx(want, rel=0.02)


def test_misregistration_is_caught():
    truth, motion = _subpixel_pan(_picture(), 8, (0.6, -0.3))
    # An output whose odd frames sit one pixel to the right of where they belong.
    jumpy = [_shifted(f, 1, 0) if t % 2 else f for t, f in enumerate(truth)]
    assert flicker_ratio(jumpy, truth, motion) > 3
    # Motion one pixel off: the truth no longer lines up with itself.
    off = [m + np.float32([1, 0]) for m in motion]
    assert e_warp(truth, off) > 3 * e_warp(truth, motion)


def test_motion_known_at_another_resolution():
    """Truth at 2x with 2-pixel pans; an output at 1x uses the motion brought to its size."""
    big = _picture()
    truth, motion = _pan(big, 4, (2, -2), size=(320, 256), origin=(60, 200))
    small = [cv2.resize(f, (160, 128), interpolation=cv2.INTER_AREA) for f in truth]
    with pytest.raises(ValueError, match="resize_motion"):
        e_warp(small, motion)
    resized = [resize_motion(m, None, (160, 128))[0] for m in motion]
    np.testing.assert_allclose(resized[0], np.broadcast_to([1, -1], (128, 160, 2)))
    assert e_warp(small, resized) < 1e-6
    # The mask shrinks to pixels whose whole footprint was visible.
    seen = np.ones((256, 320), bool)
    seen[100:103, 50:51] = False
    _, small_seen = resize_motion(motion[0], seen, (160, 128))
    assert small_seen is not None and not small_seen[50:52, 25].any() and small_seen.sum() == 160 * 128 - 2


def test_a_scene_cut_pair_is_left_out():
    a, ma = _pan(_picture(), 3, (1, 0))
    b, mb = _pan(data.chelsea(), 3, (0, 1))
    clip, motion = a + b, ma + [np.zeros_like(ma[0])] + mb
    masks = [None, None, np.zeros(a[0].shape[:2], bool), None, None]
    errors = warp_errors(clip, motion, masks)
    assert math.isnan(errors[2]) and max(e for i, e in enumerate(errors) if i != 2) < 1e-6
    assert e_warp(clip, motion, masks) < 1e-6
    assert warp_error(clip[2], clip[3], motion[2]) > 10  # unmasked, the cut is a huge "flicker"


# --- tOF ---------------------------------------------------------------------------------


def test_tof_is_zero_on_identical_clips_and_grows_with_jitter():
    truth, motion = _pan(_picture(), 5, (2, 1), size=(192, 160))
    # The measured flow reads like the known motion: backward, on the later frame's grid.
    measured = optical_flow(truth[0], truth[1])[16:-16, 16:-16]
    np.testing.assert_allclose(np.median(measured.reshape(-1, 2), axis=0), motion[0][0, 0], atol=0.05)
    assert tof_pairs(truth, [f.copy() for f in truth]) == [0.0] * 4
    rng = np.random.default_rng(5)
    offsets = rng.uniform(-1, 1, (len(truth), 2))
    scores = [tof([_shifted(f, *(a * o)) for f, o in zip(truth, offsets)], truth) for a in (0.5, 1.0, 2.0)]
    assert 0.05 < scores[0] < scores[1] < scores[2], scores
    # The mean distance follows the jitter's own size: within 25% of |o[t+1] - o[t]|.
    want = float(np.mean(np.hypot(*np.diff(offsets, axis=0).T)))
    assert scores[1] == pytest.approx(want, rel=0.25)


# --- a clip's scores ---------------------------------------------------------------------


def test_clip_scorer_matches_the_functions_and_round_trips_json():
    truth, motion = _subpixel_pan(_picture(20, 230), 5, (0.5, 0.25), size=(128, 96))
    out = _noisy(truth, 3.0, seed=11)
    out[2] = truth[2]  # one frame exactly right: PSNR inf
    masks = [None, np.zeros((96, 128), bool), None, None]  # pair (1, 2) is a "cut"
    scorer = ClipScorer("pan", border=2)
    buffer = np.empty_like(out[0])
    for t in range(len(truth)):
        buffer[:] = out[t]  # the scorer must not keep the caller's buffer
        scorer.add(buffer, truth[t], *((motion[t - 1], masks[t - 1]) if t else ()))
    s = scorer.scores()
    assert s.frames == 5 and len(s.e_warp) == len(s.tof) == 4
    assert s.psnr_y[2] == math.inf and s.psnr_y[0] == psnr_y(out[0], truth[0], border=2)
    assert s.haarpsi[1] == haarpsi(out[1], truth[1], border=2) and s.ssim_y[2] == pytest.approx(1.0)
    np.testing.assert_array_equal(s.e_warp, warp_errors(out, motion, masks, border=2))
    np.testing.assert_array_equal(s.tof, tof_pairs(out, truth, masks, border=2))
    assert math.isnan(s.e_warp[1]) and math.isnan(s.flicker[1])
    mean = s.mean()
    assert mean["flicker"] == pytest.approx(flicker_ratio(out, truth, motion, masks, border=2), rel=1e-12)
    assert mean["flicker"] > 1.5 and mean["psnr_y"] == math.inf
    text = s.to_json()
    loaded = json.loads(text)
    assert loaded["per_frame"]["psnr_y"][2] == "inf" and loaded["per_pair"]["e_warp"][1] == "nan"
    assert loaded["mean"]["flicker"] == mean["flicker"]
    back = ClipScores.from_dict(loaded)
    assert back.to_json() == text
    with pytest.raises(ValueError, match="motion"):
        scorer.add(out[0], truth[0])
