"""Crash isolation: each NPU model lives in a worker process owned by the daemon.

The vendor library can segfault or abort. `WorkerBackend` looks like any backend to the
scheduler, but forwards load/generate/embed/close over a pipe to a child process that holds the
real RKLLMBackend. If the child dies, the requests in flight fail with a clear error, the backend
marks itself dead (the scheduler then drops it) and the next request loads the model again.
The boundary costs one pickled event per token (measured in benchmarks/bench_npu_worker.py).

With `n_batch > 1` the worker batches concurrent generations into one rkllm_run: requests that
arrive within the batch window of each other (Modelfile rkllm.batch_window_ms, default 20 ms; up
to n_batch, same tools and system prompt) share a forward pass; later ones wait for the next.
"""

import multiprocessing
import queue
import threading
import time

from rkollama.backends.base import Backend
from rkollama.core.types import Done
from rkollama.errors import BackendFailed, LoadFailed

POLL_S = 0.05
BATCH_WINDOW_MS = 20
_CRASH = object()


class WorkerBackend(Backend):
    kind = "rkllm"
    device = "npu"

    def __init__(self, process, conn, info: dict):
        self.process, self.conn = process, conn
        self.context_length = info["context_length"]
        self.memory_bytes = info["memory_bytes"]
        self.slots = info.get("slots", 1)
        self.dead = False
        self._ids = 0
        self._lock = threading.Lock()       # sending, ids, inboxes
        self._inboxes: dict[int, queue.Queue] = {}
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="npu-worker-reader", daemon=True)
        self._reader.start()

    @classmethod
    def load(cls, spec, opts, settings, backend_cls=None) -> "WorkerBackend":
        ctx = multiprocessing.get_context("spawn")  # never fork a threaded daemon
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(child, spec, opts, settings, backend_cls),
                              name=f"rkollama-npu {spec.name.display()}", daemon=True)
        process.start()
        child.close()
        try:
            kind, payload = parent.recv()
        except (EOFError, OSError):
            process.join(5)
            raise LoadFailed(f"the NPU worker for {spec.name.display()} died while loading "
                             f"(exit code {process.exitcode})") from None
        if kind == "error":
            process.join(5)
            raise payload
        return cls(process, parent, payload)

    # -- the pipe ----------------------------------------------------------------------------------
    def _read(self) -> None:
        """Route every message from the worker to the inbox of the request it answers."""
        while True:
            try:
                kind, request_id, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                inbox = self._inboxes.get(request_id)
            if inbox is not None:
                inbox.put((kind, payload))
        with self._lock:
            if not self._closed:
                self.dead = True
            for inbox in self._inboxes.values():
                inbox.put((_CRASH, None))

    def _open(self, *message_head) -> tuple[int, queue.Queue]:
        inbox: queue.Queue = queue.Queue()
        with self._lock:
            self._ids += 1
            request_id = self._ids
            self._inboxes[request_id] = inbox
            if self.dead:
                inbox.put((_CRASH, None))
                return request_id, inbox
            try:
                self.conn.send((message_head[0], request_id, message_head[1]))
            except (OSError, EOFError):
                inbox.put((_CRASH, None))
        return request_id, inbox

    def _send(self, message) -> None:
        with self._lock:
            try:
                self.conn.send(message)
            except (OSError, EOFError):
                pass

    def _done(self, request_id: int) -> None:
        with self._lock:
            self._inboxes.pop(request_id, None)

    def _crashed(self) -> BackendFailed:
        self.dead = True
        self.process.join(1)
        return BackendFailed(f"the NPU runtime crashed (worker exit code {self.process.exitcode}); "
                             "the model will be loaded again on the next request")

    # -- backend interface ---------------------------------------------------------------------
    def generate(self, gen, cancel):
        request_id, inbox = self._open("generate", gen)
        cancelled = False
        try:
            while True:
                try:
                    kind, payload = inbox.get(timeout=POLL_S)
                except queue.Empty:
                    kind = None
                if cancel.is_set() and not cancelled:
                    cancelled = True
                    self._send(("cancel", request_id, None))
                if kind is None:
                    continue
                if kind is _CRASH:
                    raise self._crashed()
                if kind == "error":
                    raise payload
                yield payload
                if isinstance(payload, Done):
                    return
        finally:
            self._done(request_id)

    def embed(self, texts, truncate=True):
        request_id, inbox = self._open("embed", (texts, truncate))
        try:
            kind, payload = inbox.get()
        finally:
            self._done(request_id)
        if kind is _CRASH:
            raise self._crashed()
        if kind == "error":
            raise payload
        return payload

    def close(self) -> None:
        if self._closed:
            return
        if not self.dead:
            request_id, inbox = self._open("close", None)
            try:
                inbox.get(timeout=30)
            except queue.Empty:
                pass
            self._done(request_id)
        self._closed = True
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


