"""create_app(): the Flask application, with its collaborators passed in (never globals)."""

import fnmatch
import ipaddress
import socket
from dataclasses import dataclass

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from rkollama import __version__
from rkollama.server.streaming import error_response

_LOCAL_ORIGINS = ("http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
                  "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
                  "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
                  "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
_ALLOWED_HEADERS = ("Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
                    "x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
                    "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, "
                    "x-stainless-timeout, x-stainless-async")


@dataclass
class Deps:
    settings: object
    scheduler: object
    store: object
    catalog: object
    platform: str


def create_app(settings, scheduler, store, catalog, platform: str = "cpu") -> Flask:
    from rkollama.server import ollama_routes, openai_routes

    app = Flask("rkollama")
    app.config["RKOLLAMA"] = Deps(settings, scheduler, store, catalog, platform)
    app.register_blueprint(ollama_routes.bp)
    app.register_blueprint(openai_routes.bp)
    origins = list(_LOCAL_ORIGINS) + [o.strip() for o in settings.origins.split(",") if o.strip()]
    bind_host, _ = settings.bind_address()
    guard_host = _is_loopback(bind_host)

    @app.before_request
    def _guard():
        if guard_host and not _host_allowed(request.host):
            return error_response("forbidden", 403)
        if request.method == "OPTIONS":
            return app.response_class(b"", status=204)
        return None

    @app.after_request
    def _headers(response):
        origin = request.headers.get("Origin")
        if origin and any(fnmatch.fnmatchcase(origin, pattern) for pattern in origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
        response.headers["X-Rkollama-Version"] = __version__
        return response

    @app.errorhandler(404)
    def _not_found(_exc):
        return app.response_class("404 page not found", status=404, content_type="text/plain")

    @app.errorhandler(405)
    def _not_allowed(_exc):
        return app.response_class("405 method not allowed", status=405, content_type="text/plain")

    @app.errorhandler(HTTPException)
    def _http(exc):
        return error_response(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc):
        app.logger.exception("unexpected error")
        return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)

    return app


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
