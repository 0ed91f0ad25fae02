"""Load a user's model file without ever running code from it.

``.pth``/``.pt``/``.ckpt`` files are pickles, and a pickle can name any
Python callable to run while it loads. torch's ``weights_only=True``
unpickler only rebuilds tensors and plain containers and raises on anything
else *before* calling it, so a hostile file is refused with its payload
never run. ``.safetensors`` holds no code at all.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import VhsupError

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
SUFFIXES = PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES

# Training checkpoints wrap the weights under one of these keys (BasicSR,
# Lightning, plain training scripts); the EMA copy is what Real-ESRGAN
# publishes and gives the best pictures, so it wins over the raw params.
_WRAPPERS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net")
# Prefixes a wrapper adds to every key: DataParallel/DistributedDataParallel
# (module.) and GAN scripts that save the generator as netG.
_PREFIXES = ("module.", "netG.")


def _refused_global(message: str) -> str | None:
    """The global a weights-only unpickler refused, if its message names one.

    torch words it as "Unsupported global: GLOBAL io.open ..." or
    "unsupported GLOBAL posix.system ..." depending on the module.
    """
    match = re.search(r"GLOBAL\s+([\w.]+)", message)
    return match.group(1).rstrip(".") if match else None


def _brief(exc: BaseException) -> str:
    """First sentence of an exception message: torch appends paragraphs of advice."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.split(". ")[0][:160]


def _load_pickle(path: Path) -> object:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not handle; the load
            # either works or raises, and the user cannot act on the warning.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            what = _refused_global(str(exc))
            reason = f"it asks to call {what}" if what else "it uses pickle features beyond plain tensors"
            raise VhsupError(
                f"refused to load: {reason}, and vhsup never runs code from a model file "
                "(re-save it as .safetensors, or as a plain state dict of tensors)",
                path,
            ) from None
        raise VhsupError(f"not a readable PyTorch file (corrupt or truncated): {_brief(exc)}", path) from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise VhsupError(f"not a readable PyTorch file (corrupt or truncated): {_brief(exc)}", path) from None
    except (RuntimeError, ValueError, OSError, AttributeError, TypeError, KeyError, IndexError) as exc:
        raise VhsupError(f"not a readable PyTorch file (corrupt or truncated): {_brief(exc)}", path) from None


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VhsupError(f"not a readable safetensors file (corrupt or truncated): {_brief(exc)}", path) from None


def unwrap(obj: object, path: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint and drop a prefix every key shares."""
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
                obj = next(iter(obj.values()))  # {"any name": state_dict}
    if not isinstance(obj, dict):
        raise VhsupError(f"the file holds a {type(obj).__name__}, not a dict of weights", path)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise VhsupError("the file holds no weight tensors", path)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the weights of a .pth/.pt/.ckpt/.safetensors file, safely.

    Tensors keep the dtype they were stored in; the caller converts.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise VhsupError(f"unsupported model file type {suffix or '(none)'}; use one of {', '.join(SUFFIXES)}", path)
    if not path.exists():
        raise VhsupError("model file not found", path)
    if not path.is_file():
        raise VhsupError("model path is not a file", path)
    if path.stat().st_size == 0:
        raise VhsupError("model file is empty", path)
    raw = _load_safetensors(path) if suffix in SAFETENSORS_SUFFIXES else _load_pickle(path)
    return unwrap(raw, path)
