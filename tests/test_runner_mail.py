"""The daemon's end of a runner's pipe, read by the waiting threads themselves: every request
gets its own answers, in order, however many wait at once and however slowly some read; the
pipe's end wakes every waiting thread; a request closed while it held the turn hands it on."""

import multiprocessing
import queue
import random
import threading
import time

import pytest

from rkollama.backends import runner_mail
from rkollama.backends.runner_channel import channel_pair
from rkollama.backends.runner_mail import Mailroom
from rkollama.backends.runner_pipe import Cancel, Emitted
from rkollama.core.types import Done, DoneReason, Token


@pytest.fixture
def link():
    daemon, runner = channel_pair(multiprocessing.get_context("spawn"))
    yield Mailroom(daemon, "test"), runner
    daemon.close()
    runner.close()


def _open(mail: Mailroom, runner, count: int) -> list[int]:
    ids = [mail.open(Cancel) for _ in range(count)]
    for _ in ids:
        runner.recv()  # the requests reached the runner
    return ids


def test_each_of_many_waiting_threads_gets_its_own_answers_in_order(link):
    mail, runner = link
    ids = _open(mail, runner, 6)
    got: dict[int, list[str]] = {rid: [] for rid in ids}
    errors: list[BaseException] = []

    def read(rid: int, slow: bool) -> None:
        try:
            while True:
                try:
                    message = mail.receive(rid, 0.05)
                except queue.Empty:
                    continue
                assert isinstance(message, Emitted) and message.request_id == rid
                if isinstance(message.event, Done):
                    return
                got[rid].append(message.event.text)
                if slow:  # a client that reads slowly holds nobody else up
                    time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(rid, i % 3 == 0)) for i, rid in enumerate(ids)]
    for reader in readers:
        reader.start()
    order = [rid for rid in ids for _ in range(150)]
    random.Random(3).shuffle(order)
    sent: dict[int, int] = dict.fromkeys(ids, 0)
    for rid in order:
        runner.send(Emitted(rid, Token(f"{rid}:{sent[rid]}")))
        sent[rid] += 1
    for rid in ids:
        runner.send(Emitted(rid, Done(DoneReason.STOP)))
    for reader in readers:
        reader.join(30)
    assert not errors and not any(reader.is_alive() for reader in readers)
    for rid in ids:
        assert got[rid] == [f"{rid}:{n}" for n in range(150)]


def test_a_waiting_thread_reads_when_the_reader_leaves_with_its_own_answer(link):
    mail, runner = link
    first, second = _open(mail, runner, 2)
    answer: list[object] = []
    waiter = threading.Thread(target=lambda: answer.append(mail.receive(second, 10)))
    runner.send(Emitted(first, Token("a")))
    assert mail.receive(first, 5) == Emitted(first, Token("a"))  # took the turn, read its own
    waiter.start()
    time.sleep(0.1)  # the second waits with nobody reading
    runner.send(Emitted(second, Token("b")))
    waiter.join(5)
    assert answer == [Emitted(second, Token("b"))]


def test_a_request_closed_with_the_turn_in_its_inbox_hands_it_on(link):
    mail, runner = link
    leaving, staying = _open(mail, runner, 2)
    answer: list[object] = []
    with mail._lock:  # noqa: SLF001  # someone reads: `staying` waits on its inbox
        mail._reading = True  # noqa: SLF001
    waiter = threading.Thread(target=lambda: answer.append(mail.receive(staying, 10)))
    waiter.start()
    time.sleep(0.1)
    runner.send(Emitted(staying, Token("here")))
    with mail._lock:  # noqa: SLF001  # the reader leaves, handing the turn to `leaving`...
        mail._reading = False  # noqa: SLF001
        mail._inboxes[leaving].put(runner_mail._TURN)  # noqa: SLF001
    mail.close(leaving)  # ...which closes without reading: `staying` must be handed it
    waiter.join(5)
    assert answer == [Emitted(staying, Token("here"))]


def test_the_pipes_end_wakes_every_waiting_thread_with_none(link):
    mail, runner = link
    ids = _open(mail, runner, 3)
    answers: list[object] = []
    waiters = [threading.Thread(target=lambda rid=rid: answers.append(mail.receive(rid, None))) for rid in ids]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.1)
    runner.close()
    for waiter in waiters:
        waiter.join(5)
    assert answers == [None, None, None] and mail.gone
    late = mail.open(Cancel)
    assert mail.receive(late, 1) is None


def test_answers_to_a_closed_request_are_dropped(link):
    mail, runner = link
    gone, live = _open(mail, runner, 2)
    mail.close(gone)
    runner.send(Emitted(gone, Token("late")))
    runner.send(Emitted(live, Token("mine")))
    assert mail.receive(live, 5) == Emitted(live, Token("mine"))
