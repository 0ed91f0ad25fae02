"""Per-model cost on this machine: params, MACs per input pixel, CPU ms per 64x64 tile.

    .venv/bin/python bench/models.py [--threads 2] [--repeat 3]
    .venv-extras/bin/python bench/models.py --community

Every named model with a card is timed in one run, so the ratios between
rows are fair; models without published weights are timed with random
weights (the cost does not depend on the values). ``--community`` adds
architectures that load through spandrel, at their published sizes, saved
to a file and loaded the way ``--model FILE`` loads them (needs the
community extra).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vhsup import registry


def _module(name: str) -> torch.nn.Module:
    try:
        return registry.load_model(name).module
    except Exception:  # noqa: BLE001 - weightless names: build an untrained instance
        build = getattr(registry, "build_model", None)
        if build is None:
            raise
        return build(name).module


def _community_nets() -> dict[str, torch.nn.Module]:
    """Published configurations of a few popular community architectures."""
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    return {
        "SPAN x4 (48 ch)": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4),
        "OmniSR x4 (64 ch)": OmniSR(num_in_ch=3, num_out_ch=3, num_feat=64, up_scale=4),
        "SwinIR-M x4 (classical)": SwinIR(
            img_size=64,
            window_size=8,
            embed_dim=180,
            depths=[6] * 6,
            num_heads=[6] * 6,
            mlp_ratio=2,
            upscale=4,
            upsampler="pixelshuffle",
            resi_connection="1conv",
        ),
    }


def _time(module: torch.nn.Module, size: int, repeat: int) -> float:
    module = module.eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        module(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeat):
            module(x)
    return (time.perf_counter() - t0) / repeat * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--community", action="store_true", help="also time spandrel architectures")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in registry.model_names():
        card = registry.card(name)
        ms = _time(_module(name), args.size, args.repeat)
        rows.append(
            {
                "name": name,
                "arch": card.arch,
                "params": card.params,
                "mmac_per_px": round(card.macs_per_px / 1e6, 3),
                f"cpu_ms_per_{args.size}px_tile": round(ms, 1),
            }
        )
    if args.community:
        with tempfile.TemporaryDirectory() as tmp:
            for label, net in _community_nets().items():
                path = Path(tmp) / "model.pth"
                torch.save(net.state_dict(), path)
                loaded = registry.load_model(str(path))  # as --model FILE: spandrel builds it
                d = loaded.descriptor
                rows.append(
                    {
                        "name": label,
                        "arch": f"{d.arch} (spandrel)",
                        "params": d.params,
                        "mmac_per_px": round(d.macs_per_px / 1e6, 3),
                        f"cpu_ms_per_{args.size}px_tile": round(_time(loaded.module, args.size, args.repeat), 1),
                    }
                )
    print(json.dumps({"threads": args.threads, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print()
    key = f"cpu_ms_per_{args.size}px_tile"
    print(f"| model | arch | params | MMAC/px | CPU ms per {args.size}x{args.size} |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['arch']} | {r['params']:,} | {r['mmac_per_px']} | {r[key]} |")


if __name__ == "__main__":
    main()
