"""create_app(): the Flask application, with its collaborators passed in (never globals)."""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from rkollama.errors import RkollamaError
from rkollama.server.auth import Gate
from rkollama.server.body_limits import too_large
from rkollama.server.deps import Deps
from rkollama.server.dialects import dialect_error, unexpected
from rkollama.server.guard import RequestGuard
from rkollama.server.metrics import Metrics

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.catalog import Catalog
    from rkollama.models.store import ModelStore
    from rkollama.scheduler import Scheduler

def create_app(settings: "Settings", scheduler: "Scheduler", store: "ModelStore", catalog: "Catalog",
               platform: str = "cpu", clock: Callable[[], float] = time.monotonic) -> Flask:
    """The app; it also makes itself the scheduler's observer (its metrics)."""
    from rkollama.server import anthropic_routes, cloud_routes, manage_routes, ollama_routes, openai_routes

    app = Flask("rkollama")
    metrics = Metrics(scheduler)
    scheduler.observer = metrics
    app.config["RKOLLAMA"] = Deps(settings, scheduler, store, catalog, platform, metrics)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.url_map.merge_slashes = False  # "//" is a 404 like any unknown path, not an HTML redirect
    for blueprint in (ollama_routes.bp, openai_routes.bp, anthropic_routes.bp, cloud_routes.bp,
                      manage_routes.bp):
        app.register_blueprint(blueprint)
    guard = RequestGuard(app, Gate(settings.api_key, settings.rate_limit, clock), metrics,
                         list(settings.origins), settings.bind_address()[0])
    app.before_request(guard.before)
    app.after_request(guard.after)
    _register_errors(app, settings.max_body_bytes)
    return app


def _register_errors(app: Flask, max_body_bytes: int) -> None:
    """Every refusal in the dialect of the route it came to; Go's plain-text 404 and 405."""

    @app.errorhandler(404)
    def _not_found(_exc: HTTPException) -> Response:
        return app.response_class("404 page not found", status=404, content_type="text/plain")

    @app.errorhandler(405)
    def _not_allowed(_exc: HTTPException) -> Response:
        return app.response_class("405 method not allowed", status=405, content_type="text/plain")

    @app.errorhandler(413)
    def _too_large(_exc: HTTPException) -> Response:
        return dialect_error(too_large(max_body_bytes, "RKOLLAMA_MAX_BODY_BYTES"), 413)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return dialect_error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(RkollamaError)
    def _refused(exc: RkollamaError) -> Response:
        return dialect_error(exc.message, exc.status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        return unexpected(exc)
