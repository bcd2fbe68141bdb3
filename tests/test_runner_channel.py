"""The daemon-runner channel: every message crosses intact (plain tokens in their own short
frame, everything else pickled), and the runner's receiving thread sleeps while tokens flow the
other way (a duplex socket woke it once per token, on the cores the engine needs)."""

import multiprocessing
import threading

import pytest

from rkollama.backends.runner_pipe import Cancel, Emitted, Failed, Generate, channel_pair
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
    runner.outgoing.send_bytes(b"?garbage")
    with pytest.raises(ValueError):
        daemon.recv()


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
