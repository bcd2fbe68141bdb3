"""What a native library prints while it works (the RKLLM runtime prints its banner, its limits
and its refusals with printf), captured at the file-descriptor level so that rkollama can log
it and quote it to the user.

While a `CapturedOutput` is active, fd 1 and fd 2 of the process go into a pipe; each line is
copied at once to the original stderr (so an operator still sees it if the process then dies)
and kept. C stdio is made line-buffered first: a runtime that crashes right after printing
still delivers the line. Only for short calls (a model load): the whole process's output is
redirected meanwhile.
"""

import ctypes
import logging
import os
import sys
import threading
from types import TracebackType

log = logging.getLogger("rkollama.native")

_IOLBF = 1


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _flush_c(libc: ctypes.CDLL | None) -> None:
    if libc is not None:
        try:
            libc.fflush(None)
        except AttributeError:
            pass


def _line_buffer_c_stdout(libc: ctypes.CDLL | None) -> None:
    """setvbuf(stdout, NULL, _IOLBF, 0): glibc's stdout into a pipe is otherwise fully buffered."""
    if libc is None:
        return
    try:
        stream = ctypes.c_void_p.in_dll(libc, "stdout")
        libc.setvbuf(stream, None, _IOLBF, 0)
    except (ValueError, AttributeError):  # not glibc
        pass


class CapturedOutput:
    """`with CapturedOutput() as out: call()`; then `out.lines` is what it printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._saved: tuple[int, int] | None = None
        self._reader: threading.Thread | None = None
        self._libc = _libc()

    def __enter__(self) -> "CapturedOutput":
        sys.stdout.flush()
        sys.stderr.flush()
        _flush_c(self._libc)
        try:
            read_fd, write_fd = os.pipe()
            self._saved = (os.dup(1), os.dup(2))
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except OSError as exc:  # no spare descriptors: run uncaptured rather than fail the load
            log.warning("cannot capture the engine's output: %s", exc)
            self._saved = None
            return self
        _line_buffer_c_stdout(self._libc)
        self._reader = threading.Thread(target=self._read, args=(read_fd, self._saved[1]),
                                        name="native-output", daemon=True)
        self._reader.start()
        return self

    def _read(self, read_fd: int, echo_fd: int) -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                try:
                    os.write(echo_fd, chunk)
                except OSError:
                    pass
                pending += chunk
                *complete, pending = pending.split(b"\n")
                self.lines.extend(line.decode("utf-8", "replace").rstrip("\r") for line in complete)
        if pending:
            self.lines.append(pending.decode("utf-8", "replace"))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        _flush_c(self._libc)
        out, err = self._saved
        os.dup2(out, 1)  # the pipe's last write ends close here: the reader sees its end
        os.dup2(err, 2)
        if self._reader is not None:
            self._reader.join(2)
        os.close(out)
        os.close(err)
        self._saved = None
