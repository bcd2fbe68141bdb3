"""Who may use the daemon: optional API keys (RKOLLAMA_API_KEY) and a per-client request rate
limit (RKOLLAMA_RATE_LIMIT), checked before any route runs."""

import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from werkzeug.datastructures import Headers

    HeaderMap = Headers | Mapping[str, str]
    """A request's headers: werkzeug's (case-insensitive) in the daemon, a dict in tests."""

OPEN_PATHS = ("/", "/v1/health")
"""Answer without a key (liveness checks of load balancers and supervisors)."""
MAX_CLIENTS = 10_000
"""Rate-limit buckets kept at once; full (idle) ones are forgotten first beyond this."""


@dataclass
class Refusal:
    status: int
    message: str
    retry_after_s: int = 0


class Gate:
    """Keys are compared in constant time; the rate limit is a token bucket per key (or per
    client address when no keys are set): `rate_limit` requests per minute, bursts up to it."""

    def __init__(self, keys: tuple[str, ...], rate_limit: int,
                 clock: Callable[[], float] = time.monotonic):
        self.keys = tuple(k.encode() for k in keys)
        self.rate = rate_limit
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def check(self, path: str, headers: "HeaderMap", address: str) -> Refusal | None:
        if path in OPEN_PATHS:
            return None
        client = address
        if self.keys:
            key = presented_key(headers)
            if key is None:
                return Refusal(401, "unauthorized: this server needs an API key "
                                    "(Authorization: Bearer KEY)")
            if not self.admits(headers):
                return Refusal(401, "unauthorized: the API key is not valid")
            client = "key:" + key
        if self.rate <= 0:
            return None
        wait = self._take(client)
        if wait > 0:
            return Refusal(429, f"rate limit exceeded: {self.rate} requests per minute "
                                "(RKOLLAMA_RATE_LIMIT)", max(1, math.ceil(wait)))
        return None

    def admits(self, headers: "HeaderMap") -> bool:
        """The request presents a valid key, or none is needed (no rate limit counted)."""
        if not self.keys:
            return True
        key = presented_key(headers)
        return key is not None and any(hmac.compare_digest(key.encode(), known) for known in self.keys)

    def _take(self, client: str) -> float:
        """Seconds until `client` may send again; 0 after taking one request from its bucket."""
        per_second = self.rate / 60.0
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(client, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - at) * per_second)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return (1.0 - tokens) / per_second
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._forget_idle(now, per_second)
            return 0.0

    def _forget_idle(self, now: float, per_second: float) -> None:
        full = [c for c, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * per_second >= self.rate]
        for client in full:
            del self._buckets[client]


def presented_key(headers: "HeaderMap") -> str | None:
    """The key of `Authorization: Bearer KEY` (ollama and openai clients), or of `x-api-key`
    (the anthropic client)."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    key = headers.get("x-api-key", "").strip()
    return key or None
