"""vhsup train: the loop, resume, accumulation, checkpointing, guards, config, export.

Everything runs on the CPU with a tiny generator (SRVGGNetCompact with 8
features and 2 convs, saved as a user weights file), a narrow discriminator
(``d_feat`` 8), 32-px patches and a folder of small synthetic frames, so a
step takes tens of milliseconds. The perceptual path uses a VGG19 file with
random weights under torchvision's key names.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import mediagen
from vhsup import registry
from vhsup.arch import build
from vhsup.errors import VhsupError
from vhsup.train import checkpoint as ckpt
from vhsup.train.cli import train as train_cmd
from vhsup.train.config import config_toml, load_config, resolve
from vhsup.train.data import read_rgb8
from vhsup.train.recompute import enable_checkpointing
from vhsup.train.steps import Batch
from vhsup.train.trainer import Trainer
from vhsup.train.validate import MetricsLog

TINY = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4, act="prelu")


_draw_frame = mediagen.shapes_frame


def _write_frames(folder: Path, count: int, seed: int = 0, size=(48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), _draw_frame(rng, *size)[:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("traindata")
    frames = _write_frames(root / "frames", 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build("compact", dict(TINY))
    model = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(model))
    return {"root": root, "frames": frames, "model": model}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A VGG19 ``features`` file with random weights (the real one is 548 MB)."""
    from vhsup.train.perceptual import VGG19Features

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        vgg = VGG19Features(("conv5_4",))
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save({k: v.clone() for k, v in vgg.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory) -> Path:
    """A ResNet-18 trunk file with random convs and neutral BatchNorms."""
    from vhsup.train.perceptual import ResNet18Features

    g = torch.Generator().manual_seed(4)
    state = {}
    for key, shape in ResNet18Features.expected_shapes().items():
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith(("running_var", "weight")):
            state[key] = torch.ones(shape)
        else:
            state[key] = torch.zeros(shape)
    path = tmp_path_factory.mktemp("resnet") / "resnet18-random.pth"
    torch.save(state, path)
    return path


def _cfg(data, out: Path, **kw):
    values = dict(
        frames=str(data["frames"]),
        model=str(data["model"]),
        out=str(out),
        patch=32,
        batch=2,
        steps=4,
        perceptual="none",
        gan=False,
        val_every=0,
        save_every=1000,
        preset="none",
        quiet=True,
        tensorboard=False,
        ema=0.0,
        learning_rate=1e-3,
        d_feat=8,
    )
    values.update(kw)
    return resolve(None, values)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _snapshot(t: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, state in t._models().items():
        out.update({f"{name}.{k}": v.detach().clone() for k, v in state.items()})
    for name, opt in (("opt_G", t.opt_g), ("opt_D", t.opt_d)):
        if opt is not None:
            for i, st in opt.state_dict()["state"].items():
                out.update({f"{name}.{i}.{k}": v.clone() for k, v in st.items() if isinstance(v, torch.Tensor)})
    return out


# --- learning --------------------------------------------------------------------


@pytest.fixture(scope="module")
def learned_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("learn") / "run"
    notes: list[str] = []
    result = Trainer(_cfg(data, out, steps=30), notice=notes.append).run()
    return result, notes


def test_thirty_steps_lower_the_loss_and_beat_the_start(learned_run):
    result, notes = learned_run
    pixel = [s.losses["pixel"] for s in result.history]
    assert len(pixel) == 30 and all(math.isfinite(v) for v in pixel)
    assert np.mean(pixel[-5:]) < 0.85 * np.mean(pixel[:5])
    m = result.best_metrics
    # The held-out frame is never trained on; the EMA (decay 0 here) must beat the weights it started from.
    assert m["psnr_y"] > m["psnr_y_start"] + 1.0
    assert any("effective batch 2 = 2 per micro-batch x 1 accumulated x 1 process" in n for n in notes)
    records = MetricsLog.read(result.run_dir)
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 31))
    assert any(r["kind"] == "val" and r["step"] == 30 for r in records)


