"""Reading a chat's next turn ahead while the CPU engine is idle.

When a chat answer ends, the client's next turn will send that answer back, then the template's
turn-closing tokens and the user's header (`<|im_end|>\\n<|im_start|>user\\n`), then the new
message. Neither llama.cpp's server nor Ollama reads any of it before the next turn arrives.
Once the loop has been idle for IDLE_KEEP_S (the user is reading), the slot loop reads that
start — the answer as the template writes it back, which for a thinking model is the answer
without its thinking, and the closing tokens — as a background request. The next turn then
reads only its own message. A request that arrives meanwhile cuts the read-ahead's step short
(llama.cpp asks after each graph node) and starts. A guess that turns out wrong costs only the
idle time: the next request keeps what it shares, as from any slot, and what the read-ahead
threw away of a slot is in the prompt cache, as when any request takes a slot.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from rkollama.backends.llamacpp_slot_start import Request
from rkollama.core.fitting import common_prefix
from rkollama.core.types import DoneReason, Generation

log = logging.getLogger("rkollama.llamacpp")

READ_AHEAD_MAX = 8
"""Answers whose next turn waits to be read ahead, the newest kept: a chat answer and the side
requests Open WebUI sends after it (title, tags, follow-ups), with room to spare."""


@dataclass(frozen=True)
class Answered:
    """A chat answer that ended, as its slot held it (not its request: nothing else of that is kept)."""

    guess: Callable[[list[int]], list[int]]
    """Its request's `next_turn`."""
    prompt: int
    """Tokens of its prompt."""
    held: list[int]
    """Its prompt and answer, as far as the slot read them."""
    answer: list[int]
    """The answer's tokens (the last one may be unread)."""


def answered(request: Request, reason: DoneReason, window: list[int], fed: int) -> Answered | None:
    """What to read ahead for `request` once it ended with `reason`, its slot holding
    `window[:fed]`: nothing unless a chat answer ended by itself or at its limit with its prompt
    intact (not shifted), and the engine can guess its next turn."""
    if request.background or request.next_turn is None or reason not in (DoneReason.STOP, DoneReason.LENGTH):
        return None
    prompt = request.tokens
    if window[:len(prompt)] != prompt:
        return None
    return Answered(request.next_turn, len(prompt), window[:fed], window[len(prompt):])


def background_request(done: Answered, cached: list[list[int]], n_ctx: int) -> Request | None:
    """The read-ahead of `done`'s next turn: a request that reads its guessed start; None when
    there is no guess, it would not fit a slot (`n_ctx`), a slot already holds all of it
    (`cached`), or it keeps less than half of the answer's prompt (not this conversation's next
    turn: a template that writes the history otherwise than it was prompted)."""
    try:
        tokens = done.guess(done.answer)
    except Exception as exc:  # a template that cannot render the guess: nothing to read ahead
        log.debug("no next turn to read ahead: %s", exc)
        return None
    if not tokens or len(tokens) >= n_ctx or 2 * common_prefix(tokens, done.held) < done.prompt:
        return None
    if any(common_prefix(held, tokens) == len(tokens) for held in cached):
        return None
    return Request(Generation(prompt=""), threading.Event(), tokens, 0, False, 0, background=True)
