"""EngineThread: one thread that owns a loaded in-process backend and runs every call on it,
and OnEngineThread, the Backend the scheduler sees for such an engine.

Why a dedicated thread: engines bind per-thread state to the thread that calls them. llama.cpp
built with OpenMP keeps a thread team per calling thread, so generating from whichever HTTP
worker thread took the request leaves several teams competing for the cores (measured: decode
speed halves on 2 cores). The RKLLM runtime likewise wants one owner thread per handle.
Events cross to the request thread through a per-request queue; exceptions travel in-band.
"""

import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from rkollama.backends.base import Backend
from rkollama.core.types import Done, Generation, LoadOptions, Token
from rkollama.errors import LoadFailed

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec

T = TypeVar("T")
P = ParamSpec("P")

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

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` on the engine thread and return its result (or raise its exception)."""
        box: queue.Queue[Any] = queue.Queue(maxsize=1)

        def job() -> None:
            try:
                box.put((True, fn(*args, **kwargs)))
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


class OnEngineThread(Backend):
    """An in-process engine behind its own EngineThread: loaded, run and closed there, so every
    method of this wrapper may be called from any thread (as a runner process's are)."""

    def __init__(self, inner: Backend, engine: EngineThread):
        self.inner, self._engine = inner, engine
        self.kind, self.device = inner.kind, inner.device
        self.constrains_format = inner.constrains_format
        self.context_length, self.memory_bytes = inner.context_length, inner.memory_bytes
        self.slots, self.batch_window_s = inner.slots, inner.batch_window_s
        self.continuous = inner.continuous

    @classmethod
    def load(cls, spec: "ModelSpec", opts: LoadOptions, settings: "Settings",
             backend_cls: type[Backend] | None = None) -> "OnEngineThread":
        if backend_cls is None:
            raise LoadFailed("no engine given to load on its thread")
        return cls.start(spec.name.display(), lambda: backend_cls.load(spec, opts, settings))

    @classmethod
    def start(cls, label: str, load: Callable[[], Backend]) -> "OnEngineThread":
        """A new engine thread for `label`, and the backend `load()` returns when run on it."""
        engine = EngineThread(f"engine {label}")
        try:
            inner = engine.call(load)
        except BaseException:
            engine.stop()
            raise
        return cls(inner, engine)

    def generate(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        if self.continuous:  # the engine's own loop thread batches them: no hop to this one
            return self.inner.generate(gen, cancel)
        return self._engine.stream(lambda: self.inner.generate(gen, cancel))

    def generate_batch(self, batch: list[tuple[int, Generation, threading.Event]]
                       ) -> Iterator[tuple[int, Token | Done]]:
        return self._engine.stream(lambda: self.inner.generate_batch(batch))

    def batch_key(self, gen: Generation) -> Hashable:
        return self.inner.batch_key(gen)

    def render(self, gen: Generation) -> str:
        return self._engine.call(self.inner.render, gen)

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        return self._engine.call(self.inner.embed, texts, truncate)

    def daemon_busy(self, busy: bool) -> None:
        self.inner.daemon_busy(busy)  # a flag for the engine's own loop, not work for this thread

    def close(self) -> None:
        """After any generation still queued on the engine thread has stopped."""
        try:
            self._engine.call(self.inner.close)
        finally:
            self._engine.stop()