def test_best_weights_load_by_path_and_upscale_a_clip(learned_run, clips, tmp_path):
    from vhsup.pipeline import upscale_video

    result, _ = learned_run
    best = result.run_dir / "best.safetensors"
    state = load_file(str(best))
    # Canonical names: exactly the keys a fresh network of the same shape has.
    assert set(state) == set(build("compact", dict(TINY)).state_dict())
    loaded = registry.load_model(str(best))
    assert loaded.descriptor.scale == 4 and loaded.descriptor.arch == "compact"
    card = registry.read_sidecar_card(best)
    assert card is not None and card[0].training["steps"] == 30
    clip = clips.make("train_tiny.mkv", vcodec="ffv1", size=(64, 48), frames=3)
    r = upscale_video(clip.path, tmp_path / "up.mkv", model=str(best), preset="ultrafast", overwrite=True)
    assert r.frames_out == clip.frames
    assert (r.width, r.height) == (256, 192)


# --- resume ------------------------------------------------------------------------


def _run_cli(args: list[str]) -> str:
    res = CliRunner().invoke(train_cmd, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_resume_continues_bit_for_bit(data, resnet_file, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    _run_cli(
        [
            "--frames",
            str(data["frames"]),
            "--model",
            str(data["model"]),
            "--patch",
            "32",
            "--batch",
            "2",
            "--accumulate",
            "2",
            "--pixel-steps",
            "2",
            "--perceptual",
            "resnet18",
            "--perceptual-weights",
            str(resnet_file),
            "--d-feat",
            "8",
            "--tc-start",
            "3",
            "--tc-shift",
            "2",
            "--ema",
            "0.9",
            "--learning-rate",
            "1e-3",
            "--degradation",
            "generic",
            "--quiet",
            "--save-every",
            "100",
            "--out",
            str(whole),
            "--steps",
            "8",
            "--val-every",
            "0",
        ]
    )
    # The second run repeats the first from its resolved config.toml, stops
    # half way (validating and checkpointing there), then resumes.
    _run_cli(["--config", str(whole / "config.toml"), "--out", str(part), "--steps", "4", "--val-every", "4"])
    assert [s for s, _ in ckpt.list_checkpoints(part)] == [4]
    _run_cli(["--resume", str(part), "--steps", "8", "--quiet"])

    def train_records(run):
        return {r["step"]: r["values"] for r in MetricsLog.read(run) if r["kind"] == "train"}

    a, b = train_records(whole), train_records(part)
    assert sorted(b) == list(range(1, 9))
    for step in range(1, 9):
        assert a[step] == b[step], f"step {step}: {a[step]} != {b[step]}"
    # Both stages, the consistency loss and the discriminator really ran.
    assert set(a[1]) >= {"pixel"} and "gan" not in a[1]
    assert {"perceptual", "gan", "tc", "d_real", "d_fake"} <= set(a[8])
    models_a, other_a, meta_a = ckpt.load_checkpoint(ckpt.latest_checkpoint(whole))
    models_b, other_b, meta_b = ckpt.load_checkpoint(ckpt.latest_checkpoint(part))
    assert meta_a["step"] == meta_b["step"] == 8
    for name in ("G", "G_ema", "D"):
        assert _states_equal(models_a[name], models_b[name]), name
    assert _states_equal(other_a, other_b)  # optimiser moments, every RNG state, the data queue
    assert not _states_equal(models_a["G"], models_a["G_ema"])  # EMA 0.9 really lags


# --- accumulation and checkpointing -------------------------------------------------------


def test_accumulated_micro_batches_give_the_big_batch_gradient(data, tmp_path):
    common = dict(pixel_steps=0, gan=True, preset="generic")
    acc = Trainer(_cfg(data, tmp_path / "a", accumulate=4, batch=2, **common))
    big = Trainer(_cfg(data, tmp_path / "b", accumulate=1, batch=8, **common))
    assert _states_equal(acc.G.state_dict(), big.G.state_dict()) and _states_equal(
        acc.D.state_dict(), big.D.state_dict()
    )
    micro = acc.next_batches()
    assert len(micro) == 4 and micro[0].lr.shape == (2, 3, 8, 8)
    whole = Batch(lr=torch.cat([b.lr for b in micro]), hr=torch.cat([b.hr for b in micro]))
    sa = acc.train_step(micro)
    sb = big.train_step([whole])
    assert not sa.skipped and not sb.skipped
    # The generator (no batch statistics) to 1e-6. The discriminator's
    # gradient passes ten fp32 layers and a BCE, where summing 4 x 2 instead
    # of 8 alone moves it by ~1e-5 (float64 agrees to 1e-15); a real
    # accumulation error (a missing 1/4, a spectral-norm estimate moving per
    # micro-batch) is of order 1.
    for net_a, net_b, tol in ((acc.G, big.G, 1e-6), (acc.D, big.D, 1e-4)):
        for (name, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
            ga, gb = pa.grad, pb.grad
            assert ga is not None and gb.norm() > 0, name
            rel = float((ga - gb).norm() / gb.norm())
            assert rel <= tol, f"{name}: relative difference {rel:.2e}"
    for key in ("pixel", "gan", "d_real", "d_fake"):
        assert sa.losses[key] == pytest.approx(sb.losses[key], rel=1e-6)


def _saved_bytes(net, x) -> tuple[int, torch.Tensor]:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    return total, out


@pytest.mark.parametrize(
    "arch,hyper,size",
    [
        ("compact", TINY, 12),
        ("rrdbnet", dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=4, num_grow_ch=4), 8),
        ("srresnet", dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=3, upscale=4), 8),
        ("resunet", dict(num_in_ch=3, num_out_ch=3, upscale=2, channels=[4, 8, 8], blocks_per_stage=2), 16),
    ],
)
def test_activation_checkpointing_keeps_gradients_and_saves_memory(arch, hyper, size):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        plain = build(arch, dict(hyper)).train()
    ckpted = build(arch, dict(hyper)).train()
    ckpted.load_state_dict(plain.state_dict())
    keys = list(ckpted.state_dict())
    assert enable_checkpointing(ckpted) > 0
    assert list(ckpted.state_dict()) == keys  # saved weights keep their names
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    target = torch.rand(
        2,
        3,
        size * hyper.get("upscale", hyper.get("scale")),
        size * hyper.get("upscale", hyper.get("scale")),
        generator=torch.Generator().manual_seed(2),
    )
    bytes_plain, out_plain = _saved_bytes(plain, x)
    bytes_ckpt, out_ckpt = _saved_bytes(ckpted, x)
    assert bytes_ckpt < bytes_plain
    (out_plain - target).abs().mean().backward()
    (out_ckpt - target).abs().mean().backward()
    assert torch.equal(out_plain, out_ckpt)
    for (name, a), b in zip(plain.named_parameters(), ckpted.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-9, msg=name)
    # BatchNorm statistics count the batch once, not again in the recompute.
    assert _states_equal(plain.state_dict(), ckpted.state_dict())


# --- guards ----------------------------------------------------------------------------


def test_nan_guard_skips_the_step_and_names_the_loss(data, vgg_file, tmp_path):
    t = Trainer(
        _cfg(
            data,
            tmp_path / "nan",
            pixel_steps=0,
            gan=True,
            preset="generic",
            ema=0.5,
            perceptual="vgg19",
            perceptual_weights=str(vgg_file),
        )
    )
    clean = t.next_batches()
    t.train_step(clean)  # Adam and the discriminator get some state first
    before = _snapshot(t)
    hr = clean[0].hr.clone()
    hr[1, 0, 5, 7] = math.inf  # one bad pixel in one frame
    stats = t.train_step([t.make_batch(hr)])
    assert stats.skipped and stats.bad[0] == "pixel (l1)" and "perceptual (vgg19)" in stats.bad
    after = _snapshot(t)
    assert _states_equal(before, after)  # G, EMA, D and both optimisers untouched
    stats = t.train_step(t.next_batches())
    assert not stats.skipped
    assert not _states_equal(before, _snapshot(t))


def test_frames_smaller_than_the_patch_are_named_or_skipped(data, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(data["frames"], frames)
    cv2.imwrite(str(frames / "zz_small.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(VhsupError) as exc:
        Trainer(_cfg(data, tmp_path / "r1", frames=str(frames), val_frames=str(data["frames"])))
    assert "zz_small.png" in str(exc.value) and "30x20" in str(exc.value)
    notes: list[str] = []
    t = Trainer(
        _cfg(data, tmp_path / "r2", frames=str(frames), val_frames=str(data["frames"]), small="skip"),
        notice=notes.append,
    )
    assert len(t.frames) == 8
    assert any("skipped 1 of 9 frames" in n for n in notes)


def test_paired_size_mismatch_names_the_pair(data, tmp_path):
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir(), hr_dir.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        hr = _draw_frame(rng)
        cv2.imwrite(str(hr_dir / f"p{i}.png"), hr)
        lr = cv2.resize(hr, (16, 12), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(lr_dir / f"p{i}.png"), lr if i != 1 else lr[:, :15])
    with pytest.raises(VhsupError) as exc:
        Trainer(_cfg(data, tmp_path / "run", frames="", lr=str(lr_dir), hr=str(hr_dir), val_split=0.3))
    msg = str(exc.value)
    assert "p1.png" in msg and "15x12" in msg and "64x48" in msg


# --- images -------------------------------------------------------------------------------


def test_16bit_and_rgba_frames_are_converted_with_a_notice(data, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(data["frames"], frames)
    rgb = _draw_frame(np.random.default_rng(7))
    deep = rgb.astype(np.uint16) * 257 + 100  # 16-bit, not a plain 8-bit value scaled up
    cv2.imwrite(str(frames / "deep.png"), deep[:, :, ::-1])
    rgba = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 128, np.uint8)])
    cv2.imwrite(str(frames / "alpha.png"), rgba)
    assert read_rgb8(frames / "deep.png").tolist() == ((deep.astype(np.uint32) * 255 + 32767) // 65535).tolist()
    assert np.array_equal(read_rgb8(frames / "alpha.png"), rgb)
    notes: list[str] = []
    result = Trainer(
        _cfg(data, tmp_path / "run", frames=str(frames), steps=2, val_split=0.1), notice=notes.append
    ).run()
    conv = [n for n in notes if "converted" in n]
    assert (
        len(conv) == 1
        and "1 with 16-bit" in conv[0]
        and "1 with an alpha channel" in conv[0]
        and "of 10 files" in conv[0]
    )
    assert all(math.isfinite(s.losses["pixel"]) and not s.skipped for s in result.history)


def test_unreadable_frame_is_named(data, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(data["frames"], frames)
    (frames / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VhsupError) as exc:
        Trainer(_cfg(data, tmp_path / "run", frames=str(frames)))
    assert "broken.png" in str(exc.value)


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,key",
    [
        ("[train]\nlerning_rate = 1e-4\n", "train.lerning_rate"),
        ("[data]\npatch = -3\n", "data.patch"),
        ('[data]\nbatch = "four"\n', "data.batch"),
        ('[loss]\nperceptual = "alexnet"\n', "loss.perceptual"),
        ("[degradation.generic.first]\nblur_sigma = [3.0, 1.0]\n", "degradation.generic.first.blur_sigma"),
        ("[trian]\nsteps = 5\n", "[trian]"),
    ],
)
def test_config_errors_are_one_line_naming_file_and_key(data, tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = CliRunner().invoke(
        train_cmd, ["--config", str(path), "--frames", str(data["frames"]), "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vhsup: error: ")
    assert str(path) in lines[0] and key in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_file_of_another_architecture_is_refused_in_one_line(data, tmp_path):
    # upscale may run such a file through spandrel; train cannot rebuild it
    model = tmp_path / "other.pth"
    torch.save({"conv_1.sk.weight": torch.zeros(8, 3, 3, 3), "upsampler.0.weight": torch.zeros(12, 8, 3, 3)}, model)
    res = CliRunner().invoke(
        train_cmd, ["--frames", str(data["frames"]), "--model", str(model), "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(model) in lines[0]
    assert "vhsup train fine-tunes vhsup's own architectures only" in lines[0]
    assert not (tmp_path / "run").exists()


def test_flags_override_the_config_and_the_resolved_config_round_trips(data, tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(
        '[data]\nbatch = 2\nframes = "frames"\n[train]\nmilestones = [100, 200]\n'
        '[degradation]\npreset = "dvd"\n[degradation.mpeg2]\nprob = 0.25\n'
    )
    from_file = resolve(load_config(path), {}, config_path=path)
    assert from_file.batch == 2 and from_file.frames == str((tmp_path / "frames").resolve())
    assert from_file.degradation["preset"] == "dvd" and from_file.degradation["mpeg2"]["prob"] == 0.25
    cfg = resolve(load_config(path), {"batch": 3, "patch": 64}, config_path=path)
    assert (cfg.batch, cfg.patch, cfg.milestones) == (3, 64, [100, 200])
    with pytest.raises(VhsupError, match="--patch"):
        resolve(load_config(path), {"patch": 3}, config_path=path)
    saved = tmp_path / "saved.toml"
    saved.write_text(config_toml(cfg, header="test"))
    assert resolve(load_config(saved), {}, config_path=saved) == cfg


def test_resume_refuses_changed_settings(learned_run, tmp_path):
    result, _ = learned_run
    res = CliRunner().invoke(train_cmd, ["--resume", str(result.run_dir), "--patch", "64"])
    assert res.exit_code == 2 and "--patch cannot change when resuming" in res.output


def test_failed_or_interrupted_save_keeps_the_previous_checkpoint(tmp_path):
    good = {"w": torch.arange(6.0)}
    path = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.save_checkpoint(path, models={"G": good}, optimizers={}, extra_tensors={}, meta={"step": 1})
    before = path.read_bytes()
    with pytest.raises(ValueError):  # a save that fails leaves the old file as it was
        ckpt.save_checkpoint(
            path, models={"G": {"w": torch.zeros(6)}}, optimizers={}, extra_tensors={}, meta={"step": object()}
        )
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left
    # A process killed while writing step 2 leaves a truncated temp file beside it.
    step2 = ckpt.checkpoint_path(tmp_path, 2)
    ckpt.save_checkpoint(step2, models={"G": {"w": torch.ones(6)}}, optimizers={}, extra_tensors={}, meta={"step": 2})
    partial = step2.parent / ".step-00000003.x1y2.part.safetensors"
    partial.write_bytes(step2.read_bytes()[:40])
    assert ckpt.latest_checkpoint(tmp_path) == step2
    models, _other, meta = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert torch.equal(models["G"]["w"], torch.ones(6)) and meta["step"] == 2
    ckpt.prune_checkpoints(tmp_path, keep=1, best_step=1)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1, 2]  # the best one stays too


def test_show_degradations_writes_a_grid_and_trains_nothing(data, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        train_cmd,
        [
            "--frames",
            str(data["frames"]),
            "--model",
            str(data["model"]),
            "--out",
            str(out),
            "--show-degradations",
            "3",
            "--degradation",
            "vhs",
            "--patch",
            "32",
        ],
    )
    assert res.exit_code == 0, res.output
    png = out / "degradations.png"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] >= 32
    assert not (out / "checkpoints").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP training needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_trains_with_fp32_losses(data, tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    t = Trainer(
        _cfg(
            data,
            tmp_path / "run",
            steps=6,
            pixel_steps=2,
            gan=True,
            device="cuda",
            precision=precision,
            checkpointing=True,
        )
    )
    assert t.device.type == "cuda" and t.precision == precision
    assert t.scaler_g.is_enabled() == (precision == "fp16")
    result = t.run()
    done = [s for s in result.history if not s.skipped]
    # fp16 may skip an early step while the loss scale settles; most steps train.
    assert len(done) >= 4 and all(math.isfinite(v) for s in done for v in s.losses.values())
    assert math.isfinite(result.best_metrics["psnr_y"])
    assert registry.load_model(str(result.run_dir / "best.safetensors")).descriptor.scale == 4
