"""Request bodies bounded while Waitress reads them, before the app (and its API-key check) runs.

Waitress reads a whole body (spooling it to a temporary file past 512 KB) before it calls the
app, so a limit the app enforces comes too late: a client without the key could make the daemon
write gigabytes only to be told 401. This parser decides each request's limit as soon as its
headers are in: RKOLLAMA_MAX_BODY_BYTES for every request, except a blob upload
(`POST /api/blobs/…`) from a client the gate admits, which may send RKOLLAMA_MAX_BLOB_BYTES (a
model file). A body declared or chunked past its limit is refused at once with 413 in the shape
of the request's dialect, without reading it; a chunk whose announced size alone passes the
limit (2^64−1) is refused when its size line arrives.

It relies on Waitress's parser internals (`adj`, `body_rcv.chunk_remainder`, `completed`,
`error`), pinned with the rest in setup.cfg and tested in tests/test_units.py.
"""

import logging
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.utilities import RequestEntityTooLarge

from rkollama.server.auth import Gate
from rkollama.server.dialects import error_shape

BLOB_PATH = "/api/blobs/"

log = logging.getLogger("rkollama.access")


def too_large(limit: int, setting: str) -> str:
    """What a client is told of a body past its limit (the app's 413 says the same)."""
    return f"request body too large (limit {limit} bytes, {setting})"


class _TooLarge(RequestEntityTooLarge):
    """Waitress's 413, answered in the dialect of the path it came to."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        reply = error_shape(self.path, self.body, self.code)
        return f"{self.code} {self.reason}", [("Content-Type", reply.content_type or "")], reply.get_data()


def channel_class(gate: Gate, max_body_bytes: int, max_blob_bytes: int) -> type[HTTPChannel]:
    """A Waitress channel whose requests are bounded as the module says."""

    class Parser(HTTPRequestParser):
        # Waitress's own attributes this class sets (annotations only: no values shadow them).
        adj: Any
        error: Any
        completed: bool
        limit = max_body_bytes
        setting = "RKOLLAMA_MAX_BODY_BYTES"

        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            headers = {"Authorization": self.headers.get("AUTHORIZATION", ""),
                       "x-api-key": self.headers.get("X_API_KEY", "")}
            if self.command == "POST" and self.path.startswith(BLOB_PATH) and gate.admits(headers):
                self.limit, self.setting = max_blob_bytes, "RKOLLAMA_MAX_BLOB_BYTES"
            # Waitress refuses a body of max_request_body_size bytes or more: one past the limit.
            self.adj = _Adjusted(self.adj, self.limit + 1)

        def received(self, data: bytes) -> int:
            consumed: int = super().received(data)
            if self.error is not None and isinstance(self.error, RequestEntityTooLarge) \
                    and not isinstance(self.error, _TooLarge):
                self._refuse()
            elif (not self.completed and self.chunked and self.body_rcv is not None
                  and self.body_bytes_received + self.body_rcv.chunk_remainder > self.limit):
                self._refuse()
                self.completed = True
            return consumed

        def _refuse(self) -> None:
            log.warning("refused %s %s before reading its body: more than %d bytes (%s)",
                        self.command, self.path, self.limit, self.setting)
            self.error = _TooLarge(self.path, too_large(self.limit, self.setting))

    class Channel(HTTPChannel):
        parser_class = Parser

    return Channel


class _Adjusted:
    """Waitress's Adjustments with one request's own body limit (the rest read through)."""

    def __init__(self, adj: Any, max_request_body_size: int):
        self._adj = adj
        self.max_request_body_size = max_request_body_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adj, name)

