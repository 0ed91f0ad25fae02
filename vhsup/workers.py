"""Worker processes: the one pool that chunked runs and local batches use.

A :class:`Pool` runs ``task(job, report)`` for each job in spawned
processes, one job at a time per worker, and tells the parent what happens
as :class:`Event` values: a job handed to a worker, a message the task
reported on the way, its result or its failure, a worker that died.

* **GPUs, one rule.** The visible GPUs are the ids in
  ``CUDA_VISIBLE_DEVICES`` (every device where it is unset), as many as CUDA
  finds; none for ``--device cpu`` or an explicit ``cuda:N`` (the user's
  choice, for every worker). Worker *i* of *n* sees only GPU ``i mod g`` of
  the *g* visible ones; with none visible, workers keep the parent's view
  (:func:`assign_gpus`).
* **CPU threads shared.** Each worker gets an equal share of the cores this
  process may use, at least one (:func:`threads_each`), for torch and OpenMP.
* **Stopping.** Workers leave on their own once there is no more work.
  Ctrl-C reaches the whole process group but workers ignore it: the parent
  decides, and :meth:`Pool.stop` ends the ones still there with SIGTERM,
  which aborts the job in hand so it removes its partial file (see
  :func:`vhsup.signals.worker_stops`); SIGHUP is left to the parent too.
* **Parent death.** A worker whose parent is gone (SIGKILLed) stops as if
  SIGTERMed, so no orphan goes on writing beside a rerun: the
  parent-death signal on Linux, and a watch thread everywhere, which also
  ends a worker whose clean-up hangs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from vhsup import signals
from vhsup.errors import Interrupted, VhsupError

Key = int | str  # names a job in the events
Report = Callable[[Any], None]
#: ``task(job, report)``: runs one job in a worker and returns its (picklable) result;
#: ``report(body)`` sends a message to the parent on the way. A module-level function.
Task = Callable[[Any, Report], Any]

_LEAVE_GRACE_S = 10.0  # an orphan's clean-up gets this long before the worker exits anyway


# --- who gets what -------------------------------------------------------------


def visible_ids(env: str | None, count: int) -> list[str]:
    """The GPU ids ``CUDA_VISIBLE_DEVICES=env`` names (``0..count-1`` where unset), as many as CUDA found (``count``)."""
    ids = [d.strip() for d in env.split(",") if d.strip()] if env else [str(i) for i in range(count)]
    return ids[:count]


def visible_gpus(device: str) -> list[str]:
    """GPU ids to hand out to workers for ``--device device`` (empty: CPU workers, or the user chose a GPU)."""
    if device not in ("auto", "cuda"):
        return []  # cpu, or an explicit cuda:N: the user's choice for every worker
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA means CPU workers
        return []
    return visible_ids(os.environ.get("CUDA_VISIBLE_DEVICES"), count)


def assign_gpus(visible: Sequence[str], workers: int) -> list[str | None]:
    """The GPU each of ``workers`` workers sees: round robin over ``visible``; None (the parent's view) without GPUs."""
    if not visible:
        return [None] * workers
    return [visible[i % len(visible)] for i in range(workers)]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_each(workers: int, available: int | None = None) -> int:
    """CPU threads per worker: an equal share of the cores, at least one."""
    return max(1, (available or cores()) // max(1, workers))


def throttled(send: Callable[[int, int], None], every: float) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` that passes at most one call per ``every`` seconds on, and the last one."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every or done == total:
            last[0] = now
            send(done, total)

    return progress


def death_reason(code: int | None) -> str:
    """Why a worker process ended, from its exit code, in one line."""
    if code is not None and code < 0:
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the worker process was killed by {signals.name(-code)}{hint}"
    return f"the worker process exited unexpectedly (status {code})"


# --- what the parent hears -------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A task's exception, as plain data from the worker."""

    kind: str  # the exception's class name
    text: str
    path: str | None = None  # VhsupError's path
    trace: str = ""


Kind = Literal["started", "message", "done", "failed", "died", "interrupted"]


@dataclass(frozen=True)
class Event:
    """What a pool tells its parent.

    kind: ``started`` (the job was handed to ``worker``), ``message`` (the
    task reported ``body``), ``done`` (``body`` is its result), ``failed``
    (``body`` is a :class:`Failure`), ``died`` (the worker ended without
    being told to, holding ``key`` or None, ``body`` its exit code) and, from
    :meth:`Pool.stop`, ``interrupted`` (the job was in hand when the pool
    stopped).
    """

    kind: Kind
    key: Key | None  # None: a worker that died holding no job
    body: Any = None
    worker: str = ""  # host:pid
    pid: int | None = None


# --- the worker process ------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    if signals.received() is None:
        os.kill(os.getpid(), signal.SIGTERM)  # abort the job in hand, as the parent would
    time.sleep(_LEAVE_GRACE_S)
    os._exit(3)  # the clean-up hangs: leave anyway


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG: SIGTERM when the parent dies, however
    except (OSError, AttributeError):
        pass
    threading.Thread(target=_watch_parent, args=(parent,), name="vhsup-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _serve(conn: Connection, task: Task, parent: int, gpu: str | None, threads: int) -> None:
    """A worker: (key, job) pairs in, messages and results out, until told there is no more work."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    # SIGTERM (the parent stopping it, or the parent-death signal) aborts the job, which removes its
    # partial file; a second one does not cut that clean-up short.
    signals.worker_stops()
    _die_with_parent(parent)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch sees CUDA
    os.environ["OMP_NUM_THREADS"] = str(threads)
    lock = threading.Lock()  # a task may report from several threads

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    try:
        import torch

        torch.set_num_threads(threads)
        while signals.received() is None:
            item = conn.recv()
            if item is None:
                return
            key, job = item

            def report(body: Any, key: Key = key) -> None:
                send(("message", key, body))

            try:
                result = task(job, report)
            except (KeyboardInterrupt, Interrupted):
                return  # stopped: the parent accounts for the job
            except Exception as exc:  # noqa: BLE001 - the parent decides what a failure means
                path = exc.path if isinstance(exc, VhsupError) else None
                text = exc.reason if isinstance(exc, VhsupError) else str(exc)
                send(("failed", key, Failure(type(exc).__name__, text, path, traceback.format_exc())))
                continue
            send(("done", key, result))
    except (KeyboardInterrupt, EOFError, OSError):
        return  # stopped between jobs, or the parent is gone: nothing to clean up, no traceback
    finally:
        # Done with jobs: a SIGTERM from now on (the parent tidying up while this
        # process exits) has nothing to abort and must not print a traceback.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --- the pool ------------------------------------------------------------------------


class _Seat:
    """One worker process, its pipe and the job it holds."""

    def __init__(self, ctx: Any, pool: Pool, slot: int, gpu: str | None, threads: int):
        self.slot, self.gpu, self.threads = slot, gpu, threads
        self.conn, child = ctx.Pipe()
        # Not a daemon: a job may start processes of its own. The pool stops and joins its
        # workers itself, and they die with the parent (see _die_with_parent).
        self.process = ctx.Process(
            target=_serve, args=(child, pool.task, os.getpid(), gpu, threads), name=f"{pool.name}-{slot}", daemon=False
        )
        self.process.start()
        child.close()
        self.key: Key | None = None
        self.retired = False  # told there is no more work
        self.name = f"{socket.gethostname()}:{self.process.pid}"

    def give(self, key: Key, job: Any) -> bool:
        try:
            self.conn.send((key, job))
        except OSError:  # it died idle: its sentinel says so next
            self.retired = True
            return False
        self.key = key
        return True

    def retire(self) -> None:
        try:
            self.conn.send(None)  # no more work: let it leave
        except OSError:
            pass
        self.retired = True

    def event(self, kind: Kind, key: Key | None, body: Any = None) -> Event:
        return Event(kind, key, body, self.name, self.process.pid)

    def drain(self) -> Iterator[Event]:
        """What the worker has sent so far."""
        try:
            while not self.conn.closed and self.conn.poll():
                kind, key, body = self.conn.recv()
                if kind in ("done", "failed"):
                    if key != self.key:
                        continue  # not the job it holds: nothing to account for
                    self.key = None
                yield self.event(kind, key, body)
        except (EOFError, OSError):
            pass


class Pool:
    """Spawned workers that run ``task(job, report)`` for each job (see the module's notes).

    ``device`` decides the GPUs handed out (:func:`visible_gpus`); ``gpus``
    gives them instead. Use :meth:`run` for the events and call :meth:`stop`
    afterwards whatever happened (a ``finally``).

    Workers are started with multiprocessing's ``spawn``, which imports the
    caller's main module again in each: a script must run the pool under
    ``if __name__ == "__main__":``.
    """

    def __init__(
        self,
        task: Task,
        workers: int,
        *,
        device: str = "auto",
        name: str = "vhsup-worker",
        gpus: Sequence[str] | None = None,
    ):
        self.task = task
        self.size = max(1, workers)
        self.name = name
        self.visible = list(gpus) if gpus is not None else visible_gpus(device)
        self._seats: list[_Seat] = []

    def run(self, jobs: Iterable[tuple[Key, Any]]) -> Iterator[Event]:
        """Hand out the ``(key, job)`` pairs and tell what happens, until every job is
        answered and the workers have left. A worker that dies is replaced while jobs wait."""
        queue = deque(jobs)
        count = min(self.size, len(queue))
        if not count:
            return
        ctx = mp.get_context("spawn")
        signals.start_resource_tracker()
        gpus, threads = assign_gpus(self.visible, count), threads_each(count)
        self._seats = [_Seat(ctx, self, slot, gpus[slot], threads) for slot in range(count)]
        while self._seats:
            for seat in self._seats:
                if seat.key is not None or seat.retired:
                    continue
                if not queue:
                    seat.retire()
                elif seat.give(*queue[0]):
                    key, _ = queue.popleft()
                    yield seat.event("started", key)
            ready = wait([s.conn for s in self._seats] + [s.process.sentinel for s in self._seats], timeout=1.0)
            for i, seat in enumerate(self._seats):
                if seat.conn in ready:
                    yield from seat.drain()
                if seat.process.sentinel in ready or not seat.process.is_alive():
                    seat.process.join(1)
                    yield from seat.drain()  # a result sent just before it ended still counts
                    seat.conn.close()
                    held, seat.key = seat.key, None
                    self._seats[i] = _Seat(ctx, self, seat.slot, seat.gpu, seat.threads) if queue else seat
                    if held is not None or not seat.retired or seat.process.exitcode:
                        yield seat.event("died", held, seat.process.exitcode)
            self._seats = [s for s in self._seats if not s.conn.closed]  # the ended ones go

    def stop(self) -> list[Event]:
        """End the workers still there and say what became of their jobs.

        SIGTERM aborts a worker's job, which removes its partial output; one
        that does not end within 15 s is killed. Returns what they sent
        meanwhile (a job that finished as the stop came in is done) and an
        ``interrupted`` event for each job still in hand.
        """
        seats, self._seats = self._seats, []
        for seat in seats:
            if seat.process.is_alive():
                seat.process.terminate()
        events: list[Event] = []
        for seat in seats:
            seat.process.join(15)
            if seat.process.is_alive():  # stuck: multiprocessing would wait for it forever at exit
                seat.process.kill()
                seat.process.join(5)
            events.extend(seat.drain())
            seat.conn.close()
            if seat.key is not None:
                events.append(seat.event("interrupted", seat.key))
        return events
