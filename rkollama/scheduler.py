"""The scheduler: the only holder of loaded backends.

It loads models on demand (evicting the least recently used idle one beyond `max_loaded_models`),
gives each loaded model as many generations at once as its engine has slots (one on the CPU
engine, an NPU model's `n_batch`; others wait their turn, FIFO by arrival, in a bounded queue),
reloads when load-time options change, and unloads idle models when their keep-alive expires.
A model's work runs on its engine thread (and, by default, in a runner process of its own:
backends/runner.py); a `Stream` is the requester's iterator over the engine's events, whose
`close()`/`cancel()` stops the engine at the next token and frees the model. Unloads run off the
scheduler's lock; a new load waits for them, so two models' memory never overlaps.
"""

import hashlib
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from rkollama.core.parse import parse_output
from rkollama.core.stops import apply_stops
from rkollama.core.types import Done, DoneReason, Event, Generation, LoadOptions, Token, TokenLogprob
from rkollama.durations import MAX_DURATION_S, parse_keep_alive
from rkollama.errors import BadRequest, Cancelled, LoadFailed, QueueFull, RkollamaError, ShuttingDown

if TYPE_CHECKING:
    from rkollama.backends.base import Backend, BackendFactory
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec

POLL_S = 0.1  # how often a waiting request checks whether its client went away
SHUTDOWN_CLOSE_S = 40
"""How long shutdown waits for the models' unloads (a stuck runner is killed within this)."""
EMBED_CHUNK = 16
"""Texts per engine call of an embedding request (its cancellation granularity)."""
WATCH_S = 0.1  # how often running generations check whether their client went away

log = logging.getLogger("rkollama.scheduler")


@dataclass(frozen=True)
class LoadedModel:
    """Immutable snapshot for /api/ps. `expires_at` is None while a request is running."""

    spec: "ModelSpec"
    expires_at: datetime | None
    context_length: int
    size: int
    device: str


class _Runner:
    def __init__(self, key: str, spec: "ModelSpec", opts: LoadOptions, backend: "Backend",
                 keep_alive: float, now: float):
        self.key, self.spec, self.opts, self.backend = key, spec, opts, backend
        self.slots = max(1, backend.slots)  # generations it can run at once
        self.cancels: set[threading.Event] = set()  # cancel events of its running generations, for shutdown
        self.keep_alive = keep_alive
        self.active = 0
        self.closed = False
        self.expires = now + keep_alive
        self.last_used = now

    @property
    def busy(self) -> bool:
        """Running at least one generation (keep-alive paused, cannot be unloaded)."""
        return self.active > 0

    @property
    def full(self) -> bool:
        return self.active >= self.slots


class Observer:
    """What the scheduler reports as it works (the daemon's metrics implement it)."""

    def generation_finished(self, model: str, done: Done, first_token_s: float | None) -> None:
        """A generation ended (not cancelled); `first_token_s` from submit to its first token."""

    def runner_died(self, model: str) -> None:
        """A model's runner process was found dead and dropped."""


