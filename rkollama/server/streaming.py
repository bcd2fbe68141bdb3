"""Response helpers: JSON bodies with Ollama's content type, and NDJSON streams that end with an
error line on failure and cancel the generation when the client goes away."""

import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol, TypeVar

from flask import Response

from rkollama.core.types import Done, Event, NamedEvent, TokenLogprob, ToolCall
from rkollama.errors import RkollamaError

log = logging.getLogger("rkollama.server")

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""json.dumps with these arguments builds a new encoder per call, at every streamed token; an
encoder keeps no state between calls."""


def dumps(obj: object) -> str:
    return _ENCODE(obj)


class EventStream(Protocol):
    """What a generating route reads: the scheduler's Stream, or a Replay of a checked answer."""

    load_duration: float
    """Seconds spent loading the model for this request."""
    constrains_format: bool

    def __iter__(self) -> Iterator[Event]: ...

    def __next__(self) -> Event: ...

    def close(self) -> None: ...


def json_response(obj: object, status: int = 200) -> Response:
    return Response(dumps(obj), status=status, content_type=JSON_TYPE)


def error_response(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


class Closable(Protocol[T_co]):
    """An iterator that can be told to stop early: a generator, or an EventStream."""

    def __next__(self) -> T_co: ...

    def __iter__(self) -> Iterator[T_co]: ...

    def close(self) -> None: ...


def primed(stream: Closable[T]) -> Iterator[T]:
    """`stream` with its first item already read: an error before any output is raised here,
    before the 200 goes out, so it keeps its status code. The stream is closed if that fails."""
    try:
        first = next(stream)
    except BaseException:
        stream.close()
        raise
    return itertools.chain([first], stream)


def ndjson(lines: Iterable[object], on_close: Callable[[], None] | None = None) -> Response:
    """Stream dicts as NDJSON. An RkollamaError mid-stream becomes a final `{"error": …}` line.

    `on_close` runs when the stream ends for any reason, including the client disconnecting
    (Waitress closes the app iterator when a write fails): that is how generation stops.
    """
    def body() -> Iterator[str]:
        try:
            for line in lines:
                yield dumps(line) + "\n"
        except RkollamaError as exc:
            yield dumps({"error": exc.message}) + "\n"
        except Exception:  # never a traceback on the wire: the log has it
            log.exception("unexpected error in a stream")
            yield dumps({"error": "internal error"}) + "\n"
        finally:
            if on_close is not None:
                on_close()

    return Response(body(), status=200, content_type=NDJSON_TYPE)


def event_stream(stream: EventStream, frames: Callable[[Iterator[Event]], Iterator[str]],
                 error_frame: Callable[[str, int], str]) -> Response:
    """Server-sent events from a generation `stream`: `frames(events)` yields the wire text of
    each frame; an error after the first event becomes one last frame, `error_frame(message,
    status)`. The first event is read before the 200 goes out, so errors before any output keep
    their status code; the stream is closed however the body ends (the client gone included)."""
    events = primed(stream)

    def body() -> Iterator[str]:
        try:
            yield from frames(events)
        except RkollamaError as exc:
            yield error_frame(exc.message, exc.status)
        except Exception:  # never a traceback on the wire: the log has it
            log.exception("unexpected error in a stream")
            yield error_frame("internal error", 500)
        finally:
            stream.close()

    return Response(body(), status=200, content_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"})


class EventWriter(Protocol):
    """Turns core events into named SSE events, (name, data) pairs (Anthropic's Messages
    StreamWriter, OpenAI's Responses writer)."""

    def start(self) -> list[NamedEvent]: ...
    def token(self, text: str, thinking: bool, scored: Sequence[TokenLogprob] = ()) -> list[NamedEvent]: ...
    def call(self, call: ToolCall) -> list[NamedEvent]: ...
    def done(self, done: Done) -> list[NamedEvent]: ...


def named_events(stream: EventStream, writer: EventWriter,
                 error_body: Callable[[str, int], Mapping[str, object]]) -> Response:
    """Server-sent events with event names (Anthropic's Messages, OpenAI's Responses): `writer`
    turns core events into (name, data) pairs through start(), token(), call() and done();
    a late error becomes a final `error` event in `error_body`'s shape."""
    from rkollama.core.types import DoneReason, Token

    def frames(events: Iterator[Event]) -> Iterator[str]:
        pairs = writer.start()
        for event in events:
            if isinstance(event, Token):
                pairs += writer.token(event.text, event.thinking, event.logprobs)
            elif isinstance(event, ToolCall):
                pairs += writer.call(event)
            elif isinstance(event, Done) and event.reason is not DoneReason.CANCELLED:
                pairs += writer.done(event)
            for name, data in pairs:
                yield f"event: {name}\ndata: {dumps(data)}\n\n"
            pairs = []

    def error_frame(message: str, status: int) -> str:
        return f"event: error\ndata: {dumps(error_body(message, status))}\n\n"

    return event_stream(stream, frames, error_frame)
