"""Accumulating an event stream into one reply (non-streaming responses of every dialect)."""

from dataclasses import dataclass

from rkollama.core.types import Done, Token


@dataclass
class Completion:
    content: str
    thinking: str
    done: Done


def collect(events) -> Completion:
    content, thinking = [], []
    done = None
    for event in events:
        if isinstance(event, Token):
            (thinking if event.thinking else content).append(event.text)
        elif isinstance(event, Done):
            done = event
    return Completion("".join(content), "".join(thinking), done)
