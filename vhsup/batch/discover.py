"""Find the videos in a library folder.

The rule, cheapest check first:

* Hidden files and folders (a leading dot), the output folder when it lies
  inside the source, and vhsup's own partial outputs are never looked at.
* A file with a video extension (``.avi``, ``.mkv``, ``.vob``, ``.ts``, ...)
  is always a job, even if it turns out empty or broken: the user put it in
  the library as a video, so a failure must be reported, not hidden.
* A file with an extension known to be something else - text, pictures,
  audio, subtitles, DVD navigation files (``.ifo``/``.bup``), archives,
  disc images - is ignored without being opened.
* Anything else (no extension, ``.dat`` from a VCD, an odd capture tool's
  suffix) is probed: it is a job only if FFmpeg opens it as a container with
  a video stream. Still-image and text demuxers do not count, so a stray
  picture or ``README`` never becomes a "video".

``--include``/``--exclude`` globs match the path relative to the source
folder (``*`` also crosses ``/``, so ``*.avi`` matches at any depth); an
exclude that matches a folder skips everything under it.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vhsup.errors import VhsupError


def _suffixes(*groups: str) -> frozenset[str]:
    return frozenset(" ".join(groups).split())


VIDEO_EXTENSIONS = _suffixes(
    ".avi .mkv .mk3d .mp4 .m4v .mov .qt .mpg .mpeg .mpe .m1v .m2v .vob .ts .m2ts .mts .m2t .tod .mod",
    ".dv .dif .wmv .asf .flv .f4v .webm .ogv .ogm .3gp .3g2 .nut .y4m .mxf .rm .rmvb .divx .xvid",
    ".evo .h264 .264 .hevc .265 .mjpeg .mjpg .amv .vro",
)

NOT_VIDEO_EXTENSIONS = _suffixes(
    # text, documents, metadata
    ".txt .nfo .md .rst .log .json .xml .yaml .yml .toml .ini .cfg .csv .tsv .html .htm .pdf .doc .docx",
    ".odt .rtf .db .sqlite .sqlite3 .db-wal .db-shm .db-journal .lock .tmp .part .bak",
    # pictures (covers, screenshots, contact sheets)
    ".jpg .jpeg .png .gif .bmp .tif .tiff .webp .heic .heif .avif .psd .svg .ico .thm",
    # audio (nothing to upscale)
    ".mp3 .wav .flac .aac .ac3 .eac3 .dts .m4a .ogg .oga .opus .wma .aif .aiff .mka .mpa .mp2 .w64",
    # subtitles and chapters (muxed in from the source, never upscaled alone)
    ".srt .sub .idx .ass .ssa .vtt .sup .smi .ttml .lrc .cue .chapters",
    # DVD/Blu-ray navigation, disc images, archives, checksums, programs
    ".ifo .bup .bdmv .clpi .mpls .iso .img .bin .nrg .mdf .mds .zip .rar .7z .tar .gz .bz2 .xz .zst",
    ".sfv .md5 .sha1 .sha256 .par2 .torrent .exe .dll .so .dylib .py .sh .bat .ds_store",
    # vhsup's own model and project files
    ".pth .pt .safetensors .onnx .param .ckpt",
)

# Demuxers that "open" pictures or text as a one-stream video: not a tape.
_STILL_FORMATS = ("image2", "tty", "lavfi", "apng", "gif", "webp", "ico", "bmp", "svg")
_TEMP_MARK = ".vhsup-partial-"  # vhsup.media.encode's temp-file mark (hidden files anyway)


@dataclass(frozen=True)
class Found:
    """One input of the batch.

    Attributes:
        path: the file (absolute).
        rel: its path relative to the source folder, with ``/`` separators;
            the manifest's key and the output's place under OUT.
        size, mtime_ns: from stat, for the change check.
        by: 'extension' (a video suffix) or 'probe' (opened as video).
    """

    path: Path
    rel: str
    size: int
    mtime_ns: int
    by: str


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _excluded_dir(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel + "/", p) for p in patterns)


def is_probable_video(path: Path) -> bool:
    """Whether FFmpeg opens ``path`` as a video container (not a still or text)."""
    from vhsup.media.decode import open_input

    try:
        container = open_input(path)
    except VhsupError:
        return False
    try:
        names = container.format.name.split(",")
        return not any(n in _STILL_FORMATS or n.endswith("_pipe") for n in names)
    finally:
        container.close()


def classify(path: Path) -> str | None:
    """'extension', 'probe' or None (not a video) for one file."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "extension"
    if suffix in NOT_VIDEO_EXTENSIONS:
        return None
    try:
        if path.stat().st_size == 0:
            return None  # an empty file of no known kind is nothing to report
    except OSError:
        return None
    return "probe" if is_probable_video(path) else None


def discover(
    src: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> list[Found]:
    """The videos under ``src`` in a stable (sorted) order; see the module doc for the rule.

    ``src`` may also be a single file. Raises VhsupError if it does not exist.
    """
    root = Path(src).expanduser()
    if not root.exists():
        raise VhsupError("no such folder", root)
    include, exclude = list(include), list(exclude)
    out_dir = Path(out).expanduser().resolve() if out is not None else None

    def consider(path: Path, rel: str) -> Found | None:
        if path.name.startswith(".") or _TEMP_MARK in path.name:
            return None
        if include and not _matches(rel, include):
            return None
        if exclude and _matches(rel, exclude):
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        by = classify(path)
        return Found(path.resolve(), rel, st.st_size, st.st_mtime_ns, by) if by else None

    if root.is_file():
        found = consider(root, root.name)
        return [found] if found else []

    results: list[Found] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
        here = Path(dirpath)
        rel_dir = PurePosixPath(*here.relative_to(root).parts) if here != root else PurePosixPath()
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            sub = here / d
            if out_dir is not None and sub.resolve() == out_dir:
                continue
            if exclude and _excluded_dir(str(rel_dir / d), exclude):
                continue
            keep.append(d)
        dirnames[:] = keep  # os.walk descends only into these
        for name in sorted(filenames):
            found = consider(here / name, str(rel_dir / name))
            if found:
                results.append(found)
    results.sort(key=lambda f: f.rel)
    return results


def output_paths(found: Sequence[Found], out: Path, ext: str, keep: dict[str, Path] | None = None) -> dict[str, Path]:
    """Where each input's upscale goes: ``OUT/<rel dir>/<stem>.<ext>``.

    Two inputs that would share a name (``a.avi`` and ``a.mp4`` in one folder)
    both get their source suffix kept (``a.avi.mkv``, ``a.mp4.mkv``) so that
    neither overwrites the other. ``keep`` holds outputs the manifest already
    assigned: an input keeps its output across runs even if a namesake
    appears later.
    """
    ext = ext if ext.startswith(".") else f".{ext}"
    keep = dict(keep or {})
    plain: dict[str, list[Found]] = {}
    for f in found:
        rel = PurePosixPath(f.rel)
        plain.setdefault(str(rel.with_suffix(ext)).lower(), []).append(f)
    taken = {str(p).lower() for p in keep.values()}
    result: dict[str, Path] = {}
    for group in plain.values():
        for f in group:
            if f.rel in keep:
                result[f.rel] = keep[f.rel]
                continue
            rel = PurePosixPath(f.rel)
            name = rel.with_suffix(ext) if len(group) == 1 else rel.with_name(rel.name + ext)
            dst = out.joinpath(*name.parts)
            if str(dst).lower() in taken:
                dst = out.joinpath(*rel.with_name(rel.name + ext).parts)
            taken.add(str(dst).lower())
            result[f.rel] = dst
    return result
