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

from ..errors import UnknownArchitecture, VhsupError

_RRDB_KEYS = ("conv_first.weight", "conv_body.weight", "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.weight")
_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_BODY = re.compile(r"^body\.(\d+)\.(weight|bias)$")
_MESRGAN_KEY = "body.0.rdb1.conv1.expand.weight"
_SRRESNET_KEYS = ("conv_first.weight", "act_first.weight", "conv_body.weight", "bn_body.weight", "conv_last.weight")
# ResUNet's scale only sets its first bilinear upscale, so no weight shape
# shows it; the module keeps it in this buffer.
RESUNET_SCALE_KEY = "out_scale"
_RESUNET_KEYS = ("stem.0.weight", "encoder.0.0.conv1.weight", "decoder.0.conv1.weight", "tail.weight")
# SwitchedSR: plain outer convs around switched blocks. A switched conv's
# weight is 5-D (breadth, out, in, kh, kw), which no other vhsup layer has.
_SWITCHED_KEYS = ("conv_first.weight", "body.0.conv1.weight", "conv_body.weight", "conv_hr.weight", "conv_last.weight")
_SWITCHED_BLOCK = re.compile(r"^body\.(\d+)\.conv([12])\.weight$")
_SWITCHED_UP = re.compile(r"^conv_up\.(\d+)\.weight$")


def _unknown(path, detail: str) -> UnknownArchitecture:
    return UnknownArchitecture(f"not a model vhsup knows: {detail}", path)


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
        raise UnknownArchitecture(f"old-style ESRGAN model with {n_up} upsampling convs (scale {2**n_up}) is not "
                                  "supported by vhsup's own loader; only x4", path)
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


def _rrdb_outer(sd: dict[str, torch.Tensor], path) -> dict:
    """Channels, scale and trunk width from the convs RRDBNet and MESRGAN share."""
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
        raise UnknownArchitecture("RRDBNet with a third upsampling conv (x8) is not supported by vhsup's own loader", path)
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("body.")}
    if not blocks or blocks != set(range(len(blocks))):
        raise _unknown(path, "RRDBNet keys without a contiguous body.N numbering")
    return {
        "num_in_ch": int(num_in_ch),
        "num_out_ch": int(num_out_ch),
        "scale": scale,
        "num_feat": int(num_feat),
        "num_block": len(blocks),
    }


def _detect_rrdbnet(sd: dict[str, torch.Tensor], path) -> dict:
    hyper = _rrdb_outer(sd, path)
    grow = sd.get("body.0.rdb1.conv1.weight")
    if grow is None:
        raise _unknown(path, "RRDBNet keys without body.0.rdb1.conv1")
    return {**hyper, "num_grow_ch": int(grow.shape[0])}


def _detect_mesrgan(sd: dict[str, torch.Tensor], path) -> dict:
    """MESRGAN shares RRDBNet's outer layout; its blocks hold bottlenecks."""
    hyper = _rrdb_outer(sd, path)
    expand = sd[_MESRGAN_KEY]
    project = sd.get("body.0.rdb1.conv1.project.weight")
    if expand.ndim != 4 or project is None or project.ndim != 4:
        raise _unknown(path, "MESRGAN block without 1x1 expand/project conv weights")
    in_ch, hidden = int(expand.shape[1]), int(expand.shape[0])
    if hidden % in_ch:
        raise _unknown(path, f"MESRGAN expand conv widens {in_ch} to {hidden} channels, not a whole multiple")
    return {**hyper, "num_grow_ch": int(project.shape[0]), "expand_ratio": hidden // in_ch}


def _detect_srresnet(sd: dict[str, torch.Tensor], path) -> dict:
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    if first.ndim != 4 or last.ndim != 4:
        raise _unknown(path, "conv_first/conv_last are not conv weights")
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("body.")}
    ups = {int(k.split(".")[1]) for k in sd if k.startswith("upsample.")}
    if blocks != set(range(len(blocks))) or ups != set(range(len(ups))):
        raise _unknown(path, "SRResNet keys without contiguous body.N / upsample.N numbering")
    if len(ups) not in (1, 2, 3):
        raise VhsupError(f"SRResNet with {len(ups)} sub-pixel steps (x{2 ** len(ups)}) is not supported; only x2, x4, x8", path)
    return {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": int(last.shape[0]),
        "num_feat": int(first.shape[0]),
        "num_block": len(blocks),
        "upscale": 2 ** len(ups),
    }


