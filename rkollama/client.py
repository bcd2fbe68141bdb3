"""A small HTTP client for the daemon (stdlib only, so the CLI starts fast)."""

import builtins
import http.client
import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from rkollama.api import types as wire


class StatusError(Exception):
    """The daemon answered with an error (HTTP status, or an `error` line in a stream)."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message, self.status = message, status


class ConnectError(Exception):
    pass


class Client:
    def __init__(self, base_url: str, timeout: float | None = None, api_key: str = ""):
        """`api_key`: sent as `Authorization: Bearer KEY` (a daemon with RKOLLAMA_API_KEY)."""
        parts = urlsplit(base_url)
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.scheme, self.host = parts.scheme, parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.timeout = timeout
        self._conn = None

    def _connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout if timeout is not None else self.timeout)

    def _send(self, method: str, path: str, body: object = None, timeout: float | None = None
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connect(timeout)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "rkollama-cli", **self.auth}
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
        except (ConnectionError, OSError) as exc:
            conn.close()
            raise ConnectError(str(exc)) from None
        if response.status >= 400:
            raw = response.read()
            conn.close()
            raise StatusError(_error_message(raw, response.status), response.status)
        return conn, response

    def heartbeat(self, timeout: float = 2.0) -> bool:
        try:
            conn, response = self._send("HEAD", "/", timeout=timeout)
        except (ConnectError, StatusError):
            return False
        response.read()
        conn.close()
        return True

    def store_fingerprint(self) -> str:
        """Which model store the daemon uses (X-Rkollama-Store of /api/version); "" when it
        does not say (an Ollama daemon)."""
        try:
            conn, response = self._send("GET", "/api/version", timeout=5)
        except (ConnectError, StatusError):
            return ""
        response.read()
        conn.close()
        return response.getheader("X-Rkollama-Store", "") or ""

    def request(self, method: str, path: str, body: object = None) -> Any:
        """The decoded JSON reply (None for an empty body)."""
        conn, response = self._send(method, path, body)
        try:
            raw = response.read()
        finally:
            conn.close()
        return json.loads(raw) if raw.strip() else None

    def stream(self, method: str, path: str, body: object) -> Generator[dict[str, Any], None, None]:
        """Yield each NDJSON object; raise StatusError on an `error` line.

        Closing the generator (or Ctrl+C inside it) closes the connection, which is how the
        daemon learns to stop generating.
        """
        conn, response = self._send(method, path, body)
        try:
            for line in response:
                if not line.strip():
                    continue
                obj = json.loads(line)
                if obj.get("error"):
                    raise StatusError(obj["error"], 500)
                yield obj
        finally:
            conn.close()

    # -- endpoints -----------------------------------------------------------------------------
    def list(self) -> builtins.list[wire.ListModel]:
        return cast("builtins.list[wire.ListModel]", self.request("GET", "/api/tags")["models"])

    def ps(self) -> builtins.list[wire.ProcessModel]:
        return cast("builtins.list[wire.ProcessModel]", self.request("GET", "/api/ps")["models"])

    def show(self, model: str) -> wire.ShowResponse:
        return cast(wire.ShowResponse, self.request("POST", "/api/show", {"model": model}))

    def delete(self, model: str) -> None:
        self.request("DELETE", "/api/delete", {"model": model})

    def copy(self, source: str, destination: str) -> None:
        self.request("POST", "/api/copy", {"source": source, "destination": destination})

    def pull(self, model: str) -> Iterator[wire.ProgressResponse]:
        return cast(Iterator[wire.ProgressResponse],
                    self.stream("POST", "/api/pull", {"model": model, "stream": True}))

    def blob_exists(self, digest: str) -> bool:
        try:
            self.request("HEAD", f"/api/blobs/{digest}")
            return True
        except StatusError as exc:
            if exc.status == 404:
                return False
            raise

    def upload_blob(self, digest: str, path: Path) -> None:
        """POST the file at `path` as the blob `digest`, streamed from disk."""
        import os

        conn = self._connect()
        try:
            with open(path, "rb") as handle:
                conn.request("POST", f"/api/blobs/{digest}", body=handle,
                             headers={"Content-Length": str(os.fstat(handle.fileno()).st_size),
                                      "User-Agent": "rkollama-cli", **self.auth})
            response = conn.getresponse()
            raw = response.read()
        except (ConnectionError, OSError) as exc:
            raise ConnectError(str(exc)) from None
        finally:
            conn.close()
        if response.status >= 400:
            raise StatusError(_error_message(raw, response.status), response.status)

    def create(self, body: dict[str, Any]) -> Iterator[wire.ProgressResponse]:
        lines = self.stream("POST", "/api/create", dict(body, stream=True))
        return cast(Iterator[wire.ProgressResponse], lines)

    def generate(self, body: wire.GenerateRequest) -> Iterator[wire.GenerateResponse]:
        lines = self.stream("POST", "/api/generate", dict(body, stream=True))
        return cast(Iterator[wire.GenerateResponse], lines)

    def chat(self, body: wire.ChatRequest) -> Generator[wire.ChatResponse, None, None]:
        """The answer's objects; close() drops the connection (the daemon stops generating)."""
        lines = self.stream("POST", "/api/chat", dict(body, stream=True))
        return cast(Generator[wire.ChatResponse, None, None], lines)


def _error_message(raw: bytes, status: int) -> str:
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict) and obj.get("error"):
            return str(obj["error"])
    except ValueError:
        pass
    text = raw.decode("utf-8", "replace").strip()
    return text or f"HTTP {status}"
