"""The daemon's end of a runner's channel: each request's answers arrive in an inbox of its own,
read off the pipe by whichever waiting thread is free to read, with no reader thread.

Why: with a reader thread a token woke two threads of the daemon (the reader, then the request's
own), each wake-up taking a core from the engine's two threads for a while; on a 2-core board
the runner process then decoded several per cent slower than the same engine in the daemon's own
process. Now a lone stream's token wakes only the thread that sends it to the client.

One thread at a time reads (it holds "the turn"); the others wait on their inboxes. The reader
takes what one read of the pipe holds (at least one message, at most DRAIN), puts each in the inbox it
belongs to, and gives up the turn, handing it to a waiting thread whose inbox is empty (one with
something to send keeps sending). A thread that
waits with nobody reading takes the turn itself. The pipe's end (the runner died) wakes every
waiting thread with None.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import cast

from rkollama.backends.runner_channel import Channel
from rkollama.backends.runner_pipe import FromRunner, ToRunner

log = logging.getLogger("rkollama.runner")

_TURN = object()
"""In an inbox: the pipe has no reader now; this thread is to read it."""
_NOTHING = object()
DRAIN = 64
"""Most messages one turn reads before the others get theirs (bounds a reader's detour)."""

Inbox = queue.SimpleQueue  # of FromRunner | None | _TURN


class Mailroom:
    """Requests to one runner and their answers. Its methods may be called from any thread."""

    def __init__(self, channel: Channel, label: str):
        self.channel, self.label = channel, label
        self._lock = threading.Lock()  # everything below, and sending
        self._ids = 0
        self._inboxes: dict[int, Inbox[object]] = {}
        self._waiting: list[Inbox[object]] = []
        """Inboxes whose threads are blocked on them."""
        self._reading = False
        self.gone = False
        """The pipe ended (or carried something unreadable): the runner is beyond reach."""

    def open(self, ask: Callable[[int], ToRunner]) -> int:
        """Send the request `ask(request_id)` makes; returns the id to `receive` its answers by."""
        inbox: Inbox[object] = queue.SimpleQueue()
        with self._lock:
            self._ids += 1
            request_id = self._ids
            self._inboxes[request_id] = inbox
            if self.gone:
                inbox.put(None)
                return request_id
            try:
                self.channel.send(ask(request_id))
            except (OSError, EOFError, ValueError):
                inbox.put(None)
        return request_id

    def send(self, message: ToRunner) -> None:
        with self._lock:
            try:
                self.channel.send(message)
            except (OSError, EOFError, ValueError):
                pass

    def close(self, request_id: int) -> None:
        """The request's answers are no longer wanted (later ones are dropped)."""
        with self._lock:
            inbox = self._inboxes.pop(request_id, None)
            if inbox is None:
                return
            if inbox in self._waiting:
                self._waiting.remove(inbox)
            turned = False
            while not inbox.empty():
                turned |= inbox.get_nowait() is _TURN
            if turned:  # handed the turn as it left: hand it on
                self._hand_on()

    def receive(self, request_id: int, timeout: float | None) -> FromRunner | None:
        """The next answer to `request_id`, or None when the runner is gone; queue.Empty after
        `timeout` seconds without one (None: wait as long as it takes)."""
        with self._lock:
            inbox = self._inboxes[request_id]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                item = self._take(inbox)
                if item is not _NOTHING:
                    return cast("FromRunner | None", item)
                lead = not self._reading
                if lead:
                    self._reading = True
                else:
                    self._waiting.append(inbox)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if lead:
                self._read(left)
                if left == 0.0 and inbox.empty():
                    raise queue.Empty
                continue
            try:
                item = inbox.get(timeout=left)
            except queue.Empty:
                self._unwait(inbox)
                raise
            self._unwait(inbox)
            if item is not _TURN:
                with self._lock:
                    if not self._reading:
                        self._hand_on()
                return cast("FromRunner | None", item)

    def _take(self, inbox: "Inbox[object]") -> object:
        """(Lock held.) The inbox's next answer, None when the runner is gone, or _NOTHING; a
        turn found on the way is handed on to another waiting thread when this one returns."""
        item = _NOTHING
        while item is _NOTHING and not inbox.empty():
            item = inbox.get_nowait()
            if item is _TURN:
                item = _NOTHING
        if item is _NOTHING and self.gone:
            item = None
        if item is not _NOTHING and not self._reading:
            self._hand_on()
        return item

    def _read(self, timeout: float | None) -> None:
        """With the turn: wait up to `timeout` seconds for a message, then take every message
        already there (a step of the CPU engine's loop writes one per running sequence: one
        wake-up reads them all), put each in its inbox, and give up the turn."""
        messages: list[object] = []
        ended = False
        try:
            ready = self.channel.poll(timeout)
            while ready and len(messages) < DRAIN:
                messages.append(self.channel.recv())
                ready = self.channel.buffered()
        except (EOFError, OSError):
            ended = True
        except Exception:  # an unreadable message: the runner is beyond trust
            log.exception("runner for %s sent an unreadable message", self.label)
            ended = True
        with self._lock:
            self._reading = False
            for message in messages:
                owner = self._inboxes.get(getattr(message, "request_id", -1))
                if owner is not None:
                    owner.put(message)
            if ended:
                self.gone = True
                for inbox in self._inboxes.values():
                    inbox.put(None)
                return
            self._hand_on()

    def _hand_on(self) -> None:
        """(Lock held, nobody reading.) Wake a waiting thread with nothing to do to read."""
        for inbox in self._waiting:
            if inbox.empty():
                self._waiting.remove(inbox)
                inbox.put(_TURN)
                return

    def _unwait(self, inbox: "Inbox[object]") -> None:
        with self._lock:
            if inbox in self._waiting:
                self._waiting.remove(inbox)
