"""Stop sequences matched across token boundaries, held back only while they might match."""

import threading

from rkollama.core.stops import apply_stops
from rkollama.core.types import Done, DoneReason, Token


def run(tokens, stops):
    cancel = threading.Event()
    events = [Token(t) for t in tokens] + [Done(DoneReason.STOP, 1, 1.0, len(tokens), 1.0)]
    out = list(apply_stops(iter(events), stops, cancel))
    return "".join(e.text for e in out if isinstance(e, Token)), out[-1], cancel.is_set(), out


def test_stop_split_across_three_tokens_is_removed():
    text, done, cancelled, _ = run(["Hi", " <", "|e", "nd", "|> more"], ["<|end|>"])
    assert text == "Hi " and done.reason is DoneReason.STOP and cancelled


def test_text_that_only_looks_like_a_stop_is_released():
    text, _, cancelled, out = run(["a <", "b", " <|e", "x"], ["<|end|>"])
    assert text == "a <b <|ex" and not cancelled


def test_tokens_without_a_stop_prefix_pass_straight_through():
    _, _, _, out = run(["Hello", " world"], ["<|end|>"])
    assert [e.text for e in out if isinstance(e, Token)] == ["Hello", " world"]


def test_earliest_of_several_stops_wins_and_counts_are_kept():
    text, done, _, _ = run(["one STOP two END"], ["END", "STOP"])
    assert text == "one " and done.eval_tokens == 1


def test_stop_at_the_very_start_emits_nothing():
    text, _, _, _ = run(["###", "rest"], ["###"])
    assert text == ""
