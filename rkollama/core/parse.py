"""Turning a model's raw text into reasoning, answer text and tool calls, as it streams.

Both parsers hold back only text that could still be the start of a tag or call, and release it
as soon as it cannot be, so ordinary answers stream without delay.
"""

import enum
import json
import secrets
import string
from collections.abc import Generator, Iterable, Iterator

from rkollama.core.types import Done, DoneReason, Event, Generation, Token, ToolCall

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_call_id() -> str:
    """`call_` + 8 lowercase alphanumerics, as Ollama makes them."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


class _Think(enum.Enum):
    """Where ThinkingSplitter is: START → THINKING → AFTER → CONTENT, or START → CONTENT."""

    START = "start"        # nothing but whitespace yet: a <think> may still open
    THINKING = "thinking"  # inside <think>…: text is reasoning
    AFTER = "after"        # just past </think>: blank lines before the answer are dropped
    CONTENT = "content"    # the answer: text passes through


class ThinkingSplitter:
    """Splits a leading `<think>…</think>` block off the answer.

    `keep=False` (the request said `think: false`) drops any reasoning the model emits anyway.
    """

    def __init__(self, keep: bool = True):
        self.keep = keep
        self.state = _Think.START
        self.buffer = ""
        self.opened = False
        """Just past <think>: newlines are dropped until the reasoning starts, whichever
        chunks they come in (Qwen's `<think>` and its newline are separate tokens)."""

    def feed(self, text: str) -> list[Token]:
        self.buffer += text
        out: list[Token] = []
        steps = {_Think.START: self._start, _Think.THINKING: self._thinking,
                 _Think.AFTER: self._after, _Think.CONTENT: self._content}
        while steps[self.state](out):  # each step says whether another can follow
            pass
        return out

    def _start(self, out: list[Token]) -> bool:
        stripped = self.buffer.lstrip()
        if stripped.startswith(THINK_OPEN):
            self.buffer = stripped[len(THINK_OPEN):]
            self.state, self.opened = _Think.THINKING, True
            return True
        if not stripped or THINK_OPEN.startswith(stripped):
            return False  # nothing yet, or it could still become <think>
        self.state = _Think.CONTENT
        return True

    def _thinking(self, out: list[Token]) -> bool:
        if self.opened:
            self.buffer = self.buffer.lstrip("\n")
            if not self.buffer:
                return False
            self.opened = False
        end = self.buffer.find(THINK_CLOSE)
        if end >= 0:
            self._think(out, self.buffer[:end].rstrip("\n"))
            self.buffer = self.buffer[end + len(THINK_CLOSE):].lstrip()
            self.state = _Think.AFTER
            return bool(self.buffer)
        # Hold back a possible "</think>" start and the newlines that usually precede it.
        cut = len(self.buffer) - partial_suffix(self.buffer, THINK_CLOSE)
        cut = len(self.buffer[:cut].rstrip("\n"))
        self._think(out, self.buffer[:cut])
        self.buffer = self.buffer[cut:]
        return False

    def _after(self, out: list[Token]) -> bool:
        """Drops the blank lines between </think> and the answer."""
        self.buffer = self.buffer.lstrip()
        if not self.buffer:
            return False
        self.state = _Think.CONTENT
        return True

    def _content(self, out: list[Token]) -> bool:
        if self.buffer:
            out.append(Token(self.buffer))
        self.buffer = ""
        return False

    def _think(self, out: list[Token], text: str) -> None:
        if text and self.keep:
            out.append(Token(text, thinking=True))

    def finish(self) -> list[Token]:
        rest, self.buffer = self.buffer, ""
        if not rest:
            return []
        if self.state is _Think.THINKING:
            return [Token(rest, thinking=True)] if self.keep else []
        return [Token(rest)] if rest.strip() or self.state is _Think.CONTENT else []


class _Calls(enum.Enum):
    """Where ToolCallParser is in the answer text."""

    START = "start"          # nothing but whitespace yet: a bare JSON call may start here
    TEXT = "text"            # plain answer text, watching for <tool_call>
    TAG = "tag"              # inside <tool_call>…, waiting for </tool_call>
    BETWEEN = "between"      # right after a tagged call: whitespace is not content
    JSON = "json"            # inside a bare JSON call, waiting for its closing brace
    JSON_MORE = "json_more"  # after a bare call: another one, separators, or nothing


class ToolCallParser:
    """Finds tool calls in answer text: `<tool_call>{json}</tool_call>` (Qwen, Hermes, SmolLM)
    anywhere, and a bare JSON call `{"name": …, "parameters"|"arguments": {…}}` (Llama 3.x) when
    the answer starts with one. Malformed calls are returned as text, never dropped."""

    def __init__(self, tool_names: set[str]):
        self.names = tool_names
        self.buffer = ""
        self.state = _Calls.START
        self.calls = 0

    def feed(self, text: str) -> list[Token | ToolCall]:
        self.buffer += text
        out: list[Token | ToolCall] = []
        steps = {_Calls.START: self._start, _Calls.TEXT: self._text, _Calls.TAG: self._tag,
                 _Calls.BETWEEN: self._between, _Calls.JSON: self._json, _Calls.JSON_MORE: self._json_more}
        while self.buffer and steps[self.state](out):  # each step says whether another can follow
            pass
        return out

    def _start(self, out: list[Token | ToolCall]) -> bool:
        stripped = self.buffer.lstrip()
        if stripped.startswith(PYTHON_TAG):
            stripped = stripped[len(PYTHON_TAG):]
        if not stripped or PYTHON_TAG.startswith(stripped):
            return False
        if stripped.startswith("{"):
            self.buffer, self.state = stripped, _Calls.JSON
        else:
            self.state = _Calls.TEXT
        return True

    def _text(self, out: list[Token | ToolCall]) -> bool:
        start = self.buffer.find(CALL_OPEN)
        if start >= 0:
            if self.buffer[:start]:
                out.append(Token(self.buffer[:start]))
            self.buffer, self.state = self.buffer[start + len(CALL_OPEN):], _Calls.TAG
            return True
        keep = partial_suffix(self.buffer, CALL_OPEN)
        if len(self.buffer) > keep:
            out.append(Token(self.buffer[: len(self.buffer) - keep]))
        self.buffer = self.buffer[len(self.buffer) - keep:]
        return False

    def _tag(self, out: list[Token | ToolCall]) -> bool:
        end = self.buffer.find(CALL_CLOSE)
        if end < 0:
            return False
        body, self.buffer = self.buffer[:end], self.buffer[end + len(CALL_CLOSE):]
        call = self._call(body, require_known=False)
        out.append(call or Token(CALL_OPEN + body + CALL_CLOSE))
        self.state = _Calls.BETWEEN if call else _Calls.TEXT
        return True

    def _between(self, out: list[Token | ToolCall]) -> bool:
        """Whitespace after a call is not content."""
        self.buffer = self.buffer.lstrip()
        if not self.buffer:
            return False
        self.state = _Calls.TEXT
        return True

    def _json(self, out: list[Token | ToolCall]) -> bool:
        closing = _json_object_end(self.buffer)
        if closing is None:
            return False
        body, rest = self.buffer[:closing], self.buffer[closing:]
        call = self._call(body, require_known=True)
        if call is None:
            out.append(Token(self.buffer))
            self.buffer, self.state = "", _Calls.TEXT
            return False
        out.append(call)
        self.buffer, self.state = rest, _Calls.JSON_MORE
        return True

    def _json_more(self, out: list[Token | ToolCall]) -> bool:
        """After a bare call: another call, separators, or nothing."""
        stripped = self.buffer.lstrip().lstrip(";,").lstrip()
        if not stripped:
            return False
        self.buffer = stripped
        self.state = _Calls.JSON if stripped.startswith("{") else _Calls.TEXT
        return True

    def _call(self, body: str, require_known: bool) -> ToolCall | None:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # nested past the parser's limit: not a call
            return None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return None
        args = data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                return None
        if not isinstance(args, dict):
            return None
        if require_known and data["name"] not in self.names:
            return None
        call = ToolCall(data["name"], args, new_call_id(), self.calls)
        self.calls += 1
        return call

    def finish(self) -> list[Token | ToolCall]:
        rest, self.buffer = self.buffer, ""
        if self.state is _Calls.TAG:
            call = self._call(rest.strip(), require_known=False)  # a missing closing tag at EOS
            return [call] if call else [Token(CALL_OPEN + rest)]
        if self.state in (_Calls.BETWEEN, _Calls.JSON_MORE) and not rest.strip():
            return []
        return [Token(rest)] if rest else []


def _json_object_end(text: str) -> int | None:
    """Index just past the top-level JSON object starting at text[0], or None if incomplete."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def parse_output(events: Iterable[Event], gen: Generation) -> Generator[Event, None, None]:
    """Apply the thinking split and tool-call parsing a request asks for to an event stream.

    A `Done` after tool calls that stopped normally becomes `TOOL_CALLS`.
    """
    thinking = ThinkingSplitter(keep=gen.think not in (False, None)) if gen.parse_thinking else None
    tools = ToolCallParser({t.get("function", {}).get("name", "") for t in gen.tools}) if gen.tools else None
    if thinking is None and tools is None:
        yield from events
        return
    called = False

    def through_tools(items: Iterable[Event]) -> Iterator[Event]:
        nonlocal called
        for item in items:
            if tools is not None and isinstance(item, Token) and not item.thinking:
                for parsed in tools.feed(item.text):
                    called = called or isinstance(parsed, ToolCall)
                    yield parsed
            else:
                yield item

    for event in events:
        if isinstance(event, Done):
            tail = thinking.finish() if thinking else []
            yield from through_tools(tail)
            if tools is not None:
                for parsed in tools.finish():
                    called = called or isinstance(parsed, ToolCall)
                    yield parsed
            if called and event.reason is DoneReason.STOP:
                event = event.relabelled(DoneReason.TOOL_CALLS)
            yield event
            return
        if isinstance(event, Token) and not event.thinking and thinking is not None:
            yield from through_tools(thinking.feed(event.text))
        else:
            yield from through_tools([event])
