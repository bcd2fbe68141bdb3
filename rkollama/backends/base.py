"""The backend interface every engine implements (llama.cpp on the CPU, RKLLM on the NPU, fake).

Contract:
  * `load(spec, opts, settings)` (classmethod) blocks until the model is ready; raises LoadFailed.
  * `generate(gen, cancel)` yields `Token`s, then exactly one `Done`; never yields after it.
    When `cancel` (a threading.Event) is set it stops at the next token with
    `Done(CANCELLED)`. Errors raise BackendFailed. It never formats JSON or touches sockets.
  * `stream(gen, cancel, emit)` is generate() with each event handed to `emit` (how a runner
    sends them); `expect(change)` announces generations on their way to it.
  * `close()` is idempotent and safe after a partial load.

What the scheduler sees is always safe to call from any thread: an in-process engine is wrapped
in `engine_thread.OnEngineThread`, a runner process's in `runner.RunnerBackend`. What is true
of an engine before it loads (grammar sampling, what of the Modelfile it bakes in, NPU address
spaces, what a signal that kills it means) are class attributes the scheduler and the runner
read from the engine's class, so neither holds any engine's policy.
"""

import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, ClassVar, Protocol

from rkollama.core.types import Done, Generation, JSONObject, LoadOptions, Token

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec


Emit = Callable[[Token | Done | Exception], None]
"""Where `Backend.stream` sends a generation's events: Tokens, then one Done or one exception."""


class Backend(ABC):
    kind: str = ""
    """Engine name: "llamacpp", "rkllm" or "fake"."""
    title: ClassVar[str] = "the engine"
    """The engine as an error message names it."""
    device: str = "cpu"
    """"cpu" or "npu"."""
    constrains_format: bool = False
    """True when the engine enforces `format` while sampling (a grammar); otherwise the answer
    is validated afterwards and retried (core.structured)."""
    own_npu_domain: ClassVar[bool] = False
    """Each loaded model needs an NPU address space of its own (LoadOptions.npu_domain)."""
    death_hints: ClassVar[dict[signal.Signals, str]] = {}
    """What a signal that killed this engine's runner usually means, in words for the user."""
    dead: bool = False
    """The engine's process died: the scheduler drops this instance and loads the model again."""

    context_length: int = 0
    """Tokens of context this instance was loaded with."""
    memory_bytes: int = 0
    """Approximate resident bytes (weights + KV cache), for `ps`."""
    slots: int = 1
    """Generations the loaded model serves at once. Above 1 (NPU n_batch), generate() is called
    from several threads concurrently and the backend batches them itself."""
    batch_window_s: float = 0.0
    """With slots above 1: seconds a runner waits for more requests to join a batch."""
    continuous: bool = False
    """With slots above 1: generations join and leave a running batch between steps (call
    generate() from a thread each); otherwise they start together (generate_batch)."""

    @classmethod
    def first_npu_domain(cls, spec: "ModelSpec") -> int:
        """With own_npu_domain: the lowest domain this model's language model may take."""
        return 0

    @classmethod
    def shaping(cls, spec: "ModelSpec") -> JSONObject:
        """What of `spec`'s Modelfile, besides its weights, template and tokenizer, this engine
        bakes in at load time (two models that differ in it cannot share a loaded engine)."""
        return {}

    def batch_key(self, gen: Generation) -> Hashable:
        """Generations with equal keys may share one batched forward pass."""
        return ()

    @classmethod
    @abstractmethod
    def load(cls, spec: "ModelSpec", opts: LoadOptions, settings: "Settings") -> "Backend":
        """The model loaded and ready."""

    @abstractmethod
    def generate(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        """`Token`s, then one `Done`."""

    def stream(self, gen: Generation, cancel: threading.Event, emit: Emit) -> None:
        """generate(), each event handed to `emit` (a runner sends it down its pipe). An engine
        with a loop of its own (the CPU engine) calls `emit` from that loop and returns once the
        request is queued: no thread hop per token. This default runs generate() here."""
        try:
            for event in self.generate(gen, cancel):
                emit(event)
        except Exception as exc:  # the generation's failure is its last event
            emit(exc)

    def expect(self, change: int) -> None:  # noqa: B027  # optional: only a batching loop waits
        """`change` (+1, or -1 when dropped before it starts) generations are on their way to
        stream(): an engine that batches may wait for them to start them together."""

    def daemon_busy(self, busy: bool) -> None:  # noqa: B027  # optional: only background work waits
        """The daemon is (True) or is no longer (False) running a request of any model: an
        engine's optional background work (the CPU engine's read-ahead) waits while it is, so
        that it never takes CPU from another model's request."""

    def generate_batch(self, batch: list[tuple[int, Generation, threading.Event]]
                       ) -> Iterator[tuple[int, Token | Done]]:
        """Several generations in one forward pass (NPU n_batch): `batch` is [(id, gen, cancel)];
        yields (id, event)."""
        raise NotImplementedError

    def render(self, gen: Generation) -> str:
        """The prompt text `gen` becomes, chat template applied (`_debug_render_only`)."""
        raise NotImplementedError

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """One embedding per text (not normalised) and the prompt tokens used."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027  # optional: an engine with nothing to free keeps this
        pass


class BackendFactory(Protocol):
    """What the scheduler loads engines with (backends.EngineFactory; the fake's for tests)."""

    def __call__(self, spec: "ModelSpec", opts: LoadOptions, settings: "Settings") -> Backend:
        """`spec` loaded and ready (blocking)."""

    def engine_class(self, spec: "ModelSpec", settings: "Settings") -> type[Backend]:
        """The engine `spec` would load with: what is true of it is known without loading."""
