"""Runner processes: every loaded model lives in a child process of the daemon, as Ollama runs
its runners.

Native engines can segfault, abort or run out of memory (llama.cpp with a hostile option, the
vendor's NPU runtime). `RunnerBackend` looks like any backend to the scheduler but forwards
load/generate/embed/close over a pipe to a child process that holds the real backend. If the
child dies, the requests in flight fail with a clear error, the backend marks itself dead (the
scheduler then drops it) and the next request loads the model again. Unloading ends the process,
which returns all of the model's memory to the system. A token crosses as one short frame
(runner_channel.Channel), written by the engine's own loop where it has one and read by the
request's own thread (runner_mail.Mailroom); benchmarks/bench_peer.py measures the boundary.

In the child one engine thread runs every generation and embedding, so a llama.cpp built with
OpenMP keeps one thread team. With `n_batch > 1` (NPU) it batches concurrent generations into
one rkllm_run: requests that arrive within the batch window of each other (Modelfile
rkllm.batch_window_ms, default 20 ms; up to n_batch, same tools and system prompt) share a
forward pass; later ones wait for the next.
"""

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from rkollama.backends.base import Backend, Emit
from rkollama.backends.runner_channel import Channel, channel_pair
from rkollama.backends.runner_mail import Mailroom
from rkollama.backends.runner_pipe import (
    Busy,
    Cancel,
    Close,
    Closed,
    Embed,
    Emitted,
    EngineFacts,
    Failed,
    FromRunner,
    Generate,
    Loaded,
    LoadError,
    Render,
    Result,
    ToRunner,
)
from rkollama.core.types import Done, DoneReason, Generation, LoadOptions, Token
from rkollama.errors import BackendFailed, LoadFailed

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec

POLL_S = 0.05
"""How often a waiting generation checks its cancel event, in seconds."""
CLOSE_TIMEOUT_S = 30
PARENT_POLL_S = 1.0
"""How often a runner checks that its daemon is alive, in seconds."""

log = logging.getLogger("rkollama.runner")


