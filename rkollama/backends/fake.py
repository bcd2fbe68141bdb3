"""ScriptedBackend: a deterministic engine for tests and demos (`RKOLLAMA_BACKEND=fake`).

Scripts are queued with `enqueue(["Hel", "lo"])` on the class-independent `Script` object passed
to `factory()`; every `Generation` received is recorded in `script.history`. Without a script it
echoes the last user message word by word. Metrics are deterministic: prompt tokens = words in
the prompt, 1 ms per prompt token, 10 ms per generated token. With a `format`, the echo is the
JSON object {"echo": "<first words>"}.
"""

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rkollama.backends.base import Backend
from rkollama.core import media
from rkollama.core.types import Done, DoneReason, Generation, LoadOptions, Token, TokenLogprob
from rkollama.errors import BackendFailed, LoadFailed

if TYPE_CHECKING:
    from rkollama.config import Settings
    from rkollama.models.store import ModelSpec


class Script:
    """Shared, thread-safe control panel of fake backends created by one factory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Any] = deque()
        self.history: list[Any] = []
        self.loads: list[Any] = []
        self.closes = 0
        self.delay_s = 0.0
        self.fail_on_load = ""
        self.fail_at_token: int | None = None
        # Tokens after index `hold_after` wait until `release` is set (streaming tests).
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.finished: list[Any] = []  # (reason, tokens produced) of every generation that ended
        self.slots = 1  # generations one loaded model runs at once (like NPU n_batch)
        self.embedded = 0  # texts embedded so far (each takes delay_s)
        self.busy: list[tuple[str, bool]] = []  # (model, busy) of every daemon_busy, in order

    def enqueue(self, tokens: list[str]) -> None:
        with self._lock:
            self._queue.append(list(tokens))

    def _next(self, gen: Generation) -> list[str] | None:
        with self._lock:
            self.history.append(gen)
            return self._queue.popleft() if self._queue else None


class ScriptedBackend(Backend):
    kind = "fake"
    device = "cpu"

    def __init__(self, spec: "ModelSpec", opts: LoadOptions, script: Script):
        self.spec, self.opts, self.script = spec, opts, script
        self.context_length = opts.num_ctx or 4096
        self.memory_bytes = spec.size
        self.slots = script.slots
        self.closed = False

    @classmethod
    def load(cls, spec: "ModelSpec", opts: LoadOptions, settings: "Settings",
             script: Script | None = None) -> "ScriptedBackend":
        script = script or Script()
        if script.fail_on_load:
            raise LoadFailed(script.fail_on_load)
        script.loads.append((spec.name.display(), opts))
        return cls(spec, opts, script)

    def generate(self, gen: Generation, cancel: threading.Event) -> Iterator[Token | Done]:
        scripted = self.script._next(gen)
        words = _prompt_words(gen)
        tokens = scripted if scripted is not None else _echo(gen)
        limit = gen.options.num_predict
        produced = 0
        try:
            for index, text in enumerate(tokens):
                if cancel.is_set():
                    yield self._done(DoneReason.CANCELLED, words, produced)
                    return
                if limit is not None and limit >= 0 and produced >= limit:
                    yield self._done(DoneReason.LENGTH, words, produced)
                    return
                if self.script.fail_at_token is not None and index == self.script.fail_at_token:
                    raise BackendFailed("scripted failure")
                if self.script.delay_s:
                    time.sleep(self.script.delay_s)
                if self.script.hold_after is not None and index > self.script.hold_after:
                    while not self.script.release.wait(0.01):
                        if cancel.is_set():
                            yield self._done(DoneReason.CANCELLED, words, produced)
                            return
                produced += 1
                yield Token(text, logprobs=_scored(text, index, gen) if gen.logprobs else ())
        except GeneratorExit:  # the consumer closed the stream (client gone)
            self.script.finished.append((DoneReason.CANCELLED, produced))
            raise
        yield self._done(DoneReason.STOP, words, produced)

    def _done(self, reason: DoneReason, prompt_tokens: int, produced: int) -> Done:
        self.script.finished.append((reason, produced))
        # Token ids of the fake are positions: the context a real engine would hand back.
        return Done(reason, prompt_tokens, float(prompt_tokens), produced, 10.0 * produced,
                    tuple(range(prompt_tokens + produced)))

    def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Deterministic 4-dimensional vectors: word count, length, vowels, 1."""
        for _ in texts:
            time.sleep(self.script.delay_s)
            with self.script._lock:
                self.script.embedded += 1
        vectors = [[float(len(t.split())), float(len(t)), float(sum(c in "aeiou" for c in t)), 1.0]
                   for t in texts]
        return vectors, sum(len(t.split()) for t in texts)

    def daemon_busy(self, busy: bool) -> None:
        with self.script._lock:
            self.script.busy.append((self.spec.name.display(), busy))

    def render(self, gen: Generation) -> str:
        if gen.prompt is not None:
            return gen.prompt
        messages, _ = media.tagged(list(gen.messages or []))  # images as every engine places them
        return "".join(f"<{m.role}>{m.content}\n" for m in messages) + "<assistant>"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.script.closes += 1


def _scored(text: str, index: int, gen: Generation) -> tuple[TokenLogprob, ...]:
    """Deterministic log-probabilities: token i has -0.1*(i+1); alternatives alt0, alt1… below."""
    own = -0.1 * (index + 1)
    top = tuple(TokenLogprob(f"alt{k}", own - 1.0 - k, tuple(f"alt{k}".encode()))
                for k in range(gen.top_logprobs))
    return (TokenLogprob(text, own, tuple(text.encode()), top),)


def _prompt_words(gen: Generation) -> int:
    if gen.prompt is not None:
        return len(gen.prompt.split())
    return sum(len((m.content or "").split()) for m in gen.messages or [])


def _echo(gen: Generation) -> list[str]:
    text = gen.prompt or ""
    for message in reversed(gen.messages or []):
        if message.role == "user":
            text = message.content
            break
    if gen.format:  # keep to the requested format, as far as a fake can: {"echo": "<words>"}
        return [json.dumps({"echo": " ".join(text.split()[:3])})]
    words = text.split()
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class ScriptedFactory:
    """A backend factory for the Scheduler that builds ScriptedBackends sharing `script`."""

    def __init__(self, script: Script):
        self.script = script

    def __call__(self, spec: "ModelSpec", opts: LoadOptions, settings: "Settings") -> Backend:
        """On an engine thread of its own, as EngineFactory runs an in-process engine."""
        from rkollama.backends.engine_thread import OnEngineThread

        return OnEngineThread.start(spec.name.display(),
                                    lambda: ScriptedBackend.load(spec, opts, settings, script=self.script))

    def engine_class(self, spec: "ModelSpec", settings: "Settings") -> type[Backend]:
        return ScriptedBackend


def factory(script: Script) -> ScriptedFactory:
    return ScriptedFactory(script)
