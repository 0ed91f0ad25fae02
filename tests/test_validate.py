"""Validation metrics, the Validator, the metrics log and trained-model cards."""

from __future__ import annotations

import json
import math
import tomllib

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vhsup import registry
from vhsup.arch import build
from vhsup.cli import main
from vhsup.errors import VhsupError
from vhsup.train.card import dump_toml, write_model_card
from vhsup.train.validate import MetricsLog, Validator, psnr_y, ssim_y


def _photos() -> list[np.ndarray]:
    """Two real photographs, cropped small (HR side of the pairs)."""
    return [data.astronaut()[40:136, 150:278].copy(), data.coffee()[100:196, 200:328].copy()]


def _degraded(rgb: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(rgb, (5, 5), 1.1).astype(np.float64)
    return np.clip(blurred + rng.normal(0, 6, rgb.shape), 0, 255).round().astype(np.uint8)


def _pairs(scale: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for hr in _photos():
        h, w = hr.shape[:2]
        out.append((cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_AREA), hr))
    return out


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return t[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _forward(module: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return _to_uint8(module(x))


# --- metrics ---------------------------------------------------------------------


@pytest.mark.parametrize("border", [0, 4])
def test_metrics_match_skimage_on_real_photos(border):
    for seed, photo in enumerate([data.astronaut()[:160, :200], data.coffee()[:150, :210], data.chelsea()[:120, :180]]):
        noisy = _degraded(photo, seed)
        # skimage's own BT.601 conversion is the independent reference for the luma.
        ya, yb = (color.rgb2ycbcr(p)[..., 0] for p in (photo, noisy))
        if border:
            ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
        want_p = peak_signal_noise_ratio(ya, yb, data_range=255)
        want_s = structural_similarity(
            ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        # Asked for within 1e-3; the implementation agrees to float rounding, so hold it to that.
        assert abs(psnr_y(photo, noisy, border=border) - want_p) < 1e-6
        assert abs(ssim_y(photo, noisy, border=border) - want_s) < 1e-6
    photo = data.astronaut()[:64, :64]
    assert psnr_y(photo, photo) == math.inf and ssim_y(photo, photo) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        psnr_y(photo, photo[:32])


# --- the validator -----------------------------------------------------------------


class HalfwayToTruth(torch.nn.Module):
    """A stand-in generator that knows the answer: half bicubic, half the true HR.

    It looks its input up among the validation LR frames, so it only works
    on whole frames (tile=0), which is how the test runs it.
    """

    def __init__(self, pairs, scale):
        super().__init__()
        self.scale = scale
        self.known = [
            (torch.from_numpy(lr).permute(2, 0, 1).float() / 255, torch.from_numpy(hr).permute(2, 0, 1).float() / 255)
            for lr, hr in pairs
        ]

    def forward(self, x):
        outs = []
        for item in x:
            hr = next(h for lr, h in self.known if lr.shape == item.shape and torch.equal(lr, item))
            bic = F.interpolate(item[None], scale_factor=self.scale, mode="bicubic", align_corners=False)[0]
            outs.append((bic + hr) / 2)
        return torch.stack(outs)


def test_validator_scores_bicubic_as_baseline_and_a_better_model_higher():
    pairs = _pairs(2)
    bicubic = registry.load_model("bicubic-x2").module
    lanczos = registry.load_model("lanczos-x2").module
    v = Validator(pairs, 2, tile=0, start_model=lanczos)
    # The baselines, computed independently of the engine.
    want_bic = np.mean([psnr_y(_forward(bicubic, lr), hr, border=2) for lr, hr in pairs])
    want_start = np.mean([psnr_y(_forward(lanczos, lr), hr, border=2) for lr, hr in pairs])
    assert abs(v.baseline["psnr_y_bicubic"] - want_bic) < 1e-6
    assert abs(v.baseline["psnr_y_start"] - want_start) < 0.01

    same = v.evaluate(bicubic)
    assert set(same) == {"psnr_y", "ssim", "psnr_y_bicubic", "ssim_bicubic", "psnr_y_start", "ssim_start"}
    assert abs(same["psnr_y"] - same["psnr_y_bicubic"]) < 0.01
    assert abs(same["ssim"] - same["ssim_bicubic"]) < 1e-4
    better = v.evaluate(HalfwayToTruth(pairs, 2))
    assert better["psnr_y"] > same["psnr_y"] + 3 and better["ssim"] > same["ssim"]
    assert "psnr_y_start" not in Validator(pairs[:1], 2, tile=0).evaluate(bicubic)


def _compact(num_feat=8, num_conv=2, upscale=2, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build(
            "compact",
            {
                "num_in_ch": 3,
                "num_out_ch": 3,
                "num_feat": num_feat,
                "num_conv": num_conv,
                "upscale": upscale,
                "act": "prelu",
            },
        )
        for p in net.parameters():  # a net that changes the picture, not near-identity
            p.data.add_(torch.randn_like(p) * 0.05)
    return net


def test_validation_leaves_the_training_module_as_it_was(tmp_path):
    net = _compact()
    net.train()
    net.body[1].eval()  # a submodule with its own flag must keep it
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    before = {
        n: (p.data_ptr(), p.stride(), p.dtype, p.device, p.requires_grad, p.clone()) for n, p in net.named_parameters()
    }
    flags = {n: m.training for n, m in net.named_modules()}
    pairs = _pairs(2)
    whole = Validator(pairs, 2, tile=0).evaluate(net)
    tiled = Validator(pairs, 2, tile=16).evaluate(net)
    Validator(pairs, 2).grid(net, tmp_path / "g.png", count=1)
    assert {n: m.training for n, m in net.named_modules()} == flags
    for n, p in net.named_parameters():
        ptr, stride, dtype, device, grad_flag, value = before[n]
        assert (p.data_ptr(), p.stride(), p.dtype, p.device, p.requires_grad) == (ptr, stride, dtype, device, grad_flag)
        assert torch.equal(p, value) and torch.equal(p.grad, torch.ones_like(p))
    # The tile context the validator chose for this network makes tiling invisible.
    assert abs(whole["psnr_y"] - tiled["psnr_y"]) < 0.01
    # And the score is the network's own (eval-mode forward, uint8 output).
    want = np.mean([psnr_y(_forward(net.eval(), lr), hr, border=2) for lr, hr in pairs])
    assert abs(whole["psnr_y"] - want) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_validation_on_the_gpu_scores_as_on_the_cpu_and_leaves_the_module_there():
    pairs = _pairs(2)
    net = _compact(seed=1)
    cpu = Validator(pairs, 2, tile=0).evaluate(net)
    net = net.cuda().train()
    benchmark = torch.backends.cudnn.benchmark
    for device, tile in (("cuda", "auto"), ("cuda", 16), ("cpu", 0)):  # cpu: the net stays on the GPU and is fed there
        got = Validator(pairs, 2, device=device, tile=tile).evaluate(net)
        assert abs(got["psnr_y"] - cpu["psnr_y"]) < 0.05 and abs(got["ssim"] - cpu["ssim"]) < 1e-3
        assert all(p.is_cuda for p in net.parameters()) and net.training
    assert torch.backends.cudnn.benchmark == benchmark


def test_grid_has_lr_start_current_hr_columns(tmp_path):
    pairs = _pairs(2)
    net = _compact(seed=3).eval()
    lanczos = registry.load_model("lanczos-x2").module
    v = Validator(pairs, 2, tile=0, start_model=lanczos)
    path = v.grid(net, tmp_path / "grid.png", count=5)
    png = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    _canvas, boxes = v.compose_grid(net, count=5)
    assert len(boxes) == 2  # only two pairs
    for (lr, hr), row in zip(pairs, boxes):
        assert list(row) == ["lr", "start", "current", "hr"]
        xs = [row[k][0] for k in row]
        assert xs == sorted(xs) and all(
            b[0] - a[0] >= hr.shape[1] for a, b in zip(row.values(), list(row.values())[1:])
        )
        cells = {k: png[y : y + h, x : x + w] for k, (x, y, w, h) in row.items()}
        assert all(c.shape == hr.shape for c in cells.values())
        assert np.array_equal(cells["hr"], hr)
        assert np.array_equal(cells["lr"], np.repeat(np.repeat(lr, 2, axis=0), 2, axis=1))
        assert np.abs(cells["current"].astype(int) - _forward(net, lr)).max() <= 1
        assert np.abs(cells["start"].astype(int) - _forward(lanczos, lr)).max() <= 1


# --- metrics log ---------------------------------------------------------------------


def test_metrics_log_appends_across_runs_and_drops_what_a_resume_redoes(tmp_path):
    with MetricsLog(tmp_path) as log:
        log.log(1, {"l1": 0.5, "gan": torch.tensor(float("nan"))})
        log.log(2, {"psnr_y": 24.0}, kind="val")
        log.log(3, {"l1": 0.25})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "kind": "tra')  # a crash mid-line
    log = MetricsLog(tmp_path, tensorboard=True, resume_step=2)
    log.log(3, {"l1": 0.125})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is strict JSON
    assert [(r["step"], r["kind"]) for r in records] == [(1, "train"), (2, "val"), (3, "train")]
    assert records[0]["values"] == {"l1": 0.5, "gan": "nan"} and math.isnan(float(records[0]["values"]["gan"]))
    assert records[2]["values"] == {"l1": 0.125} and records[2]["time"] >= records[0]["time"]
    assert MetricsLog.read(tmp_path) == records


def test_metrics_log_without_tensorboard_is_silent(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorboard is installed here")
    log = MetricsLog(tmp_path, tensorboard=True)
    log.log(0, {"x": 1.0})
    log.close()
    assert not log.tensorboard and not (tmp_path / "tensorboard").exists()


# --- the model card -------------------------------------------------------------------


def _trained_file(tmp_path):
    net = _compact(num_feat=16, num_conv=4, upscale=4, seed=5)
    run = tmp_path / "goodeats"
    run.mkdir()
    weights = run / "best.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
    hyper = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 16, "num_conv": 4, "upscale": 4, "act": "prelu"}
    metrics = {"psnr_y": 27.5, "ssim": 0.81, "psnr_y_bicubic": 26.0, "ssim_bicubic": 0.77, "step": 1200}
    # Laid out as the trainer's resolved config.toml: [run], [data], [degradation].
    config = {
        "run": {"model": "compact-x4", "steps": 5000, "seed": 7, "resume": None},
        "data": {"mode": "synthetic", "frames": "frames/", "lr": "", "hr": ""},
        "degradation": {"preset": "vhs", "noise": [1.0, 2.5]},
    }
    card = write_model_card(
        weights,
        arch="compact",
        hyper=hyper,
        scale=4,
        base="compact-x4",
        description="Good Eats DVD fine-tune",
        metrics=metrics,
        config=config,
    )
    return net, weights, card


def test_card_is_used_by_load_model_and_models_info(tmp_path):
    net, weights, card_path = _trained_file(tmp_path)
    assert card_path == weights.with_suffix(".toml")
    c = tomllib.loads(card_path.read_text())
    assert (c["name"], c["arch"], c["scale"], c["context"]) == ("goodeats", "compact", 4, 6)
    assert c["params"] == sum(p.numel() for p in net.parameters())
    assert c["licence"] == "BSD-3-Clause (derived from compact-x4)"
    assert c["attribution"][:-1] == list(registry.card("compact-x4").attribution)
    assert c["attribution"][-1] == "fine-tuned with vhsup train on frames/"
    t = c["training"]
    assert (t["base"], t["steps"], t["mode"], t["degradation"]) == ("compact-x4", 1200, "synthetic", "vhs")
    assert t["metrics"]["psnr_y"] == 27.5 and t["config"]["degradation"]["noise"] == [1.0, 2.5]

    # The card, not the file name, names the model; its context is used.
    c_text = card_path.read_text().replace("context = 6", "context = 30")
    card_path.write_text(c_text)
    m = registry.load_model(str(weights))
    assert (m.descriptor.name, m.descriptor.context, m.descriptor.scale) == ("goodeats", 30, 4)
    assert m.descriptor.licence == "BSD-3-Clause (derived from compact-x4)"
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(m.module(x), net.eval()(x))

    r = CliRunner().invoke(main, ["models", "info", str(weights), "--json"])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["name"], info["context"], info["arch"], info["scale"]) == ("goodeats", 30, "compact", 4)
    assert info["card"] == str(card_path) and info["training"]["steps"] == 1200 and info["training"]["psnr_y"] == 27.5
    assert info["hyper"]["num_conv"] == 4 and len(info["file_sha256"]) == 64
    assert set(info) >= set(json.loads(CliRunner().invoke(main, ["models", "info", "compact-x4", "--json"]).stdout))
    r = CliRunner().invoke(main, ["models", "info", str(weights)])
    assert r.exit_code == 0 and "goodeats" in r.stdout and "derived from compact-x4" in r.stdout

    # Without the card the file loads as before, named after itself.
    card_path.unlink()
    d = registry.load_model(str(weights)).descriptor
    assert (d.name, d.context, d.licence) == ("best", 6, "unknown (user file)")
    info = json.loads(CliRunner().invoke(main, ["models", "info", str(weights), "--json"]).stdout)
    assert info["name"] == "best" and info["card"] is None and info["hyper"]["num_feat"] == 16


@pytest.mark.parametrize(
    "edit, words",
    [
        (("scale = 4", "scale = 2"), "scale 2"),
        (('arch = "compact"', 'arch = "rrdbnet"'), "arch 'rrdbnet'"),
        (("num_conv = 4", "num_conv = 5"), "hyper.num_conv"),
    ],
)
def test_card_that_contradicts_the_weights_is_refused(tmp_path, edit, words):
    _net, weights, card_path = _trained_file(tmp_path)
    text = card_path.read_text()
    assert edit[0] in text
    card_path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(VhsupError, match="disagrees with the weights") as err:
        registry.load_model(str(weights))
    assert words in str(err.value) and err.value.path == str(card_path)
    r = CliRunner().invoke(main, ["models", "info", str(weights)])
    assert r.exit_code == 2
    assert r.stderr.startswith(f"vhsup: error: {card_path}: model card disagrees") and r.stderr.count("\n") == 1


def test_from_scratch_and_cardless_bases_do_not_claim_a_licence(tmp_path):
    weights = tmp_path / "r" / "best.safetensors"
    weights.parent.mkdir()
    hyper = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_conv": 1, "upscale": 2, "act": "prelu"}
    kw = {
        "arch": "compact",
        "hyper": hyper,
        "scale": 2,
        "description": "",
        "metrics": {},
        "config": {"from_scratch": True},
    }
    c = tomllib.loads(write_model_card(weights, base="compact-x4", **kw).read_text())
    assert c["licence"].startswith("unspecified") and c["attribution"][-1].startswith("trained from scratch")
    kw["config"] = {"data": {"frames": "", "lr": "frames/lr", "hr": "frames/hr"}}
    c = tomllib.loads(write_model_card(weights, base="mine.pth", **kw).read_text())
    assert c["licence"].startswith("unknown (derived from mine.pth")
    assert c["attribution"] == ["base weights: mine.pth", "fine-tuned with vhsup train on frames/hr"]
    with pytest.raises(ValueError, match="x4"):
        write_model_card(weights, base="compact-x4", **{**kw, "scale": 4})


def test_toml_writer_round_trips():
    d = {
        "name": 'odd "name"\\ \x7f \U0001f4fc',
        "n": 3,
        "f": 0.1,
        "inf": math.inf,
        "b": False,
        "list": [1, 2.5, "x"],
        "long": ["a" * 60, "b\nc" * 20, "d"],
        "t": {"a": 1, "deep": {"k y": "v"}, "arr": [{"p": 1}]},
        "empty": {},
    }
    back = tomllib.loads(dump_toml(d))
    assert back == d