class RunnerBackend(Backend):
    """The daemon's side of one runner process. Its methods may be called from any thread."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Channel, facts: EngineFacts,
                 label: str, engine: type[Backend]):
        self.process, self.conn, self.label, self.engine = process, conn, label, engine
        self.kind, self.device = facts.kind, facts.device
        self.constrains_format = facts.constrains_format
        self.context_length, self.memory_bytes = facts.context_length, facts.memory_bytes
        self.slots, self.batch_window_s = facts.slots, facts.batch_window_s
        self._dead = False
        self.stall_s: float | None = None
        """Seconds a generation may hear nothing from the runner before it is stopped."""
        self.mail = Mailroom(conn, label)
        self._closed = False

    @classmethod
    def load(cls, spec: "ModelSpec", opts: LoadOptions, settings: "Settings",
             backend_cls: type[Backend] | None = None) -> "RunnerBackend":
        """Start a runner process that loads `spec` with `backend_cls`; block until it is ready."""
        if backend_cls is None:
            raise LoadFailed("no engine given for the runner")
        label = spec.name.display()
        ctx = multiprocessing.get_context("spawn")  # never fork a threaded daemon
        parent, child = channel_pair(ctx)
        process = ctx.Process(target=_serve, args=(child, spec, opts, settings, backend_cls),
                              name=f"rkollama-runner {label}", daemon=True)
        process.start()
        child.close()
        limit = _seconds(settings.load_timeout)
        if not parent.poll(limit):
            process.kill()
            process.join(5)
            log.error("loading %s took longer than %ss (OLLAMA_LOAD_TIMEOUT): runner stopped",
                      label, limit)
            raise LoadFailed(f"loading {label} took longer than {settings.load_timeout} "
                             "(OLLAMA_LOAD_TIMEOUT); its runner was stopped")
        try:
            answer: Loaded | LoadError = parent.recv()
        except (EOFError, OSError):
            process.join(5)
            why = _death(process.exitcode, backend_cls)
            log.error("runner for %s died while loading: %s", label, why)
            raise LoadFailed(f"the runner for {label} died while loading: {why}") from None
        if isinstance(answer, LoadError):
            process.join(5)
            raise answer.error
        log.info("loaded %s in runner process %s (%s, context %s)", label, process.pid,
                 answer.facts.kind, answer.facts.context_length)
        backend = cls(process, parent, answer.facts, label, backend_cls)
        backend.stall_s = _seconds(settings.stall_timeout)
        return backend

    @property
    def dead(self) -> bool:
        """The runner is gone: a read met the pipe's end, or its process ended while nobody
        was reading (an idle runner killed by the system)."""
        if not self._dead and not self._closed and (self.mail.gone or not self.process.is_alive()):
            self._dead = True
        return self._dead

    @dead.setter
    def dead(self, value: bool) -> None:
        self._dead = value

    def _crashed(self) -> BackendFailed:
        self.dead = True
        self.process.join(1)
        code = self.process.exitcode
        why = _death(code, self.engine)
        log.error("runner for %s crashed: %s", self.label, why)
        return BackendFailed(f"{self.engine.title} crashed ({why}); "
                             "the model will be loaded again on the next request")

    # -- backend interface ---------------------------------------------------------------------
    def generate(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        request_id = self.mail.open(lambda rid: Generate(rid, gen))
        cancelled = finished = False
        heard = time.monotonic()
        try:
            while True:
                if cancel.is_set() and not cancelled:
                    cancelled = True
                    self.mail.send(Cancel(request_id))
                try:
                    message = self.mail.receive(request_id, POLL_S)
                except queue.Empty:
                    if self.stall_s is not None and time.monotonic() - heard > self.stall_s:
                        finished = True
                        raise self._stalled() from None
                    continue
                heard = time.monotonic()
                finished = not isinstance(message, Emitted) or isinstance(message.event, Done)
                if not isinstance(message, Emitted):
                    raise self._failure(message)
                yield message.event
                if finished:
                    return
        finally:
            if not finished and not cancelled:  # abandoned by its reader: stop it in the runner
                self.mail.send(Cancel(request_id))
            self.mail.close(request_id)

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        value = self._call(lambda rid: Embed(rid, texts, truncate))
        assert not isinstance(value, str)  # an Embed's answer
        return value

    def daemon_busy(self, busy: bool) -> None:
        self.mail.send(Busy(busy))  # a few bytes; a runner that is gone does not matter

    def render(self, gen: Generation) -> str:
        value = self._call(lambda rid: Render(rid, gen))
        assert isinstance(value, str)  # a Render's answer
        return value

    def _call(self, ask: Callable[[int], ToRunner]) -> tuple[list[list[float]], int] | str:
        """A backend call run on the runner's engine thread; its return value."""
        request_id = self.mail.open(ask)
        try:
            message = self.mail.receive(request_id, None)
        finally:
            self.mail.close(request_id)
        if not isinstance(message, Result):
            raise self._failure(message)
        return message.value

    def _stalled(self) -> BackendFailed:
        """The engine sent nothing for `stall_s`: its runner is stopped (a wedged NPU or engine
        never frees the model otherwise) and the next request loads the model again."""
        log.error("runner for %s sent nothing for %ss while generating: stopping it (RKOLLAMA_STALL_TIMEOUT)",
                  self.label, self.stall_s)
        self.dead = True
        self.process.kill()
        return BackendFailed(f"{self.engine.title} stopped answering ({self.stall_s:g} s without a token, "
                             "RKOLLAMA_STALL_TIMEOUT): its runner was stopped and the model will be "
                             "loaded again on the next request")

    def _failure(self, message: FromRunner | None) -> Exception:
        """What to raise for an answer that is not the one asked for: the runner's error, or its
        death."""
        if isinstance(message, Failed):
            return message.error
        if message is None:
            return self._crashed()
        return BackendFailed(f"the runner answered out of turn ({type(message).__name__})")

    def close(self) -> None:
        if self._closed:
            return
        if not self.dead:
            request_id = self.mail.open(Close)
            try:
                self.mail.receive(request_id, CLOSE_TIMEOUT_S)
            except queue.Empty:
                pass
            self.mail.close(request_id)
        self._closed = True
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()
        log.info("unloaded %s (runner process %s ended)", self.label, self.process.pid)


