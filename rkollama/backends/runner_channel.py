"""The wire between the daemon and a runner process: two one-way pipes, one per direction, each
carrying frames of an 8-byte length and a message.

Not one duplex socket: Linux wakes every thread blocked on a unix socket whenever its send buffer
drains, so the runner's receiving thread, blocked on the socket its engine's tokens were written
to, woke once per token (measured: 130 wake-ups and 6.7 ms of CPU per 128 tokens, on cores the
engine's threads need).

A plain token, the message sent most, is a tag, its request id and its UTF-8 text (15 bytes for
" hello", 1 µs each way, against 167 bytes and 5.5 µs pickled); every other message is pickled.
The reader takes whatever the pipe holds in one read and keeps what follows the frames it needs
(`buffered`), so a message costs one read and no poll after it (multiprocessing's Connection read
the length, then the message, and polled again: five system calls per token).
"""

import math
import os
import pickle
import select
import struct
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from rkollama.backends.runner_pipe import Emitted
from rkollama.core.types import Token

_LENGTH = struct.Struct("<Q")
MAX_FRAME = 1 << 31
"""Bytes one message may take (embeddings of many long texts are the largest: tens of MB); a
runner that claims more is beyond trust."""
READ_SIZE = 1 << 16


class Channel:
    """One end of the link. `Connection`s only carry the pipes' descriptors into the spawned
    runner; this class reads and writes them itself. One thread at a time may receive, and one
    at a time send."""

    def __init__(self, incoming: Connection, outgoing: Connection):
        self.incoming, self.outgoing = incoming, outgoing
        self._buffer = bytearray()
        self._poller: select.poll | None = None
        """Made on first use, in the process that reads (a poll object does not pickle)."""

    def __getstate__(self) -> dict[str, object]:
        return {"incoming": self.incoming, "outgoing": self.outgoing}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.incoming, self.outgoing = state["incoming"], state["outgoing"]
        self._buffer = bytearray()
        self._poller = None

    def send(self, message: object) -> None:
        frame = _encode(message)
        view = memoryview(_LENGTH.pack(len(frame)) + frame)
        fd = self.outgoing.fileno()
        while view:  # a pipe takes a large frame in pieces
            view = view[os.write(fd, view):]

    def recv(self) -> Any:
        """The next message (what the caller expects is its to check); EOFError at the pipe's
        end."""
        while not (end := self._frame_end()):
            wanted = READ_SIZE
            if len(self._buffer) >= _LENGTH.size:  # the rest of a large frame, in pieces of at most 16 MB
                missing = _LENGTH.size + _LENGTH.unpack_from(self._buffer)[0] - len(self._buffer)
                wanted = min(max(wanted, missing), 1 << 24)
            chunk = os.read(self.incoming.fileno(), wanted)
            if not chunk:
                raise EOFError("the other end closed the pipe")
            self._buffer += chunk
        frame = bytes(self._buffer[_LENGTH.size:end])
        del self._buffer[:end]
        return _decode(frame)

    def buffered(self) -> bool:
        """Whether a whole message has been read already (recv() returns it without waiting)."""
        return self._frame_end() > 0

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether something waits (a message, or the pipe's end), after up to `timeout` seconds
        (None: until it does)."""
        if self.buffered():
            return True
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.incoming.fileno(), select.POLLIN)
        wait_ms = -1 if timeout is None else min(max(0, math.ceil(timeout * 1000)), 2**31 - 1)
        return bool(self._poller.poll(wait_ms))

    def close(self) -> None:
        self.incoming.close()
        self.outgoing.close()

    def _frame_end(self) -> int:
        """Where the buffer's first whole frame ends; 0 while none is whole. ValueError for a
        frame longer than any message."""
        if len(self._buffer) < _LENGTH.size:
            return 0
        size: int = _LENGTH.unpack_from(self._buffer)[0]
        if size > MAX_FRAME:
            raise ValueError(f"a frame of {size} bytes")
        end = _LENGTH.size + size
        return end if len(self._buffer) >= end else 0


def channel_pair(ctx: BaseContext) -> tuple[Channel, Channel]:
    """(the daemon's end, the runner's end) of a new link."""
    daemon_in, runner_out = ctx.Pipe(duplex=False)
    runner_in, daemon_out = ctx.Pipe(duplex=False)
    return Channel(daemon_in, daemon_out), Channel(runner_in, runner_out)


_TEXT, _THOUGHT, _PICKLED = b"t", b"h", b"p"
"""The first byte of a frame: a token of the answer, a token of thinking, a pickled message."""


def _encode(message: object) -> bytes:
    if type(message) is Emitted and type(message.event) is Token and not message.event.logprobs:
        tag = _THOUGHT if message.event.thinking else _TEXT
        text = message.event.text.encode("utf-8", "surrogatepass")
        return tag + message.request_id.to_bytes(8, "little") + text
    return _PICKLED + pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def _decode(frame: bytes) -> Any:
    tag = frame[:1]
    if tag == _PICKLED:
        return pickle.loads(memoryview(frame)[1:])
    if tag not in (_TEXT, _THOUGHT):
        raise ValueError(f"unknown frame {tag!r}")
    return Emitted(int.from_bytes(frame[1:9], "little"),
                   Token(frame[9:].decode("utf-8", "surrogatepass"), thinking=tag == _THOUGHT))
