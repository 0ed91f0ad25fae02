"""Run a pipeline stage in a background thread behind a bounded queue.

PyAV releases the GIL while it demuxes, decodes, filters, converts and
encodes, and torch releases it in its kernels, so a decode thread, the
inference loop and an encode thread really do run at the same time. The
queue is bounded so that a slow consumer holds memory flat: a stage never
runs more than ``maxsize`` items ahead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Background(Iterator[T]):
    """Iterate ``source`` in a daemon thread; re-raise its errors here.

    ``close()`` (or leaving a ``with`` block) tells the thread to stop at its
    next item, so an aborted run does not leave a decoder spinning.
    """

    def __init__(self, source: Iterable[T], maxsize: int = 8, name: str = "stage"):
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._run, name=f"vhsup-{name}", daemon=True)
        self._finished = False
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(exc))
            return
        finally:
            close = getattr(self._source, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing a generator early
                    pass
        self._put(_DONE)

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.exc
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        self._finished = True
        # Drain so that a producer blocked on put() sees the stop flag.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)

    def __enter__(self) -> Background[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Worker:
    """A consumer thread: ``submit(item)`` hands work to ``fn`` in order.

    Used for the encode stage. Errors raised by ``fn`` surface on the next
    ``submit`` or on ``finish``, so the producer stops promptly.
    """

    def __init__(self, fn: Callable[[T], None], maxsize: int = 4, name: str = "worker"):
        self._fn = fn
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, maxsize))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"vhsup-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # drain without working after a failure
            try:
                self._fn(item)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - re-raised in the producer
                self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: T) -> None:
        self._check()
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                break
            except queue.Full:
                self._check()
                if not self._thread.is_alive():
                    raise RuntimeError("encode stage stopped unexpectedly") from None

    def finish(self) -> None:
        """Wait for all submitted work; re-raise the first failure."""
        self._queue.put(_DONE)
        self._thread.join()
        self._check()

    def cancel(self) -> None:
        """Stop without doing the queued work (the thread drains the queue)."""
        if self._error is None:
            self._error = RuntimeError("cancelled")
        while self._thread.is_alive():
            try:
                self._queue.put(_DONE, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(timeout=10)
