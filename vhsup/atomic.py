"""Write a file so that its final name only ever holds a complete file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vhsup.errors import VhsupError


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
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
        os.close(fd)
    except OSError as exc:
        raise VhsupError(f"cannot write the {what}: {exc.strerror or exc}", path) from exc
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise VhsupError(f"cannot write the {what}: {exc.strerror or exc}", path) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
