"""The architecture specs (vhsup.arch.SPECS): every spec recognises what it
builds, and the engine's tiles honour every spec's context and size multiple."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vhsup import registry
from vhsup.arch import SPECS, build, spec_named, spec_of
from vhsup.engine import SREngine
from vhsup.registry import LoadedModel
from vhsup.weights.detect import detect

pytestmark = pytest.mark.usefixtures("two_threads")

# A small network of every architecture (a new spec needs an entry here).
TINY = {
    "mesrgan": {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "scale": 4,
        "num_feat": 4,
        "num_block": 1,
        "num_grow_ch": 2,
        "expand_ratio": 2,
    },
    "rrdbnet": {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 4, "num_block": 1, "num_grow_ch": 2},
    "srresnet": {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_block": 3, "upscale": 2},
    # Two stride-2 stages at x2: tiles must start on even input pixels.
    "resunet": {"num_in_ch": 3, "num_out_ch": 3, "upscale": 2, "channels": [3, 4, 5], "blocks_per_stage": 1},
    "switchedsr": {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_block": 3, "breadth": 2, "scale": 2},
    "compact": {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_conv": 10, "upscale": 2, "act": "prelu"},
    "classical": {"kind": "lanczos", "scale": 3},
}
NAMES = [s.name for s in SPECS]


def test_every_spec_has_a_tiny_network_here():
    assert sorted(TINY) == sorted(NAMES)


def randomised(name: str, seed: int) -> torch.nn.Module:
    """A fresh network (random weights, random BatchNorm statistics) in eval
    mode, so that a wrongly tiled or wrongly loaded tensor shows."""
    torch.manual_seed(seed)
    net = build(name, TINY[name])
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() >= 4:  # He-scaled kernels (5-D: a switched conv's bank): far pixels still matter
                p.normal_(0, (2 / (p[0].numel() if p.dim() == 4 else p[0, 0].numel())) ** 0.5)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_spec_recognises_what_it_builds(spec):
    hyper = TINY[spec.name]
    net = randomised(spec.name, seed=1)
    assert spec_of(net) is spec
    if spec.weightless:
        assert spec.hyper_of(net) == hyper
    else:
        assert detect(net.state_dict()) == (spec.name, hyper)
    x = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        y = net(x)
    s = spec.scale(hyper)
    assert y.shape == (1, 3, 8 * s, 12 * s)


def loaded(name: str, tmp_path) -> LoadedModel:
    """The tiny network as a user's model arrives (through a weights file),
    so that the descriptor the engine tiles by comes from the spec."""
    hyper = TINY[name]
    if spec_named(name).weightless:
        return registry.load_model(f"{hyper['kind']}-x{hyper['scale']}")
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in randomised(name, seed=2).state_dict().items()}, path)
    return registry.load_model(str(path))


TILE = 40


def tile_error(model: LoadedModel) -> int:
    """Max |tiled - whole| (in 1/255) over a frame whose tiles are really
    cut out of it, top to bottom (its height > tile + 2 * context), and whose
    odd size is padded up to the size multiple."""
    d = model.descriptor
    h, w = 2 * d.context + 2 * TILE + 1, TILE + 27
    frame = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
    whole = SREngine(model, device="cpu", precision="fp32", tile=0).upscale([frame])[0]
    tiled = SREngine(model, device="cpu", precision="fp32", tile=TILE).upscale([frame])[0]
    assert whole.shape == (h * d.scale, w * d.scale, 3) and whole.std() > 5
    return int(np.abs(tiled.astype(int) - whole).max())


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_tiles_with_the_spec_context_equal_the_whole_frame(spec, tmp_path):
    model = loaded(spec.name, tmp_path)
    d, hyper = model.descriptor, TINY[spec.name]
    assert (d.arch, d.context, d.size_multiple) == (spec.name, spec.context(hyper), spec.size_multiple(hyper))
    assert tile_error(model) <= 1


@pytest.mark.parametrize(
    "name, wrong",
    [
        ("srresnet", {"context": 0}),  # the engine's floor of 8 px is below its reach
        ("resunet", {"size_multiple": 1}),  # tiles off the stride-2 grid
    ],
)
def test_tiles_without_the_spec_context_or_multiple_show_seams(name, wrong, tmp_path):
    model = loaded(name, tmp_path)
    assert tile_error(LoadedModel(model.module, dataclasses.replace(model.descriptor, **wrong))) > 3


class _Widest(TorchDispatchMode):
    """The most elements any operation's result held, every aten op seen."""

    def __init__(self):
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.most = max(self.most, t.numel())
        return out


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_widest_tensor_of_the_spec_is_the_largest_a_real_forward_makes(spec):
    """The engine keeps ``batch * crop * widest`` under 2**31 elements: the
    spec's count (module inputs and outputs, on the meta device) must be the
    largest tensor a real forward makes, every operation's result seen."""
    hyper = TINY[spec.name]
    size = 16 * spec.size_multiple(hyper)
    seen = _Widest()
    with torch.no_grad(), seen:
        randomised(spec.name, seed=4)(torch.rand(1, 3, size, size))
    assert spec.widest(hyper) == seen.most / size**2 > 0


def test_widest_tensor_of_a_loaded_model_is_in_its_descriptor(tmp_path):
    model = loaded("rrdbnet", tmp_path)
    # RRDBNet's last upsampling: num_feat channels at the output size.
    assert model.descriptor.widest_per_px == TINY["rrdbnet"]["num_feat"] * 4**2
    assert registry.load_model("bicubic-x3").descriptor.widest_per_px == 3 * 3**2
