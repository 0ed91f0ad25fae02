"""bench/gpu_check.py (``make gpu-check``): its SMOKE run on the CPU, the
isolation of its steps and its time budget. The GPU figures themselves come
from a run on a GPU machine (bench/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _check(out: Path, *args: str, timeout: float = 500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_smoke_runs_every_step_and_records_what_it_measured(tmp_path):
    run = _check(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + (tmp_path / "steps.log").read_text()[-3000:]
    rows = _rows(tmp_path)
    status = {r["step"]: r["status"] for r in rows if r["kind"] == "status"}
    assert status == {s: "ok" for s in ("env", "engine", "e2e", "switched", "train", "tests", "onnx")}
    env = next(r for r in rows if r["kind"] == "env")
    import torch

    assert env["torch"] == torch.__version__ and env["switched_impl"] == "cpu"
    models = [r for r in rows if r["step"] == "engine" and r["kind"] == "model"]
    # Both models, fp32 and bf16 at batch 1 and auto; bf16 compared with fp32 on the same frames.
    assert {(r["model"], r["precision"], str(r["batch_asked"])) for r in models} == {
        (m, p, b) for m in ("compact-x4", "esrgan-x4") for p, b in (("fp32", "1"), ("bf16", "1"), ("bf16", "auto"))
    }
    for r in models:
        assert r["fps"] > 0 and r["frames"] >= 3
        if r["precision"] == "bf16":
            # bf16 rounds, so the frames differ a little, never wildly.
            assert 0 < r["max_diff_vs_fp32"] <= 64 and r["mean_diff_vs_fp32"] < 4
    bench = [r for r in rows if r["step"] == "e2e" and r["kind"] == "bench"]
    assert bench and all(
        r["frames"] == 4 and r["end_to_end_fps"] > 0 and r["output_size"] == "2880x1920" for r in bench
    )
    assert any(r["kind"] == "text" and "samples/s" in r["text"] for r in rows if r["step"] == "train")
    summary = (tmp_path / "summary.md").read_text()
    assert "| engine | ok |" in summary and "## e2e" in summary and summary in run.stdout


def test_a_step_that_dies_does_not_stop_the_next(tmp_path):
    run = _check(tmp_path, "--only", "env,onnx", "--fail-step", "env")
    assert run.returncode == 1
    status = {r["step"]: r["status"] for r in _rows(tmp_path) if r["kind"] == "status"}
    assert status["env"].startswith("failed (rc ") and status["onnx"] == "ok"
    assert "===== env: failed" in (tmp_path / "steps.log").read_text()


def test_the_budget_skips_what_is_left_and_says_so(tmp_path):
    run = _check(tmp_path, "--only", "env,engine,onnx", "--budget", "16")
    status = {r["step"]: r["status"] for r in _rows(tmp_path) if r["kind"] == "status"}
    assert status == {"env": "ok", "engine": "skipped", "onnx": "skipped"}
    assert run.returncode == 0 and "| engine | skipped (budget spent) |" in run.stdout


def test_an_unknown_step_is_named(tmp_path):
    run = _check(tmp_path, "--only", "env,warp")
    assert run.returncode == 2 and "unknown step(s) warp" in run.stdout
