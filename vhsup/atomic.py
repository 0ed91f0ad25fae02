"""Files vhsup writes: where it may write them, and how.

``check_output`` is the one set of guards for every file a command writes
(``-o``, ``--compare``, an exported model, a selector map): never an input,
not even through a link; never an existing file without ``--overwrite``;
never the same path twice in one run; and a folder that exists. Commands
call it for all their outputs before any work starts.

``replacing`` writes so that the final name only ever holds a complete
file, with the permissions of a file created normally (the umask applies).
"""

from __future__ import annotations

import contextvars
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vhsup.errors import VhsupError

#: True while a command line runs: errors then name ``--overwrite``, not the keyword.
CLI = contextvars.ContextVar("vhsup_cli", default=False)


def overwrite_hint() -> str:
    """How the caller asks to replace a file: a flag on the command line, a keyword in Python."""
    return "pass --overwrite to replace it" if CLI.get() else "pass overwrite=True to replace it"


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two names reach one file: the same path, a link, or a hard link."""
    a, b = Path(a), Path(b)
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_output(
    path: str | os.PathLike[str],
    *,
    what: str = "output",
    inputs: Iterable[str | os.PathLike[str]] = (),
    others: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = False,
) -> Path:
    """Refuse, in one line naming ``path``, an output that would lose or clobber something.

    ``inputs`` are files the run reads; ``others`` are the other files the
    same run writes. Checked in the order a user can fix them.
    """
    path = Path(path)
    if path.is_dir():
        raise VhsupError(f"{what} is a directory; give a file name", path)
    for src in inputs:
        if same_file(path, src):
            raise VhsupError(f"{what} would overwrite the input; choose another name", path)
    for other in others:
        if same_file(path, other):
            raise VhsupError(f"{what} is the same file as another output of this run ({other})", path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise VhsupError(f"{what} already exists; {overwrite_hint()}", path)
        if not path.is_file():
            raise VhsupError(f"{what} exists and is not a regular file", path)
    parent = path.parent
    if not parent.is_dir():
        raise VhsupError(f"the folder for the {what} does not exist", parent)
    if not os.access(parent, os.W_OK):
        raise VhsupError(f"the folder for the {what} is not writable", parent)
    return path


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then put it back
    os.umask(mask)
    return mask


def temp_file(path: str | os.PathLike[str], prefix: str, suffix: str) -> Path:
    """Create an empty temp file beside ``path`` with a normal file's mode.

    ``mkstemp`` makes files 0600, and a rename keeps the mode: a NAS share or
    another user could not read what vhsup wrote. This gives 0666 less the
    umask, as ``open()`` would (0644 under the usual 022).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(name)


@contextmanager
def replacing(path: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Yield a temp path beside ``path``; move it over ``path`` if the block succeeds.

    The temp file keeps ``path``'s extension (muxers and encoders choose the
    format from it) and is removed whatever happens. ``OSError`` (a missing
    folder, no permission, a full disk) becomes a one-line VhsupError saying
    what could not be written.
    """
    path = Path(path)
    try:
        tmp = temp_file(path, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    except OSError as exc:
        raise VhsupError(f"cannot write the {what}: {exc.strerror or exc}", path) from exc
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise VhsupError(f"cannot write the {what}: {exc.strerror or exc}", path) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