# -- the runner process ----------------------------------------------------------------------------
def _serve(conn: Channel, spec: "ModelSpec", opts: LoadOptions, settings: "Settings",
           backend_cls: type[Backend]) -> None:
    """Load the model, then serve requests until told to close (or the daemon goes away)."""
    # Ctrl+C in the daemon's terminal reaches the whole process group: the daemon decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    _log_to_stderr(settings)
    try:
        backend = backend_cls.load(spec, opts, settings)
    except Exception as exc:  # sent to the daemon, which reports it
        conn.send(LoadError(_portable(exc)))
        return
    slots = max(1, backend.slots)
    facts = EngineFacts(backend.kind, backend.device, backend.constrains_format, backend.context_length,
                        backend.memory_bytes, slots, backend.batch_window_s)
    conn.send(Loaded(facts))
    send_lock = threading.Lock()

    def send(message: FromRunner) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, EOFError, ValueError):
                pass  # the daemon went away; the receive loop ends too

    engine = _Engine(backend, slots, send, backend.batch_window_s)
    engine.start()
    while True:
        try:
            message: ToRunner = conn.recv()
        except (EOFError, OSError):
            break
        if isinstance(message, Generate):
            engine.add(message.request_id, message.gen)
        elif isinstance(message, Cancel):
            engine.cancel(message.request_id)
        elif isinstance(message, Embed):
            engine.call(message.request_id, partial(backend.embed, message.texts, message.truncate))
        elif isinstance(message, Render):
            engine.call(message.request_id, partial(backend.render, message.gen))
        elif isinstance(message, Busy):
            backend.daemon_busy(message.busy)
        elif isinstance(message, Close):
            engine.stop()
            backend.close()
            send(Closed(message.request_id))
            return
    engine.stop()
    backend.close()


SIGNAL_HINTS = {
    signal.SIGILL: "the engine was built for instructions this CPU lacks",
    signal.SIGKILL: "the system may have run out of memory (see `dmesg`)",
}
"""What a signal that killed a runner usually means, unless its engine says better
(Backend.death_hints)."""


def _death(code: int | None, engine: type[Backend]) -> str:
    """How a runner ended, in words: its exit code, or the signal that killed it and what that
    usually means for this engine."""
    if code is None or code >= 0:
        return f"runner exit code {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"killed by signal {-code}"
    hint = engine.death_hints.get(sig) or SIGNAL_HINTS.get(sig, "")
    return f"killed by {sig.name}" + (f": {hint}" if hint else "")


def _log_to_stderr(settings: "Settings") -> None:
    """The runner's log lines go where the daemon's do (its stderr), in the daemon's format,
    through a duplicate of fd 2: capturing a native library's output on fd 2 never loops them."""
    import os

    stream = os.fdopen(os.dup(2), "w", buffering=1)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if settings.debug else logging.INFO)


def _seconds(duration: str) -> float | None:
    """A duration setting in seconds; None for no limit (0, negative or "forever")."""
    from rkollama.durations import parse_keep_alive

    seconds = parse_keep_alive(duration)
    return None if seconds <= 0 or seconds == float("inf") else seconds


