"""Options declared once: every command offers them alike, and one rule says which change the output.

The option sets are read the way a user reaches them: the click commands
parse an empty command line (defaults after their parsers), the Python API
is :class:`Options`. The settings keys are the real ones a chunked run and
a batch library store.
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from vhsup.batch.cli import run_cmd
from vhsup.batch.manifest import settings_hash
from vhsup.batch.runner import UPSCALE_OPTIONS, BatchConfig, resolve_settings
from vhsup.chunked import _settings_key
from vhsup.cli import bench, probe, upscale
from vhsup.options import Options
from vhsup.train.cli_extract import extract
from vhsup.train.extract import MEDIA_OPTIONS

API = {f.name: f.default for f in fields(Options)}

# Upscale flags that batch does not offer, and why.
UPSCALE_ONLY = {
    "file": "one input; a batch takes a folder (SRC)",
    "output": "one output file; a batch mirrors SRC under --out",
    "start": "a time range of one video; a library is upscaled whole",
    "duration": "a time range of one video; a library is upscaled whole",
    "frames": "a time range of one video; a library is upscaled whole",
    "compare": "one side-by-side still of one run; a library has many outputs",
    "workers": "chunks of one video in processes; a batch has --jobs and --chunk-minutes",
}
# Batch flags that upscale does not offer, and why: they are about the library and its workers.
BATCH_ONLY = {
    "src",
    "out_dir",
    "ext",
    "jobs",
    "retries",
    "include",
    "exclude",
    "engine",
    "address",
    "gpus_per_task",
    "cpus_per_task",
    "chunk_minutes",
}
# Flags of both that are about the command line, not the upscale.
CLI_ONLY = {"file", "output", "workers", "quiet", "as_json", "debug"}
# Options of the Python API with no flag: tuning for programs that embed vhsup.
API_ONLY = {"decode_threads": "decoder threads", "queue": "frames held between the pipeline's threads"}


def parsed(command, *args: str) -> dict:
    """The values a command gets from this command line: defaults after their parsers."""
    with command.make_context(command.name or "cmd", list(args)) as ctx:
        return dict(ctx.params)


def test_upscale_batch_and_the_api_take_the_same_options_with_the_same_defaults():
    up = parsed(upscale, "in.mkv")
    batch = parsed(run_cmd, "tapes", "--out", "hd")
    assert set(up) - set(UPSCALE_ONLY) == set(batch) - BATCH_ONLY
    for name in set(up) & set(batch):
        assert up[name] == batch[name], name
    # Every option of the API is an upscale flag, with the same default.
    assert set(API) - set(API_ONLY) == set(up) - CLI_ONLY
    for name in set(API) - set(API_ONLY):
        assert up[name] == API[name], name
    # batch passes every upscale option it offers to its jobs; its --overwrite is its own (files in OUT it did
    # not write), so it is not passed on.
    assert set(batch) & set(API) == set(UPSCALE_OPTIONS) | {"overwrite"}


@pytest.mark.parametrize(
    "command, args, own",
    [
        (probe, ["in.mkv"], {"file", "as_json", "debug"}),
        (bench, ["in.mkv"], {"file", "as_json", "debug", "frames"}),  # bench --frames: frames to time, default 8
    ],
)
def test_probe_and_bench_take_upscale_options_with_upscale_defaults(command, args, own):
    values = parsed(command, *args)
    assert set(values) - own <= set(API)
    for name in set(values) - own:
        assert values[name] == API[name], name
    assert values.get("frames", 8) == 8


def test_extract_offers_the_media_options_with_upscale_defaults():
    values = parsed(extract, "in.mkv", "--out", "frames")
    media = set(values) & set(API) - {"overwrite"}  # extract --overwrite: the frames folder's
    assert media == {"deinterlace", "field_order", "ivtc", "force_ivtc", "crop"}
    assert media <= set(MEDIA_OPTIONS)
    assert {name: values[name] for name in media} == {name: API[name] for name in media}


# A value other than the default for every option (a new option must be added here).
OTHER = {
    "model": "lanczos-x2",
    "backend": "onnx",
    "device": "cpu",
    "precision": "fp32",
    "tile": 64,
    "batch": 2,
    "deinterlace": "on",
    "field_rate": "double",
    "field_order": "bff",
    "qtgmc_preset": "fast",
    "ivtc": True,
    "force_ivtc": True,
    "crop": "8,0,8,0",
    "temporal": "strong",
    "restore": "vhs",
    "denoise": "medium",
    "dedot": True,
    "derainbow": True,
    "chroma_shift": "auto",
    "detail": 0.5,
    "width": 640,
    "height": 480,
    "codec": "libx265",
    "crf": 20,
    "preset": "fast",
    "pix_fmt": "yuv420p10le",
    "start": 1.0,
    "duration": 2.0,
    "frames": 5,
    "compare": "still.png",
    "overwrite": True,
    "allow_download": True,
    "decode_threads": 2,
    "queue": 4,
}
# The options that do not change what a run writes, and why (vhsup/options.py has the rule).
SAME_OUTPUT = {
    "device": "one model at one precision gives the same pixels on CPU and GPU up to rounding",
    "tile": "tiles overlap by the model's reach: the result matches whole frames within 1/255",
    "batch": "frames per forward pass change nothing per frame",
    "compare": "a separate still; the video is the same",
    "overwrite": "whether an existing file may be replaced",
    "allow_download": "where the weights come from, not which",
    "decode_threads": "decoder speed",
    "queue": "memory between threads",
}
BASE = {"model": "bicubic-x2"}


def _batch_hash(options: dict, ext: str = "mkv") -> str:
    return settings_hash(resolve_settings(BatchConfig(src="tapes", out="hd", options=options, ext=ext))[1])


def test_chunked_runs_and_batch_libraries_redo_work_for_the_same_changes(tmp_path):
    assert set(OTHER) == set(API)
    src = tmp_path / "tape.mkv"
    src.write_bytes(b"\x1aE\xdf\xa3 the key reads only the size and time of the input")
    chunk_base, batch_base = _settings_key(src, Options(**BASE), "matroska"), _batch_hash(BASE)
    verdicts = {}
    for name, value in OTHER.items():
        changed = {**BASE, name: value}
        chunk = _settings_key(src, Options(**changed), "matroska") != chunk_base
        batch = _batch_hash(changed) != batch_base
        verdicts[name] = (chunk, batch)
    assert verdicts == {name: (name not in SAME_OUTPUT,) * 2 for name in OTHER}


def test_batch_settings_hashes_of_finished_libraries_still_match():
    """Hashes written by vhsup before the options had one declaration: where the rule stayed, so does the hash."""
    assert _batch_hash({"model": "bicubic-x2"}) == "614a5f0270916112"
    assert _batch_hash({"model": "bicubic-x2"}, ext="mp4") == "0748cfb084b6144f"
    assert (
        _batch_hash(
            {
                "model": "lanczos-x3",
                "height": 1080,
                "crop": "8,0,8,0",
                "codec": "libx265",
                "crf": 20,
                "preset": "slow",
                "pix_fmt": "yuv420p10le",
                "deinterlace": "on",
                "field_rate": "double",
                "ivtc": False,
            }
        )
        == "c241e040b58e5299"
    )
    assert (
        _batch_hash({"model": "bicubic-x2", "field_order": "bff", "force_ivtc": True, "ivtc": True})
        == "220d8508d596753e"
    )
    # tile, batch, device and downloads never counted, and still do not; default precision and backend neither.
    assert (
        _batch_hash(
            {
                "model": "bicubic-x2",
                "tile": 128,
                "batch": 2,
                "device": "cpu",
                "precision": "auto",
                "backend": "torch",
                "allow_download": True,
            }
        )
        == "614a5f0270916112"
    )


def test_train_help_states_the_default_a_run_gets():
    """Each train flag's help shows the value a run without it uses (the config's declared default)."""
    from vhsup.train.cli import train
    from vhsup.train.config import FIELDS, resolve

    cfg = resolve()  # no config file, no flags
    ctx = train.make_context("train", [])
    checked = []
    for param in train.params:
        if param.name not in FIELDS or isinstance(getattr(cfg, param.name), bool | list):
            continue
        value = getattr(cfg, param.name)
        if value == "":
            continue  # unset: the help says what that means, e.g. --model's device default
        help_text = param.get_help_record(ctx)[1]
        assert f"[default: {value:g}]" in help_text if isinstance(value, float) else f"[default: {value}]" in help_text
        checked.append(param.name)
    assert {"steps", "batch", "patch", "learning_rate", "ema", "switched_breadth", "d_feat", "val_split"} <= set(
        checked
    )