def _detect_resunet(sd: dict[str, torch.Tensor], path) -> dict:
    stem, tail = sd["stem.0.weight"], sd["tail.weight"]
    if stem.ndim != 4 or tail.ndim != 4:
        raise _unknown(path, "stem/tail are not conv weights")
    stages = {int(k.split(".")[1]) for k in sd if k.startswith("encoder.")}
    if not stages or stages != set(range(len(stages))):
        raise _unknown(path, "ResUNet keys without a contiguous encoder.N numbering")
    channels = [int(stem.shape[0])]
    for s in range(len(stages)):
        w = sd.get(f"encoder.{s}.0.conv1.weight")
        if w is None:
            raise _unknown(path, f"ResUNet stage encoder.{s} without a first block")
        channels.append(int(w.shape[0]))
    blocks = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.0.")}
    # The scale is nowhere in the weights (the network runs after a
    # bilinear upscale), so it is read from the file's metadata tensor.
    scale = sd.get(RESUNET_SCALE_KEY)
    if scale is None or scale.numel() != 1:
        raise _unknown(path, f"ResUNet weights without the {RESUNET_SCALE_KEY!r} entry that records its scale")
    return {
        "num_in_ch": int(stem.shape[1]),
        "num_out_ch": int(tail.shape[0]),
        "upscale": int(scale.item()),
        "channels": channels,
        "blocks_per_stage": len(blocks),
    }