def _end_with_parent() -> None:
    """End this process within PARENT_POLL_S of the daemon's death, however it dies (a closed
    pipe alone is not noticed while the engine is busy in native code). Not PR_SET_PDEATHSIG:
    Linux sends that when the *thread* that started the runner ends, and the HTTP thread that
    loaded a model ends when it has been idle for a while, which killed loaded models."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass
class _Job:
    request_id: int
    gen: Generation | None = None
    cancel: threading.Event | None = None
    call: Callable[[], tuple[list[list[float]], int] | str] | None = None


class _Engine(threading.Thread):
    """Runs the model's work on one thread: generations one at a time, or n_batch at a time in
    one forward pass; other calls (embeddings) between them."""

    def __init__(self, backend: Backend, slots: int, send: Callable[[FromRunner], None],
                 window_s: float):
        super().__init__(name="runner-engine", daemon=True)
        self.backend, self.slots, self.send, self.window_s = backend, slots, send, window_s
        self.cond = threading.Condition()
        self.pending: list[_Job] = []
        self.cancels: dict[int, threading.Event] = {}
        self.stopping = False

    def add(self, request_id: int, gen: Generation) -> None:
        self.backend.expect(1)
        with self.cond:
            event = threading.Event()
            self.cancels[request_id] = event
            self.pending.append(_Job(request_id, gen, event))
            self.cond.notify_all()

    def call(self, request_id: int, fn: Callable[[], tuple[list[list[float]], int] | str]) -> None:
        with self.cond:
            self.pending.append(_Job(request_id, call=fn))
            self.cond.notify_all()

    def cancel(self, request_id: int) -> None:
        with self.cond:
            event = self.cancels.get(request_id)
            # Cancelled while still waiting: it never starts.
            for job in list(self.pending):
                if job.request_id == request_id and job.cancel is not None:
                    self.pending.remove(job)
                    self.backend.expect(-1)
                    self.cancels.pop(request_id, None)
                    self.send(Emitted(request_id, Done(DoneReason.CANCELLED)))
        if event is not None:
            event.set()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            for event in self.cancels.values():
                event.set()
            self.cond.notify_all()
        self.join()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.pending:
                    return
                first = self.pending[0]
                if first.call is None and self.backend.continuous:
                    # The engine batches running generations itself; each one's prompt is fitted
                    # on a thread of its own, off this one (a huge conversation takes seconds).
                    self.pending.pop(0)
                    threading.Thread(target=self._run, args=([first],), daemon=True,
                                     name=f"runner-generation {first.request_id}").start()
                    continue
                if first.call is None and self.slots > 1:  # let concurrent requests join the batch
                    deadline = time.monotonic() + self.window_s
                    while len(self.pending) < self.slots and time.monotonic() < deadline:
                        self.cond.wait(deadline - time.monotonic())
                batch = [self.pending.pop(0)] if first.call is not None else self._take()
            self._run(batch)

    def _forget(self, jobs: list[_Job]) -> None:
        """`jobs` have ended: a Cancel for them now has nothing to stop."""
        with self.cond:
            for job in jobs:
                self.cancels.pop(job.request_id, None)
            self.cond.notify_all()

    def _emitter(self, job: _Job) -> Emit:
        """Where a lone generation's events go: down the pipe, from whichever thread makes them
        (the CPU engine's loop calls it directly)."""

        def emit(event: Token | Done | Exception) -> None:
            if isinstance(event, Exception):
                self.send(Failed(job.request_id, _portable(event)))
            else:
                self.send(Emitted(job.request_id, event))
            if not isinstance(event, Token):
                self._forget([job])

        return emit

    def _take(self) -> list[_Job]:
        """Up to `slots` pending generations that can share a forward pass (same batch key)."""
        key = self._key(self.pending[0])
        batch = [j for j in self.pending if j.call is None and self._key(j) == key][: self.slots]
        for job in batch:
            self.pending.remove(job)
        return batch

    def _key(self, job: _Job) -> Hashable:
        return self.backend.batch_key(job.gen) if job.gen is not None else None

    def _run(self, batch: list[_Job]) -> None:
        first = batch[0]
        if first.call is not None:
            try:
                self.send(Result(first.request_id, first.call()))
            except Exception as exc:
                self.send(Failed(first.request_id, _portable(exc)))
            return
        if len(batch) == 1 and (self.slots == 1 or self.backend.continuous):
            assert first.gen is not None and first.cancel is not None  # a generation job
            self.backend.stream(first.gen, first.cancel, self._emitter(first))
            return
        jobs = [(j.request_id, j.gen, j.cancel) for j in batch if j.gen is not None and j.cancel is not None]
        try:
            for request_id, event in self.backend.generate_batch(jobs):
                self.send(Emitted(request_id, event))
        except Exception as exc:
            for job in batch:
                self.send(Failed(job.request_id, _portable(exc)))
        finally:
            self._forget(batch)


def _portable(exc: Exception) -> Exception:
    """The exception itself when it pickles (rkollama's errors do), else a BackendFailed."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return BackendFailed(f"{type(exc).__name__}: {exc}")
