"""Stop sequences applied to any engine's token stream, matched across token boundaries."""

import threading
from collections.abc import Iterable, Iterator

from rkollama.core.parse import partial_suffix
from rkollama.core.types import Done, DoneReason, Token


def apply_stops(events: Iterable[Token | Done], stops: list[str],
                cancel: threading.Event) -> Iterator[Token | Done]:
    """Yield `events` with text cut at the first stop sequence, which is never emitted.

    Only text that could be the start of a stop sequence is held back, and only until it cannot
    be. On a match the engine is cancelled (`cancel.set()`) and its final `Done` is re-labelled
    STOP, keeping its token counts.
    """
    stops = [s for s in stops if s]
    if not stops:
        yield from events
        return
    pending = ""
    stopped = False
    for event in events:
        if isinstance(event, Done):
            if pending and not stopped:
                yield Token(pending)
            if stopped:
                event = event.relabelled(DoneReason.STOP)
            yield event
            return
        if stopped or event.thinking:
            if not stopped:
                yield event
            continue
        pending += event.text
        cut = _first_match(pending, stops)
        if cut is not None:
            if cut:
                yield Token(pending[:cut])
            pending, stopped = "", True
            cancel.set()
            continue
        keep = max(partial_suffix(pending, stop) for stop in stops)  # could still become a stop
        if len(pending) > keep:
            yield Token(pending[: len(pending) - keep])
            pending = pending[len(pending) - keep:]


def _first_match(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
