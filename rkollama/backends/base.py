"""The backend interface every engine implements (llama.cpp on the CPU, RKLLM on the NPU, fake).

Contract:
  * `load(spec, opts, settings)` (classmethod) blocks until the model is ready; raises LoadFailed.
  * `generate(gen, cancel)` yields `Token`s, then exactly one `Done`; never yields after it.
    When `cancel` (a threading.Event) is set it stops at the next token with
    `Done(CANCELLED)`. Errors raise BackendFailed. It never formats JSON or touches sockets.
  * `close()` is idempotent and safe after a partial load.
"""

from typing import ClassVar, Iterator


class Backend:
    kind: ClassVar[str] = ""
    device: ClassVar[str] = "cpu"
    supports_images: ClassVar[bool] = False
    constrains_format: ClassVar[bool] = False
    """True when the engine enforces `format` while sampling (a grammar); otherwise the answer
    is validated afterwards and retried (core.structured)."""

    context_length: int = 0
    """Tokens of context this instance was loaded with."""
    memory_bytes: int = 0
    """Approximate resident bytes (weights + KV cache), for `ps`."""
    slots: int = 1
    """Generations the loaded model serves at once. Above 1 (NPU n_batch), generate() is called
    from several threads concurrently and the backend batches them itself."""

    @classmethod
    def load(cls, spec, opts, settings) -> "Backend":
        raise NotImplementedError

    def generate(self, gen, cancel) -> Iterator:
        raise NotImplementedError

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """One embedding per text (not normalised) and the prompt tokens used."""
        raise NotImplementedError

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        pass
