"""``vhsup bench``: the model-only timing leaves out one-off costs (TensorRT
builds, cuDNN autotuning, allocations) by warming up at the batch it then
times, and times several batches; ``--json`` is one clean JSON object that
says what ran."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vhsup.bench import TIMED_BATCHES
from vhsup.cli import main

pytestmark = pytest.mark.usefixtures("two_threads")


def bench(*args: str) -> dict:
    r = CliRunner().invoke(main, ["bench", *args, "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.stderr or r.output
    return json.loads(r.stdout)  # stdout holds the JSON object and nothing else


def test_warm_up_runs_at_the_real_batch_and_at_least_three_batches_are_timed(mp4_clip):
    # Two decoded frames at batch 2: one batch's worth, so the frames are timed again in turn.
    res = bench(str(mp4_clip.path), "--model", "bicubic", "--batch", "2", "--frames", "2", "--preset", "ultrafast")
    assert res["frames"] == 2 and res["batch"] == 2
    assert res["warmup_batch"] == 2  # not one frame: TensorRT would build again for the real batch
    assert res["timed_batches"] >= TIMED_BATCHES == 3
    assert res["timed_frames"] == 6
    assert res["fp32_convs"] == "ieee" and res["notices"] == []
    assert res["model_only_fps"] > 0 and res["end_to_end_over_model_time"] > 0


def test_tiles_count_as_batches_and_onnxruntime_names_its_providers(mp4_clip):
    # 160x120 in tiles of 32: many tiles a frame, batches of 4 tiles.
    res = bench(
        str(mp4_clip.path),
        *("--model", "compact-x4", "--backend", "onnx", "--tile", "32", "--batch", "4", "--frames", "1"),
        *("--preset", "ultrafast", "--temporal", "off"),
    )
    assert res["tile"] == 32 and res["warmup_batch"] == 4
    assert res["timed_batches"] >= TIMED_BATCHES
    assert res["providers"] == ["CPUExecutionProvider"] and res["backend"] == "onnx"


def test_each_stage_is_timed_alone_and_the_slowest_is_named_with_advice(mp4_clip):
    res = bench(
        str(mp4_clip.path), "--model", "bicubic", "--frames", "4", "--temporal", "light", "--preset", "ultrafast"
    )
    stages = res["stage_fps"]
    assert set(stages) == {"decode", "model", "stabilise", "encode"} and all(v > 0 for v in stages.values())
    assert stages["model"] == res["model_only_fps"]
    slowest = res["slowest_stage"]
    assert stages[slowest] == min(stages.values())
    assert res["advice"].startswith(f"{slowest.replace('stabilise', 'stabiliser')}-bound: ")
    # The stages run side by side in a real run: it cannot beat the slowest by much.
    assert 0 < res["end_to_end_over_slowest_stage"] < 1.5
    off = bench(str(mp4_clip.path), "--model", "bicubic", "--frames", "4", "--preset", "ultrafast")
    assert "stabilise" not in off["stage_fps"] and off["temporal"] == "off"


def test_a_slow_encoder_preset_is_what_the_encode_stage_measures(mp4_clip):
    args = (str(mp4_clip.path), "--model", "bicubic", "--frames", "6", "--temporal", "off", "--codec", "libx264")
    fast = bench(*args, "--preset", "ultrafast")["stage_fps"]["encode"]
    slow = bench(*args, "--preset", "veryslow")["stage_fps"]["encode"]
    assert slow < fast


def test_the_restore_stages_are_timed_within_decode(mp4_clip):
    # bench takes the restore options, so a user sees what QTGMC or a denoiser costs.
    res = bench(
        str(mp4_clip.path), "--model", "bicubic", "--frames", "3", "--preset", "ultrafast", "--denoise", "light"
    )
    assert res["stage_fps"]["decode"] > 0 and res["denoise"] in ("light (atadenoise)", "light (mvtools)")
    if res["denoise"] == "light (atadenoise)":  # without the restore extra, as in this venv: said so
        assert any("--denoise light: using FFmpeg's atadenoise" in n for n in res["notices"])
