"""Accumulating an event stream into one reply (non-streaming responses of every dialect)."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rkollama.core.types import Done, Event, Token, TokenLogprob, ToolCall
from rkollama.errors import BackendFailed


@dataclass
class Completion:
    content: str
    thinking: str
    done: Done
    tool_calls: list[Any] = field(default_factory=list[Any])
    logprobs: list[Any] = field(default_factory=list[Any])
    """TokenLogprob of every generated token, in order (when the request asked)."""
    answer_logprobs: list[Any] = field(default_factory=list[Any])
    """The same for the answer's tokens only (without the reasoning's)."""


def collect(events: Iterable[Event]) -> Completion:
    """Read the whole stream; a stream with `close()` is closed however this ends."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    logprobs: list[TokenLogprob] = []
    answer_logprobs: list[TokenLogprob] = []
    done: Done | None = None
    try:
        for event in events:
            if isinstance(event, Token):
                (thinking if event.thinking else content).append(event.text)
                logprobs.extend(event.logprobs)
                if not event.thinking:
                    answer_logprobs.extend(event.logprobs)
            elif isinstance(event, ToolCall):
                calls.append(event)
            elif isinstance(event, Done):
                done = event
    finally:
        if hasattr(events, "close"):
            events.close()
    if done is None:  # the engine's contract is a final Done; say so rather than fail later
        raise BackendFailed("the engine ended its answer without its final counters")
    return Completion("".join(content), "".join(thinking), done, calls, logprobs, answer_logprobs)
