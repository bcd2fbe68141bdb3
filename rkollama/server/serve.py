"""`rkollama serve`: build the store, catalogue and scheduler, then run Waitress until a signal.

On SIGTERM or SIGINT the daemon stops accepting connections, ends running streams with an error
line and answers queued requests with 503 (the scheduler's shutdown), lets those answers reach
their clients (up to DRAIN_S), unloads every model and exits 0.
"""

import logging
import resource
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from rkollama.backends.base import BackendFactory
    from rkollama.config import Settings
    from rkollama.scheduler import Scheduler

DRAIN_S = 10.0
"""Seconds the daemon waits, on shutdown, for answers in flight to reach their clients."""

log = logging.getLogger("rkollama")


def build(settings: "Settings", backend_factory: "BackendFactory | None" = None
          ) -> tuple["Flask", "Scheduler"]:
    """Everything the app needs, from settings. Returns (app, scheduler)."""
    from rkollama.models.catalog import Catalog
    from rkollama.models.store import ModelStore
    from rkollama.platform import source_platform
    from rkollama.scheduler import Scheduler
    from rkollama.server.app import create_app

    store = ModelStore(settings.models)
    store.prepare()
    store.clean_partials()
    scheduler = Scheduler(settings, backend_factory=backend_factory)
    app = create_app(settings, scheduler, store, Catalog(settings.modelfiles),
                     source_platform(settings.platform, settings.rkllm_lib))
    return app, scheduler


def create_server(app: "Flask", settings: "Settings", host: str, port: int) -> Any:
    """Waitress configured for a daemon that many clients hold open connections to."""
    import waitress

    from rkollama.server.auth import Gate
    from rkollama.server.body_limits import channel_class
    from rkollama.server.dispatch import LaneDispatcher

    server = waitress.create_server(
        app, host=host, port=port,
        _dispatcher=LaneDispatcher(settings.max_queue + settings.http_threads),
        # Lets a waiting request notice that its client went away (waitress.client_disconnected).
        channel_request_lookahead=1,
        connection_limit=settings.max_connections,
        channel_timeout=settings.connection_timeout,
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        # The most any request may send; each request's own limit is body_limits' decision.
        max_request_body_size=max(settings.max_body_bytes, settings.max_blob_bytes) + 1,
        ident="rkollama", clear_untrusted_proxy_headers=True)
    # Each body is bounded while Waitress reads it, before the app's key check (body_limits.py).
    server.channel_class = channel_class(Gate(settings.api_key, 0), settings.max_body_bytes,
                                         settings.max_blob_bytes)
    return server


def run(settings: "Settings") -> None:
    from waitress import wasyncore

    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _raise_open_files_limit(settings.max_connections + 64)
    app, scheduler = build(settings)
    scheduler.start()
    host, port = settings.bind_address()
    server = create_server(app, settings, host, port)
    finished = threading.Event()
    stopping = threading.Event()

    def drain() -> None:
        server.accepting = False  # no new connections
        scheduler.shutdown()      # streams end with an error line, queued requests get 503
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and (server.task_dispatcher.busy() or _unsent(server)):
            time.sleep(0.05)
        finished.set()
        server.pull_trigger()

    def stop(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info("received %s: stopping", signal.Signals(signum).name)
        threading.Thread(target=drain, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("rkollama listening on %s:%s (models in %s)", host, server.effective_port,
             settings.models)
    print(f"rkollama is listening on http://{host}:{server.effective_port}", flush=True)
    while not finished.is_set():
        wasyncore.loop(timeout=0.5, map=server._map, use_poll=True, count=1)
    wasyncore.close_all(server._map)
    server.task_dispatcher.shutdown(timeout=2)
    log.info("stopped")


def _unsent(server: Any) -> bool:
    """Some connection still has response bytes to send."""
    return any(getattr(channel, "total_outbufs_len", 0) for channel in list(server._map.values()))


def _raise_open_files_limit(wanted: int) -> None:
    """Each client connection is a descriptor: raise the soft limit toward `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("open-file limit %d is below RKOLLAMA_MAX_CONNECTIONS (%d): raise it "
                    "(LimitNOFILE= in a systemd unit)", hard, wanted - 64)
