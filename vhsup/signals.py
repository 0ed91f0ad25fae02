"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

``timeout``, a closed terminal, systemd and ``docker stop`` end a process
with SIGTERM or SIGHUP, whose default action kills it on the spot: no
clean-up runs and a half-written ``.NAME.vhsup-partial-*`` file stays
behind. While a command runs, :func:`interrupts` turns these signals into
:class:`Signalled`, a KeyboardInterrupt, so every clean-up path written for
Ctrl-C runs for them too; the command then exits with 128 + the signal's
number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), see
:func:`exit_status`.

Only the command line (:mod:`vhsup.cli_errors`) and ``run_batch`` install
handlers, and only for as long as they run; importing vhsup changes nothing
in a program's signal handling. Training takes them over to finish the step
in hand and save a checkpoint first. Worker processes call
:func:`worker_stops`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: Signals that ask a command to stop, besides Ctrl-C's SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_received: int | None = None  # the first stop signal of this command


class Signalled(KeyboardInterrupt):
    """A stop signal arrived; handled wherever a KeyboardInterrupt is."""

    def __init__(self, signum: int):
        super().__init__(name(signum))
        self.signum = signum


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def note(signum: int) -> None:
    """Record the signal that stops this command (the first one counts)."""
    global _received
    if _received is None:
        _received = signum


def received() -> int | None:
    """The SIGTERM or SIGHUP that stopped this command, if one did."""
    return _received


def exit_status() -> int:
    """128 + the stopping signal, as a shell reports a command killed by it; 130 for Ctrl-C."""
    return 128 + int(_received or signal.SIGINT)


def reason_prefix() -> str:
    """``'SIGTERM: '`` for a message about a stop by SIGTERM or SIGHUP; empty for Ctrl-C."""
    return f"{name(_received)}: " if _received is not None else ""


def _raise_once(signum: int, frame) -> None:
    first = _received is None
    note(signum)
    if first:
        raise Signalled(signum)
    # A repeat (systemd signals every process of the service, timeout the whole
    # group) must not cut the clean-up of the first one short.


def handles(signum: int) -> bool:
    """Whether ``signum`` is turned into an interrupt right now."""
    return signal.getsignal(signum) is _raise_once


@contextmanager
def interrupts(signums: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """While inside, ``signums`` raise :class:`Signalled` (once) in the main thread.

    Nests: an inner use leaves the outer one's handlers alone. Outside the
    main thread (where Python cannot set handlers) it does nothing.
    """
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not any(handles(s) for s in STOP_SIGNALS):
        _received = None  # the outermost command: a new run, no stop yet
    previous = {s: signal.getsignal(s) for s in signums if not handles(s)}
    for s in previous:
        signal.signal(s, _raise_once)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def worker_stops() -> None:
    """In a worker process: SIGTERM, its parent's way to stop it, raises
    :class:`Signalled` once, so the job aborts as on Ctrl-C and removes its
    partial file; SIGHUP is left to the parent, which stops its workers."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_once)


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker, before a run's workers, with SIGHUP blocked.

    The tracker is a helper process shared by the workers. It ignores SIGINT
    and SIGTERM but not SIGHUP, so a closed terminal would kill it with the
    rest of the process group, and the replacement started for the clean-up
    would print a traceback for every semaphore the stopped run releases.
    A blocked signal stays blocked across exec; one that arrives meanwhile
    waits in this process and is handled as soon as the tracker runs.
    """
    from multiprocessing import resource_tracker

    if not hasattr(signal, "pthread_sigmask"):
        resource_tracker.ensure_running()
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
