"""The checks every request passes before a route sees it (Host, Origin, API key and rate
limit, as Ollama's middleware does them) and the headers and access line every answer gets."""

import fnmatch
import ipaddress
import logging
import socket
import time

from flask import Flask, Response, g, request

from rkollama import __version__
from rkollama.server.auth import Gate
from rkollama.server.dialects import dialect_error
from rkollama.server.metrics import Metrics

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



class RequestGuard:
    """`before` refuses a request (or answers a preflight) before any route runs; `after` adds
    CORS and version headers, counts the answer and writes the access line."""

    def __init__(self, app: Flask, gate: Gate, metrics: Metrics, origins: list[str], bind_host: str):
        self.app, self.gate, self.metrics = app, gate, metrics
        self.origins = list(_LOCAL_ORIGINS) + origins
        self.guard_host = _is_loopback(bind_host)
        self.access = logging.getLogger("rkollama.access")

    def allowed_origin(self, origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.origins)

    def before(self) -> Response | None:
        g.started = time.monotonic()
        host = request.headers.get("Host")  # not request.host: Waitress invents one when absent
        if host is None and request.environ.get("SERVER_PROTOCOL") != "HTTP/1.0":
            # As Go's server (Ollama's) answers an HTTP/1.1 request without Host.
            return self.app.response_class("400 Bad Request: missing required Host header", status=400,
                                           content_type="text/plain; charset=utf-8")
        if self.guard_host and not _host_allowed(host or ""):
            self.access.warning("refused %s %s: host %r is not allowed", request.method, request.path, host)
            return dialect_error("forbidden", 403)
        # A web page may send "simple" requests (text/plain bodies, no preflight) to any
        # address; like Ollama, anything from an origin that is not allowed is refused.
        origin = request.headers.get("Origin")
        if origin is not None and not self.allowed_origin(origin):
            self.access.warning("refused %s %s: origin %r is not allowed (OLLAMA_ORIGINS)",
                                request.method, request.path, origin)
            return dialect_error("forbidden", 403)
        if request.method == "OPTIONS":  # preflights carry no credentials
            return self.app.response_class(b"", status=204)
        return self._gate()

    def _gate(self) -> Response | None:
        refusal = self.gate.check(request.path, request.headers, request.remote_addr or "")
        if refusal is None:
            return None
        self.access.warning("refused %s %s from %s: %s", request.method, request.path,
                            request.remote_addr, refusal.message)
        response = dialect_error(refusal.message, refusal.status)
        if refusal.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if refusal.retry_after_s:
            response.headers["Retry-After"] = str(refusal.retry_after_s)
        return response

    def after(self, response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and self.allowed_origin(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
        response.headers["X-Rkollama-Version"] = __version__
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _METHODS else "OTHER"  # bounded labels
        self.metrics.request(rule, method, response.status_code)
        _log_access(self.access, response)
        return response


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
