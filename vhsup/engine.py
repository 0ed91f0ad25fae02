"""Run an SR model over frames: devices, precision, batching, tiling, OOM backoff.

The engine is the only place that knows how a model meets hardware. It takes
uint8 RGB frames and gives uint8 RGB frames ``scale`` times larger; the
conversion to float and back happens on the device so that only bytes cross
the bus. Frames (or, when tiling, tiles from one or more frames) are stacked
into batches, because small models such as Compact leave a GPU idle one
frame at a time.

Two things go wrong on real hardware and are handled here rather than by
the user:

* **Out of memory.** Recognised by type (:class:`~vhsup.errors.OutOfMemory`,
  which backends raise and :func:`typed_out_of_memory` makes of torch's
  failures). The batch is halved first, then the tile, and the same
  frames are run again; a frame is never dropped. Only when a tile of
  :data:`MIN_TILE` pixels at batch 1 still does not fit does it give up with
  a :class:`~vhsup.errors.VhsupError`.
* **fp16/bf16 overflow.** Some content drives half-precision activations to
  inf/NaN (black or speckled frames). A batch whose output is not finite is
  computed again in fp32; after :data:`NAN_STRIKES` such batches the engine
  stays in fp32.

Geometry (which pixels a tile sees, how tiles are blended) lives in
:mod:`vhsup.tiling`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from vhsup import tiling
from vhsup.arch import find_spec
from vhsup.arch.spec import DEEP
from vhsup.errors import OutOfMemory, VhsupError

if TYPE_CHECKING:  # only for annotations: the engine needs no registry code
    from vhsup.registry import LoadedModel, ModelDescriptor

__all__ = [
    "MAX_ELEMENTS",
    "MIN_CONTEXT",
    "MIN_TILE",
    "SREngine",
    "activation_bytes_per_px",
    "largest_batch",
    "plan",
    "plan_tile",
    "typed_out_of_memory",
    "widest_per_px",
]

#: Smallest tile edge (input px) the OOM backoff goes down to before giving up.
MIN_TILE = 16
#: Context used when a descriptor claims less: every conv net sees some.
MIN_CONTEXT = 8
#: Tiles of an auto plan are rounded down to a multiple of this (friendlier
#: shapes for cuDNN and oneDNN kernels).
TILE_STEP = 8
#: Non-finite half-precision batches after which the engine stays in fp32.
NAN_STRIKES = 3
#: Most frames or tiles an automatic batch holds.
MAX_AUTO_BATCH = {"cuda": 8, "cpu": 2}
#: Share of free memory an automatic plan may use; the rest is headroom for
#: the allocator's fragmentation, the decoder and the encoder.
MEMORY_SHARE = {"cuda": 0.6, "cpu": 0.4}
#: Most elements one tensor of a forward pass may hold: onnxruntime's CUDA
#: kernels index with int32 and TensorRT refuses larger tensors. Every plan,
#: on every backend, keeps the model's widest tensor within it.
MAX_ELEMENTS = 2**31 - 1

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_OOM_TYPES = tuple(
    {
        t
        for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
        if t is not None
    }
) + (MemoryError,)
# How the CPU allocator (and other backends) word an allocation failure; they
# raise a plain RuntimeError, not an OutOfMemoryError.
_OOM_WORDS = (
    "out of memory",
    "can't allocate memory",
    "not enough memory",
    "failed to allocate memory",
    "alloc_failed",
)


@contextlib.contextmanager
def typed_out_of_memory() -> Iterator[None]:
    """Let torch's allocation failures out as :class:`~vhsup.errors.OutOfMemory`.

    torch raises ``OutOfMemoryError`` on CUDA, but a plain ``RuntimeError``
    from the CPU allocator; this is the one place that tells them apart.
    """
    try:
        yield
    except OutOfMemory:
        raise
    except Exception as exc:
        if isinstance(exc, _OOM_TYPES) or (
            isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _OOM_WORDS)
        ):
            raise OutOfMemory(" ".join(str(exc).split()) or type(exc).__name__) from exc
        raise


def _elem_bytes(precision: str) -> int:
    # Autocast computes convs in 16 bits, but a residual sum of a 16-bit
    # branch and an fp32 input comes out fp32: measured on an H200 at
    # 720x480 (whole frames, batch 1), esrgan-x4 peaked at 12.7 KB/px in bf16
    # against 17.6 in fp32, so half precision counts 3 bytes, not 2.
    return 3 if precision in _DTYPES else 4


def activation_bytes_per_px(desc: ModelDescriptor, precision: str = "fp32") -> float:
    """Rough peak bytes one input pixel costs during a forward pass.

    An estimate from the architecture's shape (its spec's
    :class:`~vhsup.arch.Activation`), not a measurement: 64 feature
    channels at input resolution (RRDB's dense blocks keep up to ~10 such
    tensors alive through their concatenations, a plain conv stack ~4), plus
    the upsampled part. ESRGAN-style nets upsample 64 features by
    interpolation, so three ``64 * scale^2`` tensors coexist at the end;
    pixel-shuffle nets only carry ``3 * scale^2`` channels. Unknown
    architectures get the larger estimate. Input, output and the fp32
    result that the engine accumulates are added on top.

    Measured peaks on CPU in fp32 (VmHWM, whole frames of 120x180):
    compact-x4 1.4 KB/px against 2.2 estimated, esrgan-x4 10.0 KB/px
    against 15.2; on an H200 (CUDA, cuDNN's workspace included) esrgan-x4
    17.6 KB/px in fp32 and 12.7 in bf16, compact-x4 1.0 and 0.55. Half
    precision takes about 3/4 of the room under CUDA autocast; CPU autocast
    keeps fp32 copies as well (25 KB/px for
    esrgan-x4 in bf16), but reduced precision on CPU is for tests only.
    """
    e = _elem_bytes(precision)
    s2 = desc.scale * desc.scale
    spec = find_spec(desc.arch)
    act = spec.activation if spec is not None else DEEP
    io = (desc.in_channels + 2 * desc.out_channels * s2) * 4
    return float((act.features + act.upsampled * s2) * e + io)


def _free_bytes(device: torch.device) -> int:
    """Memory an automatic plan may draw on, before :data:`MEMORY_SHARE`."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # Blocks the caching allocator holds but does not use are free to us.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # a guess; the OOM backoff covers a wrong one


def _pad_size(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan_tile(
    model_desc: ModelDescriptor,
    frame_hw: tuple[int, int],
    device: torch.device | str,
    free_bytes: int | None = None,
    *,
    precision: str = "fp32",
) -> int:
    """Tile edge (input px) for ``--tile auto``; 0 when the whole frame fits.

    Sizes from ``free_bytes`` (default: free device memory on CUDA,
    MemAvailable on CPU), of which :data:`MEMORY_SHARE` is used, and the
    model's estimated activation footprint per pixel. The result is never
    below :data:`MIN_TILE`; if even that does not fit, the OOM backoff will
    say so when it happens.
    """
    device = torch.device(device)
    if not model_desc.tiling:
        return 0
    if free_bytes is None:
        free_bytes = _free_bytes(device)
    h, w = (_pad_size(n, model_desc.size_multiple) for n in frame_hw)
    s2 = model_desc.scale**2
    # The engine's own per-frame buffers: the float frame and the fp32 output
    # accumulator, which live whatever the tile.
    frame_bytes = h * w * (3 * 4 + 3 * 4 * s2)
    budget = free_bytes * MEMORY_SHARE.get(device.type, 0.4) - frame_bytes
    per_px = activation_bytes_per_px(model_desc, precision)
    if h * w * per_px <= budget:
        return 0
    context = max(model_desc.context, MIN_CONTEXT)
    margin = context + tiling.default_feather(context) + model_desc.size_multiple
    side = math.isqrt(max(int(budget / per_px), 0)) - 2 * margin
    tile = side // TILE_STEP * TILE_STEP
    return max(MIN_TILE, tile)


def widest_per_px(desc: ModelDescriptor) -> float:
    """Elements per input pixel of the model's largest tensor (batch 1).

    The descriptor's, from the architecture's spec; where it does not say
    (a foreign ONNX file, a hand-made descriptor), an RRDB-like network is
    assumed: 64 features at the output size, and a 192-channel
    concatenation at the input size.
    """
    if desc.widest_per_px > 0:
        return float(desc.widest_per_px)
    return float(max(192, 64 * desc.scale * desc.scale))


def _crop(desc: ModelDescriptor, hp: int, wp: int, tile: int) -> tuple[int, int]:
    return tiling.crop_size(hp, wp, tile, max(desc.context, MIN_CONTEXT), multiple=max(desc.size_multiple, 1))


def largest_batch(desc: ModelDescriptor, crop_hw: tuple[int, int]) -> int:
    """Most crops of ``crop_hw`` one batch may hold with the model's widest
    tensor within :data:`MAX_ELEMENTS` (at least 1)."""
    per_item = crop_hw[0] * crop_hw[1] * widest_per_px(desc)
    return max(1, int(MAX_ELEMENTS // per_item))


def _element_tile(desc: ModelDescriptor, hp: int, wp: int, tile: int) -> int:
    """``tile``, or the largest smaller one whose crop keeps the widest tensor
    within :data:`MAX_ELEMENTS` at batch 1 (never below :data:`MIN_TILE`)."""
    widest = widest_per_px(desc)

    def fits(t: int) -> bool:
        ch, cw = _crop(desc, hp, wp, t)
        return ch * cw * widest <= MAX_ELEMENTS

    if not desc.tiling or fits(tile):
        return tile
    t = min(tile or max(hp, wp), math.isqrt(int(MAX_ELEMENTS / widest))) // TILE_STEP * TILE_STEP
    while t > MIN_TILE and not fits(t):
        t -= TILE_STEP
    return max(MIN_TILE, t)


def plan(
    model_desc: ModelDescriptor,
    frame_hw: tuple[int, int],
    device: torch.device | str,
    free_bytes: int | None = None,
    *,
    precision: str = "fp32",
    tile: int | str = "auto",
    batch: int | str = "auto",
) -> tuple[int, int]:
    """``(tile, batch)`` for frames of ``frame_hw``: what :class:`SREngine` runs.

    Automatic values are sized from ``free_bytes`` (default: free memory
    of ``device``, see :func:`plan_tile`), the batch at most
    :data:`MAX_AUTO_BATCH`. Whatever memory allows, the model's widest
    tensor (:func:`widest_per_px`) stays within :data:`MAX_ELEMENTS`: an
    automatic tile shrinks until one crop fits, and any batch, automatic or
    given, is at most :func:`largest_batch` (a given tile is kept).
    """
    device = torch.device(device)
    if (tile == "auto" or batch == "auto") and free_bytes is None:
        free_bytes = _free_bytes(device)
    hp, wp = (_pad_size(n, max(model_desc.size_multiple, 1)) for n in frame_hw)
    if tile == "auto":
        t = plan_tile(model_desc, frame_hw, device, free_bytes, precision=precision)
        t = _element_tile(model_desc, hp, wp, t)
    else:
        t = int(tile)
    ch, cw = _crop(model_desc, hp, wp, t)
    if batch == "auto":
        assert free_bytes is not None
        per_item = ch * cw * activation_bytes_per_px(model_desc, precision)
        frame_bytes = hp * wp * 12 * (1 + model_desc.scale**2)
        budget = free_bytes * MEMORY_SHARE.get(device.type, 0.4) - frame_bytes
        b = int(min(MAX_AUTO_BATCH.get(device.type, 2), max(1, budget // per_item)))
    else:
        b = int(batch)
    return t, min(b, largest_batch(model_desc, (ch, cw)))


class SREngine:
    """Upscale batches of frames with one model on one device.

    Args:
        model: a loaded model (``module`` in eval mode, fp32). The module is
            moved to the device and to channels-last memory in place.
        device: ``"auto"`` (CUDA when available, else CPU) or a torch device
            string.
        precision: ``"auto"`` (bf16 on CUDA when the model and GPU support
            it, else fp16 when the model does, else fp32; fp32 on CPU),
            ``"fp32"``, ``"fp16"`` or ``"bf16"`` (autocast; allowed on CPU).
        tile: ``"auto"`` (sized from free memory at the first frame size
            seen), a tile edge in input pixels, or 0 for whole frames.
        batch: ``"auto"`` or the number of frames/tiles per forward pass.
        notice: called with a one-line message when the engine changes
            course (fp32 retry, OOM backoff).
        detail: the model's share of each output (``--detail``): below 1,
            the model's output is blended, on the device and in fp32, with
            a Lanczos-3 upscale of the same whole input frame (0: Lanczos
            alone). Tiles are blended as usual first, so a tiled frame is
            the untiled one within 1/255 here too.

    Attributes:
        device, precision (resolved), tile (current; 0 = whole frame),
        batch (current), scale, stats (``oom_backoffs``, ``nan_retries``,
        ``forward_passes``). ``tile`` and ``batch`` given as ``"auto"`` are
        settled by the first :meth:`upscale` (or :meth:`describe` with a
        frame size); until then they read 0 and 1.

    Not thread-safe: one thread feeds one engine.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str = "auto",
        precision: str = "auto",
        tile: int | str = "auto",
        batch: int | str = "auto",
        notice: Callable[[str], None] | None = None,
        detail: float = 1.0,
    ):
        desc = model.descriptor
        self.descriptor = desc
        self.scale = int(desc.scale)
        self.device = _resolve_device(device)
        self.precision = _resolve_precision(precision, desc, self.device)
        self._notice = notice or (lambda _msg: None)
        self.stats = {"oom_backoffs": 0, "nan_retries": 0, "forward_passes": 0}
        if desc.in_channels != 3 or desc.out_channels != 3:
            raise VhsupError(
                f"model {desc.name} has {desc.in_channels}->{desc.out_channels} "
                "channels; only RGB models (3->3) can upscale video"
            )

        if not 0.0 <= detail <= 1.0:
            raise VhsupError(f"detail must be between 0 and 1, got {detail}")
        self.detail = float(detail)
        # Imported here: the classical resamplers are an architecture like any other.
        from vhsup.arch.classical import Lanczos

        self._lanczos = Lanczos(self.scale).to(self.device) if self.detail < 1.0 else None

        self._tile_auto = tile == "auto"
        self._batch_auto = batch == "auto"
        self.tile = 0 if self._tile_auto else _check_int("tile", tile, 0)
        self.batch = 1 if self._batch_auto else _check_int("batch", batch, 1)
        self._asked_batch = self.batch
        if self.tile and not desc.tiling:
            raise VhsupError(f"model {desc.name} cannot be tiled; use --tile 0")
        if 0 < self.tile < MIN_TILE:
            raise VhsupError(f"tile {self.tile} is too small; use 0 (no tiling) or at least {MIN_TILE}")
        self._context = max(int(desc.context), MIN_CONTEXT)
        self._multiple = max(int(desc.size_multiple), 1)
        self._planned_for: tuple[int, int] | None = None
        self._layout: tuple[tuple[int, int, int], list, list] | None = None

        module = model.module.eval()
        module.to(device=self.device)
        # Module.to takes memory_format at runtime; torch's overloads omit it.
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._module = module
        if self.device.type == "cuda":
            # Frame sizes are fixed for a whole video, so the autotuner's
            # one-off cost is repaid on every later batch.
            torch.backends.cudnn.benchmark = True
        self._switched = _switched_impls(module, self.device)
        if self._switched:
            from vhsup.kernels import switched_fallback

            fallback = switched_fallback(self.device)
            if fallback is not None:
                self._notice(fallback)

    @property
    def module(self) -> torch.nn.Module:
        """The network the engine runs (on its device)."""
        return self._module

    # -- public -----------------------------------------------------------

    def describe(self, frame_hw: tuple[int, int] | None = None) -> dict:
        """Settings for ``--json``/probe output.

        With ``frame_hw`` (height, width), automatic tile and batch are
        settled for that size first; without it, unsettled ones read "auto".
        """
        if frame_hw is not None:
            self._plan(*frame_hw)
        settled = self._planned_for is not None
        return {
            "device": str(self.device),
            "precision": self.precision,
            "tile": self.tile if settled or not self._tile_auto else "auto",
            "batch": self.batch if settled or not self._batch_auto else "auto",
            **self.runs_on(),
        }

    def items_per_frame(self, frame_hw: tuple[int, int]) -> int:
        """Forward-pass items (tiles, or 1 for a whole frame) one frame of
        ``frame_hw`` makes with the current settings (planned first if automatic)."""
        self._plan(*frame_hw)
        return len(self._tiles(*self._padded(*frame_hw))[0])

    def runs_on(self) -> dict:
        """What computes the model, as far as it is not plain torch on the device.

        ``fp32_convs``: how fp32 convolutions run ("tf32" on CUDA where torch
        allows TF32 for convolutions, cuDNN's and the switched-conv kernel's
        alike; else "ieee", exact). ``switched_conv``: the switched-conv
        implementation(s) ("cuda" is the Triton kernel, "reference" the
        slow fallback), for models that have switched convs. ``providers``:
        the onnxruntime execution providers the last batch ran on, best
        first (onnx backend, after a batch has run).
        """
        out: dict[str, object] = {}
        if self.device.type == "cuda":
            from vhsup.kernels import fp32_conv_precision

            out["fp32_convs"] = fp32_conv_precision()
        else:
            out["fp32_convs"] = "ieee"
        if self._switched:
            out["switched_conv"] = "+".join(sorted(self._switched))
        last = getattr(self._module, "last", None)
        if isinstance(last, dict) and last.get("providers"):
            out["providers"] = list(last["providers"])  # type: ignore[arg-type]
        return out

    def upscale(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Upscale frames of one size; same count and order out as in.

        Each frame is ``H x W x 3`` uint8 RGB; each result is
        ``(H*scale) x (W*scale) x 3`` uint8 RGB.
        """
        frames = list(frames)
        if not frames:
            return []
        h, w = _check_frames(frames)
        self._plan(h, w)
        done: list[np.ndarray | None] = [None] * len(frames)
        while True:
            pending = [i for i, r in enumerate(done) if r is None]
            if not pending:
                return done  # type: ignore[return-value]
            failure = None
            try:
                with torch.inference_mode(), typed_out_of_memory():
                    self._run(frames, pending, done)
            except OutOfMemory as exc:
                failure = " ".join(str(exc).split())[:120]
            # Backing off outside the handler lets the traceback, and the
            # tensors its frames hold, go before memory is asked for again.
            if failure is not None:
                self._back_off(h, w, failure)

    # -- planning ---------------------------------------------------------

    def _padded(self, h: int, w: int) -> tuple[int, int]:
        return _pad_size(h, self._multiple), _pad_size(w, self._multiple)

    def _plan(self, h: int, w: int) -> None:
        """Settle automatic tile and batch for frames of ``h x w``."""
        if self._planned_for == (h, w):
            return
        if self._planned_for is not None and self.stats["oom_backoffs"]:
            # Settings that already backed off stay backed off.
            self._planned_for = (h, w)
            return
        asked = self._asked_batch
        self.tile, self.batch = plan(
            self.descriptor,
            (h, w),
            self.device,
            precision=self.precision,
            tile="auto" if self._tile_auto else self.tile,
            batch="auto" if self._batch_auto else asked,
        )
        if not self._batch_auto and self.batch < asked:
            self._notice(
                f"batch {asked} would make a tensor of over 2^31 elements with {self.descriptor.name} "
                f"at {w}x{h}; using batch {self.batch}"
            )
        self._planned_for = (h, w)

    def _back_off(self, h: int, w: int, failure: str) -> None:
        """Shrink batch, then tile, after an out-of-memory error; or give up."""
        self.stats["oom_backoffs"] += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        old = f"tile {self.tile or 'off'}, batch {self.batch}"
        if self.batch > 1:
            self.batch //= 2
        elif self.descriptor.tiling and (self.tile == 0 or self.tile > MIN_TILE):
            hp, wp = self._padded(h, w)
            crop = self._crop(hp, wp)
            if self.tile == 0 or self.tile >= max(hp, wp):
                self.tile = max(hp, wp)
            # Halve until the crop the model sees actually shrinks: a tile
            # larger than the frame, or one whose crop is mostly context,
            # would otherwise fail again at the same size.
            while self.tile > MIN_TILE:
                self.tile = max(MIN_TILE, _pad_size(self.tile // 2, TILE_STEP))
                if self._crop(hp, wp) != crop:
                    break
        else:
            least = f"tile {MIN_TILE}" if self.descriptor.tiling else "whole frames"
            advice = "try --device cpu" if self.device.type == "cuda" else "close other programs"
            raise VhsupError(
                f"out of memory on {self.device} with model {self.descriptor.name} even at "
                f"{least} and batch 1 ({failure}); {advice}"
            )
        self._notice(
            f"out of memory on {self.device} at {old}; retrying with tile {self.tile or 'off'}, batch {self.batch}"
        )

    # -- running ----------------------------------------------------------

    def _run(self, frames: list[np.ndarray], pending: list[int], done: list[np.ndarray | None]) -> None:
        """Fill ``done`` for ``pending`` frames with the current settings.

        Tiles of consecutive frames share batches; a frame's input and its
        output accumulator live only from its first tile to its last, so at
        most a batch's worth of frames is held on the device at once.
        """
        h, w = frames[pending[0]].shape[:2]
        hp, wp = self._padded(h, w)
        s = self.scale
        tiles, weights = self._tiles(hp, wp)
        whole = len(tiles) == 1
        jobs = [(i, k) for i in pending for k in range(len(tiles))]
        inputs: dict[int, torch.Tensor] = {}
        accs: dict[int, torch.Tensor] = {}
        for start in range(0, len(jobs), self.batch):
            chunk = jobs[start : start + self.batch]
            crops = []
            for i, k in chunk:
                if i not in inputs:
                    inputs[i] = self._upload(frames[i], hp, wp)
                y0, y1, x0, x1 = tiles[k].crop
                crops.append(inputs[i][:, :, y0:y1, x0:x1])
            x = torch.cat(crops).contiguous(memory_format=torch.channels_last)
            out = self._forward(x)
            for j, (i, k) in enumerate(chunk):
                if whole:
                    done[i] = self._download(self._blend(out[j], inputs[i], h, w), h, w)
                    del inputs[i]
                    continue
                t = tiles[k]
                acc = accs.get(i)
                if acc is None:
                    acc = accs[i] = torch.zeros(3, hp * s, wp * s, device=self.device)
                wy, wx = weights[k]
                # Only the part with non-zero weight is added.
                ry = slice((t.y.blend0 - t.y.crop0) * s, (t.y.blend1 - t.y.crop0) * s)
                rx = slice((t.x.blend0 - t.x.crop0) * s, (t.x.blend1 - t.x.crop0) * s)
                acc[:, t.y.blend0 * s : t.y.blend1 * s, t.x.blend0 * s : t.x.blend1 * s].addcmul_(
                    out[j, :, ry, rx], wy[ry, None] * wx[None, rx]
                )
                if k == len(tiles) - 1:
                    done[i] = self._download(self._blend(accs.pop(i), inputs[i], h, w), h, w)
                    del inputs[i]

    def _crop(self, hp: int, wp: int) -> tuple[int, int]:
        return tiling.crop_size(hp, wp, self.tile, self._context, multiple=self._multiple)

    def _tiles(self, hp: int, wp: int) -> tuple[list[tiling.Tile], list]:
        """Tiles and their device-side blend weights, kept while settings hold."""
        key = (hp, wp, self.tile)
        if self._layout is None or self._layout[0] != key:
            tiles = tiling.plan_tiles(hp, wp, self.tile, self._context, multiple=self._multiple)
            weights = (
                []
                if len(tiles) == 1
                else [
                    tuple(torch.from_numpy(a).to(self.device) for a in tiling.tile_weights(t, self.scale))
                    for t in tiles
                ]
            )
            self._layout = (key, tiles, weights)
        return self._layout[1], self._layout[2]

    def _upload(self, frame: np.ndarray, hp: int, wp: int) -> torch.Tensor:
        """uint8 HxWx3 on the host -> float (1,3,hp,wp) in [0,1] on the device."""
        t = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type == "cuda":
            # Pinned blocks come from torch's caching host allocator, so
            # pinning per frame is cheap and lets the copy run asynchronously.
            t = t.pin_memory().to(self.device, non_blocking=True)
        # HWC -> CHW as a view: the strides are already channels-last.
        x = t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        ph, pw = hp - frame.shape[0], wp - frame.shape[1]
        if ph or pw:
            # Pad only bottom/right so the crop back is a plain slice; reflect
            # needs the pad to be shorter than the side.
            mode = "reflect" if ph < frame.shape[0] and pw < frame.shape[1] else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x

    def _blend(self, y: torch.Tensor, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The model's output ``y`` (3,H*s,W*s) of input ``x`` (1,3,hp,wp) at :attr:`detail` against Lanczos."""
        if self._lanczos is None:
            return y
        s = self.scale
        # Each picture as it would be shown (finite, clamped), so the blend lies between the two.
        base = self._lanczos(x[:, :, :h, :w])[0].clamp_(0.0, 1.0)
        return torch.lerp(base, y[:, : h * s, : w * s].nan_to_num(0.0).clamp(0.0, 1.0), self.detail)

    def _download(self, y: torch.Tensor, h: int, w: int) -> np.ndarray:
        """float (3,H*s,W*s) on the device -> uint8 HxWx3 on the host."""
        s = self.scale
        y = y[:, : h * s, : w * s].nan_to_num(0.0).clamp_(0.0, 1.0).mul_(255.0).round_()
        return y.to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass in the engine's precision, fp32 again if not finite."""
        self.stats["forward_passes"] += 1
        if self.precision in _DTYPES:
            with torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision]):
                y = self._module(x)
            y = y.float()
            if not bool(torch.isfinite(y).all()):
                self.stats["nan_retries"] += 1
                self.stats["forward_passes"] += 1
                precision = self.precision
                if self.stats["nan_retries"] >= NAN_STRIKES:
                    self.precision = "fp32"
                    self._notice(f"{precision} overflowed to inf/NaN {NAN_STRIKES} times; using fp32 from now on")
                else:
                    self._notice(f"{precision} output held inf/NaN; recomputing that batch in fp32")
                del y
                y = self._module(x)
        else:
            y = self._module(x)
        n, _, h, w = x.shape
        expect = (n, 3, h * self.scale, w * self.scale)
        if tuple(y.shape) != expect:
            raise VhsupError(
                f"model {self.descriptor.name} returned shape {tuple(y.shape)} "
                f"for input {tuple(x.shape)}; expected {expect} (wrong scale?)"
            )
        return y.float()


def _switched_impls(module: torch.nn.Module, device: torch.device) -> set[str]:
    """The switched-conv implementations ``module`` runs on ``device`` (empty: none)."""
    from vhsup.arch.switched import SwitchedConv2d

    layers = [m for m in module.modules() if isinstance(m, SwitchedConv2d)]
    if not layers:
        return set()
    from vhsup.kernels import pick_impl

    auto = pick_impl(device)
    return {m.impl or auto for m in layers}


def _resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise VhsupError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VhsupError(f"device {device} was asked for but this torch build or machine has no CUDA")
    if dev.type not in ("cpu", "cuda"):
        raise VhsupError(f"device {device} is not supported; use cpu or cuda")
    return dev


def _resolve_precision(precision: str, desc: ModelDescriptor, device: torch.device) -> str:
    if precision not in _PRECISIONS:
        raise VhsupError(f"unknown precision {precision!r}; use one of {', '.join(_PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        if desc.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if desc.supports_half else "fp32"
    if precision == "fp16" and not desc.supports_half:
        raise VhsupError(f"model {desc.name} does not work in fp16; use --precision fp32")
    if precision == "bf16" and not desc.supports_bfloat16:
        raise VhsupError(f"model {desc.name} does not work in bf16; use --precision fp32")
    return precision


def _check_int(name: str, value: int | str, least: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise VhsupError(f"{name} must be 'auto' or a whole number, got {value!r}") from None
    if n < least:
        raise VhsupError(f"{name} must be at least {least}, got {n}")
    return n


def _check_frames(frames: list[np.ndarray]) -> tuple[int, int]:
    first = frames[0]
    for f in frames:
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError("frames must be HxWx3 uint8 arrays")
        if f.shape != first.shape:
            raise ValueError(f"frames of one call must share a size: {f.shape} vs {first.shape}")
    return first.shape[0], first.shape[1]
