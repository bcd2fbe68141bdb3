"""`rkollama serve`: build the store, catalogue and scheduler, then run Waitress until a signal."""

import logging
import signal
import sys


def build(settings, backend_factory=None):
    """Everything the app needs, from settings. Returns (app, scheduler)."""
    from rkollama.models.catalog import Catalog
    from rkollama.models.store import ModelStore
    from rkollama.platform import source_platform
    from rkollama.scheduler import Scheduler
    from rkollama.server.app import create_app

    store = ModelStore(settings.models)
    scheduler = Scheduler(settings, backend_factory=backend_factory)
    app = create_app(settings, scheduler, store, Catalog(settings.modelfiles),
                     source_platform(settings.platform, settings.rkllm_lib))
    return app, scheduler


def run(settings) -> None:
    import waitress

    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, scheduler = build(settings)
    scheduler.start()
    host, port = settings.bind_address()
    server = waitress.create_server(
        app, host=host, port=port, threads=settings.http_threads,
        # Lets a waiting request notice that its client went away (waitress.client_disconnected).
        channel_request_lookahead=1,
        ident="rkollama", clear_untrusted_proxy_headers=True)

    def stop(_signum, _frame):
        scheduler.shutdown()
        server.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("rkollama").info("rkollama listening on %s:%s (models in %s)",
                                       host, server.effective_port, settings.models)
    print(f"rkollama is listening on http://{host}:{server.effective_port}", flush=True)
    server.run()
