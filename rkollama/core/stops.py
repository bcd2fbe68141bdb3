"""Stop sequences applied to any engine's token stream, matched across token boundaries."""

import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace

from rkollama.core.parse import partial_suffix
from rkollama.core.types import Done, DoneReason, Token


def apply_stops(events: Iterable[Token | Done], stops: list[str],
                cancel: threading.Event) -> Iterator[Token | Done]:
    """Yield `events` with text cut at the first stop sequence, which is never emitted.

    Only text that could be the start of a stop sequence is held back, and only until it cannot
    be. On a match the engine is cancelled (`cancel.set()`) and its final `Done` is re-labelled
    STOP, keeping its token counts, with the sequence that matched in `stop_sequence`.
    """
    stops = [s for s in stops if s]
    if not stops:
        yield from events
        return
    pending = ""
    stopped = ""  # the stop sequence that matched
    for event in events:
        if isinstance(event, Done):
            if pending and not stopped:
                yield Token(pending)
            if stopped:
                event = replace(event, reason=DoneReason.STOP, stop_sequence=stopped)
            yield event
            return
        if stopped or event.thinking:
            if not stopped:
                yield event
            continue
        pending += event.text
        match = _first_match(pending, stops)
        if match is not None:
            cut, stopped = match
            if cut:
                yield Token(pending[:cut])
            pending = ""
            cancel.set()
            continue
        keep = max(partial_suffix(pending, stop) for stop in stops)  # could still become a stop
        if len(pending) > keep:
            yield Token(pending[: len(pending) - keep])
            pending = pending[len(pending) - keep:]


def _first_match(text: str, stops: list[str]) -> tuple[int, str] | None:
    """(where, which) of the earliest stop sequence in `text` (the longest at one place)."""
    hits = [(i, -len(s), s) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    if not hits:
        return None
    where, _, which = min(hits)
    return where, which
