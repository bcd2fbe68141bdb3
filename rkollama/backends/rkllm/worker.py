"""Crash isolation: each NPU model lives in a worker process owned by the daemon.

The vendor library can segfault or abort. `WorkerBackend` looks like any backend to the
scheduler, but forwards load/generate/embed/close over a pipe to a child process that holds the
real RKLLMBackend. If the child dies, the requests in flight fail with a clear error, the backend
marks itself dead (the scheduler then drops it) and the next request loads the model again.
The boundary costs one pickled event per token (measured in benchmarks/bench_npu_worker.py).
"""

import multiprocessing
import threading

from rkollama.backends.base import Backend
from rkollama.core.types import Done
from rkollama.errors import BackendFailed, LoadFailed

POLL_S = 0.05


class WorkerBackend(Backend):
    kind = "rkllm"
    device = "npu"

    def __init__(self, process, conn, info: dict):
        self.process, self.conn = process, conn
        self.context_length = info["context_length"]
        self.memory_bytes = info["memory_bytes"]
        self.dead = False
        self._ids = 0
        self._closed = False

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

    def _crashed(self) -> BackendFailed:
        self.dead = True
        self.process.join(1)
        return BackendFailed(f"the NPU runtime crashed (worker exit code {self.process.exitcode}); "
                             "the model will be loaded again on the next request")

    def generate(self, gen, cancel):
        self._ids += 1
        request_id = self._ids
        try:
            self.conn.send(("generate", request_id, gen))
        except (OSError, EOFError):
            raise self._crashed() from None
        cancelled = False
        while True:
            try:
                ready = self.conn.poll(POLL_S)
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                raise self._crashed() from None
            if cancel.is_set() and not cancelled:
                cancelled = True
                try:
                    self.conn.send(("cancel", request_id, None))
                except (OSError, EOFError):
                    raise self._crashed() from None
            if message is None:
                if not self.process.is_alive():
                    raise self._crashed()
                continue
            kind, _, payload = message
            if kind == "event":
                yield payload
                if isinstance(payload, Done):
                    return
            elif kind == "error":
                raise payload

    def embed(self, texts, truncate=True):
        return self._call("embed", texts, truncate)

    def _call(self, name, *args):
        self._ids += 1
        try:
            self.conn.send((name, self._ids, args))
            kind, _, payload = self.conn.recv()
        except (EOFError, OSError):
            raise self._crashed() from None
        if kind == "error":
            raise payload
        return payload

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.dead:
            try:
                self.conn.send(("close", 0, None))
                self.conn.recv()
            except (EOFError, OSError):
                pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def _serve(conn, spec, opts, settings, backend_cls) -> None:
    """The worker process: load the model, then serve requests until told to close."""
    if backend_cls is None:
        from rkollama.backends.rkllm.backend import RKLLMBackend as backend_cls
    try:
        backend = backend_cls.load(spec, opts, settings)
    except Exception as exc:  # sent to the daemon, which reports it
        conn.send(("error", _portable(exc)))
        return
    conn.send(("loaded", {"context_length": backend.context_length, "memory_bytes": backend.memory_bytes}))
    send_lock = threading.Lock()
    cancels: dict[int, threading.Event] = {}

    def send(message) -> None:
        with send_lock:
            conn.send(message)

    def run(request_id, gen, cancel):
        try:
            for event in backend.generate(gen, cancel):
                send(("event", request_id, event))
        except Exception as exc:
            send(("error", request_id, _portable(exc)))
        finally:
            cancels.pop(request_id, None)

    worker = None
    while True:
        try:
            kind, request_id, payload = conn.recv()
        except (EOFError, OSError):
            break
        if kind == "generate":
            if worker is not None:
                worker.join()  # one generation at a time per model
            cancels[request_id] = threading.Event()
            worker = threading.Thread(target=run, args=(request_id, payload, cancels[request_id]))
            worker.start()
        elif kind == "cancel":
            event = cancels.get(request_id)
            if event is not None:
                event.set()
        elif kind == "embed":
            try:
                send(("result", request_id, backend.embed(*payload)))
            except Exception as exc:
                send(("error", request_id, _portable(exc)))
        elif kind == "close":
            if worker is not None:
                worker.join()
            backend.close()
            send(("closed", request_id, None))
            break


def _portable(exc: Exception) -> Exception:
    """The exception itself when it pickles (rkollama's errors do), else a BackendFailed."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return BackendFailed(f"{type(exc).__name__}: {exc}")