# -- the worker process ----------------------------------------------------------------------------
def _serve(conn, spec, opts, settings, backend_cls) -> None:
    """Load the model, then serve requests until told to close (or the daemon goes away)."""
    if backend_cls is None:
        from rkollama.backends.rkllm.backend import RKLLMBackend as backend_cls
    try:
        backend = backend_cls.load(spec, opts, settings)
    except Exception as exc:  # sent to the daemon, which reports it
        conn.send(("error", _portable(exc)))
        return
    slots = max(1, getattr(backend, "slots", 1))
    conn.send(("loaded", {"context_length": backend.context_length,
                          "memory_bytes": backend.memory_bytes, "slots": slots}))
    send_lock = threading.Lock()

    def send(message) -> None:
        with send_lock:
            conn.send(message)

    window = spec.modelfile.rkllm.get("batch_window_ms", BATCH_WINDOW_MS) / 1000.0
    batcher = _Batcher(backend, slots, send, window)
    batcher.start()
    while True:
        try:
            kind, request_id, payload = conn.recv()
        except (EOFError, OSError):
            break
        if kind == "generate":
            batcher.add(request_id, payload)
        elif kind == "cancel":
            batcher.cancel(request_id)
        elif kind == "embed":
            batcher.wait_idle()
            try:
                send(("result", request_id, backend.embed(*payload)))
            except Exception as exc:
                send(("error", request_id, _portable(exc)))
        elif kind == "close":
            batcher.stop()
            backend.close()
            send(("closed", request_id, None))
            return
    batcher.stop()
    backend.close()


class _Batcher(threading.Thread):
    """Runs generations on the model: one at a time, or n_batch at a time in one forward pass."""

    def __init__(self, backend, slots: int, send, window_s: float):
        super().__init__(name="npu-batcher", daemon=True)
        self.backend, self.slots, self.send, self.window_s = backend, slots, send, window_s
        self.cond = threading.Condition()
        self.pending: list = []           # (request_id, gen, cancel event)
        self.cancels: dict = {}
        self.running = False
        self.stopping = False

    def add(self, request_id, gen) -> None:
        with self.cond:
            event = threading.Event()
            self.cancels[request_id] = event
            self.pending.append((request_id, gen, event))
            self.cond.notify_all()

    def cancel(self, request_id) -> None:
        with self.cond:
            event = self.cancels.get(request_id)
        if event is not None:
            event.set()

    def wait_idle(self) -> None:
        with self.cond:
            while self.running or self.pending:
                self.cond.wait(0.05)

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
                if self.slots > 1:  # give concurrent requests a moment to join this batch
                    deadline = time.monotonic() + self.window_s
                    while len(self.pending) < self.slots and time.monotonic() < deadline:
                        self.cond.wait(deadline - time.monotonic())
                batch = self._take()
                self.running = True
            try:
                self._generate(batch)
            finally:
                with self.cond:
                    self.running = False
                    for request_id, _, _ in batch:
                        self.cancels.pop(request_id, None)
                    self.cond.notify_all()

    def _take(self) -> list:
        """Up to `slots` pending requests that can share a forward pass (same batch key)."""
        key = _batch_key(self.pending[0][1])
        batch = [item for item in self.pending if _batch_key(item[1]) == key][: self.slots]
        for item in batch:
            self.pending.remove(item)
        return batch

    def _generate(self, batch) -> None:
        if len(batch) == 1 and self.slots == 1:
            request_id, gen, cancel = batch[0]
            try:
                for event in self.backend.generate(gen, cancel):
                    self.send(("event", request_id, event))
            except Exception as exc:
                self.send(("error", request_id, _portable(exc)))
            return
        try:
            for request_id, event in self.backend.generate_batch(batch):
                self.send(("event", request_id, event))
        except Exception as exc:
            for request_id, _, _ in batch:
                self.send(("error", request_id, _portable(exc)))


def _batch_key(gen) -> tuple:
    """Requests share one rkllm_run only with the same tools and system prompt (set per handle)."""
    import json

    system = "\n".join(m.content for m in gen.messages or [] if m.role == "system")
    return json.dumps(gen.tools, sort_keys=True), system


def _portable(exc: Exception) -> Exception:
    """The exception itself when it pickles (rkollama's errors do), else a BackendFailed."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return BackendFailed(f"{type(exc).__name__}: {exc}")
