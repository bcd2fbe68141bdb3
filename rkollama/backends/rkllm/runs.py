"""Runs in flight on one RKLLM handle, and the result callback that feeds them.

The runtime calls the callback from a thread of its own with the `userdata` given to rkllm_run;
that is a run id here, so the callback finds its run in a table the backend owns (never a
global), and nothing it does may raise into the runtime's thread.
"""

import codecs
import ctypes
import itertools
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rkollama.backends.rkllm import abi
from rkollama.core.types import DoneReason

END = object()
"""Put on a run's queue when rkllm_run has returned."""

Perf = tuple[int, float, int, float]
"""(prefill tokens, prefill ms, generated tokens, generate ms) as the runtime reports them."""


class Utf8Joiner:
    """Text from the result callback's bytes, right whichever way the runtime fills WAITING.

    A WAITING callback means the token's bytes are not yet a whole UTF-8 character. Runtimes
    may give it NULL, the partial bytes (the next NORMAL then carries the rest), or bytes that
    the next NORMAL repeats in full (fact sheet §3.2; every public server ignores WAITING text).
    WAITING bytes are held back; a NORMAL that starts with a continuation byte (0x80-0xBF) needs
    them in front, one that starts a character of its own repeated them, and they are dropped.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = b""

    def feed(self, raw: bytes | None, waiting: bool) -> str:
        raw = raw or b""
        if waiting:
            if raw:  # a leading byte starts the character again: it replaces what was held
                self._pending = raw if not _continuation(raw[0]) else self._pending + raw
            return ""
        if self._pending:
            if raw and _continuation(raw[0]):
                raw = self._pending + raw
            self._pending = b""
        return str(self._decoder.decode(raw))

    def finish(self) -> str:
        """What is still held (an incomplete character at the very end), as replacement text."""
        pending, self._pending = self._pending, b""
        return str(self._decoder.decode(pending, final=True))


def _continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


@dataclass
class Run:
    """Per-generation state reached from the callback through `userdata`."""

    events: "queue.Queue[Any]" = field(default_factory=queue.Queue)
    decoder: Utf8Joiner = field(default_factory=Utf8Joiner)
    perf: Perf | None = None
    error: bool = False
    finished: bool = False
    """A FINISH callback arrived."""
    stop_reason: DoneReason = DoneReason.STOP
    """Why the engine ended the run's stream (set by the backend while it reads it)."""
    aborted: bool = False
    """rkollama called rkllm_abort for this run: whatever the runtime then reports (a -1
    from rkllm_run, an ERROR callback) is the abort, not a failure."""
    slot_decoders: list[Utf8Joiner] = field(default_factory=list)
    """Batch runs: one decoder per slot (the callback then receives an array of results)."""
    tokens: int = 0
    """One NORMAL or WAITING callback per generated token."""
    ids: list[int] = field(default_factory=list)
    """Token ids the callbacks carried (checked against the text before they are trusted)."""
    hidden: list[float] | None = None
    """Mean of the last hidden layer (embedding runs)."""
    keep: tuple[Any, ...] = ()
    """The ctypes buffers the runtime reads while the run is in flight."""

    def poll(self) -> Iterator[Any]:
        """The run's events as they come, and None every 50 ms so callers can check cancellation."""
        while True:
            try:
                item = self.events.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is END:
                return
            yield item


class RunTable:
    """The runs of one handle by id; `on_result` is what the runtime's callback calls."""

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}
        self._ids = itertools.count(1)
        self.trace: list[tuple[float, int, bytes | None, int]] | None = None
        """When a list (`doctor --npu-check`): every callback as (monotonic s, state, text bytes,
        token id), for a report of what the runtime did."""

    def start(self, slots: int = 0, keep: tuple[Any, ...] = ()) -> tuple[int, Run]:
        run_id = next(self._ids)
        run = self._runs[run_id] = Run(keep=keep)
        if slots:
            run.slot_decoders = [Utf8Joiner() for _ in range(slots)]
        return run_id, run

    def finish(self, run_id: int) -> None:
        self._runs.pop(run_id, None)

    def on_result(self, result: Any, userdata: int | None, state: int) -> int:
        """The runtime's result callback. Returns 0: continue (1 would pause, 2 release buffers)."""
        run = self._runs.get(userdata or 0)
        if self.trace is not None:
            try:
                single = result.contents if result and not (run and run.slot_decoders) else None
                self.trace.append((time.monotonic(), state, single.text if single else None,
                                   single.token_id if single else -1))
            except Exception:  # a diagnostic must never disturb the runtime's thread
                pass
        if run is None:
            return 0
        try:
            if run.slot_decoders:
                _batch_result(run, result, state)
            else:
                _single_result(run, result, state)
        except Exception:  # nothing may escape into the runtime's thread
            run.error = True
        return 0


def _single_result(run: Run, result: Any, state: int) -> None:
    if state == abi.RKLLM_RUN_NORMAL and result and result.contents.last_hidden_layer.num_tokens > 0:
        layer = result.contents.last_hidden_layer
        if layer.hidden_states:  # valid only during this callback: pool it now
            size, count = layer.embd_size, layer.num_tokens
            values = (ctypes.c_float * (size * count)).from_address(
                ctypes.addressof(layer.hidden_states.contents))
            run.hidden = [sum(values[t * size + d] for t in range(count)) / count for d in range(size)]
        return
    if state in (abi.RKLLM_RUN_NORMAL, abi.RKLLM_RUN_WAITING):
        run.tokens += 1
        if result and result.contents.token_id >= 0:
            run.ids.append(int(result.contents.token_id))
        raw = result.contents.text if result else None
        text = run.decoder.feed(raw, waiting=state == abi.RKLLM_RUN_WAITING)
        if text:
            run.events.put((text, run.tokens))
    elif state == abi.RKLLM_RUN_FINISH:
        run.finished = True
        perf = result.contents.perf if result else None
        run.perf = _perf(perf) if perf else None
    elif state == abi.RKLLM_RUN_ERROR:
        run.error = True


def _batch_result(run: Run, result: Any, state: int) -> None:
    """n_batch > 1: `result` points to an array of n_batch results, one per slot; a slot whose
    token_id is negative has finished and carries no text."""
    if state in (abi.RKLLM_RUN_NORMAL, abi.RKLLM_RUN_WAITING) and result:
        for slot, decoder in enumerate(run.slot_decoders):
            item = result[slot]
            if item.token_id < 0:
                continue
            text = decoder.feed(item.text, waiting=state == abi.RKLLM_RUN_WAITING)
            if text:
                run.events.put((slot, text))
    elif state == abi.RKLLM_RUN_FINISH and result:
        run.finished = True
        run.perf = _perf(result[0].perf)
    elif state == abi.RKLLM_RUN_ERROR:
        run.error = True


def _perf(perf: Any) -> Perf:
    return (perf.prefill_tokens, perf.prefill_time_ms, perf.generate_tokens, perf.generate_time_ms)


@dataclass(frozen=True)
class RunFacts:
    path: str = ""
    """"tokens", "text" or "images" (how the prompt went)."""
    sent: int = 0
    """Tokens sent (token path) or bytes of text (text path) in the last rkllm_run."""
    reused: int = 0
    """Tokens the KV cache already held."""
    continuations: int = 0
    """Runs added after the runtime ended the answer at </think>."""
    prefilled: int | None = None
    """Tokens the runtime says it prefilled in the first run (its perf figures), if it says."""
    keep_history: bool = True
