"""vhsup train with switched convolutions: switched-x4 from scratch, and --switched.

Everything is tiny and on the CPU: a SwitchedSR with 8 features, 2 blocks and
breadth 4, or a 3-conv SRVGGNetCompact converted at breadth 4, 32-px patches
and a handful of synthetic frames. The DDP check runs two gloo processes
through torch's real launcher.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
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
from vhsup.arch.switched import SwitchedConv2d, SwitchNormBufferWarning, switched_layers
from vhsup.train import checkpoint as ckpt
from vhsup.train.cli import train as train_cmd
from vhsup.train.config import resolve
from vhsup.train.trainer import DUMP_ENV, Trainer
from vhsup.train.validate import MetricsLog

TINY_SR = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, breadth=4, scale=4)
TINY_COMPACT = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=4, act="prelu")
TRUNK = ["body.2", "body.4", "body.6"]  # the compact's convs between the first and the upsampling one


def _frames(folder: Path, count: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), mediagen.shapes_frame(rng))
    return folder


def _save(arch: str, hyper: dict, path: Path, seed: int = 0, correction: float = 1.0) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build(arch, dict(hyper))
    if correction != 1.0:
        with torch.no_grad():
            net.conv_last.weight.mul_(correction)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: a second intra-op thread only adds contention
    (on a busy 2-core machine it makes each step many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("swdata")
    return {
        "frames": _frames(root / "frames", 6),
        # SwitchedSR starts close to the bilinear upscale on purpose; this one
        # starts with a strong random correction, so training has a clear way down.
        "sr": _save("switchedsr", TINY_SR, root / "tiny_switchedsr.safetensors", correction=50.0),
        "compact": _save("compact", TINY_COMPACT, root / "tiny_compact.safetensors"),
    }


def _cfg(data, out: Path, **kw):
    values = dict(
        frames=str(data["frames"]),
        model=str(data["compact"]),
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
        val_split=0.2,
        switched=True,
        switched_breadth=4,
    )
    values.update(kw)
    return resolve(None, values)


def _one_line_error(args: list[str]) -> str:
    res = CliRunner().invoke(train_cmd, args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vhsup: error: "), res.output
    return lines[0]


# --- switched-x4 ---------------------------------------------------------------------------


def test_switchedsr_trains_validates_and_its_best_file_upscales_a_clip(data, clips, tmp_path):
    from vhsup.pipeline import upscale_video

    result = Trainer(
        _cfg(data, tmp_path / "run", model=str(data["sr"]), switched=False, steps=16, batch=4, learning_rate=2e-3),
        notice=lambda m: None,
    ).run()
    pixel = [s.losses["pixel"] for s in result.history]
    assert len(pixel) == 16 and all(math.isfinite(v) for v in pixel)
    assert np.mean(pixel[-4:]) < np.mean(pixel[:4])
    # Validation ran the network through the engine: the held-out error fell well below the start's.
    m = result.best_metrics
    assert m["step"] == 16 and m["psnr_y"] > m["psnr_y_start"] + 0.5

    best = result.run_dir / "best.safetensors"
    state = load_file(str(best))
    # The switch-norm history is saved: one push per training forward of each switched layer.
    assert int(state["body.0.conv1.norm.count"]) == 16
    assert float(state["body.1.conv2.norm.history"][:16].abs().sum()) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwitchNormBufferWarning)
        loaded = registry.load_model(str(best))
    assert loaded.descriptor.arch == "switchedsr" and loaded.descriptor.scale == 4
    norm = loaded.module.body[1].conv2.norm
    assert torch.equal(norm.history, state["body.1.conv2.norm.history"])
    clip = clips.make("switched_tiny.mkv", vcodec="ffv1", size=(64, 48), frames=3)
    r = upscale_video(clip.path, tmp_path / "up.mkv", model=str(best), preset="ultrafast", overwrite=True)
    assert r.frames_out == clip.frames and (r.width, r.height) == (256, 192)


# --- --switched ----------------------------------------------------------------------------


def test_conversion_keeps_the_output_and_converts_the_trunk(data, tmp_path):
    notes: list[str] = []
    t = Trainer(_cfg(data, tmp_path / "run"), notice=notes.append)
    assert t.switched_names == TRUNK
    layers = dict(switched_layers(t.G))
    assert sorted(layers) == TRUNK and all(m.breadth == 4 for m in layers.values())
    assert not isinstance(t.G.body[0], SwitchedConv2d) and not isinstance(t.G.body[8], SwitchedConv2d)
    plain = registry.load_model(str(data["compact"])).module.float().eval()
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = plain(x)
        assert (t.G.eval()(x) - ref).abs().max().item() < 1e-5  # eval: switch norm still empty
        assert (t.G.train()(x) - ref).abs().max().item() < 1e-5  # training: records usage, then routes
    t.G.load_state_dict(t.ema.state_dict())  # undo the push of the training-mode forward
    # The validation at step 0: the converted EMA scores what the plain start scores.
    t.validator = t._make_validator()
    m = t.validator.evaluate(t.ema)
    assert abs(m["psnr_y"] - m["psnr_y_start"]) < 1e-6
    t._intro()
    assert any("3 convs now hold 4 kernels" in n and "body.2, body.4, body.6" in n for n in notes)

    chosen = Trainer(_cfg(data, tmp_path / "run2", switched_layers="body.4, body.8"), notice=lambda m: None)
    assert chosen.switched_names == ["body.4", "body.8"]
    assert chosen.hyper["switched"] == {"breadth": 4, "layers": ["body.4", "body.8"]}


def test_switched_run_diverges_the_copies_and_resumes_bit_for_bit(data, clips, tmp_path):
    from vhsup.pipeline import upscale_video

    whole, part = tmp_path / "whole", tmp_path / "part"
    args = [
        "--frames",
        str(data["frames"]),
        "--model",
        str(data["compact"]),
        "--switched",
        "--switched-breadth",
        "4",
        "--patch",
        "32",
        "--batch",
        "2",
        "--accumulate",
        "2",
        "--no-gan",
        "--no-perceptual",
        "--ema",
        "0.5",
        "--learning-rate",
        "2e-3",
        "--degradation",
        "none",
        "--val-split",
        "0.2",
        "--save-every",
        "100",
        "--quiet",
        "--val-every",
        "0",
    ]
    for run_args in (
        ["--out", str(whole), "--steps", "6"],
        ["--out", str(part), "--steps", "3"],
        ["--resume", str(part), "--steps", "6", "--quiet"],
    ):
        full = run_args if run_args[0] == "--resume" else args + run_args
        res = CliRunner().invoke(train_cmd, full, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    assert [s for s, _ in ckpt.list_checkpoints(part)] == [3, 6]

    def train_records(run):
        return {r["step"]: r["values"] for r in MetricsLog.read(run) if r["kind"] == "train"}

    a, b = train_records(whole), train_records(part)
    assert sorted(b) == list(range(1, 7)) and all(a[s] == b[s] for s in range(1, 7))
    ma, _o, meta = ckpt.load_checkpoint(ckpt.latest_checkpoint(whole))
    mb, _o, _m = ckpt.load_checkpoint(ckpt.latest_checkpoint(part))
    for name in ("G", "G_ema"):
        assert ma[name].keys() == mb[name].keys()
        assert "body.2.norm.history" in ma[name]  # the switch-norm history is checkpointed
        different = [k for k in ma[name] if not torch.equal(ma[name][k], mb[name][k])]
        assert not different, different[:5]
    assert meta["hyper"]["switched"] == {"breadth": 4, "layers": TRUNK}

    g = ma["G"]
    start = load_file(str(data["compact"]))
    for name in TRUNK:
        w = g[f"{name}.weight"]
        # Each copy only learns from the pixels routed to it: the copies are no longer the same kernel.
        assert any(not torch.equal(w[0], w[e]) for e in range(1, 4)), name
        assert not torch.equal(w[0], start[f"{name}.weight"])
        assert int(g[f"{name}.norm.count"]) == 12  # 6 steps x 2 micro-batches

    best = whole / "best.safetensors"
    card = registry.read_sidecar_card(best)
    assert card is not None and card[0].hyper["switched"] == {"breadth": 4, "layers": TRUNK}
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwitchNormBufferWarning)
        loaded = registry.load_model(str(best))
    assert loaded.descriptor.arch == "compact"
    assert [n for n, _ in switched_layers(loaded.module)] == TRUNK
    clip = clips.make("switched_compact.mkv", vcodec="ffv1", size=(64, 48), frames=2)
    r = upscale_video(clip.path, tmp_path / "up.mkv", model=str(best), preset="ultrafast", overwrite=True)
    assert r.frames_out == clip.frames and (r.width, r.height) == (256, 192)


@pytest.mark.parametrize("tc", [False, True])
def test_activation_checkpointing_routes_switched_convs_as_without_it(data, tmp_path, tc):
    # The recompute must replay the switch norm's history as it was, neither
    # recording usage again nor seeing the consistency loss's later forward.
    extra = dict(tc_start=0, tc_shift=2) if tc else {}
    runs = [
        Trainer(_cfg(data, tmp_path / f"r{c}", steps=3, checkpointing=c, **extra), notice=lambda m: None)
        for c in (False, True)
    ]
    for t in runs:
        t.run()
    plain, ckpted = (t.G.state_dict() for t in runs)
    assert [s.losses for s in runs[0].history] == [s.losses for s in runs[1].history]
    assert not [k for k in plain if not torch.equal(plain[k], ckpted[k])]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--switched", "--switched-layers", "body.2,trunk.*"], "--switched-layers 'trunk.*' matches no conv"),
        (["--switched", "--switched-layers", "body.1"], "'body.1' matches no conv"),  # the PReLU, not a conv
        (["--switched-layers", "body.2"], "add --switched"),
        (["--switched", "--switched-breadth", "1"], "--switched-breadth"),
        (["--switched", "--model", "SR"], "built from switched convs already"),
    ],
)
def test_bad_switched_settings_are_one_line_errors(data, tmp_path, extra, needle):
    if "SR" in extra:
        extra = [str(data["sr"]) if a == "SR" else a for a in extra]
    else:
        extra = ["--model", str(data["compact"]), *extra]
    line = _one_line_error(
        [
            "--frames",
            str(data["frames"]),
            "--out",
            str(tmp_path / "run"),
            "--patch",
            "32",
            "--no-gan",
            "--quiet",
            *extra,
        ]
    )
    assert needle in line
    assert not (tmp_path / "run").exists()


def test_switched_keys_in_the_config_file_are_validated(data, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[run]\nswitched = true\nswitched_breadth = 1000\n")
    line = _one_line_error(["--config", str(path), "--frames", str(data["frames"]), "--out", str(tmp_path / "r")])
    assert str(path) in line and "run.switched_breadth" in line
    path.write_text('[train]\nswitched = "yes"\n')
    line = _one_line_error(["--config", str(path), "--frames", str(data["frames"]), "--out", str(tmp_path / "r")])
    assert "belongs in the [run] table" in line


# --- DDP -------------------------------------------------------------------------------------


def _command() -> list[str]:
    from vhsup.cli import main

    return ["-m", "vhsup", "train"] if "train" in main.commands else ["-m", "vhsup.train.cli"]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is needed",
)
def test_two_processes_keep_identical_switch_norm_history(data, tmp_path):
    out, dump = tmp_path / "run", tmp_path / "dump"
    env = {**os.environ, DUMP_ENV: str(dump), "OMP_NUM_THREADS": "1"}
    # Accumulation (no_sync), the consistency loss (a second forward before
    # backward) and activation checkpointing (a recomputed forward inside
    # backward) all run the switch norms; every process must end up with the
    # same history, and the same weights.
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *_command(),
        "--frames",
        str(data["frames"]),
        "--model",
        str(data["compact"]),
        "--switched",
        "--switched-breadth",
        "4",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--steps",
        "3",
        "--batch",
        "2",
        "--accumulate",
        "2",
        "--patch",
        "32",
        "--no-gan",
        "--no-perceptual",
        "--tc-start",
        "1",
        "--tc-shift",
        "2",
        "--checkpointing",
        "--ema",
        "0.5",
        "--degradation",
        "generic",
        "--val-split",
        "0.2",
        "--learning-rate",
        "1e-3",
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 convs now hold 4 kernels" in proc.stderr

    rank0, rank1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    histories = [k for k in rank0 if k.startswith("G.") and k.endswith("norm.history")]
    assert len(histories) == 3
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not different, different[:5]
    assert int(rank0["G.body.2.norm.count"]) > 0 and float(rank0["G.body.2.norm.history"].abs().sum()) > 0
    models, _other, meta = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))
    assert meta["world"] == 2
    for name in ("G", "G_ema"):
        for k, v in models[name].items():
            assert torch.equal(v, rank0[f"{name}.{k}"]), f"{name}.{k}"