class Scheduler:
    def __init__(self, settings: "Settings", backend_factory: "BackendFactory | None" = None,
                 clock: Callable[[], float] = time.monotonic, observer: Observer | None = None):
        if backend_factory is None:
            from rkollama.backends import EngineFactory
            backend_factory = EngineFactory()
        self.settings = settings
        self.factory = backend_factory
        self.clock = clock
        self.observer = observer or Observer()
        self.default_keep_alive = parse_keep_alive(settings.keep_alive)
        self._cond = threading.Condition()
        self._runners: dict[str, _Runner] = {}
        """Loaded engines by `_key`."""
        self._loading: set[str] = set()
        self._closing: list[_Runner] = []  # unloads under way, off the lock
        self._waiting = 0
        self._tickets = itertools.count()
        self._pending: dict[int, str] = {}  # ticket -> model key, in arrival order (FIFO per model)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._watched: set[Stream] = set()  # running streams whose client may go away
        self._watcher: threading.Thread | None = None
        self._busy = False
        """Some loaded model is running a request (what the engines were last told)."""

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread that unloads models whose keep-alive expired."""
        self._reaper = threading.Thread(target=self._reap_loop, name="keep-alive", daemon=True)
        self._reaper.start()

    @property
    def waiting(self) -> int:
        """Requests waiting for a model now."""
        return self._waiting

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def shutdown(self) -> None:
        """Stop running generations at their next token (their streams end with ShuttingDown),
        refuse queued and new requests with ShuttingDown, and unload every model."""
        if not self._stop.is_set():
            log.info("shutting down: %d model(s) loaded, %d request(s) waiting",
                     len(self._runners), self._waiting)
        self._stop.set()
        with self._cond:
            for runner in self._runners.values():
                for cancel in list(runner.cancels):
                    cancel.set()
            for runner in list(self._runners.values()):
                self._close(runner)
            self._cond.notify_all()
            deadline = time.monotonic() + SHUTDOWN_CLOSE_S
            while self._closing and time.monotonic() < deadline:
                self._cond.wait(0.05)

    # -- public API ----------------------------------------------------------------------------
    def submit(self, spec: "ModelSpec", gen: Generation, opts: LoadOptions,
               keep_alive: float | None = None,
               disconnected: Callable[[], bool] | None = None) -> "Stream":
        """Wait for `spec` (loading it if needed) and return its event stream.

        Blocks while the model is busy; raises QueueFull, Cancelled (the client went away while
        waiting) or LoadFailed before any event is produced.
        """
        start = self.clock()
        runner = self._acquire(spec, opts, keep_alive, disconnected)
        stream = Stream(self, runner, gen, load_s=self.clock() - start, started=start)
        if disconnected is not None:
            self._watch(stream, disconnected)
        return stream

    def _key(self, spec: "ModelSpec") -> str:
        return _key(spec, self.factory.engine_class(spec, self.settings))

    def constrains_format(self, spec: "ModelSpec") -> bool | None:
        """Whether `spec`'s engine enforces a `format` itself: from its loaded backend, else from
        the engine's class; None if unknown."""
        with self._cond:
            runner = self._runners.get(self._key(spec))
            if runner is not None:
                return runner.backend.constrains_format
        return self.factory.engine_class(spec, self.settings).constrains_format

    def load(self, spec: "ModelSpec", opts: LoadOptions, keep_alive: float | None = None,
             disconnected: Callable[[], bool] | None = None) -> float:
        """Make sure `spec` is loaded; return the seconds it took. Sets its keep-alive."""
        start = self.clock()
        runner = self._acquire(spec, opts, keep_alive, disconnected)
        self._release(runner)
        return self.clock() - start

    def embed(self, spec: "ModelSpec", opts: LoadOptions, texts: list[str], truncate: bool = True,
              keep_alive: float | None = None, disconnected: Callable[[], bool] | None = None
              ) -> tuple[list[list[float]], int, float]:
        """Embeddings of `texts` on `spec`'s engine thread: (vectors, tokens used, load seconds)."""
        start = self.clock()
        runner = self._acquire(spec, opts, keep_alive, disconnected)
        load_s = self.clock() - start
        vectors: list[list[float]] = []
        used = 0
        try:
            # A few texts per engine call: a client that leaves stops the work within one chunk,
            # however many texts it sent.
            for start in range(0, len(texts), EMBED_CHUNK):
                if disconnected is not None and disconnected():
                    raise Cancelled()
                chunk, tokens = runner.backend.embed(texts[start:start + EMBED_CHUNK], truncate)
                vectors += chunk
                used += tokens
        except NotImplementedError:
            raise BadRequest(f'"{spec.name.display()}" does not support embeddings') from None
        finally:
            self._release(runner)
        return vectors, used, load_s

    def render(self, spec: "ModelSpec", gen: Generation, opts: LoadOptions, keep_alive: float | None = None,
               disconnected: Callable[[], bool] | None = None) -> str:
        """The prompt text `gen` becomes on `spec`'s engine, without generating."""
        runner = self._acquire(spec, opts, keep_alive, disconnected)
        try:
            return runner.backend.render(gen)
        except NotImplementedError:
            raise BadRequest(f'"{spec.name.display()}" cannot show its rendered prompt') from None
        finally:
            self._release(runner)

    def unload(self, spec: "ModelSpec") -> None:
        """Expire `spec` now: unloaded at once if idle, else as soon as its request ends."""
        with self._cond:
            runner = self._runners.get(self._key(spec))
            if runner is None:
                return
            runner.keep_alive = 0.0
            runner.expires = self.clock()
            if not runner.busy:
                self._close(runner)
            self._cond.notify_all()

    def ps(self) -> list[LoadedModel]:
        with self._cond:
            now_mono, now_wall = self.clock(), datetime.now(timezone.utc).astimezone()
            snapshots = []
            for runner in self._runners.values():
                expires = None
                if not runner.busy:
                    remaining = runner.expires - now_mono
                    if math.isinf(remaining) or remaining > MAX_DURATION_S:
                        remaining = MAX_DURATION_S  # "forever", as Ollama shows it
                    expires = now_wall + timedelta(seconds=max(0.0, remaining))
                backend = runner.backend
                snapshots.append(LoadedModel(runner.spec, expires, backend.context_length,
                                             max(runner.spec.size, backend.memory_bytes),
                                             backend.device))
        far = datetime.max.replace(tzinfo=timezone.utc)
        return sorted(snapshots, key=lambda s: s.expires_at or far, reverse=True)

    def reap(self) -> None:
        """Unload every idle model whose keep-alive has expired (by the injected clock)."""
        with self._cond:
            now = self.clock()
            for runner in list(self._runners.values()):
                if not runner.busy and runner.expires <= now:
                    self._close(runner)
            self._cond.notify_all()

    # -- internals -----------------------------------------------------------------------------
    def _acquire(self, spec: "ModelSpec", opts: LoadOptions, keep_alive: float | None,
                 disconnected: Callable[[], bool] | None) -> _Runner:
        key = self._key(spec)
        with self._cond:
            if self._stop.is_set():
                raise ShuttingDown()
            if self._waiting >= self.settings.max_queue:
                log.warning("queue full (%d waiting): refused a request for %s", self._waiting,
                            spec.name.display())
                raise QueueFull()
            ticket = next(self._tickets)
            self._pending[ticket] = key
            self._waiting += 1
            try:
                while True:
                    if self._stop.is_set():
                        raise ShuttingDown()
                    if disconnected is not None and disconnected():
                        raise Cancelled()
                    if self._first_for(key) != ticket:
                        self._cond.wait(POLL_S)
                        continue
                    runner = self._runners.get(key)
                    if runner is not None and runner.backend.dead and not runner.busy:
                        log.warning("%s: its runner died while idle; loading it again",
                                    spec.name.display())
                        self._close(runner)
                        continue
                    if runner is not None and not runner.full and opts.compatible_with(runner.opts):
                        runner.active += 1
                        self._tell_activity()
                        self._set_keep_alive(runner, keep_alive)
                        return runner
                    if runner is not None and not runner.busy:  # other load options: reload
                        log.info("reloading %s: load options changed", spec.name.display())
                        self._close(runner)
                        continue
                    if runner is None and key not in self._loading and self._make_room():
                        return self._load_locked(key, spec, opts, keep_alive)
                    self._cond.wait(POLL_S)
            finally:
                del self._pending[ticket]
                self._waiting -= 1
                self._cond.notify_all()

    def _first_for(self, key: str) -> int:
        """The oldest waiting ticket for `key`: later arrivals never overtake it."""
        return next(t for t, k in self._pending.items() if k == key)

    def _make_room(self) -> bool:
        """Unload LRU idle models until one more fits; False if all loaded models are busy or
        an unload is still under way."""
        while len(self._runners) + len(self._loading) + len(self._closing) >= \
                max(1, self.settings.max_loaded_models):
            if self._closing and len(self._runners) + len(self._loading) < \
                    max(1, self.settings.max_loaded_models):
                return False  # room is being made: wait for the unload to end
            idle = [r for r in self._runners.values() if not r.busy]
            if not idle:
                return False
            self._close(min(idle, key=lambda r: r.last_used))
        return True

    def _load_locked(self, key: str, spec: "ModelSpec", opts: LoadOptions,
                     keep_alive: float | None) -> _Runner:
        self._loading.add(key)
        engine = self.factory.engine_class(spec, self.settings)
        if engine.own_npu_domain:
            # distinct NPU address spaces for models loaded side by side
            used = {r.opts.npu_domain for r in self._runners.values()}
            first = engine.first_npu_domain(spec)
            opts = replace(opts, npu_domain=next(d for d in range(first, 16) if d not in used))
        self._cond.release()
        try:
            backend = self.factory(spec, opts, self.settings)
        except RkollamaError:
            raise
        except Exception as exc:  # an engine's own exception types: report, never a traceback
            raise LoadFailed(f"failed to load {spec.name.display()}: {exc}") from exc
        finally:
            self._cond.acquire()
            self._loading.discard(key)
        if self._stop.is_set():
            backend.close()
            raise ShuttingDown()
        ka = self.default_keep_alive if keep_alive is None else keep_alive
        runner = _Runner(key, spec, opts, backend, ka, self.clock())
        runner.active = 1
        self._runners[key] = runner
        if self._busy:  # the others know already
            backend.daemon_busy(True)
        self._tell_activity()
        return runner

    def _tell_activity(self) -> None:
        """(Lock held.) When the daemon starts running requests, or has none left, every loaded
        engine is told (Backend.daemon_busy): background work such as the CPU engine's read-ahead
        never takes CPU from another model's request. A runner hears it as a few bytes on its
        pipe, which its main thread reads at once: this does not wait for the engine."""
        busy = any(runner.active for runner in self._runners.values())
        if busy != self._busy:
            self._busy = busy
            for runner in self._runners.values():
                runner.backend.daemon_busy(busy)

    def _set_keep_alive(self, runner: _Runner, keep_alive: float | None) -> None:
        if keep_alive is not None:
            runner.keep_alive = keep_alive

    def _release(self, runner: _Runner) -> None:
        with self._cond:
            now = self.clock()
            runner.active -= 1
            runner.last_used = now
            self._tell_activity()
            if runner.busy:  # others still generating: keep-alive starts when the last ends
                self._cond.notify_all()
                return
            runner.expires = now + runner.keep_alive
            # A backend whose process died is dropped; the next request loads the model again.
            if runner.keep_alive <= 0 or self._stop.is_set() or runner.backend.dead:
                self._close(runner)
            self._cond.notify_all()

    def _close(self, runner: _Runner) -> None:
        """Unload `runner` (idempotent: shutdown and a stream ending at once both call it)."""
        if self._runners.get(runner.key) is runner:
            del self._runners[runner.key]
        if runner.closed:
            return
        runner.closed = True
        log.info("unloading %s", runner.spec.name.display())
        if runner.backend.dead:
            self.observer.runner_died(runner.spec.name.display())
        # Closing can take long (a stuck runner is waited for, then killed): it happens off the
        # lock, so /api/ps, /api/tags and other models never wait for it; a new load waits
        # until it is done (_make_room), so two models' memory never overlaps.
        self._closing.append(runner)
        closer = threading.Thread(target=self._finish_close, args=(runner,), daemon=True,
                                  name=f"unload {runner.spec.name.display()}")
        closer.start()

    def _finish_close(self, runner: _Runner) -> None:
        try:
            runner.backend.close()  # after any generation still running on it has stopped
        except Exception:  # closing must never take the daemon down
            pass
        with self._cond:
            self._closing.remove(runner)
            self._cond.notify_all()

    def _reap_loop(self) -> None:
        while not self._stop.wait(0.5):
            self.reap()

    # -- clients that go away ------------------------------------------------------------------
    def _watch(self, stream: "Stream", disconnected: Callable[[], bool]) -> None:
        """Cancel `stream` within WATCH_S of its client disconnecting, whether the route is
        streaming or collecting, and during prefill as during decode."""
        with self._cond:
            stream.disconnected = disconnected
            self._watched.add(stream)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch_loop, name="disconnects",
                                                 daemon=True)
                self._watcher.start()

    def _unwatch(self, stream: "Stream") -> None:
        with self._cond:
            self._watched.discard(stream)

    def _watch_loop(self) -> None:
        while not self._stop.wait(WATCH_S):
            with self._cond:
                streams = list(self._watched)
            for stream in streams:
                try:
                    gone = stream.disconnected()
                except Exception:  # a probe that fails counts as a connection that is gone
                    gone = True
                if gone and not stream.cancel_event.is_set():
                    log.info("client went away: cancelling its generation on %s",
                             stream.model_name)
                    stream.cancel_event.set()
                    self._unwatch(stream)