def _detect_switchedsr(sd: dict[str, torch.Tensor], path) -> dict:
    first, last = sd["conv_first.weight"], sd["conv_last.weight"]
    if first.ndim != 4 or last.ndim != 4:
        raise _unknown(path, "conv_first/conv_last are not conv weights")
    convs = {(int(m.group(1)), m.group(2)): sd[k] for k in sd if (m := _SWITCHED_BLOCK.match(k))}
    blocks = {b for b, _ in convs}
    if blocks != set(range(len(blocks))) or len(convs) != 2 * len(blocks):
        raise _unknown(path, "SwitchedSR keys without contiguous body.N.conv1/conv2 numbering")
    if any(w.ndim != 5 for w in convs.values()):
        raise _unknown(path, "SwitchedSR block convs are not all switched (5-D weights)")
    breadths = {int(w.shape[0]) for w in convs.values()}
    if len(breadths) != 1:
        raise VhsupError(f"SwitchedSR with switched convs of different breadths {sorted(breadths)} is not supported", path)
    ups = {int(m.group(1)) for k in sd if (m := _SWITCHED_UP.match(k))}
    if ups != set(range(len(ups))):
        raise _unknown(path, "SwitchedSR keys without contiguous conv_up.N numbering")
    if len(ups) > 3:
        raise VhsupError(f"SwitchedSR with {len(ups)} upsampling steps (x{2 ** len(ups)}) is not supported; only x1..x8", path)
    return {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": int(last.shape[0]),
        "num_feat": int(first.shape[0]),
        "num_block": len(blocks),
        "breadth": breadths.pop(),
        "scale": 2 ** len(ups),
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


SWITCHED_HYPER = "switched"


def _switched_layers(sd: dict[str, torch.Tensor]) -> list[str]:
    """Names of the switched convs in a state dict: those with a 5-D weight."""
    return sorted(k[: -len(".weight")] for k, v in sd.items() if k.endswith(".weight") and v.ndim == 5)


def _unswitch(sd: dict[str, torch.Tensor], layers: list[str], path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict of the plain network the switched one was converted
    from (kernel 0 of each switched conv; selectors and switch norms
    dropped), and what build() needs to convert it again.

    Only the default selector (one 1x1 conv) is accepted: a deeper one
    would widen the model's reach beyond what the plain network's tiling
    context covers.
    """
    breadths = {int(sd[f"{name}.weight"].shape[0]) for name in layers}
    if len(breadths) != 1:
        raise VhsupError(f"switched convs of different breadths {sorted(breadths)} in one model are not supported", path)
    breadth = breadths.pop()
    queue = 256
    for name in layers:
        sel = sd.get(f"{name}.selector.weight")
        if sel is None or tuple(sel.shape) != (breadth, sd[f"{name}.weight"].shape[2], 1, 1):
            raise VhsupError(f"switched conv {name} has no plain 1x1 selector (only the default selector is supported "
                             "outside switched-x4)", path)
        history = sd.get(f"{name}.norm.history")
        if history is not None:
            queue = int(history.shape[0])
    plain: dict[str, torch.Tensor] = {}
    inside = tuple(f"{name}.{part}." for name in layers for part in ("selector", "norm"))
    names = set(layers)
    for key, value in sd.items():
        if key.startswith(inside):
            continue
        layer = key.rpartition(".")[0]
        plain[key] = value[0] if layer in names and key.endswith((".weight", ".bias")) else value
    spec: dict = {"breadth": breadth, "layers": layers}
    if queue != 256:
        spec["queue"] = queue
    return plain, spec


def detect(state_dict: dict[str, torch.Tensor], path: str | os.PathLike[str] | None = None) -> tuple[str, dict]:
    """Return ``(arch, hyperparameters)`` for a state dict.

    ``arch`` is one of 'rrdbnet', 'mesrgan', 'srresnet', 'resunet',
    'switchedsr' or 'compact'; the hyperparameters are the constructor
    arguments of that module. Old ESRGAN keys are accepted (pass the dict
    through :func:`canonical` before loading it into the module). ``path``
    only names the file in errors.

    Any of them with some convs converted to switched convs (``vhsup train
    --switched``) is detected as its plain architecture, with the extra
    hyperparameter ``switched = {"breadth": B, "layers": [conv names]}``
    (and ``queue`` when its switch norm remembers other than 256 batches)
    that :func:`vhsup.arch.build` turns back into the converted network.
    """
    sd = canonical(state_dict, path)
    if all(k in sd for k in _SWITCHED_KEYS) and sd["body.0.conv1.weight"].ndim == 5:
        return "switchedsr", _detect_switchedsr(sd, path)
    if layers := _switched_layers(sd):
        plain, spec = _unswitch(sd, layers, path)
        arch, hyper = _detect_plain(plain, path)
        return arch, {**hyper, SWITCHED_HYPER: spec}
    return _detect_plain(sd, path)


def _detect_plain(sd: dict[str, torch.Tensor], path) -> tuple[str, dict]:
    # MESRGAN has every RRDBNet outer key too, so it is asked for first.
    if _MESRGAN_KEY in sd and all(k in sd for k in _RRDB_KEYS):
        return "mesrgan", _detect_mesrgan(sd, path)
    if all(k in sd for k in _RRDB_KEYS):
        return "rrdbnet", _detect_rrdbnet(sd, path)
    if all(k in sd for k in _SRRESNET_KEYS):
        return "srresnet", _detect_srresnet(sd, path)
    if all(k in sd for k in _RESUNET_KEYS):
        return "resunet", _detect_resunet(sd, path)
    if sd and all(k.startswith("body.") for k in sd) and "body.0.weight" in sd:
        return "compact", _detect_compact(sd, path)
    sample = ", ".join(sorted(sd)[:4])
    raise _unknown(
        path,
        f"keys like {sample} match none of RRDBNet (ESRGAN/Real-ESRGAN), MESRGAN, SRResNet/SRGAN, ResUNet, "
        "SwitchedSR or SRVGGNetCompact",
    )
