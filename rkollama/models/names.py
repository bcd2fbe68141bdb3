"""Ollama's model-name grammar: [host/][namespace/]model[:tag]."""

import re
from dataclasses import dataclass

from rkollama.errors import InvalidModelName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,339}(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: object) -> "ModelName":
        """Parse and validate; raise InvalidModelName for anything outside the grammar."""
        if not isinstance(text, str) or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise InvalidModelName()  # control characters (a newline in a name) never pass
        text = text.strip()
        if not text or ".." in text or "\\" in text or len(text) > 600:
            raise InvalidModelName()
        rest, tag = text, DEFAULT_TAG
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
        parts = rest.split("/")
        if len(parts) > 3:
            raise InvalidModelName()
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 3:
            host, namespace, model = parts
        elif len(parts) == 2:
            namespace, model = parts
        else:
            (model,) = parts
        # fullmatch: `$` alone would let a trailing newline through.
        if not (_PART.fullmatch(model) and _PART.fullmatch(tag) and _NAMESPACE.fullmatch(namespace)
                and _HOST.fullmatch(host)):
            raise InvalidModelName()
        return cls(host, namespace, model, tag)

    def display(self) -> str:
        """Shortest form that keeps the tag: `qwen3:latest`, `user/foo:7b`."""
        prefix = ""
        if self.host != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def key(self) -> tuple[str, str, str, str]:
        """Case-insensitive identity, for lookups."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def manifest_parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)
