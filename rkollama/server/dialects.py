"""Which API dialect a request speaks, decided in one place (by its path), and an error in
that dialect's shape: Anthropic's under /v1/messages, OpenAI's under the rest of /v1, Ollama's
everywhere else. An unexpected exception is "internal error" in that shape; its type, text and
traceback go to the log, never to the client."""

import logging

from flask import Response, request

from rkollama.anthropic.convert import error_body as anthropic_error
from rkollama.openai.convert import error_body as openai_error
from rkollama.server.streaming import error_response, json_response

INTERNAL_ERROR = "internal error"
"""What a client is told of an exception rkollama did not expect (the log has the rest)."""

log = logging.getLogger("rkollama.server")


def dialect(path: str) -> str:
    """"anthropic", "openai" or "ollama" for a request path."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path.startswith("/v1/"):
        return "openai"
    return "ollama"


def error_shape(path: str, message: str, status: int) -> Response:
    """`message` with `status` in the shape of the dialect `path` speaks."""
    kind = dialect(path)
    if kind == "anthropic":
        return json_response(anthropic_error(message, status), status)
    if kind == "openai":
        return json_response(openai_error(message, status), status)
    return error_response(message, status)


def dialect_error(message: str, status: int) -> Response:
    """An error in the shape of the API the current request is for."""
    return error_shape(request.path, message, status)


def unexpected(exc: BaseException) -> Response:
    """A 500 for an exception nothing handled: logged with its traceback, answered bare."""
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return dialect_error(INTERNAL_ERROR, 500)