class Stream:
    """Events of one generation: `Token`s then one `Done`. Closing it cancels the generation."""

    def __init__(self, scheduler: Scheduler, runner: _Runner, gen: Generation, load_s: float,
                 started: float | None = None):
        self.load_duration = load_s
        self._started = started  # scheduler clock at submit, for the time to the first token
        self._first_token_s: float | None = None
        self.constrains_format = runner.backend.constrains_format
        self.cancel_event = threading.Event()
        self._scheduler, self._runner = scheduler, runner
        self.model_name = runner.spec.name.display()
        self.disconnected = _never
        runner.cancels.add(self.cancel_event)
        self._released = False
        # Lazy: the engine starts at the first next(), so an unread stream costs nothing.
        def events() -> Iterator[Token | Done]:
            yield from runner.backend.generate(gen, self.cancel_event)

        self._logprobs: list[TokenLogprob] = []

        def scored(items: Iterable[Token | Done]) -> Iterator[Token | Done]:
            # Log-probabilities travel beside the text: stops and parsers regroup the text,
            # and the next token that leaves the stream carries what accumulated.
            for item in items:
                if isinstance(item, Token) and not item.text and not item.logprobs:
                    continue  # an engine's sign of work (a prefill batch done), not output
                if isinstance(item, Token) and item.logprobs:
                    self._logprobs.extend(item.logprobs)
                    item = replace(item, logprobs=())
                    if not item.text:
                        continue
                yield item

        stopped = apply_stops(scored(events()), list(gen.options.stop or []), self.cancel_event)
        self._events = parse_output(stopped, gen)
        self._done = False

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Event:
        if self._done:
            raise StopIteration
        try:
            event = next(self._events)
        except StopIteration:
            self.close()
            raise
        except RkollamaError:
            self.close()
            if self._scheduler.stopping:
                raise ShuttingDown() from None  # e.g. a runner that ended with the daemon
            raise
        except BaseException:
            self.close()
            raise
        if isinstance(event, Token) and self._first_token_s is None and self._started is not None:
            self._first_token_s = self._scheduler.clock() - self._started
        if isinstance(event, Done):
            self._done = True
            self.close()
            if event.reason is not DoneReason.CANCELLED:
                self._scheduler.observer.generation_finished(self.model_name, event, self._first_token_s)
            if event.reason is DoneReason.CANCELLED and self._scheduler.stopping:
                raise ShuttingDown()  # a final error line, not a silent end
        elif isinstance(event, Token) and self._logprobs:
            event = replace(event, logprobs=tuple(self._logprobs))
            self._logprobs.clear()
        return event

    def close(self) -> None:
        """Stop the engine at its next token and give the model back; idempotent.

        The engine thread runs jobs in order, so a request that takes the model next starts
        only after this generation has really ended there.
        """
        self.cancel_event.set()
        if self._released:
            return
        try:
            self._events.close()
        except ValueError:  # being iterated in another thread: that thread releases it
            return
        self._released = True
        self._runner.cancels.discard(self.cancel_event)
        self._scheduler._unwatch(self)
        self._scheduler._release(self._runner)


def _never() -> bool:
    return False


def _key(spec: "ModelSpec", engine: "type[Backend]") -> str:
    """What a loaded engine is shared by: the weights and everything the engine itself takes
    from the Modelfile (its chat template, its tokenizer, its vision projector, and what the
    engine's class says it bakes in). Two names for one model (`cp`) share a runner; a model
    `create`d with its own template, or without its base's projector, does not share its base's."""
    mf = spec.modelfile
    shaping: dict[str, Any] = {"template": mf.template, "tokenizer": str(spec.tokenizer_path or ""),
                               "projector": str(spec.projector_path or ""), **engine.shaping(spec)}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]
    try:  # a blob rewritten in place (a pull that repaired damaged weights) is a new file
        inode = spec.model_path.stat().st_ino
    except OSError:
        inode = 0
    return f"{spec.model_path}@{inode}#{digest}"

