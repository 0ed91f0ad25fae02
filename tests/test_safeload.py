"""Loading users' model files: hostile, damaged and wrapped ones."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from vhsup.errors import VhsupError
from vhsup.weights.safeload import load_state_dict_file


class CreatesFile:
    """Unpickling this opens a file for writing, i.e. runs code."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def small_state():
    torch.manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4)}


def test_payload_is_real(tmp_path):
    # Proves the payload below would run under a plain unpickler, so the
    # refusal tests are meaningful.
    target = tmp_path / "ran"
    pickle.loads(pickle.dumps({"w": CreatesFile(target)}))
    assert target.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    payload = {"params_ema": {"conv.weight": torch.zeros(1), "x": CreatesFile(target)}}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        with open(evil, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(VhsupError, match="refused") as err:
        load_state_dict_file(evil)
    assert str(evil) in str(err.value)
    assert "\n" not in str(err.value)
    assert not target.exists()


def test_refusal_names_the_callable(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save(CreatesFile(tmp_path / "x"), evil)
    with pytest.raises(VhsupError, match=r"open"):
        load_state_dict_file(evil)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_error_names_the_file(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save(small_state(), path)
    else:
        save_file(small_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VhsupError) as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value)
    assert "corrupt" in str(err.value) or "truncated" in str(err.value)


def test_garbage_and_empty_and_missing(tmp_path):
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
    with pytest.raises(VhsupError, match="g.pt"):
        load_state_dict_file(garbage)
    empty = tmp_path / "e.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(VhsupError, match="empty"):
        load_state_dict_file(empty)
    with pytest.raises(VhsupError, match="not found") as err:
        load_state_dict_file(tmp_path / "missing.pth")
    assert "missing.pth" in str(err.value)
    with pytest.raises(VhsupError, match="unsupported model file type"):
        load_state_dict_file(tmp_path / "model.onnx")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}},
        lambda sd: {"params": sd},
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"model": {f"netG.{k}": v for k, v in sd.items()}, "optimizer": {"lr": torch.tensor(1e-4)}},
        lambda sd: {"model_state_dict": sd, "step": 10},
        lambda sd: {"generator": sd},
    ],
    ids=[
        "plain",
        "params_ema-preferred",
        "params",
        "state_dict",
        "module-prefix",
        "model-netG-prefix",
        "model_state_dict",
        "single-named-dict",
    ],
)
def test_unwraps_checkpoints(tmp_path, wrap):
    sd = small_state()
    path = tmp_path / "m.pth"
    torch.save(wrap(sd), path)
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_safetensors_round_trip_keeps_dtype(tmp_path):
    sd = {k: v.half() for k, v in small_state().items()}
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    loaded = load_state_dict_file(path)
    assert all(loaded[k].dtype == torch.float16 and torch.equal(loaded[k], sd[k]) for k in sd)


def test_file_without_tensors(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(VhsupError, match="no weight tensors"):
        load_state_dict_file(path)
