"""Training data: frame folders in, random HR patches (or LR/HR pairs) out.

Three sources, one sampler:

* **frames** (synthetic and self modes): a folder of pictures used as the
  targets; the trainer makes each LR input on the fly with the Degrader.
* **paired**: an LR folder and an HR folder whose files match by name,
  each HR exactly ``scale`` times its LR.

Every folder is checked once when training starts (each file decoded, so an
unreadable or too-small frame is reported before the first step, not an
hour in), and pictures that are not 8-bit RGB (16-bit, grey, with alpha)
are converted with one notice that counts them: a 16-bit PNG read as if it
were 8-bit would train the model on garbage, silently.

All randomness (the frame order, crop positions, flips) comes from two
CPU ``torch.Generator`` objects whose state the checkpoint stores, so a
resumed run draws exactly the batches the uninterrupted one would have.
Under DDP every process draws the same global order and takes its own
slice of each global batch (as torch's DistributedSampler does), while
crops use a per-process generator.

:func:`training_data` sets up one run's data from its config: the frames,
the held-out validation pairs (centre crops, LR degraded once from fixed
seeds), the sampler and the degradation's random stream.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
import torch

from vhsup.errors import VhsupError

if TYPE_CHECKING:
    from vhsup.train.config import TrainConfig
    from vhsup.train.degrade import Degrader

__all__ = [
    "IMAGE_SUFFIXES",
    "Conversions",
    "FrameSet",
    "PatchSampler",
    "TrainData",
    "centre_crop",
    "centre_pair",
    "check_pair_sizes",
    "derive_seed",
    "list_images",
    "match_pairs",
    "read_rgb8",
    "split_validation",
    "synthetic_val",
    "training_data",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")

Notice = Callable[[str], None]


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed for one named random stream (``"crop", rank``...).

    Hashing keeps streams independent: seeds like ``seed + rank`` would make
    run 1's rank 0 replay run 0's rank 1.
    """
    text = ":".join(str(x) for x in (seed, *names))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def list_images(folder: str | os.PathLike[str], what: str = "frames") -> list[Path]:
    """The pictures in ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VhsupError(f"{what} folder not found" if not folder.exists() else f"{what} path is not a folder", folder)
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise VhsupError(f"no pictures ({', '.join(IMAGE_SUFFIXES)}) in the {what} folder", folder)
    return files


@dataclass
class Conversions:
    """Files that were not plain 8-bit RGB and were converted on reading."""

    deep: int = 0  # 16-bit or float samples, scaled to 8 bits
    alpha: int = 0  # alpha channel dropped
    grey: int = 0  # single channel repeated into R, G and B

    def message(self, total: int) -> str | None:
        parts = [
            f"{n} {what}"
            for n, what in (
                (self.deep, "with 16-bit or float samples (scaled to 8 bits)"),
                (self.alpha, "with an alpha channel (dropped)"),
                (self.grey, "in greyscale (repeated into RGB)"),
            )
            if n
        ]
        if not parts:
            return None
        return f"converted frames to 8-bit RGB: {', '.join(parts)} of {total} files"


def read_rgb8(path: str | os.PathLike[str], conversions: Conversions | None = None) -> np.ndarray:
    """An H x W x 3 uint8 RGB picture from a PNG/JPEG/TIFF/WebP file.

    16-bit samples are rounded to 8 bits (x * 255 / 65535), alpha is
    dropped (training frames are opaque video; alpha says nothing about the
    picture), grey is repeated into RGB; each is counted in ``conversions``.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise VhsupError(f"cannot read the picture: {exc.strerror or exc}", path) from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None or img.size == 0:
        raise VhsupError("not a readable picture (PNG, JPEG, TIFF or WebP expected)", path)
    conv = conversions if conversions is not None else Conversions()
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        elif img.dtype.kind == "f":
            img = np.clip(np.nan_to_num(img.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            raise VhsupError(f"unsupported sample type {img.dtype} (8- or 16-bit pictures expected)", path)
        conv.deep += 1
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 4:
        img = img[:, :, :3]
        conv.alpha += 1
    elif channels == 2:  # grey + alpha
        img = img[:, :, :1]
        conv.alpha += 1
        channels = 1
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
        conv.grey += 1
    elif img.shape[2] != 3:
        raise VhsupError(f"unsupported picture with {channels} channels", path)
    return np.ascontiguousarray(img[:, :, ::-1])  # OpenCV's BGR to RGB


class FrameSet:
    """A list of picture files, checked once, decoded on demand and cached.

    Args:
        files: the pictures.
        min_size: (height, width) every frame must reach; smaller ones are
            an error naming the file, or skipped with one notice when
            ``small == "skip"``.
        cache_mb: decoded frames are kept in memory up to this budget.
        notice: where the skip notice goes.
        conversions: counts of converted files, added to (see :class:`Conversions`).
        what: how the frames are named in messages ("frames", "LR frames").
    """

    def __init__(
        self,
        files: list[Path],
        *,
        min_size: tuple[int, int] = (1, 1),
        small: str = "error",
        cache_mb: int = 2048,
        notice: Notice | None = None,
        what: str = "frames",
        conversions: Conversions | None = None,
    ):
        self.what = what
        # Shared between the folders of a run, so the trainer can say once
        # how many files in all were converted.
        self.conversions = conversions if conversions is not None else Conversions()
        self._cache: dict[int, np.ndarray] = {}
        self._budget = int(cache_mb) * 2**20
        self._used = 0
        kept, sizes, skipped = [], [], []
        for path in files:
            img = read_rgb8(path, self.conversions)
            h, w = img.shape[:2]
            if h < min_size[0] or w < min_size[1]:
                if small != "skip":
                    raise VhsupError(
                        f"frame is {w}x{h}, smaller than the {min_size[1]}x{min_size[0]} training patch "
                        "(use a smaller --patch, or --small skip to leave such frames out)",
                        path,
                    )
                skipped.append(path)
                continue
            kept.append(path)
            sizes.append((h, w))
            self._remember(len(kept) - 1, img)
        if skipped and notice is not None:
            notice(
                f"skipped {len(skipped)} of {len(files)} {what} smaller than the "
                f"{min_size[1]}x{min_size[0]} patch (first: {skipped[0]})"
            )
        if not kept:
            raise VhsupError(
                f"no {what} are at least {min_size[1]}x{min_size[0]} pixels (the patch size)",
                files[0].parent if files else None,
            )
        self.files = kept
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.files)

    def _remember(self, i: int, img: np.ndarray) -> None:
        if self._used + img.nbytes <= self._budget:
            self._cache[i] = img
            self._used += img.nbytes

    def get(self, i: int) -> np.ndarray:
        """Frame ``i`` as H x W x 3 uint8 RGB (do not modify it: it may be cached)."""
        img = self._cache.get(i)
        if img is None:
            img = read_rgb8(self.files[i], Conversions())
            self._remember(i, img)
        return img

    def subset(self, indices: list[int]) -> FrameSet:
        """A FrameSet of some of these frames (sharing decoded pictures)."""
        new = object.__new__(FrameSet)
        new.what = self.what
        new.conversions = self.conversions
        new._budget, new._used = self._budget, 0
        new._cache = {}
        new.files = [self.files[i] for i in indices]
        new.sizes = [self.sizes[i] for i in indices]
        for j, i in enumerate(indices):
            if i in self._cache:
                new._cache[j] = self._cache[i]
        return new


def match_pairs(lr_dir: str | os.PathLike[str], hr_dir: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """(LR file, HR file) pairs matched by file name without extension.

    An LR file with no HR partner (or the reverse) is an error naming it;
    sizes are checked when the frames are read (:func:`check_pair_sizes`).
    """
    lr_files = list_images(lr_dir, "LR frames")
    hr_files = list_images(hr_dir, "HR frames")
    hr_by_stem: dict[str, Path] = {}
    for p in hr_files:
        if p.stem in hr_by_stem:
            raise VhsupError(f"two HR frames share the name {p.stem!r} ({hr_by_stem[p.stem].name}, {p.name})", hr_dir)
        hr_by_stem[p.stem] = p
    pairs = []
    seen = set()
    for p in lr_files:
        hr = hr_by_stem.get(p.stem)
        if hr is None:
            raise VhsupError(f"LR frame has no HR frame named {p.stem}.* in {hr_dir}", p)
        if p.stem in seen:
            raise VhsupError(f"two LR frames share the name {p.stem!r}", p)
        seen.add(p.stem)
        pairs.append((p, hr))
    missing = sorted(set(hr_by_stem) - seen)
    if missing:
        raise VhsupError(f"HR frame has no LR frame named {missing[0]}.* in {lr_dir}", hr_by_stem[missing[0]])
    return pairs


def check_pair_sizes(lr: FrameSet, hr: FrameSet, scale: int) -> None:
    """Every HR frame must be exactly ``scale`` times its LR frame."""
    for lr_path, hr_path, (lh, lw), (hh, hw) in zip(lr.files, hr.files, lr.sizes, hr.sizes):
        if (hh, hw) != (lh * scale, lw * scale):
            raise VhsupError(
                f"LR {lr_path.name} is {lw}x{lh} and HR {hr_path.name} is {hw}x{hh}; "
                f"x{scale} training needs HR = {lw * scale}x{lh * scale}",
                hr_path,
            )


def split_validation(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): ``fraction`` of ``count`` frames
    held out (at least one), chosen by ``seed``, both lists sorted."""
    if count < 2:
        raise VhsupError(
            f"only {count} usable frame: training needs at least 2 when one is held out "
            "for validation (or give --val-frames)"
        )
    n_val = min(count - 1, max(1, round(count * fraction)))
    g = torch.Generator().manual_seed(derive_seed(seed, "val-split"))
    order = torch.randperm(count, generator=g).tolist()
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return train, val


def _augment(arrays: list[np.ndarray], flips: tuple[bool, bool, bool]) -> list[np.ndarray]:
    hflip, vflip, transpose = flips
    out = []
    for a in arrays:
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        if transpose:
            a = a.transpose(1, 0, 2)
        out.append(np.ascontiguousarray(a))
    return out


class PatchSampler:
    """Random patches in a reproducible order, sharded over DDP processes.

    Args:
        frames: the target frames (HR).
        patch: HR patch side.
        scale: the model's factor (crops in paired mode start on multiples of it).
        seed: the run's seed.
        rank, world: this process and how many there are.
        lr_frames: the matching LR frames (paired mode), else None.

    ``next(batch, extra)`` returns ``(hr, lr)``: uint8 tensors (N, 3, P, P)
    and, in paired mode, (N, 3, P/scale, P/scale) (else None). ``extra``
    enlarges the crop by that many HR pixels each way (the translational
    consistency loss needs a slightly larger patch).

    The trainer checkpoints ``order_gen``, ``crop_gen`` (one per process),
    ``queue`` and ``epoch``; restoring them replays the same batches.
    """

    def __init__(
        self,
        frames: FrameSet,
        *,
        patch: int,
        scale: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        lr_frames: FrameSet | None = None,
    ):
        self.frames = frames
        self.lr_frames = lr_frames
        self.patch = int(patch)
        self.scale = int(scale)
        self.rank, self.world = int(rank), int(world)
        self.order_gen = torch.Generator().manual_seed(derive_seed(seed, "order"))
        self.crop_gen = torch.Generator().manual_seed(derive_seed(seed, "crop", self.rank))
        self.queue: list[int] = []
        self.epoch = 0

    def _take(self, n: int) -> list[int]:
        """The next ``n`` frame indices of this process's slice of the global order."""
        need = n * self.world
        while len(self.queue) < need:
            self.queue.extend(torch.randperm(len(self.frames), generator=self.order_gen).tolist())
            self.epoch += 1
        chunk, self.queue = self.queue[:need], self.queue[need:]
        return chunk[self.rank * n : (self.rank + 1) * n]

    def _randint(self, high: int) -> int:
        """Uniform in [0, high] (inclusive) from the crop generator."""
        return int(torch.randint(0, high + 1, (1,), generator=self.crop_gen).item())

    def next(self, batch: int, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = self.patch + int(extra)
        s = self.scale
        hrs, lrs = [], []
        for i in self._take(batch):
            hr = self.frames.get(i)
            h, w = hr.shape[:2]
            if h < size or w < size:
                raise VhsupError(
                    f"frame is {w}x{h}, smaller than the {size}x{size} crop training needs", self.frames.files[i]
                )
            if self.lr_frames is None:
                y, x = self._randint(h - size), self._randint(w - size)
                crops = [hr[y : y + size, x : x + size]]
            else:
                lr = self.lr_frames.get(i)
                y, x = self._randint((h - size) // s) * s, self._randint((w - size) // s) * s
                crops = [hr[y : y + size, x : x + size], lr[y // s : (y + size) // s, x // s : (x + size) // s]]
            hflip, vflip, transpose = (bool(v) for v in torch.randint(0, 2, (3,), generator=self.crop_gen).tolist())
            crops = _augment(crops, (hflip, vflip, transpose))
            hrs.append(crops[0])
            if self.lr_frames is not None:
                lrs.append(crops[1])
        hr_t = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).contiguous()
        lr_t = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).contiguous() if lrs else None
        return hr_t, lr_t


# --- one run's data ---------------------------------------------------------------

ValPairs = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class TrainData:
    """A run's data, set up once: the training frames, the held-out (LR, HR)
    validation pairs, the patch sampler and the on-device degradation with
    its own random stream (checkpointed, like the sampler's)."""

    frames: FrameSet  # HR targets
    lr_frames: FrameSet | None  # their LR partners (paired mode)
    val_pairs: ValPairs
    sampler: PatchSampler
    degrader: Degrader
    degrade_gen: torch.Generator


class _Sets(NamedTuple):
    frames: FrameSet
    lr_frames: FrameSet | None
    val_pairs: ValPairs
    files: int  # how many files were read, for the conversion notice


def training_data(
    cfg: TrainConfig, scale: int, size_multiple: int, *, rank: int = 0, world: int = 1, notice: Notice | None = None
) -> TrainData:
    """Read and check the run's frames (``cfg.mode`` settled: "paired", or a
    frames folder) and set up the sampling for process ``rank`` of ``world``."""
    from vhsup.train.degrade import Degrader, load_spec

    degrader = Degrader(load_spec("none", cfg.degradation), scale)
    # Not "before the last step": a run extended with --steps must keep
    # the frame set (and crop sizes) it started with.
    extra = cfg.tc_shift * scale if cfg.tc_start >= 0 else 0
    need = (cfg.patch + extra, cfg.patch + extra)
    conv = Conversions()
    quantum = scale * size_multiple
    if cfg.mode == "paired":
        sets = _paired_sets(cfg, need, conv, degrader, quantum, notice)
    else:
        sets = _frame_sets(cfg, need, conv, degrader, quantum, notice)
    message = conv.message(sets.files)
    if message and notice is not None:
        notice(message)
    sampler = PatchSampler(
        sets.frames, patch=cfg.patch, scale=scale, seed=cfg.seed, rank=rank, world=world, lr_frames=sets.lr_frames
    )
    degrade_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "degrade", rank))
    return TrainData(sets.frames, sets.lr_frames, sets.val_pairs, sampler, degrader, degrade_gen)


def _frame_sets(
    cfg: TrainConfig, need: tuple[int, int], conv: Conversions, degrader: Degrader, quantum: int, notice: Notice | None
) -> _Sets:
    """Synthetic and self modes: one folder of targets, the validation LR made from them."""
    files = list_images(cfg.frames, "frames")
    if cfg.val_frames:
        train_files = files
        val_files = list_images(cfg.val_frames, "validation frames")
    else:
        train_idx, val_idx = split_validation(len(files), cfg.val_split, cfg.seed)
        train_files = [files[i] for i in train_idx]
        val_files = [files[i] for i in val_idx]
    total = len(files) + (len(val_files) if cfg.val_frames else 0)
    frames = FrameSet(
        train_files,
        min_size=need,
        small=cfg.small,
        cache_mb=cfg.cache_mb,
        notice=notice,
        what="frames",
        conversions=conv,
    )
    val_pairs = synthetic_val([read_rgb8(p, conv) for p in val_files], degrader, cfg.seed, quantum, cfg.val_crop)
    return _Sets(frames, None, val_pairs, total)


def _paired_sets(
    cfg: TrainConfig, need: tuple[int, int], conv: Conversions, degrader: Degrader, quantum: int, notice: Notice | None
) -> _Sets:
    """Paired mode: matching LR and HR folders; ``--val-frames`` adds HR-only
    validation frames whose LR is made like the synthetic ones."""
    s = degrader.scale
    pairs = match_pairs(cfg.lr, cfg.hr)
    total = 2 * len(pairs)
    val_idx: list[int] = []
    val_hr_files: list[Path] = []
    if cfg.val_frames:
        train_idx = list(range(len(pairs)))
        val_hr_files = list_images(cfg.val_frames, "validation frames")
    else:
        train_idx, val_idx = split_validation(len(pairs), cfg.val_split, cfg.seed)
    hr_set = FrameSet(
        [pairs[i][1] for i in train_idx],
        min_size=need,
        small=cfg.small,
        cache_mb=cfg.cache_mb // 2,
        notice=notice,
        what="HR frames",
        conversions=conv,
    )
    kept = set(hr_set.files)
    lr_files = [pairs[i][0] for i in train_idx if pairs[i][1] in kept]
    lr_set = FrameSet(lr_files, cache_mb=cfg.cache_mb // 2, what="LR frames", conversions=conv)
    check_pair_sizes(lr_set, hr_set, s)
    val_pairs = [_read_val_pair(*pairs[i], s, quantum, cfg.val_crop, conv) for i in val_idx]
    if val_hr_files:
        total += len(val_hr_files)
        val_pairs += synthetic_val(
            [read_rgb8(p, conv) for p in val_hr_files], degrader, cfg.seed, quantum, cfg.val_crop
        )
    return _Sets(hr_set, lr_set, val_pairs, total)


def _read_val_pair(
    lr_path: Path, hr_path: Path, s: int, quantum: int, size: int, conv: Conversions
) -> tuple[np.ndarray, np.ndarray]:
    lr, hr = read_rgb8(lr_path, conv), read_rgb8(hr_path, conv)
    if hr.shape != (lr.shape[0] * s, lr.shape[1] * s, 3):
        raise VhsupError(
            f"LR {lr_path.name} is {lr.shape[1]}x{lr.shape[0]} and HR is "
            f"{hr.shape[1]}x{hr.shape[0]}; x{s} training needs HR = "
            f"{lr.shape[1] * s}x{lr.shape[0] * s}",
            hr_path,
        )
    return centre_pair(lr, hr, s, quantum, size)


def synthetic_val(frames: list[np.ndarray], degrader: Degrader, seed: int, quantum: int, size: int) -> ValPairs:
    """(LR, HR) validation pairs, each LR degraded once on the CPU from a
    fixed per-frame seed: the same held-out set on every machine and resume."""
    pairs = []
    for i, hr in enumerate(frames):
        hr = centre_crop(hr, quantum, size)
        t = torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255.0
        g = torch.Generator().manual_seed(derive_seed(seed, "val-degrade", i))
        lr = degrader(t, g)
        lr8 = (lr[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        pairs.append((np.ascontiguousarray(lr8), hr))
    return pairs


def centre_crop(img: np.ndarray, quantum: int, size: int) -> np.ndarray:
    """A centred crop at most ``size`` px each way (0: whole), sides multiples of ``quantum``."""
    h, w = img.shape[:2]
    ch, cw = (h, w) if size <= 0 else (min(h, size), min(w, size))
    ch, cw = ch - ch % quantum, cw - cw % quantum
    if ch < quantum or cw < quantum:
        raise VhsupError(f"validation frame is {w}x{h}, too small for this x{quantum} model")
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def centre_pair(lr: np.ndarray, hr: np.ndarray, s: int, quantum: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The same centred crop of an LR picture and its x``s`` HR partner."""
    lq = max(1, quantum // s)
    lr_c = centre_crop(lr, lq, size // s if size > 0 else 0)
    h, w = lr.shape[:2]
    ch, cw = lr_c.shape[:2]
    y, x = (h - ch) // 2, (w - cw) // 2
    return lr_c, np.ascontiguousarray(hr[y * s : (y + ch) * s, x * s : (x + cw) * s])
