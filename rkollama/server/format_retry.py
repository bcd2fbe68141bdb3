"""Structured output on an engine that cannot enforce a `format` while sampling: the answer is
validated afterwards and asked for again with what was wrong, then served as if it streamed."""

from collections.abc import Callable
from dataclasses import replace

from rkollama.core import structured
from rkollama.core.collect import collect
from rkollama.core.types import Done, DoneReason, Event, Generation, Token
from rkollama.errors import FormatNotMet
from rkollama.server.streaming import EventStream


def validated(gen: Generation, start: Callable[[Generation], EventStream]) -> "Replay":
    messages = structured.with_instruction(gen.messages or [], gen.format)
    load_s, prompt_tokens, eval_tokens, prompt_ms, eval_ms = 0.0, 0, 0, 0.0, 0.0
    reason: str | None = ""
    for _ in range(structured.MAX_ATTEMPTS):
        stream = start(replace(gen, messages=messages))
        load_s += stream.load_duration
        completion = collect(stream)
        done = completion.done
        prompt_tokens, prompt_ms = done.prompt_tokens, prompt_ms + done.prompt_ms
        eval_tokens, eval_ms = eval_tokens + done.eval_tokens, eval_ms + done.eval_ms
        # An answer cut off by num_predict cannot match a format; it is returned as it is (with
        # done_reason "length"), as an engine with a grammar would return it.
        truncated = done.reason is not DoneReason.STOP
        reason = None if truncated else structured.problem(completion.content, gen.format)
        if reason is None:
            events = ([Token(completion.thinking, thinking=True)] if completion.thinking else []) + \
                [Token(completion.content)] + list(completion.tool_calls) + \
                [Done(done.reason, prompt_tokens, prompt_ms, eval_tokens, eval_ms)]
            return Replay(events, load_s)
        messages = structured.retry_messages(messages, completion.content, reason, gen.format)
    raise FormatNotMet(f"the model did not produce the requested format after "
                        f"{structured.MAX_ATTEMPTS} attempts: {reason}")


class Replay:
    """A finished answer served like a live stream (same iterator, close and load_duration)."""

    constrains_format = True

    def __init__(self, events: list[Event], load_s: float):
        self._events = iter(events)
        self.load_duration = load_s

    def __iter__(self) -> "Replay":
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        pass
