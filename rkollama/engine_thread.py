"""EngineThread: one thread that owns a loaded backend and runs every call on it.

Why a dedicated thread: engines bind per-thread state to the thread that calls them. llama.cpp
built with OpenMP keeps a thread team per calling thread, so generating from whichever HTTP
worker thread took the request leaves several teams competing for the cores (measured: decode
speed halves on 2 cores). The RKLLM runtime likewise wants one owner thread per handle.
Events cross to the request thread through a per-request queue; exceptions travel in-band.
"""

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

T = TypeVar("T")

_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class EngineThread:
    def __init__(self, name: str):
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the engine thread and return its result (or raise its exception)."""
        box: queue.Queue[Any] = queue.Queue(maxsize=1)

        def job() -> None:
            try:
                box.put((True, fn(*args)))
            except BaseException as exc:  # delivered to the caller, never lost on this thread
                box.put((False, exc))

        self._jobs.put(job)
        ok, value = box.get()
        if not ok:
            raise value
        return cast(T, value)

    def stream(self, make_events: Callable[[], Iterable[T]]) -> Iterator[T]:
        """Iterate, on the engine thread, the generator `make_events()`; yield its items here."""
        out: queue.Queue[Any] = queue.Queue()

        def job() -> None:
            try:
                for item in make_events():
                    out.put(item)
            except BaseException as exc:
                out.put(_Raised(exc))
            out.put(_END)

        self._jobs.put(job)
        return _drain(out)

    def stop(self) -> None:
        """Finish queued jobs, then end the thread (does not wait)."""
        self._jobs.put(None)


def _drain(out: queue.Queue[Any]) -> Iterator[Any]:
    while True:
        item = out.get()
        if item is _END:
            return
        if isinstance(item, _Raised):
            raise item.exc
        yield item
