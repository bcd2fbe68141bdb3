"""Reading a chat's next turn ahead, on SmolLM2 in this process with one slot (Ollama's default;
the runner calls the engine the same way): after a chat answer, while the user reads, the
engine reads the answer's end and the template's turn-closing tokens; the next turn, which
sends the answer back as chat clients do, then reads only its own message — and answers as
it does when its whole prompt is read."""

import threading
import time

import pytest

from rkollama.core.types import Generation, Message, SamplingOptions, Token
from tests.helpers import smollm2_engine

pytestmark = pytest.mark.live
FACTS = " ".join(f"Fact {i}: the lighthouse at cape {i} was built in {1800 + i}." for i in range(30))
QUESTION = "And which cape is last?"


@pytest.fixture(scope="module")
def one_slot(smollm2_store):
    backend = smollm2_engine(smollm2_store, 2048)
    yield backend
    backend.close()


def answer(backend, messages: list[Message]) -> str:
    gen = Generation(messages=messages, options=SamplingOptions(temperature=0, num_predict=12))
    return "".join(event.text for event in backend.generate(gen, threading.Event())
                   if isinstance(event, Token))


def read_ahead_done(loop, timeout: float = 30.0) -> None:
    """Wait until the loop has read ahead every answer (IDLE_KEEP_S after the last one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with loop.cond:
            if not loop.answered and not loop.active and not loop.waiting:
                return
        time.sleep(0.05)
    raise AssertionError("nothing was read ahead")


def test_the_next_turn_reads_only_its_own_message_after_the_user_has_read_the_answer(one_slot):
    loop = one_slot.loop
    history = [Message("user", f"Read-ahead test. {FACTS}"), Message("assistant", "Noted."),
               Message("user", "Which cape is first?")]
    first = answer(one_slot, history)
    assert first
    read_ahead_done(loop)
    original, rows = loop.decode, []

    def watch(ctx, batch):
        rows.append(batch.n_tokens)
        return original(ctx, batch)

    following = [*history, Message("assistant", first), Message("user", QUESTION)]
    loop.decode = watch
    try:
        reply = answer(one_slot, following)
    finally:
        loop.decode = original
    # ChatML, SmolLM2's template: what follows the user's header is the turn's own.
    own = one_slot._tokens(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n", bos=False)
    assert rows[0] == len(own), (rows[:3], len(own))
    with loop.cond:  # the same turn read whole, from an empty slot
        loop._forget(0)
        loop.prompt_cache.entries.clear()
    assert reply == answer(one_slot, following)


def test_a_conversation_too_long_for_the_window_is_not_held_for_a_read_ahead(one_slot):
    """A 30 MB message is fitted for its own request (its middle cut out) but never kept for a
    guess of its next turn: the runner holds no request bodies beyond their requests."""
    huge = one_slot._request(Generation(messages=[Message("user", "x " * 15_000_000)]), threading.Event())
    assert huge.next_turn is None and len(huge.tokens) <= 2048
    small = one_slot._request(Generation(messages=[Message("user", "Hello")]), threading.Event())
    assert small.next_turn is not None
