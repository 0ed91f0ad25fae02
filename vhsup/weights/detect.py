"""Tell which network a state dict belongs to, and with which sizes.

Checkpoints carry no architecture description, only key names and tensor
shapes, so detection reads both: the key set picks the architecture and the
shapes give the hyperparameters. The old ESRGAN layout (``model.0``,
``model.1.sub.N.RDB1.conv1.0``, ...) is renamed to Real-ESRGAN's first, so
everything after detection sees one naming.
"""

from __future__ import annotations

import math
import os
import re

import torch

from ..errors import VhsupError

_RRDB_KEYS = ("conv_first.weight", "conv_body.weight", "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.weight")
_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_BODY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


def _unknown(path, detail: str) -> VhsupError:
    return VhsupError(f"not a model vhsup knows: {detail}", path)


def is_old_esrgan(state_dict: dict) -> bool:
    return "model.0.weight" in state_dict and any(k.startswith("model.1.sub.") for k in state_dict)


def convert_old_esrgan(state_dict: dict[str, torch.Tensor], path=None) -> dict[str, torch.Tensor]:
    """Rename the original ESRGAN layout to Real-ESRGAN's RRDBNet names.

    In the old layout ``model`` is a Sequential: 0 conv_first, 1 a shortcut
    block whose ``sub`` holds the RRDBs and then conv_body, then for x4
    upsample/conv/lrelu twice (convs at 3 and 6), conv_hr at 8, conv_last at
    10. Only x4 exists in RRDBNet's fixed layout, so other scales are refused.
    """
    rdbs = {m.group(1) for k in state_dict if (m := _OLD_RDB.match(k))}
    body_idx = [int(m.group(1)) for k in state_dict if (m := _OLD_BODY.match(k))]
    tops = sorted({int(m.group(1)) for k in state_dict if (m := _OLD_TOP.match(k))} - {0})
    if not rdbs or len(set(body_idx)) != 1:
        raise _unknown(path, "old ESRGAN layout without RRDB blocks and one trunk conv")
    num_block = len(rdbs)
    if set(map(int, rdbs)) != set(range(num_block)) or body_idx[0] != num_block:
        raise _unknown(path, "old ESRGAN layout with gaps in its RRDB numbering")
    if len(tops) != 4:
        n_up = max(len(tops) - 2, 0)
        raise VhsupError(f"old-style ESRGAN model with {n_up} upsampling convs (scale {2**n_up}) is not supported; only x4", path)
    names = dict(zip(tops, ("conv_up1", "conv_up2", "conv_hr", "conv_last")))
    names[0] = "conv_first"
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if m := _OLD_RDB.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif m := _OLD_BODY.match(key):
            out[f"conv_body.{m.group(2)}"] = value
        elif (m := _OLD_TOP.match(key)) and int(m.group(1)) in names:
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = value
        else:
            raise _unknown(path, f"unexpected key {key!r} in an old ESRGAN layout")
    return out


def canonical(state_dict: dict[str, torch.Tensor], path=None) -> dict[str, torch.Tensor]:
    """The state dict under Real-ESRGAN's key names (old ESRGAN renamed)."""
    return convert_old_esrgan(state_dict, path) if is_old_esrgan(state_dict) else state_dict


def _detect_rrdbnet(sd: dict[str, torch.Tensor], path) -> dict:
    first = sd["conv_first.weight"]
    last = sd["conv_last.weight"]
    if first.ndim != 4 or last.ndim != 4:
        raise _unknown(path, "conv_first/conv_last are not conv weights")
    num_feat, in_first = first.shape[0], first.shape[1]
    num_out_ch = last.shape[0]
    # Real-ESRGAN x2/x1 fold the picture into channels with pixel-unshuffle,
    # so conv_first sees 4x or 16x the picture's channels; the output side
    # tells how many channels the picture has.
    if in_first == 16 * num_out_ch:
        scale, num_in_ch = 1, in_first // 16
    elif in_first == 4 * num_out_ch:
        scale, num_in_ch = 2, in_first // 4
    else:
        scale, num_in_ch = 4, in_first
    if any(k.startswith("conv_up3") for k in sd):
        raise VhsupError("RRDBNet with a third upsampling conv (x8) is not supported", path)
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("body.")}
    if not blocks or blocks != set(range(len(blocks))):
        raise _unknown(path, "RRDBNet keys without a contiguous body.N numbering")
    grow = sd.get("body.0.rdb1.conv1.weight")
    if grow is None:
        raise _unknown(path, "RRDBNet keys without body.0.rdb1.conv1")
    return {
        "num_in_ch": int(num_in_ch),
        "num_out_ch": int(num_out_ch),
        "scale": scale,
        "num_feat": int(num_feat),
        "num_block": len(blocks),
        "num_grow_ch": int(grow.shape[0]),
    }


def _detect_compact(sd: dict[str, torch.Tensor], path) -> dict:
    index = {}
    for key, value in sd.items():
        m = _BODY.match(key)
        if not m:
            raise _unknown(path, f"unexpected key {key!r} beside body.N layers")
        if m.group(2) == "weight":
            index[int(m.group(1))] = value
    convs = sorted(i for i, w in index.items() if w.ndim == 4)
    slopes = sorted(i for i, w in index.items() if w.ndim == 1)
    n = len(convs)
    if n < 2 or convs != list(range(0, 2 * n, 2)):
        raise _unknown(path, "body.N convs are not at body.0, body.2, ...")
    if not slopes:
        # ReLU and LeakyReLU leave no weights, so they cannot be told apart.
        raise _unknown(path, "Compact model without PReLU weights (activation cannot be determined)")
    if slopes != list(range(1, 2 * n - 2, 2)):
        raise _unknown(path, "PReLU weights are not at body.1, body.3, ...")
    first, last = index[0], index[convs[-1]]
    num_in_ch, num_feat = int(first.shape[1]), int(first.shape[0])
    # The checkpoints do not record the output channels separately from the
    # shuffle factor; like Real-ESRGAN, take the output to have as many
    # channels as the input.
    ratio = last.shape[0] / num_in_ch
    upscale = math.isqrt(int(ratio)) if ratio == int(ratio) else 0
    if upscale < 1 or upscale * upscale != ratio:
        raise _unknown(path, f"last conv has {last.shape[0]} outputs, not {num_in_ch} x a square")
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_in_ch,
        "num_feat": num_feat,
        "num_conv": n - 2,
        "upscale": upscale,
        "act": "prelu",
    }


def detect(state_dict: dict[str, torch.Tensor], path: str | os.PathLike[str] | None = None) -> tuple[str, dict]:
    """Return ``(arch, hyperparameters)`` for a state dict.

    ``arch`` is 'rrdbnet' or 'compact'; the hyperparameters are the
    constructor arguments of that module. Old ESRGAN keys are accepted (pass
    the dict through :func:`canonical` before loading it into the module).
    ``path`` only names the file in errors.
    """
    sd = canonical(state_dict, path)
    if all(k in sd for k in _RRDB_KEYS):
        return "rrdbnet", _detect_rrdbnet(sd, path)
    if sd and all(k.startswith("body.") for k in sd) and "body.0.weight" in sd:
        return "compact", _detect_compact(sd, path)
    sample = ", ".join(sorted(sd)[:4])
    raise _unknown(path, f"keys like {sample} match neither RRDBNet (ESRGAN/Real-ESRGAN) nor SRVGGNetCompact")
