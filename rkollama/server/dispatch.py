"""Waitress task dispatch in two lanes, so that waiting generations never starve control routes.

Waitress hands each ready request to a fixed pool of threads. A generating request holds its
thread for the whole answer and a queued one while it waits for the model, so 16 threads were
16 requests: the 17th and every `/api/tags` or `/api/ps` behind it waited, and OLLAMA_MAX_QUEUE
was never reached. Here:

* the **control lane** (GET, HEAD, OPTIONS, DELETE, and the quick POSTs `/api/show`,
  `/api/copy`) has a few threads of its own;
* the **work lane** (everything else: chat, generate, embed, pull, OpenAI routes) starts a
  thread per request on demand, up to OLLAMA_MAX_QUEUE + RKOLLAMA_HTTP_THREADS, so a queued
  request really waits in the scheduler's queue, whose limit then answers 503. Idle threads end
  after IDLE_S.
"""

import logging
import threading
import time
from collections import deque
from typing import Any

CONTROL_THREADS = 4
IDLE_S = 30.0
"""Seconds an idle work-lane thread lives before it ends."""
_QUICK_POSTS = ("/api/show", "/api/copy")

log = logging.getLogger("rkollama.http")


class _Lane:
    def __init__(self, name: str, max_threads: int, elastic: bool):
        self.name, self.max_threads, self.elastic = name, max(1, max_threads), elastic
        self.cond = threading.Condition()
        self.tasks: deque[Any] = deque()
        self.threads = 0
        self.idle = 0
        self.active = 0
        self.stopping = False
        if not elastic:
            for _ in range(self.max_threads):
                self._spawn()

    def _spawn(self) -> None:
        self.threads += 1
        threading.Thread(target=self._work, name=f"http-{self.name}-{self.threads}",
                         daemon=True).start()

    def add(self, task: Any) -> None:
        with self.cond:
            self.tasks.append(task)
            if self.idle > len(self.tasks) - 1:
                self.cond.notify()
            elif self.elastic and self.threads < self.max_threads:
                self._spawn()
            elif self.elastic:
                log.warning("all %d %s threads are busy; a request waits for one",
                            self.max_threads, self.name)

    def _work(self) -> None:
        while True:
            with self.cond:
                self.idle += 1
                deadline = time.monotonic() + IDLE_S
                while not self.tasks and not self.stopping:
                    remaining = deadline - time.monotonic()
                    if self.elastic and remaining <= 0:
                        break
                    self.cond.wait(remaining if self.elastic else None)
                self.idle -= 1
                if self.stopping or not self.tasks:
                    self.threads -= 1
                    self.cond.notify_all()
                    return
                task = self.tasks.popleft()
                self.active += 1
            try:
                task.service()
            except BaseException:  # waitress's own dispatcher logs and goes on, too
                log.exception("exception while serving %r", task)
            finally:
                with self.cond:
                    self.active -= 1
                    self.cond.notify_all()

    def busy(self) -> bool:
        with self.cond:
            return bool(self.tasks) or self.active > 0

    def stop(self, timeout: float) -> None:
        with self.cond:
            self.stopping = True
            self.tasks.clear()
            self.cond.notify_all()
            deadline = time.monotonic() + timeout
            while self.threads > self.idle + self.active and time.monotonic() < deadline:
                self.cond.wait(0.1)


class LaneDispatcher:
    """A waitress task dispatcher (`add_task`, `set_thread_count`, `shutdown`) with two lanes."""

    def __init__(self, work_threads: int, control_threads: int = CONTROL_THREADS):
        self.control = _Lane("control", control_threads, elastic=False)
        self.work = _Lane("work", work_threads, elastic=True)

    def set_thread_count(self, count: int) -> None:
        """Waitress calls this with its `threads`; the lanes size themselves."""

    def add_task(self, task: Any) -> None:
        lane = self.work if _is_work(task) else self.control
        lane.add(task)

    def busy(self) -> bool:
        """A request is being served or waits for a thread."""
        return self.control.busy() or self.work.busy()

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        self.control.stop(timeout)
        self.work.stop(timeout)
        return True


def _is_work(task: Any) -> bool:
    """Whether the request a waitress channel is about to serve may run long."""
    requests = getattr(task, "requests", None)
    if not requests:
        return True
    request = requests[0]
    method = (getattr(request, "command", "") or "").upper()
    path = getattr(request, "path", "") or ""
    if method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return False
    return not (method == "POST" and path.rstrip("/") in _QUICK_POSTS)
