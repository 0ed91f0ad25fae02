"""vhsup train under torchrun: two CPU processes (gloo) keep identical weights.

The job runs through torch's real launcher (``python -m torch.distributed.run``),
with gradient accumulation (``no_sync`` on the first micro-batch), the GAN
stage (DDP discriminator), the translational consistency loss (a second
forward of the DDP generator before backward) and a generator with
BatchNorm buffers (a tiny SRResNet), whose running statistics each process
updates from its own data. ``VHSUP_TRAIN_DUMP`` makes every process write
its final G, EMA and D; they must be equal bit for bit, and equal to what
process 0 put in the checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vhsup.arch import build
from vhsup.train import checkpoint as ckpt
from vhsup.train.trainer import DUMP_ENV
from vhsup.train.validate import MetricsLog


def _command() -> list[str]:
    """``-m vhsup train`` once the command is registered in vhsup.cli."""
    from vhsup.cli import main

    return ["-m", "vhsup", "train"] if "train" in main.commands else ["-m", "vhsup.train.cli"]


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is needed",
)
def test_two_processes_keep_identical_weights(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(3)
    for i in range(9):
        img = np.zeros((48, 48, 3), np.uint8)
        img[:] = rng.integers(30, 220, 3)
        cv2.circle(
            img,
            tuple(int(v) for v in rng.integers(8, 40, 2)),
            int(rng.integers(4, 12)),
            tuple(int(v) for v in rng.integers(0, 256, 3)),
            2,
        )
        cv2.imwrite(str(frames / f"f{i}.png"), img)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build("srresnet", dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4))
    model = tmp_path / "tiny_srresnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(model))
    out, dump = tmp_path / "run", tmp_path / "dump"
    env = {**os.environ, DUMP_ENV: str(dump), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *_command(),
        "--frames",
        str(frames),
        "--model",
        str(model),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--steps",
        "4",
        "--pixel-steps",
        "1",
        "--batch",
        "2",
        "--accumulate",
        "2",
        "--patch",
        "32",
        "--no-perceptual",
        "--d-feat",
        "8",
        "--tc-start",
        "2",
        "--tc-shift",
        "2",
        "--ema",
        "0.5",
        "--degradation",
        "generic",
        "--val-split",
        "0.1",
        "--learning-rate",
        "1e-3",
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "effective batch 8 = 2 per micro-batch x 2 accumulated x 2 processes" in proc.stderr

    rank0, rank1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    assert any(k.startswith("G.") and "running_mean" in k for k in rank0)  # BatchNorm buffers are compared too
    different = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not different, different[:5]
    # Training moved the weights, and the checkpoint holds what the processes hold.
    assert not torch.equal(rank0["G.conv_first.weight"], net.state_dict()["conv_first.weight"])
    models, _other, meta = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))
    assert meta["step"] == 4 and meta["world"] == 2
    for name in ("G", "G_ema", "D"):
        for k, v in models[name].items():
            assert torch.equal(v, rank0[f"{name}.{k}"]), f"{name}.{k}"
    # Only process 0 logged: one record per step.
    steps = [r["step"] for r in MetricsLog.read(out) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert (out / "best.safetensors").is_file() and not list(Path(out).glob("*rank1*"))
