"""create_app(): the Flask application, with its collaborators passed in (never globals)."""

import fnmatch
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from rkollama import __version__
from rkollama.errors import RkollamaError
from rkollama.server.auth import Gate
from rkollama.server.deps import Deps
from rkollama.server.dialects import dialect_error, unexpected
from rkollama.server.metrics import Metrics

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.catalog import Catalog
    from rkollama.models.store import ModelStore
    from rkollama.scheduler import Scheduler

_LOCAL_ORIGINS = ("http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
                  "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
                  "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
                  "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_ALLOWED_HEADERS = ("Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
                    "x-api-key, "
                    "x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
                    "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, "
                    "x-stainless-timeout, x-stainless-async")


def create_app(settings: "Settings", scheduler: "Scheduler", store: "ModelStore", catalog: "Catalog",
               platform: str = "cpu", clock: Callable[[], float] = time.monotonic) -> Flask:
    """The app; it also makes itself the scheduler's observer (its metrics)."""
    from rkollama.server import anthropic_routes, cloud_routes, manage_routes, ollama_routes, openai_routes

    app = Flask("rkollama")
    metrics = Metrics(scheduler)
    scheduler.observer = metrics
    gate = Gate(settings.api_key, settings.rate_limit, clock)
    app.config["RKOLLAMA"] = Deps(settings, scheduler, store, catalog, platform, metrics)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.url_map.merge_slashes = False  # "//" is a 404 like any unknown path, not an HTML redirect
    access = logging.getLogger("rkollama.access")
    app.register_blueprint(ollama_routes.bp)
    app.register_blueprint(openai_routes.bp)
    app.register_blueprint(anthropic_routes.bp)
    app.register_blueprint(cloud_routes.bp)
    app.register_blueprint(manage_routes.bp)
    origins = list(_LOCAL_ORIGINS) + list(settings.origins)
    bind_host, _ = settings.bind_address()
    guard_host = _is_loopback(bind_host)

    def allowed_origin(origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in origins)

    @app.before_request
    def _guard() -> Response | None:
        g.started = time.monotonic()
        host = request.headers.get("Host")  # not request.host: Waitress invents one when absent
        if host is None and request.environ.get("SERVER_PROTOCOL") != "HTTP/1.0":
            # As Go's server (Ollama's) answers an HTTP/1.1 request without Host.
            return app.response_class("400 Bad Request: missing required Host header", status=400,
                                      content_type="text/plain; charset=utf-8")
        if guard_host and not _host_allowed(host or ""):
            access.warning("refused %s %s: host %r is not allowed", request.method, request.path, host)
            return dialect_error("forbidden", 403)
        # A web page may send "simple" requests (text/plain bodies, no preflight) to any
        # address; like Ollama, anything from an origin that is not allowed is refused.
        origin = request.headers.get("Origin")
        if origin is not None and not allowed_origin(origin):
            access.warning("refused %s %s: origin %r is not allowed (OLLAMA_ORIGINS)",
                           request.method, request.path, origin)
            return dialect_error("forbidden", 403)
        if request.method == "OPTIONS":  # preflights carry no credentials
            return app.response_class(b"", status=204)
        refusal = gate.check(request.path, request.headers, request.remote_addr or "")
        if refusal is not None:
            access.warning("refused %s %s from %s: %s", request.method, request.path,
                           request.remote_addr, refusal.message)
            response = dialect_error(refusal.message, refusal.status)
            if refusal.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            if refusal.retry_after_s:
                response.headers["Retry-After"] = str(refusal.retry_after_s)
            return response
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and allowed_origin(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
        response.headers["X-Rkollama-Version"] = __version__
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "OTHER"  # bounded labels
        metrics.request(rule, method, response.status_code)
        _log_access(access, response)
        return response

    @app.errorhandler(404)
    def _not_found(_exc: HTTPException) -> Response:
        return app.response_class("404 page not found", status=404, content_type="text/plain")

    @app.errorhandler(405)
    def _not_allowed(_exc: HTTPException) -> Response:
        return app.response_class("405 method not allowed", status=405, content_type="text/plain")

    @app.errorhandler(413)
    def _too_large(_exc: HTTPException) -> Response:
        return dialect_error(f"request body too large (limit {settings.max_body_bytes} bytes, "
                              "RKOLLAMA_MAX_BODY_BYTES)", 413)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return dialect_error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(RkollamaError)
    def _refused(exc: RkollamaError) -> Response:
        return dialect_error(exc.message, exc.status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        return unexpected(exc)

    return app


def _log_access(access: logging.Logger, response: Response) -> None:
    """One line per request: method, path, status, milliseconds to the response head, model.

    Streams log when their head is sent; generation time is in the scheduler's lines."""
    started = g.get("started")
    elapsed = (time.monotonic() - started) * 1000.0 if started is not None else 0.0
    model = g.get("model", "")
    level = logging.INFO if request.path.startswith(("/api/", "/v1/")) else logging.DEBUG
    access.log(level, "%s %s %s %.1fms%s", request.method, request.path, response.status_code,
               elapsed, f" model={model}" if model else "")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host_allowed(host_header: str) -> bool:
    """DNS-rebinding guard when bound to loopback: only local, private or own host names."""
    if host_header.startswith("["):  # [IPv6]:port
        host = host_header[1:host_header.find("]")] if "]" in host_header else host_header
    elif host_header.count(":") == 1:
        host = host_header.rsplit(":", 1)[0]
    else:
        host = host_header
    host = host.lower()
    if not host or host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    if host == socket.gethostname().lower():
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified
