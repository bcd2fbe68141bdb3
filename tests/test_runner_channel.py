"""The daemon-runner channel: every message crosses intact (plain tokens in their own short
frame, everything else pickled, large ones in pieces), damaged or oversized frames are errors,
one read takes every message already written, and the runner's receiving thread sleeps while
tokens flow the other way (a duplex socket woke it once per token, on the cores the engine needs)."""

import multiprocessing
import os
import struct
import threading

import pytest

from rkollama.backends.runner_channel import channel_pair
from rkollama.backends.runner_pipe import Cancel, Emitted, Failed, Generate, Result
from rkollama.core.types import Done, DoneReason, Generation, Message, Token, TokenLogprob
from rkollama.errors import BackendFailed


@pytest.fixture
def ends():
    daemon, runner = channel_pair(multiprocessing.get_context("spawn"))
    yield daemon, runner
    daemon.close()
    runner.close()


@pytest.mark.parametrize("message", [
    Emitted(1, Token(" hello")), Emitted(2**40, Token("")), Emitted(3, Token("naïve 🦙\n", thinking=True)),
    Emitted(4, Token("\ud800 lone surrogate")),
    Emitted(5, Token("x", logprobs=(TokenLogprob("x", -0.5, (120,)),))),
    Emitted(6, Done(DoneReason.STOP, 12, 3.5, 4, 9.0, (1, 2, 3))),
])
def test_runner_messages_cross_intact(ends, message):
    daemon, runner = ends
    runner.send(message)
    assert daemon.recv() == message


def test_a_failure_crosses_with_its_error(ends):
    daemon, runner = ends
    runner.send(Failed(7, BackendFailed("the engine crashed")))
    got = daemon.recv()
    assert isinstance(got, Failed) and got.request_id == 7
    assert isinstance(got.error, BackendFailed) and str(got.error) == "the engine crashed"


def test_daemon_messages_cross_intact(ends):
    daemon, runner = ends
    for message in (Generate(1, Generation(messages=[Message("user", "hi")])), Cancel(1)):
        daemon.send(message)
        assert runner.recv() == message


def test_a_damaged_frame_is_an_error_not_a_message(ends):
    daemon, runner = ends
    os.write(runner.outgoing.fileno(), struct.pack("<Q", 8) + b"?garbage")
    with pytest.raises(ValueError, match="unknown frame"):
        daemon.recv()


def test_a_frame_claiming_more_than_any_message_takes_is_refused_before_reading_it(ends):
    daemon, runner = ends
    os.write(runner.outgoing.fileno(), struct.pack("<Q", 1 << 40) + b"x")
    with pytest.raises(ValueError, match="a frame of"):
        daemon.recv()


def test_a_large_answer_crosses_in_pieces_and_the_next_message_follows_it(ends):
    """Embeddings of many texts: megabytes, more than a pipe holds, read while being written."""
    daemon, runner = ends
    vectors = [[float(i)] * 1024 for i in range(600)]  # ~5 MB pickled
    writer = threading.Thread(target=lambda: (runner.send(Result(3, (vectors, 7))),
                                              runner.send(Emitted(4, Token("after")))))
    writer.start()
    assert daemon.recv() == Result(3, (vectors, 7))
    assert daemon.recv() == Emitted(4, Token("after"))
    writer.join(5)


def test_messages_written_together_are_read_in_one_go(ends):
    daemon, runner = ends
    for index in range(4):  # one step of four sequences
        runner.send(Emitted(index, Token(f"t{index}")))
    assert daemon.poll(1)
    assert daemon.recv() == Emitted(0, Token("t0"))
    assert daemon.buffered()  # the rest came with the first read: no system call for them
    assert [daemon.recv() for _ in range(3)] == [Emitted(i, Token(f"t{i}")) for i in (1, 2, 3)]
    assert not daemon.buffered()


def _wakeups(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches"))


@pytest.mark.skipif(not hasattr(threading, "get_native_id"), reason="needs native thread ids")
def test_the_runners_receiving_thread_sleeps_while_tokens_flow_out(ends):
    daemon, runner = ends
    ready, tid = threading.Event(), []

    def receive() -> None:  # the runner's main thread: waits for the daemon's next request
        tid.append(threading.get_native_id())
        ready.set()
        runner.recv()

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    ready.wait(5)
    threading.Event().wait(0.1)  # let it block in recv
    before = _wakeups(tid[0])
    for index in range(200):  # the engine's tokens out, each read at once by the daemon
        runner.send(Emitted(1, Token(f"t{index}")))
        assert daemon.recv() == Emitted(1, Token(f"t{index}"))
    woken = _wakeups(tid[0]) - before
    daemon.send(Cancel(1))
    receiver.join(5)
    assert woken < 20, f"the receiving thread woke {woken} times for 200 tokens sent the other way"


def test_poll_says_when_a_message_or_the_end_waits(ends):
    daemon, runner = ends
    assert not daemon.poll(0) and not daemon.poll(0.01)
    runner.send(Emitted(1, Token("x")))
    assert daemon.poll(10**10)  # a timeout of centuries (OLLAMA_LOAD_TIMEOUT=…h) is still a timeout
    assert daemon.recv() == Emitted(1, Token("x"))
    runner.close()
    assert daemon.poll(None)  # the runner's end closed: readable, and reading says so
    with pytest.raises(EOFError):
        daemon.recv()
