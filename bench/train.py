"""Training throughput (samples/s) of `vhsup train`'s loop on this machine.

    .venv/bin/python bench/train.py [--models compact-x4,esrgan-x4] [--steps 3] [--batch 2]
                                    [--stages pixel,gan] [--threads 2] [--device cpu]
                                    [--perceptual-weights vgg19.pth] [--checkpointing]

Each model trains from random initialisation (the cost does not depend on
the values) on synthetic 320x320 frames with 64-px LR patches (256-px HR for
x4), through the real Trainer: data sampling, the Degrader ("generic"
preset), forward, losses, backward, Adam, EMA. One warm-up step, then
``--steps`` timed steps (2). Stages: "pixel" (L1 only) and "gan" (L1 +
adversarial against the 64-feature U-Net discriminator, plus VGG19
perceptual when ``--perceptual-weights`` is given). Prints one markdown
table line per (model, stage).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vhsup.train.config import resolve
from vhsup.train.trainer import Trainer


def _frames(folder: Path, count: int = 6, size: int = 320) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        img = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"f{i}.png"), img)
    return folder


def _bench(model: str, stage: str, args, frames: Path, out: Path) -> dict:
    lr_patch = 64
    from vhsup import registry

    scale = registry.card(model).scale
    gan = stage == "gan"
    cfg = resolve(
        None,
        dict(
            frames=str(frames),
            model=model,
            from_scratch=True,
            out=str(out),
            patch=lr_patch * scale,
            batch=args.batch,
            steps=10**6,
            pixel_steps=0 if gan else 10**6,
            gan=gan,
            quiet=True,
            tensorboard=False,
            perceptual="vgg19" if (gan and args.perceptual_weights) else "none",
            perceptual_weights=args.perceptual_weights or "",
            preset="generic",
            device=args.device,
            checkpointing=args.checkpointing,
            val_split=0.2,
        ),
    )
    t = Trainer(cfg, notice=lambda m: None)
    sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)
    t.train_step(t.next_batches())  # warm-up: allocations, kernel choice
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        t.train_step(t.next_batches())
    sync()
    seconds = time.perf_counter() - start
    samples = args.steps * args.batch
    losses = "+".join(["l1"] + (["vgg19"] if t.perceptual is not None else []) + (["gan"] if t.D is not None else []))
    return {
        "model": model,
        "stage": stage,
        "losses": losses,
        "batch": args.batch,
        "hr_patch": cfg.patch,
        "s_per_step": seconds / args.steps,
        "samples_per_s": samples / seconds,
        "device": str(t.device),
        "precision": t.precision,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="compact-x4,esrgan-x4")
    p.add_argument("--stages", default="pixel,gan")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--perceptual-weights", default="")
    p.add_argument("--checkpointing", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | stage (losses) | batch | HR patch | device | precision | s/step | samples/s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        frames = _frames(Path(tmp) / "frames")
        for model in args.models.split(","):
            for stage in args.stages.split(","):
                r = _bench(model, stage, args, frames, Path(tmp) / f"run-{model}-{stage}")
                print(
                    f"| {r['model']} | {r['stage']} ({r['losses']}) | {r['batch']} | {r['hr_patch']} | "
                    f"{r['device']} | {r['precision']} | {r['s_per_step']:.2f} | {r['samples_per_s']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
