"""Per-model cost on this machine: params, MACs per input pixel, CPU ms per 64x64 tile.

    .venv/bin/python bench/models.py [--threads 2] [--repeat 3]

Every named model with a card is timed in one run, so the ratios between
rows are fair; models without published weights are timed with random
weights (the cost does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import time

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in registry.model_names():
        card = registry.card(name)
        module = _module(name).eval().to(memory_format=torch.channels_last)
        x = torch.rand(1, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            module(x)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                module(x)
            ms = (time.perf_counter() - t0) / args.repeat * 1000
        rows.append({"name": name, "arch": card.get("arch"), "params": card.get("params", 0),
                     "mmac_per_px": round(card.get("macs_per_px", 0) / 1e6, 3),
                     f"cpu_ms_per_{args.size}px_tile": round(ms, 1)})
    print(json.dumps({"threads": args.threads, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print()
    key = f"cpu_ms_per_{args.size}px_tile"
    print(f"| model | arch | params | MMAC/px | CPU ms per {args.size}x{args.size} |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['arch']} | {r['params']:,} | {r['mmac_per_px']} | {r[key]} |")


if __name__ == "__main__":
    main()
