"""The one exception type for problems a user can cause or fix.

Its message is a single line that names the file (when there is one) and the
reason. The CLI prints it without a traceback; ``--debug`` shows the chain.
:class:`OutOfMemory` is not one of them: the engine catches it and backs off.
"""

from __future__ import annotations

import os


class VhsupError(Exception):
    """A user-facing error: bad input, a refused output, a missing model."""

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None):
        self.reason = " ".join(str(reason).split())  # always one line
        self.path = os.fspath(path) if path is not None else None
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)


class UnknownArchitecture(VhsupError):
    """A weights file whose layout matches none of vhsup's own architectures.

    vhsup may still load it through spandrel (:mod:`vhsup.weights.community`).
    """


class Interrupted(VhsupError):
    """Raised when the user presses Ctrl-C (or SIGTERM/SIGHUP stop a command,
    see vhsup.signals); nothing is left under the output name."""


class OutOfMemory(RuntimeError):
    """A device could not allocate what one forward pass needs.

    Raised by the backends (and by :func:`vhsup.engine.typed_out_of_memory`
    for torch's own allocation failures), so that the engine recognises an
    out-of-memory error by its type, whatever the allocator's wording. The
    engine retries with a smaller batch or tile, and only when it cannot
    go smaller says so with a VhsupError.
    """
