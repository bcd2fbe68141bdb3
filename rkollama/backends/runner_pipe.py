"""The messages between the daemon and a runner process, one class each (they cross
runner_channel.Channel). `request_id` ties an answer to the request it answers; 0 is the load."""

from dataclasses import dataclass

from rkollama.core.types import Done, Generation, Token


# -- daemon → runner ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generate:
    request_id: int
    gen: Generation


@dataclass(frozen=True)
class Cancel:
    request_id: int


@dataclass(frozen=True)
class Embed:
    request_id: int
    texts: list[str]
    truncate: bool


@dataclass(frozen=True)
class Render:
    request_id: int
    gen: Generation


@dataclass(frozen=True)
class Close:
    request_id: int


@dataclass(frozen=True)
class Busy:
    """The daemon started (True) or stopped (False) running anything, any model (Backend.daemon_busy)."""

    busy: bool


ToRunner = Generate | Cancel | Embed | Render | Close | Busy


# -- runner → daemon ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineFacts:
    """What the daemon's side needs to know of the engine the runner loaded."""

    kind: str
    device: str
    constrains_format: bool
    context_length: int
    memory_bytes: int
    slots: int
    batch_window_s: float


@dataclass(frozen=True)
class Loaded:
    facts: EngineFacts


@dataclass(frozen=True)
class LoadError:
    error: Exception


@dataclass(frozen=True)
class Emitted:
    """One event of a generation."""

    request_id: int
    event: Token | Done


@dataclass(frozen=True)
class Result:
    """What an Embed (vectors, prompt tokens) or a Render (the prompt text) returned."""

    request_id: int
    value: tuple[list[list[float]], int] | str


@dataclass(frozen=True)
class Failed:
    request_id: int
    error: Exception


@dataclass(frozen=True)
class Closed:
    request_id: int


FromRunner = Emitted | Result | Failed | Closed
